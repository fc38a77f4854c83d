//! The worker loop: lease → claim → describe → record → repeat.
//!
//! One worker per GPU. It holds the GPU lease for as long as it uses the
//! GPU; it keeps up to `parallel` frames in flight; each step records what
//! finished and claims replacements in one transaction. It yields the lease
//! to `gpu-lock` waiters at a safe point (nothing in flight), and on shutdown
//! stops claiming, lets in-flight frames finish within a grace period and
//! puts the rest back in the queue. Everything it writes is fenced by its
//! lease epoch (see [`crate::db::jobs`]).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::db::WorkQueue;
use crate::db::jobs::{ClaimedJob, Fence, Finished, Outcome, Recorded, Scope, WorkerState};
use crate::db::lease::{Acquire, Holder, Purpose};
use crate::db::passes::Pass;
use crate::db::{Store, now_ms};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::vision::{DescribeError, Describer, TransientKind};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub gpu: String,
    pub film: Option<i64>,
    /// The pass it describes frames for; `None`: the database's only pass.
    pub pass: Option<Pass>,
    /// Frames the server works on at once.
    pub parallel: usize,
    /// Frames claimed beyond `parallel`, prepared while they wait for a slot.
    pub prefetch: usize,
    pub until_empty: bool,
    pub no_wait: bool,
    pub lease_ttl: Duration,
    pub grace: Duration,
    pub poison_after: i64,
    pub retry_backoff: Duration,
    /// Pause after a crash, timeout or 5xx; doubles up to `max_backoff`.
    pub transient_backoff: Duration,
    pub max_backoff: Duration,
    /// Stop a supervised server after this long without work.
    pub idle_unload: Duration,
    /// Give the model the dialogue line on screen (`--dialogue-context`).
    pub dialogue_context: bool,
    /// Where this host reads the frames (`--path-map`).
    pub path_map: crate::frame::PathMap,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            gpu: "gpu0".into(),
            film: None,
            pass: None,
            parallel: 1,
            prefetch: 0,
            until_empty: false,
            no_wait: false,
            lease_ttl: Duration::from_secs(30),
            grace: Duration::from_secs(10),
            poison_after: 3,
            retry_backoff: Duration::from_secs(1),
            transient_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            idle_unload: Duration::from_secs(300),
            dialogue_context: false,
            path_map: crate::frame::PathMap::default(),
        }
    }
}

/// What a worker did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSummary {
    pub done: u64,
    pub failed: u64,
    pub retried: u64,
    pub requeued: u64,
    pub fenced: u64,
    /// Claimed stills that nearly repeated the frame before them: not sent,
    /// their jobs wait for that frame's description.
    pub near_duplicates: u64,
}

impl WorkerSummary {
    fn add(&mut self, r: Recorded) {
        self.done += r.done;
        self.failed += r.failed;
        self.retried += r.retried;
        self.requeued += r.requeued;
        self.fenced += r.fenced;
    }
}

enum LeaseEnd {
    Shutdown,
    Empty,
    LeaseLost,
    Yield,
}

