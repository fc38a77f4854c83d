//! Runs a parsed command: opens the database, calls into the library,
//! prints results (data on stdout, logs on stderr).

use std::io::Write;

use anyhow::Context;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cli::{
    CancelArgs, Cli, Command, EnqueueArgs, GpuArgs, GpuLockArgs, ResultFormat, ResultState,
    ResultsArgs, RetryArgs, RunArgs, SearchArgs, StatusArgs, WorkerArgs, WorkerCore,
};
use crate::db::lease::{self, Acquire, Holder, Purpose};
use crate::db::{self, Db, queue, results, status};
use crate::engine::{Attached, Engine, Supervised, SupervisorConfig};
use crate::error::Error;
use crate::gpu::{GpuChoice, Nvml, ResolvedGpu, VramProbe};
use crate::ingest::{self, EnqueueOptions, film, frames};
use crate::server::{self, ServerConfig};
use crate::vision::VisionClient;
use crate::worker::{self, HttpDescriber, WorkerConfig};

/// Runs one command to completion and returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    if let Command::Completions(args) = &cli.command {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(args.shell, &mut cmd, "cinecut", &mut std::io::stdout());
        return Ok(0);
    }
    // Long-running commands stop cleanly on SIGINT/SIGTERM from here on,
    // also while the database opens; they wait out other connections'
    // write locks, while short commands give up after --lock-wait.
    let long_running = matches!(
        cli.command,
        Command::Worker(_) | Command::Run(_) | Command::GpuLock(_)
    );
    let shutdown = if long_running {
        shutdown_token()
    } else {
        CancellationToken::new()
    };
    db::set_lock_wait((!long_running).then_some(cli.lock_wait));
    let path = cli.db.clone();
    let explain = |e: anyhow::Error| explain_database_error(e, &path, cli.lock_wait);
    let db = tokio::select! {
        biased;
        _ = shutdown.cancelled() => return Ok(130),
        db = Db::open(&cli.db, cli.durability) => db
            .with_context(|| format!("opening database {}", cli.db.display()))
            .map_err(explain)?,
    };
    let result = match cli.command {
        Command::Enqueue(args) => enqueue(&db, args).await.map(|()| 0),
        Command::Status(args) => show_status(&db, args).await.map(|()| 0),
        Command::Retry(args) => retry(&db, args).await.map(|()| 0),
        Command::Cancel(args) => cancel(&db, args).await.map(|()| 0),
        Command::Worker(args) => run_worker(&db, *args, shutdown).await.map(|()| 0),
        Command::Run(args) => run_all(&db, *args, shutdown).await,
        Command::GpuLock(args) => gpu_lock(&db, args, shutdown).await,
        Command::Gpu(args) => show_gpus(&db, args).await.map(|()| 0),
        Command::Results(args) => export_results(&db, args).await.map(|()| 0),
        Command::Search(args) => search(&db, args).await.map(|()| 0),
        Command::Completions(_) => unreachable!("handled before the database opens"),
    };
    db.close().await;
    result.map_err(explain)
}

/// A database failure (locked, disk full, read-only, corrupt) as the error
/// a person can act on, naming the file; anything else as it is.
fn explain_database_error(
    err: anyhow::Error,
    path: &std::path::Path,
    lock_wait: Duration,
) -> anyhow::Error {
    let explained = err.chain().find_map(|cause| {
        let sqlx_err = match cause.downcast_ref::<Error>() {
            Some(Error::Sqlx(e)) => Some(e),
            _ => cause.downcast_ref::<sqlx::Error>(),
        }?;
        Error::explain_database(sqlx_err, path, lock_wait.as_secs())
    });
    match explained {
        Some(e) => e.into(),
        None => err,
    }
}

/// One token for the whole process, cancelled by SIGINT or SIGTERM.
/// The handlers are installed before this returns, so a signal that comes
/// at once is a clean shutdown, never the default action.
pub fn shutdown_token() -> CancellationToken {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let t = token.clone();
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        }
        t.cancel();
    });
    token
}

