//! Command-line definitions (clap derive) and nothing else.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::db::{Durability, Location};
use crate::gpu::VramCheck;
use crate::ingest::film::SelectMode;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  runtime error (bad input, missing tool, database or server failure)
  2  usage error (unknown flag, bad value)
  130  run, describe or gpu-lock stopped by a signal before the end (run it again to carry on)";

/// Describe every keyframe of a film with a local vision-language model and
/// keep the results in SQLite.
#[derive(Debug, Parser)]
#[command(name = "cinecut", version, after_help = EXIT_CODES, propagate_version = true)]
pub struct Cli {
    /// SQLite database file (made by enqueue, run, worker, describe and
    /// gpu-lock if missing; the read commands need it), or a PostgreSQL URL
    /// (`postgres://user:password@host/db`: many GPU hosts, one queue; every
    /// command runs there, with the same output).
    #[arg(long, global = true, env = "CINECUT_DB", default_value = "cinecut.db", value_parser = db_location)]
    pub db: Location,

    /// SQLite durability: `full` fsyncs every commit (no finished description
    /// is lost on power failure), `normal` is faster.
    #[arg(long, global = true, value_enum, env = "CINECUT_DURABILITY", default_value_t = DurabilityArg::Full)]
    pub durability: DurabilityArg,

    /// How long a short command (enqueue, retry, cancel, status…) waits for
    /// another connection's write lock (a sqlite3 shell or DB Browser in a
    /// transaction) before it gives up; worker, run and gpu-lock wait as
    /// long as it takes, saying so in the log.
    #[arg(long, global = true, env = "CINECUT_LOCK_WAIT", default_value = "2m", value_parser = humantime::parse_duration)]
    pub lock_wait: std::time::Duration,

    /// Log format on stderr. Verbosity follows RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The whole job in one command: enqueue films (or frames), then describe
    /// everything queued with a worker, with one progress display. Re-run with
    /// the same arguments after an interruption to resume.
    Run(Box<RunArgs>),
    /// Enqueue films (their keyframes, extracted by ffmpeg) and frames (image
    /// files, folders, globs, a manifest): one job per frame.
    #[command(after_help = "\
A folder's image files are taken in natural order (frame2 before frame10).
Re-enqueuing frames a film already has adds nothing. Frames that are missing
or unreadable are listed and skipped; the exit code is then 1.")]
    Enqueue(EnqueueArgs),
    /// Describe queued frames: hold the GPU lease, claim, send each frame to
    /// the model, record the answers.
    #[command(after_help = "\
One worker per GPU: a second worker for the same --gpu-name waits for the
lease (or exits with --no-wait). SIGINT/SIGTERM: stop claiming, finish the
frames in flight within --grace, put the rest back, release the lease, exit 0.")]
    Worker(Box<WorkerArgs>),
    /// Describe the frames already in the database again in another pass
    /// (another model or prompt profile), without re-extracting anything;
    /// then work like `run` until that pass is done.
    #[command(after_help = "\
Example: cinecut describe --pass big --model big.gguf --mmproj big-mmproj.gguf
Every answer is kept: compare passes in SQL with the pass_comparison view.")]
    Describe(Box<DescribeArgs>),
    /// Show progress per film, failures, the GPU lease holder and workers.
    Status(StatusArgs),
    /// Stream the results: described frames (or failed ones) as a table, JSON lines or CSV.
    Results(ResultsArgs),
    /// Full-text search over the descriptions, best matches first.
    Search(SearchArgs),
    /// List the passes: model, profile, jobs and mean latency/tokens.
    Passes(PassesArgs),
    /// Write an HTML contact sheet per film: every frame's thumbnail, time
    /// and description, a filter box and a timeline coloured by mood.
    #[command(after_help = "\
Each report is one self-contained file: it opens from disk in any browser,
with no server and no network (thumbnails are inlined). Frames not yet
described or failed are shown with their state or reason.")]
    Report(ReportArgs),
    /// Put failed jobs back in the queue.
    Retry(RetryArgs),
    /// Cancel a film's queued jobs.
    Cancel(CancelArgs),
    /// Show the GPUs (NVML): memory free/total, processes, and lease holders.
    Gpu(GpuArgs),
    /// Run a command while holding a GPU's lease (a running worker yields it).
    #[command(after_help = "\
Example: cinecut gpu-lock -- ffmpeg -hwaccel cuda -i in.mp4 out.mp4
Exits with the command's exit code.")]
    GpuLock(GpuLockArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub core: WorkerCore,

    /// Only this film's frames.
    #[arg(long, value_name = "TITLE")]
    pub film: Option<String>,

    /// The pass to describe frames for (its jobs only). Default: the pass
    /// bound to this model and profile, else the one pass not bound yet
    /// (e.g. `default`, made by `enqueue`), else a new pass named
    /// `<model name>/<profile>`.
    #[arg(long, value_name = "NAME")]
    pub pass: Option<String>,

    /// Frames larger than this (longest side, pixels) are downscaled before
    /// they are sent; frames other than JPEG and PNG are sent as JPEG.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(16..))]
    pub max_side: u32,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    #[command(flatten)]
    pub worker: WorkerCore,

    /// The pass to describe the frames in (created if new). Default: as for
    /// `worker`.
    #[arg(long, value_name = "NAME")]
    pub pass: Option<String>,

    /// Only this film's frames (repeat for several; default: every film).
    #[arg(long, value_name = "TITLE")]
    pub film: Vec<String>,

    /// Tries per frame before it is failed.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i64).range(1..=100))]
    pub max_attempts: i64,

    /// Frames larger than this (longest side, pixels) are downscaled before
    /// they are sent.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(16..))]
    pub max_side: u32,
}

#[derive(Debug, Args)]
pub struct PassesArgs {
    /// Print JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// Worker flags shared by `worker` and `run`.
#[derive(Debug, Args)]
pub struct WorkerCore {
    /// An llama-server (or OpenAI-compatible server) that is already running,
    /// e.g. http://127.0.0.1:8080. Instead of --model/--mmproj.
    #[arg(long, value_name = "URL", env = "CINECUT_SERVER_URL", required_unless_present_any = ["model", "hf", "noop_describer"], conflicts_with_all = ["model", "mmproj", "hf"])]
    pub server_url: Option<String>,

