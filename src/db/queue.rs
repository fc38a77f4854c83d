//! The job queue's producer side: films and frames in, one job per frame
//! and pass.
//!
//! Enqueue is bulk and idempotent: a chunk of frames travels as one JSON
//! array bound to one statement (`jsonb_each`), inside one `BEGIN IMMEDIATE`
//! transaction that also creates the chunk's jobs and bumps the film's
//! `frame_count`. A frame is identified by (film, path); enqueuing a path the
//! film already has is a no-op, whichever process does it.

use serde::Serialize;
use sqlx::{SqliteConnection, SqlitePool};

use super::{begin_immediate, begin_immediate_on, now_ms};
use crate::error::{Error, Result};

/// What identifies and describes a film when it is created.
#[derive(Debug, Clone, Default)]
pub struct FilmSpec {
    pub title: String,
    pub source_path: Option<String>,
    pub priority: i64,
}

/// A frame ready for the database: `path` is canonical and was checked.
#[derive(Debug, Clone, Serialize)]
pub struct NewFrame {
    pub path: String,
    pub frame_index: Option<i64>,
    pub pts_ms: Option<i64>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    /// The 64-bit difference hash of its 9×8 grey copy.
    pub dhash: Option<i64>,
    /// The path of the earlier frame of the film it nearly repeats.
    pub duplicate_of: Option<String>,
    /// The shot_index of its shot (scene mode).
    pub shot: Option<i64>,
    /// A still the worker hashes when it claims it: how many bits its hash
    /// may differ by from its original's (see migration 0018).
    pub dedupe_distance: Option<u32>,
}

/// A chunk of frames serialised for [`enqueue_chunk`]: a JSON array of
/// `[path, frame_index, pts_ms, width, height]` rows (with `dhash,
/// duplicate_of, shot` after them for hashed frames), built off the
/// async runtime.
#[derive(Debug, Clone)]
pub struct FrameChunk {
    pub json: String,
    pub len: u64,
    /// Every frame names its frame_index (manifests with indexes, videos).
    pub indexed: bool,
    /// Some frame is a near-duplicate of an earlier one.
    pub duplicates: bool,
    /// The stills' `--dedupe-distance`, for the worker that hashes them
    /// (a chunk's frames come from one source, enqueued with one distance).
    pub dedupe_distance: Option<u32>,
    /// Frames' paths with their bytes, kept in `stored_frames`
    /// (`enqueue --store-frames`).
    pub stored: Vec<(String, Vec<u8>)>,
}

impl FrameChunk {
    pub fn new(frames: &[NewFrame]) -> FrameChunk {
        let json = if frames.iter().any(|f| f.dhash.is_some()) {
            let rows: Vec<_> = frames
                .iter()
                .map(|f| {
                    let (path, index, pts, w, h) =
                        (&f.path, f.frame_index, f.pts_ms, f.width, f.height);
                    (path, index, pts, w, h, f.dhash, &f.duplicate_of, f.shot)
                })
                .collect();
            serde_json::to_string(&rows)
        } else {
            let rows: Vec<_> = frames
                .iter()
                .map(|f| (&f.path, f.frame_index, f.pts_ms, f.width, f.height))
                .collect();
            serde_json::to_string(&rows)
        };
        FrameChunk {
            json: json.expect("frames serialise"),
            len: frames.len() as u64,
            indexed: frames.iter().all(|f| f.frame_index.is_some()),
            duplicates: frames.iter().any(|f| f.duplicate_of.is_some()),
            dedupe_distance: frames.first().and_then(|f| f.dedupe_distance),
            stored: Vec::new(),
        }
    }

    /// The chunk of `frames` with their `bytes` (in the same order) stored.
    pub fn storing(frames: &[NewFrame], bytes: Vec<Vec<u8>>) -> FrameChunk {
        FrameChunk {
            stored: frames.iter().map(|f| f.path.clone()).zip(bytes).collect(),
            ..FrameChunk::new(frames)
        }
    }
}

/// What one chunk did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChunkOutcome {
    /// Frames (and jobs) created.
    pub inserted: u64,
    /// Frames the film already had (same path).
    pub already: u64,
    /// Frames not added because their explicit frame_index is taken by another path.
    pub index_conflicts: Vec<(String, i64)>,
    /// New frames marked as near-duplicates of an earlier frame.
    pub near_duplicates: u64,
}

