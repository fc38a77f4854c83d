//! The one contract both databases keep: [`Backend`], every operation the
//! commands, the producer, the engine and the worker ask of a database, and
//! [`Work`], the queue as one worker sees it under one lease. SQLite's
//! implementation is [`super::Db`] (`sqlite.rs`), PostgreSQL's
//! [`super::pg::PgDb`] (`pg_store.rs`); both take and return the one set of
//! domain types in `cinecut-types`. Everything above `db/` holds a
//! [`Store`] and names neither.
//!
//! Where the two really differ, the difference stays inside an
//! implementation: wake-ups (`PRAGMA data_version` against
//! `LISTEN/NOTIFY`), the clock leases are measured by (the host's against
//! the database's), and how a chunk of new frames is shaped for its insert
//! ([`Loader`]).

use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::jobs::{
    Claimed, ClaimedJob, Fence, Finished, HashedFrame, Neighbour, Recorded, Scope, ServerEvent,
    WorkerState,
};
use super::lease::{Acquire, Holder, OrphanServer, Renewal};
use super::passes::{Pass, PassIdentity, PassSummary};
use super::queue::{ExistingFilm, FilmSpec, NewShot, SubtitleLine, VideoFilm};
use super::report::{FilmFacts, ReportField, ReportFrame};
use super::results::{DialogueHit, PageKey, ResultRow, SearchHit};
use super::status::{FilmStatus, LeaseHolder, Workers};
use super::{Db, Loader};
use crate::error::Result;

/// A database on either backend, shared by every task of a command (a
/// clone is another handle on the same connections).
#[derive(Clone)]
pub struct Store(Arc<dyn Backend>);

impl Store {
    /// A handle on `backend`.
    pub fn new(backend: impl Backend + 'static) -> Store {
        Store(Arc::new(backend))
    }
}

impl std::ops::Deref for Store {
    type Target = dyn Backend;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One worker's queue under one lease epoch (see [`Work`]).
pub type WorkQueue = Box<dyn Work>;

/// Every operation on a cinecut database, as both backends provide it: the
/// same arguments give the same rows and the same errors on either (the
/// parity tests run one script of commands on both and compare).
#[async_trait]
pub trait Backend: Send + Sync + Debug {
    // The connection.

    /// Closes the connections (SQLite: after `PRAGMA optimize`).
    async fn close(&self);

    /// The database file, when there is one (SQLite): the frames folder
    /// goes beside it, and messages name it.
    fn file(&self) -> Option<&Path> {
        None
    }

    /// The SQLite database, for the cache of the weights' hashes (by path,
    /// size and mtime), which only a file on this host can keep.
    fn sqlite(&self) -> Option<&Db> {
        None
    }

    /// Where the database is, for messages (a PostgreSQL URL without its
    /// password).
    fn shown(&self) -> String;

    /// The producer's writer, for an enqueue into the passes `passes` (all
    /// of them, or `default` when there is none, if empty).
    async fn frame_loader(&self, passes: &[String]) -> Result<Loader>;

    /// The queue of worker `me` under the lease `fence` names.
    async fn open_work(
        &self,
        me: &Holder,
        fence: Fence,
        scope: Scope,
        lease: Duration,
    ) -> Result<WorkQueue>;

    // Workers.

    /// Adds `me` to `workers` (for `status`), running on GPU `gpu`.
    async fn register_worker(&self, me: &Holder, gpu: &str) -> Result<()>;

    async fn set_worker_state(&self, id: &str, state: WorkerState) -> Result<()>;

    /// Whether jobs in `scope` are still queued or running.
    async fn has_open_work(&self, scope: Scope) -> Result<bool>;

    /// Counts a llama-server start or crash in the worker's row.
    async fn count_server_event(&self, worker: &str, event: ServerEvent) -> Result<()>;

    /// Workers running, or stopped (or silent) within the last `since`
    /// (every worker with `None`), and the count of the others.
    async fn workers(&self, since: Option<Duration>) -> Result<Workers>;

    // GPU leases.

    /// Takes GPU `gpu`'s lease for `me` if it is free: unheld, expired, or
    /// held by a dead process on this host (whose jobs are requeued; its
    /// llama-server, when it ran on this host, is returned for the caller
    /// to reap).
    async fn acquire_lease(&self, gpu: &str, me: &Holder, ttl: Duration) -> Result<Acquire>;

    async fn release_lease(&self, gpu: &str, me: &Holder, epoch: i64) -> Result<()>;

    /// Extends a lease that runs no jobs (`gpu-lock`'s); `false` when it
    /// is no longer ours.
    async fn renew_lease(&self, gpu: &str, me: &Holder, epoch: i64, ttl: Duration) -> Result<bool>;

