//! Flags into the library's configs, checked: a flag that cannot work is an
//! error that names it, never a value quietly changed. The worker's config
//! ([`WorkerConfig`]), the engine it describes with (a server someone else
//! runs, or a supervised llama-server: [`SupervisorConfig`]), and the GPU
//! both are about.

use std::sync::Arc;
use std::time::Duration;

use crate::cli::WorkerCore;
use crate::engine::{Attached, Engine, Supervised, SupervisorConfig, check_props};
use crate::gpu::{GpuChoice, Nvml, ResolvedGpu, VramProbe};
use crate::profile::Profile;
use crate::server::{self, ServerConfig};
use crate::vision::{HttpDescriber, NoopDescriber, ServerProps, VisionClient};
use crate::worker::WorkerConfig;

/// The shortest `--lease-ttl`: it is renewed every third of it.
const MIN_LEASE_TTL: Duration = Duration::from_millis(300);

/// How long asking an attached server about itself may take.
const DISCOVERY_DEADLINE: Duration = Duration::from_secs(5);

/// What a worker describes with, which names the pass it serves.
#[derive(Debug, Clone)]
pub struct Describing {
    /// The model name stored with each description.
    pub model: String,
    pub profile: Arc<Profile>,
}

/// The worker's config and engine for `worker`, `run` and `describe`, and
/// what it describes with (for its pass). An attached server
/// (`--server-url`) is asked about itself first: its model id, its slots,
/// whether it reads images.
pub async fn worker(
    core: WorkerCore,
    film: Option<i64>,
    max_side: u32,
) -> anyhow::Result<(WorkerConfig, Engine, Describing)> {
    check(&core)?;
    let profile = match &core.prompt {
        Some(path) => Profile::load(path).map_err(crate::Error::from)?,
        None => Profile::default(),
    };
    let profile = Arc::new(profile.with_dialogue(core.dialogue_context));
    let probe: Arc<dyn VramProbe> = Arc::new(Nvml::default());
    let gpu = resolve_gpu(probe.as_ref(), core.server.gpu, core.gpu_name.clone());
    let (engine, parallel, model) = match &core.server_url {
        Some(url) => attach(url, &core, max_side, profile.clone()).await?,
        None if core.noop_describer => {
            let noop: Arc<dyn crate::vision::Describer> = Arc::new(NoopDescriber::new());
            let parallel = core.parallel.unwrap_or(16);
            let model = NoopDescriber::MODEL.to_string();
            (Engine::Attached(Attached(noop)), parallel, model)
        }
        None => {
            let parallel = core.parallel.unwrap_or(1);
            let sup = supervisor(&core, gpu.clone(), parallel, max_side, profile.clone()).await?;
            let model = sup.model_name.clone();
            let engine = Engine::Supervised(Box::new(Supervised::new(sup, probe)));
            (engine, parallel, model)
        }
    };
    let cfg = WorkerConfig {
        gpu: gpu.lease.clone(),
        film,
        parallel: usize::from(parallel),
        prefetch: usize::from(core.prefetch.unwrap_or(parallel)),
        until_empty: core.until_empty,
        no_wait: core.no_wait,
        lease_ttl: core.lease_ttl,
        grace: core.grace,
        poison_after: core.poison_after,
        retry_backoff: core.retry_backoff,
        idle_unload: core.server.idle_unload,
        dialogue_context: core.dialogue_context,
        path_map: crate::frame::PathMap::new(core.path_map.clone()),
        ..WorkerConfig::default()
    };
    Ok((cfg, engine, Describing { model, profile }))
}

