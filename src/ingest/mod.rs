//! The producer: turns inputs into films, frames and jobs.
//!
//! Checking frames (a `stat` each) and serialising chunks runs on a blocking
//! thread while the previous chunk is written, so the two overlap. Nothing is
//! written before a manifest has been read through once (a syntax error
//! leaves the database unchanged), and with `--strict` nothing is written
//! unless every frame passes its check.

pub mod cuts;
pub mod dedupe;
mod extract;
pub mod film;
pub mod frames;
mod picks;
pub mod probe;
pub mod shots;
pub mod subtitles;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::db::Loader;
use crate::db::load::FrameLoader;
use crate::db::queue::{self, FilmSpec, NewFrame};
use crate::db::{Db, Store};
use crate::error::{Error, Result};
use frames::{FrameChecker, FrameRef, ManifestReader, Rejection, Source};

/// How an enqueue behaves, for every kind of input.
#[derive(Debug, Clone)]
pub struct EnqueueOptions {
    /// Write nothing unless every frame and video passes its check.
    pub strict: bool,
    /// The film's title (`--film`); by default a folder's, manifest's or
    /// video's name.
    pub title: Option<String>,
    pub priority: i64,
    pub max_attempts: i64,
    pub chunk_size: usize,
    /// The passes to queue the frames for (`--pass`); empty: every pass.
    pub passes: Vec<String>,
    /// A frame within this many bits of the last distinct frame before it
    /// is a near-duplicate (a video's frames are hashed as they are
    /// extracted, stills by the worker that claims them); `None`
    /// (`--no-dedupe`): no hash, no near-duplicates.
    pub dedupe_distance: Option<u32>,
    /// Each frame's bytes go into the database with it (`--store-frames`).
    pub store_frames: bool,
}

/// Frames a chunk holds at most when their bytes are stored: a chunk's
/// bytes are in memory until written (256 frames of 200 KB: 50 MB).
const STORED_CHUNK: usize = 256;

impl EnqueueOptions {
    /// Frames per write transaction.
    pub fn chunk(&self) -> usize {
        match self.store_frames {
            true => self.chunk_size.clamp(1, STORED_CHUNK),
            false => self.chunk_size.max(1),
        }
    }

    /// The jobs each new frame gets.
    pub fn job_spec(&self) -> queue::JobSpec<'_> {
        queue::JobSpec {
            max_attempts: self.max_attempts,
            passes: &self.passes,
        }
    }
}

impl Default for EnqueueOptions {
    fn default() -> Self {
        EnqueueOptions {
            strict: false,
            title: None,
            priority: 0,
            max_attempts: 3,
            chunk_size: 20_000,
            passes: Vec::new(),
            dedupe_distance: Some(DEFAULT_DEDUPE_DISTANCE),
            store_frames: false,
        }
    }
}

/// `--dedupe-distance` unless told: bits of 64 (measured, BENCHMARKS.md).
pub const DEFAULT_DEDUPE_DISTANCE: u32 = 4;

/// What an enqueue did to one film.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct FilmSummary {
    pub title: String,
    pub film_id: i64,
    pub new: u64,
    pub already: u64,
    /// A damaged video: where decoding stopped (its frames up to there are in).
    pub warning: Option<String>,
    /// Subtitle lines stored for the film by this enqueue (its dialogue).
    pub dialogue_lines: u64,
    /// New frames that nearly repeat an earlier one: they get its
    /// description instead of a model call.
    pub near_duplicates: u64,
}

/// What an enqueue did: `cinecut enqueue --json` prints this.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EnqueueSummary {
    pub films: Vec<FilmSummary>,
    pub new: u64,
    pub already: u64,
    /// Frames turned away, each with its reason.
    pub rejected: Vec<Rejection>,
    /// How many inputs were videos, and those that failed with their reason.
    pub videos: u64,
    pub failed_videos: Vec<Rejection>,
    pub seconds: f64,
}

impl EnqueueSummary {
    /// Nothing written, only what was turned away.
    fn only_rejections(rejected: Vec<Rejection>) -> Self {
        EnqueueSummary {
            rejected,
            ..EnqueueSummary::default()
        }
    }

