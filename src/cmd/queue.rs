//! `cinecut retry --failed` and `cinecut cancel`.

use super::{film_filter, pass_filter};
use crate::cli::{CancelArgs, RetryArgs};
use crate::db::{Db, queue};

pub async fn retry(db: &Db, args: RetryArgs) -> anyhow::Result<()> {
    let film = film_filter(db, args.film.as_deref()).await?;
    let pass = pass_filter(db, args.pass.as_deref()).await?;
    let n = queue::retry_failed(db.pool(), film, pass).await?;
    println!("requeued {n} failed job(s)");
    Ok(())
}

pub async fn cancel(db: &Db, args: CancelArgs) -> anyhow::Result<()> {
    let film = queue::film_id(db.pool(), &args.film).await?;
    let pass = pass_filter(db, args.pass.as_deref()).await?;
    let n = queue::cancel_queued(db.pool(), film, pass).await?;
    println!("cancelled {n} queued job(s) of film {:?}", args.film);
    Ok(())
}
