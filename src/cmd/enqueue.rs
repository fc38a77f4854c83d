//! `cinecut enqueue`: films, folders, globs and manifests into the queue.

use std::io::Write;

use crate::cli::{EnqueueArgs, PickArg, SelectArg};
use crate::db::Store;
use crate::error::Error;
use crate::ingest::subtitles::SubtitleSource;
use crate::ingest::{self, EnqueueOptions, EnqueueSummary, Inputs, film::FilmOptions};

pub async fn run(db: &Store, args: EnqueueArgs) -> anyhow::Result<()> {
    if args.subtitles.is_some() && args.inputs.len() > 1 {
        anyhow::bail!(
            "--subtitles is one film's dialogue, and {} inputs were given; enqueue that film on its own",
            args.inputs.len()
        );
    }
    let (inputs, opts) = inputs_and_options(&args);
    let film = film_options(frames_dir_of(db, &args), &args);
    let summary = ingest::enqueue_inputs(db, &inputs, &film, &opts).await?;
    report(&summary, &args)
}

fn inputs_and_options(args: &EnqueueArgs) -> (Inputs, EnqueueOptions) {
    let inputs = Inputs {
        paths: args.inputs.clone(),
        manifest: args.manifest.clone(),
    };
    let opts = EnqueueOptions {
        strict: args.strict,
        title: args.film.clone(),
        priority: args.priority,
        max_attempts: args.max_attempts,
        chunk_size: args.chunk_size as usize,
        passes: args.pass.clone(),
        dedupe_distance: (!args.no_dedupe).then_some(args.dedupe_distance),
        store_frames: args.store_frames,
    };
    (inputs, opts)
}

/// Prints the summary and turns rejections into the command's error.
fn report(summary: &EnqueueSummary, args: &EnqueueArgs) -> anyhow::Result<()> {
    print(summary, args.json)?;
    for r in &summary.failed_videos {
        tracing::error!("video {}: {}", r.path, r.reason);
    }
    for r in &summary.rejected {
        tracing::error!("rejected {}: {}", r.path, r.reason);
    }
    if !summary.rejected.is_empty() {
        return Err(Error::FramesRejected {
            rejected: summary.rejected.len(),
            enqueued_anyway: !args.strict,
        }
        .into());
    }
    if !summary.failed_videos.is_empty() {
        return Err(Error::VideosFailed {
            failed: summary.failed_videos.len(),
            videos: summary.videos as usize,
            enqueued_anyway: !args.strict,
        }
        .into());
    }
    if summary.new > 0 {
        tracing::info!(
            "enqueued {} frames in {:.2} s ({:.0} frames/s)",
            summary.new,
            summary.seconds,
            summary.new as f64 / summary.seconds.max(1e-9)
        );
    }
    Ok(())
}

/// `--pick`, `--per-shot` and `--min-shot` shape shots, which only scene
/// mode has: given with another `--select`, they are a usage error (exit 2)
/// rather than silently ignored.
pub fn shot_flags_need_scene_mode(args: &EnqueueArgs) {
    if args.select == SelectArg::Scene {
        return;
    }
    let given = [
        (args.pick.is_some(), "--pick"),
        (args.per_shot.is_some(), "--per-shot"),
        (args.min_shot.is_some(), "--min-shot"),
    ];
    if let Some((_, flag)) = given.iter().find(|(given, _)| *given) {
        let select = clap::ValueEnum::to_possible_value(&args.select)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default();
        <crate::cli::Cli as clap::CommandFactory>::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                format!("{flag} shapes the shots of --select scene; it has no meaning with --select {select}"),
            )
            .exit();
    }
}

/// Where films put their frames by default: next to a SQLite database
/// file (`<db>-frames`); `cinecut-frames` in the current folder for a
/// PostgreSQL database, which has no file to stand beside.
fn frames_dir_of(db: &Store, args: &EnqueueArgs) -> std::path::PathBuf {
    args.frames_dir.clone().unwrap_or_else(|| match db.file() {
        Some(file) => {
            let stem = file
                .file_stem()
                .map_or_else(|| "cinecut".into(), |s| s.to_string_lossy().into_owned());
            file.with_file_name(format!("{stem}-frames"))
        }
        None => std::path::PathBuf::from("cinecut-frames"),
    })
}

/// How videos become frames.
fn film_options(frames_dir: std::path::PathBuf, args: &EnqueueArgs) -> FilmOptions {
    FilmOptions {
        select: args.select.into(),
        scene_threshold: args.scene_threshold,
        colour_threshold: args.colour_threshold,
        max_gap_s: args.max_gap,
        min_shot_s: args.min_shot.unwrap_or(0.6),
        pick: args.pick.unwrap_or(PickArg::Middle).into(),
        per_shot: args.per_shot,
        every_s: args.every,
        max_side: args.max_side,
        frames_dir,
        replace: args.replace,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        dedupe_distance: (!args.no_dedupe).then_some(args.dedupe_distance),
        subtitles: match (&args.subtitles, args.subtitle_stream, args.no_subtitles) {
            (_, _, true) => SubtitleSource::Off,
            (Some(file), _, _) => SubtitleSource::File(file.clone()),
            (None, Some(n), _) => SubtitleSource::Stream(n),
            (None, None, false) => SubtitleSource::Auto,
        },
    }
}

fn print(summary: &EnqueueSummary, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, summary)?;
        writeln!(out)?;
        return Ok(());
    }
    for film in &summary.films {
        writeln!(
            out,
            "film {:?}: {} new, {} already queued{}{}",
            film.title,
            film.new,
            film.already,
            match film.near_duplicates {
                0 => String::new(),
                n => format!(
                    " ({n} near-duplicates: they get the description of the frame they repeat)"
                ),
            },
            match film.dialogue_lines {
                0 => String::new(),
                n => format!(", {n} subtitle lines"),
            }
        )?;
    }
    if summary.films.len() > 1 {
        writeln!(
            out,
            "total: {} new, {} already queued",
            summary.new, summary.already
        )?;
    }
    Ok(())
}