async fn run_worker(db: &Db, args: WorkerArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let film = film_filter(db, &args.film).await?;
    let (cfg, engine) = worker_setup(args.core, film)?;
    let started = std::time::Instant::now();
    let s = worker::run(db, &cfg, engine, shutdown).await?;
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        "worker done: {} described, {} failed, {} retried, {} requeued in {secs:.1} s ({:.2} frames/s)",
        s.done,
        s.failed,
        s.retried,
        s.requeued,
        s.done as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// Enqueue, then a worker until the queue is empty, with one progress display.
async fn run_all(db: &Db, args: RunArgs, shutdown: CancellationToken) -> anyhow::Result<u8> {
    let started = std::time::Instant::now();
    // Interrupted while enqueuing: each chunk is a transaction, so what is
    // in is whole; running the same command again carries on.
    let enqueued = tokio::select! {
        biased;
        _ = shutdown.cancelled() => return Ok(130),
        r = enqueue(db, args.enqueue) => r,
    };
    if let Err(e) = &enqueued {
        tracing::error!("{e:#}; describing what was enqueued");
    }
    let mut core = args.worker;
    core.until_empty = true;
    let (cfg, engine) = worker_setup(core, None)?;
    let before = totals(&status::films(db.pool(), None).await?);
    let progress = tokio::spawn(show_progress(db.clone(), before.done));
    let result = worker::run(db, &cfg, engine, shutdown).await;
    progress.abort();
    let films = status::films(db.pool(), None).await?;
    let t = totals(&films);
    let secs = started.elapsed().as_secs_f64();
    let described = t.done - before.done;
    println!(
        "described {described} frame(s) in {secs:.1} s ({:.2} frames/s); {} done, {} failed, {} still queued of {}",
        described as f64 / secs.max(1e-9),
        t.done,
        t.failed,
        t.queued,
        t.total
    );
    for f in films.iter().filter(|f| f.failed > 0) {
        for r in &f.top_failures {
            println!(
                "  {:?}: {} failed: {}",
                f.title,
                r.count,
                truncate(&r.reason, 120)
            );
        }
    }
    println!("results: {}", db.path().display());
    println!(
        "  sqlite3 {:?} \"SELECT film, pts_ms, mood, visual_content FROM frame_descriptions ORDER BY film, frame_index LIMIT 20\"",
        db.path().display().to_string()
    );
    result?;
    enqueued.map(|()| 0)
}

async fn show_progress(db: Db, done_before: i64) {
    let started = std::time::Instant::now();
    let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} described  {msg}")
                .expect("template")
                .progress_chars("=> "),
        );
        b
    });
    let mut last_log = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(films) = status::films(db.pool(), None).await else {
            continue;
        };
        let t = totals(&films);
        let rate = (t.done - done_before) as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let left = t.queued + t.running;
        let eta = if rate > 0.0 {
            format!("{:.0} s", left as f64 / rate)
        } else {
            "?".into()
        };
        let msg = format!("{rate:.1} frames/s, ETA {eta}, {} failed", t.failed);
        match &bar {
            Some(b) => {
                b.set_length(t.total as u64);
                b.set_position(t.done as u64);
                b.set_message(msg);
            }
            None if last_log.elapsed().as_secs() >= 5 => {
                tracing::info!("{} of {} described, {msg}", t.done, t.total);
                last_log = std::time::Instant::now();
            }
            None => {}
        }
    }
}

