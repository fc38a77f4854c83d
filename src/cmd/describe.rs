//! `cinecut describe`: the frames already in the database into another pass
//! (no re-extraction), then a worker on that pass until it is done.

use tokio_util::sync::CancellationToken;

use crate::cli::DescribeArgs;
use crate::config;
use crate::db::pg::PgDb;
use crate::db::{Db, Store, passes, queue};

pub async fn run(db: &Db, args: DescribeArgs, shutdown: CancellationToken) -> anyhow::Result<u8> {
    let started = std::time::Instant::now();
    let mut films = Vec::with_capacity(args.film.len());
    for title in &args.film {
        films.push(queue::film_id(db.pool(), title).await?);
    }
    let mut core = args.worker;
    core.until_empty = true;
    let (mut cfg, engine, describing) = config::worker(core, None, args.max_side).await?;
    let pass = super::worker::serve_pass(db, args.pass.as_deref(), &describing).await?;
    cfg.pass = Some(pass.clone());
    let queued = passes::enqueue_frames(db.pool(), pass.id, &films, args.max_attempts).await?;
    tracing::info!("queued {queued} frame(s) for pass {:?}", pass.name);
    let store = Store::Sqlite(db.clone());
    super::run::describe_until_done(&store, &cfg, engine, shutdown, pass.id, started).await?;
    Ok(0)
}

/// `cinecut describe --db postgres://…`: the frames already there into the
/// pass (default `default`), then a worker here until it is done.
pub async fn run_pg(
    db: &PgDb,
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
    let (mut cfg, engine, describing) = config::worker(core, None, args.max_side).await?;
    let name = args.pass.as_deref().unwrap_or("default");
    let pass = super::worker::serve_pass_pg(db, name, &describing).await?;
    cfg.pass = Some(pass.clone());
    let queued = db
        .enqueue_frames(pass.id, &films, args.max_attempts)
        .await?;
    tracing::info!("queued {queued} frame(s) for pass {name:?}");
    let store = Store::Postgres(db.clone());
    super::run::describe_until_done(&store, &cfg, engine, shutdown, pass.id, started).await?;
    Ok(0)
}
