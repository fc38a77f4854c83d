//! SQLite's side of the contract ([`Backend`] for [`Db`]): each operation
//! is a statement (or one transaction) of the file beside it — `jobs.rs`,
//! `lease.rs`, `queue.rs`, `passes.rs`, `results.rs`, `report.rs`,
//! `status.rs` — run on the pool. Times are this host's clock in ms
//! ([`now_ms`]): one file has one host.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;

use super::contract::{Backend, WorkQueue};
use super::jobs::{self, Fence, Scope, ServerEvent, WorkerState};
use super::lease::{self, Acquire, Holder, OrphanServer};
use super::passes::{self, Pass, PassIdentity, PassSummary};
use super::queue::{self, ExistingFilm, FilmSpec, NewShot, SubtitleLine, VideoFilm};
use super::report::{self, FilmFacts, ReportField, ReportFrame};
use super::results::{self, DialogueHit, PageKey, ResultRow, SearchHit, fts_query};
use super::status::{self, FilmStatus, LeaseHolder};
use super::work::SqliteWork;
use super::{Db, Loader, now_ms};
use crate::error::Result;

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl Backend for Db {
    async fn close(&self) {
        Db::close(self).await;
    }

    fn file(&self) -> Option<&Path> {
        Some(self.path())
    }

    fn sqlite(&self) -> Option<&Db> {
        Some(self)
    }

    fn shown(&self) -> String {
        self.path().display().to_string()
    }

    /// SQLite's loader takes the passes with each chunk ([`queue::JobSpec`]).
    async fn frame_loader(&self, _passes: &[String]) -> Result<Loader> {
        Ok(Loader::Sqlite(self.bulk_loader().await?))
    }

    async fn open_work(
        &self,
        _me: &Holder,
        fence: Fence,
        scope: Scope,
        lease: Duration,
    ) -> Result<WorkQueue> {
        Ok(Box::new(SqliteWork::open(self, fence, scope, lease).await?))
    }

    async fn register_worker(&self, me: &Holder, gpu: &str) -> Result<()> {
        jobs::register_worker(self.pool(), &me.id, me.pid, &me.host, gpu, now_ms()).await
    }

    async fn set_worker_state(&self, id: &str, state: WorkerState) -> Result<()> {
        jobs::set_worker_state(self.pool(), id, state, now_ms()).await
    }

    async fn has_open_work(&self, scope: Scope) -> Result<bool> {
        jobs::has_open_work(self.pool(), scope).await
    }

    async fn count_server_event(&self, worker: &str, event: ServerEvent) -> Result<()> {
        jobs::count_server_event(self.pool(), worker, event).await
    }

    async fn workers(&self, since: Option<Duration>) -> Result<status::Workers> {
        status::workers(self.pool(), since.map_or(i64::MIN, |s| now_ms() - ms(s))).await
    }

    async fn acquire_lease(&self, gpu: &str, me: &Holder, ttl: Duration) -> Result<Acquire> {
        lease::acquire(self.pool(), gpu, me, ms(ttl), now_ms()).await
    }

    async fn release_lease(&self, gpu: &str, me: &Holder, epoch: i64) -> Result<()> {
        lease::release(self.pool(), gpu, &me.id, epoch, now_ms())
            .await
            .map(|_| ())
    }

    async fn renew_lease(&self, gpu: &str, me: &Holder, epoch: i64, ttl: Duration) -> Result<bool> {
        let renewal = lease::renew(self.pool(), gpu, &me.id, epoch, ms(ttl), now_ms()).await?;
        Ok(renewal.held)
    }

    async fn wait_for_gpu(&self, gpu: &str, me: &Holder) -> Result<()> {
        lease::wait_for(self.pool(), gpu, me, now_ms()).await
    }

    async fn stop_waiting(&self, _gpu: &str, me: &Holder) -> Result<()> {
        lease::stop_waiting(self.pool(), me).await
    }

    async fn lease_holders(&self) -> Result<Vec<LeaseHolder>> {
        status::lease_holders(self.pool()).await
    }

    async fn set_server(&self, fence: &Fence, server: Option<&OrphanServer>) -> Result<bool> {
        lease::set_server(self.pool(), &fence.gpu, &fence.owner, fence.epoch, server).await
    }

    async fn ensure_film(&self, spec: &FilmSpec) -> Result<i64> {
        queue::ensure_film(self.pool(), spec).await
    }

    async fn film_id(&self, title: &str) -> Result<i64> {
        queue::film_id(self.pool(), title).await
    }

    async fn find_video_film(
        &self,
        video: &VideoFilm,
        title: Option<&str>,
    ) -> Result<Option<ExistingFilm>> {
        match title {
            None => queue::find_video_film(self.pool(), video).await,
            Some(title) => queue::find_video_film_titled(self.pool(), video, title).await,
        }
    }

    async fn films_from_path(&self, source_path: &str) -> Result<Vec<i64>> {
        queue::films_from_path(self.pool(), source_path).await
    }

    async fn create_video_film(&self, video: &VideoFilm) -> Result<(i64, String)> {
        queue::create_video_film(self.pool(), video).await
    }

    async fn delete_film(&self, film: i64) -> Result<()> {
        queue::delete_film(self.pool(), film).await
    }

    /// SQLite reads the rate from the film's row.
    async fn insert_shots(&self, film: i64, _fps: Option<f64>, shots: &[NewShot]) -> Result<()> {
        queue::insert_shots(self.pool(), film, shots).await
    }

    async fn has_subtitles(&self, film: i64) -> Result<bool> {
        queue::has_subtitles(self.pool(), film).await
    }

    async fn replace_subtitles(&self, film: i64, lines: &[SubtitleLine]) -> Result<()> {
        queue::replace_subtitles(self.pool(), film, lines).await
    }

    async fn serve_pass(
        &self,
        name: Option<&str>,
        identity: PassIdentity<'_>,
    ) -> Result<(Pass, bool)> {
        passes::serve(self.pool(), name, identity).await
    }

    async fn only_pass(&self) -> Result<Pass> {
        passes::only(self.pool()).await
    }

    async fn has_frames(&self) -> Result<bool> {
        passes::has_frames(self.pool()).await
    }

    async fn enqueue_frames(&self, pass: i64, films: &[i64], max_attempts: i64) -> Result<u64> {
        passes::enqueue_frames(self.pool(), pass, films, max_attempts).await
    }

    async fn passes(&self) -> Result<Vec<PassSummary>> {
        passes::list(self.pool()).await
    }

    async fn pass_named(&self, name: &str) -> Result<Pass> {
        passes::by_name(self.pool(), name).await
    }

    async fn pass_count(&self) -> Result<i64> {
        passes::count(self.pool()).await
    }

    async fn pass_fields(&self, only: Option<i64>) -> Result<Vec<(i64, Option<String>)>> {
        results::pass_fields(self.pool(), only).await
    }

    async fn report_fields(&self, pass: i64) -> Result<Vec<ReportField>> {
        report::fields(self.pool(), pass).await
    }

    async fn first_pass_with_film(&self, film: i64) -> Result<Option<Pass>> {
        passes::first_with_film(self.pool(), film).await
    }

    async fn retry_failed(&self, film: Option<i64>, pass: Option<i64>) -> Result<u64> {
        queue::retry_failed(self.pool(), film, pass).await
    }

    async fn cancel_queued(&self, film: i64, pass: Option<i64>) -> Result<u64> {
        queue::cancel_queued(self.pool(), film, pass).await
    }

    async fn result_films(&self, only: Option<i64>) -> Result<Vec<i64>> {
        results::film_ids(self.pool(), only).await
    }

    async fn result_page(
        &self,
        film: i64,
        pass: Option<i64>,
        after: PageKey,
        failed: bool,
    ) -> Result<Vec<ResultRow>> {
        match failed {
            false => results::done_page(self.pool(), film, pass, after).await,
            true => results::failed_page(self.pool(), film, pass, after).await,
        }
    }

    async fn search(
        &self,
        text: &str,
        film: Option<i64>,
        pass: Option<i64>,
        limit: i64,
    ) -> Result<Option<Vec<SearchHit>>> {
        let Some(query) = fts_query(text) else {
            return Ok(None);
        };
        Ok(Some(
            results::search(self.pool(), &query, film, pass, limit).await?,
        ))
    }

    async fn search_dialogue(
        &self,
        text: &str,
        film: Option<i64>,
        limit: i64,
    ) -> Result<Vec<DialogueHit>> {
        match fts_query(text) {
            Some(query) => results::search_dialogue(self.pool(), &query, film, limit).await,
            None => Ok(Vec::new()),
        }
    }

    async fn report_films(&self, only: &[i64]) -> Result<Vec<FilmFacts>> {
        report::films(self.pool(), only).await
    }

    async fn report_page(&self, film: i64, pass: i64, after: i64) -> Result<Vec<ReportFrame>> {
        report::frames_page(self.pool(), film, pass, after).await
    }

    async fn film_status(&self, only: Option<i64>, pass: Option<i64>) -> Result<Vec<FilmStatus>> {
        status::films(self.pool(), only, pass).await
    }
}
