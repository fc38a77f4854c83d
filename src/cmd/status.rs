//! `cinecut status`: the queue per film, the GPU leases, the workers.

use std::io::Write;

use super::render::{
    Layout, ago, describe_lease, fit, layout, percent, plain_line, totals, truncate,
};
use crate::cli::{StatusArgs, WorkersShown};
use crate::db::{self, Store, status};

/// Workers gone (stopped, or silent) longer ago than this are counted, not
/// listed, unless `--workers all`.
const RECENT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

pub async fn run(db: &Store, args: StatusArgs) -> anyhow::Result<()> {
    let (only, pass) = super::filters(db, args.film.as_deref(), args.pass.as_deref()).await?;
    let mut films = db.film_status(only, pass).await?;
    let leases = db.lease_holders().await?;
    let window = (args.workers == WorkersShown::Recent).then_some(RECENT);
    let db::status::Workers {
        seen: workers,
        gone,
    } = db.workers(window).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let totals = totals(&films);
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({
                "films": films, "totals": totals, "gpu_leases": leases,
                "workers": workers, "workers_gone_before_a_day": gone,
            }),
        )?;
        writeln!(out)?;
        return Ok(());
    }
    // With more than one pass, each row says whose it is.
    let passes: std::collections::HashSet<&str> = films.iter().map(|f| f.pass.as_str()).collect();
    if passes.len() > 1 {
        for f in &mut films {
            f.title = format!("{} [{}]", f.title, f.pass);
        }
    }
    let now = db::now_ms();
    let width = match layout() {
        Layout::Fitted { width } => width,
        Layout::Plain => {
            print_plain(&mut out, &films, now)?;
            print_holders(&mut out, &leases, &workers, gone, now)?;
            return Ok(());
        }
    };
    // The numbers take 61 columns and OLDEST QUEUED 14; the title has the
    // rest (12 to 48), failure reasons the whole line.
    let title = width.saturating_sub(61 + 14).clamp(12, 48);
    writeln!(
        out,
        "{} {:>7} {:>7} {:>7} {:>7} {:>6} {:>9} {:>6}  OLDEST QUEUED",
        fit("FILM", title),
        "TOTAL",
        "QUEUED",
        "RUNNING",
        "DONE",
        "FAILED",
        "CANCELLED",
        "DONE%"
    )?;
    for f in &films {
        writeln!(
            out,
            "{} {:>7} {:>7} {:>7} {:>7} {:>6} {:>9} {:>6.1}  {}",
            fit(&f.title, title),
            f.total,
            f.queued,
            f.running,
            f.done,
            f.failed,
            f.cancelled,
            percent(f.done, f.total),
            f.oldest_queued_at
                .map_or_else(|| "-".to_string(), |t| format!("{} ago", ago(now - t)))
        )?;
        for reason in &f.top_failures {
            let head = format!("    {:>6} failed: ", reason.count);
            let room = width.saturating_sub(head.len()).max(20);
            writeln!(out, "{head}{}", truncate(&reason.reason, room))?;
        }
    }
    let t = totals(&films);
    writeln!(
        out,
        "{} {:>7} {:>7} {:>7} {:>7} {:>6} {:>9} {:>6.1}",
        fit("TOTAL", title),
        t.total,
        t.queued,
        t.running,
        t.done,
        t.failed,
        t.cancelled,
        percent(t.done, t.total)
    )?;
    print_holders(&mut out, &leases, &workers, gone, now)?;
    Ok(())
}

/// The per-film table as plain lines (stdout is not a terminal): tab-
/// separated, titles and failure reasons whole.
fn print_plain(
    out: &mut impl Write,
    films: &[status::FilmStatus],
    now: i64,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{}",
        plain_line(&[
            "FILM",
            "TOTAL",
            "QUEUED",
            "RUNNING",
            "DONE",
            "FAILED",
            "CANCELLED",
            "DONE%",
            "OLDEST QUEUED",
        ])
    )?;
    let t = totals(films);
    for f in films.iter().chain(std::iter::once(&t)) {
        let oldest = f
            .oldest_queued_at
            .map_or_else(|| "-".to_string(), |at| format!("{} ago", ago(now - at)));
        let numbers =
            [f.total, f.queued, f.running, f.done, f.failed, f.cancelled].map(|n| n.to_string());
        let done = format!("{:.1}", percent(f.done, f.total));
        let mut cells = vec![f.title.as_str()];
        cells.extend(numbers.iter().map(String::as_str));
        cells.extend([done.as_str(), &oldest]);
        writeln!(out, "{}", plain_line(&cells))?;
        for reason in &f.top_failures {
            writeln!(
                out,
                "    {} failed: {}",
                reason.count,
                reason.reason.replace('\n', " ")
            )?;
        }
    }
    Ok(())
}

/// Who holds each GPU lease, the workers listed, and the count of the rest.
fn print_holders(
    out: &mut impl Write,
    leases: &[status::LeaseHolder],
    workers: &[status::WorkerRow],
    gone: i64,
    now: i64,
) -> std::io::Result<()> {
    if leases.is_empty() {
        writeln!(out, "GPU leases: none held")?;
    }
    for l in leases {
        writeln!(out, "GPU {}: {}", l.gpu, describe_lease(l))?;
    }
    for w in workers {
        writeln!(
            out,
            "worker {} pid {} on {} gpu {}: {} (beat {} ago) done {} failed {} retried {} requeued {} server starts {} restarts {}",
            w.id,
            w.pid,
            w.host,
            w.gpu,
            w.state,
            ago(now - w.heartbeat_at),
            w.jobs_done,
            w.jobs_failed,
            w.jobs_retried,
            w.jobs_requeued,
            w.server_starts,
            w.server_restarts
        )?;
    }
    if gone > 0 {
        writeln!(
            out,
            "{gone} worker(s) gone for more than a day (status --workers all lists them)"
        )?;
    }
    Ok(())
}
