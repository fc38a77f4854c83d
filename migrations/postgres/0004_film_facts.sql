-- What a film's report shows in its header, as on SQLite: the video it was
-- extracted from (path, frame rate, length, size); NULL for stills.
ALTER TABLE films
    ADD COLUMN fps         double precision,
    ADD COLUMN duration_ms bigint,
    ADD COLUMN width       bigint,
    ADD COLUMN height      bigint,
    ADD COLUMN is_video    boolean NOT NULL DEFAULT false;
