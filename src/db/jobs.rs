//! The queue's consumer side: claim, record results, requeue, and the
//! `workers` rows.
//!
//! Fencing: every write about a claimed job checks, in its WHERE, that the
//! job is still `running` under this worker and this GPU lease epoch. A worker
//! that lost its lease (paused, presumed dead, taken over) changes nothing;
//! its result is dropped and counted as fenced.
//! Results of a batch and the claim of the next batch share one transaction
//! (group commit): one fsync covers many frames.
//!
//! Speed: every statement is a round trip to the connection's thread, and so
//! is every row a statement returns. The batch statements therefore take
//! their rows as one JSON argument and answer in one JSON row, never one row
//! per job; and a worker runs its batches on a connection of its own, whose
//! page cache no other connection's commit invalidates.
//!
//! The batch statements live in `sql/` (each says what it binds), so that
//! the worker bench runs the very same SQL straight on SQLite for its
//! ceiling.

use sqlx::types::Json;
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};

use super::{begin_immediate, begin_immediate_on};
use crate::error::Result;

pub use cinecut_types::{
    Answer, AttemptOutcome, Claimed, ClaimedJob, Fence, Finished, HashedFrame, JobState, Neighbour,
    Outcome, Recorded, Scope, ServerEvent, StoredFrame, WorkerState,
};

/// One record-and-claim step, by name.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// Whose claims and results these are.
    pub fence: &'a Fence,
    /// Tries to record (results, releases).
    pub finished: &'a [Finished],
    /// How many more jobs to claim (0: record only).
    pub claim: usize,
    /// Which jobs to claim.
    pub scope: Scope,
    pub now: i64,
    /// How long a claimed job's own lease lasts.
    pub lease_ms: i64,
}

/// Records `batch.finished` and claims up to `batch.claim` more jobs, in one
/// transaction, on `conn` (a worker's own connection: see the module note on
/// speed). Claims happen only while the fence's lease is current. Another
/// connection's write lock is waited out ([`super::BusyWait`]).
pub async fn record_and_claim(
    conn: &mut SqliteConnection,
    batch: &Batch<'_>,
) -> Result<(Recorded, Claimed)> {
    let mut wait = super::BusyWait::default();
    loop {
        match record_and_claim_once(conn, batch).await {
            Err(e) => wait.again(e).await?,
            Ok(done) => {
                wait.done();
                return Ok(done);
            }
        }
    }
}

async fn record_and_claim_once(
    conn: &mut SqliteConnection,
    b: &Batch<'_>,
) -> Result<(Recorded, Claimed)> {
    let mut tx = begin_immediate_on(conn).await?;
    let rec = if b.finished.is_empty() {
        Recorded::default()
    } else {
        record_batch(&mut tx, b.fence, b.finished, b.now).await?
    };
    if b.finished
        .iter()
        .any(|f| !matches!(f.outcome, Outcome::Release))
    {
        let (done, failed, retried, requeued) = (
            rec.done as i64,
            rec.failed as i64,
            rec.retried as i64,
            rec.requeued as i64,
        );
        let now = b.now;
        sqlx::query_file!(
            "src/db/sql/batch_worker_counters.sql",
            done,
            failed,
            retried,
            requeued,
            now,
            b.fence.owner
        )
        .execute(&mut *tx)
        .await?;
    }
    let claimed = if b.claim > 0 {
        claim_in(&mut tx, b.fence, b.claim as i64, b.scope, b.now, b.lease_ms).await?
    } else {
        Claimed::default()
    };
    tx.commit().await?;
    Ok((rec, claimed))
}

/// A claimed job as the claim's JSON answer spells it:
/// `[id, attempts, transient_failures, max_attempts, path, frame_id, dedupe]`.
type ClaimRow = (i64, i64, i64, i64, String, i64, Option<u32>);

