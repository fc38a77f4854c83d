//! The queue on PostgreSQL (`--db postgres://…`), behind the calls the
//! worker and the commands make on SQLite: this file turns cinecut's types
//! into the `cinecut-postgres` crate's and back. That crate holds every
//! PostgreSQL statement (checked offline against `migrations/postgres`);
//! nothing here writes SQL.
//!
//! What PostgreSQL decides differently: every lease, job lease and backoff
//! is measured on the database's clock (a host's own clock decides
//! nothing); a holder's pid is checked only on its own host (hostname +
//! boot id); idle workers wake on `LISTEN/NOTIFY`; running jobs whose job
//! lease expired are recovered by any worker's heartbeat.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use cinecut_postgres::host::HostId;
use cinecut_postgres::{PgQueue, lease as pgl, queue as pgq, workers as pgw};

use super::jobs::{Claimed, ClaimedJob, Fence, Finished, Recorded, Scope, WorkerState};
use super::lease::{Acquire, Holder, Renewal};
use crate::error::{Error, Result};

/// A cinecut database on PostgreSQL, and the URL it was opened with
/// (shown without its password).
#[derive(Clone)]
pub struct PgDb {
    queue: PgQueue,
    shown: String,
}

impl fmt::Debug for PgDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgDb").field("url", &self.shown).finish()
    }
}

/// `url` with its password replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _password)) => format!("{scheme}://{name}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

impl PgDb {
    /// Connects and brings the schema up to date (under the migrator's
    /// advisory lock, so hosts starting at once do not race).
    pub async fn connect(url: &str) -> Result<PgDb> {
        let shown = redact(url);
        let queue = PgQueue::connect(url).await.map_err(|e| Error::Postgres {
            url: shown.clone(),
            source: e,
        })?;
        Ok(PgDb { queue, shown })
    }

    pub fn queue(&self) -> &PgQueue {
        &self.queue
    }

