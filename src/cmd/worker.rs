//! `cinecut worker`: one per GPU, until stopped (or the queue is empty).

use tokio_util::sync::CancellationToken;

use super::film_filter;
use crate::cli::WorkerArgs;
use crate::db::Db;
use crate::{config, worker};

pub async fn run(db: &Db, args: WorkerArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let film = film_filter(db, args.film.as_deref()).await?;
    let (cfg, engine) = config::worker(args.core, film, args.max_side).await?;
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
