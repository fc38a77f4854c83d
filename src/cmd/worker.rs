//! `cinecut worker`: one per GPU, until stopped (or the queue is empty).

use tokio_util::sync::CancellationToken;

use super::film_filter;
use crate::cli::WorkerArgs;
use crate::config::Describing;
use crate::db::Db;
use crate::db::passes::{self, Pass, PassIdentity};
use crate::{config, worker};

pub async fn run(db: &Db, args: WorkerArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let film = film_filter(db, args.film.as_deref()).await?;
    let (mut cfg, engine, describing) = config::worker(args.core, film, args.max_side).await?;
    cfg.pass = Some(serve_pass(db, args.pass.as_deref(), &describing).await?);
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