    /// Benchmarks only: every frame answered at once by a fixed answer of
    /// the built-in profile, no model, no server (the queue's own
    /// throughput, in real worker processes).
    #[arg(long, hide = true, conflicts_with_all = ["server_url", "model", "mmproj", "hf", "prompt"])]
    pub noop_describer: bool,

    #[command(flatten)]
    pub server: ServerArgs,

    /// The server's API key (never logged).
    #[arg(long, env = "CINECUT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Model name sent in each request's `model` field and stored with each
    /// description (default: the --model file name; with --server-url, the
    /// first id of the server's /v1/models).
    #[arg(long)]
    pub model_name: Option<String>,

    /// Frames in flight at once, one per server slot (default: 1; with
    /// --server-url, the server's total_slots from /props when it says).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel: Option<u16>,

    /// Frames claimed and prepared (decoded, turned upright, downscaled)
    /// ahead of the server's free slots (default: as many as --parallel).
    /// They count as in flight: on shutdown they get --grace like the rest.
    #[arg(long, value_parser = clap::value_parser!(u16).range(0..=256))]
    pub prefetch: Option<u16>,

    /// Exit 0 once nothing is queued or running (instead of waiting for work).
    #[arg(long)]
    pub until_empty: bool,

    /// Name of the GPU lease to hold (the lock shared with other workers and
    /// gpu-lock). Default: the NVML UUID of the GPU (--gpu, else the first
    /// one CUDA_VISIBLE_DEVICES names, else 0), or `gpu<INDEX>` without NVML.
    #[arg(long, env = "CINECUT_GPU_NAME")]
    pub gpu_name: Option<String>,

    /// Exit with an error instead of waiting when another process holds the GPU.
    #[arg(long)]
    pub no_wait: bool,

    /// Deadline of one request.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub request_timeout: std::time::Duration,

    /// Give the model the dialogue line on screen at each frame's time as
    /// context (films with subtitles); recorded in the pass's profile
    /// (`<profile>+dialogue`) and as prompt_version 2.
    #[arg(long)]
    pub dialogue_context: bool,

