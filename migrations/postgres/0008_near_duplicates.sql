-- Near-duplicate frames, as on SQLite (0009, 0013): a frame's 64-bit
-- difference hash, and the earlier frame of the same film it nearly
-- repeats (`duplicate_of`, set at enqueue). A duplicate's job stays queued
-- but is never claimed; when its original is described in a pass, the
-- description is copied to it (`descriptions.duplicate_of` names the frame
-- it was copied from, NULL for a model's own answer) and its job in that
-- pass is done. If the original fails or is cancelled, the first of its
-- duplicates is described on its own, and the others wait for it.
ALTER TABLE frames
    ADD COLUMN dhash        bigint,
    ADD COLUMN duplicate_of bigint;
CREATE INDEX frames_duplicate_of ON frames (duplicate_of) WHERE duplicate_of IS NOT NULL;

ALTER TABLE descriptions ADD COLUMN duplicate_of bigint;

-- Runs for every description a worker stores, so it starts from the
-- frames that name the original (the partial index, empty for a frame
-- without duplicates: one probe) and finds each one's job by (frame, pass);
-- a plan that walked the pass's queued jobs instead cost a scan of the
-- queue per description (730 ms a round of 32 on 17,000 queued jobs).
CREATE FUNCTION copy_to_duplicates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM frames WHERE duplicate_of = NEW.frame_id) THEN
        RETURN NULL;
    END IF;
    WITH copied AS (
        INSERT INTO descriptions (job_id, frame_id, pass_id, visual_content, mood, action, setting,
                                  fields, search_text, model, duplicate_of)
        SELECT j.id, fr.id, NEW.pass_id, NEW.visual_content, NEW.mood, NEW.action, NEW.setting,
               NEW.fields, NEW.search_text, NEW.model, NEW.frame_id
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

CREATE TRIGGER descriptions_copy_to_duplicates AFTER INSERT ON descriptions
FOR EACH ROW WHEN (NEW.duplicate_of IS NULL) EXECUTE FUNCTION copy_to_duplicates();

-- The first of them becomes the original of the others; workers are woken
-- (it is claimable now).
CREATE FUNCTION free_duplicates() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    first_copy bigint;
BEGIN
    SELECT min(id) INTO first_copy FROM frames WHERE duplicate_of = NEW.frame_id;
    IF first_copy IS NOT NULL THEN
        UPDATE frames SET duplicate_of = CASE WHEN id = first_copy THEN NULL ELSE first_copy END
        WHERE duplicate_of = NEW.frame_id;
        PERFORM pg_notify('cinecut_jobs', NEW.pass_id::text);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_ended_undescribed_frees_duplicates AFTER UPDATE OF state ON jobs
FOR EACH ROW WHEN (NEW.state IN ('failed', 'cancelled') AND OLD.state IS DISTINCT FROM NEW.state)
EXECUTE FUNCTION free_duplicates();

-- The view gains which frame a copied description came from (its
-- frame_index; NULL for the model's own answer).
CREATE OR REPLACE VIEW frame_descriptions AS
SELECT f.title AS film, fr.film_id, fr.frame_index, fr.pts_ms, fr.path, d.frame_id,
       p.name AS pass, d.pass_id, d.model, d.fields, d.search, d.created_at,
       o.frame_index AS copied_from_frame
FROM descriptions d
JOIN frames fr ON fr.id = d.frame_id
JOIN films f ON f.id = fr.film_id
JOIN passes p ON p.id = d.pass_id
LEFT JOIN frames o ON o.id = d.duplicate_of;
