-- Stills are hashed for near-duplicates by the worker that claims them, as
-- on SQLite (0018_worker_dedupe.sql): a still enqueued with near-duplicate
-- detection keeps its `--dedupe-distance` until a worker writes its hash
-- and its 9×8 grey copy.
ALTER TABLE frames
    ADD COLUMN dedupe_distance integer,
    ADD COLUMN grey            bytea;
