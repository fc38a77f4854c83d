//! GPU leases on PostgreSQL: one row per GPU UUID, the cross-host GPU lock.
//!
//! Taking a lease locks its row (`FOR UPDATE`), so takers queue behind one
//! another; the lease is free when it has no holder, when it expired by the
//! database's clock, or when its holder is a dead process on this very host
//! (a pid is checked only on the host it came from). Every new holder
//! raises the row's epoch and puts the previous holder's running jobs of
//! that GPU back in the queue, in the same transaction. The row also
//! names the holder's llama-server, so that a new holder on the same host
//! can reap one its dead holder left running.

use std::time::Duration;

use crate::host::{HostId, pid_alive};
use crate::{PgQueue, Result};

/// Who holds (or wants) a lease.
#[derive(Debug, Clone)]
pub struct Holder {
    /// Unique per process and run (a worker id).
    pub id: String,
    pub host: HostId,
    pub pid: i64,
    /// `worker` or `gpu-lock`.
    pub purpose: &'static str,
}

/// What [`acquire`] got: ours under an epoch (with the previous holder's
/// jobs recovered), held by a live holder as far as this host can tell, or
/// free but promised to a waiting gpu-lock command; `orphan_server` is the
/// previous holder's llama-server when it ran on this host.
pub use cinecut_types::{Acquire, OrphanServer};

/// A lease's time to live as the interval PostgreSQL adds to its clock.
fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

/// Takes GPU `gpu`'s lease for `me` if it is free (see the module note).
pub async fn acquire(q: &PgQueue, gpu: &str, me: &Holder, ttl: Duration) -> Result<Acquire> {
    let mut tx = q.pool().begin().await?;
    sqlx::query!(
        "INSERT INTO gpu_leases (gpu) VALUES ($1) ON CONFLICT (gpu) DO NOTHING",
        gpu
    )
    .execute(&mut *tx)
    .await?;
    let row = sqlx::query!(
        r#"SELECT holder, host, holder_pid, purpose, epoch,
                  coalesce(expires_at <= clock_timestamp(), true) AS "expired!",
                  server_pid, server_started_at, server_cmdline
           FROM gpu_leases WHERE gpu = $1 FOR UPDATE"#,
        gpu
    )
    .fetch_one(&mut *tx)
    .await?;
    let dead_here = row.host.as_deref() == Some(me.host.0.as_str())
        && row.holder_pid.is_some_and(|pid| !pid_alive(pid));
    let free = row.holder.is_none()
        || row.expired
        || dead_here
        || row.holder.as_deref() == Some(me.id.as_str());
    if !free {
        return Ok(Acquire::Held {
            holder: row.holder.unwrap_or_default(),
            pid: row.holder_pid,
            host: row.host,
            purpose: row.purpose,
        });
    }
    if me.purpose == "worker" && row.holder.as_deref() != Some(me.id.as_str()) {
        let since = ttl_ms(crate::queue::WAITER_TTL);
        let waited = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM gpu_waiters WHERE gpu = $1
                 AND heartbeat_at >= clock_timestamp() - make_interval(secs => $2::bigint / 1000.0))
               AS "waited!""#,
            gpu,
            since
        )
        .fetch_one(&mut *tx)
        .await?;
        if waited {
            return Ok(Acquire::WaitersFirst);
        }
    }
    let epoch = row.epoch + 1;
    let ttl = ttl_ms(ttl);
    sqlx::query!(
        r#"UPDATE gpu_leases SET holder = $2, host = $3, holder_pid = $4, purpose = $5, epoch = $6,
                  heartbeat_at = clock_timestamp(),
                  expires_at = clock_timestamp() + make_interval(secs => $7::bigint / 1000.0),
                  server_pid = NULL, server_started_at = NULL, server_cmdline = NULL
           WHERE gpu = $1"#,
        gpu,
        me.id,
        me.host.0,
        me.pid,
        me.purpose,
        epoch,
        ttl
    )
    .execute(&mut *tx)
    .await?;
    let recovered = requeue_jobs_of_gpu(&mut tx, gpu, epoch).await?;
    tx.commit().await?;
    let took_over_from = row.holder.filter(|h| *h != me.id);
    // Only a process on this host can be checked and reaped.
    let orphan_server = match (&took_over_from, row.server_pid) {
        (Some(_), Some(pid)) if row.host.as_deref() == Some(me.host.0.as_str()) => {
            Some(OrphanServer {
                pid,
                started_at: row.server_started_at,
                cmdline: row.server_cmdline,
            })
        }
        _ => None,
    };
    Ok(Acquire::Acquired {
        epoch,
        recovered,
        took_over_from,
        orphan_server,
    })
}

