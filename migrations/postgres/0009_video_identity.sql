-- A video's film is known by its file, as on SQLite: the same path, size
-- and modification time is the same film (enqueued again, nothing is
-- extracted); a changed file is a new film unless `--replace`. The frame
-- selection it was extracted with is kept, so a second enqueue with
-- another selection is refused instead of silently ignored.
ALTER TABLE films
    ADD COLUMN source_size     bigint,
    ADD COLUMN source_mtime_ms bigint,
    ADD COLUMN extraction      text;
CREATE INDEX films_source ON films (source_path) WHERE source_path IS NOT NULL;
