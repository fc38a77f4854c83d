//! Flags into the library's configs, checked: a flag that cannot work is an
//! error that names it, never a value quietly changed. The worker's config
//! ([`WorkerConfig`]), the engine it describes with (a server someone else
//! runs, or a supervised llama-server: [`SupervisorConfig`]), and the GPU
//! both are about.

use std::sync::Arc;
use std::time::Duration;

use crate::cli::WorkerCore;
use crate::engine::{Attached, Engine, Supervised, SupervisorConfig};
use crate::gpu::{GpuChoice, Nvml, ResolvedGpu, VramProbe};
use crate::server::{self, ServerConfig};
use crate::vision::{HttpDescriber, VisionClient};
use crate::worker::WorkerConfig;

/// The shortest `--lease-ttl`: it is renewed every third of it.
const MIN_LEASE_TTL: Duration = Duration::from_millis(300);

/// The worker's config and engine for `worker` and `run`.
pub fn worker(core: WorkerCore, film: Option<i64>) -> anyhow::Result<(WorkerConfig, Engine)> {
    check(&core)?;
    let probe: Arc<dyn VramProbe> = Arc::new(Nvml::default());
    let gpu = resolve_gpu(probe.as_ref(), core.server.gpu, core.gpu_name.clone());
    let cfg = WorkerConfig {
        gpu: gpu.lease.clone(),
        film,
        parallel: usize::from(core.parallel),
        until_empty: core.until_empty,
        no_wait: core.no_wait,
        lease_ttl: core.lease_ttl,
        grace: core.grace,
        poison_after: core.poison_after,
        retry_backoff: core.retry_backoff,
        idle_unload: core.server.idle_unload,
        ..WorkerConfig::default()
    };
    let engine = match &core.server_url {
        Some(url) => Engine::Attached(Attached(Arc::new(HttpDescriber {
            client: VisionClient::new(url, core.api_key, core.max_tokens, core.request_timeout),
            model: core.model_name.unwrap_or_else(|| "llama-server".into()),
        }))),
        None => Engine::Supervised(Box::new(Supervised::new(supervisor(core, gpu)?, probe))),
    };
    Ok((cfg, engine))
}

/// Flags that parse but cannot work together or at all.
fn check(core: &WorkerCore) -> anyhow::Result<()> {
    if core.lease_ttl < MIN_LEASE_TTL {
        anyhow::bail!(
            "--lease-ttl {} is too short: it is renewed every third of it; give at least 300ms",
            humantime::format_duration(core.lease_ttl)
        );
    }
    if core.request_timeout.is_zero() {
        anyhow::bail!("--request-timeout 0s would fail every frame; give e.g. 120s");
    }
    Ok(())
}

/// The supervised llama-server's settings (`--model` with `--mmproj`).
fn supervisor(core: WorkerCore, gpu: ResolvedGpu) -> anyhow::Result<SupervisorConfig> {
    let s = core.server;
    let (Some(model), Some(mmproj)) = (s.model, s.mmproj) else {
        unreachable!("clap requires --server-url or --model with --mmproj")
    };
    let bin = server::find_binary(s.server_bin.as_deref())?;
    let model_name = core.model_name.unwrap_or_else(|| {
        model
            .file_name()
            .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
    });
    Ok(SupervisorConfig {
        server: ServerConfig {
            bin,
            model,
            mmproj,
            ctx_size: s.ctx_size,
            gpu_layers: s.gpu_layers,
            parallel: core.parallel,
            extra_args: s.server_args,
            log_file: s.server_log,
            load_timeout: s.load_timeout,
            cuda_visible_devices: gpu.cuda_visible_devices,
        },
        model_name,
        max_tokens: core.max_tokens,
        request_timeout: core.request_timeout,
        vram_check: s.vram_check.into(),
        nvml_index: gpu.nvml_index,
        vram_min_mib: s.vram_min_mib,
        vram_wait: s.vram_wait,
        crash_budget: s.crash_budget as usize,
        crash_window: s.crash_window,
    })
}

/// The GPU a command means (`--gpu`, `--gpu-name`, or an inherited
/// `CUDA_VISIBLE_DEVICES`), named as every other command names it.
pub fn resolve_gpu(probe: &dyn VramProbe, index: Option<u32>, name: Option<String>) -> ResolvedGpu {
    let inherited = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let gpu = crate::gpu::resolve(probe, &GpuChoice { index, name }, inherited.as_deref());
    tracing::debug!(lease = %gpu.lease, nvml_index = ?gpu.nvml_index, "GPU resolved");
    gpu
}
