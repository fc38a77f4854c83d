//! Films from video files: `ffprobe` for the facts, one `ffmpeg` decode for
//! the frames to keep (scene mode: for the shots, whose picked frames are
//! then read by seeking, see [`super::shots`]), each written as a JPEG with
//! its presentation time.
//!
//! Timestamps come from ffmpeg itself (`showinfo`'s `pts_time` of the frame
//! written), never from an index and a nominal frame rate. ffmpeg is
//! run with an argument vector, never through a shell. A re-enqueued file
//! (same path, size and mtime) runs no ffmpeg at all.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::Serialize;

use super::dedupe::{Deduper, GREY_LEN};
use super::shots::{self, Pick};
use super::subtitles::{self, SubtitleSource};
use super::{EnqueueOptions, FilmSummary};
use crate::db::Db;
use crate::db::pg::PgDb;
use crate::db::queue::{self, NewFrame, VideoFilm};
use crate::error::{Error, Result};

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

/// The 9×8 grey pixels of every extracted frame, in order (72 bytes each),
/// from which the frames' difference hashes are made; removed after.
const HASH_FILE: &str = "dhash.gray";

/// [`dedupe`] with the grey copies of `out_dir`'s hash file, which it removes.
fn hash_and_dedupe(frames: &mut [NewFrame], out_dir: &Path, distance: Option<u32>) {
    let file = out_dir.join(HASH_FILE);
    let pixels = std::fs::read(&file).unwrap_or_default();
    std::fs::remove_file(&file).ok();
    dedupe(frames, &pixels, distance);
}

/// Sets each frame's hash (from `pixels`: frame `n`'s 9×8 grey copy at
/// byte 72·n) and, with `distance`, marks as a duplicate every frame near
/// the last frame of its shot (scene mode; else of the film) kept as an
/// original ([`Deduper`]).
fn dedupe(frames: &mut [NewFrame], pixels: &[u8], distance: Option<u32>) {
    let mut deduper = Deduper::new(distance);
    let mut shot = None;
    for f in frames.iter_mut() {
        // A new shot starts with an original.
        if f.shot != shot {
            deduper.restart();
            shot = f.shot;
        }
        let Some(n) = f.frame_index else { continue };
        let at = n as usize * GREY_LEN;
        match pixels
            .get(at..at + GREY_LEN)
            .and_then(|g| g.try_into().ok())
        {
            Some(grey) => deduper.see(f, grey),
            None => deduper.restart(),
        }
    }
}