/// Claims up to `n` jobs inside the batch's transaction. Long only for the
/// two spellings of the pick (all films, one film), which sqlx's checked
/// macros need as two literal statements.
async fn claim_in(
    tx: &mut Transaction<'_, Sqlite>,
    fence: &Fence,
    n: i64,
    scope: Scope,
    now: i64,
    lease_ms: i64,
) -> Result<Claimed> {
    // Pick (one JSON row), then mark them ours: as atomic as one
    // `UPDATE … RETURNING`, since the write lock is held from BEGIN
    // IMMEDIATE, and faster (16-40 % in paired bench runs): RETURNING sends every
    // claimed row as a message of its own from sqlx's connection thread.
    // Nothing is picked while a gpu-lock command waits for this GPU (it
    // refreshes its row as it waits; one silent for 3 TTLs is gone).
    let waiters_since = now - 3 * lease_ms;
    let (pass, binding) = (scope.pass, scope.binding);
    let Json(rows): Json<Vec<ClaimRow>> = match scope.film {
        None => {
            sqlx::query_file_scalar!(
                "src/db/sql/claim_pick.sql",
                now,
                n,
                fence.gpu,
                fence.owner,
                fence.epoch,
                waiters_since,
                pass,
                binding
            )
            .fetch_one(&mut **tx)
            .await?
        }
        Some(film) => {
            sqlx::query_file_scalar!(
                "src/db/sql/claim_pick_film.sql",
                now,
                n,
                fence.gpu,
                fence.owner,
                fence.epoch,
                film,
                waiters_since,
                pass,
                binding
            )
            .fetch_one(&mut **tx)
            .await?
        }
    };
    if rows.is_empty() {
        // Asked only now: an empty claim is rare while work is queued.
        let gpu_wanted =
            super::lease::waiters_for(&mut **tx, &fence.gpu, &fence.owner, waiters_since).await?
                > 0;
        let now_binding = sqlx::query_scalar!("SELECT binding FROM passes WHERE id = ?", pass)
            .fetch_optional(&mut **tx)
            .await?;
        return Ok(Claimed {
            jobs: Vec::new(),
            gpu_wanted,
            rebound: now_binding != Some(binding),
        });
    }
    let ids = serde_json::to_string(&rows.iter().map(|r| r.0).collect::<Vec<_>>())
        .expect("ids serialise");
    let until = now + lease_ms;
    sqlx::query_file!(
        "src/db/sql/claim_mark.sql",
        fence.owner,
        fence.epoch,
        until,
        now,
        ids
    )
    .execute(&mut **tx)
    .await?;
    let mut claimed: Vec<ClaimedJob> = rows.into_iter().map(claimed_job).collect();
    add_stored(tx, &mut claimed).await?;
    claimed.sort_by_key(|j| j.job_id);
    Ok(Claimed {
        jobs: claimed,
        ..Claimed::default()
    })
}

fn claimed_job(row: ClaimRow) -> ClaimedJob {
    let (job_id, attempts, transient_failures, max_attempts, path, frame_id, dedupe) = row;
    ClaimedJob {
        job_id,
        frame_id,
        path,
        line: None,
        attempts,
        transient_failures,
        max_attempts,
        stored: None,
        dedupe,
    }
}

/// Gives each claimed job its frame's stored bytes, if it has any
/// (`enqueue --store-frames`): one lookup by primary key per claim.
async fn add_stored(tx: &mut Transaction<'_, Sqlite>, claimed: &mut [ClaimedJob]) -> Result<()> {
    let frames = serde_json::to_string(&claimed.iter().map(|j| j.frame_id).collect::<Vec<_>>())
        .expect("ids serialise");
    let rows = sqlx::query!(
        r#"SELECT frame_id AS "frame_id!: i64", bytes FROM stored_frames
           WHERE frame_id IN (SELECT value FROM json_each(?1))"#,
        frames
    )
    .fetch_all(&mut **tx)
    .await?;
    for row in rows {
        let bytes = StoredFrame(row.bytes.into());
        for job in claimed.iter_mut().filter(|j| j.frame_id == row.frame_id) {
            job.stored = Some(bytes.clone());
        }
    }
    Ok(())
}