fn worker_setup(
    args: WorkerCore,
    film: Option<i64>,
) -> anyhow::Result<(WorkerConfig, Box<dyn Engine>)> {
    if args.lease_ttl < Duration::from_millis(300) {
        anyhow::bail!(
            "--lease-ttl {} is too short: it is renewed every third of it; give at least 300ms",
            humantime::format_duration(args.lease_ttl)
        );
    }
    let probe: Arc<dyn VramProbe> = Arc::new(Nvml::default());
    let gpu = resolve_gpu(probe.as_ref(), args.server.gpu, args.gpu_name.clone());
    let cfg = WorkerConfig {
        gpu: gpu.lease.clone(),
        film,
        parallel: usize::from(args.parallel),
        until_empty: args.until_empty,
        no_wait: args.no_wait,
        lease_ttl: args.lease_ttl,
        grace: args.grace,
        poison_after: args.poison_after,
        retry_backoff: args.retry_backoff,
        idle_unload: args.server.idle_unload,
        ..WorkerConfig::default()
    };
    let engine: Box<dyn Engine> = match (&args.server_url, &args.server.model, &args.server.mmproj)
    {
        (Some(url), _, _) => Box::new(Attached(Arc::new(HttpDescriber {
            client: VisionClient::new(url, args.api_key, args.max_tokens, args.request_timeout),
            model: args.model_name.unwrap_or_else(|| "llama-server".into()),
        }))),
        (None, Some(model), Some(mmproj)) => {
            let s = &args.server;
            let bin = server::find_binary(s.server_bin.as_deref())?;
            let model_name = args.model_name.unwrap_or_else(|| {
                model
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "model".into())
            });
            Box::new(Supervised::new(
                SupervisorConfig {
                    server: ServerConfig {
                        bin,
                        model: model.clone(),
                        mmproj: mmproj.clone(),
                        ctx_size: s.ctx_size,
                        gpu_layers: s.gpu_layers.clone(),
                        parallel: args.parallel,
                        extra_args: s.server_args.clone(),
                        log_file: s.server_log.clone(),
                        load_timeout: s.load_timeout,
                        cuda_visible_devices: gpu.cuda_visible_devices,
                    },
                    model_name,
                    max_tokens: args.max_tokens,
                    request_timeout: args.request_timeout,
                    vram_check: s.vram_check,
                    nvml_index: gpu.nvml_index,
                    vram_min_mib: s.vram_min_mib,
                    vram_wait: s.vram_wait,
                    crash_budget: s.crash_budget as usize,
                    crash_window: s.crash_window,
                },
                probe,
            ))
        }
        _ => unreachable!("clap requires --server-url or --model with --mmproj"),
    };
    Ok((cfg, engine))
}

/// The GPU a command means, named as every other command names it.
fn resolve_gpu(probe: &dyn VramProbe, index: Option<u32>, name: Option<String>) -> ResolvedGpu {
    let inherited = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let gpu = crate::gpu::resolve(probe, &GpuChoice { index, name }, inherited.as_deref());
    tracing::debug!(lease = %gpu.lease, nvml_index = ?gpu.nvml_index, "GPU resolved");
    gpu
}

async fn film_filter(db: &Db, film: &Option<String>) -> anyhow::Result<Option<i64>> {
    Ok(match film {
        Some(title) => Some(queue::film_id(db.pool(), title).await?),
        None => None,
    })
}

/// `hh:mm:ss.mmm`.
pub fn timestamp(ms: Option<i64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) => format!(
            "{:02}:{:02}:{:02}.{:03}",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        ),
    }
}