    /// Frames the database names under FROM are read under TO on this host
    /// (shared storage mounted elsewhere); repeatable, the longest FROM
    /// that applies wins. The database keeps the paths it has.
    #[arg(long, value_name = "FROM=TO", value_parser = crate::frame::PathMap::parse_pair)]
    pub path_map: Vec<(String, String)>,

    /// A prompt profile (TOML): the system and user text and the answer's
    /// fields with their types (text, enum, tags, integer, boolean); see
    /// examples/. Default: the built-in profile (visual_content, mood,
    /// action, setting).
    #[arg(long, value_name = "FILE")]
    pub prompt: Option<PathBuf>,

    /// Token limit of one answer.
    #[arg(long, default_value_t = 384)]
    pub max_tokens: u32,

    /// On shutdown, how long in-flight frames may take to finish.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub grace: std::time::Duration,

    /// A frame that crashes, hangs or 5xx-es the server this many times is failed as poison.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i64).range(1..))]
    pub poison_after: i64,

    /// GPU and job lease length; renewed every third of it.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease_ttl: std::time::Duration,

    /// First delay before retrying a frame whose answer was invalid (doubles per attempt).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_backoff: std::time::Duration,
}

/// Flags of a llama-server the worker starts and supervises.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The text model GGUF: the worker starts llama-server itself.
    #[arg(long, value_name = "GGUF", requires = "mmproj")]
    pub model: Option<PathBuf>,

    /// The vision projector GGUF that goes with --model.
    #[arg(long, value_name = "GGUF", requires = "model")]
    pub mmproj: Option<PathBuf>,

    /// A model by its Hugging Face name, e.g.
    /// ggml-org/SmolVLM-500M-Instruct-GGUF:Q8_0, instead of --model/--mmproj:
    /// llama.cpp's own downloader (the `llama` binary beside llama-server)
    /// fetches the model and its mmproj into its cache (LLAMA_CACHE, else
    /// HF_HUB_CACHE, else ~/.cache/huggingface/hub) and cinecut loads them.
    #[arg(long, value_name = "USER/REPO[:QUANT]", conflicts_with_all = ["model", "mmproj"], value_parser = hf_name)]
    pub hf: Option<String>,

    /// With --hf: only the cache, no download (a host without internet).
    #[arg(long, requires = "hf")]
    pub offline: bool,

    /// The llama-server binary (else env LLAMA_SERVER, else PATH).
    #[arg(long, value_name = "PATH")]
    pub server_bin: Option<PathBuf>,

    /// Context of each server slot, in tokens: llama-server gets
    /// -c = this × --parallel. One frame needs its image tokens (576 to
    /// 2,880 for common models) + the prompt + --max-tokens.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(64..))]
    pub ctx_per_slot: u32,

    /// The server's whole context (-c), shared by the slots; instead of
    /// --ctx-per-slot.
    #[arg(long, conflicts_with = "ctx_per_slot")]
    pub ctx_size: Option<u32>,

    /// Layers on the GPU (-ngl), e.g. 99 or all.
    #[arg(long)]
    pub gpu_layers: Option<String>,

    /// Extra llama-server argument (repeatable), e.g. --server-arg=--flash-attn.
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub server_args: Vec<String>,

    /// Append the server's output to this file.
    #[arg(long, value_name = "FILE")]
    pub server_log: Option<PathBuf>,

    /// Give up a load after the server printed nothing for this long.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub load_timeout: std::time::Duration,

    /// Stop the server after this long without work (it starts again when work comes).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub idle_unload: std::time::Duration,

    /// The GPU (NVML index, PCI bus order) to lease and run the server on
    /// (sets CUDA_VISIBLE_DEVICES). Default: what an inherited
    /// CUDA_VISIBLE_DEVICES selects (left as it is), else 0.
    #[arg(long, value_name = "INDEX")]
    pub gpu: Option<u32>,

    /// Free VRAM (MiB) needed before each server start. Default: computed
    /// from what will be loaded (model and mmproj sizes, the KV cache of
    /// every slot from the GGUF's shape, 10 % + 512 MiB margin).
    #[arg(long, alias = "vram-min-mib", value_name = "MIB")]
    pub vram_need: Option<u64>,

