//! PostgreSQL's side of [`Work`]: one worker's queue under one lease
//! epoch. Claims take `FOR UPDATE SKIP LOCKED` rows in the worker's scope;
//! a renewal extends the lease and the job leases of the jobs in flight and
//! recovers any worker's jobs whose job lease expired (by the database's
//! clock); an idle worker wakes on `LISTEN/NOTIFY`.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use cinecut_postgres::{lease as pgl, queue as pgq};

use super::contract::{Backend, Work};
use super::jobs::{
    Claimed, ClaimedJob, Fence, Finished, HashedFrame, Neighbour, Recorded, Scope, WorkerState,
};
use super::lease::{Holder, Renewal};
use super::pg::{PgDb, pg_holder};
use crate::error::Result;

/// One worker's queue under one lease epoch, on PostgreSQL.
pub struct PgWork {
    db: PgDb,
    me: pgl::Holder,
    fence: Fence,
    /// Its pass (and film), and the pass's binding this worker made: its
    /// claims hold only under it.
    scope: Scope,
    lease: Duration,
    /// Jobs claimed and not yet recorded: the job leases a renewal extends.
    mine: HashSet<i64>,
    wakeups: pgq::Wakeups,
}

impl PgWork {
    pub(super) async fn open(
        db: &PgDb,
        me: &Holder,
        fence: Fence,
        scope: Scope,
        lease: Duration,
    ) -> Result<Self> {
        let wakeups = pgq::Wakeups::listen(db.queue()).await.map_err(db.err())?;
        Ok(PgWork {
            db: db.clone(),
            me: pg_holder(me),
            fence,
            scope,
            lease,
            mine: HashSet::new(),
            wakeups,
        })
    }
}

#[async_trait]
impl Work for PgWork {
    fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Gives each claimed job the subtitle line on screen at its frame's
    /// time (`--dialogue-context`).
    async fn add_dialogue(&mut self, jobs: &mut [ClaimedJob]) -> Result<()> {
        let frames: Vec<i64> = jobs.iter().map(|j| j.frame_id).collect();
        let lines = cinecut_postgres::dialogue::lines_at(self.db.queue(), &frames)
            .await
            .map_err(self.db.err())?;
        for (frame, line) in lines {
            for job in jobs.iter_mut().filter(|j| j.frame_id == frame) {
                job.line = Some(line.clone());
            }
        }
        Ok(())
    }

    /// Records `finished` and claims up to `claim` more, in one transaction.
    async fn record_and_claim(
        &mut self,
        finished: &[Finished],
        claim: usize,
    ) -> Result<(Recorded, Claimed)> {
        let (recorded, claimed) = pgq::record_and_claim(
            self.db.queue(),
            &self.fence,
            finished,
            self.scope,
            claim as i64,
            self.lease,
        )
        .await
        .map_err(self.db.err())?;
        for f in finished {
            self.mine.remove(&f.job.job_id);
        }
        self.mine.extend(claimed.jobs.iter().map(|j| j.job_id));
        Ok((recorded, claimed))
    }

    async fn neighbours(&mut self, frames: &[i64]) -> Result<Vec<Neighbour>> {
        cinecut_postgres::dedupe::neighbours(self.db.queue(), frames)
            .await
            .map_err(self.db.err())
    }

    /// The released jobs are no longer ours to renew.
    async fn mark_hashed(
        &mut self,
        hashed: &[HashedFrame],
        claimed: &[ClaimedJob],
    ) -> Result<Vec<i64>> {
        let marked =
            cinecut_postgres::dedupe::mark_hashed(self.db.queue(), &self.fence, hashed, claimed)
                .await
                .map_err(self.db.err())?;
        for job in claimed.iter().filter(|j| marked.contains(&j.frame_id)) {
            self.mine.remove(&job.job_id);
        }
        Ok(marked)
    }

    /// Extends the lease and the job leases of the jobs in flight, and
    /// recovers any worker's jobs whose job lease expired (a host that
    /// died). Says whether the lease is still ours and whether a gpu-lock
    /// command waits.
    async fn renew(&self) -> Result<Renewal> {
        let q = self.db.queue();
        let jobs: Vec<i64> = self.mine.iter().copied().collect();
        let held = pgl::renew(
            q,
            &self.fence.gpu,
            &self.me,
            self.fence.epoch,
            &jobs,
            self.lease,
        )
        .await
        .map_err(self.db.err())?;
        let recovered = pgq::recover_expired(q).await.map_err(self.db.err())?;
        if recovered > 0 {
            tracing::warn!(
                "requeued {recovered} job(s) whose job lease expired (their worker is gone)"
            );
        }
        Ok(Renewal {
            held,
            waiters: self.waiters().await?,
        })
    }

    async fn waiters(&self) -> Result<i64> {
        pgq::waiters(self.db.queue(), &self.fence.gpu)
            .await
            .map_err(self.db.err())
    }

    async fn has_claimable(&self) -> Result<bool> {
        pgq::has_claimable(self.db.queue(), self.scope)
            .await
            .map_err(self.db.err())
    }

    async fn has_open_work(&self) -> Result<bool> {
        pgq::has_open_work(self.db.queue(), self.scope)
            .await
            .map_err(self.db.err())
    }

    /// Until the next backing-off job is due, at most a second.
    async fn next_wake(&self) -> Result<Duration> {
        let next = pgq::next_due(self.db.queue(), self.scope)
            .await
            .map_err(self.db.err())?;
        Ok(next.map_or(Duration::from_secs(1), |d| {
            d.clamp(Duration::from_millis(1), Duration::from_secs(1))
        }))
    }

    /// Returns when jobs are enqueued or recovered (`NOTIFY`), or after
    /// `at_most`.
    async fn wait_for_work(&mut self, at_most: Duration) -> Result<()> {
        tracing::trace!("idle: waiting up to {at_most:?} for another connection's commit");
        let woken = self.wakeups.wait(at_most).await.map_err(self.db.err())?;
        if woken {
            tracing::debug!("another connection committed; looking for work");
        }
        Ok(())
    }

    async fn set_state(&self, state: WorkerState) -> Result<()> {
        self.db.set_worker_state(&self.fence.owner, state).await
    }
}
