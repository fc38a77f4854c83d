//! `cinecut results`: every description (or failure) as JSONL, CSV or a
//! table, a page at a time, film after film.

use std::io::Write;

use super::render::{Layout, fit, layout, plain_line, timestamp};
use crate::cli::{ResultFormat, ResultState, ResultsArgs};
use crate::db::{Store, results};
use crate::profile::Profile;
use crate::report::shown;

pub async fn run(db: &Store, args: ResultsArgs) -> anyhow::Result<()> {
    let (film, pass) = super::filters(db, args.film.as_deref(), args.pass.as_deref()).await?;
    let films = db.result_films(film).await?.into_iter();
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

/// A table as wide as the terminal when stdout is one: film, frame, time
/// and pass, then the answer's fields (or the error) sharing the rest, cut
/// by display width. Plain lines otherwise ([`Layout::Plain`]).
async fn print_table(
    rows: &mut Pages<'_>,
    out: &mut impl Write,
    state: ResultState,
) -> anyhow::Result<()> {
    let columns = if state == ResultState::Failed {
        Columns::Error
    } else {
        Columns::of(rows.db, rows.pass).await?
    };
    let width = match layout() {
        Layout::Fitted { width } => width,
        Layout::Plain => return print_plain(rows, out, &columns).await,
    };
    // film, frame, time and pass are fixed; the rest share what is left.
    let rest = width.saturating_sub(20 + 7 + 13 + 17);
    let headers = columns.headers();
    let text = (rest / headers.len()).max(8);
    let mut line = format!(
        "{:<20} {:>6} {:<12} {:<16}",
        "FILM", "FRAME", "TIME", "PASS"
    );
    for h in &headers {
        line.push(' ');
        line.push_str(&fit(h, text - 1));
    }
    writeln!(out, "{}", line.trim_end())?;
    while let Some(r) = rows.next().await? {
        let mut line = format!(
            "{} {:>6} {:<12} {}",
            fit(&r.film, 20),
            r.frame_index,
            timestamp(r.pts_ms),
            fit(&r.pass, 16)
        );
        for cell in columns.cells(&r) {
            line.push(' ');
            line.push_str(&fit(&cell.replace('\n', " "), text - 1));
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// The table's columns as plain lines: a header, then one tab-separated
/// line per frame with every value whole (for `cut`, `grep`, `sort`).
async fn print_plain(
    rows: &mut Pages<'_>,
    out: &mut impl Write,
    columns: &Columns,
) -> anyhow::Result<()> {
    let mut header = vec![
        "FILM".to_string(),
        "FRAME".into(),
        "TIME".into(),
        "PASS".into(),
    ];
    header.extend(columns.headers());
    writeln!(
        out,
        "{}",
        plain_line(&header.iter().map(String::as_str).collect::<Vec<_>>())
    )?;
    while let Some(r) = rows.next().await? {
        let (frame, time) = (r.frame_index.to_string(), timestamp(r.pts_ms));
        let cells = columns.cells(&r);
        let mut line = vec![r.film.as_str(), &frame, &time, &r.pass];
        line.extend(cells.iter().map(String::as_str));
        writeln!(out, "{}", plain_line(&line))?;
    }
    Ok(())
}

/// What the table shows after a row's film, frame, time and pass.
enum Columns {
    /// Failed rows: why.
    Error,
    /// One column per field, where every pass shown has these fields.
    Fields(Vec<String>),
    /// Passes of different profiles: one column, `field: value; …`.
    Answer,
}

impl Columns {
    /// The fields of the passes shown (of `pass`, or of every pass).
    async fn of(db: &Store, pass: Option<i64>) -> anyhow::Result<Columns> {
        let default: Vec<String> = Profile::default()
            .fields
            .into_iter()
            .map(|f| f.name)
            .collect();
        let mut by_pass: Vec<(i64, Vec<String>)> = Vec::new();
        for (id, name) in db.pass_fields(pass).await? {
            if by_pass.last().is_none_or(|(last, _)| *last != id) {
                by_pass.push((id, Vec::new()));
            }
            if let (Some(name), Some((_, names))) = (name, by_pass.last_mut()) {
                names.push(name);
            }
        }
        let mut lists = by_pass.into_iter().map(|(_, names)| {
            if names.is_empty() {
                default.clone()
            } else {
                names
            }
        });
        let first = lists.next().unwrap_or_else(|| default.clone());
        Ok(if lists.all(|l| l == first) {
            Columns::Fields(first)
        } else {
            Columns::Answer
        })
    }

    fn headers(&self) -> Vec<String> {
        match self {
            Columns::Error => vec!["ERROR".into()],
            Columns::Fields(names) => names
                .iter()
                .map(|n| n.replace('_', " ").to_uppercase())
                .collect(),
            Columns::Answer => vec!["ANSWER".into()],
        }
    }

    fn cells(&self, row: &results::ResultRow) -> Vec<String> {
        let answer: serde_json::Map<String, serde_json::Value> = row
            .fields
            .as_deref()
            .and_then(|f| serde_json::from_str(f).ok())
            .unwrap_or_default();
        match self {
            Columns::Error => vec![row.error.clone().unwrap_or_default()],
            Columns::Fields(names) => names
                .iter()
                .map(|n| answer.get(n).map(shown).unwrap_or_default())
                .collect(),
            Columns::Answer => vec![
                answer
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", shown(v)))
                    .collect::<Vec<_>>()
                    .join("; "),
            ],
        }
    }
}

/// Result rows, fetched a page at a time, film after film.
struct Pages<'a> {
    db: &'a Store,
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
            let failed = self.state == ResultState::Failed;
            let page = self
                .db
                .result_page(film, self.pass, self.after, failed)
                .await?;
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
