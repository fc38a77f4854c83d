//! A video's facts (`ffprobe`) and the `ffmpeg` arguments that turn it
//! into frames: the frame selection (`--select`), the filter chain (scale
//! to `--max-side`, a thumbnail and a 9×8 grey copy split from the same
//! decode), the output names. Arguments are vectors, never a shell string.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

use super::shots::Pick;
use super::subtitles::SubtitleSource;

/// The 9×8 grey pixels of every extracted frame, in order (72 bytes each),
/// from which the frames' difference hashes are made; removed after.
pub(super) const HASH_FILE: &str = "dhash.gray";

/// How frames are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum SelectMode {
    /// Shots between scene cuts, a frame (--pick) of each, more of a long one.
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
    /// Scene mode: the colour score a cut passes (0–255, [`super::cuts`]).
    pub colour_threshold: f64,
    pub max_gap_s: f64,
    /// Scene mode: a cut this close (seconds) to the previous cut is ignored.
    pub min_shot_s: f64,
    /// Scene mode: which frame of a shot stands for it.
    pub pick: Pick,
    /// Scene mode: frames for a shot longer than --max-gap (default: one
    /// per --max-gap of it).
    pub per_shot: Option<u32>,
    pub every_s: f64,
    pub max_side: u32,
    /// Frames go to `frames_dir/<film id>/`.
    pub frames_dir: PathBuf,
    pub replace: bool,
    pub progress: bool,
    /// Where the film's dialogue comes from.
    pub subtitles: SubtitleSource,
    /// Frames within this many bits (of 64) of the last original frame are
    /// near-duplicates, not sent to the model; `None`: no dedupe.
    pub dedupe_distance: Option<u32>,
}

/// The facts ffprobe gives about a video.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub duration_ms: Option<i64>,
    pub fps: Option<f64>,
    pub width: Option<i64>,
    pub height: Option<i64>,
}

pub(super) fn tool_missing(tool: &str, e: std::io::Error) -> String {
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

/// Where extraction writes the thumbnail of the video frame at `frame`:
/// `thumbs/` beside it, same name (a 320-pixel JPEG that `cinecut report`
/// inlines instead of decoding the frame again).
pub fn thumbnail_path(frame: &Path) -> PathBuf {
    let name = frame.file_name().unwrap_or_default();
    frame.with_file_name("thumbs").join(name)
}

/// Longest side of the thumbnails extraction writes.
pub const THUMBNAIL_SIDE: u32 = 320;

/// ffmpeg's arguments after the input for one extraction pass: the
/// selected frames of the first video stream ([`filter_chain`]) as
/// `frame_%06d.jpg` in `out_dir`, and the same frames at
/// [`THUMBNAIL_SIDE`] in `out_dir/thumbs/` (split from the same decode, so
/// they cost a downscale, not a second pass).
pub fn output_args(opts: &FilmOptions, out_dir: &Path) -> Vec<std::ffi::OsString> {
    let graph = format!(
        "[0:v:0]{},split=3[frame][thumb][hash];[thumb]{}[small];\
         [hash]scale=9:8:flags=area,format=gray[tiny]",
        filter_chain(opts),
        fit_within(THUMBNAIL_SIDE)
    );
    let mut args: Vec<std::ffi::OsString> =
        ["-filter_complex", &graph].iter().map(Into::into).collect();
    let output = |label: &str, format: &[&str], file: PathBuf| -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = ["-map", label, "-fps_mode", "passthrough"]
            .iter()
            .chain(format)
            .chain(&["-y"])
            .map(Into::into)
            .collect();
        a.push(file.into());
        a
    };
    args.extend(output(
        "[frame]",
        &["-q:v", "3"],
        out_dir.join("frame_%06d.jpg"),
    ));
    args.extend(output(
        "[small]",
        &["-q:v", "5"],
        thumbnail_path(&out_dir.join("frame_%06d.jpg")),
    ));
    args.extend(output(
        "[tiny]",
        &["-f", "rawvideo"],
        out_dir.join(HASH_FILE),
    ));
    args
}

/// The frame selection of `opts` as the flags that give it (what a film
/// remembers, so that enqueuing it again with other flags is not ignored).
pub fn selection_flags(opts: &FilmOptions) -> String {
    let how = match opts.select {
        SelectMode::Scene => format!(
            "--select scene --scene-threshold {} --colour-threshold {} --max-gap {} --min-shot {} --pick {}{}",
            opts.scene_threshold,
            opts.colour_threshold,
            opts.max_gap_s,
            opts.min_shot_s,
            opts.pick.flag(),
            opts.per_shot
                .map(|n| format!(" --per-shot {n}"))
                .unwrap_or_default()
        ),
        SelectMode::Interval => format!("--select interval --every {}", opts.every_s),
        SelectMode::Keyframes => "--select keyframes".into(),
        SelectMode::All => "--select all".into(),
    };
    format!("{how} --max-side {}", opts.max_side)
}

/// The `-vf` chain for `opts` (the select step, the downscale, showinfo).
pub fn filter_chain(opts: &FilmOptions) -> String {
    let mut steps = Vec::new();
    match opts.select {
        // The time of the last cut taken is the expression's variable 0
        // (0 at the start, which counts as a cut): a cut is taken only
        // --min-shot after it, and an ignored one does not move it.
        SelectMode::Scene => steps.push(format!(
            "select='if(gt(scene\\,{})*gte(t-ld(0)\\,{})\\,st(0\\,t)+1\\,0)\
             +isnan(prev_selected_t)+gte(t-prev_selected_t\\,{})'",
            opts.scene_threshold, opts.min_shot_s, opts.max_gap_s
        )),
        SelectMode::Interval => steps.push(format!(
            "select='isnan(prev_selected_t)+gte(t-prev_selected_t\\,{})'",
            opts.every_s
        )),
        SelectMode::Keyframes | SelectMode::All => {}
    }
    steps.push(fit_within(opts.max_side));
    steps.push("showinfo".into());
    steps.join(",")
}

/// ffmpeg's `scale` to a longest side of at most `side` (never up), even sizes.
pub(super) fn fit_within(side: u32) -> String {
    format!(
        "scale=w='if(gte(iw\\,ih)\\,min(iw\\,{side})\\,-2)':h='if(gte(iw\\,ih)\\,-2\\,min(ih\\,{side}))'"
    )
}

/// ffmpeg, reading no stdin, logging at info (showinfo and errors on stderr).
pub(super) fn ffmpeg() -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-nostats", "-loglevel", "info"]);
    cmd
}
