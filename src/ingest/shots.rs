//! Scene mode in two steps, so that no film is decoded twice in full:
//! first the shot boundaries from ffmpeg's scene scores (one decode, no
//! frame written, the in-loop deblocking filter skipped: the scores do not
//! need it), then the frames picked in each shot, each read by seeking to
//! it (a decode from the key frame before it, not from the start).
//!
//! This module builds the ffmpeg arguments and reads their output; the
//! caller runs the processes.

use std::ffi::OsString;
use std::path::Path;

use serde::Serialize;

use super::cuts;

/// Which frame of a shot stands for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Pick {
    /// The first frame after the cut (often mid-transition or blurred).
    First,
    /// The frame at the middle of the shot.
    #[default]
    Middle,
    /// The sharpest of [`CANDIDATES`] frames around the middle (highest
    /// variance of the Laplacian: the least blurred).
    Sharpest,
}

/// How many frames `--pick sharpest` compares.
pub const CANDIDATES: usize = 5;

impl Pick {
    pub fn flag(self) -> &'static str {
        match self {
            Pick::First => "first",
            Pick::Middle => "middle",
            Pick::Sharpest => "sharpest",
        }
    }
}

/// One shot: from its cut to the next (or to the end of the film).
pub use crate::db::queue::NewShot as Shot;

/// One frame to read: a time in a shot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PickAt {
    pub shot_index: i64,
    /// Seconds: the first frame at or after this time is taken.
    pub at_s: f64,
    /// The length of the stretch it stands for (seconds): `--pick
    /// sharpest` spreads its candidates over the middle fifth of it.
    pub part_s: f64,
}

impl PickAt {
    /// `--pick sharpest`: how far apart its candidates are (the middle fifth
    /// of its stretch, at most a quarter second apart).
    pub fn candidate_spacing(&self) -> f64 {
        (self.part_s / 5.0 / (CANDIDATES - 1) as f64).min(0.25)
    }
}

/// ffmpeg's arguments after `-i VIDEO` for the boundaries pass: every
/// frame's time and scene score printed (stderr), and its
/// [`cuts::SMALL_W`]×[`cuts::SMALL_H`] RGB24 copy written to stdout, for
/// [`cuts::CutFinder`] to decide the cuts from both.
pub fn detect_args() -> Vec<OsString> {
    let graph = format!(
        "[0:v:0]select='isnan(scene)+gte(scene\\,0)',metadata=print:key=lavfi.scene_score,\
         scale={}:{}:flags=area,format=rgb24[small]",
        cuts::SMALL_W,
        cuts::SMALL_H
    );
    let args = [
        "-filter_complex",
        &graph,
        "-map",
        "[small]",
        "-fps_mode",
        "passthrough",
        "-f",
        "rawvideo",
        "pipe:1",
    ];
    args.iter().map(Into::into).collect()
}

/// Flags that make the boundaries pass cheaper and change no score that
/// matters: skip H.264/HEVC in-loop deblocking (measured: 10.3 s instead of
/// 13.1 s for a 10-minute 720p film, the same 85 cuts).
pub const DETECT_INPUT_ARGS: [&str; 2] = ["-skip_loop_filter", "all"];

/// Reads the boundaries pass's log: `metadata` prints a frame's
/// `pts_time:T` on one line and `lavfi.scene_score=S` on the next (the
/// first frame has no score: 0).
#[derive(Debug, Default)]
pub struct ScoreReader {
    pending: Option<f64>,
    /// The last time read, for a frame whose own does not parse.
    last: f64,
}

impl ScoreReader {
    /// A frame's (time, score), once its lines are read.
    pub fn line(&mut self, line: &str) -> Option<(f64, f64)> {
        if !line.contains("Parsed_metadata") {
            return None;
        }
        if let Some(i) = line.find("pts_time:") {
            // A time that does not parse (NOPTS) counts as the last one:
            // every frame must be counted, or the scores and the small
            // copies (one per frame, in order) fall out of step.
            let rest = &line[i + "pts_time:".len()..];
            let t = rest
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(self.last);
            self.last = t;
            return self.pending.replace(t).map(|before| (before, 0.0));
        }
        let i = line.find("lavfi.scene_score=")?;
        let score = line[i + "lavfi.scene_score=".len()..]
            .trim()
            .parse()
            .unwrap_or(0.0);
        self.pending.take().map(|t| (t, score))
    }

    /// The last frame, if its score never came.
    pub fn finish(&mut self) -> Option<(f64, f64)> {
        self.pending.take().map(|t| (t, 0.0))
    }
}

