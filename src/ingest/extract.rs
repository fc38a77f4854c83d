//! Extraction: ffmpeg runs, its `showinfo` lines become frames with their
//! presentation times (never an index times a nominal rate), scene mode's
//! boundaries pass and the picks read by seeking (`PickReader`), progress
//! on a terminal, and each frame's difference hash for near-duplicates.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use super::dedupe::{Deduper, GREY_LEN};
use super::picks::PickReader;
use super::probe::{
    FilmOptions, HASH_FILE, Probe, SelectMode, ffmpeg, output_args, thumbnail_path, tool_missing,
};
use super::{cuts, shots};
use crate::db::queue::NewFrame;

/// [`dedupe`] with the grey copies of `out_dir`'s hash file, which it removes.
pub(super) fn hash_and_dedupe(frames: &mut [NewFrame], out_dir: &Path, distance: Option<u32>) {
    let file = out_dir.join(HASH_FILE);
    let pixels = std::fs::read(&file).unwrap_or_default();
    std::fs::remove_file(&file).ok();
    dedupe(frames, &pixels, distance);
}

/// Sets each frame's hash (from `pixels`: frame `n`'s 9×8 grey copy at
/// byte 72·n) and, with `distance`, marks as a duplicate every frame near
/// the last frame of its shot (scene mode; else of the film) kept as an
/// original ([`Deduper`]).
pub(super) fn dedupe(frames: &mut [NewFrame], pixels: &[u8], distance: Option<u32>) {
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

pub(super) struct Extracted {
    pub(super) frames: Vec<NewFrame>,
    /// Scene mode: the film's shots (each frame names its own).
    pub(super) shots: Vec<shots::Shot>,
    pub(super) warning: Option<String>,
}

/// Runs one ffmpeg pass over `video` into `out_dir`: the frames showinfo
/// reported whose file was written, and a warning when decoding stopped or
/// failed part way.
pub(super) fn extract(
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
pub(super) fn one_pass(
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
    for line in lossy_lines(stderr) {
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
pub(super) fn extract_shots(
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
        .args(shots::detect_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| tool_missing("ffmpeg", e))?;
    let duration_us = probe.duration_ms.unwrap_or(0) * 1000;
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let limits = cuts::Thresholds {
        scene: opts.scene_threshold,
        colour: opts.colour_threshold,
        min_shot_s: opts.min_shot_s,
    };

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
        // The decode's two outputs, each read on a thread of its own so
        // that neither pipe fills while the other is waited on: every
        // frame's time and scene score (stderr, with the errors and the
        // progress), and its small copy (stdout).
        let (scored, scores) = std::sync::mpsc::channel::<(f64, f64)>();
        let log = scope.spawn(move || {
            let mut progress = Progress::new(duration_us, opts.progress, "finding shots");
            let mut score_lines = shots::ScoreReader::default();
            let mut errors = ErrorLines::default();
            for line in lossy_lines(stderr) {
                if let Some((t, score)) = score_lines.line(&line) {
                    progress.at((t * 1e6) as i64);
                    scored.send((t, score)).ok();
                }
                errors.line(line);
            }
            if let Some(last) = score_lines.finish() {
                scored.send(last).ok();
            }
            (errors, progress.finish())
        });
        let (copied, copies) = std::sync::mpsc::channel::<cuts::Hsv>();
        scope.spawn(move || {
            let mut out = BufReader::with_capacity(64 * cuts::SMALL_BYTES, stdout);
            let mut rgb = vec![0u8; cuts::SMALL_BYTES];
            while out.read_exact(&mut rgb).is_ok() {
                if copied.send(cuts::Hsv::from_rgb(&rgb)).is_err() {
                    break;
                }
            }
        });
        let plan = |shots: &[shots::Shot]| {
            shots::picks(shots, opts.pick, opts.per_shot, opts.max_gap_s, spoken)
        };
        let mut finder = cuts::CutFinder::new(limits);
        let mut cuts: Vec<(f64, f64)> = Vec::new();
        let mut picks: Vec<shots::PickAt> = Vec::new();
        let (mut closed, mut sent) = (0, 0);
        let send = |picks: &[shots::PickAt], sent: &mut usize, upto: usize| {
            if upto > *sent {
                batches.send((*sent, picks[*sent..upto].to_vec())).ok();
                *sent = upto;
            }
        };
        for (t, score) in scores {
            // A copy that never came (the decode's stdout ended first)
            // scores no colour.
            let copy = copies.recv().unwrap_or_default();
            let Some(cut) = finder.frame(t, score, copy) else {
                continue;
            };
            // A new cut closes the shot before it.
            cuts.push(cut);
            let done = shots::shots(&cuts, cut.0);
            picks.extend(plan(&done[closed..]));
            closed = done.len();
            if picks.len() - sent >= STREAMED_BATCH {
                send(&picks, &mut sent, picks.len());
            }
        }
        cuts.extend(finder.finish());
        // Copies left unread (none unless the log ended early) stop here.
        drop(copies);
        let status = child.wait();
        let (errors, reached_us) = log.join().expect("ffmpeg's log reader");
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
            dedupe_distance: None,
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
pub(super) fn first_frames_instead(
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
pub(super) const STREAMED_BATCH: usize = 16;

/// The last error lines ffmpeg logged (20 at most).
#[derive(Default)]
pub(super) struct ErrorLines(Vec<String>);

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

/// A film's decode shown as a bar on a terminal, as a log line every 5 s
/// otherwise.
pub(super) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    what: &'static str,
    duration_us: i64,
    last_log: Instant,
    /// The last time the decode reached (µs).
    pub(super) reached: i64,
}

impl Progress {
    pub(super) fn new(duration_us: i64, show: bool, what: &'static str) -> Progress {
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
        Progress {
            bar,
            what,
            duration_us,
            last_log: Instant::now(),
            reached: 0,
        }
    }

    /// The decode reached `us` into the film.
    pub(super) fn at(&mut self, us: i64) {
        self.reached = self.reached.max(us);
        match &self.bar {
            Some(b) => b.set_position(us.max(0) as u64),
            None if self.last_log.elapsed().as_secs() >= 5 => {
                tracing::info!(
                    "{}: {:.0} s of {:.0} s",
                    self.what,
                    us as f64 / 1e6,
                    self.duration_us as f64 / 1e6
                );
                self.last_log = Instant::now();
            }
            None => {}
        }
    }

    fn speed(&self, speed: &str) {
        if let Some(b) = &self.bar {
            b.set_message(format!("speed {speed}"));
        }
    }

    /// Clears the bar; the last time reached (µs).
    pub(super) fn finish(self) -> i64 {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
        self.reached
    }
}

/// Shows ffmpeg's `-progress` output (its stdout) as [`Progress`], on a
/// thread of its own. Returns the last time ffmpeg reached (µs).
pub(super) fn show_progress(
    stdout: std::process::ChildStdout,
    duration_us: i64,
    show: bool,
    what: &'static str,
) -> std::thread::JoinHandle<i64> {
    std::thread::spawn(move || {
        let mut progress = Progress::new(duration_us, show, what);
        for line in lossy_lines(stdout) {
            if let Some(us) = line
                .strip_prefix("out_time_us=")
                .and_then(|v| v.parse::<i64>().ok())
            {
                progress.at(us);
            } else if let Some(speed) = line.strip_prefix("speed=") {
                progress.speed(speed);
            }
        }
        progress.finish()
    })
}

/// A child's output line by line, each read as UTF-8 with anything else
/// replaced: ffmpeg prints file names and tags as they are, and a line in
/// another encoding must not end the reading (and with it the scores, the
/// progress and the errors after it).
pub(super) fn lossy_lines(out: impl std::io::Read) -> impl Iterator<Item = String> {
    let mut out = BufReader::new(out);
    let mut buf = Vec::new();
    std::iter::from_fn(move || {
        buf.clear();
        match out.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                Some(line.trim_end_matches(['\n', '\r']).to_string())
            }
        }
    })
}

pub(super) fn is_error_line(line: &str) -> bool {
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
pub(super) fn parse_showinfo(line: &str, out_dir: &Path) -> Option<NewFrame> {
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
        dedupe_distance: None,
        shot: None,
    })
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
                dedupe_distance: None,
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
