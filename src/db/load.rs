//! The producer's writes, one contract for both backends: a
//! [`FrameLoader`] writes chunks of frames into a film, each new frame with
//! a job in every pass of the enqueue. Each backend takes a chunk in a form
//! of its own ([`FrameLoader::Rows`]: SQLite a JSON array for `json_each`,
//! PostgreSQL arrays for `UNNEST`), made on the producer's blocking thread
//! so that the runtime only writes.

use cinecut_postgres::queue as pgq;

use super::pg::PgDb;
use super::queue::{BulkLoader, ChunkOutcome, FilmSpec, FrameChunk, JobSpec, NewFrame};
use super::{Db, Store};
use crate::error::Result;

/// Writes chunks of frames into films (see the module note).
pub trait FrameLoader {
    /// A chunk as this database takes it.
    type Rows: Send + 'static;

    /// `frames` as this database takes them, with their `stored` bytes (in
    /// the same order) when the enqueue keeps them (`--store-frames`).
    /// Pure CPU work, for a blocking thread.
    fn rows(frames: &[NewFrame], stored: Option<Vec<Vec<u8>>>) -> Self::Rows;

    /// Adds a chunk's frames to film `film` (frames it has, by path or
    /// index, are left as they are), each new one with a job in every pass
    /// of the enqueue, in one transaction.
    fn load(
        &mut self,
        film: i64,
        rows: &Self::Rows,
        jobs: &JobSpec<'_>,
    ) -> impl Future<Output = Result<ChunkOutcome>>;
}

impl FrameLoader for BulkLoader {
    type Rows = FrameChunk;

    fn rows(frames: &[NewFrame], stored: Option<Vec<Vec<u8>>>) -> FrameChunk {
        match stored {
            Some(bytes) => FrameChunk::storing(frames, bytes),
            None => FrameChunk::new(frames),
        }
    }

    async fn load(
        &mut self,
        film: i64,
        rows: &FrameChunk,
        jobs: &JobSpec<'_>,
    ) -> Result<ChunkOutcome> {
        self.enqueue_chunk(film, rows, jobs).await
    }
}

/// The PostgreSQL loader: the passes of the enqueue, made if new.
pub struct PgLoader {
    db: PgDb,
    passes: Vec<i64>,
}

impl FrameLoader for PgLoader {
    type Rows = Vec<pgq::NewFrame>;

    fn rows(frames: &[NewFrame], stored: Option<Vec<Vec<u8>>>) -> Self::Rows {
        let mut stored = stored.map(Vec::into_iter);
        frames
            .iter()
            .map(|f| pgq::NewFrame {
                path: f.path.clone(),
                frame_index: f.frame_index,
                pts_ms: f.pts_ms,
                width: f.width,
                height: f.height,
                shot: f.shot,
                dhash: f.dhash,
                duplicate_of: f.duplicate_of.clone(),
                bytes: stored.as_mut().and_then(Iterator::next),
            })
            .collect()
    }

    /// Pass by pass; a frame is new (and a near-duplicate) once, in the
    /// first pass; a frame whose explicit index another path holds is
    /// rejected, as on SQLite.
    async fn load(
        &mut self,
        film: i64,
        rows: &Self::Rows,
        jobs: &JobSpec<'_>,
    ) -> Result<ChunkOutcome> {
        let mut outcome = ChunkOutcome::default();
        for (i, pass) in self.passes.iter().enumerate() {
            let added = self
                .db
                .enqueue_frames_of(film, *pass, rows, jobs.max_attempts)
                .await?;
            if i == 0 {
                outcome.inserted = added.frames;
                let conflicts = added.index_conflicts.len() as u64;
                outcome.already = rows.len() as u64 - added.frames - conflicts;
                outcome.index_conflicts = added.index_conflicts;
                outcome.near_duplicates = added.near_duplicates;
            }
        }
        Ok(outcome)
    }
}

impl Db {
    /// The SQLite loader (see [`Db::bulk_loader`]).
    pub async fn frame_loader(&self) -> Result<BulkLoader> {
        self.bulk_loader().await
    }
}

impl PgDb {
    /// The PostgreSQL loader for the passes `names`, each made if new; with
    /// no names, every pass of the database (`default` when there is none),
    /// as on SQLite.
    pub async fn frame_loader(&self, names: &[String]) -> Result<PgLoader> {
        let passes = self.passes_for_enqueue(names).await?;
        Ok(PgLoader {
            db: self.clone(),
            passes,
        })
    }
}

impl Store {
    /// The id of the film titled `spec.title`, made (with its source and
    /// priority) if missing.
    pub async fn ensure_film(&self, spec: &FilmSpec) -> Result<i64> {
        match self {
            Store::Sqlite(db) => super::queue::ensure_film(db.pool(), spec).await,
            Store::Postgres(db) => db.ensure_film_spec(spec).await,
        }
    }
}
