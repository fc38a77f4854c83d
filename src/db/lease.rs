//! The GPU lease: one row per GPU in `gpu_leases`, the cross-process GPU
//! lock. Whoever holds it may use the GPU; `epoch` grows on every takeover
//! and fences out jobs claimed under an older one.
//!
//! A holder is dead at once when it ran on this host and its pid is gone or
//! belongs to another process (start time differs); otherwise when its lease
//! expires. Taking a dead holder's lease requeues its running jobs in the
//! same transaction, and every acquire and renewal requeues running jobs
//! whose own lease expired (their holder vanished without a lease row to
//! prove it: another host, a lost lease). Waiters (`gpu-lock` commands)
//! registered in `gpu_waiters` go before workers; a worker yields to them.

use sqlx::{Sqlite, SqlitePool, Transaction};

use super::begin_immediate;
use crate::error::Result;
use crate::process;

pub use cinecut_types::{Acquire, Holder, OrphanServer, Purpose, Renewal};

/// This process as a lease holder for `purpose`, with a fresh id.
pub fn this_process(purpose: Purpose) -> Holder {
    let (pid, started_at) = process::me();
    Holder {
        id: format!("{}-{}", purpose.as_str(), uuid::Uuid::new_v4()),
        pid,
        started_at,
        host: process::hostname(),
        purpose,
    }
}

/// Whether a holder (or waiter) is gone: on this host, its pid is dead or
/// belongs to a later process; anywhere, its lease expired.
fn holder_is_dead(
    host: &Option<String>,
    pid: Option<i64>,
    started: Option<i64>,
    expires_at: Option<i64>,
    my_host: &str,
    now: i64,
) -> bool {
    let proven_dead =
        host.as_deref() == Some(my_host) && pid.is_some_and(|p| !process::is_alive(p, started));
    proven_dead || expires_at.is_some_and(|t| t < now)
}

/// Takes the lease of `gpu` if it is free, ours, or its holder is dead.
/// One transaction, read top to bottom as the cases it decides (ours,
/// held, waiters first, free or dead); its steps beyond the decision are
/// [`first_live_waiter`] and [`take`].
pub async fn acquire(
    pool: &SqlitePool,
    gpu: &str,
    me: &Holder,
    ttl_ms: i64,
    now: i64,
) -> Result<Acquire> {
    let mut tx = begin_immediate(pool).await?;
    sqlx::query!(
        "INSERT INTO gpu_leases (gpu) VALUES (?) ON CONFLICT DO NOTHING",
        gpu
    )
    .execute(&mut *tx)
    .await?;
    let row = sqlx::query!(
        r#"SELECT holder, holder_pid, holder_started_at, host, purpose, epoch AS "epoch!", expires_at,
                  server_pid, server_started_at, server_cmdline
           FROM gpu_leases WHERE gpu = ?"#,
        gpu
    )
    .fetch_one(&mut *tx)
    .await?;

    let first_live_waiter = first_live_waiter(&mut tx, gpu, me, ttl_ms, now).await?;

    if row.holder.as_deref() == Some(me.id.as_str()) {
        let expires = now + ttl_ms;
        sqlx::query!(
            "UPDATE gpu_leases SET heartbeat_at = ?, expires_at = max(coalesce(expires_at, 0), ?) WHERE gpu = ?",
            now,
            expires,
            gpu
        )
        .execute(&mut *tx)
        .await?;
        requeue_expired(&mut tx, now).await?;
        tx.commit().await?;
        return Ok(Acquire::Acquired {
            epoch: row.epoch,
            recovered: 0,
            took_over_from: None,
            orphan_server: None,
        });
    }
    if let Some(holder) = &row.holder
        && !holder_is_dead(
            &row.host,
            row.holder_pid,
            row.holder_started_at,
            row.expires_at,
            &me.host,
            now,
        )
    {
        tx.commit().await?;
        return Ok(Acquire::Held {
            holder: holder.clone(),
            pid: row.holder_pid,
            host: row.host,
            purpose: row.purpose,
        });
    }
    let waiter_first = match (&first_live_waiter, me.purpose) {
        (Some(_), Purpose::Worker) => true,
        (Some(first), Purpose::GpuLock) => *first != me.id,
        (None, _) => false,
    };
    if waiter_first {
        tx.commit().await?;
        return Ok(Acquire::WaitersFirst);
    }

    let epoch = row.epoch + 1;
    let recovered = take(&mut tx, gpu, me, epoch, row.holder.as_deref(), ttl_ms, now).await?;
    requeue_expired(&mut tx, now).await?;
    tx.commit().await?;
    let orphan_server = row.server_pid.map(|pid| OrphanServer {
        pid,
        started_at: row.server_started_at,
        cmdline: row.server_cmdline,
    });
    Ok(Acquire::Acquired {
        epoch,
        recovered,
        took_over_from: row.holder,
        orphan_server,
    })
}

