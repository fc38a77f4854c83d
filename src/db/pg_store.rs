//! [`Backend`] for [`PgDb`]: PostgreSQL's side of the contract, each
//! operation a call into the `cinecut-postgres` crate (see `pg.rs`), its
//! error made ours with the URL shown without its password. Leases, job
//! leases and backoffs are measured on the database's clock.

use std::time::Duration;

use async_trait::async_trait;
use cinecut_postgres::host::HostId;
use cinecut_postgres::{lease as pgl, queue as pgq, workers as pgw};

use super::Loader;
use super::contract::{Backend, WorkQueue};
use super::jobs::{Fence, Scope, ServerEvent, WorkerState};
use super::lease::{Acquire, Holder, OrphanServer};
use super::passes::{Pass, PassIdentity};
use super::pg::{PgDb, PgLoader, pg_holder};
use super::pg_work::PgWork;
use super::report::ReportField;
use super::results::{DialogueHit, SearchHit, fts_query};
use crate::error::{Error, Result};

#[async_trait]
impl Backend for PgDb {
    async fn close(&self) {
        self.queue().close().await;
    }

    fn shown(&self) -> String {
        self.shown.clone()
    }

    async fn frame_loader(&self, passes: &[String]) -> Result<Loader> {
        Ok(Loader::Postgres(PgLoader::new(self, passes).await?))
    }

    async fn open_work(
        &self,
        me: &Holder,
        fence: Fence,
        scope: Scope,
        lease: Duration,
    ) -> Result<WorkQueue> {
        Ok(Box::new(PgWork::open(self, me, fence, scope, lease).await?))
    }

    async fn register_worker(&self, me: &Holder, gpu: &str) -> Result<()> {
        pgw::register(self.queue(), &me.id, &HostId::this(), me.pid, gpu)
            .await
            .map_err(self.err())
    }

    async fn set_worker_state(&self, id: &str, state: WorkerState) -> Result<()> {
        pgw::set_state(self.queue(), id, state)
            .await
            .map_err(self.err())
    }

    async fn has_open_work(&self, scope: Scope) -> Result<bool> {
        pgq::has_open_work(self.queue(), scope)
            .await
            .map_err(self.err())
    }

    async fn count_server_event(&self, worker: &str, event: ServerEvent) -> Result<()> {
        let crashed = event == ServerEvent::Crashed;
        pgw::count_server_event(self.queue(), worker, crashed)
            .await
            .map_err(self.err())
    }

    /// Workers running, or stopped within `since`.
    async fn workers(&self, since: Option<Duration>) -> Result<super::status::Workers> {
        let (seen, gone) = pgw::workers(self.queue(), since)
            .await
            .map_err(self.err())?;
        Ok(super::status::Workers { seen, gone })
    }

    /// Takes GPU `gpu`'s lease for `me` if it is free: unheld, expired by
    /// the database's clock, or held by a dead process on this host.
    async fn acquire_lease(&self, gpu: &str, me: &Holder, ttl: Duration) -> Result<Acquire> {
        pgl::acquire(self.queue(), gpu, &pg_holder(me), ttl)
            .await
            .map_err(self.err())
    }

    async fn release_lease(&self, gpu: &str, me: &Holder, epoch: i64) -> Result<()> {
        pgl::release(self.queue(), gpu, &pg_holder(me), epoch)
            .await
            .map_err(self.err())
    }

    /// Extends a lease that runs no jobs; `false` when it is no longer ours.
    async fn renew_lease(&self, gpu: &str, me: &Holder, epoch: i64, ttl: Duration) -> Result<bool> {
        pgl::renew(self.queue(), gpu, &pg_holder(me), epoch, &[], ttl)
            .await
            .map_err(self.err())
    }

    async fn wait_for_gpu(&self, gpu: &str, me: &Holder) -> Result<()> {
        pgl::wait_for(self.queue(), gpu, &pg_holder(me))
            .await
            .map_err(self.err())
    }

    async fn stop_waiting(&self, gpu: &str, me: &Holder) -> Result<()> {
        pgl::stop_waiting(self.queue(), gpu, &pg_holder(me))
            .await
            .map_err(self.err())
    }

    /// The GPU leases that have a holder, for `gpu`.
    async fn lease_holders(&self) -> Result<Vec<super::status::LeaseHolder>> {
        pgw::held_leases(self.queue()).await.map_err(self.err())
    }

    async fn set_server(&self, fence: &Fence, server: Option<&OrphanServer>) -> Result<bool> {
        pgl::set_server(self.queue(), &fence.gpu, &fence.owner, fence.epoch, server)
            .await
            .map_err(self.err())
    }