    /// How long to wait for that much VRAM before failing.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub vram_wait: std::time::Duration,

    /// VRAM check through NVML: `auto` runs on CPU without an NVIDIA driver,
    /// `required` fails without one.
    #[arg(long, value_enum, default_value_t = VramCheckArg::Auto)]
    pub vram_check: VramCheckArg,

    /// Server crashes tolerated within --crash-window before the worker stops.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub crash_budget: u32,

    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub crash_window: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub enqueue: EnqueueArgs,

    #[command(flatten)]
    pub worker: WorkerCore,
}

#[derive(Debug, Args)]
pub struct ResultsArgs {
    /// Only this film.
    #[arg(long, value_name = "TITLE")]
    pub film: Option<String>,

    /// Only this pass (default: every pass; each row names its pass).
    #[arg(long, value_name = "NAME")]
    pub pass: Option<String>,

    /// Described frames, or failed ones with their reasons.
    #[arg(long, value_enum, default_value_t = ResultState::Done)]
    pub state: ResultState,

    /// `table` fits the terminal; `jsonl` and `csv` are for scripts and spreadsheets.
    #[arg(long, value_enum, default_value_t = ResultFormat::Table)]
    pub format: ResultFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResultState {
    Done,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResultFormat {
    Table,
    Jsonl,
    Csv,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Words to find (all of them), e.g. "rainy night chase".
    pub query: String,

    /// Only this film.
    #[arg(long, value_name = "TITLE")]
    pub film: Option<String>,

    /// Only this pass (default: every pass).
    #[arg(long, value_name = "NAME")]
    pub pass: Option<String>,

    /// At most this many matches.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..))]
    pub limit: i64,

    /// Print JSON lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Only this film (repeat for several; default: every film).
    #[arg(long, value_name = "TITLE")]
    pub film: Vec<String>,

    /// Where to write: a file for one film when PATH ends in `.html`, else
    /// a folder (made if missing) that gets `<film title>.html` per film.
    /// Default: the current folder.
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// The pass whose descriptions to show (default: the film's first pass).
    #[arg(long, value_name = "NAME")]
    pub pass: Option<String>,

    /// The field whose value colours the timeline (by its first word): any
    /// field of the pass's profile. Default: `mood` where the profile has
    /// it, else its first `enum` field, else its first field.
    #[arg(long, value_name = "FIELD")]
    pub strip: Option<String>,

    /// Open each report with `xdg-open` once written.
    #[arg(long)]
    pub open: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct GpuArgs {
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GpuLockArgs {
    /// The GPU (NVML index) whose lease to take. Default: what an inherited
    /// CUDA_VISIBLE_DEVICES selects, else 0 — the same GPU a worker takes.
    #[arg(long, value_name = "INDEX")]
    pub gpu: Option<u32>,

    /// The lease name to take instead (as a worker's --gpu-name).
    #[arg(long, env = "CINECUT_GPU_NAME")]
    pub gpu_name: Option<String>,

    /// Give up if the GPU is not free within this long (default: wait forever).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<std::time::Duration>,

    /// Lease length; renewed every third of it.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, hide = true)]
    pub lease_ttl: std::time::Duration,

    /// The command and its arguments (after --).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// Video files, image files, folders of images, or glob patterns (quote them).
    pub inputs: Vec<String>,

    /// A manifest of frames: JSON Lines or CSV with `path` and optional
    /// `frame_index`, `pts_ms`. Relative paths are relative to the manifest.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,

    /// Film title (default: the folder's name, or the manifest's name).
    #[arg(long, value_name = "TITLE")]
    pub film: Option<String>,

    /// Check every frame and video first; enqueue nothing if one fails.
    #[arg(long)]
    pub strict: bool,

    /// Higher priorities are claimed first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i64,

    /// Tries per frame when the model answers badly.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i64).range(1..=100))]
    pub max_attempts: i64,

    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,

    /// Video frame selection: shots between scene cuts (a frame of each, see
    /// --pick), a fixed interval, the stream's key frames, or every frame.
    #[arg(long, value_enum, default_value_t = SelectArg::Scene)]
    pub select: SelectArg,

    /// Scene-change score above which a frame starts a new shot (0–1).
    #[arg(long, default_value_t = 0.3, value_parser = fraction)]
    pub scene_threshold: f64,

    /// Colour score above which a frame starts a new shot (0–255: the mean
    /// change of hue, saturation and value of a small copy, as
    /// PySceneDetect's content score): finds the cuts between shots of like
    /// brightness and other colour that the scene score misses.
    #[arg(long, default_value_t = 27.0, value_parser = colour_score)]
    pub colour_threshold: f64,

    /// In scene mode, at least one frame every this many seconds.
    #[arg(long, default_value_t = 10.0, value_parser = positive_seconds)]
    pub max_gap: f64,

    /// In scene mode, a cut closer than this many seconds to the previous
    /// cut is ignored (a strobe, a muzzle flash, a busy shot); 0 keeps every
    /// cut [default: 0.6].
    #[arg(long, value_parser = seconds)]
    pub min_shot: Option<f64>,

    /// In scene mode, which frame of each shot is taken: the middle (away
    /// from transitions and blur at the cut), the first after the cut, or
    /// the sharpest of a few around the middle [default: middle].
    #[arg(long, value_enum)]
    pub pick: Option<PickArg>,

    /// In scene mode, how many evenly spaced frames a shot longer than
    /// --max-gap gets (default: one for every --max-gap seconds of it).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub per_shot: Option<u32>,

    /// In interval mode, one frame every this many seconds.
    #[arg(long, default_value_t = 5.0, value_parser = positive_seconds)]
    pub every: f64,

    /// Longest side of a frame, in pixels: extracted video frames are
    /// written at most this large, and (with `run`) any frame larger is
    /// downscaled before it is sent.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(16..))]
    pub max_side: u32,

    /// Where extracted frames go (default: a folder beside the database;
    /// on PostgreSQL, `cinecut-frames` in the current folder: point it at
    /// storage every worker host reaches).
    #[arg(long, value_name = "DIR")]
    pub frames_dir: Option<PathBuf>,

    /// The film's dialogue from a subtitle file (SRT, WebVTT, ASS/SSA, or
    /// any text format ffmpeg reads). Default: the film's first text
    /// subtitle stream, if it has one.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["subtitle_stream", "no_subtitles"])]
    pub subtitles: Option<PathBuf>,

    /// The film's dialogue from its subtitle stream N (0: its first).
    #[arg(long, value_name = "N", conflicts_with = "no_subtitles")]
    pub subtitle_stream: Option<u32>,

    /// Read no dialogue.
    #[arg(long)]
    pub no_subtitles: bool,

    /// A frame within this many bits (of a 64-bit difference hash) of the
    /// last distinct frame before it (of its shot, in scene mode) is a
    /// near-duplicate: it is not sent to the model but gets that frame's
    /// description (marked as a copy). Stills (folders, globs, manifests)
    /// are hashed by the worker that claims them.
    #[arg(long, default_value_t = crate::ingest::DEFAULT_DEDUPE_DISTANCE,
          value_parser = clap::value_parser!(u32).range(0..=32))]
    pub dedupe_distance: u32,

    /// Send every frame to the model, near-duplicates too (the worker then
    /// does not hash stills).
    #[arg(long)]
    pub no_dedupe: bool,

    /// Replace the film of a video file that changed (default: a changed file is a new film).
    #[arg(long)]
    pub replace: bool,

    /// The pass to queue the frames for (repeat for several; created if
    /// new). Default: every pass of the database (a pass `default` when it
    /// has none). With `run`: the one pass it describes (default as for
    /// `worker`).
    #[arg(long, value_name = "NAME")]
    pub pass: Vec<String>,

    /// Store each frame's bytes in the database: workers read them from
    /// there, not from the file (hosts that do not share this host's
    /// storage, stills removed after enqueue, a database moved to another
    /// machine). Costs the frames' size in the database (BENCHMARKS.md).
    #[arg(long)]
    pub store_frames: bool,

    /// Frames per write transaction.
    #[arg(long, default_value_t = 20_000, hide = true, value_parser = clap::value_parser!(u32).range(1..))]
    pub chunk_size: u32,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this film.
    #[arg(long, value_name = "TITLE")]
    pub film: Option<String>,

    /// Only this pass (default: every pass, each shown on its own).
    #[arg(long, value_name = "NAME")]
    pub pass: Option<String>,

    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,

    /// Which workers to list: `recent` (running, or gone within the last
    /// day; older ones are counted on one line) or `all`.
    #[arg(long, value_enum, default_value_t = WorkersShown::Recent)]
    pub workers: WorkersShown,
}

/// `status --workers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkersShown {
    Recent,
    All,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Requeue the failed jobs (with fresh attempts).
    #[arg(long, required = true)]
    pub failed: bool,

    /// Only this film's.
    #[arg(long, value_name = "TITLE")]
    pub film: Option<String>,

    /// Only this pass's (default: every pass).
    #[arg(long, value_name = "NAME")]
    pub pass: Option<String>,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The film whose queued jobs to cancel.
    #[arg(long, value_name = "TITLE")]
    pub film: String,

    /// Only this pass's (default: every pass).
    #[arg(long, value_name = "NAME")]
    pub pass: Option<String>,
}

/// Seconds, more than zero (`0.5`, `10`).
fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 => Ok(s),
        _ => Err(format!(
            "{text:?} is not a number of seconds above 0, e.g. 5 or 0.5"
        )),
    }
}