/// Makes the lease ours under `epoch`; a previous (dead) holder's running
/// jobs go back to the queue and its worker row is marked dead. Returns how
/// many jobs were recovered.
async fn take(
    tx: &mut Transaction<'_, Sqlite>,
    gpu: &str,
    me: &Holder,
    epoch: i64,
    previous: Option<&str>,
    ttl_ms: i64,
    now: i64,
) -> Result<u64> {
    let expires = now + ttl_ms;
    let purpose = me.purpose.as_str();
    sqlx::query!(
        r#"UPDATE gpu_leases SET holder = ?, holder_pid = ?, holder_started_at = ?, host = ?, purpose = ?,
                  epoch = ?, heartbeat_at = ?, expires_at = ?,
                  server_pid = NULL, server_started_at = NULL, server_cmdline = NULL
           WHERE gpu = ?"#,
        me.id,
        me.pid,
        me.started_at,
        me.host,
        purpose,
        epoch,
        now,
        expires,
        gpu
    )
    .execute(&mut **tx)
    .await?;
    let mut recovered = 0;
    if let Some(dead) = previous {
        recovered = sqlx::query!(
            r#"UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_epoch = NULL, lease_expires_at = NULL,
                      updated_at = ?
               WHERE state = 'running' AND lease_owner = ?"#,
            now,
            dead
        )
        .execute(&mut **tx)
        .await?
        .rows_affected();
        sqlx::query!(
            "UPDATE workers SET state = 'dead', stopped_at = ? WHERE id = ? AND stopped_at IS NULL",
            now,
            dead
        )
        .execute(&mut **tx)
        .await?;
    }
    Ok(recovered)
}

/// Forgets waiters that died, and names the first live one (who goes
/// before a worker).
async fn first_live_waiter(
    tx: &mut Transaction<'_, Sqlite>,
    gpu: &str,
    me: &Holder,
    ttl_ms: i64,
    now: i64,
) -> Result<Option<String>> {
    let waiters = sqlx::query!(
        r#"SELECT id AS "id!", pid, pid_started_at, host, heartbeat_at FROM gpu_waiters WHERE gpu = ? ORDER BY created_at, id"#,
        gpu
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut first = None;
    for w in waiters {
        let dead = holder_is_dead(
            &Some(w.host),
            Some(w.pid),
            w.pid_started_at,
            Some(w.heartbeat_at + 3 * ttl_ms),
            &me.host,
            now,
        );
        if dead {
            sqlx::query!("DELETE FROM gpu_waiters WHERE id = ?", w.id)
                .execute(&mut **tx)
                .await?;
        } else if first.is_none() {
            first = Some(w.id);
        }
    }
    Ok(first)
}

/// Puts back in the queue the running jobs whose own lease expired: their
/// holder vanished without a lease row to prove it (another host, a lost
/// lease). Run at every lease acquire and heartbeat, not per batch.
async fn requeue_expired(tx: &mut Transaction<'_, Sqlite>, now: i64) -> Result<u64> {
    Ok(sqlx::query!(
        r#"UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_epoch = NULL, lease_expires_at = NULL, updated_at = ?1
           WHERE state = 'running' AND lease_expires_at < ?1"#,
        now
    )
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

/// Extends our lease and our running jobs' leases (never shortens them).
pub async fn renew(
    pool: &SqlitePool,
    gpu: &str,
    holder: &str,
    epoch: i64,
    ttl_ms: i64,
    now: i64,
) -> Result<Renewal> {
    let until = now + ttl_ms;
    let mut tx = begin_immediate(pool).await?;
    let held = sqlx::query!(
        r#"UPDATE gpu_leases SET heartbeat_at = ?1, expires_at = max(coalesce(expires_at, 0), ?2)
           WHERE gpu = ?3 AND holder = ?4 AND epoch = ?5"#,
        now,
        until,
        gpu,
        holder,
        epoch
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if held {
        sqlx::query!(
            r#"UPDATE jobs SET lease_expires_at = max(coalesce(lease_expires_at, 0), ?1)
               WHERE state = 'running' AND lease_owner = ?2 AND lease_epoch = ?3"#,
            until,
            holder,
            epoch
        )
        .execute(&mut *tx)
        .await?;
        requeue_expired(&mut tx, now).await?;
    }
    let waiters = waiters_for(&mut *tx, gpu, holder, now - 3 * ttl_ms).await?;
    tx.commit().await?;
    Ok(Renewal { held, waiters })
}

/// gpu-lock commands other than `holder` that have waited for `gpu` since
/// `since` (each refreshes its row while it waits).
pub async fn waiters_for<'e>(
    conn: impl sqlx::SqliteExecutor<'e>,
    gpu: &str,
    holder: &str,
    since: i64,
) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!: i64" FROM gpu_waiters WHERE gpu = ? AND id != ? AND heartbeat_at >= ?"#,
        gpu,
        holder,
        since
    )
    .fetch_one(conn)
    .await?)
}