/// Puts the running jobs of GPU `gpu` claimed under an epoch before `epoch`
/// back in the queue, closing their open attempts.
async fn requeue_jobs_of_gpu(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    gpu: &str,
    epoch: i64,
) -> Result<u64> {
    let ids: Vec<i64> = sqlx::query_scalar!(
        r#"UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_gpu = NULL, lease_epoch = NULL,
                  lease_expires_at = NULL, updated_at = clock_timestamp()
           WHERE state = 'running' AND lease_gpu = $1 AND lease_epoch < $2
           RETURNING id"#,
        gpu,
        epoch
    )
    .fetch_all(&mut **tx)
    .await?;
    close_attempts(tx, &ids, "requeued").await?;
    Ok(ids.len() as u64)
}

/// Ends the open attempts of `jobs` with `outcome`.
pub(crate) async fn close_attempts(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    jobs: &[i64],
    outcome: &str,
) -> Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        r#"UPDATE attempts SET finished_at = clock_timestamp(), outcome = $2
           WHERE job_id = ANY($1) AND finished_at IS NULL"#,
        jobs,
        outcome
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Extends the lease, and the job leases of `jobs` (the holder's jobs in
/// flight), by `ttl` from the database's now; `false` when the lease is no
/// longer ours (expired or taken: the holder must stop and acquire again).
/// Only the jobs the holder knows it has are extended: a claim whose reply
/// was lost (the connection dropped at its commit) expires and is recovered.
pub async fn renew(
    q: &PgQueue,
    gpu: &str,
    me: &Holder,
    epoch: i64,
    jobs: &[i64],
    ttl: Duration,
) -> Result<bool> {
    let ttl = ttl_ms(ttl);
    let mut tx = q.pool().begin().await?;
    let ours = sqlx::query!(
        r#"UPDATE gpu_leases SET heartbeat_at = clock_timestamp(),
                  expires_at = clock_timestamp() + make_interval(secs => $4::bigint / 1000.0)
           WHERE gpu = $1 AND holder = $2 AND epoch = $3 AND expires_at > clock_timestamp()"#,
        gpu,
        me.id,
        epoch,
        ttl
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if ours {
        sqlx::query!(
            r#"UPDATE jobs SET lease_expires_at = clock_timestamp() + make_interval(secs => $3::bigint / 1000.0)
               WHERE id = ANY($4) AND state = 'running' AND lease_gpu = $1 AND lease_epoch = $2"#,
            gpu,
            epoch,
            ttl,
            jobs
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(ours)
}

/// Gives the lease up (only under the epoch it was taken with).
pub async fn release(q: &PgQueue, gpu: &str, me: &Holder, epoch: i64) -> Result<()> {
    sqlx::query!(
        r#"UPDATE gpu_leases SET holder = NULL, host = NULL, holder_pid = NULL, purpose = NULL,
                  expires_at = NULL,
                  server_pid = NULL, server_started_at = NULL, server_cmdline = NULL
           WHERE gpu = $1 AND holder = $2 AND epoch = $3"#,
        gpu,
        me.id,
        epoch
    )
    .execute(q.pool())
    .await?;
    Ok(())
}

/// Records (or, with `None`, clears) the holder's llama-server in its
/// lease row; `false` when the lease is no longer ours under `epoch`.
pub async fn set_server(
    q: &PgQueue,
    gpu: &str,
    holder: &str,
    epoch: i64,
    server: Option<&OrphanServer>,
) -> Result<bool> {
    let (pid, started, cmdline) = match server {
        Some(s) => (Some(s.pid), s.started_at, s.cmdline.as_deref()),
        None => (None, None, None),
    };
    let n = sqlx::query!(
        r#"UPDATE gpu_leases SET server_pid = $4, server_started_at = $5, server_cmdline = $6
           WHERE gpu = $1 AND holder = $2 AND epoch = $3"#,
        gpu,
        holder,
        epoch,
        pid,
        started,
        cmdline
    )
    .execute(q.pool())
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// A gpu-lock command's wait for GPU `gpu` (refreshed while it waits):
/// workers on that GPU claim nothing more and give the lease up.
pub async fn wait_for(q: &PgQueue, gpu: &str, me: &Holder) -> Result<()> {
    sqlx::query!(
        r#"INSERT INTO gpu_waiters (gpu, waiter, host, pid) VALUES ($1, $2, $3, $4)
           ON CONFLICT (gpu, waiter) DO UPDATE SET heartbeat_at = clock_timestamp()"#,
        gpu,
        me.id,
        me.host.0,
        me.pid
    )
    .execute(q.pool())
    .await?;
    Ok(())
}

/// The end of a gpu-lock command's wait (it got the lease or gave up).
pub async fn stop_waiting(q: &PgQueue, gpu: &str, me: &Holder) -> Result<()> {
    sqlx::query!(
        "DELETE FROM gpu_waiters WHERE gpu = $1 AND waiter = $2",
        gpu,
        me.id
    )
    .execute(q.pool())
    .await?;
    Ok(())
}
