//! Worker rows on PostgreSQL (what `status` shows of each worker), and the
//! queue's counts by pass. Times are the database's.

use crate::host::HostId;
use crate::{PgQueue, Result};

/// Adds (or restarts) worker `id`'s row.
pub async fn register(q: &PgQueue, id: &str, host: &HostId, pid: i64, gpu: &str) -> Result<()> {
    sqlx::query!(
        r#"INSERT INTO workers (id, host, pid, gpu) VALUES ($1, $2, $3, $4)
           ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid,
               gpu = excluded.gpu, state = 'starting', stopped_at = NULL,
               heartbeat_at = clock_timestamp()"#,
        id,
        host.0,
        pid,
        gpu
    )
    .execute(q.pool())
    .await?;
    Ok(())
}

/// Sets worker `id`'s state (its SQL spelling) and heartbeat; a final
/// state also sets `stopped_at`.
pub async fn set_state(q: &PgQueue, id: &str, state: &str, last: bool) -> Result<()> {
    sqlx::query!(
        r#"UPDATE workers SET state = $2, heartbeat_at = clock_timestamp(),
               stopped_at = CASE WHEN $3 THEN clock_timestamp() ELSE NULL END
           WHERE id = $1"#,
        id,
        state,
        last
    )
    .execute(q.pool())
    .await?;
    Ok(())
}

/// One worker as `status` shows it.
#[derive(Debug, Clone)]
pub struct WorkerRow {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub gpu: String,
    pub state: String,
    /// Seconds since its last heartbeat, by the database's clock.
    pub silent_s: i64,
}

/// Every worker that has not stopped, newest first.
pub async fn live(q: &PgQueue) -> Result<Vec<WorkerRow>> {
    let rows = sqlx::query!(
        r#"SELECT id, host, pid, gpu, state,
                  extract(epoch FROM clock_timestamp() - heartbeat_at)::bigint AS "silent_s!"
           FROM workers WHERE stopped_at IS NULL ORDER BY started_at DESC"#
    )
    .fetch_all(q.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| WorkerRow {
            id: r.id,
            host: r.host,
            pid: r.pid,
            gpu: r.gpu,
            state: r.state,
            silent_s: r.silent_s,
        })
        .collect())
}

/// One pass's jobs by state, as `status` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassCounts {
    pub pass: String,
    pub queued: i64,
    pub running: i64,
    pub done: i64,
    pub failed: i64,
    pub cancelled: i64,
}

/// Every pass's jobs by state (of one film, if `film` is given).
pub async fn pass_counts(q: &PgQueue, film: Option<i64>) -> Result<Vec<PassCounts>> {
    let rows = sqlx::query!(
        r#"SELECT p.name,
                  count(j.id) FILTER (WHERE j.state = 'queued') AS "queued!",
                  count(j.id) FILTER (WHERE j.state = 'running') AS "running!",
                  count(j.id) FILTER (WHERE j.state = 'done') AS "done!",
                  count(j.id) FILTER (WHERE j.state = 'failed') AS "failed!",
                  count(j.id) FILTER (WHERE j.state = 'cancelled') AS "cancelled!"
           FROM passes p LEFT JOIN jobs j ON j.pass_id = p.id AND ($1::bigint IS NULL OR j.film_id = $1)
           GROUP BY p.id, p.name ORDER BY p.name"#,
        film
    )
    .fetch_all(q.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| PassCounts {
            pass: r.name,
            queued: r.queued,
            running: r.running,
            done: r.done,
            failed: r.failed,
            cancelled: r.cancelled,
        })
        .collect())
}

/// The id of the film titled `title`, if there is one.
pub async fn film_id(q: &PgQueue, title: &str) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar!("SELECT id FROM films WHERE title = $1", title)
            .fetch_optional(q.pool())
            .await?,
    )
}

/// The film titled `title`: its id and how many frames it has.
pub async fn film(q: &PgQueue, title: &str) -> Result<Option<(i64, i64)>> {
    Ok(
        sqlx::query!("SELECT id, frame_count FROM films WHERE title = $1", title)
            .fetch_optional(q.pool())
            .await?
            .map(|r| (r.id, r.frame_count)),
    )
}
