//! What the worker describes frames with, and its lifecycle around the GPU
//! lease: [`Attached`] to a server someone else runs, or [`Supervised`], a
//! llama-server the worker starts, keeps warm, restarts after a crash and
//! stops whenever it gives up the lease (the server never runs without it).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::db::Store;
use crate::db::jobs::{Fence, ServerEvent};
use crate::db::lease::OrphanServer;
use crate::error::{Error, Result};
use crate::gpu::{self, ProbeError, VramCheck, VramProbe};
use crate::server::{LlamaServer, ServerConfig, ServerError};
use crate::vision::{Describer, HttpDescriber, ServerProps, VisionClient};

/// The worker's model backend.
pub enum Engine {
    Attached(Attached),
    Supervised(Box<Supervised>),
}

impl Engine {
    /// A describer ready for frames; starts (or restarts) the server if needed.
    pub async fn ready(&mut self, db: &Store, fence: &Fence) -> Result<Arc<dyn Describer>> {
        match self {
            Engine::Attached(a) => Ok(a.0.clone()),
            Engine::Supervised(s) => s.ready(db, fence).await,
        }
    }

    /// A request failed the server's way (crash, hang): `timed_out` when it
    /// never answered. A supervised server that hangs is restarted.
    pub async fn server_failed(&mut self, timed_out: bool) {
        if let Engine::Supervised(s) = self {
            s.server_failed(timed_out).await;
        }
    }

    /// Frees the GPU: stops a supervised server (and clears its record in
    /// the lease row under `fence`).
    pub async fn release(&mut self, db: &Store, fence: Option<&Fence>) {
        if let Engine::Supervised(s) = self {
            s.release(db, fence).await;
        }
    }

    /// Whether a server is running now (always, for one someone else runs).
    pub fn is_running(&self) -> bool {
        match self {
            Engine::Attached(_) => true,
            Engine::Supervised(s) => s.server.is_some(),
        }
    }

    /// Whether this engine starts and stops its server.
    pub fn supervises(&self) -> bool {
        matches!(self, Engine::Supervised(_))
    }
}

/// A server someone else runs (or, in benchmarks, any describer).
pub struct Attached(pub Arc<dyn Describer>);

/// Refuses a server that says it cannot read images, or whose slot cannot
/// hold even the answer (`--max-tokens`), before any frame is sent. A slot
/// too small for the image shows on the first request instead (HTTP 400,
/// [`crate::vision::DescribeError::ContextExceeded`]).
pub fn check_props(props: &ServerProps, server: &str, max_tokens: u32) -> Result<()> {
    if props.vision == Some(false) {
        return Err(Error::NoVision {
            server: server.to_string(),
        });
    }
    if let Some(slot) = props.slot_ctx
        && slot <= i64::from(max_tokens)
    {
        return Err(Error::ContextTooSmall {
            detail: format!(
                "{server} gives each slot {slot} tokens, not even --max-tokens {max_tokens} and an image"
            ),
        });
    }
    Ok(())
}

/// Settings of a supervised server beyond its command line.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    pub server: ServerConfig,
    pub model_name: String,
    /// What the pass asks and how answers are checked.
    pub profile: Arc<crate::profile::Profile>,
    /// Longest side of a frame as sent.
    pub max_side: u32,
    pub max_tokens: u32,
    pub request_timeout: Duration,
    pub vram_check: VramCheck,
    /// The leased GPU's NVML index; `None` when NVML does not see it.
    pub nvml_index: Option<u32>,
    /// Free VRAM needed before each server start (see `config::vram_need`).
    pub vram_need_mib: u64,
    pub vram_wait: Duration,
    pub crash_budget: usize,
    pub crash_window: Duration,
}

/// A llama-server this worker runs.
pub struct Supervised {
    cfg: SupervisorConfig,
    probe: Arc<dyn VramProbe>,
    server: Option<LlamaServer>,
    describer: Option<Arc<dyn Describer>>,
    crashes: VecDeque<Instant>,
    restart_backoff: Duration,
    told_cpu: bool,
}

