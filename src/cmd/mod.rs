//! The commands: one file each. A command turns its parsed flags (from
//! [`crate::cli`]) into the library's config ([`crate::config`]), calls the
//! library and prints: data on stdout, logs on stderr. Nothing here parses
//! arguments or writes SQL.
//!
//! This file opens the database for every command, makes the one shutdown
//! token (SIGINT/SIGTERM) and turns database failures into errors a person
//! can act on.

mod describe;
mod enqueue;
mod gpu;
mod gpu_lock;
mod passes;
mod queue;
mod render;
mod report;
mod results;
mod run;
mod search;
mod status;
mod worker;

use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command};
use crate::db::{self, Db, Location};
use crate::error::Error;

/// Runs one command to completion and returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    if let Command::Completions(args) = &cli.command {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(args.shell, &mut cmd, "cinecut", &mut std::io::stdout());
        return Ok(0);
    }
    // Usage errors clap cannot express, before anything is opened.
    if let Command::Enqueue(args) = &cli.command {
        enqueue::shot_flags_need_scene_mode(args);
    }
    // Long-running commands stop cleanly on SIGINT/SIGTERM from here on,
    // also while the database opens; they wait out other connections'
    // write locks, while short commands give up after --lock-wait.
    let long_running = matches!(
        cli.command,
        Command::Worker(_) | Command::Run(_) | Command::Describe(_) | Command::GpuLock(_)
    );
    let shutdown = if long_running {
        shutdown_token()
    } else {
        CancellationToken::new()
    };
    db::set_lock_wait((!long_running).then_some(cli.lock_wait));
    let path = match &cli.db {
        Location::Sqlite(path) => path.clone(),
        Location::Postgres(url) => return on_postgres(cli.command, url, shutdown).await,
    };
    // A mistyped --db must not become an empty database that reads as an
    // empty queue. Workers, gpu-lock and describe may come before the
    // first enqueue: they make it.
    if reads_only(&cli.command) && !path.exists() {
        return Err(Error::NoDatabase(path).into());
    }
    let explain = |e: anyhow::Error| explain_database_error(e, &path, cli.lock_wait);
    let db = tokio::select! {
        biased;
        _ = shutdown.cancelled() => return Ok(130),
        db = Db::open(&path, cli.durability.into()) => db
            .with_context(|| format!("opening database {}", path.display()))
            .map_err(explain)?,
    };
    let store = db::Store::from(db);
    let result = on_store(&store, cli.command, shutdown).await;
    store.close().await;
    result.map_err(explain)
}

/// The commands that read (or change) what an enqueue made, and make
/// nothing of their own.
fn reads_only(command: &Command) -> bool {
    matches!(
        command,
        Command::Status(_)
            | Command::Results(_)
            | Command::Search(_)
            | Command::Passes(_)
            | Command::Report(_)
            | Command::Gpu(_)
            | Command::Retry(_)
            | Command::Cancel(_)
    )
}

/// Every command on PostgreSQL (`--db postgres://…`).
async fn on_postgres(
    command: Command,
    url: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<u8> {
    let store = tokio::select! {
        biased;
        _ = shutdown.cancelled() => return Ok(130),
        db = db::Store::connect_postgres(url) => db?,
    };
    let result = on_store(&store, command, shutdown).await;
    store.close().await;
    result
}

/// Every command, once, on either backend.
async fn on_store(
    store: &db::Store,
    command: Command,
    shutdown: CancellationToken,
) -> anyhow::Result<u8> {
    let ok = |()| 0;
    match command {
        Command::Enqueue(args) => enqueue::run(store, args).await.map(ok),
        Command::Status(args) => status::run(store, args).await.map(ok),
        Command::Retry(args) => queue::retry(store, args).await.map(ok),
        Command::Cancel(args) => queue::cancel(store, args).await.map(ok),
        Command::Worker(args) => worker::run(store, *args, shutdown).await.map(ok),
        Command::Run(args) => run::run(store, *args, shutdown).await,
        Command::Describe(args) => describe::run(store, *args, shutdown).await,
        Command::Passes(args) => passes::run(store, args).await.map(ok),
        Command::GpuLock(args) => gpu_lock::run(store, args, shutdown).await,
        Command::Gpu(args) => gpu::run(store, args).await.map(ok),
        Command::Results(args) => results::run(store, args).await.map(ok),
        Command::Search(args) => search::run(store, args).await.map(ok),
        Command::Report(args) => report::run(store, args).await.map(ok),
        Command::Completions(_) => unreachable!("handled before the database opens"),
    }
}

/// A database failure (locked, disk full, read-only, corrupt) as the error
/// a person can act on, naming the file; anything else as it is.
fn explain_database_error(
    err: anyhow::Error,
    path: &std::path::Path,
    lock_wait: Duration,
) -> anyhow::Error {
    let explained = err
        .chain()
        .find_map(|cause| Error::explain_cause(cause, path, lock_wait.as_secs()));
    match explained {
        Some(e) => e.into(),
        None => err,
    }
}

/// The one token of the process, cancelled by SIGINT or SIGTERM.
/// The handlers are installed before this returns, so a signal that comes
/// at once is a clean shutdown, never the default action.
fn shutdown_token() -> CancellationToken {
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

/// The id of the film titled `title`, if a title is given.
/// The ids of the film titled `film` and of the pass named `pass`, each
/// if given, on either backend.
async fn filters(
    db: &db::Store,
    film: Option<&str>,
    pass: Option<&str>,
) -> anyhow::Result<(Option<i64>, Option<i64>)> {
    let film = match film {
        Some(title) => Some(db.film_id(title).await?),
        None => None,
    };
    let pass = match pass {
        Some(name) => Some(db.pass_id(name).await?),
        None => None,
    };
    Ok((film, pass))
}

/// [`crate::config::worker`], given up (`None`) when a signal comes
/// first: a model download (`--hf`) stops with it (its process is killed
/// when dropped).
async fn configure(
    core: crate::cli::WorkerCore,
    film: Option<i64>,
    max_side: u32,
    shutdown: &CancellationToken,
) -> anyhow::Result<
    Option<(
        crate::worker::WorkerConfig,
        crate::engine::Engine,
        crate::config::Describing,
    )>,
> {
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => Ok(None),
        r = crate::config::worker(core, film, max_side) => r.map(Some),
    }
}
