//! `cinecut run`: enqueue, then describe until the queue is empty, with one
//! progress display and a closing summary.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::render::{totals, truncate};
use crate::cli::RunArgs;
use crate::db::Store;
use crate::worker;

/// Enqueue, then a worker until the queue is empty, with one progress
/// display. On PostgreSQL, other hosts' workers may share the work: this
/// one runs until the pass has nothing queued or running.
pub async fn run(db: &Store, mut args: RunArgs, shutdown: CancellationToken) -> anyhow::Result<u8> {
    let started = std::time::Instant::now();
    let max_side = args.enqueue.max_side;
    if args.enqueue.pass.len() > 1 {
        anyhow::bail!(
            "run describes one pass, and --pass was given {} times; enqueue for several passes with `cinecut enqueue`",
            args.enqueue.pass.len()
        );
    }
    let mut core = args.worker;
    core.until_empty = true;
    let Some((mut cfg, engine, describing)) =
        super::configure(core, None, max_side, &shutdown).await?
    else {
        return Ok(130);
    };
    let pass = super::worker::serve_pass(
        db,
        args.enqueue.pass.first().map(String::as_str),
        &describing,
    )
    .await?;
    cfg.pass = Some(pass.clone());
    args.enqueue.pass = vec![pass.name.clone()];
    // Interrupted while enqueuing: each chunk is a transaction, so what is
    // in is whole; running the same command again carries on.
    let enqueued = tokio::select! {
        biased;
        _ = shutdown.cancelled() => return Ok(130),
        r = super::enqueue::run(db, args.enqueue) => r,
    };
    if let Err(e) = &enqueued {
        tracing::error!("{e:#}; describing what was enqueued");
    }
    describe_until_done(db, &cfg, engine, shutdown.clone(), pass.id, started).await?;
    enqueued.map(|()| interrupted_or(&shutdown, 0))
}

/// 130 when a signal stopped the command before the end (what was in
/// flight was finished and recorded; the same command carries on), else
/// `code`.
pub fn interrupted_or(shutdown: &CancellationToken, code: u8) -> u8 {
    if shutdown.is_cancelled() { 130 } else { code }
}

/// A worker on `pass` until nothing of it is queued, with a progress
/// display, then the closing lines (for `run` and `describe`): what was
/// described, what failed and why, and how to query it.
pub async fn describe_until_done(
    db: &Store,
    cfg: &worker::WorkerConfig,
    engine: crate::engine::Engine,
    shutdown: CancellationToken,
    pass: i64,
    started: std::time::Instant,
) -> anyhow::Result<()> {
    let before = totals(&db.film_status(None, Some(pass)).await?);
    let progress = tokio::spawn(show_progress(db.clone(), before.done, pass));
    let result = worker::run(db, cfg, engine, shutdown).await;
    progress.abort();
    let films = db.film_status(None, Some(pass)).await?;
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
    match db.file() {
        Some(file) => {
            println!("results: {}", file.display());
            println!(
                "  sqlite3 {:?} \"SELECT film, pts_ms, mood, visual_content FROM frame_descriptions ORDER BY film, frame_index LIMIT 20\"",
                file.display().to_string()
            );
        }
        None => {
            println!("results: cinecut --db {} results", db.shown());
            println!(
                "  psql … -c \"SELECT film, pts_ms, mood, visual_content FROM frame_descriptions ORDER BY film, frame_index LIMIT 20\""
            );
        }
    }
    result?;
    Ok(())
}

async fn show_progress(db: Store, done_before: i64, pass: i64) {
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
        let Ok(films) = db.film_status(None, Some(pass)).await else {
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
