-- cinecut's schema. Times are integer unix milliseconds; every table is STRICT.
-- The table, view and column names are the interface SQL users see.

-- One row per submitted film or frame set. `title` names it on the command line.
CREATE TABLE films (
    id              INTEGER PRIMARY KEY,
    title           TEXT    NOT NULL UNIQUE,
    source_path     TEXT,                -- canonical path of the video or folder, if there is one
    source_size     INTEGER,             -- video only: size and mtime identify the file for re-enqueue
    source_mtime_ms INTEGER,
    fps             REAL,
    duration_ms     INTEGER,
    width           INTEGER,
    height          INTEGER,
    -- Number of frames (= jobs) of this film; kept by enqueue in the same transaction.
    frame_count     INTEGER NOT NULL DEFAULT 0 CHECK (frame_count >= 0),
    priority        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL
) STRICT;

-- The input data. A frame is identified by (film, path); frame_index orders it.
CREATE TABLE frames (
    id          INTEGER PRIMARY KEY,
    film_id     INTEGER NOT NULL REFERENCES films(id) ON DELETE CASCADE,
    frame_index INTEGER NOT NULL CHECK (frame_index >= 0),
    pts_ms      INTEGER,
    path        TEXT    NOT NULL,
    width       INTEGER,
    height      INTEGER,
    created_at  INTEGER NOT NULL,
    UNIQUE (film_id, frame_index),
    UNIQUE (film_id, path)
) STRICT;
-- Queries by film and time ("what happens between 01:10 and 01:20").
CREATE INDEX frames_film_pts ON frames (film_id, pts_ms);

-- The work, one job per frame. A job's id is its frame's id (CHECK below), which
-- makes "one job per frame" a primary-key fact at no index cost.
CREATE TABLE jobs (
    id                  INTEGER PRIMARY KEY,
    frame_id            INTEGER NOT NULL REFERENCES frames(id) ON DELETE CASCADE CHECK (frame_id = id),
    film_id             INTEGER NOT NULL REFERENCES films(id) ON DELETE CASCADE,
    priority            INTEGER NOT NULL DEFAULT 0,   -- copied from the film so claims need no join
    state               TEXT    NOT NULL DEFAULT 'queued'
                        CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
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

-- Serves the claim query: claimable rows only, in claim order. Stays small.
CREATE INDEX jobs_claim ON jobs (priority DESC, id) WHERE state = 'queued';
-- Serves status counts per film and state, `--film` claims and recovery.
CREATE INDEX jobs_film_state ON jobs (film_id, state);
-- Serves recovery of a dead worker's jobs.
CREATE INDEX jobs_running_owner ON jobs (lease_owner) WHERE state = 'running';

-- One row per try of a job.
CREATE TABLE attempts (
    id                INTEGER PRIMARY KEY,
    job_id            INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    worker_id         TEXT    NOT NULL,
    lease_epoch       INTEGER,
    started_at        INTEGER NOT NULL,
    finished_at       INTEGER,
    outcome           TEXT    NOT NULL CHECK (outcome IN ('done', 'retry', 'requeued', 'failed')),
    error_class       TEXT,
    error             TEXT,
    raw_output        TEXT,
    latency_ms        INTEGER,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER
) STRICT;
CREATE INDEX attempts_job ON attempts (job_id);

-- The results: exactly one per job (primary key), whatever the retries.
CREATE TABLE descriptions (
    job_id            INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    frame_id          INTEGER NOT NULL REFERENCES frames(id) ON DELETE CASCADE,
    visual_content    TEXT    NOT NULL,
    mood              TEXT    NOT NULL,
    action            TEXT    NOT NULL,
    setting           TEXT    NOT NULL,
    model             TEXT    NOT NULL,
    model_sha256      TEXT,
    prompt_version    INTEGER NOT NULL,
    latency_ms        INTEGER,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    created_at        INTEGER NOT NULL
) STRICT;

-- The cross-process GPU lock: one row per GPU. holder IS NULL means free.
-- epoch grows by one on every takeover; jobs claimed under an older epoch are fenced out.
CREATE TABLE gpu_leases (
    gpu               TEXT    PRIMARY KEY,
    holder            TEXT,
    holder_pid        INTEGER,
    holder_started_at INTEGER,   -- process start time (clock ticks after boot) against pid reuse
    host              TEXT,
    purpose           TEXT,      -- 'worker' or 'gpu-lock'
    epoch             INTEGER NOT NULL DEFAULT 0,
    heartbeat_at      INTEGER,
    expires_at        INTEGER,
    server_pid        INTEGER,   -- the holder's llama-server, for orphan reaping
    server_started_at INTEGER,
    server_cmdline    TEXT
) STRICT;

-- Programs waiting for a GPU lease (gpu-lock commands); a worker yields to them.
CREATE TABLE gpu_waiters (
    id           TEXT    PRIMARY KEY,
    gpu          TEXT    NOT NULL,
    pid          INTEGER NOT NULL,
    pid_started_at INTEGER,
    host         TEXT    NOT NULL,
    purpose      TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
) STRICT;
CREATE INDEX gpu_waiters_gpu ON gpu_waiters (gpu, created_at);

-- Worker processes, for `status`.
CREATE TABLE workers (
    id              TEXT    PRIMARY KEY,
    pid             INTEGER NOT NULL,
    host            TEXT    NOT NULL,
    gpu             TEXT    NOT NULL,
    started_at      INTEGER NOT NULL,
    heartbeat_at    INTEGER NOT NULL,
    stopped_at      INTEGER,
    state           TEXT    NOT NULL,
    jobs_done       INTEGER NOT NULL DEFAULT 0,
    jobs_failed     INTEGER NOT NULL DEFAULT 0,
    jobs_retried    INTEGER NOT NULL DEFAULT 0,
    jobs_requeued   INTEGER NOT NULL DEFAULT 0,
    server_starts   INTEGER NOT NULL DEFAULT 0,
    server_restarts INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE VIEW frame_descriptions AS
SELECT f.id             AS film_id,
       f.title          AS film,
       fr.frame_index   AS frame_index,
       fr.pts_ms        AS pts_ms,
       fr.path          AS path,
       d.visual_content AS visual_content,
       d.mood           AS mood,
       d.action         AS action,
       d.setting        AS setting,
       d.model          AS model,
       d.created_at     AS described_at
FROM films f
JOIN frames fr ON fr.film_id = f.id
JOIN descriptions d ON d.job_id = fr.id;  -- a job's id is its frame's id

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
