//! Read-only views of the queue for `cinecut status`.
//!
//! Progress is per film and pass. The done, failed and cancelled counts are
//! kept in `film_passes` beside the job count (a trigger on `jobs.state`,
//! migration 0017); `running` (at most the frames in flight) is counted from
//! the `jobs_film_state` index and `queued` is the rest, so status reads a
//! few rows per film whatever the mix of a million jobs' states.

use sqlx::SqlitePool;

use crate::error::Result;

pub use cinecut_types::{FailureReason, FilmStatus, LeaseHolder, WorkerRow};

/// The workers `status` lists, and the count of older ones it does not.
#[derive(Debug, Default)]
pub struct Workers {
    pub seen: Vec<WorkerRow>,
    /// Stopped (or silent) before the window.
    pub gone: i64,
}

/// The top failure reasons are counted over a film's latest failures, at
/// most this many (a film of a million failed frames would take a second).
pub const FAILURES_READ: i64 = 10_000;

/// Progress of every film (or of one) in every pass (or in one).
pub async fn films(
    pool: &SqlitePool,
    only: Option<i64>,
    pass: Option<i64>,
) -> Result<Vec<FilmStatus>> {
    // One read transaction: every count from the same snapshot of the
    // database (WAL), so that a job finishing meanwhile is counted once.
    let mut tx = pool.begin().await?;
    let rows = sqlx::query!(
        r#"SELECT f.id AS "id!", f.title, p.id AS "pass_id!", p.name AS pass, fp.job_count,
                  fp.done, fp.failed, fp.cancelled
           FROM film_passes fp JOIN films f ON f.id = fp.film_id JOIN passes p ON p.id = fp.pass_id
           WHERE (?1 IS NULL OR f.id = ?1) AND (?2 IS NULL OR p.id = ?2)
           ORDER BY f.id, p.id"#,
        only,
        pass
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for film in rows {
        let mut s = FilmStatus {
            film_id: film.id,
            title: film.title,
            pass: film.pass,
            total: film.job_count,
            ..FilmStatus::default()
        };
        s.done = film.done;
        s.failed = film.failed;
        s.cancelled = film.cancelled;
        s.running = sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!: i64" FROM jobs
               WHERE film_id = ?1 AND pass_id = ?2 AND state = 'running'"#,
            film.id,
            film.pass_id
        )
        .fetch_one(&mut *tx)
        .await?;
        s.queued = s.total - s.running - s.done - s.failed - s.cancelled;
        if s.queued > 0 {
            s.oldest_queued_at = sqlx::query_scalar!(
                r#"SELECT created_at AS "t!: i64" FROM jobs
                   WHERE film_id = ?1 AND pass_id = ?2 AND state = 'queued' ORDER BY id LIMIT 1"#,
                film.id,
                film.pass_id
            )
            .fetch_optional(&mut *tx)
            .await?;
        }
        if s.failed > 0 {
            s.top_failures = sqlx::query_as!(
                FailureReason,
                r#"SELECT coalesce(last_error, 'unknown') AS "reason!: String", count(*) AS "count!: i64"
                   FROM (SELECT last_error FROM jobs
                         WHERE film_id = ?1 AND pass_id = ?2 AND state = 'failed'
                         ORDER BY id DESC LIMIT ?3)
                   GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 3"#,
                film.id,
                film.pass_id,
                FAILURES_READ
            )
            .fetch_all(&mut *tx)
            .await?;
        }
        out.push(s);
    }
    tx.commit().await?;
    Ok(out)
}

/// GPU leases that are held now.
pub async fn lease_holders(pool: &SqlitePool) -> Result<Vec<LeaseHolder>> {
    Ok(sqlx::query_as!(
        LeaseHolder,
        r#"SELECT gpu AS "gpu!", holder AS "holder!", holder_pid, host, purpose, epoch, expires_at, server_pid
           FROM gpu_leases WHERE holder IS NOT NULL ORDER BY gpu"#
    )
    .fetch_all(pool)
    .await?)
}

/// Workers seen since `since_ms` (stopped then or later, or still beating
/// then), and how many were gone before it.
pub async fn workers(pool: &SqlitePool, since_ms: i64) -> Result<Workers> {
    let seen = sqlx::query_as!(
        WorkerRow,
        r#"SELECT id AS "id!", pid, host, gpu, state, started_at, heartbeat_at, jobs_done, jobs_failed,
                  jobs_retried, jobs_requeued, server_starts, server_restarts
           FROM workers WHERE coalesce(stopped_at, heartbeat_at) >= ? ORDER BY started_at"#,
        since_ms
    )
    .fetch_all(pool)
    .await?;
    let gone = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!: i64" FROM workers WHERE coalesce(stopped_at, heartbeat_at) < ?"#,
        since_ms
    )
    .fetch_one(pool)
    .await?;
    Ok(Workers { seen, gone })
}
