-- The attempts of a batch, by worker ?2 under lease epoch ?3: ?1 is a JSON
-- array of [job, started_at, finished_at, outcome, error_class, error,
-- raw_output, prompt_tokens, completion_tokens].
WITH r AS MATERIALIZED (
    SELECT value ->> 0 AS job, value ->> 1 AS started, value ->> 2 AS finished, value ->> 3 AS outcome,
           value ->> 4 AS class, value ->> 5 AS error, value ->> 6 AS raw, value ->> 7 AS pt,
           value ->> 8 AS ct
    FROM jsonb_each(jsonb(?1)))
INSERT INTO attempts (job_id, worker_id, lease_epoch, started_at, finished_at, outcome, error_class, error,
                      raw_output, latency_ms, prompt_tokens, completion_tokens)
SELECT r.job, ?2, ?3, r.started, r.finished, r.outcome, r.class, r.error, r.raw,
       r.finished - r.started, r.pt, r.ct
FROM r