/// Returns the id of the film titled `spec.title`, creating it if needed.
pub async fn ensure_film(pool: &SqlitePool, spec: &FilmSpec) -> Result<i64> {
    let now = now_ms();
    let mut tx = begin_immediate(pool).await?;
    let existing = sqlx::query_scalar!(
        r#"SELECT id AS "id!" FROM films WHERE title = ?"#,
        spec.title
    )
    .fetch_optional(&mut *tx)
    .await?;
    let id = match existing {
        Some(id) => id,
        None => {
            sqlx::query_scalar!(
                r#"INSERT INTO films (title, source_path, priority, created_at)
                   VALUES (?, ?, ?, ?) RETURNING id AS "id!""#,
                spec.title,
                spec.source_path,
                spec.priority,
                now
            )
            .fetch_one(&mut *tx)
            .await?
        }
    };
    tx.commit().await?;
    Ok(id)
}

/// Looks a film up by title.
pub async fn film_id(pool: &SqlitePool, title: &str) -> Result<i64> {
    sqlx::query_scalar!(r#"SELECT id AS "id!" FROM films WHERE title = ?"#, title)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| Error::UnknownFilm(title.to_string()))
}

/// The jobs an enqueue makes for each new frame.
#[derive(Debug, Clone, Copy)]
pub struct JobSpec<'a> {
    pub max_attempts: i64,
    /// The passes to describe the frames in (`--pass`); empty: every pass
    /// of the database, or a pass `default` when there is none.
    pub passes: &'a [String],
}

/// A connection of its own for enqueuing ([`super::Db::bulk_loader`]).
pub struct BulkLoader(pub(super) SqliteConnection);

impl BulkLoader {
    /// See [`enqueue_chunk`].
    pub async fn enqueue_chunk(
        &mut self,
        film_id: i64,
        chunk: &FrameChunk,
        jobs: &JobSpec<'_>,
    ) -> Result<ChunkOutcome> {
        enqueue_chunk(&mut self.0, film_id, chunk, jobs).await
    }
}

/// Inserts a chunk of frames and their jobs in one IMMEDIATE transaction.
/// Frames without an explicit index are numbered after the film's last one.
///
/// The chunk is parsed once into SQLite's binary JSON (`jsonb_each(jsonb(?))`),
/// so reading a row's fields does not parse its text again. A frame the film
/// already has (same path) or whose index is taken is skipped by
/// `ON CONFLICT DO NOTHING`; the two cases are told apart below, only when
/// something was skipped.
///
/// `conn` is a [`super::Db::bulk_loader`] connection (foreign-key checks off):
/// the film is looked up inside this write transaction, frames point at it,
/// and jobs are made from the frames just inserted, so every reference holds.
pub async fn enqueue_chunk(
    conn: &mut SqliteConnection,
    film_id: i64,
    chunk: &FrameChunk,
    jobs: &JobSpec<'_>,
) -> Result<ChunkOutcome> {
    let mut wait = super::BusyWait::default();
    loop {
        match enqueue_chunk_once(conn, film_id, chunk, jobs).await {
            Err(e) => wait.again(e).await?,
            Ok(outcome) => {
                wait.done();
                return Ok(outcome);
            }
        }
    }
}