async fn export_results(db: &Db, args: ResultsArgs) -> anyhow::Result<()> {
    let film = film_filter(db, &args.film).await?;
    let films = results::film_ids(db.pool(), film).await?.into_iter();
    let mut rows = Pages {
        db,
        films,
        film: None,
        state: args.state,
        after: -1,
        page: Vec::new().into_iter(),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match args.format {
        ResultFormat::Jsonl => {
            while let Some(row) = rows.next().await? {
                serde_json::to_writer(&mut out, &row)?;
                writeln!(out)?;
            }
        }
        ResultFormat::Csv => {
            let mut w = csv::Writer::from_writer(out);
            while let Some(row) = rows.next().await? {
                w.serialize(row)?;
            }
            w.flush()?;
        }
        ResultFormat::Table => {
            let width: usize = std::env::var("COLUMNS")
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(120)
                .max(60);
            // film, time and index are fixed; the rest share what is left.
            let rest = width.saturating_sub(20 + 13 + 7 + 6);
            let text = (rest / 4).max(8);
            let failed = args.state == ResultState::Failed;
            if failed {
                writeln!(
                    out,
                    "{:<20} {:>6} {:<12} {:<w$}",
                    "FILM",
                    "FRAME",
                    "TIME",
                    "ERROR",
                    w = rest
                )?;
            } else {
                writeln!(
                    out,
                    "{:<20} {:>6} {:<12} {:<t$} {:<t$} {:<t$} {:<t$}",
                    "FILM",
                    "FRAME",
                    "TIME",
                    "VISUAL CONTENT",
                    "MOOD",
                    "ACTION",
                    "SETTING",
                    t = text - 1
                )?;
            }
            while let Some(row) = rows.next().await? {
                let r = row;
                let head = format!(
                    "{:<20} {:>6} {:<12}",
                    truncate(&r.film, 20),
                    r.frame_index,
                    timestamp(r.pts_ms)
                );
                if failed {
                    writeln!(
                        out,
                        "{head} {}",
                        truncate(r.error.as_deref().unwrap_or(""), rest)
                    )?;
                } else {
                    let cells: Vec<String> = [&r.visual_content, &r.mood, &r.action, &r.setting]
                        .iter()
                        .map(|c| {
                            format!(
                                "{:<t$}",
                                truncate(&c.as_deref().unwrap_or("").replace('\n', " "), text - 1),
                                t = text - 1
                            )
                        })
                        .collect();
                    writeln!(out, "{head} {}", cells.join(" "))?;
                }
            }
        }
    }
    Ok(())
}

/// Result rows, fetched a page at a time, film after film.
struct Pages<'a> {
    db: &'a Db,
    films: std::vec::IntoIter<i64>,
    /// The film being read, or `None` between films.
    film: Option<i64>,
    state: ResultState,
    after: i64,
    page: std::vec::IntoIter<results::ResultRow>,
}

impl Pages<'_> {
    async fn next(&mut self) -> anyhow::Result<Option<results::ResultRow>> {
        loop {
            if let Some(row) = self.page.next() {
                return Ok(Some(row));
            }
            let film = match self.film {
                Some(f) => f,
                None => match self.films.next() {
                    Some(f) => {
                        self.film = Some(f);
                        self.after = -1;
                        f
                    }
                    None => return Ok(None),
                },
            };
            let page = match self.state {
                ResultState::Done => results::done_page(self.db.pool(), film, self.after).await?,
                ResultState::Failed => {
                    results::failed_page(self.db.pool(), film, self.after).await?
                }
            };
            if (page.len() as i64) < results::PAGE {
                self.film = None;
            }
            if let Some(last) = page.last() {
                self.after = last.frame_index;
            }
            self.page = page.into_iter();
        }
    }
}

/// An FTS5 query that matches all of the user's words, whatever punctuation
/// they typed (each word quoted, so FTS5 syntax cannot break it).
pub fn fts_query(text: &str) -> Option<String> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| format!("\"{w}\""))
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

async fn search(db: &Db, args: SearchArgs) -> anyhow::Result<()> {
    let film = film_filter(db, &args.film).await?;
    let Some(query) = fts_query(&args.query) else {
        anyhow::bail!("the search has no words; give some, e.g. cinecut search \"rainy night\"");
    };
    let hits = results::search(db.pool(), &query, film, args.limit).await?;
    let words: Vec<String> = args
        .query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let mut out = std::io::stdout().lock();
    for h in &hits {
        let fields = [
            ("visual_content", &h.visual_content),
            ("mood", &h.mood),
            ("action", &h.action),
            ("setting", &h.setting),
        ];
        let (name, text) = fields
            .iter()
            .find(|(_, t)| {
                let t = t.to_lowercase();
                words.iter().any(|w| t.contains(w.as_str()))
            })
            .unwrap_or(&fields[0]);
        if args.json {
            serde_json::to_writer(&mut out, &serde_json::json!({ "hit": h, "field": name }))?;
            writeln!(out)?;
        } else {
            writeln!(
                out,
                "{}  {}  {}  {name}: {}",
                h.film,
                timestamp(h.pts_ms),
                h.path,
                truncate(text, 200)
            )?;
        }
    }
    if hits.is_empty() {
        tracing::info!("no description matches {:?}", args.query);
    }
    Ok(())
}

