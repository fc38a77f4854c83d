//! `cinecut report`: an HTML contact sheet per film ([`crate::report`]),
//! written next to its final name and renamed into place, so a report is
//! never seen half-written.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cli::ReportArgs;
use crate::db::Store;
use crate::db::passes::Pass;
use crate::db::report::{FilmFacts, ReportField};
use crate::profile::Profile;
use crate::report::{Report, strip_field, thumbnails};

pub async fn run(db: &Store, args: ReportArgs) -> anyhow::Result<()> {
    let mut ids = Vec::new();
    for title in &args.film {
        ids.push(db.film_id(title).await?);
    }
    let films = db.report_films(&ids).await?;
    if films.is_empty() {
        anyhow::bail!(
            "the database has no films yet; enqueue some first (cinecut enqueue FILM.mp4)"
        );
    }
    let targets = destinations(&films, args.output.as_deref())?;
    let mut out = std::io::stdout().lock();
    let only_pass = match &args.pass {
        Some(name) => Some(db.pass_named(name).await?),
        None => None,
    };
    for (film, target) in films.into_iter().zip(&targets) {
        let pass = match &only_pass {
            Some(pass) => pass.clone(),
            None => match db.first_pass_with_film(film.id).await? {
                Some(pass) => pass,
                None => Pass {
                    id: 0,
                    name: String::new(),
                    binding: 0,
                },
            },
        };
        let fields = pass_fields(db, pass.id).await?;
        let strip = strip_field(&fields, args.strip.as_deref()).map_err(|e| {
            anyhow::anyhow!("{e} (pass {:?}; choose another with --pass)", pass.name)
        })?;
        let page = Page {
            pass: &pass.name,
            fields: &fields,
            strip,
        };
        let frames = write_report(db, film, target, page, pass.id).await?;
        writeln!(out, "{}", target.display())?;
        tracing::info!("wrote {} ({frames} frames)", target.display());
    }
    out.flush()?;
    if args.open {
        for target in &targets {
            std::process::Command::new("xdg-open")
                .arg(target)
                .spawn()
                .with_context(|| {
                    format!(
                        "cannot run xdg-open to open {} (the report is written; open it in a browser)",
                        target.display()
                    )
                })?;
        }
    }
    Ok(())
}

/// The fields of pass `pass` as the report shows them; a pass with no
/// profile recorded answers with the default profile's.
async fn pass_fields(db: &Store, pass: i64) -> anyhow::Result<Vec<ReportField>> {
    let fields = db.report_fields(pass).await?;
    if !fields.is_empty() {
        return Ok(fields);
    }
    Ok(Profile::default()
        .fields
        .into_iter()
        .map(|f| ReportField {
            name: f.name,
            kind: "text".into(),
        })
        .collect())
}

/// What a report page shows of its pass.
struct Page<'a> {
    pass: &'a str,
    fields: &'a [ReportField],
    strip: String,
}

/// Writes one film's report to `target`; returns its number of frames.
async fn write_report(
    db: &Store,
    film: FilmFacts,
    target: &Path,
    page: Page<'_>,
    pass: i64,
) -> anyhow::Result<usize> {
    let folder = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file = tempfile::Builder::new()
        .prefix(".cinecut-report-")
        // A report is for reading: the usual 0644 under a 022 umask, not a temporary file's 0600.
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(folder)
        .with_context(|| format!("cannot write a report in {}", folder.display()))?;
    let bar = progress(film.frame_count, &film.title);
    let (film_id, video) = (film.id, film.is_video);
    let out = std::io::BufWriter::new(file);
    let mut report = Report::start(out, film, page.pass, page.fields, page.strip)?;
    let (mut after, mut frames, mut missing) = (-1, 0, Vec::new());
    loop {
        let page = db.report_page(film_id, pass, after).await?;
        let Some(last) = page.last() else { break };
        after = last.frame_index;
        let (page, thumbs) = tokio::task::spawn_blocking(move || {
            let thumbs = thumbnails(&page, video);
            (page, thumbs)
        })
        .await?;
        for (frame, thumb) in page.iter().zip(&thumbs) {
            report.card(frame, thumb.as_ref())?;
            if let Err(e) = thumb {
                missing.push(e.0.clone());
            }
        }
        frames += page.len();
        if let Some(b) = &bar {
            b.set_position(frames as u64);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(first) = missing.first() {
        tracing::warn!(
            "{} frame(s) shown without a thumbnail; the first: {first}",
            missing.len()
        );
    }
    let file = report.finish()?.into_inner().map_err(|e| e.into_error())?;
    file.persist(target)
        .with_context(|| format!("cannot write {}", target.display()))?;
    Ok(frames)
}

/// Where each film's report goes: `-o FILE.html` for one film; else a
/// folder's `<title>.html` (the folder `-o` names, made if missing, or the
/// current folder).
fn destinations(films: &[FilmFacts], output: Option<&Path>) -> anyhow::Result<Vec<PathBuf>> {
    let is_html = |p: &Path| {
        p.extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"))
    };
    let folder = match output {
        Some(path) if is_html(path) && films.len() == 1 => return Ok(vec![path.to_path_buf()]),
        Some(path) if is_html(path) => anyhow::bail!(
            "-o {} names one file, but {} films are reported; give a folder, or one --film",
            path.display(),
            films.len()
        ),
        Some(path) => {
            std::fs::create_dir_all(path)
                .with_context(|| format!("cannot make the folder {}", path.display()))?;
            path.to_path_buf()
        }
        None => PathBuf::new(),
    };
    let mut taken = std::collections::HashSet::new();
    Ok(films
        .iter()
        .map(|f| {
            let mut name = file_name(&f.title);
            if !taken.insert(name.clone()) {
                // Two titles that differ only in characters a file name cannot have.
                name = format!("{name}-{}", f.id);
                taken.insert(name.clone());
            }
            folder.join(format!("{name}.html"))
        })
        .collect())
}

/// A film title as a file name: no path separators, control characters
/// or leading dot; at most 120 characters.
fn file_name(title: &str) -> String {
    let name: String = title
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .take(120)
        .collect();
    let name = name.trim();
    match name.strip_prefix('.') {
        _ if name.is_empty() => "film".into(),
        Some(rest) => format!("_{rest}"),
        None => name.into(),
    }
}

/// A bar on stderr when it is a terminal.
fn progress(frames: i64, title: &str) -> Option<indicatif::ProgressBar> {
    std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let b = indicatif::ProgressBar::new(frames.max(0) as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} frames  {msg}")
                .expect("template")
                .progress_chars("=> "),
        );
        b.set_message(format!("report for {title}"));
        b
    })
}

#[cfg(test)]
mod tests {
    use super::file_name;

    #[test]
    fn titles_become_safe_file_names() {
        assert_eq!(
            file_name("Night of the Living Dead"),
            "Night of the Living Dead"
        );
        assert_eq!(file_name("a/b\\c\nd"), "a_b_c_d");
        assert_eq!(file_name(".hidden"), "_hidden");
        assert_eq!(file_name("  "), "film");
        assert_eq!(file_name(&"x".repeat(300)).len(), 120);
    }
}
