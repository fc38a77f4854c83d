//! `cinecut results`: every description (or failure) as JSONL, CSV or a
//! table, a page at a time, film after film.

use std::io::Write;

use super::render::{Layout, fit, layout, plain_line, timestamp, truncate};
use super::{film_filter, pass_filter};
use crate::cli::{ResultFormat, ResultState, ResultsArgs};
use crate::db::{Db, results};

pub async fn run(db: &Db, args: ResultsArgs) -> anyhow::Result<()> {
    let film = film_filter(db, args.film.as_deref()).await?;
    let pass = pass_filter(db, args.pass.as_deref()).await?;
    let films = results::film_ids(db.pool(), film).await?.into_iter();
    let mut rows = Pages {
        db,
        films,
        film: None,
        pass,
        state: args.state,
        after: (-1, 0),
        page: Vec::new().into_iter(),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match args.format {
        ResultFormat::Jsonl => {
            while let Some(row) = rows.next().await? {
                serde_json::to_writer(&mut out, &row)?;
                writeln!(out)?;
            }
        }
        ResultFormat::Csv => {
            let mut w = csv::Writer::from_writer(out);
            while let Some(row) = rows.next().await? {
                w.serialize(row)?;
            }
            w.flush()?;
        }
        ResultFormat::Table => print_table(&mut rows, &mut out, args.state).await?,
    }
    Ok(())
}

/// A table as wide as the terminal when stdout is one: film, frame and
/// time, then the four fields (or the error) sharing the rest, cut by
/// display width. Plain lines otherwise ([`Layout::Plain`]).
async fn print_table(
    rows: &mut Pages<'_>,
    out: &mut impl Write,
    state: ResultState,
) -> anyhow::Result<()> {
    let failed = state == ResultState::Failed;
    let width = match layout() {
        Layout::Fitted { width } => width,
        Layout::Plain => return print_plain(rows, out, failed).await,
    };
    // film, time and index are fixed; the rest share what is left.
    let rest = width.saturating_sub(20 + 13 + 7 + 6);
    let text = (rest / 4).max(8);
    if failed {
        writeln!(
            out,
            "{:<20} {:>6} {:<12} {:<w$}",
            "FILM",
            "FRAME",
            "TIME",
            "ERROR",
            w = rest
        )?;
    } else {
        writeln!(
            out,
            "{:<20} {:>6} {:<12} {:<t$} {:<t$} {:<t$} {:<t$}",
            "FILM",
            "FRAME",
            "TIME",
            "VISUAL CONTENT",
            "MOOD",
            "ACTION",
            "SETTING",
            t = text - 1
        )?;
    }
    while let Some(r) = rows.next().await? {
        let head = format!(
            "{} {:>6} {:<12}",
            fit(&r.film, 20),
            r.frame_index,
            timestamp(r.pts_ms)
        );
        if failed {
            writeln!(
                out,
                "{head} {}",
                truncate(r.error.as_deref().unwrap_or(""), rest)
            )?;
        } else {
            let cells: Vec<String> = [&r.visual_content, &r.mood, &r.action, &r.setting]
                .iter()
                .map(|c| fit(&c.as_deref().unwrap_or("").replace('\n', " "), text - 1))
                .collect();
            writeln!(out, "{head} {}", cells.join(" "))?;
        }
    }
    Ok(())
}

/// The table's columns as plain lines: a header, then one tab-separated
/// line per frame with every value whole (for `cut`, `grep`, `sort`).
async fn print_plain(
    rows: &mut Pages<'_>,
    out: &mut impl Write,
    failed: bool,
) -> anyhow::Result<()> {
    let header: &[&str] = if failed {
        &["FILM", "FRAME", "TIME", "ERROR"]
    } else {
        &[
            "FILM",
            "FRAME",
            "TIME",
            "VISUAL CONTENT",
            "MOOD",
            "ACTION",
            "SETTING",
        ]
    };
    writeln!(out, "{}", plain_line(header))?;
    while let Some(r) = rows.next().await? {
        let (frame, time) = (r.frame_index.to_string(), timestamp(r.pts_ms));
        let mut cells = vec![r.film.as_str(), &frame, &time];
        fn text(c: &Option<String>) -> &str {
            c.as_deref().unwrap_or("")
        }
        if failed {
            cells.push(text(&r.error));
        } else {
            cells.extend([&r.visual_content, &r.mood, &r.action, &r.setting].map(text));
        }
        writeln!(out, "{}", plain_line(&cells))?;
    }
    Ok(())
}

/// Result rows, fetched a page at a time, film after film.
struct Pages<'a> {
    db: &'a Db,
    films: std::vec::IntoIter<i64>,
    /// The film being read, or `None` between films.
    film: Option<i64>,
    pass: Option<i64>,
    state: ResultState,
    after: results::PageKey,
    page: std::vec::IntoIter<results::ResultRow>,
}

impl Pages<'_> {
    async fn next(&mut self) -> anyhow::Result<Option<results::ResultRow>> {
        loop {
            if let Some(row) = self.page.next() {
                return Ok(Some(row));
            }
            let film = match self.film {
                Some(f) => f,
                None => match self.films.next() {
                    Some(f) => {
                        self.film = Some(f);
                        self.after = (-1, 0);
                        f
                    }
                    None => return Ok(None),
                },
            };
            let page = match self.state {
                ResultState::Done => {
                    results::done_page(self.db.pool(), film, self.pass, self.after).await?
                }
                ResultState::Failed => {
                    results::failed_page(self.db.pool(), film, self.pass, self.after).await?
                }
            };
            if (page.len() as i64) < results::PAGE {
                self.film = None;
            }
            if let Some(last) = page.last() {
                self.after = (last.frame_index, last.pass_id);
            }
            self.page = page.into_iter();
        }
    }
}