    /// The URL, without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    pub async fn close(&self) {
        self.queue.close().await;
    }

    fn err(&self) -> impl Fn(cinecut_postgres::Error) -> Error + '_ {
        |source| Error::Postgres {
            url: self.shown.clone(),
            source,
        }
    }

    /// The passes an enqueue creates jobs in (see
    /// [`pgq::passes_for_enqueue`]).
    pub async fn passes_for_enqueue(&self, names: &[String]) -> Result<Vec<i64>> {
        pgq::passes_for_enqueue(&self.queue, names)
            .await
            .map_err(self.err())
    }

    /// The id of the film titled `title`, or [`Error::UnknownFilm`].
    pub async fn film_id(&self, title: &str) -> Result<i64> {
        Ok(self
            .film(title)
            .await?
            .ok_or_else(|| Error::UnknownFilm(title.to_string()))?
            .0)
    }

    /// The film titled `title`: its id and frame count, if there is one.
    pub async fn film(&self, title: &str) -> Result<Option<(i64, i64)>> {
        pgw::film(&self.queue, title).await.map_err(self.err())
    }

    /// The film titled `spec.title`, made with its source and priority if
    /// missing; its id.
    pub async fn ensure_film_spec(&self, spec: &super::queue::FilmSpec) -> Result<i64> {
        pgq::ensure_film_from(
            &self.queue,
            &spec.title,
            spec.source_path.as_deref(),
            spec.priority,
        )
        .await
        .map_err(self.err())
    }

    /// Stores a film's shots (before its frames, which name them).
    pub async fn insert_shots(
        &self,
        film: i64,
        fps: Option<f64>,
        shots: &[super::queue::NewShot],
    ) -> Result<()> {
        pgq::insert_shots(&self.queue, film, fps, shots)
            .await
            .map_err(self.err())
    }

    /// Deletes a film with its frames and jobs.
    pub async fn delete_film(&self, film: i64) -> Result<()> {
        pgq::delete_film(&self.queue, film)
            .await
            .map(|_| ())
            .map_err(self.err())
    }

    /// The id of the pass named `name`, or [`Error::UnknownPass`].
    pub async fn pass_id(&self, name: &str) -> Result<i64> {
        pgw::pass_id(&self.queue, name)
            .await
            .map_err(self.err())?
            .ok_or_else(|| Error::UnknownPass(name.to_string()))
    }

    /// `retry --failed`: failed jobs back in the queue with fresh attempts.
    pub async fn retry_failed(&self, film: Option<i64>, pass: Option<i64>) -> Result<u64> {
        pgw::retry_failed(&self.queue, film, pass)
            .await
            .map_err(self.err())
    }

    /// `cancel`: a film's queued jobs cancelled.
    pub async fn cancel_queued(&self, film: i64, pass: Option<i64>) -> Result<u64> {
        pgw::cancel_queued(&self.queue, film, pass)
            .await
            .map_err(self.err())
    }

    /// The films `results` goes through (the one given, or all).
    pub async fn result_films(&self, only: Option<i64>) -> Result<Vec<i64>> {
        pgw::film_ids(&self.queue, only).await.map_err(self.err())
    }

    /// A page of a film's described (or, with `failed`, failed) frames
    /// after `after`.
    pub async fn result_page(
        &self,
        film: i64,
        pass: Option<i64>,
        after: super::results::PageKey,
        failed: bool,
    ) -> Result<Vec<super::results::ResultRow>> {
        let page = super::results::PAGE;
        match failed {
            false => pgw::done_page(&self.queue, film, pass, after, page).await,
            true => pgw::failed_page(&self.queue, film, pass, after, page).await,
        }
        .map_err(self.err())
    }

    /// `search`: PostgreSQL's full-text search over the answers (every
    /// word, English stemming), best first (lower rank is better, as with
    /// SQLite's bm25).
    pub async fn search(
        &self,
        words: &str,
        film: Option<i64>,
        pass: Option<i64>,
        limit: i64,
    ) -> Result<Vec<super::results::SearchHit>> {
        pgw::search(&self.queue, words, film, pass, limit)
            .await
            .map_err(self.err())
    }

    /// The films `only` names (every film when empty), as the report's
    /// header shows them.
    pub async fn report_films(&self, only: &[i64]) -> Result<Vec<super::report::FilmFacts>> {
        cinecut_postgres::report::films(&self.queue, only)
            .await
            .map_err(self.err())
    }

    /// The film made from this very file (of title `title` if given).
    pub async fn find_video_film(
        &self,
        video: &super::queue::VideoFilm,
        title: Option<&str>,
    ) -> Result<Option<super::queue::ExistingFilm>> {
        cinecut_postgres::films::find_video_film(&self.queue, video, title)
            .await
            .map_err(self.err())
    }

    /// Films made from any version of the file at `source_path`.
    pub async fn films_from_path(&self, source_path: &str) -> Result<Vec<i64>> {
        cinecut_postgres::films::films_from_path(&self.queue, source_path)
            .await
            .map_err(self.err())
    }

    /// Makes the film of `video` (a title taken gets " (2)"…): its id and
    /// title.
    pub async fn create_video_film(
        &self,
        video: &super::queue::VideoFilm,
    ) -> Result<(i64, String)> {
        cinecut_postgres::films::create_video_film(&self.queue, video)
            .await
            .map_err(self.err())
    }

    /// Replaces a film's subtitle lines (in time order).
    pub async fn replace_subtitles(
        &self,
        film: i64,
        lines: &[super::queue::SubtitleLine],
    ) -> Result<()> {
        cinecut_postgres::dialogue::replace(&self.queue, film, lines)
            .await
            .map_err(self.err())
    }

    /// Whether a film has any subtitle line.
    pub async fn has_subtitles(&self, film: i64) -> Result<bool> {
        cinecut_postgres::dialogue::has_lines(&self.queue, film)
            .await
            .map_err(self.err())
    }

    /// Subtitle lines with every word of `words`.
    pub async fn search_dialogue(
        &self,
        words: &str,
        film: Option<i64>,
        limit: i64,
    ) -> Result<Vec<super::results::DialogueHit>> {
        cinecut_postgres::dialogue::search(&self.queue, words, film, limit)
            .await
            .map_err(self.err())
    }

    /// A page of a film's frames for the report.
    pub async fn report_page(
        &self,
        film: i64,
        pass: i64,
        after: i64,
    ) -> Result<Vec<super::report::ReportFrame>> {
        let page = super::report::PAGE;
        cinecut_postgres::report::frames_page(&self.queue, film, pass, after, page)
            .await
            .map_err(self.err())
    }

    /// The oldest pass with jobs of film `film`.
    pub async fn first_pass_with_film(&self, film: i64) -> Result<Option<super::passes::Pass>> {
        Ok(
            cinecut_postgres::report::first_pass_with_film(&self.queue, film)
                .await
                .map_err(self.err())?
                .map(|(id, name)| super::passes::Pass {
                    id,
                    name,
                    binding: 0,
                }),
        )
    }

    /// The pass a worker of `identity` serves: `name` (made if new), bound
    /// to its model and profile unless it is settled on others (an error
    /// saying which). Also whether it was made now.
    pub async fn serve_pass(
        &self,
        name: &str,
        identity: super::passes::PassIdentity<'_>,
    ) -> Result<(super::passes::Pass, bool)> {
        let (suffix, hash) = (identity.profile.pass_suffix(), identity.profile.hash());
        let profile: serde_json::Value =
            serde_json::from_str(&identity.profile.to_json()).expect("a profile is JSON");
        let pg_identity = cinecut_postgres::passes::Identity {
            model: identity.model,
            profile_name: &suffix,
            profile_hash: &hash,
            profile: &profile,
        };
        let served = cinecut_postgres::passes::serve(&self.queue, name, pg_identity)
            .await
            .map_err(self.err())?;
        match served {
            Ok(s) => Ok((
                super::passes::Pass {
                    id: s.id,
                    name: name.to_string(),
                    binding: s.binding,
                },
                s.made,
            )),
            Err(m) => Err(Error::PassMismatch {
                pass: name.to_string(),
                what: m.what,
                has: m.has,
                wants: match m.what {
                    "model" => identity.model.to_string(),
                    _ => format!("{suffix} ({})", &hash[..12]),
                },
            }),
        }
    }

    /// The fields of each pass's profile, with their types (see
    /// [`cinecut_postgres::passes::fields`]).
    pub async fn pass_fields(
        &self,
        only: Option<i64>,
    ) -> Result<Vec<(i64, Option<(String, String)>)>> {
        cinecut_postgres::passes::fields(&self.queue, only)
            .await
            .map_err(self.err())
    }

    /// `describe`: every frame (of `films`, or all) a job in pass `pass`.
    pub async fn enqueue_frames(&self, pass: i64, films: &[i64], max_attempts: i64) -> Result<u64> {
        pgw::enqueue_frames(&self.queue, pass, films, max_attempts)
            .await
            .map_err(self.err())
    }

    /// Whether the database has any frame.
    pub async fn has_frames(&self) -> Result<bool> {
        pgw::has_frames(&self.queue).await.map_err(self.err())
    }

    /// `passes`: every pass with its counts and its descriptions' means.
    pub async fn passes(&self) -> Result<Vec<super::passes::PassSummary>> {
        pgw::passes(&self.queue).await.map_err(self.err())
    }

    /// The GPU leases that have a holder, for `gpu`.
    pub async fn lease_holders(&self) -> Result<Vec<super::status::LeaseHolder>> {
        pgw::held_leases(&self.queue).await.map_err(self.err())
    }

    pub async fn register_worker(&self, me: &Holder, gpu: &str) -> Result<()> {
        pgw::register(&self.queue, &me.id, &HostId::this(), me.pid, gpu)
            .await
            .map_err(self.err())
    }

    pub async fn set_worker_state(&self, id: &str, state: WorkerState) -> Result<()> {
        pgw::set_state(&self.queue, id, state)
            .await
            .map_err(self.err())
    }

    pub async fn has_open_work(&self, scope: Scope) -> Result<bool> {
        pgq::has_open_work(&self.queue, scope)
            .await
            .map_err(self.err())
    }

    /// Takes GPU `gpu`'s lease for `me` if it is free: unheld, expired by
    /// the database's clock, or held by a dead process on this host.
    pub async fn acquire(&self, gpu: &str, me: &Holder, ttl: Duration) -> Result<Acquire> {
        pgl::acquire(&self.queue, gpu, &pg_holder(me), ttl)
            .await
            .map_err(self.err())
    }

    pub async fn release(&self, gpu: &str, me: &Holder, epoch: i64) -> Result<()> {
        pgl::release(&self.queue, gpu, &pg_holder(me), epoch)
            .await
            .map_err(self.err())
    }

    /// Extends a lease that runs no jobs; `false` when it is no longer ours.
    pub async fn renew(&self, gpu: &str, me: &Holder, epoch: i64, ttl: Duration) -> Result<bool> {
        pgl::renew(&self.queue, gpu, &pg_holder(me), epoch, &[], ttl)
            .await
            .map_err(self.err())
    }

    pub async fn wait_for_gpu(&self, gpu: &str, me: &Holder) -> Result<()> {
        pgl::wait_for(&self.queue, gpu, &pg_holder(me))
            .await
            .map_err(self.err())
    }

    pub async fn stop_waiting(&self, gpu: &str, me: &Holder) -> Result<()> {
        pgl::stop_waiting(&self.queue, gpu, &pg_holder(me))
            .await
            .map_err(self.err())
    }

    /// Every film's progress in every pass (of one film, of one pass, if
    /// given).
    pub async fn film_status(
        &self,
        film: Option<i64>,
        pass: Option<i64>,
    ) -> Result<Vec<super::status::FilmStatus>> {
        pgw::film_status(&self.queue, film, pass)
            .await
            .map_err(self.err())
    }

    /// Workers running, or stopped within `since`.
    pub async fn workers(&self, since: Duration) -> Result<Vec<super::status::WorkerRow>> {
        pgw::workers(&self.queue, since).await.map_err(self.err())
    }

    /// Adds one to a worker's llama-server starts (or restarts).
    pub async fn count_server_event(&self, worker: &str, crashed: bool) -> Result<()> {
        pgw::count_server_event(&self.queue, worker, crashed)
            .await
            .map_err(self.err())
    }

    /// Adds `frames` to film `film` and a job in pass `pass` to each that
    /// has none; what was new.
    pub async fn enqueue_frames_of(
        &self,
        film: i64,
        pass: i64,
        frames: &[pgq::NewFrame],
        max_attempts: i64,
    ) -> Result<pgq::Enqueued> {
        pgq::enqueue(&self.queue, film, pass, frames, max_attempts)
            .await
            .map_err(self.err())
    }
}

