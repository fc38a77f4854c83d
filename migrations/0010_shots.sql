-- Shots: scene mode finds a film's shot boundaries first (cuts closer than
-- --min-shot to the last one ignored), then picks frames in each shot
-- (--pick, --per-shot). A shot runs from its cut to the next cut (end_ms
-- exclusive); first_frame/last_frame are source frame numbers at the film's
-- frame rate, as in frame_times; score is the scene score of the cut that
-- opened it (0 for the first shot).
CREATE TABLE shots (
    id          INTEGER PRIMARY KEY,
    film_id     INTEGER NOT NULL REFERENCES films(id) ON DELETE CASCADE,
    shot_index  INTEGER NOT NULL CHECK (shot_index >= 0),
    start_ms    INTEGER NOT NULL,
    end_ms      INTEGER NOT NULL CHECK (end_ms >= start_ms),
    first_frame INTEGER,
    last_frame  INTEGER,
    score       REAL    NOT NULL,
    UNIQUE (film_id, shot_index)
) STRICT;

ALTER TABLE frames ADD COLUMN shot_id INTEGER REFERENCES shots(id) ON DELETE SET NULL;
CREATE INDEX frames_shot ON frames (shot_id) WHERE shot_id IS NOT NULL;