    /// The totals over the films, and the time since `started`.
    fn finish(mut self, started: Instant) -> Self {
        self.new = self.films.iter().map(|f| f.new).sum();
        self.already = self.films.iter().map(|f| f.already).sum();
        self.seconds = started.elapsed().as_secs_f64();
        self
    }

    /// Whether anything was turned away.
    pub fn is_clean(&self) -> bool {
        self.rejected.is_empty() && self.failed_videos.is_empty()
    }
}

/// What one `cinecut enqueue` takes: image files, folders, globs and
/// videos (told apart by [`film::looks_like_video`]), and a manifest.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub paths: Vec<String>,
    pub manifest: Option<PathBuf>,
}

impl Inputs {
    /// The videos (told apart by [`film::looks_like_video`]) and the rest;
    /// [`Error::NoInput`] when there is nothing at all.
    fn split(&self) -> Result<(Vec<String>, Vec<String>)> {
        if self.paths.is_empty() && self.manifest.is_none() {
            return Err(Error::NoInput);
        }
        Ok(self
            .paths
            .iter()
            .cloned()
            .partition(|i| film::looks_like_video(Path::new(i))))
    }
}

/// The one entry for every input, on either backend: videos become films
/// (ffmpeg), the rest frames. With `--strict`, every frame and video is
/// checked before anything is written, and nothing is when one fails.
/// Rejections are reported in the summary, not raised: the caller decides
/// the exit code.
pub async fn enqueue_inputs(
    db: &Store,
    inputs: &Inputs,
    film: &film::FilmOptions,
    opts: &EnqueueOptions,
) -> Result<EnqueueSummary> {
    let (videos, others) = inputs.split()?;
    let started = Instant::now();
    let (sources, rejected) =
        frames::plan_sources(&others, inputs.manifest.as_deref(), opts.title.as_deref());
    let checked = check(sources, rejected, opts.strict).await?;
    let mut failed_videos = Vec::new();
    if opts.strict {
        for video in &videos {
            if let Err(e) = film::check_video(Path::new(video)).await {
                failed_videos.push(video_rejection(e)?);
            }
        }
    }
    let refused = opts.strict && (!checked.rejected.is_empty() || !failed_videos.is_empty());
    let mut summary = if refused {
        EnqueueSummary::only_rejections(checked.rejected)
    } else {
        let mut films = Vec::new();
        for video in &videos {
            let video = Path::new(video);
            match film::enqueue_video(db, video, film, opts).await {
                Ok(f) => films.push(f),
                Err(e) => failed_videos.push(video_rejection(e)?),
            }
        }
        let mut summary = write(db, checked, opts).await?;
        films.append(&mut summary.films);
        summary.films = films;
        summary
    };
    summary.videos = videos.len() as u64;
    summary.failed_videos = failed_videos;
    Ok(summary.finish(started))
}

/// A video's own failure as a rejection; any other error stops the enqueue.
fn video_rejection(e: Error) -> Result<Rejection> {
    match e {
        Error::Video { path, reason } => Ok(Rejection {
            path: path.display().to_string(),
            reason,
        }),
        e => Err(e),
    }
}

/// A chunk of one source's frames, as the loader's database takes them.
struct TitledChunk<R> {
    title: String,
    source_path: Option<String>,
    rows: R,
}

/// `frames` as loader `L` takes them, with their files read (on the
/// calling, blocking thread) when `store` says to keep them; a frame that
/// cannot be read then is turned away.
fn rows_of<L: FrameLoader>(
    mut frames: Vec<NewFrame>,
    store: bool,
    rejected: &mut Vec<Rejection>,
) -> L::Rows {
    let stored = store.then(|| read_stored(&mut frames, rejected));
    L::rows(&frames, stored)
}

/// Each frame's file, in `frames`' order; a frame whose file cannot be
/// read is turned away and taken out of `frames`.
fn read_stored(frames: &mut Vec<NewFrame>, rejected: &mut Vec<Rejection>) -> Vec<Vec<u8>> {
    let mut bytes = Vec::with_capacity(frames.len());
    frames.retain(|f| match std::fs::read(&f.path) {
        Ok(b) => {
            bytes.push(b);
            true
        }
        Err(e) => {
            rejected.push(Rejection {
                path: f.path.clone(),
                reason: format!("cannot be read to store it: {e}"),
            });
            false
        }
    });
    bytes
}