    /// The film titled `spec.title`, made with its source and priority if
    /// missing; its id.
    async fn ensure_film(&self, spec: &super::queue::FilmSpec) -> Result<i64> {
        pgq::ensure_film_from(
            self.queue(),
            &spec.title,
            spec.source_path.as_deref(),
            spec.priority,
        )
        .await
        .map_err(self.err())
    }

    /// The id of the film titled `title`, or [`Error::UnknownFilm`].
    async fn film_id(&self, title: &str) -> Result<i64> {
        Ok(self
            .film(title)
            .await?
            .ok_or_else(|| Error::UnknownFilm(title.to_string()))?
            .0)
    }

    /// The film made from this very file (of title `title` if given).
    async fn find_video_film(
        &self,
        video: &super::queue::VideoFilm,
        title: Option<&str>,
    ) -> Result<Option<super::queue::ExistingFilm>> {
        cinecut_postgres::films::find_video_film(self.queue(), video, title)
            .await
            .map_err(self.err())
    }

    /// Films made from any version of the file at `source_path`.
    async fn films_from_path(&self, source_path: &str) -> Result<Vec<i64>> {
        cinecut_postgres::films::films_from_path(self.queue(), source_path)
            .await
            .map_err(self.err())
    }

    /// Makes the film of `video` (a title taken gets " (2)"…): its id and
    /// title.
    async fn create_video_film(&self, video: &super::queue::VideoFilm) -> Result<(i64, String)> {
        cinecut_postgres::films::create_video_film(self.queue(), video)
            .await
            .map_err(self.err())
    }

    /// Deletes a film with its frames and jobs.
    async fn delete_film(&self, film: i64) -> Result<()> {
        pgq::delete_film(self.queue(), film)
            .await
            .map(|_| ())
            .map_err(self.err())
    }

    /// Stores a film's shots (before its frames, which name them).
    async fn insert_shots(
        &self,
        film: i64,
        fps: Option<f64>,
        shots: &[super::queue::NewShot],
    ) -> Result<()> {
        pgq::insert_shots(self.queue(), film, fps, shots)
            .await
            .map_err(self.err())
    }

    /// Whether a film has any subtitle line.
    async fn has_subtitles(&self, film: i64) -> Result<bool> {
        cinecut_postgres::dialogue::has_lines(self.queue(), film)
            .await
            .map_err(self.err())
    }

    /// Replaces a film's subtitle lines (in time order).
    async fn replace_subtitles(
        &self,
        film: i64,
        lines: &[super::queue::SubtitleLine],
    ) -> Result<()> {
        cinecut_postgres::dialogue::replace(self.queue(), film, lines)
            .await
            .map_err(self.err())
    }

    async fn serve_pass(
        &self,
        name: Option<&str>,
        identity: PassIdentity<'_>,
    ) -> Result<(Pass, bool)> {
        if let Some(name) = name {
            return self.serve_named(name, identity).await;
        }
        // The choice and the binding are two transactions here: a pass
        // chosen as unsettled may be settled by another worker in between
        // (SQLite decides both under one write lock). Choose again then.
        let mut tries = 0;
        loop {
            let rows = cinecut_postgres::passes::candidates(self.queue())
                .await
                .map_err(self.err())?;
            let name = match super::passes::choose(&rows, identity)? {
                Some(pass) => pass.name.clone(),
                None => identity.derived_name(),
            };
            match self.serve_named(&name, identity).await {
                Err(Error::PassMismatch { .. }) if tries < 3 => tries += 1,
                served => return served,
            }
        }
    }

    async fn only_pass(&self) -> Result<Pass> {
        let all = cinecut_postgres::passes::all_or_default(self.queue())
            .await
            .map_err(self.err())?;
        super::passes::the_only(all)
    }

    /// Whether the database has any frame.
    async fn has_frames(&self) -> Result<bool> {
        pgw::has_frames(self.queue()).await.map_err(self.err())
    }

    /// `describe`: every frame (of `films`, or all) a job in pass `pass`.
    async fn enqueue_frames(&self, pass: i64, films: &[i64], max_attempts: i64) -> Result<u64> {
        pgw::enqueue_frames(self.queue(), pass, films, max_attempts)
            .await
            .map_err(self.err())
    }

    /// `passes`: every pass with its counts and its descriptions' means.
    async fn passes(&self) -> Result<Vec<super::passes::PassSummary>> {
        pgw::passes(self.queue()).await.map_err(self.err())
    }

