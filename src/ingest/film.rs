//! Films from video files: `ffprobe` for the facts, one `ffmpeg` pass for
//! the keyframes, each written as a JPEG with its presentation time.
//!
//! Timestamps come from ffmpeg itself (`showinfo`'s `pts_time` after the
//! `select` filter), never from an index and a nominal frame rate. ffmpeg is
//! run with an argument vector, never through a shell. A re-enqueued file
//! (same path, size and mtime) runs no ffmpeg at all.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::Serialize;

use crate::db::Db;
use crate::db::queue::{self, FrameChunk, NewFrame, VideoFilm};
use crate::error::{Error, Result};

/// How frames are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
pub enum SelectMode {
    /// Scene cuts, plus the first frame, plus one at least every --max-gap seconds.
    #[default]
    Scene,
    /// One frame every --every seconds.
    Interval,
    /// The stream's own key frames (fastest: no full decode).
    Keyframes,
    /// Every frame (short clips).
    All,
}

/// How a video becomes frames.
#[derive(Debug, Clone)]
pub struct FilmOptions {
    pub select: SelectMode,
    pub scene_threshold: f64,
    pub max_gap_s: f64,
    pub every_s: f64,
    pub max_side: u32,
    /// Frames go to `frames_dir/<film id>/`.
    pub frames_dir: PathBuf,
    pub replace: bool,
    pub title: Option<String>,
    pub priority: i64,
    pub max_attempts: i64,
    pub progress: bool,
}

/// What enqueuing one video did.
#[derive(Debug, Clone, Serialize)]
pub struct FilmResult {
    pub title: String,
    pub film_id: i64,
    pub new: u64,
    pub already: u64,
    /// Where decoding stopped early, for a damaged file.
    pub warning: Option<String>,
    pub seconds: f64,
}

/// The facts ffprobe gives about a video.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub duration_ms: Option<i64>,
    pub fps: Option<f64>,
    pub width: Option<i64>,
    pub height: Option<i64>,
}

fn tool_missing(tool: &str, e: std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        format!(
            "{tool} is not installed; install it with `apt-get install ffmpeg` (or scripts/setup.sh)"
        )
    } else {
        format!("cannot run {tool}: {e}")
    }
}

/// Why a file could not be probed; the caller decides on the variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeFailure {
    /// ffprobe itself could not run (not installed, not executable).
    #[error("{0}")]
    Tool(String),
    /// ffprobe ran and rejected the file: its reason.
    #[error("{0}")]
    File(String),
}

