-- no-transaction
-- Passes: one way of describing frames (a model and a prompt profile). A
-- frame has one job and at most one description per pass, so the answers
-- of several models and prompts are kept side by side.
--
-- `jobs` loses "a job's id is its frame's id" (a frame now has a job per
-- pass) and `descriptions` gains its pass, the whole answer as JSON
-- (`fields`) and the other text of custom profiles for full-text search
-- (`search_text`); the four seed columns become NULL for profiles without
-- them. Both tables are rebuilt the way SQLite documents (0003 did the
-- same), with foreign keys off so the drops cascade nowhere; the views,
-- triggers and the full-text index that read them are made again.
--
-- Existing rows: every description becomes part of the pass named after
-- its model and prompt_version (`<model>/default`, or
-- `<model>/default+dialogue` for prompt_version 2); the jobs without a
-- description join the pass of the latest description, or, in a database
-- never described, a pass `default` that the first worker binds to its model.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

CREATE TABLE passes (
    id           INTEGER PRIMARY KEY,
    name         TEXT    NOT NULL UNIQUE,
    -- The model identity; NULL until a worker serves the pass (then bound).
    model        TEXT,
    model_sha256 TEXT,
    -- The prompt profile: its name, the SHA-256 of its canonical JSON, and
    -- that JSON (system and user text, fields and their types).
    profile_name TEXT,
    profile_hash TEXT,
    profile      TEXT CHECK (profile IS NULL OR json_valid(profile)),
    created_at   INTEGER NOT NULL
) STRICT;

INSERT INTO passes (name, model, model_sha256, profile_name, created_at)
SELECT d.model || '/' || CASE d.prompt_version WHEN 1 THEN 'default'
                                                WHEN 2 THEN 'default+dialogue'
                                                ELSE 'prompt-v' || d.prompt_version END,
       d.model, max(d.model_sha256),
       CASE d.prompt_version WHEN 1 THEN 'default' WHEN 2 THEN 'default+dialogue'
                             ELSE 'prompt-v' || d.prompt_version END,
       min(d.created_at)
FROM descriptions d
GROUP BY d.model, d.prompt_version
ORDER BY min(d.created_at);

INSERT INTO passes (name, created_at)
SELECT 'default', coalesce(min(created_at), 0) FROM jobs
WHERE EXISTS (SELECT 1 FROM jobs) AND NOT EXISTS (SELECT 1 FROM passes);

DROP VIEW film_progress;
DROP VIEW frame_descriptions;
DROP TRIGGER descriptions_copy_to_duplicates;
DROP TRIGGER jobs_ended_undescribed_frees_duplicates;
DROP TRIGGER descriptions_search_insert;
DROP TRIGGER descriptions_search_delete;
DROP TRIGGER descriptions_search_update;
DROP TABLE description_search;

