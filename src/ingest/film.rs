//! Films from video files: `ffprobe` for the facts, one `ffmpeg` decode for
//! the frames to keep (scene mode: for the shots, whose picked frames are
//! then read by seeking, see [`super::shots`]), each written as a JPEG with
//! its presentation time.
//!
//! Timestamps come from ffmpeg itself (`showinfo`'s `pts_time` of the frame
//! written), never from an index and a nominal frame rate. ffmpeg is
//! run with an argument vector, never through a shell. A re-enqueued file
//! (same path, size and mtime) runs no ffmpeg at all.

use std::path::{Path, PathBuf};

use super::extract::extract;
use super::probe::selection_flags;
pub use super::probe::{FilmOptions, Probe, ProbeFailure, SelectMode, probe, thumbnail_path};
use super::subtitles::{self, SubtitleSource};
use super::{EnqueueOptions, FilmSummary};
use crate::db::Loader;
use crate::db::Store;
use crate::db::load::FrameLoader;
use crate::db::queue::{NewFrame, VideoFilm};
use crate::error::{Error, Result};

/// Whether `path` should be treated as a video: an existing file that is not
/// an image by extension and in which ffprobe finds a video stream.
pub fn looks_like_video(path: &Path) -> bool {
    path.is_file() && !super::frames::is_image_path(path)
}

/// A video file, opened: where it really is, and its size and mtime (a
/// re-enqueued file with the same three is the same film).
struct VideoFile {
    canonical: PathBuf,
    size: i64,
    mtime_ms: i64,
}

impl VideoFile {
    fn open(video: &Path) -> std::result::Result<VideoFile, String> {
        let canonical = std::fs::canonicalize(video).map_err(|e| e.to_string())?;
        let meta = std::fs::metadata(&canonical).map_err(|e| e.to_string())?;
        let mtime_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        Ok(VideoFile {
            canonical,
            size: meta.len() as i64,
            mtime_ms,
        })
    }

    /// ffprobe's facts, or why this is no video to extract frames from.
    async fn probe(&self) -> std::result::Result<Probe, String> {
        if self.size == 0 {
            return Err("the file is empty (zero length)".into());
        }
        let path = self.canonical.clone();
        let probed = tokio::task::spawn_blocking(move || probe(&path))
            .await
            .expect("probe thread")
            .map_err(|failure| match failure {
                ProbeFailure::Tool(reason) => reason,
                ProbeFailure::File(reason) => {
                    format!("not a video or image file (ffprobe: {reason})")
                }
            })?;
        if probed.duration_ms == Some(0) {
            return Err("the video has zero duration".into());
        }
        Ok(probed)
    }
}

/// Checks that `video` can be read as a video, writing nothing (`--strict`).
pub async fn check_video(video: &Path) -> Result<()> {
    let file = VideoFile::open(video).map_err(|reason| video_error(video, reason))?;
    file.probe()
        .await
        .map(|_| ())
        .map_err(|reason| video_error(video, reason))
}

fn video_error(video: &Path, reason: String) -> Error {
    Error::Video {
        path: video.to_path_buf(),
        reason,
    }
}

/// A video's film title: `--film`, else the file's name without its
/// extension.
fn film_title(opts: &EnqueueOptions, file: &VideoFile) -> String {
    opts.title.clone().unwrap_or_else(|| {
        file.canonical
            .file_stem()
            .map_or_else(|| "film".into(), |s| s.to_string_lossy().into_owned())
    })
}

/// The refusal of a film enqueued before with another frame selection
/// (`before`) than `now`: nothing is changed unless `--replace`.
fn other_selection(title: &str, before: Option<&String>, now: &str) -> Option<String> {
    let before = before.filter(|e| *e != now)?;
    Some(format!(
        "already enqueued as film {title:?} with other frame selection ({before}); \
         nothing was changed. To extract it again with {now}, add --replace (the film's \
         frames and descriptions are replaced), or give --film with a new title"
    ))
}

/// Where film `film_id`'s frames go under `--frames-dir`, the same on
/// both backends: `<frames-dir>/<film id>/`.
fn film_frames(frames_dir: &Path, film_id: i64) -> PathBuf {
    frames_dir.join(film_id.to_string())
}