async fn enqueue_chunk_once(
    conn: &mut SqliteConnection,
    film_id: i64,
    chunk: &FrameChunk,
    jobs: &JobSpec<'_>,
) -> Result<ChunkOutcome> {
    let now = now_ms();
    let mut tx = begin_immediate_on(conn).await?;
    let priority = sqlx::query_scalar!("SELECT priority FROM films WHERE id = ?", film_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::FilmDeleted(film_id))?;
    let max_frame_id =
        sqlx::query_scalar!(r#"SELECT coalesce(max(id), 0) AS "id!: i64" FROM frames"#)
            .fetch_one(&mut *tx)
            .await?;
    let inserted = insert_frames(&mut tx, film_id, chunk, now).await?;
    // Also for frames the film had: a frame enqueued again with
    // --store-frames gets the bytes it lacked.
    for (path, bytes) in &chunk.stored {
        sqlx::query!(
            "INSERT INTO stored_frames (frame_id, bytes)
             SELECT id, ?3 FROM frames WHERE film_id = ?1 AND path = ?2
             ON CONFLICT DO NOTHING",
            film_id,
            path,
            bytes
        )
        .execute(&mut *tx)
        .await?;
    }
    let mut near_duplicates = 0;
    if inserted > 0 {
        let passes = super::passes::for_enqueue(&mut tx, jobs.passes).await?;
        let new_jobs = (priority, jobs.max_attempts, now);
        insert_jobs(&mut tx, &passes, new_jobs, max_frame_id).await?;
        let added = inserted as i64;
        sqlx::query!(
            r#"INSERT INTO film_passes (film_id, pass_id, job_count)
               SELECT ?1, value, ?2 FROM json_each(?3) WHERE true
               ON CONFLICT DO UPDATE SET job_count = job_count + excluded.job_count"#,
            film_id,
            added,
            passes
        )
        .execute(&mut *tx)
        .await?;
        if chunk.duplicates {
            near_duplicates = mark_duplicates(&mut tx, film_id, chunk).await?;
        }
        let added = inserted as i64;
        sqlx::query!(
            "UPDATE films SET frame_count = frame_count + ? WHERE id = ?",
            added,
            film_id
        )
        .execute(&mut *tx)
        .await?;
    }
    let mut outcome = ChunkOutcome {
        inserted,
        near_duplicates,
        ..ChunkOutcome::default()
    };
    if inserted < chunk.len {
        // Only a re-enqueue or a clash pays for telling the two apart.
        let conflicts = sqlx::query!(
            r#"SELECT j.value ->> 0 AS "path!: String", j.value ->> 1 AS "frame_index!: i64"
               FROM jsonb_each(jsonb(?1)) AS j
               WHERE NOT EXISTS (SELECT 1 FROM frames f WHERE f.film_id = ?2 AND f.path = j.value ->> 0)"#,
            chunk.json,
            film_id
        )
        .fetch_all(&mut *tx)
        .await?;
        outcome.index_conflicts = conflicts
            .into_iter()
            .map(|r| (r.path, r.frame_index))
            .collect();
        outcome.already = chunk.len - inserted - outcome.index_conflicts.len() as u64;
    }
    tx.commit().await?;
    Ok(outcome)
}

/// A job in each of `passes` (a JSON array of ids) for every frame after
/// `after`, with (priority, max_attempts, now): a statement per pass, in
/// frame order, which the frames' rowid order gives with no sort (one
/// statement over passes × frames sorted every chunk in a temporary B-tree).
async fn insert_jobs(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    passes: &str,
    (priority, max_attempts, now): (i64, i64, i64),
    after: i64,
) -> Result<()> {
    let ids: Vec<i64> = serde_json::from_str(passes).expect("pass ids are JSON");
    for pass in ids {
        sqlx::query!(
            r#"INSERT INTO jobs (frame_id, pass_id, film_id, priority, max_attempts, created_at, updated_at)
               SELECT f.id, ?5, f.film_id, ?1, ?2, ?3, ?3
               FROM frames f WHERE f.id > ?4
               ORDER BY f.id"#,
            priority,
            max_attempts,
            now,
            after,
            pass
        )
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Points the chunk's near-duplicates at their originals (by path; an
/// original is always earlier in the film, so already inserted). One
/// whose original was described meanwhile (another chunk, a fast worker)
/// gets its copy now; one whose original failed is left to be described.
/// Returns how many frames it marked.
async fn mark_duplicates(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    film_id: i64,
    chunk: &FrameChunk,
) -> Result<u64> {
    // The chunk's (duplicate, original) pairs first, then two lookups by
    // UNIQUE(film_id, path) each: joined directly, the planner scans the
    // film's frames for every pair.
    let marked: Vec<i64> = sqlx::query_scalar!(
        r#"WITH pair(path, original) AS MATERIALIZED (
               SELECT j.value ->> 0, j.value ->> 6 FROM jsonb_each(jsonb(?2)) AS j
               WHERE j.value ->> 6 IS NOT NULL)
           UPDATE frames SET duplicate_of = o.id
           FROM pair CROSS JOIN frames o ON o.film_id = ?1 AND o.path = pair.original
           WHERE frames.film_id = ?1 AND frames.path = pair.path
             AND EXISTS (SELECT 1 FROM jobs oj
                         WHERE oj.frame_id = o.id AND oj.state IN ('queued', 'running', 'done'))
             AND NOT EXISTS (SELECT 1 FROM jobs fj WHERE fj.frame_id = frames.id AND fj.state <> 'queued')
           RETURNING frames.id AS "id!: i64""#,
        film_id,
        chunk.json
    )
    .fetch_all(&mut **tx)
    .await?;
    super::dedupe::copy_to_duplicates(tx, &marked).await?;
    Ok(marked.len() as u64)
}

/// Inserts a chunk's frames (paths the film has are skipped); returns how
/// many were new. Frames without an index are numbered after the film's last.
async fn insert_frames(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    film_id: i64,
    chunk: &FrameChunk,
    now: i64,
) -> Result<u64> {
    Ok(if chunk.indexed {
        sqlx::query!(
            r#"INSERT INTO frames (film_id, frame_index, pts_ms, path, width, height, dhash, shot_id,
                                   dedupe_distance, created_at)
               SELECT ?1, j.value ->> 1, j.value ->> 2, j.value ->> 0, j.value ->> 3, j.value ->> 4,
                      j.value ->> 5,
                      (SELECT s.id FROM shots s WHERE s.film_id = ?1 AND s.shot_index = j.value ->> 7),
                      ?4, ?2
               FROM jsonb_each(jsonb(?3)) AS j
               WHERE true
               ON CONFLICT DO NOTHING"#,
            film_id,
            now,
            chunk.json,
            chunk.dedupe_distance
        )
        .execute(&mut **tx)
        .await?
        .rows_affected()
    } else {
        let next_index = sqlx::query_scalar!(
            r#"SELECT coalesce(max(frame_index) + 1, 0) AS "next!: i64" FROM frames WHERE film_id = ?"#,
            film_id
        )
        .fetch_one(&mut **tx)
        .await?;
        // Window functions run after WHERE, so the numbers given have no
        // gaps for frames the film already has.
        sqlx::query!(
            r#"INSERT INTO frames (film_id, frame_index, pts_ms, path, width, height, dhash,
                                   dedupe_distance, created_at)
               SELECT ?1, coalesce(j.value ->> 1, ?2 + row_number() OVER (ORDER BY j.key) - 1),
                      j.value ->> 2, j.value ->> 0, j.value ->> 3, j.value ->> 4, j.value ->> 5, ?5, ?3
               FROM jsonb_each(jsonb(?4)) AS j
               WHERE NOT EXISTS (SELECT 1 FROM frames f WHERE f.film_id = ?1 AND f.path = j.value ->> 0)
               ON CONFLICT DO NOTHING"#,
            film_id,
            next_index,
            now,
            chunk.json,
            chunk.dedupe_distance
        )
        .execute(&mut **tx)
        .await?
        .rows_affected()
    })
}