    /// Says (again) that `me`, a gpu-lock command, waits for GPU `gpu`:
    /// workers there claim nothing more and give the lease up.
    async fn wait_for_gpu(&self, gpu: &str, me: &Holder) -> Result<()>;

    async fn stop_waiting(&self, gpu: &str, me: &Holder) -> Result<()>;

    /// The GPU leases that have a holder (for `gpu`).
    async fn lease_holders(&self) -> Result<Vec<LeaseHolder>>;

    /// Notes the lease holder's llama-server (or none) in its lease row,
    /// so that a later holder on this host can reap it; `false` when the
    /// lease is no longer ours.
    async fn set_server(&self, fence: &Fence, server: Option<&OrphanServer>) -> Result<bool>;

    // Films.

    /// The id of the film titled `spec.title`, made (with its source and
    /// priority) if missing.
    async fn ensure_film(&self, spec: &FilmSpec) -> Result<i64>;

    /// The id of the film titled `title`, or [`crate::Error::UnknownFilm`].
    async fn film_id(&self, title: &str) -> Result<i64>;

    /// The film made from this very file (path, size and mtime); with
    /// `title`, the one of that title (another title is another film of the
    /// same file).
    async fn find_video_film(
        &self,
        video: &VideoFilm,
        title: Option<&str>,
    ) -> Result<Option<ExistingFilm>>;

    /// Films made from any version of the file at `source_path`.
    async fn films_from_path(&self, source_path: &str) -> Result<Vec<i64>>;

    /// Makes the film of `video` (a title another film has gets " (2)"…):
    /// its id and title.
    async fn create_video_film(&self, video: &VideoFilm) -> Result<(i64, String)>;

    /// Deletes a film with its frames, jobs, shots and dialogue.
    async fn delete_film(&self, film: i64) -> Result<()>;

    /// Stores a film's shots (before its frames, which name them); source
    /// frame numbers at the film's rate `fps`.
    async fn insert_shots(&self, film: i64, fps: Option<f64>, shots: &[NewShot]) -> Result<()>;

    /// Whether a film has any subtitle line.
    async fn has_subtitles(&self, film: i64) -> Result<bool>;

    /// Replaces a film's subtitle lines (in time order).
    async fn replace_subtitles(&self, film: i64, lines: &[SubtitleLine]) -> Result<()>;

    // Passes.

    /// The pass a worker of `identity` serves, and whether it was made now:
    /// `name` if given (made, or bound if not settled, or refused if
    /// settled on another model or profile); otherwise the one chosen by
    /// [`super::passes::choose`].
    async fn serve_pass(
        &self,
        name: Option<&str>,
        identity: PassIdentity<'_>,
    ) -> Result<(Pass, bool)>;

    /// The database's only pass, for a worker given none (a pass `default`
    /// is made when there is none); several are an error asking for one.
    async fn only_pass(&self) -> Result<Pass>;

    /// Whether the database has any frame.
    async fn has_frames(&self) -> Result<bool>;

    /// `describe`: every frame (of `films`, or all) a job in pass `pass`
    /// unless it has one; how many were new.
    async fn enqueue_frames(&self, pass: i64, films: &[i64], max_attempts: i64) -> Result<u64>;

    /// Every pass with its counts and means, oldest first.
    async fn passes(&self) -> Result<Vec<PassSummary>>;

    /// The pass named `name`, or [`crate::Error::UnknownPass`].
    async fn pass_named(&self, name: &str) -> Result<Pass>;

    /// The id of the pass named `name`, or [`crate::Error::UnknownPass`].
    async fn pass_id(&self, name: &str) -> Result<i64> {
        Ok(self.pass_named(name).await?.id)
    }

    /// How many passes there are.
    async fn pass_count(&self) -> Result<i64> {
        Ok(self.passes().await?.len() as i64)
    }

    /// The field names of each pass's profile (of pass `only`, or of every
    /// pass), in pass then profile order: `(pass id, None)` for a pass with
    /// no profile recorded.
    async fn pass_fields(&self, only: Option<i64>) -> Result<Vec<(i64, Option<String>)>>;

    /// The oldest pass with jobs of film `film`.
    async fn first_pass_with_film(&self, film: i64) -> Result<Option<Pass>>;

    // Retry and cancel.

    /// Puts failed jobs (of a film, of a pass) back in the queue with fresh
    /// attempts; how many.
    async fn retry_failed(&self, film: Option<i64>, pass: Option<i64>) -> Result<u64>;

