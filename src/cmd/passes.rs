//! `cinecut passes`: every pass with its model, profile, counts and means.

use std::io::Write;

use super::render::plain_line;
use crate::cli::PassesArgs;
use crate::db::Store;

pub async fn run(db: &Store, args: PassesArgs) -> anyhow::Result<()> {
    let all = db.passes().await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        for p in &all {
            serde_json::to_writer(&mut out, p)?;
            writeln!(out)?;
        }
        return Ok(());
    }
    let mean = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"));
    writeln!(
        out,
        "{}",
        plain_line(&[
            "PASS",
            "MODEL",
            "PROFILE",
            "JOBS",
            "DONE",
            "QUEUED",
            "FAILED",
            "DESCRIBED",
            "MEAN MS",
            "MEAN PROMPT TOK",
            "MEAN ANSWER TOK",
        ])
    )?;
    for p in &all {
        let numbers = [p.jobs, p.done, p.queued, p.failed, p.described].map(|n| n.to_string());
        let means = [
            p.mean_latency_ms,
            p.mean_prompt_tokens,
            p.mean_completion_tokens,
        ]
        .map(mean);
        let mut cells = vec![
            p.name.as_str(),
            p.model.as_deref().unwrap_or("(not bound yet)"),
            p.profile.as_deref().unwrap_or("-"),
        ];
        cells.extend(numbers.iter().map(String::as_str));
        cells.extend(means.iter().map(String::as_str));
        writeln!(out, "{}", plain_line(&cells))?;
    }
    Ok(())
}
