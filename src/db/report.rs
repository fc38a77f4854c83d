//! What `cinecut report` reads: a film's facts, the light data of every
//! frame for the timeline (in one query), then the frames with their
//! descriptions or failures a page at a time (memory stays bounded).

use sqlx::SqlitePool;

use crate::error::Result;

pub use cinecut_types::{FilmFacts, ReportField, ReportFrame};

/// Rows per page of [`frames_page`].
pub const PAGE: i64 = 500;

pub async fn films(pool: &SqlitePool, only: &[i64]) -> Result<Vec<FilmFacts>> {
    let all = sqlx::query_as!(
        FilmFacts,
        r#"SELECT id AS "id!", title AS "title!", source_path, fps, duration_ms, width, height,
                  frame_count AS "frame_count!", source_size IS NOT NULL AS "is_video!: bool"
           FROM films ORDER BY id"#
    )
    .fetch_all(pool)
    .await?;
    Ok(all
        .into_iter()
        .filter(|f| only.is_empty() || only.contains(&f.id))
        .collect())
}

/// A page of the film's frames after frame index `after`, in frame order
/// (which is time order for a film's frames; a range seek on
/// `UNIQUE(film_id, frame_index)`).
/// A frame without a job in `pass` is not shown.
pub async fn frames_page(
    pool: &SqlitePool,
    film: i64,
    pass: i64,
    after: i64,
) -> Result<Vec<ReportFrame>> {
    Ok(sqlx::query_as!(
        ReportFrame,
        r#"SELECT fr.frame_index AS "frame_index!", fr.pts_ms, fr.path AS "path!",
                  j.state AS "state!", j.attempts AS "attempts!",
                  CASE WHEN j.state = 'failed' THEN j.last_error END AS "error?: String",
                  d.fields AS "fields?", d.model AS "model?",
                  (SELECT CASE WHEN s.end_ms >= fr.pts_ms THEN s.text END FROM subtitles s
                   WHERE s.film_id = fr.film_id AND s.start_ms <= fr.pts_ms
                   ORDER BY s.start_ms DESC LIMIT 1) AS "line?: String",
                  o.frame_index AS "copied_from?: i64",
                  (SELECT sf.bytes FROM stored_frames sf WHERE sf.frame_id = fr.id) AS "stored?: Vec<u8>"
           FROM frames fr
           JOIN jobs j ON j.frame_id = fr.id AND j.pass_id = ?4
           LEFT JOIN descriptions d ON d.job_id = j.id
           LEFT JOIN frames o ON o.id = d.duplicate_of
           WHERE fr.film_id = ?1 AND fr.frame_index > ?2
           ORDER BY fr.frame_index
           LIMIT ?3"#,
        film,
        after,
        PAGE,
        pass
    )
    .fetch_all(pool)
    .await?)
}

/// The fields of pass `pass`'s profile, in the profile's order (empty when
/// the pass has no profile recorded: an unbound pass, or one migrated from
/// before profiles, whose answers are the default profile's).
pub async fn fields(pool: &SqlitePool, pass: i64) -> Result<Vec<ReportField>> {
    Ok(sqlx::query_as!(
        ReportField,
        r#"SELECT f.value ->> '$.name' AS "name!: String", f.value ->> '$.type' AS "kind!: String"
           FROM passes p, json_each(p.profile, '$.fields') f
           WHERE p.id = ? ORDER BY f.key"#,
        pass
    )
    .fetch_all(pool)
    .await?)
}