impl Supervised {
    pub fn new(cfg: SupervisorConfig, probe: Arc<dyn VramProbe>) -> Supervised {
        Supervised {
            cfg,
            probe,
            server: None,
            describer: None,
            crashes: VecDeque::new(),
            restart_backoff: Duration::from_secs(1),
            told_cpu: false,
        }
    }

    /// Counts a crash (in memory for the budget, in `workers` for `status`)
    /// and waits out the restart backoff.
    async fn note_crash(&mut self, db: &Store, worker: &str, lines: String) -> Result<()> {
        db.count_server_event(worker, ServerEvent::Crashed).await?;
        let now = Instant::now();
        self.crashes.push_back(now);
        while self
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.cfg.crash_window)
        {
            self.crashes.pop_front();
        }
        if self.crashes.len() >= self.cfg.crash_budget {
            return Err(Error::CrashBudget {
                crashes: self.crashes.len(),
                window_s: self.cfg.crash_window.as_secs(),
                lines,
            });
        }
        tracing::warn!(
            "restarting llama-server in {:.0} s",
            self.restart_backoff.as_secs_f64()
        );
        tokio::time::sleep(self.restart_backoff).await;
        self.restart_backoff = (self.restart_backoff * 2).min(Duration::from_secs(60));
        Ok(())
    }

    async fn preflight(&mut self) -> Result<()> {
        if self.cfg.vram_check == VramCheck::Off {
            tracing::info!(
                "VRAM check off (--vram-check off): starting llama-server without asking NVML"
            );
            return Ok(());
        }
        let Some(index) = self.cfg.nvml_index else {
            // No driver (the usual reason), or NVML does not list this GPU.
            let why = match self.probe.device_count() {
                Err(e) => e,
                Ok(_) => ProbeError::Failed("NVML does not list the leased GPU".into()),
            };
            return self.no_nvml(why);
        };
        let started = Instant::now();
        let mut wait = Duration::from_millis(500);
        loop {
            match self.probe.probe(index) {
                Err(e) => return self.no_nvml(e),
                Ok(mem) if mem.free_mib >= self.cfg.vram_need_mib => {
                    tracing::info!(gpu = %mem.uuid, free_mib = mem.free_mib, need_mib = self.cfg.vram_need_mib, "VRAM check passed");
                    return Ok(());
                }
                Ok(mem) => {
                    if started.elapsed() >= self.cfg.vram_wait {
                        return Err(Error::VramShort {
                            index,
                            free_mib: mem.free_mib,
                            need_mib: self.cfg.vram_need_mib,
                            waited_s: started.elapsed().as_secs(),
                            holders: gpu::describe_holders(&mem),
                        });
                    }
                    tracing::warn!(
                        "GPU {index}: {} MiB free, {} MiB needed; waiting",
                        mem.free_mib,
                        self.cfg.vram_need_mib
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(15));
                }
            }
        }
    }

    /// `--vram-check required` fails without NVML; `auto` runs on CPU.
    fn no_nvml(&mut self, e: ProbeError) -> Result<()> {
        if self.cfg.vram_check == VramCheck::Required {
            return Err(Error::NoGpu(e.to_string()));
        }
        if !self.told_cpu {
            tracing::warn!("{e}; llama-server runs on CPU (--vram-check auto)");
            self.told_cpu = true;
        }
        Ok(())
    }

    async fn start(&mut self, db: &Store, fence: &Fence) -> Result<()> {
        self.preflight().await?;
        // Hashed (or read from the cache) while the server loads.
        let weights = {
            let (db, model, mmproj) = (
                db.clone(),
                self.cfg.server.model.clone(),
                self.cfg.server.mmproj.clone(),
            );
            tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
                crate::weights::identity(db.sqlite(), &model, &mmproj).await
            }))
        };
        let mut server = LlamaServer::spawn(&self.cfg.server)?;
        let record = OrphanServer {
            pid: server.pid,
            started_at: crate::process::start_ticks(server.pid),
            cmdline: Some(server.cmdline.clone()),
        };
        if !db.set_server(fence, Some(&record)).await? {
            server.stop().await;
            return Err(Error::LeaseLost {
                gpu: fence.gpu.clone(),
                during: "llama-server was starting",
            });
        }
        if let Err(e) = server
            .wait_until_healthy(self.cfg.server.load_timeout)
            .await
        {
            server.stop().await;
            db.set_server(fence, None).await.ok();
            return Err(e.into());
        }
        db.count_server_event(&fence.owner, ServerEvent::Started)
            .await?;
        let client = VisionClient::new(
            &server.base_url(),
            Some(server.api_key.clone()),
            self.cfg.max_tokens,
            self.cfg.request_timeout,
        )
        .with_model(Some(self.cfg.model_name.clone()))
        .with_profile(self.cfg.profile.clone());
        self.server = Some(server);
        // What the server says it is: refuse at once, before any frame,
        // one that cannot read images or fit the answer in a slot.
        let props = client.props(self.cfg.request_timeout).await.map_err(|e| {
            tracing::warn!("llama-server's /props: {e}");
        });
        if let Ok(Some(props)) = props {
            tracing::info!(
                slots = ?props.total_slots, slot_ctx = ?props.slot_ctx, vision = ?props.vision,
                "llama-server's /props"
            );
            check_props(&props, "llama-server", self.cfg.max_tokens)?;
        }
        let mut describer = HttpDescriber::new(
            client,
            self.cfg.model_name.clone(),
            usize::from(self.cfg.server.parallel),
            self.cfg.max_side,
        );
        describer.weights_sha256 = match weights.await.expect("hashing task") {
            Ok(sha) => Some(sha),
            Err(e) => {
                tracing::warn!(
                    "cannot hash the model files ({e}); descriptions carry no model_sha256"
                );
                None
            }
        };
        self.describer = Some(Arc::new(describer));
        Ok(())
    }
}

