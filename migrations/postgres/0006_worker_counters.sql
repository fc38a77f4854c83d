-- A worker's counters, as on SQLite: what it recorded (added in the same
-- transaction as its results) and how often it started and restarted its
-- llama-server. `status` shows them with the worker.
ALTER TABLE workers
    ADD COLUMN jobs_done       bigint NOT NULL DEFAULT 0,
    ADD COLUMN jobs_failed     bigint NOT NULL DEFAULT 0,
    ADD COLUMN jobs_retried    bigint NOT NULL DEFAULT 0,
    ADD COLUMN jobs_requeued   bigint NOT NULL DEFAULT 0,
    ADD COLUMN server_starts   bigint NOT NULL DEFAULT 0,
    ADD COLUMN server_restarts bigint NOT NULL DEFAULT 0;