/// One finished try, as [`record_batch`] writes it.
struct ResultRow<'a> {
    job: i64,
    state: JobState,
    error: Option<String>,
    attempts: i64,
    transient: i64,
    run_after: i64,
    /// `None` for a release, which leaves no attempt.
    outcome: Option<AttemptOutcome>,
    class: Option<&'static str>,
    attempt_error: Option<&'a str>,
    raw: Option<&'a str>,
    started: i64,
    finished: i64,
    d: Option<&'a Answer>,
    model: Option<&'a str>,
    sha: Option<&'a str>,
    pv: Option<i64>,
    pt: Option<i64>,
    ct: Option<i64>,
}

/// What one try does to its job, its attempt and its description: one arm
/// per [`Outcome`], each whole on its own (kept in one match so that the
/// rules for all outcomes read side by side).
fn result_row(f: &Finished, now: i64) -> ResultRow<'_> {
    let job = &f.job;
    let mut row = ResultRow {
        job: job.job_id,
        state: JobState::Queued,
        error: None,
        attempts: job.attempts,
        transient: job.transient_failures,
        run_after: 0,
        outcome: None,
        class: None,
        attempt_error: None,
        raw: None,
        started: f.started_at,
        finished: f.finished_at,
        d: None,
        model: None,
        sha: None,
        pv: None,
        pt: None,
        ct: None,
    };
    match &f.outcome {
        Outcome::Done {
            answer,
            model,
            model_sha256,
            prompt_version,
            prompt_tokens,
            completion_tokens,
        } => {
            row.state = JobState::Done;
            row.outcome = Some(AttemptOutcome::Done);
            row.attempts += 1;
            row.d = Some(answer);
            row.model = Some(model);
            row.sha = model_sha256.as_deref();
            row.pv = Some(*prompt_version);
            row.pt = *prompt_tokens;
            row.ct = *completion_tokens;
        }
        Outcome::Retry {
            class,
            error,
            raw,
            backoff_ms,
        } => {
            row.attempts += 1;
            row.class = Some(class);
            row.attempt_error = Some(error);
            row.raw = raw.as_deref();
            if row.attempts >= job.max_attempts {
                row.state = JobState::Failed;
                row.outcome = Some(AttemptOutcome::Failed);
                row.error = Some(format!(
                    "gave up after {} attempt(s): {error}",
                    row.attempts
                ));
            } else {
                row.outcome = Some(AttemptOutcome::Retry);
                row.error = Some(error.clone());
                row.run_after = now + backoff_ms;
            }
        }
        Outcome::Fail { class, error } => {
            row.state = JobState::Failed;
            row.outcome = Some(AttemptOutcome::Failed);
            row.attempts += 1;
            row.class = Some(class);
            row.attempt_error = Some(error);
            row.error = Some(error.clone());
        }
        Outcome::Requeue {
            class,
            error,
            counts,
            poison_after,
            backoff_ms,
        } => {
            row.transient += i64::from(*counts);
            row.class = Some(class);
            row.attempt_error = Some(error);
            if row.transient >= *poison_after {
                row.state = JobState::Failed;
                row.outcome = Some(AttemptOutcome::Failed);
                row.error = Some(format!(
                    "poison: failed {} time(s) in a row this way, last: {error}",
                    row.transient
                ));
            } else {
                row.outcome = Some(AttemptOutcome::Requeued);
                row.error = Some(error.clone());
                row.run_after = now + backoff_ms;
            }
        }
        Outcome::Release => {}
    }
    row
}