/// The frame selection of `opts` as the flags that give it (what a film
/// remembers, so that enqueuing it again with other flags is not ignored).
pub fn selection_flags(opts: &FilmOptions) -> String {
    let how = match opts.select {
        SelectMode::Scene => format!(
            "--select scene --scene-threshold {} --max-gap {} --min-shot {} --pick {}{}",
            opts.scene_threshold,
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
fn fit_within(side: u32) -> String {
    format!(
        "scale=w='if(gte(iw\\,ih)\\,min(iw\\,{side})\\,-2)':h='if(gte(iw\\,ih)\\,-2\\,min(ih\\,{side}))'"
    )
}

/// ffmpeg, reading no stdin, logging at info (showinfo and errors on stderr).
fn ffmpeg() -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-nostats", "-loglevel", "info"]);
    cmd
}

struct Extracted {
    frames: Vec<NewFrame>,
    /// Scene mode: the film's shots (each frame names its own).
    shots: Vec<shots::Shot>,
    warning: Option<String>,
}

/// Runs one ffmpeg pass over `video` into `out_dir`: the frames showinfo
/// reported whose file was written, and a warning when decoding stopped or
/// failed part way.
fn extract(
    video: &Path,
    out_dir: &Path,
    probe: &Probe,
    opts: &FilmOptions,
    spoken: &[(i64, i64)],
) -> std::result::Result<Extracted, String> {
    let thumbs = thumbnail_path(&out_dir.join("frame"));
    std::fs::create_dir_all(thumbs.parent().expect("thumbs/ in out_dir"))
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    match opts.select {
        SelectMode::Scene => extract_shots(video, out_dir, probe, opts, spoken),
        _ => one_pass(video, out_dir, probe, opts),
    }
}

/// One ffmpeg pass over `video` into `out_dir` with the select step of
/// `opts` ([`output_args`]).
fn one_pass(
    video: &Path,
    out_dir: &Path,
    probe: &Probe,
    opts: &FilmOptions,
) -> std::result::Result<Extracted, String> {
    let mut cmd = ffmpeg();
    if opts.select == SelectMode::Keyframes {
        cmd.args(["-skip_frame", "nokey"]);
    }
    cmd.arg("-i").arg(video);
    cmd.args(output_args(opts, out_dir));
    cmd.args(["-progress", "pipe:1"]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| tool_missing("ffmpeg", e))?;

    // Progress on stdout, showinfo and errors on stderr: read both at once.
    let stdout = child.stdout.take().expect("piped stdout");
    let duration_us = probe.duration_ms.unwrap_or(0) * 1000;
    let progress = show_progress(stdout, duration_us, opts.progress, "extracting frames");

    let stderr = child.stderr.take().expect("piped stderr");
    let mut frames = Vec::new();
    let mut errors = ErrorLines::default();
    for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
        if line.contains("Parsed_showinfo") && line.contains(" n:") {
            if let Some(f) = parse_showinfo(&line, out_dir) {
                frames.push(f);
            }
        } else {
            errors.line(line);
        }
    }
    let status = child.wait().map_err(|e| format!("ffmpeg: {e}"))?;
    progress.join().ok();
    // Only frames whose file was written count.
    frames.retain(|f| Path::new(&f.path).is_file());
    hash_and_dedupe(&mut frames, out_dir, opts.dedupe_distance);
    let last_ms = frames.last().and_then(|f| f.pts_ms).unwrap_or(0);
    if frames.is_empty() {
        return Err(match status.success() {
            true => "the video has no decodable frames".into(),
            false => errors.reason(status),
        });
    }
    let warning = (!status.success() || !errors.is_empty()).then(|| {
        format!(
            "decoding stopped or failed near {:.3} s of {:.3} s: {}",
            last_ms as f64 / 1000.0,
            probe.duration_ms.unwrap_or(0) as f64 / 1000.0,
            errors.reason(status)
        )
    });
    Ok(Extracted {
        frames,
        shots: Vec::new(),
        warning,
    })
}

/// Scene mode ([`shots`]): the shot boundaries in one decode, and the
/// picked frames of every shot by seeking. A shot's picks are read as soon
/// as the next cut closes it, by ffmpeg processes that run beside the
/// boundaries pass (it leaves part of the cores idle), as many at once as
/// there are cores. The frames come back as from [`one_pass`], hashed,
/// each with its shot.
fn extract_shots(
    video: &Path,
    out_dir: &Path,
    probe: &Probe,
    opts: &FilmOptions,
    spoken: &[(i64, i64)],
) -> std::result::Result<Extracted, String> {
    let mut cmd = ffmpeg();
    cmd.args(shots::DETECT_INPUT_ARGS)
        .arg("-i")
        .arg(video)
        .args(shots::detect_args(opts.scene_threshold, opts.min_shot_s))
        .args(["-progress", "pipe:1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| tool_missing("ffmpeg", e))?;
    let duration_us = probe.duration_ms.unwrap_or(0) * 1000;
    let stdout = child.stdout.take().expect("piped stdout");
    let progress = show_progress(stdout, duration_us, opts.progress, "finding shots");
    let stderr = child.stderr.take().expect("piped stderr");

    let readers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let reader = PickReader::new(video, out_dir, opts, probe.fps);
    let (batches, queue) = std::sync::mpsc::channel::<(usize, Vec<shots::PickAt>)>();
    let queue = std::sync::Mutex::new(queue);
    let (picks, shots, status, errors, reached_us, damaged) = std::thread::scope(|scope| {
        for _ in 0..readers {
            scope.spawn(|| {
                loop {
                    // The lock is held only while waiting for a batch.
                    let next = queue.lock().expect("queue").recv();
                    let Ok((first, batch)) = next else { break };
                    reader.read(first, &batch);
                }
            });
        }
        let plan = |shots: &[shots::Shot]| {
            shots::picks(shots, opts.pick, opts.per_shot, opts.max_gap_s, spoken)
        };
        let mut cuts = shots::CutReader::default();
        let mut errors = ErrorLines::default();
        let mut picks: Vec<shots::PickAt> = Vec::new();
        let (mut closed, mut sent) = (0, 0);
        let send = |picks: &[shots::PickAt], sent: &mut usize, upto: usize| {
            if upto > *sent {
                batches.send((*sent, picks[*sent..upto].to_vec())).ok();
                *sent = upto;
            }
        };
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            let before = cuts.cuts.len();
            cuts.line(&line);
            errors.line(line);
            // A new cut closes the shot before it (the first frame, at 0,
            // closes nothing).
            let new_cut = cuts
                .cuts
                .last()
                .filter(|c| cuts.cuts.len() > before && c.0 > 0.0);
            if let Some(&(last, _)) = new_cut {
                let done = shots::shots(&cuts.cuts, last);
                picks.extend(plan(&done[closed..]));
                closed = done.len();
                if picks.len() - sent >= STREAMED_BATCH {
                    send(&picks, &mut sent, picks.len());
                }
            }
        }
        let status = child.wait();
        let reached_us = progress.join().unwrap_or(0);
        let cuts = cuts.finish();
        let damaged = !matches!(&status, Ok(s) if s.success()) || !errors.is_empty();
        // A damaged film's last shot ends where decoding did.
        let end_s = match (damaged, probe.duration_ms) {
            (false, Some(ms)) => ms as f64 / 1000.0,
            _ => reached_us as f64 / 1e6,
        };
        let shots = shots::shots(&cuts, end_s);
        picks.extend(plan(&shots[closed.min(shots.len())..]));
        // The rest, shared out among the readers.
        let per_batch = (picks.len() - sent)
            .div_ceil(readers)
            .clamp(1, shots::PICKS_PER_PROCESS);
        while sent < picks.len() {
            let upto = (sent + per_batch).min(picks.len());
            send(&picks, &mut sent, upto);
        }
        drop(batches);
        (picks, shots, status, errors, reached_us, damaged)
    });
    let status = status.map_err(|e| format!("ffmpeg: {e}"))?;
    let misplaced = reader.misplaced.load(std::sync::atomic::Ordering::Relaxed);
    let found = reader.finish()?;
    if shots.is_empty() || picks.is_empty() {
        return Err(match status.success() {
            true => "the video has no decodable frames".into(),
            false => errors.reason(status),
        });
    }
    if misplaced > 0 {
        return first_frames_instead(video, out_dir, probe, opts, shots, misplaced);
    }
    tracing::info!(
        "{} shots; read {} frames ({} of each shot)",
        shots.len(),
        picks.len(),
        opts.pick.flag()
    );
    // The picks' grey copies, in order, as one pass writes them.
    let mut pixels = vec![0u8; 72 * picks.len()];
    let mut frames = Vec::new();
    for (n, pick) in picks.iter().enumerate() {
        let grey = out_dir.join(shots::hash_file(n));
        let tiny = std::fs::read(&grey).unwrap_or_default();
        std::fs::remove_file(&grey).ok();
        let path = out_dir.join(format!("frame_{:06}.jpg", n + 1));
        let Some(seen) = found.get(&n).filter(|_| tiny.len() == 72 && path.is_file()) else {
            continue;
        };
        pixels[72 * n..72 * (n + 1)].copy_from_slice(&tiny);
        frames.push(NewFrame {
            path: path.to_string_lossy().into_owned(),
            frame_index: Some(n as i64),
            pts_ms: Some((seen.at_s * 1000.0).round().max(0.0) as i64),
            width: seen.width,
            height: seen.height,
            dhash: None,
            duplicate_of: None,
            shot: Some(pick.shot_index),
        });
    }
    dedupe(&mut frames, &pixels, opts.dedupe_distance);
    if frames.is_empty() {
        return Err("no frame could be read at the picked times".into());
    }
    let mut warning = damaged.then(|| {
        format!(
            "decoding stopped or failed near {:.3} s of {:.3} s: {}",
            reached_us as f64 / 1e6,
            probe.duration_ms.unwrap_or(0) as f64 / 1000.0,
            errors.reason(status)
        )
    });
    if frames.len() < picks.len() {
        warning.get_or_insert_with(|| {
            format!(
                "{} of {} picked frames could not be read",
                picks.len() - frames.len(),
                picks.len()
            )
        });
    }
    Ok(Extracted {
        frames,
        shots,
        warning,
    })
}

/// When seeking in `video` does not land where asked (MPEG-TS and other
/// containers without an index can land seconds late), the picks cannot be
/// trusted: the frames are made again in one pass over the film, the first
/// of each shot as the boundaries pass found them (`--pick first`), with a
/// warning saying so.
fn first_frames_instead(
    video: &Path,
    out_dir: &Path,
    probe: &Probe,
    opts: &FilmOptions,
    shots: Vec<shots::Shot>,
    misplaced: usize,
) -> std::result::Result<Extracted, String> {
    tracing::warn!(
        "{}: seeking is not exact in this file ({misplaced} picked frame(s) landed away from \
         their time); reading it again in one pass, the first frame of each shot",
        video.display()
    );
    for dir in [out_dir.to_path_buf(), out_dir.join("thumbs")] {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.path().is_file() {
                std::fs::remove_file(entry.path()).ok();
            }
        }
    }
    let mut extracted = one_pass(video, out_dir, probe, opts)?;
    for f in &mut extracted.frames {
        let t = f.pts_ms.unwrap_or(0);
        f.shot = shots
            .iter()
            .rev()
            .find(|s| s.start_ms <= t)
            .map(|s| s.shot_index);
    }
    extracted.warning.get_or_insert_with(|| {
        format!(
            "seeking is not exact in this file: took the first frame of each shot, not --pick {}",
            opts.pick.flag()
        )
    });
    Ok(Extracted { shots, ..extracted })
}

/// How many picks of closed shots wait before a reader is given them while
/// the boundaries pass goes on.
const STREAMED_BATCH: usize = 16;

/// Reads batches of picks, each with one ffmpeg process (an input per
/// pick, decoded on one thread), collecting what `showinfo` says of each.
struct PickReader<'a> {
    video: &'a Path,
    out_dir: &'a Path,
    scale: String,
    thumb: String,
    /// Half a frame (seconds): a middle seeks this much before its time, so
    /// that it gets the frame nearest to it rather than the next one.
    half_frame_s: f64,
    pick: Pick,
    seen: std::sync::Mutex<std::collections::HashMap<usize, shots::PickedFrame>>,
    failure: std::sync::Mutex<Option<String>>,
    /// Picks whose first frame is not within a frame and a half of the seek
    /// point (seeking in this file is not exact).
    misplaced: std::sync::atomic::AtomicUsize,
    /// A frame and a half (seconds; 0.1 s when the rate is unknown).
    slack_s: f64,
}

