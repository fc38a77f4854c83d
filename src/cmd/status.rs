//! `cinecut status`: the queue per film, the GPU leases, the workers.

use std::io::Write;

use super::film_filter;
use super::render::{ago, describe_lease, fit, percent, totals, truncate};
use crate::cli::StatusArgs;
use crate::db::{self, Db, status};

pub async fn run(db: &Db, args: StatusArgs) -> anyhow::Result<()> {
    let only = film_filter(db, args.film.as_deref()).await?;
    let films = status::films(db.pool(), only).await?;
    let leases = status::lease_holders(db.pool()).await?;
    let workers = status::workers(db.pool(), db::now_ms() - 3_600_000).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let totals = totals(&films);
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({ "films": films, "totals": totals, "gpu_leases": leases, "workers": workers }),
        )?;
        writeln!(out)?;
        return Ok(());
    }
    let now = db::now_ms();
    writeln!(
        out,
        "{:<28} {:>9} {:>9} {:>8} {:>9} {:>7} {:>9} {:>6}  OLDEST QUEUED",
        "FILM", "TOTAL", "QUEUED", "RUNNING", "DONE", "FAILED", "CANCELLED", "DONE%"
    )?;
    for f in &films {
        writeln!(
            out,
            "{} {:>9} {:>9} {:>8} {:>9} {:>7} {:>9} {:>6.1}  {}",
            fit(&f.title, 28),
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
            writeln!(
                out,
                "    {:>6} failed: {}",
                reason.count,
                truncate(&reason.reason, 100)
            )?;
        }
    }
    let t = totals(&films);
    writeln!(
        out,
        "{:<28} {:>9} {:>9} {:>8} {:>9} {:>7} {:>9} {:>6.1}",
        "TOTAL",
        t.total,
        t.queued,
        t.running,
        t.done,
        t.failed,
        t.cancelled,
        percent(t.done, t.total)
    )?;
    print_holders(&mut out, &leases, &workers, now)?;
    Ok(())
}

/// Who holds each GPU lease, and every worker seen in the last hour.
fn print_holders(
    out: &mut impl Write,
    leases: &[status::LeaseHolder],
    workers: &[status::WorkerRow],
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
    Ok(())
}
