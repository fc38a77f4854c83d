-- A frame's width and height in pixels, as SQLite keeps them (known for a
-- film's frames from the video; NULL for stills, which are not decoded to
-- be enqueued).
ALTER TABLE frames ADD COLUMN width bigint, ADD COLUMN height bigint;