/// Records a batch of results with four statements, whatever its size.
/// Rows whose job is no longer ours (fencing) change nothing.
pub(super) async fn record_batch(
    tx: &mut Transaction<'_, Sqlite>,
    fence: &Fence,
    finished: &[Finished],
    now: i64,
) -> Result<Recorded> {
    let ids = serde_json::to_string(&finished.iter().map(|f| f.job.job_id).collect::<Vec<_>>())
        .expect("ids serialise");
    let Json(fenced): Json<Vec<i64>> =
        sqlx::query_file_scalar!("src/db/sql/batch_fenced.sql", ids, fence.owner, fence.epoch)
            .fetch_one(&mut **tx)
            .await?;
    let mut rec = Recorded {
        fenced: fenced.len() as u64,
        ..Recorded::default()
    };
    if rec.fenced > 0 {
        tracing::warn!(
            "{} result(s) dropped: their jobs are no longer ours (lease lost or taken over)",
            rec.fenced
        );
    }
    // The rows that change their job: counted, and the source of the job,
    // description and attempt rows.
    let mine: Vec<ResultRow> = finished
        .iter()
        .filter(|f| !fenced.contains(&f.job.job_id))
        .map(|f| result_row(f, now))
        .collect();
    if mine.is_empty() {
        return Ok(rec);
    }
    for r in &mine {
        match (r.state, r.outcome) {
            (JobState::Done, _) => rec.done += 1,
            (JobState::Failed, _) => rec.failed += 1,
            (_, Some(AttemptOutcome::Retry)) => rec.retried += 1,
            (_, Some(AttemptOutcome::Requeued)) => rec.requeued += 1,
            _ => {}
        }
    }
    // Each statement binds only its own columns, as JSON arrays of
    // positional rows: less to parse than the whole row, thrice.
    let jobs_json = serde_json::to_string(
        &mine
            .iter()
            .map(|r| {
                (
                    r.job,
                    r.state.as_sql(),
                    &r.error,
                    r.attempts,
                    r.transient,
                    r.run_after,
                )
            })
            .collect::<Vec<_>>(),
    )
    .expect("rows serialise");
    sqlx::query_file!(
        "src/db/sql/batch_jobs.sql",
        jobs_json,
        fence.owner,
        fence.epoch,
        now
    )
    .execute(&mut **tx)
    .await?;
    if rec.done > 0 {
        write_descriptions(tx, &mine, now).await?;
    }
    write_attempts(tx, fence, &mine).await?;
    Ok(rec)
}

/// The `descriptions` rows of a batch's done jobs, as one statement.
async fn write_descriptions(
    tx: &mut Transaction<'_, Sqlite>,
    mine: &[ResultRow<'_>],
    now: i64,
) -> Result<()> {
    let described = serde_json::to_string(
        &mine
            .iter()
            .filter_map(|r| {
                let d = r.d?;
                Some((
                    r.job,
                    d.text("visual_content"),
                    d.text("mood"),
                    d.text("action"),
                    d.text("setting"),
                    r.model,
                    r.sha,
                    r.pv,
                    r.finished - r.started,
                    r.pt,
                    r.ct,
                    d,
                    d.search_text(),
                ))
            })
            .collect::<Vec<_>>(),
    )
    .expect("rows serialise");
    sqlx::query_file!("src/db/sql/batch_descriptions.sql", described, now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The `attempts` rows of a batch's tries (a release leaves none), as one
/// statement.
async fn write_attempts(
    tx: &mut Transaction<'_, Sqlite>,
    fence: &Fence,
    mine: &[ResultRow<'_>],
) -> Result<()> {
    let tried: Vec<_> = mine
        .iter()
        .filter_map(|r| {
            Some((
                r.job,
                r.started,
                r.finished,
                r.outcome?.as_sql(),
                r.class,
                r.attempt_error,
                r.raw,
                r.pt,
                r.ct,
            ))
        })
        .collect();
    if tried.is_empty() {
        return Ok(());
    }
    let tried = serde_json::to_string(&tried).expect("rows serialise");
    sqlx::query_file!(
        "src/db/sql/batch_attempts.sql",
        tried,
        fence.owner,
        fence.epoch
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Whether jobs in scope are still queued or running.
pub async fn has_open_work(pool: &SqlitePool, scope: Scope) -> Result<bool> {
    Ok(match scope.film {
        None => sqlx::query_scalar!(
            r#"SELECT (EXISTS (SELECT 1 FROM jobs WHERE pass_id = ?1 AND state = 'queued')
                    OR EXISTS (SELECT 1 FROM jobs WHERE pass_id = ?1 AND state = 'running')) AS "open!: bool""#,
            scope.pass
        )
        .fetch_one(pool)
        .await?,
        Some(film) => sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM jobs WHERE film_id = ?1 AND pass_id = ?2
                                AND state IN ('queued', 'running')) AS "open!: bool""#,
            film,
            scope.pass
        )
        .fetch_one(pool)
        .await?,
    })
}

/// Whether a job in scope can be claimed now (a near-duplicate waiting for
/// its original's description cannot).
pub async fn has_claimable(pool: &SqlitePool, scope: Scope, now: i64) -> Result<bool> {
    Ok(match scope.film {
        None => sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM jobs WHERE pass_id = ?1 AND state = 'queued' AND run_after <= ?2
                                AND NOT EXISTS (SELECT 1 FROM frames d
                                                WHERE d.id = jobs.frame_id AND d.duplicate_of IS NOT NULL))
                      AS "open!: bool""#,
            scope.pass,
            now
        )
        .fetch_one(pool)
        .await?,
        Some(film) => sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM jobs WHERE film_id = ?1 AND pass_id = ?2 AND state = 'queued'
                                AND run_after <= ?3
                                AND NOT EXISTS (SELECT 1 FROM frames d
                                                WHERE d.id = jobs.frame_id AND d.duplicate_of IS NOT NULL))
                      AS "open!: bool""#,
            film,
            scope.pass,
            now
        )
        .fetch_one(pool)
        .await?,
    })
}

