-- Dialogue: a film's subtitle lines (from `--subtitles FILE` or the film's
-- own text subtitle stream), markup stripped, times in ms from the film's
-- start. `frame_dialogue` puts each frame next to the line on screen at its
-- time and the lines before and after; `subtitle_search` is their full-text
-- index (declared `content="subtitles"`, as Datasette and sqlite-utils look
-- for it).
CREATE TABLE subtitles (
    id         INTEGER PRIMARY KEY,
    film_id    INTEGER NOT NULL REFERENCES films(id) ON DELETE CASCADE,
    line_index INTEGER NOT NULL CHECK (line_index >= 0),
    start_ms   INTEGER NOT NULL CHECK (start_ms >= 0),
    end_ms     INTEGER NOT NULL CHECK (end_ms >= start_ms),
    text       TEXT    NOT NULL,
    UNIQUE (film_id, line_index)
) STRICT;
-- Serves "the line on screen at t" and "the lines before and after t".
CREATE INDEX subtitles_film_start ON subtitles (film_id, start_ms);

CREATE VIRTUAL TABLE subtitle_search USING fts5(
    text, content="subtitles", content_rowid="id"
);

CREATE TRIGGER subtitles_search_insert AFTER INSERT ON subtitles BEGIN
    INSERT INTO subtitle_search (rowid, text) VALUES (new.id, new.text);
END;

CREATE TRIGGER subtitles_search_delete AFTER DELETE ON subtitles BEGIN
    INSERT INTO subtitle_search (subtitle_search, rowid, text) VALUES ('delete', old.id, old.text);
END;

CREATE TRIGGER subtitles_search_update AFTER UPDATE ON subtitles BEGIN
    INSERT INTO subtitle_search (subtitle_search, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO subtitle_search (rowid, text) VALUES (new.id, new.text);
END;

-- Every frame with the line on screen at its time, the line before it and
-- the line after it. "On screen" is the last line to start at or before
-- the frame, while it lasts (lines are numbered in start order), so each
-- frame costs three index seeks, not a scan of the film's lines.
CREATE VIEW frame_dialogue AS
WITH latest AS (
    SELECT f.id           AS film_id,
           f.title        AS film,
           fr.frame_index AS frame_index,
           fr.pts_ms      AS pts_ms,
           fr.path        AS path,
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