/// A number of seconds, 0 or more.
fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(s),
        _ => Err(format!(
            "{text:?} is not a number of seconds, e.g. 0.6 or 0"
        )),
    }
}

/// A number from 0 to 1.
fn fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("{text:?} is not a number from 0 to 1, e.g. 0.3")),
    }
}

fn hf_name(text: &str) -> Result<String, String> {
    crate::hf::check_name(text)
        .map(|()| text.to_string())
        .map_err(|e| e.to_string())
}

fn colour_score(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if (0.0..=255.0).contains(&x) => Ok(x),
        _ => Err(format!("{text:?} is not a number from 0 to 255, e.g. 27")),
    }
}

// The library's enums, as flags: clap stays out of the library.

/// `--durability`: see [`Durability`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DurabilityArg {
    Full,
    Normal,
}

impl From<DurabilityArg> for Durability {
    fn from(d: DurabilityArg) -> Durability {
        match d {
            DurabilityArg::Full => Durability::Full,
            DurabilityArg::Normal => Durability::Normal,
        }
    }
}

/// `--vram-check`: see [`VramCheck`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VramCheckArg {
    /// Check with NVML; without an NVIDIA driver, run on CPU.
    Auto,
    /// Check with NVML; without an NVIDIA driver, fail.
    Required,
    /// Do not check.
    Off,
}