impl<'a> PickReader<'a> {
    fn new(
        video: &'a Path,
        out_dir: &'a Path,
        opts: &FilmOptions,
        fps: Option<f64>,
    ) -> PickReader<'a> {
        PickReader {
            video,
            out_dir,
            scale: fit_within(opts.max_side),
            thumb: fit_within(THUMBNAIL_SIDE),
            half_frame_s: fps.filter(|f| *f > 0.0).map_or(0.0, |f| 0.5 / f),
            pick: opts.pick,
            seen: Default::default(),
            failure: Default::default(),
            misplaced: Default::default(),
            slack_s: fps.filter(|f| *f > 0.0).map_or(0.1, |f| 1.5 / f),
        }
    }

    fn read(&self, first: usize, batch: &[shots::PickAt]) {
        let sharpest = self.pick == Pick::Sharpest;
        let batch: Vec<shots::PickAt> = batch
            .iter()
            .map(|p| {
                let before = match self.pick {
                    // A cut's own frame: seeking to it exactly lands on
                    // its key frame, where a cut usually is.
                    Pick::First => 0.0,
                    Pick::Middle => self.half_frame_s,
                    Pick::Sharpest => 2.0 * p.candidate_spacing() + self.half_frame_s,
                };
                shots::PickAt {
                    at_s: (p.at_s - before).max(0.0),
                    ..*p
                }
            })
            .collect();
        let args = shots::pick_args(
            self.video,
            &batch,
            first,
            self.out_dir,
            &self.scale,
            &self.thumb,
            sharpest,
        );
        let out = ffmpeg().args(args).stdin(Stdio::null()).output();
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                self.failure
                    .lock()
                    .expect("failure")
                    .get_or_insert(tool_missing("ffmpeg", e));
                return;
            }
        };
        let mut frames = std::collections::HashMap::new();
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            let Some(mut f) = shots::parse_pick_line(line) else {
                continue;
            };
            let Some(pick) = f.n.checked_sub(first).and_then(|k| batch.get(k)) else {
                continue;
            };
            // Its time in the film: the seek point plus its time after it.
            let after = f.at_s;
            f.at_s += shots::seek_arg(pick.at_s)
                .parse::<f64>()
                .unwrap_or(pick.at_s);
            if f.candidate == 0 && !frames.contains_key(&(f.n, 0)) && after.abs() > self.slack_s {
                self.misplaced
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            frames.entry((f.n, f.candidate)).or_insert(f);
        }
        let mut seen = self.seen.lock().expect("picks");
        for n in first..first + batch.len() {
            let chosen = match sharpest {
                false => frames.get(&(n, 0)).copied(),
                true => self.keep_sharpest(n, &frames),
            };
            if let Some(f) = chosen {
                seen.insert(n, f);
            }
        }
    }

    /// Keeps pick `n`'s sharpest candidate under the names one pick has
    /// (its JPEG, thumbnail and grey copy) and removes the others.
    fn keep_sharpest(
        &self,
        n: usize,
        frames: &std::collections::HashMap<(usize, usize), shots::PickedFrame>,
    ) -> Option<shots::PickedFrame> {
        let candidate = |c: usize| format!("frame_{:06}_{}.jpg", n + 1, c + 1);
        let sharp_file = self.out_dir.join(shots::sharp_file(n));
        let grey = std::fs::read(&sharp_file).unwrap_or_default();
        std::fs::remove_file(&sharp_file).ok();
        let best = grey
            .chunks_exact(shots::SHARP_W * shots::SHARP_H)
            .enumerate()
            .filter(|(c, _)| {
                frames.contains_key(&(n, *c)) && self.out_dir.join(candidate(*c)).is_file()
            })
            .map(|(c, pixels)| (c, shots::sharpness(pixels, shots::SHARP_W)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(c, _)| c);
        let hash_file = self.out_dir.join(shots::hash_file(n));
        let hashes = std::fs::read(&hash_file).unwrap_or_default();
        std::fs::remove_file(&hash_file).ok();
        let name = format!("frame_{:06}.jpg", n + 1);
        for c in 0..shots::CANDIDATES {
            for dir in [self.out_dir.to_path_buf(), self.out_dir.join("thumbs")] {
                let file = dir.join(candidate(c));
                if Some(c) == best {
                    std::fs::rename(&file, dir.join(&name)).ok();
                } else {
                    std::fs::remove_file(&file).ok();
                }
            }
        }
        let best = best?;
        std::fs::write(&hash_file, hashes.get(72 * best..72 * (best + 1))?).ok()?;
        frames.get(&(n, best)).copied()
    }

    fn finish(
        self,
    ) -> std::result::Result<std::collections::HashMap<usize, shots::PickedFrame>, String> {
        match self.failure.into_inner().expect("failure") {
            Some(e) => Err(e),
            None => Ok(self.seen.into_inner().expect("picks")),
        }
    }
}

