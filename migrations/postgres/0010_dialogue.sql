-- Dialogue, as on SQLite (0007): a film's subtitle lines (from
-- `--subtitles FILE` or the film's own text subtitle stream), markup
-- stripped, times in ms from the film's start, with PostgreSQL's full-text
-- search over them (`search`, GIN). `frame_dialogue` puts each frame next
-- to the line on screen at its time and the lines before and after. No
-- foreign key, as for the other bulk rows: `queue::delete_film` removes a
-- film's lines itself.
CREATE TABLE subtitles (
    id         bigserial PRIMARY KEY,
    film_id    bigint NOT NULL,
    line_index bigint NOT NULL CHECK (line_index >= 0),
    start_ms   bigint NOT NULL CHECK (start_ms >= 0),
    end_ms     bigint NOT NULL CHECK (end_ms >= start_ms),
    text       text   NOT NULL,
    search     tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED,
    UNIQUE (film_id, line_index)
);
-- Serves "the line on screen at t" and "the lines before and after t".
CREATE INDEX subtitles_film_start ON subtitles (film_id, start_ms);
CREATE INDEX subtitles_search ON subtitles USING gin (search);

-- "On screen" is the last line to start at or before the frame, while it
-- lasts: three index seeks a frame.
CREATE VIEW frame_dialogue AS
WITH latest AS (
    SELECT f.id AS film_id, f.title AS film, fr.frame_index, fr.pts_ms, fr.path,
           (SELECT s.id FROM subtitles s
            WHERE s.film_id = fr.film_id AND s.start_ms <= fr.pts_ms
            ORDER BY s.start_ms DESC LIMIT 1) AS started
    FROM films f
    JOIN frames fr ON fr.film_id = f.id
)
SELECT l.film_id, l.film, l.frame_index, l.pts_ms, l.path,
       CASE WHEN s.end_ms >= l.pts_ms THEN s.text END AS line,
       CASE WHEN s.end_ms >= l.pts_ms
            THEN (SELECT p.text FROM subtitles p
                  WHERE p.film_id = l.film_id AND p.line_index = s.line_index - 1)
            ELSE s.text END AS previous_line,
       (SELECT n.text FROM subtitles n
        WHERE n.film_id = l.film_id AND n.start_ms > l.pts_ms
        ORDER BY n.start_ms LIMIT 1) AS next_line
FROM latest l
LEFT JOIN subtitles s ON s.id = l.started;
