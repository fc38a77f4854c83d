//! Scene mode's cut decision, frame by frame, from two scores:
//!
//! - ffmpeg's scene score (0–1, from the `select` filter), which is driven
//!   by brightness: a cut between two dark shots of different colour (black
//!   with coloured cells to dark blue) scores 0.13, under any usable
//!   threshold;
//! - a colour score over a small copy of each frame ([`SMALL_W`]×[`SMALL_H`],
//!   split off the same decode): the mean change of hue, saturation and
//!   value between two frames, each on 0–255 (hue as OpenCV's 0–180 scale,
//!   the shorter way round the circle, and weighted by the saturation both
//!   frames have there, since the hue of a grey pixel is noise). This is the
//!   content score PySceneDetect's ContentDetector uses (its default
//!   threshold, 27, is ours), with those two changes to hue.
//!
//! A frame opens a shot when either score passes its threshold and the
//! last cut is at least `--min-shot` before it. A frame that passes but is
//! followed, within [`FLASH_S`], by a frame that looks again like the one
//! before it (its colour score to that frame under the threshold and under
//! a third of the cut's own) is a flash (lightning, a muzzle flash, a
//! photographer's strobe), not a cut;
//! a cut is therefore known [`FLASH_S`] after it.

/// The small copy's size (ffmpeg `scale=64:36:flags=area`, RGB24).
pub const SMALL_W: usize = 64;
pub const SMALL_H: usize = 36;
/// Bytes of one small copy.
pub const SMALL_BYTES: usize = SMALL_W * SMALL_H * 3;

/// How long after a cut the picture may come back and make it a flash.
pub const FLASH_S: f64 = 0.25;

/// A small copy in hue (0–180), saturation and value (0–255) per pixel.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Hsv(Vec<[u8; 3]>);

impl Hsv {
    /// From RGB24 pixels, as OpenCV converts 8-bit RGB.
    pub fn from_rgb(rgb: &[u8]) -> Hsv {
        Hsv(rgb
            .chunks_exact(3)
            .map(|p| {
                let (r, g, b) = (i32::from(p[0]), i32::from(p[1]), i32::from(p[2]));
                let v = r.max(g).max(b);
                let d = v - r.min(g).min(b);
                let s = if v == 0 { 0 } else { (255 * d + v / 2) / v };
                let h = if d == 0 {
                    0
                } else if v == r {
                    60 * (g - b) / d
                } else if v == g {
                    120 + 60 * (b - r) / d
                } else {
                    240 + 60 * (r - g) / d
                };
                let h = (h.rem_euclid(360) / 2) as u8;
                [h, s as u8, v as u8]
            })
            .collect())
    }
}

/// The colour score of two small copies (0–255): the mean over pixels
/// and the three channels of their absolute change.
pub fn colour_score(a: &Hsv, b: &Hsv) -> f64 {
    if a.0.is_empty() || a.0.len() != b.0.len() {
        return 0.0;
    }
    let sum: u64 =
        a.0.iter()
            .zip(&b.0)
            .map(|(x, y)| {
                let dh = i32::from(x[0]).abs_diff(i32::from(y[0]));
                let dh = dh.min(180 - dh.min(180));
                // Scaled to 0–255 like the others, and by how coloured the
                // less coloured of the two pixels is.
                let sat = u32::from(x[1].min(y[1]));
                let dh = dh * 255 / 90 * sat / 255;
                let ds = u32::from(x[1].abs_diff(y[1]));
                let dv = u32::from(x[2].abs_diff(y[2]));
                u64::from(dh + ds + dv)
            })
            .sum();
    sum as f64 / (3 * a.0.len()) as f64
}

/// The thresholds a cut passes.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// ffmpeg's scene score, 0–1 (`--scene-threshold`).
    pub scene: f64,
    /// The colour score, 0–255 (`--colour-threshold`).
    pub colour: f64,
    /// Seconds from the last cut taken (`--min-shot`).
    pub min_shot_s: f64,
}

/// A frame that passed, waiting [`FLASH_S`] to be sure it is no flash.
#[derive(Debug)]
struct Candidate {
    t: f64,
    score: f64,
    /// The frame before it: a flash comes back to it.
    before: Hsv,
    /// Its colour score to that frame: a flash comes back to well under it.
    jump: f64,
}

/// The cuts of one film, fed its frames in decode order.
#[derive(Debug)]
pub struct CutFinder {
    limits: Thresholds,
    last_cut: f64,
    prev: Option<Hsv>,
    candidate: Option<Candidate>,
}

impl CutFinder {
    pub fn new(limits: Thresholds) -> CutFinder {
        CutFinder {
            limits,
            last_cut: 0.0,
            prev: None,
            candidate: None,
        }
    }

    /// One frame: its time (s), ffmpeg's scene score, its small copy.
    /// Returns a cut (time, score) once it is sure of one: the cut's score
    /// is ffmpeg's, or the colour score over 255 where colour alone made
    /// the cut, whichever is higher.
    pub fn frame(&mut self, t: f64, scene: f64, small: Hsv) -> Option<(f64, f64)> {
        let mut confirmed = None;
        if let Some(c) = &self.candidate {
            let back = colour_score(&c.before, &small);
            if t - c.t <= self.flash_s() && back < self.limits.colour && back < c.jump / 3.0 {
                // Back to what it was: a flash. This frame is no cut either.
                self.candidate = None;
                self.prev = Some(small);
                return None;
            }
            if t - c.t > self.flash_s() {
                let c = self.candidate.take().expect("candidate");
                self.last_cut = c.t;
                confirmed = Some((c.t, c.score));
            }
        }
        if let Some(prev) = self.prev.take() {
            let colour = colour_score(&prev, &small);
            let passes = scene > self.limits.scene || colour > self.limits.colour;
            if passes && self.candidate.is_none() && t - self.last_cut >= self.limits.min_shot_s {
                self.candidate = Some(Candidate {
                    t,
                    score: scene.max(colour / 255.0),
                    before: prev,
                    jump: colour,
                });
            }
        }
        self.prev = Some(small);
        confirmed
    }