/// Shots from the cut times (seconds) and the time the film ends; the first
/// shot starts at 0 whatever the first cut says.
pub fn shots(cuts: &[(f64, f64)], end_s: f64) -> Vec<Shot> {
    let mut starts: Vec<(f64, f64)> = vec![(0.0, 0.0)];
    starts.extend(cuts.iter().copied().filter(|(t, _)| *t > 0.0 && *t < end_s));
    let ms = |s: f64| (s * 1000.0).round() as i64;
    starts
        .iter()
        .enumerate()
        .map(|(i, &(start, score))| Shot {
            shot_index: i as i64,
            start_ms: ms(start),
            end_ms: ms(starts.get(i + 1).map_or(end_s.max(start), |n| n.0)),
            score,
        })
        .collect()
}

/// The times to read: one per shot (its start or middle), or, for a shot
/// longer than `max_gap_s`, `per_shot` evenly spaced ones (default: one for
/// each `max_gap_s` of it), each at the start or the middle of its part;
/// and the midpoint of every subtitle line of `spoken` (ms) that falls in
/// the shot while no time picked in it lies within the line. In time order.
pub fn picks(
    shots: &[Shot],
    pick: Pick,
    per_shot: Option<u32>,
    max_gap_s: f64,
    spoken: &[(i64, i64)],
) -> Vec<PickAt> {
    let mut out = Vec::new();
    for shot in shots {
        let (start, len) = (
            shot.start_ms as f64 / 1000.0,
            (shot.end_ms - shot.start_ms) as f64 / 1000.0,
        );
        let parts = if len > max_gap_s {
            per_shot
                .unwrap_or_else(|| (len / max_gap_s).ceil() as u32)
                .max(1)
        } else {
            1
        };
        let part = len / f64::from(parts);
        let mut times: Vec<(f64, f64)> = (0..parts)
            .map(|k| match pick {
                Pick::First => start + f64::from(k) * part,
                Pick::Middle | Pick::Sharpest => start + (f64::from(k) + 0.5) * part,
            })
            .map(|t| (t, part))
            .collect();
        for &(from, to) in spoken {
            let mid = (from + to) / 2;
            let shown = |t: &(f64, f64)| (from..=to).contains(&((t.0 * 1000.0).round() as i64));
            if (shot.start_ms..shot.end_ms).contains(&mid) && !times.iter().any(shown) {
                times.push((mid as f64 / 1000.0, (to - from) as f64 / 1000.0));
            }
        }
        times.sort_by(|a, b| a.0.total_cmp(&b.0));
        out.extend(times.into_iter().map(|(at_s, part_s)| PickAt {
            shot_index: shot.shot_index,
            at_s,
            part_s,
        }));
    }
    out
}

/// How many picks one ffmpeg process reads (each is an input of its own).
pub const PICKS_PER_PROCESS: usize = 32;