/// Prints every GPU NVML sees (index, UUID, memory, processes) with its
/// lease (the name a worker and gpu-lock use for it) and the lease's holder,
/// then leases held under other names.
async fn show_gpus(db: &Db, args: GpuArgs) -> anyhow::Result<()> {
    let probe = Nvml::default();
    let leases = status::lease_holders(db.pool()).await?;
    let devices: Result<Vec<_>, _> = probe
        .device_count()
        .and_then(|n| (0..n).map(|i| probe.probe(i)).collect());
    let holder_of = |lease: &str| leases.iter().find(|l| l.gpu == lease);
    let others: Vec<_> = leases
        .iter()
        .filter(|l| {
            devices
                .as_ref()
                .map_or(true, |list| list.iter().all(|d| d.uuid != l.gpu))
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if args.json {
        let (list, error) = match &devices {
            Ok(list) => (
                Some(
                    list.iter()
                        .map(|d| {
                            serde_json::json!({
                                "index": d.index, "uuid": d.uuid, "name": d.name,
                                "free_mib": d.free_mib, "total_mib": d.total_mib,
                                "processes": d.processes, "lease": d.uuid,
                                "holder": holder_of(&d.uuid),
                            })
                        })
                        .collect::<Vec<_>>(),
                ),
                None,
            ),
            Err(e) => (None, Some(e.to_string())),
        };
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({ "devices": list, "error": error, "gpu_leases": leases }),
        )?;
        writeln!(out)?;
    } else {
        match &devices {
            Ok(list) if list.is_empty() => writeln!(out, "NVML found no GPU")?,
            Ok(list) => {
                for d in list {
                    writeln!(
                        out,
                        "GPU {} {} ({}): {} MiB free of {} MiB",
                        d.index, d.name, d.uuid, d.free_mib, d.total_mib
                    )?;
                    let holder = match holder_of(&d.uuid) {
                        Some(l) => describe_lease(l),
                        None => "free".into(),
                    };
                    writeln!(out, "    lease {}: {holder}", d.uuid)?;
                    if !d.processes.is_empty() {
                        writeln!(out, "    processes: {}", crate::gpu::describe_holders(d))?;
                    }
                }
            }
            Err(e) => writeln!(
                out,
                "{e}; llama-server would run on CPU (--vram-check auto); leases are named gpu<INDEX>"
            )?,
        }
        for l in &others {
            writeln!(out, "lease {}: {}", l.gpu, describe_lease(l))?;
        }
        if leases.is_empty() {
            writeln!(out, "no GPU lease is held")?;
        }
    }
    devices.map(|_| ()).map_err(|e| anyhow::anyhow!("{e}"))
}

fn describe_lease(l: &status::LeaseHolder) -> String {
    format!(
        "held by {} ({}, pid {}, host {}, epoch {})",
        l.holder,
        l.purpose.as_deref().unwrap_or("?"),
        l.holder_pid.map_or_else(|| "?".into(), |p| p.to_string()),
        l.host.as_deref().unwrap_or("?"),
        l.epoch
    )
}

/// Runs a command under a GPU lease and returns its exit code.
async fn gpu_lock(db: &Db, args: GpuLockArgs, shutdown: CancellationToken) -> anyhow::Result<u8> {
    let pool = db.pool();
    let me = Holder::this_process(Purpose::GpuLock);
    let ttl = args.lease_ttl.as_millis() as i64;
    let started = tokio::time::Instant::now();
    let gpu = resolve_gpu(&Nvml::default(), args.gpu, args.gpu_name.clone()).lease;
    let mut told = false;
    let epoch = loop {
        lease::wait_for(pool, &gpu, &me, db::now_ms()).await?;
        match lease::acquire(pool, &gpu, &me, ttl, db::now_ms()).await? {
            Acquire::Acquired { epoch, .. } => break epoch,
            Acquire::Held { holder, .. } if !told => {
                tracing::info!("GPU {gpu} is held by {holder}; waiting for it to yield");
                told = true;
            }
            _ => {}
        }
        if let Some(limit) = args.timeout
            && started.elapsed() >= limit
        {
            lease::stop_waiting(pool, &me).await?;
            return Err(Error::GpuLockTimeout {
                gpu,
                waited_s: limit.as_secs(),
            }
            .into());
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => { lease::stop_waiting(pool, &me).await?; return Ok(130); }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    };
    lease::stop_waiting(pool, &me).await?;
    tracing::info!(gpu = %gpu, epoch, "holding the GPU lease; running the command");
    let program = args.command[0].clone();
    let mut child = tokio::process::Command::new(&program)
        .args(&args.command[1..])
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| Error::Spawn {
            program: program.to_string_lossy().into_owned(),
            source,
        });
    let code = match &mut child {
        Err(_) => None,
        Ok(child) => {
            let mut beat = tokio::time::interval(args.lease_ttl / 3);
            loop {
                tokio::select! {
                    status = child.wait() => break Some(status?),
                    _ = beat.tick() => {
                        lease::renew(pool, &gpu, &me.id, epoch, ttl, db::now_ms()).await?;
                    }
                }
            }
        }
    };
    lease::release(pool, &gpu, &me.id, epoch, db::now_ms()).await?;
    let status = match code {
        Some(status) => status,
        None => return Err(child.expect_err("spawn failed").into()),
    };
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(1),
        _ => 1,
    })
}

