//! `cinecut search`: full-text search over the descriptions.

use std::io::Write;

use super::render::{timestamp, truncate};
use crate::cli::SearchArgs;
use crate::db::Store;

pub async fn run(db: &Store, args: SearchArgs) -> anyhow::Result<()> {
    let (film, pass) = super::filters(db, args.film.as_deref(), args.pass.as_deref()).await?;
    let Some(hits) = db.search(&args.query, film, pass, args.limit).await? else {
        anyhow::bail!("the search has no words; give some, e.g. cinecut search \"rainy night\"");
    };
    // The pass is named when there is more than one to tell apart.
    let many_passes = db.pass_count().await? > 1;
    let words: Vec<String> = args
        .query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let mut out = std::io::stdout().lock();
    for h in &hits {
        let fields: Vec<(&str, &str)> = [
            ("visual_content", &h.visual_content),
            ("mood", &h.mood),
            ("action", &h.action),
            ("setting", &h.setting),
            ("fields", &h.search_text),
        ]
        .into_iter()
        .filter_map(|(name, text)| Some((name, text.as_deref()?)))
        .collect();
        let (name, text) = fields
            .iter()
            .find(|(_, t)| {
                let t = t.to_lowercase();
                words.iter().any(|w| t.contains(w.as_str()))
            })
            .or(fields.first())
            .copied()
            .unwrap_or(("fields", h.fields.as_str()));
        if args.json {
            serde_json::to_writer(&mut out, &serde_json::json!({ "hit": h, "field": name }))?;
            writeln!(out)?;
        } else {
            let pass = match many_passes {
                true => format!("[{}] ", h.pass),
                false => String::new(),
            };
            writeln!(
                out,
                "{}  {}  {}  {pass}{name}: {}",
                h.film,
                timestamp(h.pts_ms),
                h.path,
                truncate(&text.replace('\n', "; "), 200)
            )?;
        }
    }
    let lines = db.search_dialogue(&args.query, film, args.limit).await?;
    for l in &lines {
        if args.json {
            serde_json::to_writer(&mut out, &serde_json::json!({ "dialogue": l }))?;
            writeln!(out)?;
        } else {
            writeln!(
                out,
                "{}  {}  {}  dialogue: {}",
                l.film,
                timestamp(Some(l.start_ms)),
                l.path.as_deref().unwrap_or("-"),
                truncate(&l.text.replace('\n', " "), 200)
            )?;
        }
    }
    if hits.is_empty() && lines.is_empty() {
        tracing::info!("nothing matches {:?}", args.query);
    }
    Ok(())
}
