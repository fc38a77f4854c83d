-- Near-duplicate frames: a video frame's 64-bit difference hash (dHash of
-- its 9×8 grey thumbnail, made by ffmpeg in the extraction pass), and the
-- earlier frame of the same film it nearly repeats (`duplicate_of`, set at
-- enqueue when the hashes are within --dedupe-distance bits).
--
-- A duplicate's job stays queued but is never claimed; when its original
-- is described, the description is copied to it (`descriptions.duplicate_of`
-- names the frame it was copied from, NULL for a model's own answer) and the
-- job is done. If the original fails or is cancelled, the first of its
-- duplicates is described on its own, and the others wait for it.
ALTER TABLE frames ADD COLUMN dhash INTEGER;
ALTER TABLE frames ADD COLUMN duplicate_of INTEGER REFERENCES frames(id);
CREATE INDEX frames_duplicate_of ON frames (duplicate_of) WHERE duplicate_of IS NOT NULL;

ALTER TABLE descriptions ADD COLUMN duplicate_of INTEGER;

CREATE TRIGGER descriptions_copy_to_duplicates AFTER INSERT ON descriptions
WHEN new.duplicate_of IS NULL BEGIN
    INSERT INTO descriptions (job_id, frame_id, visual_content, mood, action, setting, model,
                              model_sha256, prompt_version, latency_ms, prompt_tokens,
                              completion_tokens, created_at, duplicate_of)
    SELECT fr.id, fr.id, new.visual_content, new.mood, new.action, new.setting, new.model,
           new.model_sha256, new.prompt_version, NULL, NULL, NULL, new.created_at, new.frame_id
    FROM frames fr JOIN jobs j ON j.id = fr.id
    WHERE fr.duplicate_of = new.frame_id AND j.state = 'queued';
    UPDATE jobs SET state = 'done', updated_at = new.created_at
    WHERE state = 'queued'
      AND EXISTS (SELECT 1 FROM frames f WHERE f.id = jobs.id AND f.duplicate_of = new.frame_id);
END;

-- The first of them becomes the original of the others.
CREATE TRIGGER jobs_ended_undescribed_frees_duplicates AFTER UPDATE OF state ON jobs
WHEN new.state = 'failed' OR new.state = 'cancelled' BEGIN
    UPDATE frames SET duplicate_of = (SELECT min(f.id) FROM frames f WHERE f.duplicate_of = new.id)
    WHERE duplicate_of = new.id
      AND id <> (SELECT min(f.id) FROM frames f WHERE f.duplicate_of = new.id);
    UPDATE frames SET duplicate_of = NULL WHERE duplicate_of = new.id;
END;

-- The view gains which frame a copied description came from (its
-- frame_index; NULL for the model's own answer).
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
       strftime('%Y-%m-%dT%H:%M:%fZ', d.created_at / 1000.0, 'unixepoch') AS described_at_iso,
       o.frame_index    AS copied_from_frame
FROM films f
JOIN frames fr ON fr.film_id = f.id
JOIN frame_times t ON t.frame_id = fr.id
JOIN descriptions d ON d.job_id = fr.id  -- a job's id is its frame's id
LEFT JOIN frames o ON o.id = d.duplicate_of;