/// Enqueues one video as a film: probes it, extracts its frames, enqueues
/// them. A file enqueued before (same path, size and mtime) runs no ffmpeg;
/// a failure after the film row was made leaves neither it nor its frames
/// folder behind.
pub async fn enqueue_video(
    db: &Store,
    video: &Path,
    film: &FilmOptions,
    opts: &EnqueueOptions,
) -> Result<FilmSummary> {
    let fail = |reason: String| video_error(video, reason);
    let file = VideoFile::open(video).map_err(fail)?;
    let mut spec = VideoFilm {
        title: film_title(opts, &file),
        source_path: file.canonical.to_string_lossy().into_owned(),
        source_size: file.size,
        source_mtime_ms: file.mtime_ms,
        priority: opts.priority,
        ..VideoFilm::default()
    };
    spec.extraction = selection_flags(film);
    // With --film, the film of that title (another title is another film of
    // the same file); else the file's film.
    match db.find_video_film(&spec, opts.title.as_deref()).await? {
        // An earlier run stopped before its frames were enqueued: start over.
        Some(old) if old.frame_count == 0 => db.delete_film(old.id).await?,
        Some(old) if !film.replace => {
            if let Some(refusal) =
                other_selection(&old.title, old.extraction.as_ref(), &spec.extraction)
            {
                return Err(fail(refusal));
            }
            // A film enqueued before: its dialogue when asked for, or when
            // it has none yet (enqueued before dialogue was read).
            let wanted =
                film.subtitles != SubtitleSource::Auto || !db.has_subtitles(old.id).await?;
            let dialogue = if wanted {
                dialogue(&film.subtitles, &file.canonical)
                    .await
                    .map_err(fail)?
            } else {
                None
            };
            let dialogue_lines = store_dialogue(db, old.id, dialogue).await?;
            return Ok(FilmSummary {
                title: old.title,
                film_id: old.id,
                new: 0,
                already: old.frame_count as u64,
                warning: None,
                dialogue_lines,
                near_duplicates: 0,
            });
        }
        _ => {}
    }
    if film.replace {
        for old in db.films_from_path(&spec.source_path).await? {
            tracing::info!(
                film_id = old,
                "--replace: removing the earlier film of this file"
            );
            db.delete_film(old).await?;
        }
    }
    let probed = file.probe().await.map_err(fail)?;
    // Read before anything is written: a subtitle file that cannot be read
    // stops the enqueue with nothing changed.
    let dialogue = dialogue(&film.subtitles, &file.canonical)
        .await
        .map_err(fail)?;
    spec.fps = probed.fps;
    spec.duration_ms = probed.duration_ms;
    spec.width = probed.width;
    spec.height = probed.height;
    let (film_id, title) = db.create_video_film(&spec).await?;
    let out_dir = film_frames(&film.frames_dir, film_id);
    let spoken: Vec<(i64, i64)> = dialogue
        .as_ref()
        .map(|(_, lines)| lines.iter().map(|l| (l.start_ms, l.end_ms)).collect())
        .unwrap_or_default();
    let video = VideoIn {
        path: &file.canonical,
        probe: &probed,
        spoken,
    };
    match extract_and_enqueue(db, film_id, &video, &out_dir, film, opts).await {
        Ok(done) => Ok(FilmSummary {
            title,
            film_id,
            new: done.new,
            already: 0,
            warning: done.warning,
            dialogue_lines: store_dialogue(db, film_id, dialogue).await?,
            near_duplicates: done.near_duplicates,
        }),
        Err(e) => {
            // The one place a half-made film is undone.
            if let Err(undo) = db.delete_film(film_id).await {
                tracing::warn!("could not remove film #{film_id} after a failure: {undo}");
            }
            std::fs::remove_dir_all(&out_dir).ok();
            Err(match e {
                Step::Video(reason) => fail(reason),
                Step::Db(e) => e,
            })
        }
    }
}

/// The film's dialogue from `source`: `Ok(None)` when there is none to
/// read. A source the user named that cannot be read is an error; the
/// film's own stream that cannot be read (`Auto`) is a warning.
async fn dialogue(
    source: &SubtitleSource,
    video: &Path,
) -> std::result::Result<Option<(String, Vec<subtitles::Line>)>, String> {
    let (source, video) = (source.clone(), video.to_path_buf());
    let auto = source == SubtitleSource::Auto;
    let loaded = tokio::task::spawn_blocking(move || subtitles::load(&source, &video))
        .await
        .expect("subtitle thread");
    match loaded {
        Err(reason) if auto => {
            tracing::warn!("the film's subtitles cannot be read, so it has no dialogue: {reason}");
            Ok(None)
        }
        other => other,
    }
}

