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
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::db::jobs::{self, ClaimedJob, Fence, Finished, Outcome, Recorded};
use crate::db::lease::{self, Acquire, Holder, Purpose};
use crate::db::{Db, now_ms};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::vision::{self, DescribeError, Described, PROMPT_VERSION, TransientKind, VisionClient};

/// Describes one frame. The worker does not care how: llama-server over HTTP
/// in production, an instant in-process answer in the queue benchmark.
pub trait Describer: Send + Sync + 'static {
    fn describe<'a>(
        &'a self,
        path: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Described, DescribeError>> + Send + 'a>>;
    /// The model name stored with each description.
    fn model(&self) -> &str;
}

/// Frames described through an OpenAI-compatible chat endpoint.
pub struct HttpDescriber {
    pub client: VisionClient,
    pub model: String,
}

impl Describer for HttpDescriber {
    fn describe<'a>(
        &'a self,
        path: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Described, DescribeError>> + Send + 'a>> {
        // A task of its own: the request and its deadline go on while the
        // worker's loop waits (another connection's write lock can hold it
        // for minutes), and its answer waits there to be recorded. Dropped
        // (shutdown, yield, lost lease), it is aborted, as before.
        let client = self.client.clone();
        let path = path.to_string();
        let request = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            let frame = vision::load_frame(std::path::Path::new(&path)).await?;
            client.describe(&frame).await
        }));
        Box::pin(async move {
            match request.await {
                Ok(result) => result,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        })
    }

    fn model(&self) -> &str {
        &self.model
    }
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub gpu: String,
    pub film: Option<i64>,
    pub parallel: usize,
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
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            gpu: "gpu0".into(),
            film: None,
            parallel: 1,
            until_empty: false,
            no_wait: false,
            lease_ttl: Duration::from_secs(30),
            grace: Duration::from_secs(10),
            poison_after: 3,
            retry_backoff: Duration::from_secs(1),
            transient_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            idle_unload: Duration::from_secs(300),
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

/// Runs a worker until the queue is empty (`until_empty`) or `shutdown`.
pub async fn run(
    db: &Db,
    cfg: &WorkerConfig,
    mut engine: Box<dyn Engine>,
    shutdown: CancellationToken,
) -> Result<WorkerSummary> {
    let pool = db.pool();
    let me = Holder::this_process(Purpose::Worker);
    jobs::register_worker(pool, &me.id, me.pid, &me.host, &cfg.gpu, now_ms()).await?;
    tracing::info!(worker = %me.id, gpu = %cfg.gpu, parallel = cfg.parallel, "worker started");
    let mut summary = WorkerSummary::default();
    let result = async {
        loop {
            if cfg.until_empty && !jobs::has_open_work(pool, cfg.film).await? {
                tracing::info!("queue is empty");
                return Ok(());
            }
            let Some(epoch) = acquire_lease(db, cfg, &me, &shutdown).await? else { return Ok(()) };
            jobs::set_worker_state(pool, &me.id, "running", now_ms(), false).await?;
            let fence = Fence { gpu: cfg.gpu.clone(), owner: me.id.clone(), epoch };
            let end = work_under_lease(db, cfg, &fence, engine.as_mut(), &shutdown, &mut summary).await;
            // The server never runs without the lease: stop it before the lease goes.
            engine.release(db, Some(&fence)).await;
            let end = match end {
                Ok(end) => end,
                Err(Error::LeaseLost { .. }) => LeaseEnd::LeaseLost,
                Err(e) => {
                    lease::release(pool, &cfg.gpu, &me.id, epoch, now_ms()).await.ok();
                    return Err(e);
                }
            };
            match end {
                LeaseEnd::LeaseLost => {
                    tracing::error!("lost the GPU lease (paused or presumed dead); in-flight results dropped, waiting for the lease again");
                }
                LeaseEnd::Yield => {
                    lease::release(pool, &cfg.gpu, &me.id, epoch, now_ms()).await?;
                    tracing::info!("yielded the GPU lease to a gpu-lock command");
                    jobs::set_worker_state(pool, &me.id, "yielded", now_ms(), false).await?;
                }
                LeaseEnd::Shutdown | LeaseEnd::Empty => {
                    lease::release(pool, &cfg.gpu, &me.id, epoch, now_ms()).await?;
                    return Ok(());
                }
            }
        }
    }
    .await;
    let state = if result.is_ok() { "stopped" } else { "failed" };
    jobs::set_worker_state(pool, &me.id, state, now_ms(), true)
        .await
        .ok();
    result.map(|()| summary)
}

