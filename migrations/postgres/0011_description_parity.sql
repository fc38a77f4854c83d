-- What SQLite keeps, kept here too (SQLite: 0001, 0008, 0011, 0015):
--
-- - each description's weights (SHA-256 of the model and mmproj), prompt
--   version, try latency and token counts; a pass learns its model's
--   SHA-256 from its first description that carries one;
-- - the views `frame_times` (source frame number and SMPTE timecode),
--   `frame_descriptions` with SQLite's columns in SQLite's order,
--   `frame_dialogue` with its timecode, `film_progress` and
--   `pass_comparison`.
--
-- - each answer kept as the worker wrote it (`json`, not `jsonb`, which
--   reorders the keys and respaces them): `fields` reads the same text on
--   both backends.
--
-- Descriptions from before this migration keep NULL in the new columns.
ALTER TABLE descriptions
    ADD COLUMN model_sha256      text,
    ADD COLUMN prompt_version    bigint,
    ADD COLUMN latency_ms        bigint,
    ADD COLUMN prompt_tokens     bigint,
    ADD COLUMN completion_tokens bigint;

ALTER TABLE passes ADD COLUMN model_sha256 text;

-- Only when no other transaction holds the pass row: every worker's round
-- reads it FOR SHARE (a rebinding waits for a claim), so two workers
-- recording their pass's first descriptions at once would otherwise each
-- wait for the other's share lock (a deadlock). A later description
-- teaches the pass then; `passes` reads the first description's hash
-- until it has.
CREATE FUNCTION teach_pass_model_sha256() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM passes WHERE id = NEW.pass_id AND model_sha256 IS NULL
    FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        UPDATE passes SET model_sha256 = NEW.model_sha256 WHERE id = NEW.pass_id;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER descriptions_teach_pass_model_sha256 AFTER INSERT ON descriptions
FOR EACH ROW WHEN (NEW.model_sha256 IS NOT NULL AND NEW.duplicate_of IS NULL)
EXECUTE FUNCTION teach_pass_model_sha256();

-- A copy carries its original's weights and prompt version (not its
-- latency or tokens: no try made it), as on SQLite.
CREATE OR REPLACE FUNCTION copy_to_duplicates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM frames WHERE duplicate_of = NEW.frame_id) THEN
        RETURN NULL;
    END IF;
    WITH copied AS (
        INSERT INTO descriptions (job_id, frame_id, pass_id, visual_content, mood, action, setting,
                                  fields, search_text, model, model_sha256, prompt_version,
                                  duplicate_of, created_at)
        SELECT j.id, fr.id, NEW.pass_id, NEW.visual_content, NEW.mood, NEW.action, NEW.setting,
               NEW.fields, NEW.search_text, NEW.model, NEW.model_sha256, NEW.prompt_version,
               NEW.frame_id, NEW.created_at
        FROM frames fr
        CROSS JOIN LATERAL (SELECT id FROM jobs
                            WHERE frame_id = fr.id AND pass_id = NEW.pass_id
                              AND state = 'queued') j
        WHERE fr.duplicate_of = NEW.frame_id
        RETURNING job_id)
    UPDATE jobs SET state = 'done', updated_at = clock_timestamp()
    WHERE id IN (SELECT job_id FROM copied);
    RETURN NULL;
END $$;