/// When the next delayed (backing-off) job in scope becomes claimable.
pub async fn next_run_after(pool: &SqlitePool, scope: Scope, now: i64) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar!(
        r#"SELECT min(run_after) AS "t: i64" FROM jobs
           WHERE pass_id = ?3 AND state = 'queued' AND run_after > ?1 AND (?2 IS NULL OR film_id = ?2)"#,
        now,
        scope.film,
        scope.pass
    )
    .fetch_one(pool)
    .await?)
}

/// Registers a worker process for `status`.
pub async fn register_worker(
    pool: &SqlitePool,
    id: &str,
    pid: i64,
    host: &str,
    gpu: &str,
    now: i64,
) -> Result<()> {
    let mut tx = begin_immediate(pool).await?;
    sqlx::query!(
        r#"INSERT INTO workers (id, pid, host, gpu, started_at, heartbeat_at, state) VALUES (?1, ?2, ?3, ?4, ?5, ?5, 'starting')"#,
        id,
        pid,
        host,
        gpu,
        now
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Updates a worker's state and heartbeat; `Stopped` and `Failed` mark it
/// gone.
pub async fn set_worker_state(
    pool: &SqlitePool,
    id: &str,
    state: WorkerState,
    now: i64,
) -> Result<()> {
    let stopped = matches!(state, WorkerState::Stopped | WorkerState::Failed);
    let stopped_at = stopped.then_some(now);
    let state = state.as_sql();
    let mut tx = begin_immediate(pool).await?;
    sqlx::query!(
        "UPDATE workers SET state = ?, heartbeat_at = ?, stopped_at = coalesce(?, stopped_at) WHERE id = ?",
        state,
        now,
        stopped_at,
        id
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Adds one to the worker's `server_starts` or `server_restarts`.
pub async fn count_server_event(pool: &SqlitePool, id: &str, event: ServerEvent) -> Result<()> {
    let (started, restarted) = match event {
        ServerEvent::Started => (1, 0),
        ServerEvent::Crashed => (0, 1),
    };
    super::retry_busy(|| async {
        sqlx::query!(
            "UPDATE workers SET server_starts = server_starts + ?, server_restarts = server_restarts + ? WHERE id = ?",
            started,
            restarted,
            id
        )
        .execute(pool)
        .await?;
        Ok(())
    })
    .await
}
