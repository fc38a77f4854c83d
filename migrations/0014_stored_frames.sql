-- `enqueue --store-frames`: a frame's own bytes (the JPEG or PNG file as it
-- was read at enqueue), for a worker that cannot reach the file (a copied
-- database, stills removed after enqueue, a mount missing on this host).
-- A table of its own, so the frames table and its scans stay narrow; a
-- claim looks its frames up here by primary key. Deleted with its frame.
CREATE TABLE stored_frames (
    frame_id INTEGER PRIMARY KEY REFERENCES frames(id) ON DELETE CASCADE,
    bytes    BLOB    NOT NULL
);
