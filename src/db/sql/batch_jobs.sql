-- The jobs of a batch's results: ?1 is a JSON array of
-- [job, state, error, attempts, transient_failures, run_after].
-- A MATERIALIZED CTE: joining jobs straight to json_each re-reads the JSON
-- per row and turns the batch quadratic (165 ms for 320 rows). jsonb: the
-- array is parsed once and each field is read from binary JSON. The fence is
-- checked again here, though nothing can change it since batch_fenced.sql
-- (the write lock is held).
WITH r AS MATERIALIZED (
    SELECT value ->> 0 AS job, value ->> 1 AS state, value ->> 2 AS error,
           value ->> 3 AS attempts, value ->> 4 AS transient, value ->> 5 AS run_after
    FROM jsonb_each(jsonb(?1)))
UPDATE jobs SET state = r.state,
       last_error = CASE WHEN r.state = 'done' THEN NULL ELSE coalesce(r.error, jobs.last_error) END,
       attempts = r.attempts, transient_failures = r.transient, run_after = r.run_after, updated_at = ?4,
       lease_owner = CASE WHEN r.state = 'queued' THEN NULL ELSE jobs.lease_owner END,
       lease_epoch = CASE WHEN r.state = 'queued' THEN NULL ELSE jobs.lease_epoch END,
       lease_expires_at = NULL
FROM r
WHERE jobs.id = r.job AND jobs.state = 'running' AND jobs.lease_owner = ?2 AND jobs.lease_epoch = ?3