/// Runs a worker until the queue is empty (`until_empty`) or `shutdown`:
/// waits for the GPU lease, works under it ([`LeaseSession`]), gives it up
/// (shutdown, empty queue, a gpu-lock command) or loses it, and waits again.
pub async fn run(
    store: &Store,
    cfg: &WorkerConfig,
    mut engine: Engine,
    shutdown: CancellationToken,
) -> Result<WorkerSummary> {
    let me = crate::db::lease::this_process(Purpose::Worker);
    store.register_worker(&me, &cfg.gpu).await?;
    tracing::info!(worker = %me.id, gpu = %cfg.gpu, parallel = cfg.parallel, "worker started");
    let mut summary = WorkerSummary::default();
    let result = async {
        let pass = match &cfg.pass {
            Some(pass) => pass.clone(),
            None => store.only_pass().await?,
        };
        let scope = Scope { pass: pass.id, binding: pass.binding, film: cfg.film };
        loop {
            let round: Result<bool> = async {
                if cfg.until_empty && !store.has_open_work(scope).await? {
                    tracing::info!("queue is empty");
                    return Ok(false);
                }
                let Some(epoch) = acquire_lease(store, cfg, &me, &shutdown).await? else { return Ok(false) };
                store.set_worker_state(&me.id, WorkerState::Running).await?;
                let fence = Fence { gpu: cfg.gpu.clone(), owner: me.id.clone(), epoch };
                let end = match store.open_work(&me, fence.clone(), scope, cfg.lease_ttl).await {
                    Ok(queue) => LeaseSession::new(store, cfg, queue, &mut engine, &mut summary).run(&shutdown).await,
                    Err(e) => Err(e),
                };
                // The server never runs without the lease: stop it before the lease goes.
                engine.release(store, Some(&fence)).await;
                let end = match end {
                    Ok(end) => end,
                    Err(Error::LeaseLost { .. }) => LeaseEnd::LeaseLost,
                    Err(e) => {
                        store.release_lease(&cfg.gpu, &me, epoch).await.ok();
                        return Err(e);
                    }
                };
                match end {
                    LeaseEnd::LeaseLost => {
                        tracing::error!("lost the GPU lease (paused or presumed dead); in-flight results dropped, waiting for the lease again");
                        Ok(true)
                    }
                    LeaseEnd::Yield => {
                        store.release_lease(&cfg.gpu, &me, epoch).await?;
                        tracing::info!("yielded the GPU lease to a gpu-lock command");
                        store.set_worker_state(&me.id, WorkerState::Yielded).await?;
                        Ok(true)
                    }
                    LeaseEnd::Shutdown | LeaseEnd::Empty => {
                        store.release_lease(&cfg.gpu, &me, epoch).await?;
                        Ok(false)
                    }
                }
            }
            .await;
            match round {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                // The server restarted or the network dropped: connect
                // again and take the lease again (under a new epoch, which
                // requeues what was in flight).
                Err(e) if e.is_connection_lost() => {
                    let cause = std::error::Error::source(&e).map(|c| c.to_string()).unwrap_or_default();
                    tracing::warn!("lost the connection to the database ({cause}); reconnecting");
                    engine.release(store, None).await;
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = sleep(Duration::from_millis(500)) => {}
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    .await;
    let state = if result.is_ok() {
        WorkerState::Stopped
    } else {
        WorkerState::Failed
    };
    store.set_worker_state(&me.id, state).await.ok();
    result.map(|()| summary)
}

/// Waits for the GPU lease; `None` on shutdown. Reaps a dead holder's
/// orphaned llama-server.
async fn acquire_lease(
    store: &Store,
    cfg: &WorkerConfig,
    me: &Holder,
    shutdown: &CancellationToken,
) -> Result<Option<i64>> {
    let mut told = false;
    loop {
        match store.acquire_lease(&cfg.gpu, me, cfg.lease_ttl).await? {
            Acquire::Acquired {
                epoch,
                recovered,
                took_over_from,
                orphan_server,
            } => {
                if let Some(dead) = took_over_from {
                    tracing::warn!(
                        "took over the GPU lease of {dead}, which is gone; requeued its {recovered} running job(s)"
                    );
                } else if recovered > 0 {
                    tracing::info!(
                        "requeued the {recovered} job(s) this worker had in flight under its previous lease epoch"
                    );
                }
                if let Some(o) = orphan_server {
                    crate::server::reap_recorded(o).await;
                }
                tracing::info!(gpu = %cfg.gpu, epoch, "holding the GPU lease");
                return Ok(Some(epoch));
            }
            Acquire::Held {
                holder,
                pid,
                host,
                purpose,
            } => {
                let who = format!(
                    "{holder} ({}, pid {}, host {})",
                    purpose.as_deref().unwrap_or("?"),
                    pid.map_or("?".into(), |p| p.to_string()),
                    host.as_deref().unwrap_or("?")
                );
                if cfg.no_wait {
                    return Err(Error::GpuBusy {
                        gpu: cfg.gpu.clone(),
                        holder: who,
                    });
                }
                if !told {
                    tracing::info!("GPU {} is held by {who}; waiting", cfg.gpu);
                    told = true;
                }
            }
            Acquire::WaitersFirst => {
                if !told {
                    tracing::info!(
                        "a gpu-lock command waits for GPU {}; waiting until it is done",
                        cfg.gpu
                    );
                    told = true;
                }
            }
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(None),
            _ = sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// One finished request: its record, a reason to stop the worker, and
/// `Some(timed_out)` when the server may be at fault.
struct JobResult {
    finished: Finished,
    fatal: Option<Error>,
    server_trouble: Option<bool>,
}

/// A finished request: its job's id, and its result or its panic.
type Joined = (i64, std::thread::Result<JobResult>);

/// A request in flight.
type Request = BoxFuture<'static, Joined>;

/// Requests in flight, and the job each works on. They are polled by the
/// worker's own task, not spawned: answers that arrive together are recorded
/// in one batch (spawned tasks finished one by one on other threads and cut
/// batches into pieces), and no answer costs a thread hand-off. The HTTP
/// connections themselves run on the runtime's tasks either way.
#[derive(Default)]
struct InFlight {
    requests: FuturesUnordered<Request>,
    jobs: HashMap<i64, ClaimedJob>,
}

impl InFlight {
    fn len(&self) -> usize {
        self.requests.len()
    }

    fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    fn start(&mut self, describer: Arc<dyn Describer>, job: ClaimedJob, cfg: &WorkerConfig) {
        let id = job.job_id;
        let request = AssertUnwindSafe(describe_job(describer, job.clone(), cfg.clone()));
        self.requests
            .push(Box::pin(async move { (id, request.catch_unwind().await) }));
        self.jobs.insert(id, job);
    }

    /// Drops every request; their jobs go back to the queue untouched.
    fn abort_all(&mut self) -> Vec<Finished> {
        self.requests.clear();
        self.jobs.drain().map(|(_, job)| release(job)).collect()
    }

    /// The result of a finished request, or a release if it panicked.
    fn settle(&mut self, (id, result): Joined) -> Option<JobResult> {
        let job = self.jobs.remove(&id)?;
        Some(result.unwrap_or_else(|_| {
            tracing::error!(
                job = id,
                "describing the frame panicked; the job goes back to the queue"
            );
            JobResult {
                finished: release(job),
                fatal: None,
                server_trouble: None,
            }
        }))
    }
}

/// The worker under one lease: the frames in flight and what it does on
/// each event. The loop ([`LeaseSession::run`]) records and claims, then
/// waits for the next event and hands it to its method.
struct LeaseSession<'a> {
    store: &'a Store,
    cfg: &'a WorkerConfig,
    queue: WorkQueue,
    engine: &'a mut Engine,
    summary: &'a mut WorkerSummary,
    in_flight: InFlight,
    /// Tries that finished, recorded with the next claim.
    finished: Vec<Finished>,
    /// Set once a gpu-lock command waits: claim nothing more, and give the
    /// frames in flight until then to finish.
    yielding: Option<Instant>,
    /// No claims until then, after a server failure.
    paused_until: Option<Instant>,
    /// The next pause after a server failure (doubles, up to `max_backoff`).
    backoff: Duration,
    idle_since: Option<Instant>,
}

impl<'a> LeaseSession<'a> {
    fn new(
        store: &'a Store,
        cfg: &'a WorkerConfig,
        queue: WorkQueue,
        engine: &'a mut Engine,
        summary: &'a mut WorkerSummary,
    ) -> Self {
        LeaseSession {
            store,
            cfg,
            queue,
            engine,
            summary,
            in_flight: InFlight::default(),
            finished: Vec::new(),
            yielding: None,
            paused_until: None,
            backoff: cfg.transient_backoff,
            idle_since: None,
        }
    }

    /// Works until the lease ends. Whatever stops it, frames still in
    /// flight go back to the queue.
    async fn run(mut self, shutdown: &CancellationToken) -> Result<LeaseEnd> {
        let result = self.event_loop(shutdown).await;
        if result.is_err() && !self.in_flight.is_empty() {
            let released = self.in_flight.abort_all();
            if let Ok(rec) = self.queue.record(&released).await {
                self.summary.add(rec);
            }
        }
        result
    }

    async fn event_loop(&mut self, shutdown: &CancellationToken) -> Result<LeaseEnd> {
        let beat = self.cfg.lease_ttl / 3;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + beat, beat);
        loop {
            self.record_and_claim().await?;
            if self.in_flight.is_empty()
                && let Some(end) = self.when_idle().await?
            {
                return Ok(end);
            }
            // Asked here, not inside select!: select! evaluates every
            // branch's expression, enabled or not, and this query scans the
            // queued jobs. Run once per batch, it made the worker quadratic
            // in the queue's size.
            let idle_wake = if self.in_flight.is_empty() && !self.paused() {
                Some(self.queue.next_wake().await?)
            } else {
                None
            };
            let grace_over = self.yielding.filter(|_| !self.in_flight.is_empty());
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return self.on_shutdown().await,
                _ = heartbeat.tick() => {
                    if let Some(end) = self.on_heartbeat().await? {
                        return Ok(end);
                    }
                }
                Some(joined) = self.in_flight.requests.next(), if !self.in_flight.is_empty() => {
                    self.on_results(joined).await?;
                }
                _ = sleep_until(grace_over.unwrap_or_else(Instant::now)), if grace_over.is_some() => {
                    self.on_grace_over();
                }
                _ = sleep_until(self.paused_until.unwrap_or_else(Instant::now)), if self.paused() => {}
                woke = self.queue.wait_for_work(idle_wake.unwrap_or_default()), if idle_wake.is_some() => woke?,
            }
        }
    }

    fn paused(&self) -> bool {
        self.paused_until.is_some_and(|t| t > Instant::now())
    }

    /// Records what finished and, with room and work, claims more. The
    /// server is started (or restarted) only when there is work for it.
    async fn record_and_claim(&mut self) -> Result<()> {
        let room = if self.yielding.is_some() || self.paused() {
            0
        } else {
            (self.cfg.parallel + self.cfg.prefetch).saturating_sub(self.in_flight.len())
        };
        let wants_work =
            room > 0 && (self.engine.is_running() || self.queue.has_claimable().await?);
        let describer = match wants_work {
            true => Some(self.engine.ready(self.store, self.queue.fence()).await?),
            false => None,
        };
        if self.finished.is_empty() && describer.is_none() {
            return Ok(());
        }
        let claim = if describer.is_some() { room } else { 0 };
        let (rec, mut claimed) = self.queue.record_and_claim(&self.finished, claim).await?;
        self.finished.clear();
        self.summary.add(rec);
        self.summary.near_duplicates += crate::ingest::dedupe::hash_claimed(
            &mut self.queue,
            &mut claimed.jobs,
            &self.cfg.path_map,
        )
        .await? as u64;
        if self.cfg.dialogue_context && !claimed.jobs.is_empty() {
            self.queue.add_dialogue(&mut claimed.jobs).await?;
        }
        if claimed.rebound {
            return Err(Error::PassRebound {
                pass: self
                    .cfg
                    .pass
                    .as_ref()
                    .map(|p| p.name.clone())
                    .unwrap_or_default(),
            });
        }
        if claimed.gpu_wanted {
            self.start_yielding();
        }
        if !claimed.jobs.is_empty() {
            tracing::trace!("claimed {} job(s)", claimed.jobs.len());
            self.idle_since = None;
        }
        for job in claimed.jobs {
            let describer = describer.clone().expect("claims only with a describer");
            self.in_flight.start(describer, job, self.cfg);
        }
        Ok(())
    }

    /// Nothing in flight: yield to a waiting gpu-lock command, end on an
    /// empty queue (`--until-empty`), stop a server idle for `--idle-unload`.
    async fn when_idle(&mut self) -> Result<Option<LeaseEnd>> {
        if self.yielding.is_some() {
            return Ok(Some(LeaseEnd::Yield));
        }
        // No claim tells an idle worker that someone waits: ask.
        if self.queue.waiters().await? > 0 {
            self.start_yielding();
            return Ok(Some(LeaseEnd::Yield));
        }
        if self.cfg.until_empty && !self.paused() && !self.queue.has_open_work().await? {
            return Ok(Some(LeaseEnd::Empty));
        }
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        let unload = self.cfg.idle_unload;
        if self.engine.supervises() && self.engine.is_running() && since.elapsed() >= unload {
            tracing::info!(
                "no work for {:.0} s: stopping llama-server (--idle-unload)",
                unload.as_secs_f64()
            );
            self.engine
                .release(self.store, Some(self.queue.fence()))
                .await;
        }
        Ok(None)
    }

    /// Stops claiming; frames in flight get `--grace` to finish, the rest
    /// go back to the queue.
    async fn on_shutdown(&mut self) -> Result<LeaseEnd> {
        let drained = drain(&mut self.in_flight, self.cfg.grace).await;
        self.finished.extend(drained);
        let rec = self.queue.record(&self.finished).await?;
        self.finished.clear();
        self.summary.add(rec);
        Ok(LeaseEnd::Shutdown)
    }

    /// Renews the lease; a lost lease ends the session at once (what is in
    /// flight is no longer ours to record).
    async fn on_heartbeat(&mut self) -> Result<Option<LeaseEnd>> {
        let renewal = self.queue.renew().await?;
        if !renewal.held {
            self.in_flight.abort_all();
            return Ok(Some(LeaseEnd::LeaseLost));
        }
        if renewal.waiters > 0 {
            self.start_yielding();
        }
        let state = if self.yielding.is_some() {
            WorkerState::Yielding
        } else if self.in_flight.is_empty() {
            WorkerState::Idle
        } else {
            WorkerState::Running
        };
        self.queue.set_state(state).await?;
        Ok(None)
    }

    /// Answers arrived: takes every one that is ready, so that they are
    /// recorded together in the next batch.
    async fn on_results(&mut self, first: Joined) -> Result<()> {
        let mut next = Some(first);
        while let Some(joined) = next {
            if let Some(r) = self.in_flight.settle(joined) {
                self.on_result(r).await?;
            }
            next = self.in_flight.requests.next().now_or_never().flatten();
        }
        Ok(())
    }

    /// One answer: a failing server pauses claims (and a hung one is
    /// restarted); a refusal (bad API key) stops the worker.
    async fn on_result(&mut self, r: JobResult) -> Result<()> {
        if let Some(timed_out) = r.server_trouble {
            self.engine.server_failed(timed_out).await;
        }
        match &r.finished.outcome {
            // One pause per failure of the server, however many frames in
            // flight it took down with it (the pause doubles per failure).
            Outcome::Requeue { .. } if !self.paused() => {
                tracing::warn!(
                    "pausing claims for {:.1} s after a server failure",
                    self.backoff.as_secs_f64()
                );
                self.paused_until = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(self.cfg.max_backoff);
            }
            Outcome::Done { .. } => self.backoff = self.cfg.transient_backoff,
            _ => {}
        }
        self.finished.push(r.finished);
        if let Some(fatal) = r.fatal {
            let released = self.in_flight.abort_all();
            self.finished.extend(released);
            let rec = self.queue.record(&self.finished).await?;
            self.finished.clear();
            self.summary.add(rec);
            return Err(fatal);
        }
        Ok(())
    }

    /// `--grace` is over while yielding: the frames still in flight go back
    /// to the queue for the gpu-lock command.
    fn on_grace_over(&mut self) {
        tracing::warn!(
            "--grace is over: {} frame(s) in flight go back to the queue for the gpu-lock command",
            self.in_flight.len()
        );
        let released = self.in_flight.abort_all();
        self.finished.extend(released);
    }

    /// A gpu-lock command waits: claim nothing more and let the frames in
    /// flight finish within `--grace` (the deadline is set once).
    fn start_yielding(&mut self) {
        if self.yielding.is_none() {
            tracing::info!(
                "a gpu-lock command waits for the GPU; claiming nothing more, yielding once {} frame(s) in flight finish",
                self.in_flight.len()
            );
            self.yielding = Some(Instant::now() + self.cfg.grace);
        }
    }
}

fn release(job: ClaimedJob) -> Finished {
    let now = now_ms();
    Finished {
        job,
        outcome: Outcome::Release,
        started_at: now,
        finished_at: now,
    }
}

/// Lets in-flight frames finish within `grace`; the rest go back to the queue.
async fn drain(in_flight: &mut InFlight, grace: Duration) -> Vec<Finished> {
    let mut out = Vec::new();
    if !in_flight.is_empty() {
        tracing::info!(
            "shutting down: waiting up to {:.0} s for {} frame(s) in flight",
            grace.as_secs_f64(),
            in_flight.len()
        );
    }
    let deadline = Instant::now() + grace;
    while !in_flight.is_empty() {
        tokio::select! {
            joined = in_flight.requests.next() => match joined {
                Some(joined) => out.extend(in_flight.settle(joined).map(|r| r.finished)),
                None => break,
            },
            _ = sleep_until(deadline) => {
                tracing::warn!("grace period over: {} frame(s) go back to the queue", in_flight.len());
                break;
            }
        }
    }
    out.extend(in_flight.abort_all());
    out
}

async fn describe_job(
    describer: Arc<dyn Describer>,
    job: ClaimedJob,
    cfg: WorkerConfig,
) -> JobResult {
    let started_at = now_ms();
    let path = cfg.path_map.apply(&job.path);
    let stored = job.stored.as_ref().map(|s| &*s.0);
    let result = describer.describe(&path, stored, job.line.as_deref()).await;
    let finished_at = now_ms();
    let mut fatal = None;
    let server_trouble = match &result {
        Err(DescribeError::Transient { kind, .. }) => Some(*kind == TransientKind::Timeout),
        _ => None,
    };
    let outcome = match result {
        Ok(d) => Outcome::Done {
            answer: d.answer,
            model: describer.model().to_string(),
            model_sha256: describer.model_sha256().map(str::to_string),
            prompt_version: d.prompt_version,
            prompt_tokens: d.prompt_tokens,
            completion_tokens: d.completion_tokens,
        },
        Err(e) => {
            tracing::warn!(job = job.job_id, path = %job.path, class = e.class(), "{e}");
            let class = e.class();
            let error = e.to_string();
            match e {
                DescribeError::Frame(_) | DescribeError::BadRequest { .. } => {
                    Outcome::Fail { class, error }
                }
                DescribeError::BadOutput { raw, .. } => {
                    let backoff =
                        cfg.retry_backoff.as_millis() as i64 * (1 << job.attempts.clamp(0, 10));
                    Outcome::Retry {
                        class,
                        error,
                        raw: Some(raw),
                        backoff_ms: backoff,
                    }
                }
                DescribeError::Transient { kind, .. } => Outcome::Requeue {
                    class,
                    error,
                    counts: kind.reached(),
                    poison_after: cfg.poison_after,
                    backoff_ms: 0,
                },
                DescribeError::Unauthorized { .. } => {
                    fatal = Some(Error::ServerRefused(error));
                    Outcome::Release
                }
                DescribeError::NotFound { .. } => {
                    fatal = Some(Error::ServerRefused(format!(
                        "{error}; check --server-url and --model-name (no frame was failed)"
                    )));
                    Outcome::Release
                }
                DescribeError::ContextExceeded { .. } => {
                    fatal = Some(Error::ContextTooSmall { detail: error });
                    Outcome::Release
                }
            }
        }
    };
    JobResult {
        finished: Finished {
            job,
            outcome,
            started_at,
            finished_at,
        },
        fatal,
        server_trouble,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::Described;

    struct Panics;

    impl Describer for Panics {
        fn describe<'a>(
            &'a self,
            path: &'a str,
            _: Option<&'a [u8]>,
            _: Option<&'a str>,
        ) -> BoxFuture<'a, std::result::Result<Described, DescribeError>> {
            Box::pin(async move { panic!("describer bug on {path}") })
        }
        fn model(&self) -> &str {
            "panics"
        }
    }

    fn job(id: i64) -> ClaimedJob {
        ClaimedJob {
            job_id: id,
            frame_id: id,
            path: format!("/frames/{id}.png"),
            line: None,
            attempts: 0,
            transient_failures: 0,
            max_attempts: 3,
            stored: None,
            dedupe: None,
        }
    }

    /// Requests are polled by the worker's task, not spawned: a panic in one
    /// must release its job and leave the others in flight.
    #[tokio::test]
    async fn a_panicking_request_releases_its_job_and_nothing_else() {
        let mut in_flight = InFlight::default();
        let cfg = WorkerConfig::default();
        in_flight.start(Arc::new(Panics), job(1), &cfg);
        in_flight.start(Arc::new(Panics), job(2), &cfg);
        let first = in_flight.requests.next().await.expect("a result");
        let r = in_flight.settle(first).expect("its job was in flight");
        assert!(matches!(r.finished.outcome, Outcome::Release));
        assert!(r.fatal.is_none());
        assert_eq!(in_flight.len(), 1);
        let released = in_flight.abort_all();
        assert_eq!(released.len(), 1);
        assert_ne!(released[0].job.job_id, r.finished.job.job_id);
        assert!(in_flight.is_empty() && in_flight.jobs.is_empty());
    }
}
