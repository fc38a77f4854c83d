//! `cinecut retry --failed` and `cinecut cancel`, on either backend.

use crate::cli::{CancelArgs, RetryArgs};
use crate::db::Store;

pub async fn retry(db: &Store, args: RetryArgs) -> anyhow::Result<()> {
    let (film, pass) = super::filters(db, args.film.as_deref(), args.pass.as_deref()).await?;
    let n = db.retry_failed(film, pass).await?;
    println!("requeued {n} failed job(s)");
    Ok(())
}

pub async fn cancel(db: &Store, args: CancelArgs) -> anyhow::Result<()> {
    let (film, pass) = super::filters(db, Some(&args.film), args.pass.as_deref()).await?;
    let film = film.expect("a film is named");
    let n = db.cancel_queued(film, pass).await?;
    println!("cancelled {n} queued job(s) of film {:?}", args.film);
    Ok(())
}
