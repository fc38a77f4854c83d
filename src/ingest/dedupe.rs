//! Near-duplicate frames: a frame's 64-bit difference hash (dHash) of its
//! 9×8 grey copy, and which earlier frame it nearly repeats. Video frames
//! get their grey copies from ffmpeg in the extraction pass; stills
//! (folders, globs, manifests) from [`grey_of_still`] at enqueue, on every
//! core.

use std::path::Path;

use crate::db::queue::NewFrame;

/// Bytes of a 9×8 grey copy.
pub const GREY_LEN: usize = 72;

/// How far apart (mean absolute difference of the 9×8 grey pixels, of 255)
/// two frames may be in brightness and still be near-duplicates. The hash
/// alone compares only left-right orderings: a fade, or two unrelated
/// shots with the same horizontal gradient, keep it. Measured on generated
/// clips (BENCHMARKS.md): a static shot with sensor noise differs by
/// under 1, one with a figure walking across it by 2; unrelated pictures
/// by 28 and more.
const MAX_GREY_DIFFERENCE: u32 = 8;

/// The 64-bit difference hash of a 9×8 grey image: bit r·8+c says whether
/// pixel (c, r) is darker than its right neighbour.
pub fn dhash(pixels: &[u8]) -> i64 {
    let mut bits = 0u64;
    for r in 0..8 {
        for c in 0..8 {
            bits <<= 1;
            bits |= u64::from(pixels[r * 9 + c] < pixels[r * 9 + c + 1]);
        }
    }
    bits as i64
}

/// The mean absolute difference of two grey images of the same size.
fn grey_difference(a: &[u8], b: &[u8]) -> u32 {
    let sum: u32 = a
        .iter()
        .zip(b)
        .map(|(x, y)| u32::from(x.abs_diff(*y)))
        .sum();
    sum / a.len().max(1) as u32
}

/// The last frame kept as an original, which the next frames are compared with.
struct Original {
    path: String,
    hash: i64,
    grey: [u8; GREY_LEN],
}

/// Walks a film's frames in order, setting each one's hash and, with a
/// distance, marking as a duplicate every frame within that many bits and
/// within [`MAX_GREY_DIFFERENCE`] in brightness of the last original.
pub struct Deduper {
    distance: Option<u32>,
    original: Option<Original>,
}

impl Deduper {
    /// `distance`: `None` hashes without marking duplicates (`--no-dedupe`).
    pub fn new(distance: Option<u32>) -> Deduper {
        Deduper {
            distance,
            original: None,
        }
    }

    /// The next frame starts afresh (a new shot, or a frame with no grey copy).
    pub fn restart(&mut self) {
        self.original = None;
    }

    /// Hashes `frame` from its 9×8 grey copy and marks it a duplicate of
    /// the last original when near enough; otherwise it is the new original.
    pub fn see(&mut self, frame: &mut NewFrame, grey: &[u8; GREY_LEN]) {
        let hash = dhash(grey);
        frame.dhash = Some(hash);
        match (&self.original, self.distance) {
            (Some(o), Some(d))
                if (o.hash ^ hash).count_ones() <= d
                    && grey_difference(&o.grey, grey) <= MAX_GREY_DIFFERENCE =>
            {
                frame.duplicate_of = Some(o.path.clone());
            }
            _ => {
                self.original = Some(Original {
                    path: frame.path.clone(),
                    hash,
                    grey: *grey,
                })
            }
        }
    }
}

/// A still's 9×8 grey copy (area-averaged, as ffmpeg's `scale=9:8:flags=area`
/// makes a video frame's); `None` when it cannot be read as an image (the
/// worker says why when it comes to describe it).
pub fn grey_of_still(path: &Path) -> Option<[u8; GREY_LEN]> {
    let image = image::ImageReader::open(path)
        .ok()?
        .with_guessed_format()
        .ok()?
        .decode()
        .ok()?;
    let small = image.thumbnail_exact(9, 8).into_luma8();
    small.into_raw().try_into().ok()
}

/// The grey copies of `paths`, in order, made on every core.
pub fn greys_of_stills(paths: &[&str]) -> Vec<Option<[u8; GREY_LEN]>> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = paths.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let parts: Vec<_> = paths
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|p| grey_of_still(Path::new(p)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().expect("a hashing thread panicked"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> NewFrame {
        NewFrame {
            path: format!("frame_{n}.jpg"),
            frame_index: Some(n as i64),
            pts_ms: None,
            width: None,
            height: None,
            dhash: None,
            duplicate_of: None,
            shot: None,
        }
    }

    #[test]
    fn a_repeat_is_a_duplicate_of_the_last_original_and_a_fade_is_not() {
        let picture: [u8; GREY_LEN] = std::array::from_fn(|i| ((i * 37) % 200 + 20) as u8);
        let darker = picture.map(|p| p - 20);
        let mut frames: Vec<NewFrame> = (0..4).map(frame).collect();
        let mut d = Deduper::new(Some(4));
        d.see(&mut frames[0], &picture);
        d.see(&mut frames[1], &picture);
        d.see(&mut frames[2], &darker);
        d.restart();
        d.see(&mut frames[3], &darker);
        let marks: Vec<_> = frames.iter().map(|f| f.duplicate_of.as_deref()).collect();
        assert_eq!(marks, [None, Some("frame_0.jpg"), None, None]);
        assert_eq!(frames[2].dhash, frames[0].dhash, "a fade keeps the hash");

        let mut off = Deduper::new(None);
        let mut f = frame(9);
        off.see(&mut f, &picture);
        off.see(&mut f, &picture);
        assert_eq!((f.duplicate_of, f.dhash), (None, Some(dhash(&picture))));
    }
}
