//! A video's film on either backend: found by its file (path, size and
//! mtime), made with a free title, removed with its frames, and what it
//! holds besides frames (shots, dialogue). The producer's one path for a
//! video (`ingest::film::enqueue_video`) goes through these.

use super::Store;
use super::queue::{self, ExistingFilm, NewShot, SubtitleLine, VideoFilm};
use crate::error::Result;

impl Store {
    /// The film made from this very file; with `title`, the one of that
    /// title (another title is another film of the same file).
    pub async fn find_video_film(
        &self,
        video: &VideoFilm,
        title: Option<&str>,
    ) -> Result<Option<ExistingFilm>> {
        match (self, title) {
            (Store::Sqlite(db), None) => queue::find_video_film(db.pool(), video).await,
            (Store::Sqlite(db), Some(title)) => {
                queue::find_video_film_titled(db.pool(), video, title).await
            }
            (Store::Postgres(db), _) => db.find_video_film(video, title).await,
        }
    }

    /// Films made from any version of the file at `source_path`.
    pub async fn films_from_path(&self, source_path: &str) -> Result<Vec<i64>> {
        match self {
            Store::Sqlite(db) => queue::films_from_path(db.pool(), source_path).await,
            Store::Postgres(db) => db.films_from_path(source_path).await,
        }
    }

    /// Makes the film of `video` (a title another film has gets " (2)"…):
    /// its id and title.
    pub async fn create_video_film(&self, video: &VideoFilm) -> Result<(i64, String)> {
        match self {
            Store::Sqlite(db) => queue::create_video_film(db.pool(), video).await,
            Store::Postgres(db) => db.create_video_film(video).await,
        }
    }

    /// Deletes a film with its frames, jobs, shots and dialogue.
    pub async fn delete_film(&self, film: i64) -> Result<()> {
        match self {
            Store::Sqlite(db) => queue::delete_film(db.pool(), film).await,
            Store::Postgres(db) => db.delete_film(film).await,
        }
    }

    /// Stores a film's shots (before its frames, which name them); source
    /// frame numbers at the film's rate `fps`.
    pub async fn insert_shots(&self, film: i64, fps: Option<f64>, shots: &[NewShot]) -> Result<()> {
        match self {
            // SQLite reads the rate from the film's row.
            Store::Sqlite(db) => queue::insert_shots(db.pool(), film, shots).await,
            Store::Postgres(db) => db.insert_shots(film, fps, shots).await,
        }
    }

    /// Whether a film has any subtitle line.
    pub async fn has_subtitles(&self, film: i64) -> Result<bool> {
        match self {
            Store::Sqlite(db) => queue::has_subtitles(db.pool(), film).await,
            Store::Postgres(db) => db.has_subtitles(film).await,
        }
    }

    /// Replaces a film's subtitle lines (in time order).
    pub async fn replace_subtitles(&self, film: i64, lines: &[SubtitleLine]) -> Result<()> {
        match self {
            Store::Sqlite(db) => queue::replace_subtitles(db.pool(), film, lines).await,
            Store::Postgres(db) => db.replace_subtitles(film, lines).await,
        }
    }
}
