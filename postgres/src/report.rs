//! What `cinecut report` reads on PostgreSQL: the films' facts, then each
//! film's frames with their descriptions or failures a page at a time.

use crate::{PgQueue, Result};

/// A film as the report's header shows it.
#[derive(Debug, Clone)]
pub struct Film {
    pub id: i64,
    pub title: String,
    pub source_path: Option<String>,
    pub fps: Option<f64>,
    pub duration_ms: Option<i64>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub frame_count: i64,
    pub is_video: bool,
}

/// Every film, in order.
pub async fn films(q: &PgQueue) -> Result<Vec<Film>> {
    Ok(sqlx::query_as!(
        Film,
        "SELECT id, title, source_path, fps, duration_ms, width, height, frame_count, is_video
         FROM films ORDER BY id"
    )
    .fetch_all(q.pool())
    .await?)
}

/// One frame of the report: its job's state, its description when done,
/// its last error when failed, and its stored bytes if it has them.
#[derive(Debug, Clone)]
pub struct Frame {
    pub frame_index: i64,
    pub pts_ms: Option<i64>,
    pub path: String,
    pub state: String,
    pub attempts: i64,
    pub error: Option<String>,
    pub fields: Option<sqlx::types::JsonValue>,
    pub model: Option<String>,
    pub bytes: Option<Vec<u8>>,
    /// A near-duplicate's description: the frame_index it was copied from.
    pub copied_from: Option<i64>,
    /// The subtitle line on screen at the frame's time.
    pub line: Option<String>,
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
) -> Result<Vec<Frame>> {
    Ok(sqlx::query_as!(
        Frame,
        r#"SELECT fr.frame_index, fr.pts_ms, fr.path, j.state, j.attempts,
                  CASE WHEN j.state = 'failed' THEN j.last_error END AS error,
                  d.fields AS "fields?", d.model AS "model?", fr.jpeg AS bytes,
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