/// A film's extracted frames as loader `L` takes them, read off the
/// runtime; an extracted frame that cannot be read to store it is an error.
pub(crate) async fn film_rows<L: FrameLoader>(
    frames: &[NewFrame],
    store: bool,
) -> std::result::Result<L::Rows, String> {
    let frames = frames.to_vec();
    let (rows, unread) = tokio::task::spawn_blocking(move || {
        let mut unread = Vec::new();
        (rows_of::<L>(frames, store, &mut unread), unread)
    })
    .await
    .expect("frame reading thread");
    match unread.first() {
        Some(r) => Err(format!("frame {}: {}", r.path, r.reason)),
        None => Ok(rows),
    }
}

/// Enqueues every frame of `sources`; `rejected` holds inputs already
/// turned away while planning. Rejections are reported, not raised: the
/// caller decides the exit code.
pub async fn enqueue(
    db: &Db,
    sources: Vec<Source>,
    rejected: Vec<Rejection>,
    opts: &EnqueueOptions,
) -> Result<EnqueueSummary> {
    let started = Instant::now();
    let checked = check(sources, rejected, opts.strict).await?;
    let summary = if opts.strict && !checked.rejected.is_empty() {
        EnqueueSummary::only_rejections(checked.rejected)
    } else {
        write(&Store::from(db.clone()), checked, opts).await?
    };
    Ok(summary.finish(started))
}

/// Frame sources read through once, and what was turned away so far.
struct Checked {
    sources: std::sync::Arc<Vec<Source>>,
    rejected: Vec<Rejection>,
}

/// Reads every manifest through (a syntax error stops everything before a
/// write) and, with `strict`, checks every frame.
async fn check(
    sources: Vec<Source>,
    mut rejected: Vec<Rejection>,
    strict: bool,
) -> Result<Checked> {
    let started = Instant::now();
    let sources = std::sync::Arc::new(sources);
    let pre = {
        let sources = sources.clone();
        tokio::task::spawn_blocking(move || prepass(&sources, strict))
            .await
            .expect("prepass thread")
    };
    rejected.extend(pre?);
    tracing::debug!(
        "enqueue: inputs read through in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(Checked { sources, rejected })
}

/// Writes the checked frames, chunk by chunk, while the next chunk is
/// checked and made into the database's rows on a blocking thread.
async fn write(db: &Store, checked: Checked, opts: &EnqueueOptions) -> Result<EnqueueSummary> {
    if checked.sources.is_empty() {
        return Ok(EnqueueSummary::only_rejections(checked.rejected));
    }
    match db.frame_loader(&opts.passes).await? {
        Loader::Sqlite(loader) => write_with(db, loader, checked, opts).await,
        Loader::Postgres(loader) => write_with(db, loader, checked, opts).await,
    }
}

async fn write_with<L: FrameLoader>(
    db: &Store,
    mut loader: L,
    checked: Checked,
    opts: &EnqueueOptions,
) -> Result<EnqueueSummary> {
    let Checked {
        sources,
        mut rejected,
    } = checked;
    let started = Instant::now();
    let (tx, mut rx) = mpsc::channel::<TitledChunk<L::Rows>>(2);
    let chunk_size = opts.chunk();
    let distance = opts.dedupe_distance;
    let store = opts.store_frames;
    let producer = tokio::task::spawn_blocking(move || {
        produce::<L>(&sources, chunk_size, distance, store, &tx)
    });
    let mut films: BTreeMap<String, FilmSummary> = BTreeMap::new();
    let mut last_log = Instant::now();
    let mut result = Ok(());
    while let Some(item) = rx.recv().await {
        let written = write_chunk(db, &mut loader, &item, opts, &mut films, &mut rejected).await;
        if let Err(e) = written {
            result = Err(e);
            break;
        }
        if last_log.elapsed().as_secs() >= 5 {
            let n: u64 = films.values().map(|f| f.new + f.already).sum();
            let rate = n as f64 / started.elapsed().as_secs_f64();
            tracing::info!("enqueue: {n} frames so far ({rate:.0}/s)");
            last_log = Instant::now();
        }
    }
    drop(rx);
    let produced = producer.await.expect("producer thread");
    result?;
    rejected.extend(produced?);

    Ok(EnqueueSummary {
        films: films.into_values().collect(),
        rejected,
        ..EnqueueSummary::default()
    })
}

async fn write_chunk<L: FrameLoader>(
    db: &Store,
    loader: &mut L,
    item: &TitledChunk<L::Rows>,
    opts: &EnqueueOptions,
    films: &mut BTreeMap<String, FilmSummary>,
    rejected: &mut Vec<Rejection>,
) -> Result<()> {
    let film = match films.get_mut(&item.title) {
        Some(f) => f,
        None => {
            let spec = FilmSpec {
                title: item.title.clone(),
                source_path: item.source_path.clone(),
                priority: opts.priority,
            };
            let film_id = db.ensure_film(&spec).await?;
            films.entry(item.title.clone()).or_insert(FilmSummary {
                title: item.title.clone(),
                film_id,
                ..FilmSummary::default()
            })
        }
    };
    let outcome = loader
        .load(film.film_id, &item.rows, &opts.job_spec())
        .await?;
    film.new += outcome.inserted;
    film.already += outcome.already;
    film.near_duplicates += outcome.near_duplicates;
    rejected.extend(
        outcome
            .index_conflicts
            .into_iter()
            .map(|(path, index)| Rejection {
                path,
                reason: format!(
                    "frame_index {index} of film {:?} already holds another frame",
                    item.title
                ),
            }),
    );
    Ok(())
}

/// Reads every manifest through once (syntax errors stop everything before
/// a write); with `strict`, checks every frame too.
fn prepass(sources: &[Source], strict: bool) -> Result<Vec<Rejection>> {
    let mut rejected = Vec::new();
    let mut checker = FrameChecker::default();
    for source in sources {
        for frame in frame_refs(source)? {
            let frame = frame?;
            if strict && let Err(r) = checker.check(frame) {
                rejected.push(r);
            }
        }
    }
    Ok(rejected)
}

fn frame_refs(source: &Source) -> Result<Box<dyn Iterator<Item = Result<FrameRef>> + '_>> {
    Ok(match source {
        Source::Paths { paths, .. } => Box::new(paths.iter().map(|p| {
            Ok(FrameRef {
                path: p.clone(),
                frame_index: None,
                pts_ms: None,
            })
        })),
        Source::Manifest { path, .. } => Box::new(ManifestReader::open(path)?),
    })
}

