//! The producer's writes, one contract for both backends: a
//! [`FrameLoader`] writes chunks of frames into a film, each new frame with
//! a job in every pass of the enqueue. Each backend takes a chunk in a form
//! of its own ([`FrameLoader::Rows`]: SQLite a JSON array for `json_each`,
//! PostgreSQL arrays for `UNNEST`), made on the producer's blocking thread
//! so that the runtime only writes.

use super::queue::{BulkLoader, ChunkOutcome, FrameChunk, JobSpec, NewFrame};
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
