-- Source frame numbers and SMPTE timecode next to pts_ms, and the frame
-- selection a film was extracted with.
--
-- A frame's number in its source is its presentation time times the film's
-- frame rate (exact for constant frame rate films, which is what timecode
-- assumes anyway), so it is derived in a view rather than stored: enqueue
-- writes nothing more. `timecode` is non-drop-frame HH:MM:SS:FF at the
-- nominal rate (29.97 fps counts 30 frames a second, as NDF timecode does).
ALTER TABLE films ADD COLUMN extraction TEXT;  -- e.g. '--select scene --scene-threshold 0.3 --max-gap 10 --max-side 1024'

CREATE VIEW frame_times AS
SELECT id AS frame_id, film_id, frame_index, pts_ms, n AS source_frame,
       CASE WHEN n IS NOT NULL AND b >= 1
            THEN printf('%02d:%02d:%02d:%02d', n / (3600 * b), n / (60 * b) % 60, n / b % 60, n % b)
       END AS timecode
FROM (SELECT fr.id, fr.film_id, fr.frame_index, fr.pts_ms,
             CAST(round(fr.pts_ms * f.fps / 1000.0) AS INTEGER) AS n,
             CAST(round(f.fps) AS INTEGER) AS b
      FROM frames fr JOIN films f ON f.id = fr.film_id);

DROP VIEW frame_descriptions;
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
       strftime('%Y-%m-%dT%H:%M:%fZ', d.created_at / 1000.0, 'unixepoch') AS described_at_iso
FROM films f
JOIN frames fr ON fr.film_id = f.id
JOIN frame_times t ON t.frame_id = fr.id
JOIN descriptions d ON d.job_id = fr.id;  -- a job's id is its frame's id

DROP VIEW frame_dialogue;
CREATE VIEW frame_dialogue AS
WITH latest AS (
    SELECT f.id           AS film_id,
           f.title        AS film,
           fr.frame_index AS frame_index,
           fr.pts_ms      AS pts_ms,
           fr.path        AS path,
           (SELECT s.id FROM subtitles s
            WHERE s.film_id = fr.film_id AND s.start_ms <= fr.pts_ms
            ORDER BY s.start_ms DESC LIMIT 1) AS started,
           fr.id          AS frame_id
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