/// Puts failed jobs (of a film, of a pass) back in the queue with fresh
/// attempts. Returns how many.
pub async fn retry_failed(
    pool: &SqlitePool,
    film_id: Option<i64>,
    pass: Option<i64>,
) -> Result<u64> {
    let now = now_ms();
    let mut tx = begin_immediate(pool).await?;
    let n = sqlx::query!(
        r#"UPDATE jobs SET state = 'queued', attempts = 0, transient_failures = 0, run_after = 0,
                  last_error = NULL, lease_owner = NULL, lease_epoch = NULL,
                  lease_expires_at = NULL, updated_at = ?1
           WHERE state = 'failed' AND (?2 IS NULL OR film_id = ?2) AND (?3 IS NULL OR pass_id = ?3)"#,
        now,
        film_id,
        pass
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(n)
}

/// Cancels a film's queued jobs (of one pass, or of all), running ones
/// finish. Returns how many.
pub async fn cancel_queued(pool: &SqlitePool, film_id: i64, pass: Option<i64>) -> Result<u64> {
    let now = now_ms();
    let mut tx = begin_immediate(pool).await?;
    let n = sqlx::query!(
        "UPDATE jobs SET state = 'cancelled', updated_at = ?1
         WHERE film_id = ?2 AND state = 'queued' AND (?3 IS NULL OR pass_id = ?3)",
        now,
        film_id,
        pass
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(n)
}

pub use cinecut_types::{ExistingFilm, VideoFilm};

/// The film already made from this very file (same path, size and mtime).
pub async fn find_video_film(pool: &SqlitePool, v: &VideoFilm) -> Result<Option<ExistingFilm>> {
    Ok(sqlx::query_as!(
        ExistingFilm,
        r#"SELECT id AS "id!", title, frame_count, extraction FROM films
           WHERE source_path = ? AND source_size = ? AND source_mtime_ms = ?
           ORDER BY id LIMIT 1"#,
        v.source_path,
        v.source_size,
        v.source_mtime_ms
    )
    .fetch_optional(pool)
    .await?)
}

/// The film titled `title` made from this very file, if any.
pub async fn find_video_film_titled(
    pool: &SqlitePool,
    v: &VideoFilm,
    title: &str,
) -> Result<Option<ExistingFilm>> {
    Ok(sqlx::query_as!(
        ExistingFilm,
        r#"SELECT id AS "id!", title, frame_count, extraction FROM films
           WHERE source_path = ? AND source_size = ? AND source_mtime_ms = ? AND title = ?"#,
        v.source_path,
        v.source_size,
        v.source_mtime_ms,
        title
    )
    .fetch_optional(pool)
    .await?)
}

/// Films made from an earlier version of this file (same path).
pub async fn films_from_path(pool: &SqlitePool, source_path: &str) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar!(
        r#"SELECT id AS "id!" FROM films WHERE source_path = ?"#,
        source_path
    )
    .fetch_all(pool)
    .await?)
}

