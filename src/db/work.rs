//! The queue as one worker sees it under one lease: record what finished
//! and claim more (one transaction), renew, ask whether there is work, and
//! wait for another process's commit ([`Work`]), on SQLite: [`SqliteWork`]
//! owns its connections and notices commits by `PRAGMA data_version`
//! (PostgreSQL's, `pg::PgWork`, claims with `SKIP LOCKED` and wakes on
//! `LISTEN/NOTIFY`). The worker names neither.

use std::time::Duration;

use sqlx::Sqlite;
use sqlx::pool::PoolConnection;
use tokio::time::{Instant, sleep};

use async_trait::async_trait;

use super::contract::Work;
use super::jobs::{self, Batch, Claimed, Fence, Finished, Recorded, Scope, WorkerState};
use super::lease::{self, Renewal};
use super::{Db, now_ms};
use crate::error::Result;

/// One worker's queue under one lease epoch, on SQLite.
pub struct SqliteWork {
    db: Db,
    fence: Fence,
    scope: Scope,
    lease_ms: i64,
    /// Batches run on a connection of their own: its page cache stays valid
    /// from one batch to the next (a pool hands out its connections in turn,
    /// and each had to reread what the other wrote).
    batches: PoolConnection<Sqlite>,
    /// Held to read `PRAGMA data_version`, which changes on this connection
    /// when another connection commits.
    watch: PoolConnection<Sqlite>,
    version: i64,
}

impl SqliteWork {
    pub(super) async fn open(db: &Db, fence: Fence, scope: Scope, lease: Duration) -> Result<Self> {
        let pool = db.pool();
        let mut watch = pool.acquire().await?;
        let version = super::data_version(&mut watch).await?;
        Ok(SqliteWork {
            db: db.clone(),
            fence,
            scope,
            lease_ms: lease.as_millis() as i64,
            batches: pool.acquire().await?,
            watch,
            version,
        })
    }
}

#[async_trait]
impl Work for SqliteWork {
    fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Records `finished` and claims up to `claim` more, in one transaction.
    async fn record_and_claim(
        &mut self,
        finished: &[Finished],
        claim: usize,
    ) -> Result<(Recorded, Claimed)> {
        let batch = Batch {
            fence: &self.fence,
            finished,
            claim,
            scope: self.scope,
            now: now_ms(),
            lease_ms: self.lease_ms,
        };
        jobs::record_and_claim(&mut self.batches, &batch).await
    }

    /// Sets each claimed job's `line`: the dialogue line on screen at its
    /// frame's time (as the `frame_dialogue` view has it), if any.
    async fn add_dialogue(&mut self, jobs: &mut [jobs::ClaimedJob]) -> Result<()> {
        let ids = serde_json::to_string(&jobs.iter().map(|j| j.frame_id).collect::<Vec<_>>())
            .expect("ids serialise");
        let lines = sqlx::query!(
            r#"SELECT fr.id AS "frame!: i64",
                      (SELECT CASE WHEN s.end_ms >= fr.pts_ms THEN s.text END FROM subtitles s
                       WHERE s.film_id = fr.film_id AND s.start_ms <= fr.pts_ms
                       ORDER BY s.start_ms DESC LIMIT 1) AS "line?: String"
               FROM frames fr
               WHERE fr.id IN (SELECT value FROM json_each(?1))"#,
            ids
        )
        .fetch_all(&mut *self.batches)
        .await?;
        for row in lines {
            if let Some(job) = jobs.iter_mut().find(|j| j.frame_id == row.frame) {
                job.line = row.line;
            }
        }
        Ok(())
    }

    async fn neighbours(&mut self, frames: &[i64]) -> Result<Vec<jobs::Neighbour>> {
        super::dedupe::neighbours(&mut self.batches, frames).await
    }

    async fn mark_hashed(
        &mut self,
        hashed: &[jobs::HashedFrame],
        claimed: &[jobs::ClaimedJob],
    ) -> Result<Vec<i64>> {
        super::dedupe::mark_hashed(&mut self.batches, &self.fence, hashed, claimed).await
    }

    /// Extends the lease and our jobs' leases; says whether it is still ours
    /// and whether a gpu-lock command waits.
    async fn renew(&self) -> Result<Renewal> {
        let f = &self.fence;
        lease::renew(
            self.db.pool(),
            &f.gpu,
            &f.owner,
            f.epoch,
            self.lease_ms,
            now_ms(),
        )
        .await
    }

    /// gpu-lock commands waiting for this GPU (an idle worker claims
    /// nothing, so no claim tells it).
    async fn waiters(&self) -> Result<i64> {
        let f = &self.fence;
        let since = now_ms() - 3 * self.lease_ms;
        lease::waiters_for(self.db.pool(), &f.gpu, &f.owner, since).await
    }

    /// Whether a job in scope can be claimed now.
    async fn has_claimable(&self) -> Result<bool> {
        jobs::has_claimable(self.db.pool(), self.scope, now_ms()).await
    }

    /// Whether jobs in scope are still queued or running.
    async fn has_open_work(&self) -> Result<bool> {
        jobs::has_open_work(self.db.pool(), self.scope).await
    }

    /// How long an idle worker may wait before it looks again: until the
    /// next backing-off job is due, at most a second.
    async fn next_wake(&self) -> Result<Duration> {
        let now = now_ms();
        let next = jobs::next_run_after(self.db.pool(), self.scope, now).await?;
        let ms = next.map_or(1000, |t| (t - now).clamp(1, 1000));
        Ok(Duration::from_millis(ms as u64))
    }

    /// Returns when another connection committed, or after `at_most`.
    async fn wait_for_work(&mut self, at_most: Duration) -> Result<()> {
        tracing::trace!("idle: waiting up to {at_most:?} for another connection's commit");
        let deadline = Instant::now() + at_most;
        while Instant::now() < deadline {
            sleep(Duration::from_millis(50).min(at_most)).await;
            let v = super::data_version(&mut self.watch).await?;
            if v != self.version {
                self.version = v;
                tracing::debug!("another connection committed; looking for work");
                return Ok(());
            }
        }
        Ok(())
    }

    /// The worker's row in `workers`, for `status`.
    async fn set_state(&self, state: WorkerState) -> Result<()> {
        jobs::set_worker_state(self.db.pool(), &self.fence.owner, state, now_ms()).await
    }
}
