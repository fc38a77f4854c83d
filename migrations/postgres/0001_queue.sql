-- cinecut's queue on PostgreSQL, for many GPU hosts sharing one database.
-- The same tables and states as on SQLite (migrations/0001…), with the
-- database's own clock for every time that decides something: lease expiry
-- and run_after are timestamptz compared with clock_timestamp(), never with
-- a host's clock (hosts drift).
--
-- Foreign keys: the rows enqueue writes in bulk (frames, jobs) reference
-- what the same transaction made or checked (the film, the frames just
-- inserted, the pass), so they carry no foreign key: a key check is a
-- locking lookup per row, and the four of them more than halved enqueue's
-- rate (BENCHMARKS.md). Deleting a film goes through `queue::delete_film`,
-- which removes its jobs and frames itself. The rows workers write one job
-- at a time (attempts, descriptions) keep theirs, with ON DELETE CASCADE.

CREATE TABLE films (
    id          bigserial PRIMARY KEY,
    title       text      NOT NULL UNIQUE,
    source_path text,
    priority    bigint    NOT NULL DEFAULT 0,
    frame_count bigint    NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE frames (
    id          bigserial PRIMARY KEY,
    film_id     bigint    NOT NULL,
    frame_index bigint    NOT NULL CHECK (frame_index >= 0),
    pts_ms      bigint,
    path        text      NOT NULL,
    -- The frame's JPEG bytes (`enqueue --store-frames`), for workers with no
    -- shared file system.
    jpeg        bytea,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (film_id, frame_index),
    UNIQUE (film_id, path)
);

CREATE TABLE passes (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    model      text,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE jobs (
    id               bigserial PRIMARY KEY,
    frame_id         bigint  NOT NULL,
    pass_id          bigint  NOT NULL,
    film_id          bigint  NOT NULL,
    state            text    NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    priority         bigint  NOT NULL DEFAULT 0,
    attempts         bigint  NOT NULL DEFAULT 0,
    max_attempts     bigint  NOT NULL DEFAULT 3,
    run_after        timestamptz NOT NULL DEFAULT '-infinity',
    -- Who runs it, under which lease epoch of its GPU, and until when.
    lease_owner      text,
    lease_gpu        text,
    lease_epoch      bigint,
    lease_expires_at timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (frame_id, pass_id)
);
-- The claim: queued jobs of a pass by priority, then age.
CREATE INDEX jobs_claim ON jobs (pass_id, priority DESC, id) WHERE state = 'queued';
-- Recovery: running jobs by lease expiry.
CREATE INDEX jobs_running ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_film_state ON jobs (film_id, pass_id, state);

-- One row per GPU, keyed by its UUID (globally unique, unlike an index):
-- the cross-host GPU lock. `epoch` rises with every new holder (fencing:
-- a claim or a result carries the epoch it was made under). A holder is
-- known by its host identity (hostname + boot id) and pid, so a dead holder
-- on the same host is seen at once; one on another host only by expiry.
CREATE TABLE gpu_leases (
    gpu          text   PRIMARY KEY,
    holder       text,
    host         text,
    holder_pid   bigint,
    purpose      text,
    epoch        bigint NOT NULL DEFAULT 0,
    heartbeat_at timestamptz,
    expires_at   timestamptz
);

CREATE TABLE workers (
    id           text   PRIMARY KEY,
    host         text   NOT NULL,
    pid          bigint NOT NULL,
    gpu          text   NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    stopped_at   timestamptz,
    state        text   NOT NULL DEFAULT 'starting'
);

CREATE TABLE attempts (
    id          bigserial PRIMARY KEY,
    job_id      bigint NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    worker_id   text   NOT NULL,
    gpu         text   NOT NULL,
    lease_epoch bigint NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    outcome     text,
    error       text
);
CREATE INDEX attempts_job ON attempts (job_id);

CREATE TABLE descriptions (
    job_id         bigint PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    frame_id       bigint NOT NULL,
    pass_id        bigint NOT NULL,
    visual_content text,
    mood           text,
    action         text,
    setting        text,
    fields         jsonb  NOT NULL,
    search_text    text,
    model          text   NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- PostgreSQL's own full-text search over every text field.
    search         tsvector GENERATED ALWAYS AS (
        to_tsvector('english', coalesce(visual_content, '') || ' ' || coalesce(mood, '') || ' ' ||
                               coalesce(action, '') || ' ' || coalesce(setting, '') || ' ' ||
                               coalesce(search_text, ''))) STORED,
    UNIQUE (frame_id, pass_id)
);
CREATE INDEX descriptions_search ON descriptions USING gin (search);