/// Creates the film of a video; a title already taken gets " (2)", " (3)"….
pub async fn create_video_film(pool: &SqlitePool, v: &VideoFilm) -> Result<(i64, String)> {
    let now = now_ms();
    let mut tx = begin_immediate(pool).await?;
    let mut title = v.title.clone();
    let mut n = 1;
    while sqlx::query_scalar!(r#"SELECT id AS "id!" FROM films WHERE title = ?"#, title)
        .fetch_optional(&mut *tx)
        .await?
        .is_some()
    {
        n += 1;
        title = format!("{} ({n})", v.title);
    }
    let id = sqlx::query_scalar!(
        r#"INSERT INTO films (title, source_path, source_size, source_mtime_ms, fps, duration_ms, width, height, priority, extraction, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id AS "id!""#,
        title,
        v.source_path,
        v.source_size,
        v.source_mtime_ms,
        v.fps,
        v.duration_ms,
        v.width,
        v.height,
        v.priority,
        v.extraction,
        now
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((id, title))
}

pub use cinecut_types::{NewShot, SubtitleLine};

/// Stores film `film_id`'s shots (before its frames, which name them), in
/// one transaction; source frame numbers come from the film's frame rate.
pub async fn insert_shots(pool: &SqlitePool, film_id: i64, shots: &[NewShot]) -> Result<()> {
    let json = serde_json::to_string(shots).expect("shots serialise");
    let mut tx = begin_immediate(pool).await?;
    sqlx::query!(
        r#"INSERT INTO shots (film_id, shot_index, start_ms, end_ms, first_frame, last_frame, score)
           SELECT ?1, j.value ->> '$.shot_index', j.value ->> '$.start_ms', j.value ->> '$.end_ms',
                  CAST(round((j.value ->> '$.start_ms') * f.fps / 1000.0) AS INTEGER),
                  max(CAST(round((j.value ->> '$.end_ms') * f.fps / 1000.0) AS INTEGER) - 1,
                      CAST(round((j.value ->> '$.start_ms') * f.fps / 1000.0) AS INTEGER)),
                  j.value ->> '$.score'
           FROM jsonb_each(jsonb(?2)) AS j JOIN films f ON f.id = ?1"#,
        film_id,
        json
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Replaces film `film_id`'s subtitle lines with `lines` (in time order),
/// in one transaction.
pub async fn replace_subtitles(
    pool: &SqlitePool,
    film_id: i64,
    lines: &[SubtitleLine],
) -> Result<()> {
    let mut tx = begin_immediate(pool).await?;
    sqlx::query!("DELETE FROM subtitles WHERE film_id = ?", film_id)
        .execute(&mut *tx)
        .await?;
    for (i, l) in lines.iter().enumerate() {
        let i = i as i64;
        sqlx::query!(
            "INSERT INTO subtitles (film_id, line_index, start_ms, end_ms, text) VALUES (?, ?, ?, ?, ?)",
            film_id,
            i,
            l.start_ms,
            l.end_ms,
            l.text
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Whether film `film_id` has subtitle lines.
pub async fn has_subtitles(pool: &SqlitePool, film_id: i64) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM subtitles WHERE film_id = ?) AS "has!: bool""#,
        film_id
    )
    .fetch_one(pool)
    .await?)
}

/// Deletes a film with its frames, jobs and descriptions.
pub async fn delete_film(pool: &SqlitePool, film_id: i64) -> Result<()> {
    let mut tx = begin_immediate(pool).await?;
    sqlx::query!("DELETE FROM films WHERE id = ?", film_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
