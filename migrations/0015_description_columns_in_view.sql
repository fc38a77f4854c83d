-- frame_descriptions shows what each description keeps of its try (the
-- weights' SHA-256, the prompt version, latency and token counts), as
-- PostgreSQL's view does (postgres/0011): the same columns, in the same
-- order, on both backends.
DROP VIEW frame_descriptions;
CREATE VIEW frame_descriptions AS
SELECT f.id             AS film_id,
       f.title          AS film,
       fr.frame_index   AS frame_index,
       fr.pts_ms        AS pts_ms,
       t.source_frame   AS source_frame,
       t.timecode       AS timecode,
       fr.path          AS path,
       d.visual_content AS visual_content,
       d.mood           AS mood,
       d.action         AS action,
       d.setting        AS setting,
       d.model          AS model,
       d.created_at     AS described_at,
       strftime('%Y-%m-%dT%H:%M:%fZ', d.created_at / 1000.0, 'unixepoch') AS described_at_iso,
       o.frame_index    AS copied_from_frame,
       p.name           AS pass,
       d.fields         AS fields,
       d.model_sha256   AS model_sha256,
       d.prompt_version AS prompt_version,
       d.latency_ms     AS latency_ms,
       d.prompt_tokens  AS prompt_tokens,
       d.completion_tokens AS completion_tokens
FROM films f
JOIN frames fr ON fr.film_id = f.id
JOIN frame_times t ON t.frame_id = fr.id
JOIN descriptions d ON d.frame_id = fr.id
JOIN passes p ON p.id = d.pass_id
LEFT JOIN frames o ON o.id = d.duplicate_of;