/// Checks each source's frames and sends them in chunks; with a dedupe
/// distance, each still carries it to the worker, which hashes the still
/// when it decodes it (nothing is decoded here: see migration 0018).
fn produce<L: FrameLoader>(
    sources: &[Source],
    chunk_size: usize,
    dedupe_distance: Option<u32>,
    store: bool,
    tx: &mpsc::Sender<TitledChunk<L::Rows>>,
) -> Result<Vec<Rejection>> {
    let mut rejected = Vec::new();
    let mut checker = FrameChecker::default();
    for source in sources {
        let source_path = match source {
            Source::Paths { paths, .. } => common_folder(paths),
            Source::Manifest { path, .. } => std::fs::canonicalize(path)
                .ok()
                .map(|p| p.display().to_string()),
        };
        let mut batch: Vec<NewFrame> = Vec::with_capacity(chunk_size);
        let send = |batch: &mut Vec<NewFrame>, rejected: &mut Vec<Rejection>| -> bool {
            let rows = rows_of::<L>(std::mem::take(batch), store, rejected);
            tx.blocking_send(TitledChunk {
                title: source.title().to_string(),
                source_path: source_path.clone(),
                rows,
            })
            .is_ok()
        };
        for frame in frame_refs(source)? {
            match checker.check(frame?) {
                Ok(f) => batch.push(NewFrame {
                    dedupe_distance,
                    ..f
                }),
                Err(r) => rejected.push(r),
            }
            if batch.len() >= chunk_size && !send(&mut batch, &mut rejected) {
                return Ok(rejected);
            }
        }
        if !batch.is_empty() && !send(&mut batch, &mut rejected) {
            return Ok(rejected);
        }
    }
    Ok(rejected)
}

/// The folder all `paths` share, if they share one.
fn common_folder(paths: &[std::path::PathBuf]) -> Option<String> {
    let first = paths.first()?.parent()?;
    paths
        .iter()
        .all(|p| p.parent() == Some(first))
        .then(|| std::fs::canonicalize(first).ok())
        .flatten()
        .map(|p| p.display().to_string())
}
