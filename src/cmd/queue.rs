//! `cinecut retry --failed` and `cinecut cancel`; on PostgreSQL also
//! `results` and `search` (a plainer table than SQLite's: the answer as JSON).

use super::{film_filter, pass_filter};
use std::io::Write;

use super::render::timestamp;
use crate::cli::{CancelArgs, ResultFormat, ResultState, ResultsArgs, RetryArgs, SearchArgs};
use crate::db::pg::{Described, Failed, PgDb};
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

/// The ids `--film` and `--pass` name on PostgreSQL.
async fn pg_filters(
    db: &PgDb,
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

pub async fn retry_pg(db: &PgDb, args: RetryArgs) -> anyhow::Result<()> {
    let (film, pass) = pg_filters(db, args.film.as_deref(), args.pass.as_deref()).await?;
    let n = db.retry_failed(film, pass).await?;
    println!("requeued {n} failed job(s)");
    Ok(())
}

pub async fn cancel_pg(db: &PgDb, args: CancelArgs) -> anyhow::Result<()> {
    let (film, pass) = pg_filters(db, Some(&args.film), args.pass.as_deref()).await?;
    let film = film.expect("--film is required");
    let n = db.cancel_queued(film, pass).await?;
    println!("cancelled {n} queued job(s) of film {:?}", args.film);
    Ok(())
}

/// `results` on PostgreSQL: described frames (their whole answer as JSON),
/// or failed ones with their last error.
pub async fn results_pg(db: &PgDb, args: ResultsArgs) -> anyhow::Result<()> {
    let (film, pass) = pg_filters(db, args.film.as_deref(), args.pass.as_deref()).await?;
    match args.state {
        ResultState::Done => print_described(&db.described(film, pass).await?, args.format),
        ResultState::Failed => print_failed(&db.failed(film, pass).await?, args.format),
    }
}

/// `search` on PostgreSQL: every word, PostgreSQL's English stemming, best
/// match first.
pub async fn search_pg(db: &PgDb, args: SearchArgs) -> anyhow::Result<()> {
    let (film, pass) = pg_filters(db, args.film.as_deref(), args.pass.as_deref()).await?;
    let rows = db.search(&args.query, film, pass, args.limit).await?;
    let format = if args.json {
        ResultFormat::Jsonl
    } else {
        ResultFormat::Table
    };
    print_described(&rows, format)
}

/// One row as each format prints it.
struct Row {
    json: serde_json::Value,
    csv: Vec<String>,
    table: String,
}

/// Prints `rows` in `format`, with the CSV and table headers given.
fn print_rows(
    rows: Vec<Row>,
    format: ResultFormat,
    csv_header: &[&str],
    table_header: &str,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        ResultFormat::Jsonl => {
            for r in rows {
                writeln!(out, "{}", r.json)?;
            }
        }
        ResultFormat::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record(csv_header)?;
            for r in rows {
                w.write_record(&r.csv)?;
            }
            w.flush()?;
        }
        ResultFormat::Table => {
            writeln!(out, "{table_header}")?;
            for r in rows {
                writeln!(out, "{}", r.table)?;
            }
        }
    }
    Ok(())
}

fn print_described(rows: &[Described], format: ResultFormat) -> anyhow::Result<()> {
    let rows = rows
        .iter()
        .map(|r| Row {
            json: serde_json::json!({ "film": r.film, "frame_index": r.frame_index,
                "pts_ms": r.pts_ms, "path": r.path, "pass": r.pass, "model": r.model,
                "answer": r.fields }),
            csv: vec![
                r.film.clone(),
                r.frame_index.to_string(),
                r.pts_ms.map(|t| t.to_string()).unwrap_or_default(),
                r.path.clone(),
                r.pass.clone(),
                r.model.clone(),
                r.fields.to_string(),
            ],
            table: format!(
                "{}\t{}\t{}\t{}\t{}",
                r.film,
                r.frame_index,
                timestamp(r.pts_ms),
                r.pass,
                r.fields
            ),
        })
        .collect();
    let csv = [
        "film",
        "frame_index",
        "pts_ms",
        "path",
        "pass",
        "model",
        "answer",
    ];
    print_rows(rows, format, &csv, "FILM\tFRAME\tTIME\tPASS\tANSWER")
}

fn print_failed(rows: &[Failed], format: ResultFormat) -> anyhow::Result<()> {
    let rows = rows
        .iter()
        .map(|r| Row {
            json: serde_json::json!({ "film": r.film, "frame_index": r.frame_index,
                "pts_ms": r.pts_ms, "path": r.path, "pass": r.pass, "attempts": r.attempts,
                "error": r.error }),
            csv: vec![
                r.film.clone(),
                r.frame_index.to_string(),
                r.pts_ms.map(|t| t.to_string()).unwrap_or_default(),
                r.path.clone(),
                r.pass.clone(),
                r.attempts.to_string(),
                r.error.clone().unwrap_or_default(),
            ],
            table: format!(
                "{}\t{}\t{}\t{}\t{}\t{}",
                r.film,
                r.frame_index,
                timestamp(r.pts_ms),
                r.pass,
                r.attempts,
                r.error.as_deref().unwrap_or("")
            ),
        })
        .collect();
    let csv = [
        "film",
        "frame_index",
        "pts_ms",
        "path",
        "pass",
        "attempts",
        "error",
    ];
    print_rows(
        rows,
        format,
        &csv,
        "FILM\tFRAME\tTIME\tPASS\tATTEMPTS\tERROR",
    )
}