impl From<VramCheckArg> for VramCheck {
    fn from(v: VramCheckArg) -> VramCheck {
        match v {
            VramCheckArg::Auto => VramCheck::Auto,
            VramCheckArg::Required => VramCheck::Required,
            VramCheckArg::Off => VramCheck::Off,
        }
    }
}

/// `--select`: see [`SelectMode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SelectArg {
    /// Shots between scene cuts, a frame (--pick) of each, more of a long one.
    Scene,
    /// One frame every --every seconds.
    Interval,
    /// The stream's own key frames (fastest: no full decode).
    Keyframes,
    /// Every frame (short clips).
    All,
}

/// `--pick`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PickArg {
    /// The frame at the middle of the shot.
    Middle,
    /// The first frame after the cut.
    First,
    /// The least blurred of 5 frames around the middle.
    Sharpest,
}

impl From<PickArg> for crate::ingest::shots::Pick {
    fn from(p: PickArg) -> Self {
        match p {
            PickArg::Middle => Self::Middle,
            PickArg::First => Self::First,
            PickArg::Sharpest => Self::Sharpest,
        }
    }
}

impl From<SelectArg> for SelectMode {
    fn from(s: SelectArg) -> SelectMode {
        match s {
            SelectArg::Scene => SelectMode::Scene,
            SelectArg::Interval => SelectMode::Interval,
            SelectArg::Keyframes => SelectMode::Keyframes,
            SelectArg::All => SelectMode::All,
        }
    }
}

/// `--db`: a SQLite file's path, or a `postgres://` URL.
fn db_location(s: &str) -> Result<Location, String> {
    Ok(Location::parse(s))
}
