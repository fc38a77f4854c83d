//! `cinecut describe`: the frames already in the database into another pass
//! (no re-extraction), then a worker on that pass until it is done.

use tokio_util::sync::CancellationToken;

use crate::cli::DescribeArgs;
use crate::db::Store;

pub async fn run(
    db: &Store,
    args: DescribeArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<u8> {
    let started = std::time::Instant::now();
    let mut films = Vec::with_capacity(args.film.len());
    for title in &args.film {
        films.push(db.film_id(title).await?);
    }
    let mut core = args.worker;
    core.until_empty = true;
    let Some((mut cfg, engine, describing)) =
        super::configure(core, None, args.max_side, &shutdown).await?
    else {
        return Ok(130);
    };
    let pass = super::worker::serve_pass(db, args.pass.as_deref(), &describing).await?;
    cfg.pass = Some(pass.clone());
    let queued = db
        .enqueue_frames(pass.id, &films, args.max_attempts)
        .await?;
    tracing::info!("queued {queued} frame(s) for pass {:?}", pass.name);
    super::run::describe_until_done(db, &cfg, engine, shutdown.clone(), pass.id, started).await?;
    Ok(super::run::interrupted_or(&shutdown, 0))
}