    /// Cancels a film's queued jobs (of one pass); how many.
    async fn cancel_queued(&self, film: i64, pass: Option<i64>) -> Result<u64>;

    // Reads.

    /// The films `results` goes through (the one given, or all).
    async fn result_films(&self, only: Option<i64>) -> Result<Vec<i64>>;

    /// A page of a film's described (or, with `failed`, failed) frames
    /// after `after`.
    async fn result_page(
        &self,
        film: i64,
        pass: Option<i64>,
        after: PageKey,
        failed: bool,
    ) -> Result<Vec<ResultRow>>;

    /// Descriptions with every word of `text`, best first: FTS5 on SQLite,
    /// `tsvector` (English stemming) on PostgreSQL. `None` when `text` has
    /// no words.
    async fn search(
        &self,
        text: &str,
        film: Option<i64>,
        pass: Option<i64>,
        limit: i64,
    ) -> Result<Option<Vec<SearchHit>>>;

    /// Subtitle lines with every word of `text` (none when it has no
    /// words).
    async fn search_dialogue(
        &self,
        text: &str,
        film: Option<i64>,
        limit: i64,
    ) -> Result<Vec<DialogueHit>>;

    /// The films to report (those of `only`, or all), in order.
    async fn report_films(&self, only: &[i64]) -> Result<Vec<FilmFacts>>;

    /// A page of a film's frames for the report: answer, failure or state.
    async fn report_page(&self, film: i64, pass: i64, after: i64) -> Result<Vec<ReportFrame>>;

    /// The fields of pass `pass`'s profile, in order, with their types.
    async fn report_fields(&self, pass: i64) -> Result<Vec<ReportField>>;

    /// Every film's progress in every pass (of one film, of one pass, if
    /// given).
    async fn film_status(&self, only: Option<i64>, pass: Option<i64>) -> Result<Vec<FilmStatus>>;
}

/// One worker's queue under one lease epoch: record what finished and claim
/// more (one transaction), renew, ask whether there is work, and wait for
/// another process's commit. Every write is fenced by the lease's owner and
/// epoch.
#[async_trait]
pub trait Work: Send {
    fn fence(&self) -> &Fence;

    /// Records `finished` and claims up to `claim` more, in one transaction.
    async fn record_and_claim(
        &mut self,
        finished: &[Finished],
        claim: usize,
    ) -> Result<(Recorded, Claimed)>;

    /// Records `finished`, claiming nothing.
    async fn record(&mut self, finished: &[Finished]) -> Result<Recorded> {
        Ok(self.record_and_claim(finished, 0).await?.0)
    }

    /// Sets each claimed job's `line`: the dialogue line on screen at its
    /// frame's time.
    async fn add_dialogue(&mut self, jobs: &mut [ClaimedJob]) -> Result<()>;

    /// The frame before each of `frames` in its film and, when that one is
    /// hashed, its original ([`crate::ingest::dedupe::hash_claimed`]).
    async fn neighbours(&mut self, frames: &[i64]) -> Result<Vec<Neighbour>>;

    /// Writes claimed stills' hashes (a frame another worker hashed first
    /// keeps its own) and marks the near-duplicates among them, in one
    /// transaction. A frame is marked only while its every job is queued or
    /// one of `claimed`, and only against an original that is itself no
    /// duplicate and has a queued, running or done job in each of those
    /// passes: every mark is then resolved by the original's description or
    /// freed by its failure. `claimed`'s jobs of marked frames go back to the
    /// queue as released (never tried), then every queued job of a marked
    /// frame whose original is described gets that description. Returns
    /// the marked frames among `hashed`; a worker whose lease is gone
    /// writes nothing (and gets none).
    async fn mark_hashed(
        &mut self,
        hashed: &[HashedFrame],
        claimed: &[ClaimedJob],
    ) -> Result<Vec<i64>>;

    /// Extends the lease and our jobs' leases; says whether it is still
    /// ours and whether a gpu-lock command waits.
    async fn renew(&self) -> Result<Renewal>;

    /// gpu-lock commands waiting for this GPU.
    async fn waiters(&self) -> Result<i64>;

    /// Whether a job in scope can be claimed now.
    async fn has_claimable(&self) -> Result<bool>;

    /// Whether jobs in scope are still queued or running.
    async fn has_open_work(&self) -> Result<bool>;

    /// How long an idle worker may wait before it looks again.
    async fn next_wake(&self) -> Result<Duration>;

    /// Returns when another process added or freed work, or after
    /// `at_most`.
    async fn wait_for_work(&mut self, at_most: Duration) -> Result<()>;

    /// The worker's row in `workers`, for `status`.
    async fn set_state(&self, state: WorkerState) -> Result<()>;
}