/// Waits for the GPU lease; `None` on shutdown. Reaps a dead holder's
/// orphaned llama-server.
async fn acquire_lease(
    db: &Db,
    cfg: &WorkerConfig,
    me: &Holder,
    shutdown: &CancellationToken,
) -> Result<Option<i64>> {
    let ttl = cfg.lease_ttl.as_millis() as i64;
    let mut told = false;
    loop {
        match lease::acquire(db.pool(), &cfg.gpu, me, ttl, now_ms()).await? {
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
                }
                if let Some(o) = orphan_server {
                    tokio::task::spawn_blocking(move || {
                        crate::server::reap_orphan(o.pid, o.started_at, o.cmdline.as_deref())
                    })
                    .await
                    .expect("reaping thread");
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
    fatal: Option<String>,
    server_trouble: Option<bool>,
}

/// A request in flight: its job's id, and its result or its panic.
type Request = BoxFuture<'static, (i64, std::thread::Result<JobResult>)>;

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
    fn settle(&mut self, (id, result): (i64, std::thread::Result<JobResult>)) -> Option<JobResult> {
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

async fn work_under_lease(
    db: &Db,
    cfg: &WorkerConfig,
    fence: &Fence,
    engine: &mut dyn Engine,
    shutdown: &CancellationToken,
    summary: &mut WorkerSummary,
) -> Result<LeaseEnd> {
    let mut in_flight = InFlight::default();
    let result = lease_loop(db, cfg, fence, engine, shutdown, summary, &mut in_flight).await;
    if result.is_err() && !in_flight.is_empty() {
        // Whatever stopped us, frames in flight go back to the queue.
        let released = in_flight.abort_all();
        let ttl = cfg.lease_ttl.as_millis() as i64;
        if let Ok(mut conn) = db.pool().acquire().await
            && let Ok((rec, _)) =
                jobs::record_and_claim(&mut conn, fence, &released, 0, None, now_ms(), ttl).await
        {
            summary.add(rec);
        }
    }
    result
}

async fn lease_loop(
    db: &Db,
    cfg: &WorkerConfig,
    fence: &Fence,
    engine: &mut dyn Engine,
    shutdown: &CancellationToken,
    summary: &mut WorkerSummary,
    in_flight: &mut InFlight,
) -> Result<LeaseEnd> {
    let pool = db.pool();
    let ttl = cfg.lease_ttl.as_millis() as i64;
    let mut finished: Vec<Finished> = Vec::new();
    let mut heartbeat =
        tokio::time::interval_at(Instant::now() + cfg.lease_ttl / 3, cfg.lease_ttl / 3);
    // Set once a gpu-lock command waits: claim nothing more, and give the
    // frames in flight until then to finish.
    let mut yielding: Option<Instant> = None;
    let mut paused_until: Option<Instant> = None;
    let mut backoff = cfg.transient_backoff;
    let mut idle_since: Option<Instant> = None;
    let mut watch = DataVersion::new(db).await?;
    // Batches run on a connection of their own: its page cache stays valid
    // from one batch to the next (a pool hands out its connections in turn,
    // and each had to reread what the other wrote).
    let mut batches = pool.acquire().await?;
    loop {
        let paused = paused_until.is_some_and(|t| t > Instant::now());
        let room = if yielding.is_some() || paused {
            0
        } else {
            cfg.parallel.saturating_sub(in_flight.len())
        };
        // Start (or restart) the server only when there is work for it.
        let wants_work = room > 0
            && (engine.is_running() || jobs::has_claimable(pool, cfg.film, now_ms()).await?);
        let describer = if wants_work {
            Some(engine.ready(db, fence).await?)
        } else {
            None
        };
        if !finished.is_empty() || describer.is_some() {
            let claim = if describer.is_some() { room as i64 } else { 0 };
            let (rec, claimed) = jobs::record_and_claim(
                &mut batches,
                fence,
                &finished,
                claim,
                cfg.film,
                now_ms(),
                ttl,
            )
            .await?;
            finished.clear();
            summary.add(rec);
            if claimed.gpu_wanted {
                start_yielding(&mut yielding, cfg, in_flight.len());
            }
            if !claimed.jobs.is_empty() {
                tracing::trace!("claimed {} job(s)", claimed.jobs.len());
                idle_since = None;
            }
            for job in claimed.jobs {
                in_flight.start(
                    describer.clone().expect("claims only with a describer"),
                    job,
                    cfg,
                );
            }
        }
        if in_flight.is_empty() {
            if yielding.is_some() {
                return Ok(LeaseEnd::Yield);
            }
            // No claim tells an idle worker that someone waits: ask.
            if lease::waiters_for(pool, &fence.gpu, &fence.owner, now_ms() - 3 * ttl).await? > 0 {
                start_yielding(&mut yielding, cfg, 0);
                continue;
            }
            if cfg.until_empty && !paused && !jobs::has_open_work(pool, cfg.film).await? {
                return Ok(LeaseEnd::Empty);
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            if engine.supervises() && engine.is_running() && since.elapsed() >= cfg.idle_unload {
                tracing::info!(
                    "no work for {:.0} s: stopping llama-server (--idle-unload)",
                    cfg.idle_unload.as_secs_f64()
                );
                engine.release(db, Some(fence)).await;
            }
        }
        // Asked here, not inside select!: select! evaluates every branch's
        // expression, enabled or not, and this query scans the queued jobs.
        // Run once per batch, it made the worker quadratic in the queue's size.
        let idle_wake = if in_flight.is_empty() && !paused {
            Some(next_wake(db, cfg).await?)
        } else {
            None
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                finished.extend(drain(in_flight, cfg.grace).await);
                let (rec, _) = jobs::record_and_claim(&mut batches, fence, &finished, 0, None, now_ms(), ttl).await?;
                summary.add(rec);
                return Ok(LeaseEnd::Shutdown);
            }
            _ = heartbeat.tick() => {
                let renewal = lease::renew(pool, &fence.gpu, &fence.owner, fence.epoch, ttl, now_ms()).await?;
                if !renewal.held {
                    in_flight.abort_all();
                    return Ok(LeaseEnd::LeaseLost);
                }
                if renewal.waiters > 0 {
                    start_yielding(&mut yielding, cfg, in_flight.len());
                }
                let state = if yielding.is_some() { "yielding" } else if in_flight.is_empty() { "idle" } else { "running" };
                jobs::set_worker_state(pool, &fence.owner, state, now_ms(), false).await?;
            }
            Some(joined) = in_flight.requests.next(), if !in_flight.is_empty() => {
                let mut next = Some(joined);
                while let Some(joined) = next {
                    if let Some(r) = in_flight.settle(joined) {
                        if let Some(timed_out) = r.server_trouble {
                            engine.server_failed(timed_out).await;
                        }
                        match &r.finished.outcome {
                            Outcome::Requeue { .. } => {
                                tracing::warn!("pausing claims for {:.1} s after a server failure", backoff.as_secs_f64());
                                paused_until = Some(Instant::now() + backoff);
                                backoff = (backoff * 2).min(cfg.max_backoff);
                            }
                            Outcome::Done { .. } => backoff = cfg.transient_backoff,
                            _ => {}
                        }
                        finished.push(r.finished);
                        if let Some(message) = r.fatal {
                            finished.extend(in_flight.abort_all());
                            let (rec, _) = jobs::record_and_claim(&mut batches, fence, &finished, 0, None, now_ms(), ttl).await?;
                            summary.add(rec);
                            return Err(Error::ServerRefused(message));
                        }
                    }
                    next = in_flight.requests.next().now_or_never().flatten();
                }
            }
            _ = sleep_until(yielding.unwrap_or_else(Instant::now)), if yielding.is_some() && !in_flight.is_empty() => {
                tracing::warn!("--grace is over: {} frame(s) in flight go back to the queue for the gpu-lock command", in_flight.len());
                finished.extend(in_flight.abort_all());
            }
            _ = sleep_until(paused_until.unwrap_or_else(Instant::now)), if paused => {}
            changed = watch.wait_for_change(idle_wake.unwrap_or_default()), if idle_wake.is_some() => { changed?; }
        }
    }
}

/// A gpu-lock command waits: claim nothing more and let the frames in
/// flight finish within `--grace` (the deadline is set once).
fn start_yielding(yielding: &mut Option<Instant>, cfg: &WorkerConfig, in_flight: usize) {
    if yielding.is_none() {
        tracing::info!(
            "a gpu-lock command waits for the GPU; claiming nothing more, yielding once {in_flight} frame(s) in flight finish"
        );
        *yielding = Some(Instant::now() + cfg.grace);
    }
}

async fn next_wake(db: &Db, cfg: &WorkerConfig) -> Result<Duration> {
    let now = now_ms();
    let next = jobs::next_run_after(db.pool(), cfg.film, now).await?;
    let ms = next.map_or(1000, |t| (t - now).clamp(1, 1000));
    Ok(Duration::from_millis(ms as u64))
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
    let result = describer.describe(&job.path).await;
    let finished_at = now_ms();
    let mut fatal = None;
    let server_trouble = match &result {
        Err(DescribeError::Transient { kind, .. }) => Some(*kind == TransientKind::Timeout),
        _ => None,
    };
    let outcome = match result {
        Ok(d) => Outcome::Done {
            description: d.description,
            model: describer.model().to_string(),
            model_sha256: None,
            prompt_version: PROMPT_VERSION,
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
                    fatal = Some(error);
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

/// Notices commits by other processes without querying the jobs table:
/// `PRAGMA data_version` on one held connection changes when another
/// connection commits.
struct DataVersion {
    conn: sqlx::pool::PoolConnection<sqlx::Sqlite>,
    last: i64,
}

impl DataVersion {
    async fn new(db: &Db) -> Result<DataVersion> {
        let mut conn = db.pool().acquire().await?;
        let last = crate::db::data_version(&mut conn).await?;
        Ok(DataVersion { conn, last })
    }

    /// Returns when the database changed or after `at_most`.
    async fn wait_for_change(&mut self, at_most: Duration) -> Result<()> {
        tracing::trace!("idle: waiting up to {at_most:?} for another connection's commit");
        let deadline = Instant::now() + at_most;
        while Instant::now() < deadline {
            sleep(Duration::from_millis(50).min(at_most)).await;
            let v = crate::db::data_version(&mut self.conn).await?;
            if v != self.last {
                self.last = v;
                tracing::debug!("another connection committed; looking for work");
                return Ok(());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Panics;

    impl Describer for Panics {
        fn describe<'a>(
            &'a self,
            path: &'a str,
        ) -> Pin<Box<dyn Future<Output = std::result::Result<Described, DescribeError>> + Send + 'a>>
        {
            Box::pin(async move { panic!("describer bug on {path}") })
        }
        fn model(&self) -> &str {
            "panics"
        }
    }

    fn job(id: i64) -> ClaimedJob {
        ClaimedJob {
            job_id: id,
            path: format!("/frames/{id}.png"),
            attempts: 0,
            transient_failures: 0,
            max_attempts: 3,
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
