//! Near-duplicate frames: a frame's 64-bit difference hash (dHash) of its
//! 9×8 grey copy, and which earlier frame it nearly repeats. Video frames
//! get their grey copies from ffmpeg in the extraction pass ([`Deduper`]);
//! stills (folders, globs, manifests) are hashed by the worker that claims
//! them ([`hash_claimed`]), which decodes them anyway: the producer writes
//! them at full speed.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::db::WorkQueue;
use crate::db::jobs::{ClaimedJob, HashedFrame, Neighbour};
use crate::db::queue::NewFrame;
use crate::error::Result;
use crate::frame::PathMap;

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

/// Whether frame `b` (its hash and grey copy) nearly repeats original `a`:
/// hashes within `distance` bits and brightness within
/// [`MAX_GREY_DIFFERENCE`].
fn near(a: (i64, &[u8]), b: (i64, &[u8]), distance: u32) -> bool {
    (a.0 ^ b.0).count_ones() <= distance && grey_difference(a.1, b.1) <= MAX_GREY_DIFFERENCE
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
            (Some(o), Some(d)) if near((o.hash, &o.grey), (hash, grey), d) => {
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
/// describer says why when it comes to send it).
pub fn grey_of_still(bytes: &[u8]) -> Option<[u8; GREY_LEN]> {
    let image = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .ok()?
        .decode()
        .ok()?;
    let small = image.thumbnail_exact(9, 8).into_luma8();
    small.into_raw().try_into().ok()
}

/// Hashes the claimed stills that wait for it (`dedupe`), marks those that
/// nearly repeat the frame before them (or that frame's original) and takes
/// them out of `jobs`: their jobs go back to the queue until the original's
/// description is copied to them, or get it now if it is there. Returns
/// how many were taken out.
///
/// The frame before a still is compared when it is hashed already: claimed
/// beside it (same claim) or by an earlier claim. Workers that claim
/// neighbouring stills at the same moment may each describe one of a run
/// of repeats; one worker describes a run once.
pub async fn hash_claimed(
    queue: &mut WorkQueue,
    jobs: &mut Vec<ClaimedJob>,
    paths: &PathMap,
) -> Result<usize> {
    let todo: Vec<(i64, u32, Source)> = jobs
        .iter()
        .filter_map(|j| {
            let source = match &j.stored {
                Some(bytes) => Source::Stored(bytes.0.clone()),
                None => Source::File(paths.apply(&j.path).into_owned()),
            };
            Some((j.frame_id, j.dedupe?, source))
        })
        .collect();
    if todo.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = todo.iter().map(|t| t.0).collect();
    let neighbours: HashMap<i64, Neighbour> = queue
        .neighbours(&ids)
        .await?
        .into_iter()
        .map(|n| (n.frame_id, n))
        .collect();
    let mut greys = tokio::task::spawn_blocking(move || greys_of(todo))
        .await
        .expect("a hashing thread panicked");
    greys.sort_by_key(|g| g.0);
    // A mark the database refuses (see `Work::mark_hashed`) leaves its
    // frame an original: the stills after it, which were compared with its
    // would-be original, are decided again (one more transaction per
    // refusal; hashes already written stay).
    let mut refused = HashSet::new();
    let mut taken = 0;
    loop {
        let hashed = decide(&greys, &neighbours, &refused);
        if hashed.is_empty() {
            break;
        }
        let marked = queue.mark_hashed(&hashed, jobs).await?;
        let before = jobs.len();
        jobs.retain(|j| !marked.contains(&j.frame_id));
        taken += before - jobs.len();
        // Only the first refusal is sure: the ones after it may have been
        // compared with an original through it. (An original counted as
        // refused would change no decision, only cost a round.)
        let first = hashed
            .iter()
            .find(|h| h.duplicate_of.is_some() && !marked.contains(&h.frame_id));
        match first {
            Some(h) if refused.insert(h.frame_id) => {}
            _ => break,
        }
    }
    Ok(taken)
}

/// Where a claimed still's bytes are.
enum Source {
    Stored(std::sync::Arc<[u8]>),
    File(String),
}

/// Each still's frame id, distance and grey copy (`None`: unreadable), made
/// on every core.
fn greys_of(todo: Vec<(i64, u32, Source)>) -> Vec<(i64, u32, Option<[u8; GREY_LEN]>)> {
    let grey = |(frame, distance, source): (i64, u32, Source)| {
        let grey = match source {
            Source::Stored(bytes) => grey_of_still(&bytes),
            Source::File(path) => std::fs::read(Path::new(&path))
                .ok()
                .and_then(|b| grey_of_still(&b)),
        };
        (frame, distance, grey)
    };
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = todo.len().div_ceil(threads).max(1);
    let mut todo = todo.into_iter();
    std::thread::scope(|scope| {
        let parts: Vec<_> = std::iter::from_fn(|| {
            let part: Vec<_> = todo.by_ref().take(chunk).collect();
            (!part.is_empty()).then(|| scope.spawn(move || part.into_iter().map(grey).collect()))
        })
        .collect();
        parts
            .into_iter()
            .flat_map(|p: std::thread::ScopedJoinHandle<'_, Vec<_>>| {
                p.join().expect("a hashing thread panicked")
            })
            .collect()
    })
}

/// Decides, in frame order, which hashed stills nearly repeat an original:
/// the frame before each (`neighbours`), when it was hashed beside it in
/// this claim, or its original as the database has it. A still in
/// `refused` is an original whatever it resembles; one that could not be
/// read gets no hash (its worker fails it with the reason).
fn decide(
    greys: &[(i64, u32, Option<[u8; GREY_LEN]>)],
    neighbours: &HashMap<i64, Neighbour>,
    refused: &HashSet<i64>,
) -> Vec<HashedFrame> {
    // Each hashed still's original (itself or the one it repeats), by id.
    let mut originals: HashMap<i64, (i64, i64, Vec<u8>)> = HashMap::new();
    let mut out = Vec::new();
    for &(frame, distance, grey) in greys {
        let Some(grey) = grey else { continue };
        let hash = dhash(&grey);
        let neighbour = neighbours.get(&frame);
        let previous = neighbour.and_then(|n| n.previous);
        let original = match previous.and_then(|p| originals.get(&p)) {
            Some(o) => Some(o.clone()),
            None => neighbour.and_then(|n| n.original.clone()),
        };
        let duplicate_of = original
            .as_ref()
            .filter(|(_, h, g)| near((*h, g), (hash, &grey), distance))
            .filter(|_| !refused.contains(&frame))
            .map(|o| o.0);
        let mine = match duplicate_of {
            Some(_) => original.expect("a duplicate has an original"),
            None => (frame, hash, grey.to_vec()),
        };
        originals.insert(frame, mine);
        out.push(HashedFrame {
            frame_id: frame,
            dhash: hash,
            grey: grey.to_vec(),
            duplicate_of,
        });
    }
    out
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
            dedupe_distance: None,
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