async fn enqueue(db: &Db, args: EnqueueArgs) -> anyhow::Result<()> {
    if args.inputs.is_empty() && args.manifest.is_none() {
        return Err(Error::NoInput.into());
    }
    let (videos, inputs): (Vec<String>, Vec<String>) = args
        .inputs
        .iter()
        .cloned()
        .partition(|i| film::looks_like_video(std::path::Path::new(i)));
    let mut failed_videos = 0;
    if !videos.is_empty() {
        let frames_dir = args.frames_dir.clone().unwrap_or_else(|| {
            let stem = db
                .path()
                .file_stem()
                .map_or_else(|| "cinecut".into(), |s| s.to_string_lossy().into_owned());
            db.path().with_file_name(format!("{stem}-frames"))
        });
        let opts = film::FilmOptions {
            select: args.select,
            scene_threshold: args.scene_threshold,
            max_gap_s: args.max_gap,
            every_s: args.every,
            max_side: args.max_side,
            frames_dir,
            replace: args.replace,
            title: args.film.clone(),
            priority: args.priority,
            max_attempts: args.max_attempts,
            progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        };
        for video in &videos {
            match film::enqueue_video(db, std::path::Path::new(video), &opts).await {
                Ok(r) => {
                    if args.json {
                        println!("{}", serde_json::to_string(&r)?);
                    } else {
                        println!(
                            "film {:?}: {} new, {} already queued ({:.1} s)",
                            r.title, r.new, r.already, r.seconds
                        );
                    }
                }
                Err(e) => {
                    tracing::error!("{e}");
                    failed_videos += 1;
                }
            }
        }
        if inputs.is_empty() && args.manifest.is_none() {
            if failed_videos > 0 {
                anyhow::bail!(
                    "{failed_videos} of {} video(s) failed (see above)",
                    videos.len()
                );
            }
            return Ok(());
        }
    }
    let (sources, rejected) =
        frames::plan_sources(&inputs, args.manifest.as_deref(), args.film.as_deref());
    let opts = EnqueueOptions {
        strict: args.strict,
        priority: args.priority,
        max_attempts: args.max_attempts,
        chunk_size: args.chunk_size as usize,
    };
    let summary = ingest::enqueue(db, sources, rejected, &opts).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &summary)?;
        writeln!(out)?;
    } else {
        for film in &summary.films {
            writeln!(
                out,
                "film {:?}: {} new, {} already queued",
                film.title, film.new, film.already
            )?;
        }
        if summary.films.len() > 1 {
            writeln!(
                out,
                "total: {} new, {} already queued",
                summary.new, summary.already
            )?;
        }
    }
    for r in &summary.rejected {
        tracing::error!("rejected {}: {}", r.path, r.reason);
    }
    if !summary.rejected.is_empty() {
        return Err(Error::FramesRejected {
            rejected: summary.rejected.len(),
            enqueued_anyway: !args.strict,
        }
        .into());
    }
    if failed_videos > 0 {
        anyhow::bail!(
            "{failed_videos} of {} video(s) failed (see above)",
            videos.len()
        );
    }
    if summary.new > 0 {
        tracing::info!(
            "enqueued {} frames in {:.2} s ({:.0} frames/s)",
            summary.new,
            summary.seconds,
            summary.new as f64 / summary.seconds.max(1e-9)
        );
    }
    Ok(())
}

