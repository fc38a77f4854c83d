//! `cinecut worker`: one per GPU, until stopped (or the queue is empty).

use tokio_util::sync::CancellationToken;

use crate::cli::WorkerArgs;
use crate::config::Describing;
use crate::db::Store;
use crate::db::passes::{Pass, PassIdentity};
use crate::worker;

/// A worker on either backend: on PostgreSQL, one of many hosts' on the
/// shared queue.
pub async fn run(db: &Store, args: WorkerArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let film = match args.film.as_deref() {
        Some(title) => Some(db.film_id(title).await?),
        None => None,
    };
    let Some((mut cfg, engine, describing)) =
        super::configure(args.core, film, args.max_side, &shutdown).await?
    else {
        return Ok(());
    };
    cfg.pass = Some(serve_pass(db, args.pass.as_deref(), &describing).await?);
    let started = std::time::Instant::now();
    let s = worker::run(db, &cfg, engine, shutdown).await?;
    log_summary(&s, started);
    Ok(())
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
    if s.near_duplicates > 0 {
        tracing::info!(
            "{} still(s) nearly repeated the frame before them: not sent, given that frame's description",
            s.near_duplicates
        );
    }
}

/// The pass this worker serves (see [`Store::serve_pass`]), said in the log.
pub async fn serve_pass(
    db: &Store,
    name: Option<&str>,
    describing: &Describing,
) -> anyhow::Result<Pass> {
    let identity = PassIdentity {
        model: &describing.model,
        profile: &describing.profile,
    };
    let (pass, made) = db.serve_pass(name, identity).await?;
    tracing::info!(pass = %pass.name, model = %describing.model, profile = %describing.profile.pass_suffix(), "serving pass");
    if made && db.has_frames().await? {
        tracing::warn!(
            "pass {:?} is new and has no frames queued; `cinecut describe --pass {:?}` queues the \
             database's frames for it (or `cinecut passes` lists the passes there are)",
            pass.name,
            pass.name
        );
    }
    Ok(pass)
}