    /// How long a flash may last: [`FLASH_S`], or less with a shorter
    /// `--min-shot` (0 keeps every cut, flashes too).
    fn flash_s(&self) -> f64 {
        FLASH_S.min(self.limits.min_shot_s)
    }

    /// The film ended: a cut still waiting is a cut (nothing came back).
    pub fn finish(&mut self) -> Option<(f64, f64)> {
        self.candidate.take().map(|c| (c.t, c.score))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(rgb: [u8; 3]) -> Hsv {
        Hsv::from_rgb(&rgb.repeat(SMALL_W * SMALL_H))
    }

    #[test]
    fn hsv_is_opencvs_for_8_bit_rgb() {
        let px = |rgb: [u8; 3]| Hsv::from_rgb(&rgb).0[0];
        assert_eq!(px([255, 0, 0]), [0, 255, 255]);
        assert_eq!(px([0, 255, 0]), [60, 255, 255]);
        assert_eq!(px([0, 0, 139]), [120, 255, 139]);
        assert_eq!(px([0, 0, 0]), [0, 0, 0]);
        assert_eq!(px([128, 128, 128]), [0, 0, 128]);
        assert_eq!(px([255, 0, 255]), [150, 255, 255]);
    }

    #[test]
    fn a_dark_cut_of_colour_scores_high_and_grey_noise_low() {
        // Black to dark blue: saturation and value change, hue of black
        // counts for nothing.
        let s = colour_score(&flat([0, 0, 0]), &flat([0, 0, 139]));
        assert!((s - (255.0 + 139.0) / 3.0).abs() < 0.5, "{s}");
        // Red either side of 0 is one hue.
        let s = colour_score(&flat([255, 0, 8]), &flat([255, 8, 0]));
        assert!(s < 3.0, "{s}");
        // Dark grey noise: no saturation to speak of.
        let s = colour_score(&flat([20, 21, 20]), &flat([21, 20, 20]));
        assert!(s < 5.0, "{s}");
    }

    const LIMITS: Thresholds = Thresholds {
        scene: 0.3,
        colour: 27.0,
        min_shot_s: 0.6,
    };

    /// Frames at 25 fps: (colour, scene score) per frame; the cuts found.
    fn cuts(frames: &[([u8; 3], f64)]) -> Vec<(f64, f64)> {
        let mut f = CutFinder::new(LIMITS);
        let mut out = Vec::new();
        for (i, &(rgb, scene)) in frames.iter().enumerate() {
            out.extend(f.frame(i as f64 / 25.0, scene, flat(rgb)));
        }
        out.extend(f.finish());
        out
    }

    fn shot(rgb: [u8; 3], frames: usize) -> Vec<([u8; 3], f64)> {
        vec![(rgb, 0.0); frames]
    }

    #[test]
    fn a_cut_of_colour_alone_is_found_with_its_score() {
        let mut film = shot([0, 0, 0], 50);
        film.extend(shot([0, 0, 139], 50));
        film[50].1 = 0.126;
        let found = cuts(&film);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!((found[0].0 - 2.0).abs() < 1e-9);
        assert!((found[0].1 - 131.3 / 255.0).abs() < 0.01, "{found:?}");
    }

    #[test]
    fn a_cut_of_brightness_alone_is_found_with_ffmpegs_score() {
        let mut film = shot([40, 40, 40], 50);
        film.extend(shot([45, 45, 45], 50));
        film[50].1 = 0.8;
        assert_eq!(cuts(&film), vec![(2.0, 0.8)]);
    }

    #[test]
    fn a_flash_is_no_cut_but_a_longer_change_is() {
        let mut film = shot([30, 30, 60], 50);
        film.extend(shot([250, 250, 250], 2));
        film.extend(shot([30, 30, 60], 48));
        film[50].1 = 0.9;
        film[52].1 = 0.9;
        assert_eq!(cuts(&film), vec![], "a two-frame flash");
        // A shot that lasts longer than FLASH_S (and --min-shot) is one.
        let mut film = shot([30, 30, 60], 50);
        film.extend(shot([250, 250, 250], 20));
        film.extend(shot([30, 30, 60], 30));
        assert_eq!(cuts(&film).len(), 2);
    }

    #[test]
    fn a_slow_change_and_cuts_within_min_shot_give_no_cut() {
        let film: Vec<_> = (0..250u32)
            .map(|i| ([(i % 256) as u8, 60, (255 - i % 256) as u8], 0.01))
            .collect();
        assert_eq!(cuts(&film), vec![], "a slow pan of colour");
        let mut film = shot([0, 0, 0], 50);
        film.extend(shot([200, 0, 0], 5));
        film.extend(shot([0, 200, 0], 45));
        let found = cuts(&film);
        assert_eq!(
            found.len(),
            1,
            "the second cut is 0.2 s after the first: {found:?}"
        );
    }
}
