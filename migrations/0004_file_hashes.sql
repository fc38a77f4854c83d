-- SHA-256 of the model files a worker ran, so that a multi-GB file is
-- hashed once: a row holds while the file's size and mtime are unchanged.
CREATE TABLE file_hashes (
    path      TEXT    PRIMARY KEY,
    size      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    sha256    TEXT    NOT NULL,
    hashed_at INTEGER NOT NULL
) STRICT;