/// The arguments of one ffmpeg process that reads `batch` (the picks
/// numbered `first..` in the film) from `video`: per pick, an input seeked
/// to its time (decoded on one thread: the processes run side by side), a
/// `showinfo@pN` naming the frame's time after the seek point (see
/// [`seek_arg`]), and three outputs: the JPEG `frame_NNNNNN.jpg`, its
/// thumbnail, and its 9×8 grey copy `hash_N.gray`. `scale` and `thumb`
/// are the two downscales (ffmpeg `scale` arguments).
///
/// With `sharpest`, each pick is [`CANDIDATES`] frames from its time on,
/// [`PickAt::candidate_spacing`] apart: `frame_NNNNNN_C.jpg` and its
/// thumbnail, the grey copies one after another in `hash_N.gray`, and a
/// [`SHARP_W`]×[`SHARP_H`] grey copy of each in `sharp_N.gray`, for
/// [`sharpness`] to choose from.
pub fn pick_args(
    video: &Path,
    batch: &[PickAt],
    first: usize,
    out_dir: &Path,
    scale: &str,
    thumb: &str,
    sharpest: bool,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut graph = Vec::new();
    for (k, p) in batch.iter().enumerate() {
        args.extend(["-threads", "1", "-ss"].iter().map(Into::into));
        args.push(seek_arg(p.at_s).into());
        args.push("-i".into());
        args.push(video.into());
        let n = first + k;
        graph.push(match sharpest {
            false => format!(
                "[{k}:v:0]{scale},showinfo@p{n},split=3[f{n}][t{n}][h{n}];\
                 [t{n}]{thumb}[s{n}];[h{n}]scale=9:8:flags=area,format=gray[g{n}]"
            ),
            true => format!(
                "[{k}:v:0]select='isnan(prev_selected_t)+gte(t-prev_selected_t\\,{:.6})',\
                 {scale},showinfo@p{n},split=4[f{n}][t{n}][h{n}][e{n}];\
                 [t{n}]{thumb}[s{n}];[h{n}]scale=9:8:flags=area,format=gray[g{n}];\
                 [e{n}]scale={SHARP_W}:{SHARP_H},format=gray[q{n}]",
                p.candidate_spacing()
            ),
        });
    }
    args.push("-filter_complex".into());
    args.push(graph.join(";").into());
    let frames = if sharpest { CANDIDATES } else { 1 };
    for k in 0..batch.len() {
        let n = first + k;
        let name = match sharpest {
            false => format!("frame_{:06}.jpg", n + 1),
            true => format!("frame_{:06}_%d.jpg", n + 1),
        };
        let mut outputs = vec![
            (format!("[f{n}]"), ["-q:v", "3"], out_dir.join(&name)),
            (
                format!("[s{n}]"),
                ["-q:v", "5"],
                out_dir.join("thumbs").join(&name),
            ),
            (
                format!("[g{n}]"),
                ["-f", "rawvideo"],
                out_dir.join(hash_file(n)),
            ),
        ];
        if sharpest {
            outputs.push((
                format!("[q{n}]"),
                ["-f", "rawvideo"],
                out_dir.join(sharp_file(n)),
            ));
        }
        for (label, format, file) in outputs {
            args.extend([OsString::from("-map"), label.into()]);
            args.extend(["-frames:v".into(), frames.to_string().into()]);
            args.extend(format.iter().map(Into::into));
            args.push("-y".into());
            args.push(file.into());
        }
    }
    args
}

/// A seek time as given to ffmpeg; a frame's time in the film is this plus
/// its `pts_time` after the seek. (Not `-copyts`: with the film's own
/// timestamps, ffmpeg 5.1 feeds a graph of many inputs oldest first, and
/// went on decoding an early pick's input to the later picks' times —
/// measured: 6.7 s instead of 0.15 s for two picks of 5 candidates.)
pub fn seek_arg(at_s: f64) -> String {
    format!("{at_s:.6}")
}

/// The size of the grey copies `--pick sharpest` compares.
pub const SHARP_W: usize = 320;
pub const SHARP_H: usize = 180;

/// The grey copies of pick `n`'s candidates.
pub fn sharp_file(n: usize) -> String {
    format!("sharp_{n}.gray")
}

/// How sharp a grey picture is: the variance of its Laplacian (4-neighbour).
pub fn sharpness(grey: &[u8], width: usize) -> f64 {
    let height = grey.len() / width.max(1);
    let (mut sum, mut squares, mut count) = (0.0, 0.0, 0.0);
    for y in 1..height.saturating_sub(1) {
        for x in 1..width - 1 {
            let at = |dx: isize, dy: isize| {
                f64::from(grey[(y as isize + dy) as usize * width + (x as isize + dx) as usize])
            };
            let l = 4.0 * at(0, 0) - at(-1, 0) - at(1, 0) - at(0, -1) - at(0, 1);
            sum += l;
            squares += l * l;
            count += 1.0;
        }
    }
    if count == 0.0 {
        return 0.0;
    }
    squares / count - (sum / count).powi(2)
}

/// The 9×8 grey copy of pick `n`.
pub fn hash_file(n: usize) -> String {
    format!("hash_{n}.gray")
}

/// What a picks process's `showinfo@pN` says of pick N's frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PickedFrame {
    pub n: usize,
    /// Which of its candidates (0 unless `--pick sharpest`).
    pub candidate: usize,
    pub at_s: f64,
    pub width: Option<i64>,
    pub height: Option<i64>,
}