/// Stores the film's dialogue (replacing any it had); the number of lines.
async fn store_dialogue(
    db: &Store,
    film_id: i64,
    dialogue: Option<(String, Vec<subtitles::Line>)>,
) -> Result<u64> {
    let Some((origin, lines)) = dialogue else {
        return Ok(0);
    };
    db.replace_subtitles(film_id, &lines).await?;
    tracing::info!("dialogue: {} subtitle lines from {origin}", lines.len());
    Ok(lines.len() as u64)
}

/// Why extracting or enqueuing a video's frames stopped.
enum Step {
    /// The video's fault, or ffmpeg's: its reason.
    Video(String),
    Db(Error),
}

impl From<Error> for Step {
    fn from(e: Error) -> Step {
        Step::Db(e)
    }
}

/// Runs ffmpeg into `out_dir` and enqueues the frames it wrote; the number
/// enqueued, and a warning when decoding stopped early.
/// A video to extract: its file, what ffprobe said, and when its subtitle
/// lines are on screen (ms; scene mode takes a frame for a line no picked
/// frame of its shot shows).
struct VideoIn<'a> {
    path: &'a Path,
    probe: &'a Probe,
    spoken: Vec<(i64, i64)>,
}

async fn extract_and_enqueue(
    db: &Store,
    film_id: i64,
    video: &VideoIn<'_>,
    out_dir: &Path,
    film: &FilmOptions,
    opts: &EnqueueOptions,
) -> std::result::Result<Enqueued, Step> {
    // Stored paths are canonical, like every other frame's.
    let out_dir = std::fs::create_dir_all(out_dir)
        .and_then(|()| std::fs::canonicalize(out_dir))
        .map_err(|e| {
            Step::Video(format!(
                "cannot create the frames folder {}: {e}",
                out_dir.display()
            ))
        })?;
    let extracted = {
        let (path, out_dir, probed, film, spoken) = (
            video.path.to_path_buf(),
            out_dir.clone(),
            video.probe.clone(),
            film.clone(),
            video.spoken.clone(),
        );
        tokio::task::spawn_blocking(move || extract(&path, &out_dir, &probed, &film, &spoken))
            .await
            .expect("ffmpeg thread")
            .map_err(Step::Video)?
    };
    if let Some(w) = &extracted.warning {
        tracing::warn!(
            "{}: {w}; enqueuing the {} frames decoded",
            video.path.display(),
            extracted.frames.len()
        );
    }
    if !extracted.shots.is_empty() {
        db.insert_shots(film_id, video.probe.fps, &extracted.shots)
            .await?;
    }
    let new = load_frames(db, film_id, &extracted.frames, opts).await?;
    let near_duplicates = extracted
        .frames
        .iter()
        .filter(|f| f.duplicate_of.is_some())
        .count() as u64;
    Ok(Enqueued {
        new,
        near_duplicates,
        warning: extracted.warning,
    })
}

/// What [`extract_and_enqueue`] added.
struct Enqueued {
    new: u64,
    near_duplicates: u64,
    warning: Option<String>,
}

/// A film's extracted frames into the queue, a chunk at a time (read off
/// the runtime when their bytes are stored), each with a job in every pass
/// `opts` names; how many were new.
async fn load_frames(
    db: &Store,
    film_id: i64,
    frames: &[NewFrame],
    opts: &EnqueueOptions,
) -> std::result::Result<u64, Step> {
    match db.frame_loader(&opts.passes).await? {
        Loader::Sqlite(loader) => load_with(loader, film_id, frames, opts).await,
        Loader::Postgres(loader) => load_with(loader, film_id, frames, opts).await,
    }
}

async fn load_with<L: FrameLoader>(
    mut loader: L,
    film_id: i64,
    frames: &[NewFrame],
    opts: &EnqueueOptions,
) -> std::result::Result<u64, Step> {
    let mut new = 0;
    for chunk in frames.chunks(opts.chunk()) {
        let rows = super::film_rows::<L>(chunk, opts.store_frames)
            .await
            .map_err(Step::Video)?;
        new += loader
            .load(film_id, &rows, &opts.job_spec())
            .await?
            .inserted;
    }
    Ok(new)
}