/// Gives the lease back (only if it is still ours).
pub async fn release(
    pool: &SqlitePool,
    gpu: &str,
    holder: &str,
    epoch: i64,
    now: i64,
) -> Result<bool> {
    let mut tx = begin_immediate(pool).await?;
    let n = sqlx::query!(
        r#"UPDATE gpu_leases SET holder = NULL, holder_pid = NULL, holder_started_at = NULL, host = NULL,
                  purpose = NULL, heartbeat_at = ?, expires_at = NULL,
                  server_pid = NULL, server_started_at = NULL, server_cmdline = NULL
           WHERE gpu = ? AND holder = ? AND epoch = ?"#,
        now,
        gpu,
        holder,
        epoch
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(n == 1)
}

/// Records (or clears) the holder's llama-server in its lease row.
pub async fn set_server(
    pool: &SqlitePool,
    gpu: &str,
    holder: &str,
    epoch: i64,
    server: Option<&OrphanServer>,
) -> Result<bool> {
    let (pid, started, cmdline) = match server {
        Some(s) => (Some(s.pid), s.started_at, s.cmdline.clone()),
        None => (None, None, None),
    };
    let mut tx = begin_immediate(pool).await?;
    let n = sqlx::query!(
        "UPDATE gpu_leases SET server_pid = ?, server_started_at = ?, server_cmdline = ? WHERE gpu = ? AND holder = ? AND epoch = ?",
        pid,
        started,
        cmdline,
        gpu,
        holder,
        epoch
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(n == 1)
}

/// Registers `me` as waiting for `gpu`, or refreshes the registration.
pub async fn wait_for(pool: &SqlitePool, gpu: &str, me: &Holder, now: i64) -> Result<()> {
    let purpose = me.purpose.as_str();
    let mut tx = begin_immediate(pool).await?;
    sqlx::query!(
        r#"INSERT INTO gpu_waiters (id, gpu, pid, pid_started_at, host, purpose, created_at, heartbeat_at)
           VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
           ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at"#,
        me.id,
        gpu,
        me.pid,
        me.started_at,
        me.host,
        purpose,
        now
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Removes `me` from the waiters.
pub async fn stop_waiting(pool: &SqlitePool, me: &Holder) -> Result<()> {
    let mut tx = begin_immediate(pool).await?;
    sqlx::query!("DELETE FROM gpu_waiters WHERE id = ?", me.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::holder_is_dead;
    use crate::process;

    const HERE: &str = "this-host";

    fn here() -> Option<String> {
        Some(HERE.into())
    }

    #[test]
    fn a_live_process_here_holds_until_its_lease_expires() {
        let me = i64::from(std::process::id());
        let started = process::start_ticks(me);
        assert!(!holder_is_dead(
            &here(),
            Some(me),
            started,
            Some(2_000),
            HERE,
            1_000
        ));
        assert!(!holder_is_dead(
            &here(),
            Some(me),
            started,
            None,
            HERE,
            1_000
        ));
        // Expiry wins even over a live process: a paused worker loses its lease.
        assert!(holder_is_dead(
            &here(),
            Some(me),
            started,
            Some(999),
            HERE,
            1_000
        ));
    }

    #[test]
    fn a_gone_or_reused_pid_here_is_dead_at_once() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = i64::from(child.id());
        child.wait().unwrap();
        assert!(holder_is_dead(
            &here(),
            Some(pid),
            None,
            Some(i64::MAX),
            HERE,
            1_000
        ));
        // Our pid with another start time: the pid was reused.
        let me = i64::from(std::process::id());
        let later = process::start_ticks(me).map(|t| t + 1);
        assert!(holder_is_dead(
            &here(),
            Some(me),
            later,
            Some(i64::MAX),
            HERE,
            1_000
        ));
    }

    #[test]
    fn another_host_is_judged_by_expiry_alone() {
        let elsewhere = Some("other-host".to_string());
        assert!(!holder_is_dead(
            &elsewhere,
            Some(999_999),
            None,
            Some(2_000),
            HERE,
            1_000
        ));
        assert!(holder_is_dead(
            &elsewhere,
            Some(999_999),
            None,
            Some(999),
            HERE,
            1_000
        ));
        assert!(!holder_is_dead(&None, None, None, Some(2_000), HERE, 1_000));
    }
}
