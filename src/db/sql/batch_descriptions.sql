-- The descriptions of a batch's done jobs: ?1 is a JSON array of
-- [job, visual_content, mood, action, setting, model, model_sha256,
--  prompt_version, latency_ms, prompt_tokens, completion_tokens, fields,
--  search_text]; each job names its frame and pass.
WITH r AS MATERIALIZED (
    SELECT value ->> 0 AS job, value ->> 1 AS vc, value ->> 2 AS mood, value ->> 3 AS action,
           value ->> 4 AS setting, value ->> 5 AS model, value ->> 6 AS sha, value ->> 7 AS pv,
           value ->> 8 AS latency, value ->> 9 AS pt, value ->> 10 AS ct, value ->> 11 AS fields,
           value ->> 12 AS search
    FROM jsonb_each(jsonb(?1)))
INSERT INTO descriptions (job_id, frame_id, pass_id, visual_content, mood, action, setting, fields,
                          search_text, model, model_sha256, prompt_version, latency_ms, prompt_tokens,
                          completion_tokens, created_at)
SELECT r.job, j.frame_id, j.pass_id, r.vc, r.mood, r.action, r.setting, r.fields, r.search, r.model,
       r.sha, r.pv, r.latency, r.pt, r.ct, ?2
FROM r JOIN jobs j ON j.id = r.job
