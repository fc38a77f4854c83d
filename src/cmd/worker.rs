//! `cinecut worker`: one per GPU, until stopped (or the queue is empty).

use tokio_util::sync::CancellationToken;

use super::film_filter;
use crate::cli::WorkerArgs;
use crate::config::Describing;
use crate::db::passes::{self, Pass, PassIdentity};
use crate::db::pg::PgDb;
use crate::db::{Db, Store};
use crate::{config, worker};

pub async fn run(db: &Db, args: WorkerArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let film = film_filter(db, args.film.as_deref()).await?;
    let (mut cfg, engine, describing) = config::worker(args.core, film, args.max_side).await?;
    cfg.pass = Some(serve_pass(db, args.pass.as_deref(), &describing).await?);
    let started = std::time::Instant::now();
    let s = worker::run(&Store::Sqlite(db.clone()), &cfg, engine, shutdown).await?;
    log_summary(&s, started);
    Ok(())
}

/// `cinecut worker --db postgres://…`: the same worker on the shared
/// queue. A pass there is its name (`--pass`, default `default`, the pass
/// `enqueue` fills when none is named); what a worker describes with is its
/// operator's choice.
pub async fn run_pg(
    db: &PgDb,
    args: WorkerArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let film = match args.film.as_deref() {
        Some(title) => Some(db.film_id(title).await?),
        None => None,
    };
    let (mut cfg, engine, describing) = config::worker(args.core, film, args.max_side).await?;
    let name = args.pass.as_deref().unwrap_or("default");
    cfg.pass = Some(serve_pass_pg(db, name, &describing).await?);
    let started = std::time::Instant::now();
    let s = worker::run(&Store::Postgres(db.clone()), &cfg, engine, shutdown).await?;
    log_summary(&s, started);
    Ok(())
}

/// The pass a worker serves on PostgreSQL: the one named (made if new),
/// bound to this worker's model and profile (see
/// [`PgDb::serve_pass`]), said in the log.
pub async fn serve_pass_pg(db: &PgDb, name: &str, describing: &Describing) -> anyhow::Result<Pass> {
    let identity = PassIdentity {
        model: &describing.model,
        profile: &describing.profile,
    };
    let (pass, _) = db.serve_pass(name, identity).await?;
    tracing::info!(pass = %name, model = %describing.model, profile = %describing.profile.pass_suffix(), db = %db.shown(), "serving pass");
    Ok(pass)
}

fn log_summary(s: &worker::WorkerSummary, started: std::time::Instant) {
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        "worker done: {} described, {} failed, {} retried, {} requeued in {secs:.1} s ({:.2} frames/s)",
        s.done,
        s.failed,
        s.retried,
        s.requeued,
        s.done as f64 / secs.max(1e-9)
    );
}

/// The pass this worker serves (see [`passes::serve`]), said in the log.
pub async fn serve_pass(
    db: &Db,
    name: Option<&str>,
    describing: &Describing,
) -> anyhow::Result<Pass> {
    let identity = PassIdentity {
        model: &describing.model,
        profile: &describing.profile,
    };
    let (pass, made) = passes::serve(db.pool(), name, identity).await?;
    tracing::info!(pass = %pass.name, model = %describing.model, profile = %describing.profile.pass_suffix(), "serving pass");
    if made && passes::has_frames(db.pool()).await? {
        tracing::warn!(
            "pass {:?} is new and has no frames queued; `cinecut describe --pass {:?}` queues the \
             database's frames for it (or `cinecut passes` lists the passes there are)",
            pass.name,
            pass.name
        );
    }
    Ok(pass)
}