CREATE TABLE jobs_new (
    id                  INTEGER PRIMARY KEY,
    frame_id            INTEGER NOT NULL REFERENCES frames(id) ON DELETE CASCADE,
    pass_id             INTEGER NOT NULL REFERENCES passes(id) ON DELETE CASCADE,
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
INSERT INTO jobs_new
SELECT j.id, j.frame_id,
       coalesce((SELECT p.id FROM descriptions d JOIN passes p
                   ON p.model = d.model
                  AND p.profile_name = CASE d.prompt_version WHEN 1 THEN 'default'
                                                             WHEN 2 THEN 'default+dialogue'
                                                             ELSE 'prompt-v' || d.prompt_version END
                 WHERE d.job_id = j.id),
                (SELECT p.id FROM descriptions d JOIN passes p
                   ON p.model = d.model
                  AND p.profile_name = CASE d.prompt_version WHEN 1 THEN 'default'
                                                             WHEN 2 THEN 'default+dialogue'
                                                             ELSE 'prompt-v' || d.prompt_version END
                 ORDER BY d.created_at DESC, d.job_id DESC LIMIT 1),
                (SELECT id FROM passes WHERE name = 'default')),
       j.film_id, j.priority, j.state, j.attempts, j.transient_failures, j.max_attempts,
       j.run_after, j.lease_owner, j.lease_epoch, j.lease_expires_at, j.last_error, j.created_at,
       j.updated_at
FROM jobs j;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
-- One job per frame and pass; also serves the cascade from a deleted frame.
CREATE UNIQUE INDEX jobs_frame_pass ON jobs (frame_id, pass_id);
-- Serves the claim query: a pass's claimable rows only, in claim order.
CREATE INDEX jobs_claim ON jobs (pass_id, priority DESC, id) WHERE state = 'queued';
-- Serves status counts per film, pass and state, and `--film` claims.
CREATE INDEX jobs_film_state ON jobs (film_id, pass_id, state);
-- Serves recovery of a dead worker's jobs.
CREATE INDEX jobs_running_owner ON jobs (lease_owner) WHERE state = 'running';

-- How many jobs each film has in each pass, kept by enqueue and describe in
-- the transaction that makes the jobs (jobs go only with their film), so
-- that status need not count a million queued rows.
CREATE TABLE film_passes (
    film_id   INTEGER NOT NULL REFERENCES films(id) ON DELETE CASCADE,
    pass_id   INTEGER NOT NULL REFERENCES passes(id) ON DELETE CASCADE,
    job_count INTEGER NOT NULL CHECK (job_count >= 0),
    PRIMARY KEY (film_id, pass_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX film_passes_pass ON film_passes (pass_id);
INSERT INTO film_passes (film_id, pass_id, job_count)
SELECT film_id, pass_id, count(*) FROM jobs GROUP BY film_id, pass_id;

CREATE TABLE descriptions_new (
    job_id            INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    frame_id          INTEGER NOT NULL REFERENCES frames(id) ON DELETE CASCADE,
    pass_id           INTEGER NOT NULL REFERENCES passes(id) ON DELETE CASCADE,
    -- The default profile's fields (NULL where a profile has no such text field).
    visual_content    TEXT,
    mood              TEXT,
    action            TEXT,
    setting           TEXT,
    -- The whole validated answer, whatever the profile.
    fields            TEXT    NOT NULL CHECK (json_valid(fields)),
    -- The answer's other text and tags, for full-text search.
    search_text       TEXT,
    model             TEXT    NOT NULL,
    model_sha256      TEXT,
    prompt_version    INTEGER NOT NULL,
    latency_ms        INTEGER,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    created_at        INTEGER NOT NULL,
    duplicate_of      INTEGER
) STRICT;
INSERT INTO descriptions_new
SELECT d.job_id, d.frame_id, j.pass_id, d.visual_content, d.mood, d.action, d.setting,
       json_object('visual_content', d.visual_content, 'mood', d.mood, 'action', d.action,
                   'setting', d.setting),
       NULL, d.model, d.model_sha256, d.prompt_version, d.latency_ms, d.prompt_tokens,
       d.completion_tokens, d.created_at, d.duplicate_of
FROM descriptions d JOIN jobs j ON j.id = d.job_id;
DROP TABLE descriptions;
ALTER TABLE descriptions_new RENAME TO descriptions;
-- One description per frame and pass; also serves the cascade from a frame.
CREATE UNIQUE INDEX descriptions_frame_pass ON descriptions (frame_id, pass_id);

-- attempts.job_id keeps pointing at the same jobs (their ids are kept).

CREATE VIRTUAL TABLE description_search USING fts5(
    visual_content, mood, action, setting, search_text,
    content="descriptions", content_rowid="job_id"
);
CREATE TRIGGER descriptions_search_insert AFTER INSERT ON descriptions BEGIN
    INSERT INTO description_search (rowid, visual_content, mood, action, setting, search_text)
    VALUES (new.job_id, new.visual_content, new.mood, new.action, new.setting, new.search_text);
END;
CREATE TRIGGER descriptions_search_delete AFTER DELETE ON descriptions BEGIN
    INSERT INTO description_search (description_search, rowid, visual_content, mood, action,
                                    setting, search_text)
    VALUES ('delete', old.job_id, old.visual_content, old.mood, old.action, old.setting,
            old.search_text);
END;
CREATE TRIGGER descriptions_search_update AFTER UPDATE ON descriptions BEGIN
    INSERT INTO description_search (description_search, rowid, visual_content, mood, action,
                                    setting, search_text)
    VALUES ('delete', old.job_id, old.visual_content, old.mood, old.action, old.setting,
            old.search_text);
    INSERT INTO description_search (rowid, visual_content, mood, action, setting, search_text)
    VALUES (new.job_id, new.visual_content, new.mood, new.action, new.setting, new.search_text);
END;
INSERT INTO description_search (description_search) VALUES ('rebuild');

-- Near-duplicates (0009), now within a pass: a description written by a
-- model is copied to the duplicates' jobs of the same pass.
CREATE TRIGGER descriptions_copy_to_duplicates AFTER INSERT ON descriptions
WHEN new.duplicate_of IS NULL BEGIN
    INSERT INTO descriptions (job_id, frame_id, pass_id, visual_content, mood, action, setting,
                              fields, search_text, model, model_sha256, prompt_version, latency_ms,
                              prompt_tokens, completion_tokens, created_at, duplicate_of)
    SELECT j.id, fr.id, new.pass_id, new.visual_content, new.mood, new.action, new.setting,
           new.fields, new.search_text, new.model, new.model_sha256, new.prompt_version, NULL,
           NULL, NULL, new.created_at, new.frame_id
    FROM frames fr JOIN jobs j ON j.frame_id = fr.id AND j.pass_id = new.pass_id
    WHERE fr.duplicate_of = new.frame_id AND j.state = 'queued';
    UPDATE jobs SET state = 'done', updated_at = new.created_at
    WHERE pass_id = new.pass_id AND state = 'queued'
      AND EXISTS (SELECT 1 FROM frames f WHERE f.id = jobs.frame_id AND f.duplicate_of = new.frame_id);
END;

-- A pass learns its model's SHA-256 from its first description that has one.
CREATE TRIGGER descriptions_teach_pass_model_sha256 AFTER INSERT ON descriptions
WHEN new.model_sha256 IS NOT NULL AND new.duplicate_of IS NULL BEGIN
    UPDATE passes SET model_sha256 = new.model_sha256
    WHERE id = new.pass_id AND model_sha256 IS NULL;
END;

-- An original that ends undescribed (failed, cancelled) in a pass frees its
-- duplicates: the first becomes the original of the others.
CREATE TRIGGER jobs_ended_undescribed_frees_duplicates AFTER UPDATE OF state ON jobs
WHEN new.state = 'failed' OR new.state = 'cancelled' BEGIN
    UPDATE frames SET duplicate_of = (SELECT min(f.id) FROM frames f WHERE f.duplicate_of = new.frame_id)
    WHERE duplicate_of = new.frame_id
      AND id <> (SELECT min(f.id) FROM frames f WHERE f.duplicate_of = new.frame_id);
    UPDATE frames SET duplicate_of = NULL WHERE duplicate_of = new.frame_id;
END;

-- One row per described frame and pass.
CREATE VIEW frame_descriptions AS
SELECT f.id             AS film_id,
       f.title          AS film,
       fr.frame_index   AS frame_index,
       fr.pts_ms        AS pts_ms,
       t.source_frame   AS source_frame,
       t.timecode       AS timecode,
       fr.path          AS path,
       d.visual_content AS visual_content,
       d.mood           AS mood,
       d.action         AS action,
       d.setting        AS setting,
       d.model          AS model,
       d.created_at     AS described_at,
       strftime('%Y-%m-%dT%H:%M:%fZ', d.created_at / 1000.0, 'unixepoch') AS described_at_iso,
       o.frame_index    AS copied_from_frame,
       p.name           AS pass,
       d.fields         AS fields
FROM films f
JOIN frames fr ON fr.film_id = f.id
JOIN frame_times t ON t.frame_id = fr.id
JOIN descriptions d ON d.frame_id = fr.id
JOIN passes p ON p.id = d.pass_id
LEFT JOIN frames o ON o.id = d.duplicate_of;

-- Progress per film and pass.
CREATE VIEW film_progress AS
WITH counts AS (
    SELECT film_id, pass_id,
           count(*)                 AS total,
           sum(state = 'queued')    AS queued,
           sum(state = 'running')   AS running,
           sum(state = 'done')      AS done,
           sum(state = 'failed')    AS failed,
           sum(state = 'cancelled') AS cancelled
    FROM jobs GROUP BY film_id, pass_id
), pace AS (
    SELECT fr.film_id, d.pass_id,
           min(d.created_at) AS first_at,
           max(d.created_at) AS last_at,
           count(*)          AS described
    FROM descriptions d JOIN frames fr ON fr.id = d.frame_id
    GROUP BY fr.film_id, d.pass_id
)
SELECT f.id AS film_id,
       f.title AS film,
       p.name AS pass,
       c.total AS total,
       c.queued, c.running, c.done, c.failed, c.cancelled,
       round(100.0 * c.done / max(c.total, 1), 1) AS done_pct,
       CASE WHEN pc.described > 1 AND pc.last_at > pc.first_at
            THEN round((pc.described - 1) * 1000.0 / (pc.last_at - pc.first_at), 2) END AS frames_per_s,
       CASE WHEN pc.described > 1 AND pc.last_at > pc.first_at
            THEN CAST((c.queued + c.running)
                      * (pc.last_at - pc.first_at) / (pc.described - 1) / 1000 AS INTEGER) END AS eta_s
FROM films f
JOIN counts c ON c.film_id = f.id
JOIN passes p ON p.id = c.pass_id
LEFT JOIN pace pc ON pc.film_id = f.id AND pc.pass_id = c.pass_id;

-- The answers of two or more passes side by side: one row per frame and
-- field that at least two passes answered; `answers` maps each pass's name
-- to its answer, `agree` says whether they are all the same.
CREATE VIEW pass_comparison AS
SELECT fr.film_id          AS film_id,
       f.title             AS film,
       fr.frame_index      AS frame_index,
       fr.pts_ms           AS pts_ms,
       fr.path             AS path,
       a.key               AS field,
       count(*)            AS passes,
       json_group_object(p.name, CASE a.type WHEN 'true' THEN json('true')
                                             WHEN 'false' THEN json('false')
                                             WHEN 'array' THEN json(a.value)
                                             WHEN 'object' THEN json(a.value)
                                             ELSE a.value END) AS answers,
       count(DISTINCT CAST(a.value AS TEXT)) = 1 AS agree
FROM descriptions d
JOIN passes p ON p.id = d.pass_id
JOIN frames fr ON fr.id = d.frame_id
JOIN films f ON f.id = fr.film_id
JOIN json_each(d.fields) a
GROUP BY d.frame_id, a.key
HAVING count(*) >= 2;

COMMIT;
PRAGMA foreign_keys = ON;