/// A `showinfo@pN` line of a picks process: pick N's frame (its first,
/// or its candidate `n:C`).
pub fn parse_pick_line(line: &str) -> Option<PickedFrame> {
    let rest = line.strip_prefix("[showinfo@p")?;
    let (n, rest) = rest.split_once(' ')?;
    let n: usize = n.parse().ok()?;
    let candidate: usize = rest
        .split_once(" n:")?
        .1
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let word = |key: &str| {
        rest.split_once(key)
            .and_then(|(_, r)| r.split_whitespace().next())
    };
    let size = word(" s:").and_then(|s| s.split_once('x'));
    Some(PickedFrame {
        n,
        candidate,
        at_s: word("pts_time:")?.parse().ok()?,
        width: size.and_then(|(w, _)| w.parse().ok()),
        height: size.and_then(|(_, h)| h.parse().ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_become_shots_and_picks() {
        let mut r = ScoreReader::default();
        let mut cuts = Vec::new();
        for l in [
            "[Parsed_metadata_1 @ 0x1] frame:0    pts:0       pts_time:0",
            "[Parsed_metadata_1 @ 0x1] frame:1    pts:2048    pts_time:2",
            "[Parsed_metadata_1 @ 0x1] lavfi.scene_score=0.7",
            "[Parsed_select_0 @ 0x1] lavfi.scene_score=0.9",
            "[Parsed_metadata_1 @ 0x1] frame:2    pts:4096    pts_time:30",
            "[Parsed_metadata_1 @ 0x1] lavfi.scene_score=0.5",
            "[Parsed_metadata_1 @ 0x1] frame:3    pts:4097    pts_time:31",
            "[Parsed_metadata_1 @ 0x1] frame:4    pts:NOPTS   pts_time:NOPTS",
        ] {
            cuts.extend(r.line(l));
        }
        cuts.extend(r.finish());
        assert_eq!(
            cuts,
            vec![
                (0.0, 0.0),
                (2.0, 0.7),
                (30.0, 0.5),
                (31.0, 0.0),
                (31.0, 0.0)
            ],
            "every frame counted, one without a time at the last time"
        );
        cuts.truncate(3);
        let shots = shots(&cuts, 33.0);
        assert_eq!(
            shots
                .iter()
                .map(|s| (s.start_ms, s.end_ms))
                .collect::<Vec<_>>(),
            vec![(0, 2000), (2000, 30_000), (30_000, 33_000)]
        );
        // In milliseconds: a 28 s shot in three parts of 9.33 s.
        let at = |p: Vec<PickAt>| {
            p.iter()
                .map(|p| (p.at_s * 1000.0).round() as i64)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            at(picks(&shots, Pick::Middle, None, 10.0, &[])),
            vec![1000, 6667, 16_000, 25_333, 31_500]
        );
        assert_eq!(
            at(picks(&shots, Pick::First, Some(2), 10.0, &[])),
            vec![0, 2000, 16_000, 30_000]
        );
        // Lines: one shown by the first shot's middle (nothing added), one
        // in the long shot away from its picks (its midpoint added), one
        // across a cut whose midpoint is in the next shot.
        let spoken = [(500, 1500), (9000, 11_000), (29_000, 31_400)];
        assert_eq!(
            at(picks(&shots, Pick::Middle, Some(1), 10.0, &spoken)),
            vec![1000, 10_000, 16_000, 30_200, 31_500]
        );
    }

    #[test]
    fn a_blurred_picture_is_less_sharp() {
        let w: usize = 32;
        let sharp: Vec<u8> = (0..w * 32)
            .map(|i| {
                if (i % w / 4 + i / w / 4).is_multiple_of(2) {
                    0
                } else {
                    255
                }
            })
            .collect();
        // The same checkerboard, each pixel the mean of its row neighbours.
        let blurred: Vec<u8> = (0..w * 32)
            .map(|i| {
                let (x, row) = (i % w, i / w * w);
                let l = sharp[row + x.saturating_sub(1)] as u32;
                let r = sharp[row + (x + 1).min(w - 1)] as u32;
                ((l + 2 * sharp[i] as u32 + r) / 4) as u8
            })
            .collect();
        assert!(sharpness(&sharp, w) > 2.0 * sharpness(&blurred, w));
        assert_eq!(sharpness(&[7; 64], 8), 0.0);
    }

    #[test]
    fn pick_lines_name_their_pick() {
        let l = "[showinfo@p12 @ 0x55d] n:   0 pts: 129024 pts_time:10.5    pos: 1 fmt:yuv420p sar:1/1 s:1024x576 i:P";
        assert_eq!(
            parse_pick_line(l),
            Some(PickedFrame {
                n: 12,
                candidate: 0,
                at_s: 10.5,
                width: Some(1024),
                height: Some(576)
            })
        );
        let later = "[showinfo@p12 @ 0x55d] n:   1 pts: 129536 pts_time:10.541667 pos: 1";
        assert_eq!(
            parse_pick_line(later).map(|f| (f.candidate, f.at_s)),
            Some((1, 10.541667))
        );
        assert_eq!(
            parse_pick_line("[showinfo@p3 @ 0x5] config in time_base: 1/12288"),
            None
        );
    }
}
