//! The queue as one worker sees it under one lease: record what finished
//! and claim more (one transaction), renew, ask whether there is work, and
//! wait for another process's commit. [`WorkQueue`] is one of two backends
//! behind the same methods: [`SqliteWork`] owns its connections and notices
//! commits by `PRAGMA data_version`; [`super::pg::PgWork`] claims with
//! `SKIP LOCKED` and wakes on `LISTEN/NOTIFY`. The worker names neither.

use std::time::Duration;

use sqlx::Sqlite;
use sqlx::pool::PoolConnection;
use tokio::time::{Instant, sleep};

use super::jobs::{self, Batch, Claimed, Fence, Finished, Recorded, Scope, WorkerState};
use super::lease::{self, Holder, Renewal};
use super::pg::PgWork;
use super::{Db, Store, now_ms};
use crate::error::Result;

/// One worker's queue under one lease epoch, on either backend.
pub enum WorkQueue {
    Sqlite(SqliteWork),
    Postgres(PgWork),
}

/// Calls the same method on whichever backend this is.
macro_rules! either {
    ($self:expr, $q:ident => $call:expr) => {
        match $self {
            WorkQueue::Sqlite($q) => $call,
            WorkQueue::Postgres($q) => $call,
        }
    };
}

impl WorkQueue {
    pub async fn open(
        store: &Store,
        me: &Holder,
        fence: Fence,
        scope: Scope,
        lease: Duration,
    ) -> Result<Self> {
        Ok(match store {
            Store::Sqlite(db) => {
                WorkQueue::Sqlite(SqliteWork::open(db, fence, scope, lease).await?)
            }
            Store::Postgres(db) => {
                WorkQueue::Postgres(PgWork::open(db, me, fence, scope, lease).await?)
            }
        })
    }

    pub fn fence(&self) -> &Fence {
        either!(self, q => q.fence())
    }

    /// Records `finished` and claims up to `claim` more, in one transaction.
    pub async fn record_and_claim(
        &mut self,
        finished: &[Finished],
        claim: usize,
    ) -> Result<(Recorded, Claimed)> {
        either!(self, q => q.record_and_claim(finished, claim).await)
    }

    /// Sets each claimed job's `line`: the dialogue line on screen at its
    /// frame's time. The PostgreSQL queue keeps no dialogue (the worker
    /// refuses a profile that asks for it there).
    pub async fn add_dialogue(&mut self, jobs: &mut [jobs::ClaimedJob]) -> Result<()> {
        match self {
            WorkQueue::Sqlite(q) => q.add_dialogue(jobs).await,
            WorkQueue::Postgres(q) => q.add_dialogue(jobs).await,
        }
    }

    /// Records `finished`, claiming nothing.
    pub async fn record(&mut self, finished: &[Finished]) -> Result<Recorded> {
        Ok(self.record_and_claim(finished, 0).await?.0)
    }

    /// Extends the lease and our jobs' leases; says whether it is still ours
    /// and whether a gpu-lock command waits.
    pub async fn renew(&self) -> Result<Renewal> {
        either!(self, q => q.renew().await)
    }

    /// gpu-lock commands waiting for this GPU.
    pub async fn waiters(&self) -> Result<i64> {
        either!(self, q => q.waiters().await)
    }

    /// Whether a job in scope can be claimed now.
    pub async fn has_claimable(&self) -> Result<bool> {
        either!(self, q => q.has_claimable().await)
    }

    /// Whether jobs in scope are still queued or running.
    pub async fn has_open_work(&self) -> Result<bool> {
        either!(self, q => q.has_open_work().await)
    }

    /// How long an idle worker may wait before it looks again.
    pub async fn next_wake(&self) -> Result<Duration> {
        either!(self, q => q.next_wake().await)
    }

    /// Returns when another process added or freed work, or after `at_most`.
    pub async fn wait_for_work(&mut self, at_most: Duration) -> Result<()> {
        either!(self, q => q.wait_for_work(at_most).await)
    }

    /// The worker's row in `workers`, for `status`.
    pub async fn set_state(&self, state: WorkerState) -> Result<()> {
        either!(self, q => q.set_state(state).await)
    }
}

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
    pub async fn open(db: &Db, fence: Fence, scope: Scope, lease: Duration) -> Result<Self> {
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

    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Records `finished` and claims up to `claim` more, in one transaction.
    pub async fn record_and_claim(
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
    pub async fn add_dialogue(&mut self, jobs: &mut [jobs::ClaimedJob]) -> Result<()> {
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

    /// Extends the lease and our jobs' leases; says whether it is still ours
    /// and whether a gpu-lock command waits.
    pub async fn renew(&self) -> Result<Renewal> {
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
    pub async fn waiters(&self) -> Result<i64> {
        let f = &self.fence;
        let since = now_ms() - 3 * self.lease_ms;
        lease::waiters_for(self.db.pool(), &f.gpu, &f.owner, since).await
    }

    /// Whether a job in scope can be claimed now.
    pub async fn has_claimable(&self) -> Result<bool> {
        jobs::has_claimable(self.db.pool(), self.scope, now_ms()).await
    }

    /// Whether jobs in scope are still queued or running.
    pub async fn has_open_work(&self) -> Result<bool> {
        jobs::has_open_work(self.db.pool(), self.scope).await
    }

    /// How long an idle worker may wait before it looks again: until the
    /// next backing-off job is due, at most a second.
    pub async fn next_wake(&self) -> Result<Duration> {
        let now = now_ms();
        let next = jobs::next_run_after(self.db.pool(), self.scope, now).await?;
        let ms = next.map_or(1000, |t| (t - now).clamp(1, 1000));
        Ok(Duration::from_millis(ms as u64))
    }

    /// Returns when another connection committed, or after `at_most`.
    pub async fn wait_for_work(&mut self, at_most: Duration) -> Result<()> {
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
    pub async fn set_state(&self, state: WorkerState) -> Result<()> {
        jobs::set_worker_state(self.db.pool(), &self.fence.owner, state, now_ms()).await
    }
}