/// The holder as the PostgreSQL lease knows it: its host identity is
/// hostname + boot id (`CINECUT_TEST_HOST_ID` in tests).
fn pg_holder(me: &Holder) -> pgl::Holder {
    pgl::Holder {
        id: me.id.clone(),
        host: HostId::this(),
        pid: me.pid,
        purpose: me.purpose.as_str(),
    }
}

/// One worker's queue under one lease epoch, on PostgreSQL.
pub struct PgWork {
    db: PgDb,
    me: pgl::Holder,
    fence: Fence,
    /// Its pass (and film), and the pass's binding this worker made: its
    /// claims hold only under it.
    scope: Scope,
    lease: Duration,
    /// Jobs claimed and not yet recorded: the job leases a renewal extends.
    mine: HashSet<i64>,
    wakeups: pgq::Wakeups,
}

impl PgWork {
    pub async fn open(
        db: &PgDb,
        me: &Holder,
        fence: Fence,
        scope: Scope,
        lease: Duration,
    ) -> Result<Self> {
        let wakeups = pgq::Wakeups::listen(&db.queue).await.map_err(db.err())?;
        Ok(PgWork {
            db: db.clone(),
            me: pg_holder(me),
            fence,
            scope,
            lease,
            mine: HashSet::new(),
            wakeups,
        })
    }

    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Gives each claimed job the subtitle line on screen at its frame's
    /// time (`--dialogue-context`).
    pub async fn add_dialogue(&self, jobs: &mut [ClaimedJob]) -> Result<()> {
        let frames: Vec<i64> = jobs.iter().map(|j| j.frame_id).collect();
        let lines = cinecut_postgres::dialogue::lines_at(&self.db.queue, &frames)
            .await
            .map_err(self.db.err())?;
        for (frame, line) in lines {
            for job in jobs.iter_mut().filter(|j| j.frame_id == frame) {
                job.line = Some(line.clone());
            }
        }
        Ok(())
    }

