-- Every description with its film, frame and pass, in one place: what
-- `results` and `search` read, and what a person queries with psql
-- (`SELECT film, pts_ms, fields->>'mood' FROM frame_descriptions`).
CREATE VIEW frame_descriptions AS
SELECT f.title AS film, fr.film_id, fr.frame_index, fr.pts_ms, fr.path, d.frame_id,
       p.name AS pass, d.pass_id, d.model, d.fields, d.search, d.created_at
FROM descriptions d
JOIN frames fr ON fr.id = d.frame_id
JOIN films f ON f.id = fr.film_id
JOIN passes p ON p.id = d.pass_id;
