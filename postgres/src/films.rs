//! Films made from video files on PostgreSQL, known by their file as on
//! SQLite (see migrations/postgres/0009_video_identity.sql).

use crate::{PgQueue, Result};

pub use cinecut_types::{ExistingFilm, VideoFilm};

/// The film made from this very file (same path, size and modification
/// time), of title `title` if given.
pub async fn find_video_film(
    q: &PgQueue,
    video: &VideoFilm,
    title: Option<&str>,
) -> Result<Option<ExistingFilm>> {
    Ok(sqlx::query_as!(
        ExistingFilm,
        "SELECT id, title, frame_count, extraction FROM films
         WHERE source_path = $1 AND source_size = $2 AND source_mtime_ms = $3
           AND ($4::text IS NULL OR title = $4)
         ORDER BY id LIMIT 1",
        video.source_path,
        video.source_size,
        video.source_mtime_ms,
        title
    )
    .fetch_optional(q.pool())
    .await?)
}

/// Films made from any version of the file at `source_path`.
pub async fn films_from_path(q: &PgQueue, source_path: &str) -> Result<Vec<i64>> {
    Ok(
        sqlx::query_scalar!("SELECT id FROM films WHERE source_path = $1", source_path)
            .fetch_all(q.pool())
            .await?,
    )
}

/// Makes the film of `video`; a title another film has gets " (2)",
/// " (3)"… (another host making one at the same time included). Its id and
/// title.
pub async fn create_video_film(q: &PgQueue, video: &VideoFilm) -> Result<(i64, String)> {
    for n in 1.. {
        let title = match n {
            1 => video.title.clone(),
            n => format!("{} ({n})", video.title),
        };
        let made = sqlx::query_scalar!(
            "INSERT INTO films (title, source_path, source_size, source_mtime_ms, extraction, fps,
                                duration_ms, width, height, priority, is_video)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, true)
             ON CONFLICT (title) DO NOTHING
             RETURNING id",
            title,
            video.source_path,
            video.source_size,
            video.source_mtime_ms,
            video.extraction,
            video.fps,
            video.duration_ms,
            video.width,
            video.height,
            video.priority
        )
        .fetch_optional(q.pool())
        .await?;
        if let Some(id) = made {
            return Ok((id, title));
        }
    }
    unreachable!("some title is free")
}
