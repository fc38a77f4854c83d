-- Shots, as on SQLite (0010): scene mode finds a film's shot boundaries,
-- then picks frames in each shot. A shot runs from its cut to the next
-- (end_ms exclusive); first_frame/last_frame are source frame numbers at
-- the film's frame rate; score is the scene score of the cut that opened
-- it (0 for the first shot). No foreign keys, as for the other bulk rows:
-- `queue::delete_film` removes a film's shots itself.
CREATE TABLE shots (
    id          bigserial PRIMARY KEY,
    film_id     bigint NOT NULL,
    shot_index  bigint NOT NULL CHECK (shot_index >= 0),
    start_ms    bigint NOT NULL,
    end_ms      bigint NOT NULL CHECK (end_ms >= start_ms),
    first_frame bigint,
    last_frame  bigint,
    score       double precision NOT NULL,
    UNIQUE (film_id, shot_index)
);

ALTER TABLE frames ADD COLUMN shot_id bigint;
CREATE INDEX frames_shot ON frames (shot_id) WHERE shot_id IS NOT NULL;
