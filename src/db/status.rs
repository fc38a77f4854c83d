//! Read-only views of the queue for `cinecut status`.
//!
//! Progress is per film and pass. Counts come from the `jobs_film_state`
//! index, one range per state that is not `queued`; the queued count is the
//! film's job count in the pass (`film_passes`) minus the rest, so status
//! stays fast on a freshly enqueued million-frame film or pass.

use sqlx::SqlitePool;

use crate::error::Result;

pub use cinecut_types::{FailureReason, FilmStatus, LeaseHolder, WorkerRow};

/// Progress of every film (or of one) in every pass (or in one).
pub async fn films(
    pool: &SqlitePool,
    only: Option<i64>,
    pass: Option<i64>,
) -> Result<Vec<FilmStatus>> {
    let rows = sqlx::query!(
        r#"SELECT f.id AS "id!", f.title, p.id AS "pass_id!", p.name AS pass, fp.job_count
           FROM film_passes fp JOIN films f ON f.id = fp.film_id JOIN passes p ON p.id = fp.pass_id
           WHERE (?1 IS NULL OR f.id = ?1) AND (?2 IS NULL OR p.id = ?2)
           ORDER BY f.id, p.id"#,
        only,
        pass
    )
    .fetch_all(pool)
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
        let counts = sqlx::query!(
            r#"SELECT state AS "state!", count(*) AS "n!: i64" FROM jobs
               WHERE film_id = ?1 AND pass_id = ?2 AND state IN ('running', 'done', 'failed', 'cancelled')
               GROUP BY state"#,
            film.id,
            film.pass_id
        )
        .fetch_all(pool)
        .await?;
        for c in counts {
            match c.state.as_str() {
                "running" => s.running = c.n,
                "done" => s.done = c.n,
                "failed" => s.failed = c.n,
                _ => s.cancelled = c.n,
            }
        }
        s.queued = s.total - s.running - s.done - s.failed - s.cancelled;
        if s.queued > 0 {
            s.oldest_queued_at = sqlx::query_scalar!(
                r#"SELECT created_at AS "t!: i64" FROM jobs
                   WHERE film_id = ?1 AND pass_id = ?2 AND state = 'queued' ORDER BY id LIMIT 1"#,
                film.id,
                film.pass_id
            )
            .fetch_optional(pool)
            .await?;
        }
        if s.failed > 0 {
            s.top_failures = sqlx::query_as!(
                FailureReason,
                r#"SELECT coalesce(last_error, 'unknown') AS "reason!: String", count(*) AS "count!: i64"
                   FROM jobs WHERE film_id = ?1 AND pass_id = ?2 AND state = 'failed'
                   GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 3"#,
                film.id,
                film.pass_id
            )
            .fetch_all(pool)
            .await?;
        }
        out.push(s);
    }
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

/// Workers that are running, or stopped within `since_ms`.
pub async fn workers(pool: &SqlitePool, since_ms: i64) -> Result<Vec<WorkerRow>> {
    Ok(sqlx::query_as!(
        WorkerRow,
        r#"SELECT id AS "id!", pid, host, gpu, state, started_at, heartbeat_at, jobs_done, jobs_failed,
                  jobs_retried, jobs_requeued, server_starts, server_restarts
           FROM workers WHERE stopped_at IS NULL OR stopped_at >= ? ORDER BY started_at"#,
        since_ms
    )
    .fetch_all(pool)
    .await?)
}