/// The last error lines ffmpeg logged (20 at most).
#[derive(Default)]
struct ErrorLines(Vec<String>);

impl ErrorLines {
    fn line(&mut self, line: String) {
        if is_error_line(&line) {
            if self.0.len() == 20 {
                self.0.remove(0);
            }
            self.0.push(line);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn reason(&self, status: std::process::ExitStatus) -> String {
        self.0
            .last()
            .cloned()
            .unwrap_or_else(|| format!("ffmpeg exited with {status}"))
    }
}

/// Shows ffmpeg's `-progress` output (its stdout) as a bar on a terminal,
/// as a log line every 5 s otherwise, on a thread of its own.
/// Returns the last time ffmpeg reached (µs).
fn show_progress(
    stdout: std::process::ChildStdout,
    duration_us: i64,
    show: bool,
    what: &'static str,
) -> std::thread::JoinHandle<i64> {
    std::thread::spawn(move || {
        let mut reached = 0;
        let bar = show.then(|| {
            let bar = indicatif::ProgressBar::new(duration_us.max(1) as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(&format!(
                    "{{spinner}} {what} [{{bar:30}}] {{percent}}% {{msg}}"
                ))
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
                reached = reached.max(us);
                match &bar {
                    Some(b) => b.set_position(us.max(0) as u64),
                    None if last_log.elapsed().as_secs() >= 5 => {
                        tracing::info!(
                            "{what}: {:.0} s of {:.0} s",
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
        reached
    })
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
        dhash: None,
        duplicate_of: None,
        shot: None,
    })
}

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
    db: &Db,
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
    let existing = match &opts.title {
        Some(title) => queue::find_video_film_titled(db.pool(), &spec, title).await?,
        None => queue::find_video_film(db.pool(), &spec).await?,
    };
    match existing {
        // An earlier run stopped before its frames were enqueued: start over.
        Some(old) if old.frame_count == 0 => queue::delete_film(db.pool(), old.id).await?,
        Some(old) if !film.replace => {
            if let Some(refusal) =
                other_selection(&old.title, old.extraction.as_ref(), &spec.extraction)
            {
                return Err(fail(refusal));
            }
            // A film enqueued before: its dialogue when asked for, or when
            // it has none yet (enqueued before dialogue was read).
            let wanted = film.subtitles != SubtitleSource::Auto
                || !queue::has_subtitles(db.pool(), old.id).await?;
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
        for old in queue::films_from_path(db.pool(), &spec.source_path).await? {
            tracing::info!(
                film_id = old,
                "--replace: removing the earlier film of this file"
            );
            queue::delete_film(db.pool(), old).await?;
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
    let (film_id, title) = queue::create_video_film(db.pool(), &spec).await?;
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
            if let Err(undo) = queue::delete_film(db.pool(), film_id).await {
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

/// Enqueues one video as a film on PostgreSQL, as [`enqueue_video`] does on
/// SQLite: the film is known by its file (path, size, modification time;
/// enqueued again it is left as it is, with another frame selection it is
/// refused, changed it is a new film unless `--replace`), its frames are
/// extracted into `film.frames_dir/film-<id>/` (a folder every worker host
/// must reach, or map with `--path-map`), cut into shots and deduped, and
/// each gets a job in every pass `opts.passes` names, with its dialogue
/// (subtitles) as on SQLite.
pub async fn enqueue_video_pg(
    db: &PgDb,
    video: &Path,
    film: &FilmOptions,
    opts: &EnqueueOptions,
) -> Result<FilmSummary> {
    let fail = |reason: String| video_error(video, reason);
    let file = VideoFile::open(video).map_err(fail)?;
    let mut spec = crate::db::pg::Video {
        title: film_title(opts, &file),
        source_path: file.canonical.to_string_lossy().into_owned(),
        source_size: file.size,
        source_mtime_ms: file.mtime_ms,
        extraction: selection_flags(film),
        fps: None,
        duration_ms: None,
        width: None,
        height: None,
    };
    // As on SQLite: the file's film (of the title given, if one is).
    match db.find_video_film(&spec, opts.title.as_deref()).await? {
        // An earlier run stopped before its frames were enqueued: start over.
        Some(old) if old.frame_count == 0 => db.delete_film(old.id).await?,
        Some(old) if !film.replace => {
            if let Some(refusal) =
                other_selection(&old.title, old.extraction.as_ref(), &spec.extraction)
            {
                return Err(fail(refusal));
            }
            // Its dialogue when asked for, or when it has none yet.
            let wanted =
                film.subtitles != SubtitleSource::Auto || !db.has_subtitles(old.id).await?;
            let dialogue = match wanted {
                true => dialogue(&film.subtitles, &file.canonical)
                    .await
                    .map_err(fail)?,
                false => None,
            };
            return Ok(FilmSummary {
                title: old.title,
                film_id: old.id,
                already: old.frame_count as u64,
                dialogue_lines: store_dialogue_pg(db, old.id, dialogue).await?,
                ..FilmSummary::default()
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
    let spoken: Vec<(i64, i64)> = dialogue
        .as_ref()
        .map(|(_, lines)| lines.iter().map(|l| (l.start_ms, l.end_ms)).collect())
        .unwrap_or_default();
    spec.fps = probed.fps;
    spec.duration_ms = probed.duration_ms;
    spec.width = probed.width;
    spec.height = probed.height;
    let (film_id, title) = db.create_video_film(&spec, opts.priority).await?;
    let out_dir = film_frames(&film.frames_dir, film_id);
    let undo = |reason: String| async {
        if let Err(e) = db.delete_film(film_id).await {
            tracing::warn!("could not remove film #{film_id} after a failure: {e}");
        }
        std::fs::remove_dir_all(&out_dir).ok();
        fail(reason)
    };
    let made = std::fs::create_dir_all(&out_dir).and_then(|()| std::fs::canonicalize(&out_dir));
    let canonical_out = match made {
        Ok(dir) => dir,
        Err(e) => {
            return Err(undo(format!(
                "cannot create the frames folder {}: {e}",
                out_dir.display()
            ))
            .await);
        }
    };
    let extracted = {
        let (path, out_dir, probed, film) = (
            file.canonical.clone(),
            canonical_out,
            probed.clone(),
            film.clone(),
        );
        tokio::task::spawn_blocking(move || extract(&path, &out_dir, &probed, &film, &spoken))
            .await
            .expect("ffmpeg thread")
    };
    let extracted = match extracted {
        Ok(x) => x,
        Err(reason) => return Err(undo(reason).await),
    };
    if let Some(w) = &extracted.warning {
        tracing::warn!(
            "{}: {w}; enqueuing the {} frames decoded",
            video.display(),
            extracted.frames.len()
        );
    }
    if !extracted.shots.is_empty()
        && let Err(e) = db.insert_shots(film_id, probed.fps, &extracted.shots).await
    {
        return Err(undo(e.to_string()).await);
    }
    let names = match opts.passes.is_empty() {
        true => vec!["default".to_string()],
        false => opts.passes.clone(),
    };
    let (mut new, mut near_duplicates) = (0, 0);
    for (i, name) in names.iter().enumerate() {
        let pass = db.ensure_pass(name).await?;
        for chunk in extracted.frames.chunks(opts.chunk()) {
            let kind = super::RowKind::Postgres {
                store: opts.store_frames,
            };
            let frames = match super::film_rows(chunk, kind).await {
                Ok(super::Rows::Postgres(frames)) => frames,
                Ok(super::Rows::Sqlite(_)) => unreachable!("PostgreSQL rows asked for"),
                Err(reason) => return Err(undo(reason).await),
            };
            let (_, added) = db.enqueue(&title, pass, &frames, opts.max_attempts).await?;
            if i == 0 {
                new += added.frames;
                near_duplicates += added.near_duplicates;
            }
        }
    }
    Ok(FilmSummary {
        title,
        film_id,
        new,
        near_duplicates,
        warning: extracted.warning,
        dialogue_lines: store_dialogue_pg(db, film_id, dialogue).await?,
        ..FilmSummary::default()
    })
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
    db: &Db,
    film_id: i64,
    dialogue: Option<(String, Vec<subtitles::Line>)>,
) -> Result<u64> {
    let Some((origin, lines)) = dialogue else {
        return Ok(0);
    };
    queue::replace_subtitles(db.pool(), film_id, &lines).await?;
    tracing::info!("dialogue: {} subtitle lines from {origin}", lines.len());
    Ok(lines.len() as u64)
}

/// [`store_dialogue`] on PostgreSQL.
async fn store_dialogue_pg(
    db: &PgDb,
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
    db: &Db,
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
        queue::insert_shots(db.pool(), film_id, &extracted.shots).await?;
    }
    let mut new = 0;
    let mut loader = db.bulk_loader().await?;
    let kind = super::RowKind::Sqlite {
        store: opts.store_frames,
    };
    for chunk in extracted.frames.chunks(opts.chunk()) {
        let chunk = match super::film_rows(chunk, kind).await.map_err(Step::Video)? {
            super::Rows::Sqlite(chunk) => chunk,
            super::Rows::Postgres(_) => unreachable!("SQLite rows asked for"),
        };
        new += loader
            .enqueue_chunk(film_id, &chunk, &opts.job_spec())
            .await?
            .inserted;
    }
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

#[cfg(test)]
mod tests {
    use super::parse_showinfo;
    use std::path::Path;

    /// Near-duplicates: the same picture within a shot is a copy; in the
    /// next shot it is an original again; a fade (same hash, darker) is not
    /// a copy.
    #[test]
    fn duplicates_are_of_the_last_original_of_the_same_shot() {
        let dir = tempfile::tempdir().unwrap();
        let picture: Vec<u8> = (0..72u32).map(|i| ((i * 37) % 200 + 20) as u8).collect();
        let darker: Vec<u8> = picture.iter().map(|p| p - 20).collect();
        let pixels = [&picture[..], &picture, &picture, &darker].concat();
        std::fs::write(dir.path().join(super::HASH_FILE), pixels).unwrap();
        let mut frames: Vec<_> = [Some(0), Some(0), Some(1), Some(1)]
            .into_iter()
            .enumerate()
            .map(|(n, shot)| super::NewFrame {
                path: format!("frame_{n}.jpg"),
                frame_index: Some(n as i64),
                pts_ms: Some(n as i64 * 1000),
                width: None,
                height: None,
                dhash: None,
                duplicate_of: None,
                shot,
            })
            .collect();
        super::hash_and_dedupe(&mut frames, dir.path(), Some(4));
        let marks: Vec<_> = frames.iter().map(|f| f.duplicate_of.as_deref()).collect();
        assert_eq!(marks, vec![None, Some("frame_0.jpg"), None, None]);
        assert_eq!(frames[3].dhash, frames[2].dhash, "a fade keeps the hash");
        assert!(
            !dir.path().join(super::HASH_FILE).exists(),
            "the file is removed"
        );
    }

    // As ffmpeg 5–7 print them (the prefix and field spacing vary).
    const LINE: &str = "[Parsed_showinfo_2 @ 0x55d5c8] n:  41 pts: 123456 pts_time:41.152  duration:   1 duration_time:0.04 fmt:yuvj420p cl:left sar:1/1 s:1024x576 i:P iskey:1 type:I checksum:1A2B3C4D";

    #[test]
    fn a_showinfo_line_gives_the_frame_its_time_and_size() {
        let f = parse_showinfo(LINE, Path::new("/frames/7")).unwrap();
        assert_eq!(
            f.path, "/frames/7/frame_000042.jpg",
            "n counts from 0, files from 1"
        );
        assert_eq!(f.frame_index, Some(41));
        assert_eq!(f.pts_ms, Some(41_152));
        assert_eq!((f.width, f.height), (Some(1024), Some(576)));
    }

    #[test]
    fn odd_showinfo_lines_are_read_or_skipped_never_guessed() {
        let tight = "[Parsed_showinfo_1 @ 0x1] n:0 pts:0 pts_time:0 s:640x360";
        let f = parse_showinfo(tight, Path::new("/f")).unwrap();
        assert_eq!((f.frame_index, f.pts_ms), (Some(0), Some(0)));
        // A negative start time (edit lists) is clamped to zero.
        let early = "[Parsed_showinfo_1 @ 0x1] n:   3 pts:-2 pts_time:-0.0833 s:640x360";
        assert_eq!(
            parse_showinfo(early, Path::new("/f")).unwrap().pts_ms,
            Some(0)
        );
        // No size: the frame still counts, its size unknown.
        let sizeless = "[Parsed_showinfo_1 @ 0x1] n:   5 pts:10 pts_time:0.4";
        let f = parse_showinfo(sizeless, Path::new("/f")).unwrap();
        assert_eq!((f.width, f.height), (None, None));
        // Without n or pts_time (config lines, other filters) there is no frame.
        let config = "[Parsed_showinfo_1 @ 0x1] config in time_base: 1/25, frame_rate: 25/1";
        assert!(parse_showinfo(config, Path::new("/f")).is_none());
        let no_time = "[Parsed_showinfo_1 @ 0x1] n:   5 pts:NOPTS pts_time:NOPTS s:1x1";
        assert!(parse_showinfo(no_time, Path::new("/f")).is_none());
    }
}