    /// Records `finished` and claims up to `claim` more, in one transaction.
    pub async fn record_and_claim(
        &mut self,
        finished: &[Finished],
        claim: usize,
    ) -> Result<(Recorded, Claimed)> {
        let (recorded, claimed) = pgq::record_and_claim(
            &self.db.queue,
            &self.fence,
            finished,
            self.scope,
            claim as i64,
            self.lease,
        )
        .await
        .map_err(self.db.err())?;
        for f in finished {
            self.mine.remove(&f.job.job_id);
        }
        self.mine.extend(claimed.jobs.iter().map(|j| j.job_id));
        Ok((recorded, claimed))
    }

    /// Extends the lease and the job leases of the jobs in flight, and
    /// recovers any worker's jobs whose job lease expired (a host that
    /// died). Says whether the lease is still ours and whether a gpu-lock
    /// command waits.
    pub async fn renew(&self) -> Result<Renewal> {
        let q = &self.db.queue;
        let jobs: Vec<i64> = self.mine.iter().copied().collect();
        let held = pgl::renew(
            q,
            &self.fence.gpu,
            &self.me,
            self.fence.epoch,
            &jobs,
            self.lease,
        )
        .await
        .map_err(self.db.err())?;
        let recovered = pgq::recover_expired(q).await.map_err(self.db.err())?;
        if recovered > 0 {
            tracing::warn!(
                "requeued {recovered} job(s) whose job lease expired (their worker is gone)"
            );
        }
        Ok(Renewal {
            held,
            waiters: self.waiters().await?,
        })
    }