/// A server someone else runs: its model id (`GET /v1/models`, unless
/// `--model-name`), its slots (`GET /props`, unless `--parallel`), and a
/// refusal when it says it cannot read images. A server that does not
/// answer yet is used with what the flags say.
async fn attach(
    url: &str,
    core: &WorkerCore,
    max_side: u32,
    profile: Arc<Profile>,
) -> anyhow::Result<(Engine, u16, String)> {
    let client = VisionClient::new(
        url,
        core.api_key.clone(),
        core.max_tokens,
        core.request_timeout,
    )
    .with_profile(profile);
    let props = match client.props(DISCOVERY_DEADLINE).await {
        Ok(props) => props.unwrap_or_default(),
        Err(e) => {
            tracing::warn!("cannot ask {url} about itself ({e}); going by the flags");
            ServerProps::default()
        }
    };
    check_props(&props, url, core.max_tokens)?;
    let model = match &core.model_name {
        Some(name) => Some(name.clone()),
        None => client.first_model(DISCOVERY_DEADLINE).await.unwrap_or_else(|e| {
            tracing::warn!("cannot list {url}'s models ({e}); requests name no model (--model-name sets one)");
            None
        }),
    };
    let parallel = core
        .parallel
        .or(props.total_slots.and_then(|n| u16::try_from(n).ok()));
    if core.parallel.is_none()
        && let Some(n) = parallel
    {
        tracing::info!("{url} has {n} slot(s): --parallel {n}");
    }
    let parallel = parallel.unwrap_or(1);
    let name = model.clone().unwrap_or_else(|| "llama-server".into());
    let describer = HttpDescriber::new(
        client.with_model(model),
        name.clone(),
        usize::from(parallel),
        max_side,
    );
    Ok((
        Engine::Attached(Attached(Arc::new(describer))),
        parallel,
        name,
    ))
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

/// What one frame needs at the least: LLaVA-1.5's 576 image tokens (the
/// cheapest common model at `--max-side 1024`) and the prompt, about 128.
const MIN_FRAME_TOKENS: u32 = 576 + 128;

/// The supervised llama-server's settings (`--model` with `--mmproj`, or
/// the files `--hf` names).
async fn supervisor(
    core: &WorkerCore,
    gpu: ResolvedGpu,
    parallel: u16,
    max_side: u32,
    profile: Arc<Profile>,
) -> anyhow::Result<SupervisorConfig> {
    let s = &core.server;
    let bin = server::find_binary(s.server_bin.as_deref())?;
    let (model, mmproj) = match (&s.hf, s.model.clone(), s.mmproj.clone()) {
        (Some(name), _, _) => {
            let files = crate::hf::resolve(&bin, name, s.offline).await?;
            (files.model, files.mmproj)
        }
        (None, Some(model), Some(mmproj)) => (model, mmproj),
        _ => unreachable!("clap requires --server-url, --hf, or --model with --mmproj"),
    };
    let model_name = core.model_name.clone().unwrap_or_else(|| {
        model
            .file_name()
            .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
    });
    let ctx_size = match s.ctx_size {
        Some(total) => {
            let per_slot = total / u32::from(parallel);
            let needs = MIN_FRAME_TOKENS + core.max_tokens;
            if per_slot < needs {
                tracing::warn!(
                    "--ctx-size {total} over --parallel {parallel} leaves {per_slot} tokens a slot; \
                     one frame needs about {needs} or more (image + prompt + --max-tokens)"
                );
            }
            total
        }
        None => s.ctx_per_slot * u32::from(parallel),
    };
    let text = crate::gguf::read(&model);
    let vision = crate::gguf::read(&mmproj);
    let vram_need_mib = match s.vram_need {
        Some(mib) => {
            tracing::info!("VRAM need {mib} MiB (--vram-need)");
            mib
        }
        None => vram_need(&model, &mmproj, text.as_ref().ok(), ctx_size),
    };
    let mut extra_args =
        chat_template_args(text.as_ref().ok(), vision.as_ref().ok(), &s.server_args);
    extra_args.extend(s.server_args.iter().cloned());
    Ok(SupervisorConfig {
        server: ServerConfig {
            bin,
            model,
            mmproj,
            ctx_size,
            gpu_layers: s.gpu_layers.clone(),
            parallel,
            extra_args,
            log_file: s.server_log.clone(),
            load_timeout: s.load_timeout,
            cuda_visible_devices: gpu.cuda_visible_devices,
        },
        model_name,
        profile,
        max_side,
        max_tokens: core.max_tokens,
        request_timeout: core.request_timeout,
        vram_check: s.vram_check.into(),
        nvml_index: gpu.nvml_index,
        vram_need_mib,
        vram_wait: s.vram_wait,
        crash_budget: s.crash_budget as usize,
        crash_window: s.crash_window,
    })
}

/// What `--vram-need` is when not given: VRAM for what will be loaded.
const VRAM_FALLBACK_MIB: u64 = 6144;

/// Free VRAM a server start needs: the model's and mmproj's file sizes
/// (their weights), plus an f16 KV cache of `ctx_tokens` tokens (every
/// slot's context) from the model's GGUF shape, plus 10 % and 512 MiB for
/// compute buffers and the CUDA context; said in the log with its parts.
/// A header that cannot be read gives the fixed 6144 MiB, said why.
fn vram_need(
    model: &std::path::Path,
    mmproj: &std::path::Path,
    text: Option<&crate::gguf::ModelFacts>,
    ctx_tokens: u32,
) -> u64 {
    const MIB: u64 = 1 << 20;
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).ok();
    let kv = text.and_then(|t| t.kv_cache_bytes(u64::from(ctx_tokens)));
    let (Some(weights), Some(projector), Some(kv)) = (size(model), size(mmproj), kv) else {
        tracing::warn!(
            "VRAM need {VRAM_FALLBACK_MIB} MiB: the model's size or shape could not be read from its GGUF header (--vram-need sets the figure)"
        );
        return VRAM_FALLBACK_MIB;
    };
    let loaded = weights + projector + kv;
    let need = (loaded + loaded / 10) / MIB + 512;
    tracing::info!(
        "VRAM need {need} MiB: model {} MiB + mmproj {} MiB + KV cache {} MiB ({ctx_tokens} tokens, f16), + 10 % + 512 MiB (--vram-need overrides)",
        weights / MIB,
        projector / MIB,
        kv / MIB
    );
    need
}