async fn show_status(db: &Db, args: StatusArgs) -> anyhow::Result<()> {
    let only = match &args.film {
        Some(title) => Some(queue::film_id(db.pool(), title).await?),
        None => None,
    };
    let films = status::films(db.pool(), only).await?;
    let leases = status::lease_holders(db.pool()).await?;
    let workers = status::workers(db.pool(), db::now_ms() - 3_600_000).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let totals = totals(&films);
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({ "films": films, "totals": totals, "gpu_leases": leases, "workers": workers }),
        )?;
        writeln!(out)?;
        return Ok(());
    }
    let now = db::now_ms();
    writeln!(
        out,
        "{:<28} {:>9} {:>9} {:>8} {:>9} {:>7} {:>9} {:>6}  OLDEST QUEUED",
        "FILM", "TOTAL", "QUEUED", "RUNNING", "DONE", "FAILED", "CANCELLED", "DONE%"
    )?;
    for f in &films {
        writeln!(
            out,
            "{:<28} {:>9} {:>9} {:>8} {:>9} {:>7} {:>9} {:>6.1}  {}",
            truncate(&f.title, 28),
            f.total,
            f.queued,
            f.running,
            f.done,
            f.failed,
            f.cancelled,
            percent(f.done, f.total),
            f.oldest_queued_at
                .map_or_else(|| "-".to_string(), |t| format!("{} ago", ago(now - t)))
        )?;
        for reason in &f.top_failures {
            writeln!(
                out,
                "    {:>6} failed: {}",
                reason.count,
                truncate(&reason.reason, 100)
            )?;
        }
    }
    let t = totals(&films);
    writeln!(
        out,
        "{:<28} {:>9} {:>9} {:>8} {:>9} {:>7} {:>9} {:>6.1}",
        "TOTAL",
        t.total,
        t.queued,
        t.running,
        t.done,
        t.failed,
        t.cancelled,
        percent(t.done, t.total)
    )?;
    if leases.is_empty() {
        writeln!(out, "GPU leases: none held")?;
    }
    for l in &leases {
        writeln!(out, "GPU {}: {}", l.gpu, describe_lease(l))?;
    }
    for w in &workers {
        writeln!(
            out,
            "worker {} pid {} on {} gpu {}: {} (beat {} ago) done {} failed {} retried {} requeued {} server starts {} restarts {}",
            w.id,
            w.pid,
            w.host,
            w.gpu,
            w.state,
            ago(now - w.heartbeat_at),
            w.jobs_done,
            w.jobs_failed,
            w.jobs_retried,
            w.jobs_requeued,
            w.server_starts,
            w.server_restarts
        )?;
    }
    Ok(())
}

fn totals(films: &[status::FilmStatus]) -> status::FilmStatus {
    films.iter().fold(
        status::FilmStatus {
            title: "TOTAL".into(),
            ..Default::default()
        },
        |mut t, f| {
            t.total += f.total;
            t.queued += f.queued;
            t.running += f.running;
            t.done += f.done;
            t.failed += f.failed;
            t.cancelled += f.cancelled;
            t
        },
    )
}

fn percent(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

async fn retry(db: &Db, args: RetryArgs) -> anyhow::Result<()> {
    let film = match &args.film {
        Some(title) => Some(queue::film_id(db.pool(), title).await?),
        None => None,
    };
    let n = queue::retry_failed(db.pool(), film).await?;
    println!("requeued {n} failed job(s)");
    Ok(())
}

async fn cancel(db: &Db, args: CancelArgs) -> anyhow::Result<()> {
    let film = queue::film_id(db.pool(), &args.film).await?;
    let n = queue::cancel_queued(db.pool(), film).await?;
    println!("cancelled {n} queued job(s) of film {:?}", args.film);
    Ok(())
}
