//! Scene mode's picks read by seeking: batches of picked times, each
//! batch one ffmpeg process (an input per pick, decoded on one thread)
//! beside the boundaries pass, with the same outputs per frame as the
//! one-pass modes (the JPEG, its thumbnail, its grey copy).

use std::path::Path;
use std::process::Stdio;

use super::probe::{FilmOptions, THUMBNAIL_SIDE, ffmpeg, fit_within, tool_missing};
use super::shots::{self, Pick};

/// Reads batches of picks, each with one ffmpeg process (an input per
/// pick, decoded on one thread), collecting what `showinfo` says of each.
pub(super) struct PickReader<'a> {
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
    pub(super) misplaced: std::sync::atomic::AtomicUsize,
    /// A frame and a half (seconds; 0.1 s when the rate is unknown).
    slack_s: f64,
}

impl<'a> PickReader<'a> {
    pub(super) fn new(
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

    pub(super) fn read(&self, first: usize, batch: &[shots::PickAt]) {
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

    pub(super) fn finish(
        self,
    ) -> std::result::Result<std::collections::HashMap<usize, shots::PickedFrame>, String> {
        match self.failure.into_inner().expect("failure") {
            Some(e) => Err(e),
            None => Ok(self.seen.into_inner().expect("picks")),
        }
    }
}
