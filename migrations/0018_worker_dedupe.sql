-- Stills are hashed for near-duplicates by the worker that claims them,
-- which decodes them anyway, instead of by the producer before it writes
-- them (issue #28: decoding at enqueue held a 100,000-still manifest at
-- 551 frames/s). A still enqueued with near-duplicate detection keeps its
-- `--dedupe-distance` until it is hashed; the worker then writes its hash
-- and its 9×8 grey copy (72 bytes, which the next still is compared with)
-- and marks it a duplicate of the frame before it, or of that frame's
-- original, when near enough. Video frames are still hashed in the
-- extraction pass and keep no grey copy.
ALTER TABLE frames ADD COLUMN dedupe_distance INTEGER;
ALTER TABLE frames ADD COLUMN grey BLOB;
