-- no-transaction
-- Same tables, same meaning, cheaper writes. In SQLite a `CHECK (x IN (...))`
-- builds the list as a little ephemeral index for every row it checks: about
-- a microsecond per row, which was a quarter of enqueue's cost (every frame
-- writes a job) and part of every job and attempt the worker writes. The same
-- check spelled with OR costs nothing measurable. A CHECK cannot be altered
-- in place, so `jobs` and `attempts` are rebuilt the way SQLite documents
-- (new table, copy, drop, rename, with foreign keys off so the drop cascades
-- nowhere), in one transaction; indexes and the view that reads `jobs` are
-- made again exactly as before.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

DROP VIEW film_progress;

CREATE TABLE jobs_new (
    id                  INTEGER PRIMARY KEY,
    frame_id            INTEGER NOT NULL REFERENCES frames(id) ON DELETE CASCADE CHECK (frame_id = id),
    film_id             INTEGER NOT NULL REFERENCES films(id) ON DELETE CASCADE,
    priority            INTEGER NOT NULL DEFAULT 0,   -- copied from the film so claims need no join
    state               TEXT    NOT NULL DEFAULT 'queued'
                        CHECK (state = 'queued' OR state = 'running' OR state = 'done'
                               OR state = 'failed' OR state = 'cancelled'),
    attempts            INTEGER NOT NULL DEFAULT 0,   -- tries that burned an attempt (bad output)
    transient_failures  INTEGER NOT NULL DEFAULT 0,   -- crashes, timeouts, 5xx: poison after a bound
    max_attempts        INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    run_after           INTEGER NOT NULL DEFAULT 0,
    lease_owner         TEXT,                          -- worker id while running
    lease_epoch         INTEGER,                       -- GPU lease epoch the claim was made under
    lease_expires_at    INTEGER,
    last_error          TEXT,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
) STRICT;
INSERT INTO jobs_new SELECT * FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;

-- Serves the claim query: claimable rows only, in claim order. Stays small.
CREATE INDEX jobs_claim ON jobs (priority DESC, id) WHERE state = 'queued';
-- Serves status counts per film and state, `--film` claims and recovery.
CREATE INDEX jobs_film_state ON jobs (film_id, state);
-- Serves recovery of a dead worker's jobs.
CREATE INDEX jobs_running_owner ON jobs (lease_owner) WHERE state = 'running';

CREATE TABLE attempts_new (
    id                INTEGER PRIMARY KEY,
    job_id            INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    worker_id         TEXT    NOT NULL,
    lease_epoch       INTEGER,
    started_at        INTEGER NOT NULL,
    finished_at       INTEGER,
    outcome           TEXT    NOT NULL CHECK (outcome = 'done' OR outcome = 'retry'
                                          OR outcome = 'requeued' OR outcome = 'failed'),
    error_class       TEXT,
    error             TEXT,
    raw_output        TEXT,
    latency_ms        INTEGER,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER
) STRICT;
INSERT INTO attempts_new SELECT * FROM attempts;
DROP TABLE attempts;
ALTER TABLE attempts_new RENAME TO attempts;
CREATE INDEX attempts_job ON attempts (job_id);

CREATE VIEW film_progress AS
WITH counts AS (
    SELECT film_id,
           sum(state = 'queued')    AS queued,
           sum(state = 'running')   AS running,
           sum(state = 'done')      AS done,
           sum(state = 'failed')    AS failed,
           sum(state = 'cancelled') AS cancelled
    FROM jobs GROUP BY film_id
), pace AS (
    SELECT fr.film_id,
           min(d.created_at) AS first_at,
           max(d.created_at) AS last_at,
           count(*)          AS described
    FROM descriptions d JOIN frames fr ON fr.id = d.frame_id
    GROUP BY fr.film_id
)
SELECT f.id AS film_id,
       f.title AS film,
       f.frame_count AS total,
       coalesce(c.queued, 0) AS queued,
       coalesce(c.running, 0) AS running,
       coalesce(c.done, 0) AS done,
       coalesce(c.failed, 0) AS failed,
       coalesce(c.cancelled, 0) AS cancelled,
       round(100.0 * coalesce(c.done, 0) / max(f.frame_count, 1), 1) AS done_pct,
       CASE WHEN p.described > 1 AND p.last_at > p.first_at
            THEN round((p.described - 1) * 1000.0 / (p.last_at - p.first_at), 2) END AS frames_per_s,
       CASE WHEN p.described > 1 AND p.last_at > p.first_at
            THEN CAST((coalesce(c.queued, 0) + coalesce(c.running, 0))
                      * (p.last_at - p.first_at) / (p.described - 1) / 1000 AS INTEGER) END AS eta_s
FROM films f
LEFT JOIN counts c ON c.film_id = f.id
LEFT JOIN pace p ON p.film_id = f.id;

-- frames (film_id, pts_ms) cost a tenth of every enqueue and served one kind
-- of ad-hoc query ("what happens between 01:10 and 01:20"), which finds the
-- film's frames through UNIQUE (film_id, frame_index) just as well: a film
-- has thousands of keyframes, not millions.
DROP INDEX frames_film_pts;

COMMIT;
PRAGMA foreign_keys = ON;