    /// PostgreSQL's pass rows keep their binding to themselves: the
    /// readers that ask for a pass by name need only its id and name.
    async fn pass_named(&self, name: &str) -> Result<Pass> {
        let id = pgw::pass_id(self.queue(), name)
            .await
            .map_err(self.err())?
            .ok_or_else(|| Error::UnknownPass(name.to_string()))?;
        Ok(Pass {
            id,
            name: name.to_string(),
            binding: 0,
        })
    }

    async fn pass_fields(&self, only: Option<i64>) -> Result<Vec<(i64, Option<String>)>> {
        Ok(self
            .field_kinds(only)
            .await?
            .into_iter()
            .map(|(pass, field)| (pass, field.map(|(name, _)| name)))
            .collect())
    }

    async fn report_fields(&self, pass: i64) -> Result<Vec<ReportField>> {
        Ok(self
            .field_kinds(Some(pass))
            .await?
            .into_iter()
            .filter_map(|(_, field)| field)
            .map(|(name, kind)| ReportField { name, kind })
            .collect())
    }

    /// The oldest pass with jobs of film `film`.
    async fn first_pass_with_film(&self, film: i64) -> Result<Option<super::passes::Pass>> {
        Ok(
            cinecut_postgres::report::first_pass_with_film(self.queue(), film)
                .await
                .map_err(self.err())?
                .map(|(id, name)| super::passes::Pass {
                    id,
                    name,
                    binding: 0,
                }),
        )
    }

    /// `retry --failed`: failed jobs back in the queue with fresh attempts.
    async fn retry_failed(&self, film: Option<i64>, pass: Option<i64>) -> Result<u64> {
        pgw::retry_failed(self.queue(), film, pass)
            .await
            .map_err(self.err())
    }

    /// `cancel`: a film's queued jobs cancelled.
    async fn cancel_queued(&self, film: i64, pass: Option<i64>) -> Result<u64> {
        pgw::cancel_queued(self.queue(), film, pass)
            .await
            .map_err(self.err())
    }

    /// The films `results` goes through (the one given, or all).
    async fn result_films(&self, only: Option<i64>) -> Result<Vec<i64>> {
        pgw::film_ids(self.queue(), only).await.map_err(self.err())
    }

    /// A page of a film's described (or, with `failed`, failed) frames
    /// after `after`.
    async fn result_page(
        &self,
        film: i64,
        pass: Option<i64>,
        after: super::results::PageKey,
        failed: bool,
    ) -> Result<Vec<super::results::ResultRow>> {
        let page = super::results::PAGE;
        match failed {
            false => pgw::done_page(self.queue(), film, pass, after, page).await,
            true => pgw::failed_page(self.queue(), film, pass, after, page).await,
        }
        .map_err(self.err())
    }

    async fn search(
        &self,
        text: &str,
        film: Option<i64>,
        pass: Option<i64>,
        limit: i64,
    ) -> Result<Option<Vec<SearchHit>>> {
        if fts_query(text).is_none() {
            return Ok(None);
        }
        let hits = pgw::search(self.queue(), text, film, pass, limit)
            .await
            .map_err(self.err())?;
        Ok(Some(hits))
    }

    async fn search_dialogue(
        &self,
        text: &str,
        film: Option<i64>,
        limit: i64,
    ) -> Result<Vec<DialogueHit>> {
        if fts_query(text).is_none() {
            return Ok(Vec::new());
        }
        cinecut_postgres::dialogue::search(self.queue(), text, film, limit)
            .await
            .map_err(self.err())
    }

    /// The films `only` names (every film when empty), as the report's
    /// header shows them.
    async fn report_films(&self, only: &[i64]) -> Result<Vec<super::report::FilmFacts>> {
        cinecut_postgres::report::films(self.queue(), only)
            .await
            .map_err(self.err())
    }

    /// A page of a film's frames for the report.
    async fn report_page(
        &self,
        film: i64,
        pass: i64,
        after: i64,
    ) -> Result<Vec<super::report::ReportFrame>> {
        let page = super::report::PAGE;
        cinecut_postgres::report::frames_page(self.queue(), film, pass, after, page)
            .await
            .map_err(self.err())
    }

    /// Every film's progress in every pass (of one film, of one pass, if
    /// given).
    async fn film_status(
        &self,
        film: Option<i64>,
        pass: Option<i64>,
    ) -> Result<Vec<super::status::FilmStatus>> {
        pgw::film_status(self.queue(), film, pass)
            .await
            .map_err(self.err())
    }
}