/// The chat template llama-server is told to use when the model's GGUF
/// carries none: `vicuna` for LLaVA (1.5 and 1.6 answer in it; known by
/// the model's name or by an mmproj made with a LLaVA projector), said in
/// the log; nothing when the GGUF has a template, the family is another,
/// or `--server-arg` names a template itself.
fn chat_template_args(
    text: Option<&crate::gguf::ModelFacts>,
    vision: Option<&crate::gguf::ModelFacts>,
    server_args: &[String],
) -> Vec<String> {
    let chosen_by_user = server_args.iter().any(|a| {
        let flag = a.split('=').next().unwrap_or_default();
        matches!(flag, "--chat-template" | "--chat-template-file")
    });
    if let Some(name) = template_name(server_args) {
        // The user's own template by name: built in, so applied only
        // without Jinja (see below), unless they say which.
        let jinja_said = server_args
            .iter()
            .any(|a| a == "--jinja" || a == "--no-jinja");
        if !jinja_said {
            tracing::info!(
                "--chat-template {name} names a template built into llama.cpp, which it applies only without Jinja: adding --no-jinja (--server-arg=--jinja keeps Jinja)"
            );
            return vec!["--no-jinja".into()];
        }
        return Vec::new();
    }
    let Some(text) = text.filter(|t| t.chat_template.is_none()) else {
        return Vec::new();
    };
    if chosen_by_user {
        return Vec::new();
    }
    let llava = text
        .name
        .as_deref()
        .is_some_and(|n| n.to_ascii_lowercase().contains("llava"))
        || vision.is_some_and(|v| v.llava_projector);
    if llava {
        tracing::info!(
            "the model's GGUF carries no chat template; LLaVA answers in vicuna's: starting llama-server with --chat-template vicuna --no-jinja (--server-arg=--chat-template --server-arg=NAME chooses another)"
        );
        // A template given by name is one of llama.cpp's built-in ones, which
        // it applies only without Jinja: with Jinja (its default) the name is
        // read as a template of its own and the image marker is lost.
        return vec![
            "--chat-template".into(),
            "vicuna".into(),
            "--no-jinja".into(),
        ];
    }
    tracing::warn!(
        "the model's GGUF carries no chat template and its family is not one cinecut knows; llama-server uses its default (pass --server-arg=--chat-template --server-arg=NAME if answers are poor)"
    );
    Vec::new()
}

/// The value of `--chat-template` among the server's arguments when it is
/// a template's name, not a template's text (which has `{`).
fn template_name(server_args: &[String]) -> Option<&str> {
    let value = server_args
        .iter()
        .enumerate()
        .find_map(|(i, a)| match a.as_str() {
            "--chat-template" => server_args.get(i + 1).map(String::as_str),
            _ => a.strip_prefix("--chat-template="),
        })?;
    (!value.contains('{')).then_some(value)
}

/// The GPU a command means (`--gpu`, `--gpu-name`, or an inherited
/// `CUDA_VISIBLE_DEVICES`), named as every other command names it.
pub fn resolve_gpu(probe: &dyn VramProbe, index: Option<u32>, name: Option<String>) -> ResolvedGpu {
    let inherited = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let gpu = crate::gpu::resolve(probe, &GpuChoice { index, name }, inherited.as_deref());
    tracing::debug!(lease = %gpu.lease, nvml_index = ?gpu.nvml_index, "GPU resolved");
    gpu
}