    pub async fn waiters(&self) -> Result<i64> {
        pgq::waiters(&self.db.queue, &self.fence.gpu)
            .await
            .map_err(self.db.err())
    }

    pub async fn has_claimable(&self) -> Result<bool> {
        pgq::has_claimable(&self.db.queue, self.scope)
            .await
            .map_err(self.db.err())
    }

    pub async fn has_open_work(&self) -> Result<bool> {
        pgq::has_open_work(&self.db.queue, self.scope)
            .await
            .map_err(self.db.err())
    }

    /// Until the next backing-off job is due, at most a second.
    pub async fn next_wake(&self) -> Result<Duration> {
        let next = pgq::next_due(&self.db.queue, self.scope)
            .await
            .map_err(self.db.err())?;
        Ok(next.map_or(Duration::from_secs(1), |d| {
            d.clamp(Duration::from_millis(1), Duration::from_secs(1))
        }))
    }

    /// Returns when jobs are enqueued or recovered (`NOTIFY`), or after
    /// `at_most`.
    pub async fn wait_for_work(&mut self, at_most: Duration) -> Result<()> {
        tracing::trace!("idle: waiting up to {at_most:?} for another connection's commit");
        let woken = self.wakeups.wait(at_most).await.map_err(self.db.err())?;
        if woken {
            tracing::debug!("another connection committed; looking for work");
        }
        Ok(())
    }

    pub async fn set_state(&self, state: WorkerState) -> Result<()> {
        self.db.set_worker_state(&self.fence.owner, state).await
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn a_password_never_shows() {
        assert_eq!(
            redact("postgres://cinecut:s3cret@db.example:5432/films?sslmode=disable"),
            "postgres://cinecut:***@db.example:5432/films?sslmode=disable"
        );
        assert_eq!(
            redact("postgres://cinecut@localhost/films"),
            "postgres://cinecut@localhost/films"
        );
        assert_eq!(
            redact("postgresql:///films?host=/tmp/pg"),
            "postgresql:///films?host=/tmp/pg"
        );
    }
}
