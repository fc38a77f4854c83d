//! The producer: turns inputs into films, frames and jobs.
//!
//! Checking frames (a `stat` each) and serialising chunks runs on a blocking
//! thread while the previous chunk is written, so the two overlap. Nothing is
//! written before a manifest has been read through once (a syntax error
//! leaves the database unchanged), and with `--strict` nothing is written
//! unless every frame passes its check.

pub mod film;
pub mod frames;

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::db::Db;
use crate::db::queue::{self, FilmSpec, FrameChunk, NewFrame};
use crate::error::Result;
use frames::{FrameChecker, FrameRef, ManifestReader, Rejection, Source};

/// How an enqueue behaves.
#[derive(Debug, Clone)]
pub struct EnqueueOptions {
    pub strict: bool,
    pub priority: i64,
    pub max_attempts: i64,
    pub chunk_size: usize,
}

impl Default for EnqueueOptions {
    fn default() -> Self {
        EnqueueOptions {
            strict: false,
            priority: 0,
            max_attempts: 3,
            chunk_size: 20_000,
        }
    }
}

/// What an enqueue did to one film.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct FilmSummary {
    pub title: String,
    pub film_id: i64,
    pub new: u64,
    pub already: u64,
}

/// What an enqueue did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EnqueueSummary {
    pub films: Vec<FilmSummary>,
    pub new: u64,
    pub already: u64,
    pub rejected: Vec<Rejection>,
    pub seconds: f64,
}

struct TitledChunk {
    title: String,
    source_path: Option<String>,
    chunk: FrameChunk,
}

/// Enqueues every frame of `sources`; `rejected` holds inputs already
/// turned away while planning. Rejections are reported, not raised: the
/// caller decides the exit code.
pub async fn enqueue(
    db: &Db,
    sources: Vec<Source>,
    mut rejected: Vec<Rejection>,
    opts: &EnqueueOptions,
) -> Result<EnqueueSummary> {
    let started = Instant::now();
    let mut summary = EnqueueSummary::default();
    let strict = opts.strict;
    let sources = std::sync::Arc::new(sources);
    {
        let sources = sources.clone();
        let pre = tokio::task::spawn_blocking(move || prepass(&sources, strict))
            .await
            .expect("prepass thread");
        rejected.extend(pre?);
        tracing::debug!(
            "enqueue: inputs read through in {:.2} s",
            started.elapsed().as_secs_f64()
        );
    }
    if strict && !rejected.is_empty() {
        summary.rejected = rejected;
        summary.seconds = started.elapsed().as_secs_f64();
        return Ok(summary);
    }

    let (tx, mut rx) = mpsc::channel::<TitledChunk>(2);
    let chunk_size = opts.chunk_size.max(1);
    let producer = tokio::task::spawn_blocking(move || produce(&sources, chunk_size, &tx));

    let mut loader = db.bulk_loader().await?;
    let mut films: BTreeMap<String, FilmSummary> = BTreeMap::new();
    let mut last_log = Instant::now();
    let mut result = Ok(());
    while let Some(item) = rx.recv().await {
        if let Err(e) = write_chunk(db, &mut loader, &item, opts, &mut films, &mut rejected).await {
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

    summary.films = films.into_values().collect();
    summary.new = summary.films.iter().map(|f| f.new).sum();
    summary.already = summary.films.iter().map(|f| f.already).sum();
    summary.rejected = rejected;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

async fn write_chunk(
    db: &Db,
    loader: &mut sqlx::SqliteConnection,
    item: &TitledChunk,
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
            let film_id = queue::ensure_film(db.pool(), &spec).await?;
            films.entry(item.title.clone()).or_insert(FilmSummary {
                title: item.title.clone(),
                film_id,
                ..FilmSummary::default()
            })
        }
    };
    let outcome =
        queue::enqueue_chunk(loader, film.film_id, &item.chunk, opts.max_attempts).await?;
    film.new += outcome.inserted;
    film.already += outcome.already;
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

fn produce(
    sources: &[Source],
    chunk_size: usize,
    tx: &mpsc::Sender<TitledChunk>,
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
        let send = |batch: &mut Vec<NewFrame>| -> bool {
            let chunk = FrameChunk::new(batch);
            batch.clear();
            tx.blocking_send(TitledChunk {
                title: source.title().to_string(),
                source_path: source_path.clone(),
                chunk,
            })
            .is_ok()
        };
        for frame in frame_refs(source)? {
            match checker.check(frame?) {
                Ok(f) => batch.push(f),
                Err(r) => rejected.push(r),
            }
            if batch.len() >= chunk_size && !send(&mut batch) {
                return Ok(rejected);
            }
        }
        if !batch.is_empty() && !send(&mut batch) {
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
