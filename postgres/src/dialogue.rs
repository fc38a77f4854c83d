//! A film's dialogue on PostgreSQL (migrations/postgres/0010_dialogue.sql):
//! its subtitle lines, the line on screen at a frame's time, and search
//! over the lines.

use crate::{PgQueue, Result};

pub use cinecut_types::{DialogueHit, SubtitleLine};

/// Replaces film `film`'s lines with `lines` (in time order), in one
/// transaction.
pub async fn replace(q: &PgQueue, film: i64, lines: &[SubtitleLine]) -> Result<()> {
    let start: Vec<i64> = lines.iter().map(|l| l.start_ms).collect();
    let end: Vec<i64> = lines.iter().map(|l| l.end_ms).collect();
    let text: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    let mut tx = q.pool().begin().await?;
    sqlx::query!("DELETE FROM subtitles WHERE film_id = $1", film)
        .execute(&mut *tx)
        .await?;
    sqlx::query!(
        "INSERT INTO subtitles (film_id, line_index, start_ms, end_ms, text)
         SELECT $1, n - 1, s, e, t
         FROM UNNEST($2::bigint[], $3::bigint[], $4::text[]) WITH ORDINALITY AS u(s, e, t, n)",
        film,
        &start,
        &end,
        &text as &[&str]
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Whether film `film` has any line.
pub async fn has_lines(q: &PgQueue, film: i64) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM subtitles WHERE film_id = $1) AS "any!""#,
        film
    )
    .fetch_one(q.pool())
    .await?)
}

/// The line on screen at each of `frames`' times (frame id, line), for
/// the frames that have one.
pub async fn lines_at(q: &PgQueue, frames: &[i64]) -> Result<Vec<(i64, String)>> {
    Ok(sqlx::query!(
        r#"SELECT fr.id AS "frame!",
                  (SELECT CASE WHEN s.end_ms >= fr.pts_ms THEN s.text END FROM subtitles s
                   WHERE s.film_id = fr.film_id AND s.start_ms <= fr.pts_ms
                   ORDER BY s.start_ms DESC LIMIT 1) AS line
           FROM frames fr WHERE fr.id = ANY($1::bigint[])"#,
        frames
    )
    .fetch_all(q.pool())
    .await?
    .into_iter()
    .filter_map(|r| Some((r.frame, r.line?)))
    .collect())
}

/// Lines with every word of `words` (English stemming), best first.
pub async fn search(
    q: &PgQueue,
    words: &str,
    film: Option<i64>,
    limit: i64,
) -> Result<Vec<DialogueHit>> {
    Ok(sqlx::query_as!(
        DialogueHit,
        r#"SELECT f.title AS film, s.start_ms, s.end_ms, s.text,
                  fr.frame_index AS "frame_index?", fr.path AS "path?"
           FROM subtitles s
           JOIN films f ON f.id = s.film_id
           LEFT JOIN LATERAL (SELECT x.frame_index, x.path FROM frames x
                              WHERE x.film_id = s.film_id AND x.pts_ms >= s.start_ms
                              ORDER BY x.pts_ms LIMIT 1) fr ON true
           WHERE s.search @@ plainto_tsquery('english', $1)
             AND ($2::bigint IS NULL OR s.film_id = $2)
           ORDER BY ts_rank(s.search, plainto_tsquery('english', $1)) DESC, s.film_id, s.start_ms
           LIMIT $3"#,
        words,
        film,
        limit
    )
    .fetch_all(q.pool())
    .await?)
}
