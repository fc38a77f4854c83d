//! What `cinecut report` reads on PostgreSQL: the films' facts, then each
//! film's frames with their descriptions or failures a page at a time.

use crate::{PgQueue, Result};

pub use cinecut_types::{FilmFacts, ReportFrame};

/// The films `only` names (every film when it is empty), in order.
pub async fn films(q: &PgQueue, only: &[i64]) -> Result<Vec<FilmFacts>> {
    Ok(sqlx::query_as!(
        FilmFacts,
        "SELECT id, title, source_path, fps, duration_ms, width, height, frame_count, is_video
         FROM films WHERE cardinality($1::bigint[]) = 0 OR id = ANY($1) ORDER BY id",
        only
    )
    .fetch_all(q.pool())
    .await?)
}

/// A page of film `film`'s frames that have a job in pass `pass`, after
/// frame index `after`, in frame order (a range seek on
/// `UNIQUE(film_id, frame_index)`).
pub async fn frames_page(
    q: &PgQueue,
    film: i64,
    pass: i64,
    after: i64,
    limit: i64,
) -> Result<Vec<ReportFrame>> {
    Ok(sqlx::query_as!(
        ReportFrame,
        r#"SELECT fr.frame_index, fr.pts_ms, fr.path, j.state, j.attempts,
                  CASE WHEN j.state = 'failed' THEN j.last_error END AS error,
                  d.fields::text AS "fields?", d.model AS "model?", fr.jpeg AS stored,
                  o.frame_index AS "copied_from?",
                  (SELECT CASE WHEN s.end_ms >= fr.pts_ms THEN s.text END FROM subtitles s
                   WHERE s.film_id = fr.film_id AND s.start_ms <= fr.pts_ms
                   ORDER BY s.start_ms DESC LIMIT 1) AS line
           FROM frames fr
           JOIN jobs j ON j.frame_id = fr.id AND j.pass_id = $4
           LEFT JOIN descriptions d ON d.job_id = j.id
           LEFT JOIN frames o ON o.id = d.duplicate_of
           WHERE fr.film_id = $1 AND fr.frame_index > $2
           ORDER BY fr.frame_index
           LIMIT $3"#,
        film,
        after,
        limit,
        pass
    )
    .fetch_all(q.pool())
    .await?)
}

/// The pass a reader means by default: the oldest pass with jobs of film
/// `film`, as (id, name).
pub async fn first_pass_with_film(q: &PgQueue, film: i64) -> Result<Option<(i64, String)>> {
    Ok(sqlx::query!(
        "SELECT p.id, p.name FROM passes p
         WHERE EXISTS (SELECT 1 FROM jobs j WHERE j.film_id = $1 AND j.pass_id = p.id)
         ORDER BY p.id LIMIT 1",
        film
    )
    .fetch_optional(q.pool())
    .await?
    .map(|r| (r.id, r.name)))
}