impl Supervised {
    async fn ready(&mut self, db: &Store, fence: &Fence) -> Result<Arc<dyn Describer>> {
        if let Some(server) = &mut self.server
            && let Some(status) = server.exited()
        {
            tracing::error!(
                pid = server.pid,
                "llama-server died ({status}); its last lines:\n{}",
                server.last_lines()
            );
            let lines = server.last_lines();
            self.server = None;
            self.describer = None;
            self.note_crash(db, &fence.owner, lines).await?;
        }
        if self.server.is_some() && self.crashes.is_empty() {
            self.restart_backoff = Duration::from_secs(1);
        }
        while self.server.is_none() {
            match self.start(db, fence).await {
                Ok(()) => {}
                Err(Error::Server(ServerError::KilledDuringLoad { status, lines })) => {
                    tracing::error!(
                        "llama-server was killed while loading ({status}); its last lines:\n{lines}"
                    );
                    self.note_crash(db, &fence.owner, lines).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(self
            .describer
            .clone()
            .expect("describer of a running server"))
    }

    async fn server_failed(&mut self, timed_out: bool) {
        let Some(server) = &mut self.server else {
            return;
        };
        if timed_out && server.exited().is_none() {
            tracing::error!(
                pid = server.pid,
                "llama-server is alive but does not answer within the request deadline; restarting it"
            );
            server.stop().await;
            // Now it has exited: ready() counts the crash and restarts it.
        }
    }

    async fn release(&mut self, db: &Store, fence: Option<&Fence>) {
        if let Some(mut server) = self.server.take() {
            server.stop().await;
            if let Some(f) = fence {
                db.set_server(f, None).await.ok();
            }
        }
        self.describer = None;
    }
}