/// Probes `path`.
pub fn probe(path: &Path) -> std::result::Result<Probe, ProbeFailure> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .arg("stream=width,height,avg_frame_rate,codec_type:format=duration,format_name")
        .args(["-of", "json"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ProbeFailure::Tool(tool_missing("ffprobe", e)))?;
    if !out.status.success() {
        let reason = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(ProbeFailure::File(if reason.is_empty() {
            format!("ffprobe failed ({})", out.status)
        } else {
            reason
        }));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| ProbeFailure::File(format!("unreadable ffprobe output: {e}")))?;
    let stream = &v["streams"][0];
    if stream.is_null() {
        return Err(ProbeFailure::File("no video stream".into()));
    }
    let fps = stream["avg_frame_rate"].as_str().and_then(|r| {
        let (a, b) = r.split_once('/')?;
        let (a, b): (f64, f64) = (a.parse().ok()?, b.parse().ok()?);
        (b > 0.0 && a > 0.0).then(|| a / b)
    });
    let duration_ms = v["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse::<f64>().ok())
        .map(|d| (d * 1000.0).round() as i64);
    Ok(Probe {
        duration_ms,
        fps,
        width: stream["width"].as_i64(),
        height: stream["height"].as_i64(),
    })
}

/// The `-vf` chain for `opts` (the select step, the downscale, showinfo).
pub fn filter_chain(opts: &FilmOptions) -> String {
    let mut steps = Vec::new();
    match opts.select {
        SelectMode::Scene => steps.push(format!(
            "select='gt(scene\\,{})+isnan(prev_selected_t)+gte(t-prev_selected_t\\,{})'",
            opts.scene_threshold, opts.max_gap_s
        )),
        SelectMode::Interval => steps.push(format!(
            "select='isnan(prev_selected_t)+gte(t-prev_selected_t\\,{})'",
            opts.every_s
        )),
        SelectMode::Keyframes | SelectMode::All => {}
    }
    let m = opts.max_side;
    steps.push(format!(
        "scale=w='if(gte(iw\\,ih)\\,min(iw\\,{m})\\,-2)':h='if(gte(iw\\,ih)\\,-2\\,min(ih\\,{m}))'"
    ));
    steps.push("showinfo".into());
    steps.join(",")
}

struct Extracted {
    frames: Vec<NewFrame>,
    warning: Option<String>,
}

fn extract(
    video: &Path,
    out_dir: &Path,
    probe: &Probe,
    opts: &FilmOptions,
) -> std::result::Result<Extracted, String> {
    std::fs::create_dir_all(out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-nostats", "-loglevel", "info"]);
    if opts.select == SelectMode::Keyframes {
        cmd.args(["-skip_frame", "nokey"]);
    }
    cmd.arg("-i").arg(video);
    cmd.args([
        "-map",
        "0:v:0",
        "-an",
        "-sn",
        "-dn",
        "-vf",
        &filter_chain(opts),
    ]);
    cmd.args([
        "-fps_mode",
        "passthrough",
        "-q:v",
        "3",
        "-progress",
        "pipe:1",
        "-y",
    ]);
    cmd.arg(out_dir.join("frame_%06d.jpg"));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| tool_missing("ffmpeg", e))?;

    // Progress on stdout, showinfo and errors on stderr: read both at once.
    let stdout = child.stdout.take().expect("piped stdout");
    let duration_us = probe.duration_ms.unwrap_or(0) * 1000;
    let show = opts.progress;
    let progress = std::thread::spawn(move || {
        let bar = show.then(|| {
            let bar = indicatif::ProgressBar::new(duration_us.max(1) as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} extracting frames [{bar:30}] {percent}% {msg}",
                )
                .expect("template")
                .progress_chars("=> "),
            );
            bar
        });
        let mut last_log = Instant::now();
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            if let Some(us) = line
                .strip_prefix("out_time_us=")
                .and_then(|v| v.parse::<i64>().ok())
            {
                match &bar {
                    Some(b) => b.set_position(us.max(0) as u64),
                    None if last_log.elapsed().as_secs() >= 5 => {
                        tracing::info!(
                            "extracting frames: {:.0} s of {:.0} s",
                            us as f64 / 1e6,
                            duration_us as f64 / 1e6
                        );
                        last_log = Instant::now();
                    }
                    None => {}
                }
            } else if let (Some(b), Some(speed)) = (&bar, line.strip_prefix("speed=")) {
                b.set_message(format!("speed {speed}"));
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
    });

    let stderr = child.stderr.take().expect("piped stderr");
    let mut frames = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
        if line.contains("Parsed_showinfo") && line.contains(" n:") {
            if let Some(f) = parse_showinfo(&line, out_dir) {
                frames.push(f);
            }
        } else if is_error_line(&line) {
            if errors.len() == 20 {
                errors.remove(0);
            }
            errors.push(line);
        }
    }
    let status = child.wait().map_err(|e| format!("ffmpeg: {e}"))?;
    progress.join().ok();
    // Only frames whose file was written count.
    frames.retain(|f| Path::new(&f.path).is_file());
    let last_ms = frames.last().and_then(|f| f.pts_ms).unwrap_or(0);
    let reason = errors
        .last()
        .cloned()
        .unwrap_or_else(|| format!("ffmpeg exited with {status}"));
    if frames.is_empty() {
        return Err(if status.success() {
            "the video has no decodable frames".into()
        } else {
            reason
        });
    }
    let warning = (!status.success() || !errors.is_empty()).then(|| {
        format!(
            "decoding stopped or failed near {:.3} s of {:.3} s: {reason}",
            last_ms as f64 / 1000.0,
            probe.duration_ms.unwrap_or(0) as f64 / 1000.0
        )
    });
    Ok(Extracted { frames, warning })
}

fn is_error_line(line: &str) -> bool {
    let l = line.to_ascii_lowercase();
    (l.contains("error")
        || l.contains("invalid data")
        || l.contains("corrupt")
        || l.contains("truncat")
        || l.contains("partial file")
        || l.contains("prematurely"))
        && !l.contains("showinfo")
}

/// One `showinfo` line: `n` (output frame number), `pts_time`, size `s:WxH`.
fn parse_showinfo(line: &str, out_dir: &Path) -> Option<NewFrame> {
    let field = |name: &str| -> Option<&str> {
        let i = line.find(name)? + name.len();
        let rest = line[i..].trim_start();
        Some(&rest[..rest.find(' ').unwrap_or(rest.len())])
    };
    let n: i64 = field(" n:")?.parse().ok()?;
    let pts: f64 = field(" pts_time:")?.parse().ok()?;
    let (w, h) = field(" s:")
        .and_then(|s| s.split_once('x'))
        .map_or((None, None), |(w, h)| (w.parse().ok(), h.parse().ok()));
    let path = out_dir.join(format!("frame_{:06}.jpg", n + 1));
    Some(NewFrame {
        path: path.to_string_lossy().into_owned(),
        frame_index: Some(n),
        pts_ms: Some((pts * 1000.0).round().max(0.0) as i64),
        width: w,
        height: h,
    })
}

