-- Times people can read next to the unix milliseconds that stay:
-- `described_at_iso` (UTC, ISO-8601 with milliseconds) in frame_descriptions.
DROP VIEW frame_descriptions;
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
       d.created_at     AS described_at,
       strftime('%Y-%m-%dT%H:%M:%fZ', d.created_at / 1000.0, 'unixepoch') AS described_at_iso
FROM films f
JOIN frames fr ON fr.film_id = f.id
JOIN descriptions d ON d.job_id = fr.id;  -- a job's id is its frame's id