-- A timecode field: at least two digits, never cut (SQLite's '%02d';
-- lpad would cut 105 to '10').
CREATE FUNCTION two(n bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN n BETWEEN 0 AND 9 THEN '0' || n::text ELSE n::text END
$$;

CREATE VIEW frame_times AS
SELECT id AS frame_id, film_id, frame_index, pts_ms, n AS source_frame,
       CASE WHEN n IS NOT NULL AND b >= 1
            THEN two(n / (3600 * b)) || ':' || two(n / (60 * b) % 60) || ':' || two(n / b % 60)
                 || ':' || two(n % b)
       END AS timecode
FROM (SELECT fr.id, fr.film_id, fr.frame_index, fr.pts_ms,
             -- numeric: halves away from zero, as SQLite's round.
             round((fr.pts_ms * f.fps / 1000.0)::numeric)::bigint AS n,
             round(f.fps::numeric)::bigint AS b
      FROM frames fr JOIN films f ON f.id = fr.film_id) x;

DROP VIEW frame_descriptions;
ALTER TABLE descriptions ALTER COLUMN fields TYPE json USING fields::json;
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
       floor(extract(epoch FROM d.created_at) * 1000)::bigint AS described_at,
       to_char(d.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS described_at_iso,
       o.frame_index    AS copied_from_frame,
       p.name           AS pass,
       d.fields         AS fields,
       d.model_sha256   AS model_sha256,
       d.prompt_version AS prompt_version,
       d.latency_ms     AS latency_ms,
       d.prompt_tokens  AS prompt_tokens,
       d.completion_tokens AS completion_tokens
FROM films f
JOIN frames fr ON fr.film_id = f.id
JOIN frame_times t ON t.frame_id = fr.id
JOIN descriptions d ON d.frame_id = fr.id
JOIN passes p ON p.id = d.pass_id
LEFT JOIN frames o ON o.id = d.duplicate_of;

DROP VIEW frame_dialogue;
CREATE VIEW frame_dialogue AS
WITH latest AS (
    SELECT f.id AS film_id, f.title AS film, fr.frame_index, fr.pts_ms, fr.path, fr.id AS frame_id,
           (SELECT s.id FROM subtitles s
            WHERE s.film_id = fr.film_id AND s.start_ms <= fr.pts_ms
            ORDER BY s.start_ms DESC LIMIT 1) AS started
    FROM films f
    JOIN frames fr ON fr.film_id = f.id
)
SELECT l.film_id, l.film, l.frame_index, l.pts_ms, t.timecode, l.path,
       CASE WHEN s.end_ms >= l.pts_ms THEN s.text END AS line,
       CASE WHEN s.end_ms >= l.pts_ms
            THEN (SELECT p.text FROM subtitles p
                  WHERE p.film_id = l.film_id AND p.line_index = s.line_index - 1)
            ELSE s.text END AS previous_line,
       (SELECT n.text FROM subtitles n
        WHERE n.film_id = l.film_id AND n.start_ms > l.pts_ms
        ORDER BY n.start_ms LIMIT 1) AS next_line
FROM latest l
JOIN frame_times t ON t.frame_id = l.frame_id
LEFT JOIN subtitles s ON s.id = l.started;

CREATE VIEW film_progress AS
WITH counts AS (
    SELECT film_id, pass_id,
           count(*)                               AS total,
           count(*) FILTER (WHERE state = 'queued')    AS queued,
           count(*) FILTER (WHERE state = 'running')   AS running,
           count(*) FILTER (WHERE state = 'done')      AS done,
           count(*) FILTER (WHERE state = 'failed')    AS failed,
           count(*) FILTER (WHERE state = 'cancelled') AS cancelled
    FROM jobs GROUP BY film_id, pass_id
), pace AS (
    SELECT fr.film_id, d.pass_id,
           (extract(epoch FROM min(d.created_at)) * 1000)::bigint AS first_at,
           (extract(epoch FROM max(d.created_at)) * 1000)::bigint AS last_at,
           count(*) AS described
    FROM descriptions d JOIN frames fr ON fr.id = d.frame_id
    GROUP BY fr.film_id, d.pass_id
)
SELECT f.id AS film_id,
       f.title AS film,
       p.name AS pass,
       c.total AS total,
       c.queued, c.running, c.done, c.failed, c.cancelled,
       round(100.0 * c.done / greatest(c.total, 1), 1)::float8 AS done_pct,
       CASE WHEN pc.described > 1 AND pc.last_at > pc.first_at
            THEN round((pc.described - 1) * 1000.0 / (pc.last_at - pc.first_at), 2)::float8 END AS frames_per_s,
       CASE WHEN pc.described > 1 AND pc.last_at > pc.first_at
            THEN ((c.queued + c.running) * (pc.last_at - pc.first_at) / (pc.described - 1) / 1000)::bigint
       END AS eta_s
FROM films f
JOIN counts c ON c.film_id = f.id
JOIN passes p ON p.id = c.pass_id
LEFT JOIN pace pc ON pc.film_id = f.id AND pc.pass_id = c.pass_id;

CREATE VIEW pass_comparison AS
SELECT fr.film_id          AS film_id,
       f.title             AS film,
       fr.frame_index      AS frame_index,
       fr.pts_ms           AS pts_ms,
       fr.path             AS path,
       a.key               AS field,
       count(*)            AS passes,
       json_object_agg(p.name, a.value) AS answers,
       count(DISTINCT a.value::text) = 1 AS agree
FROM descriptions d
JOIN passes p ON p.id = d.pass_id
JOIN frames fr ON fr.id = d.frame_id
JOIN films f ON f.id = fr.film_id
CROSS JOIN LATERAL json_each(d.fields) a
GROUP BY d.frame_id, fr.film_id, f.title, fr.frame_index, fr.pts_ms, fr.path, a.key
HAVING count(*) >= 2;

-- Attempts' outcomes spelt as SQLite's (`failed`, `requeued`).
UPDATE attempts SET outcome = 'failed' WHERE outcome = 'fail';
UPDATE attempts SET outcome = 'requeued' WHERE outcome = 'requeue';

-- A seed column's value: the answer's field when it is a string, else NULL
-- (a custom profile may answer `mood` with tags), as on SQLite.
CREATE FUNCTION seed(fields json, name text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN json_typeof(fields -> name) = 'string' THEN fields ->> name END
$$;