/// Whether `path` should be treated as a video: an existing file that is not
/// an image by extension and in which ffprobe finds a video stream.
pub fn looks_like_video(path: &Path) -> bool {
    path.is_file() && !super::frames::is_image_path(path)
}

/// Enqueues one video as a film.
pub async fn enqueue_video(db: &Db, video: &Path, opts: &FilmOptions) -> Result<FilmResult> {
    let started = Instant::now();
    let fail = |reason: String| Error::Video {
        path: video.to_path_buf(),
        reason,
    };
    let canonical = std::fs::canonicalize(video).map_err(|e| fail(e.to_string()))?;
    let meta = std::fs::metadata(&canonical).map_err(|e| fail(e.to_string()))?;
    let mtime_ms = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64);
    let mut spec = VideoFilm {
        title: opts.title.clone().unwrap_or_else(|| {
            canonical
                .file_stem()
                .map_or_else(|| "film".into(), |s| s.to_string_lossy().into_owned())
        }),
        source_path: canonical.to_string_lossy().into_owned(),
        source_size: meta.len() as i64,
        source_mtime_ms: mtime_ms,
        priority: opts.priority,
        ..VideoFilm::default()
    };
    let existing = queue::find_video_film(db.pool(), &spec).await?;
    if let Some((film_id, _, 0)) = existing {
        // An earlier run stopped before its frames were enqueued: start over.
        queue::delete_film(db.pool(), film_id).await?;
    } else if !opts.replace
        && let Some((film_id, title, frames)) = existing
    {
        return Ok(FilmResult {
            title,
            film_id,
            new: 0,
            already: frames as u64,
            warning: None,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    if opts.replace {
        for old in queue::films_from_path(db.pool(), &spec.source_path).await? {
            tracing::info!(
                film_id = old,
                "--replace: removing the earlier film of this file"
            );
            queue::delete_film(db.pool(), old).await?;
        }
    }
    if meta.len() == 0 {
        return Err(fail("the file is empty (zero length)".into()));
    }
    let probed = {
        let path = canonical.clone();
        tokio::task::spawn_blocking(move || probe(&path))
            .await
            .expect("probe thread")
            .map_err(|failure| match failure {
                ProbeFailure::Tool(reason) => fail(reason),
                ProbeFailure::File(reason) => {
                    fail(format!("not a video or image file (ffprobe: {reason})"))
                }
            })?
    };
    if probed.duration_ms == Some(0) {
        return Err(fail("the video has zero duration".into()));
    }
    spec.fps = probed.fps;
    spec.duration_ms = probed.duration_ms;
    spec.width = probed.width;
    spec.height = probed.height;
    let (film_id, title) = queue::create_video_film(db.pool(), &spec).await?;
    let out_dir = opts.frames_dir.join(film_id.to_string());
    // Stored paths are canonical, like every other frame's.
    let out_dir =
        match std::fs::create_dir_all(&out_dir).and_then(|()| std::fs::canonicalize(&out_dir)) {
            Ok(d) => d,
            Err(e) => {
                queue::delete_film(db.pool(), film_id).await?;
                return Err(fail(format!(
                    "cannot create the frames folder {}: {e}",
                    out_dir.display()
                )));
            }
        };
    let extracted = {
        let (canonical, out_dir, probed, opts) = (
            canonical.clone(),
            out_dir.clone(),
            probed.clone(),
            opts.clone(),
        );
        tokio::task::spawn_blocking(move || extract(&canonical, &out_dir, &probed, &opts))
            .await
            .expect("ffmpeg thread")
    };
    let extracted = match extracted {
        Ok(x) => x,
        Err(reason) => {
            queue::delete_film(db.pool(), film_id).await?;
            std::fs::remove_dir_all(&out_dir).ok();
            return Err(fail(reason));
        }
    };
    if let Some(w) = &extracted.warning {
        tracing::warn!(
            "{}: {w}; enqueuing the {} frames decoded",
            video.display(),
            extracted.frames.len()
        );
    }
    let mut new = 0;
    let mut loader = db.bulk_loader().await?;
    for chunk in extracted.frames.chunks(20_000) {
        new += queue::enqueue_chunk(
            &mut loader,
            film_id,
            &FrameChunk::new(chunk),
            opts.max_attempts,
        )
        .await?
        .inserted;
    }
    Ok(FilmResult {
        title,
        film_id,
        new,
        already: 0,
        warning: extracted.warning,
        seconds: started.elapsed().as_secs_f64(),
    })
}
