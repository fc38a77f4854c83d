-- The near-duplicate copy trigger (0009, per pass since 0011) looked for
-- the duplicates' jobs by walking every queued job of the pass (SQLite's
-- planner took the partial claim index on pass_id first), and marked them
-- done with an UPDATE over every queued job of the pass: two scans of the
-- queue for every description written, quadratic over a film (the worker
-- bench fell from about 8,000 to 1,500 jobs/s on 5,000 jobs). Both now start
-- from the frames that name the original (index frames_duplicate_of, forced
-- first by CROSS JOIN), then find each one's job by (frame, pass)
-- (jobs_frame_pass).
DROP TRIGGER descriptions_copy_to_duplicates;
CREATE TRIGGER descriptions_copy_to_duplicates AFTER INSERT ON descriptions
WHEN new.duplicate_of IS NULL BEGIN
    INSERT INTO descriptions (job_id, frame_id, pass_id, visual_content, mood, action, setting,
                              fields, search_text, model, model_sha256, prompt_version, latency_ms,
                              prompt_tokens, completion_tokens, created_at, duplicate_of)
    SELECT j.id, fr.id, new.pass_id, new.visual_content, new.mood, new.action, new.setting,
           new.fields, new.search_text, new.model, new.model_sha256, new.prompt_version, NULL,
           NULL, NULL, new.created_at, new.frame_id
    FROM frames fr CROSS JOIN jobs j ON j.frame_id = fr.id AND j.pass_id = new.pass_id
    WHERE fr.duplicate_of = new.frame_id AND j.state = 'queued';
    UPDATE jobs SET state = 'done', updated_at = new.created_at
    WHERE id IN (SELECT j.id FROM frames fr
                 CROSS JOIN jobs j ON j.frame_id = fr.id AND j.pass_id = new.pass_id
                 WHERE fr.duplicate_of = new.frame_id AND j.state = 'queued');
END;
