//! The queue's consumer side: claim, record results, requeue, and the
//! `workers` rows.
//!
//! Fencing: every write about a claimed job checks, in its WHERE, that the
//! job is still `running` under this worker and this GPU lease epoch. A worker
//! that lost its lease (paused, presumed dead, taken over) changes nothing;
//! its result is dropped and counted as fenced.
//! Results of a batch and the claim of the next batch share one transaction
//! (group commit): one fsync covers many frames.

use sqlx::{Sqlite, SqlitePool, Transaction};

use super::begin_immediate;
use crate::error::Result;
use crate::scene::SceneDescription;

/// A job this worker holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub job_id: i64,
    pub path: String,
    pub attempts: i64,
    pub transient_failures: i64,
    pub max_attempts: i64,
}

/// Who writes: the claims and results of one worker under one lease epoch.
#[derive(Debug, Clone)]
pub struct Fence {
    pub gpu: String,
    pub owner: String,
    pub epoch: i64,
}

/// What became of one try.
#[derive(Debug, Clone)]
pub enum Outcome {
    Done {
        description: SceneDescription,
        model: String,
        model_sha256: Option<String>,
        prompt_version: i64,
        prompt_tokens: Option<i64>,
        completion_tokens: Option<i64>,
    },
    /// Bad model output: burns an attempt; failed once attempts run out.
    Retry {
        class: &'static str,
        error: String,
        raw: Option<String>,
        backoff_ms: i64,
    },
    /// Hopeless (bad frame, request rejected): failed now.
    Fail { class: &'static str, error: String },
    /// Not the frame's fault, probably (crash, timeout, 5xx): back to the
    /// queue without burning an attempt; `counts` adds to the frame's
    /// transient failures, and at `poison_after` of them it is failed as poison.
    Requeue {
        class: &'static str,
        error: String,
        counts: bool,
        poison_after: i64,
        backoff_ms: i64,
    },
    /// Never tried (shutdown, yield): back to the queue, no trace.
    Release,
}

/// One finished try, to record.
#[derive(Debug, Clone)]
pub struct Finished {
    pub job: ClaimedJob,
    pub outcome: Outcome,
    pub started_at: i64,
    pub finished_at: i64,
}

/// What a record step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    pub done: u64,
    pub failed: u64,
    pub retried: u64,
    pub requeued: u64,
    /// Results dropped because the job is no longer ours.
    pub fenced: u64,
}

/// Records `finished` and claims up to `claim` more jobs, in one transaction.
/// Claims happen only while the fence's lease is current.
pub async fn record_and_claim(
    pool: &SqlitePool,
    fence: &Fence,
    finished: &[Finished],
    claim: i64,
    film: Option<i64>,
    now: i64,
    lease_ms: i64,
) -> Result<(Recorded, Vec<ClaimedJob>)> {
    let mut tx = begin_immediate(pool).await?;
    let mut rec = Recorded::default();
    for f in finished {
        record_one(&mut tx, fence, f, now, &mut rec).await?;
    }
    if finished
        .iter()
        .any(|f| !matches!(f.outcome, Outcome::Release))
    {
        let (done, failed, retried, requeued) = (
            rec.done as i64,
            rec.failed as i64,
            rec.retried as i64,
            rec.requeued as i64,
        );
        sqlx::query!(
            r#"UPDATE workers SET jobs_done = jobs_done + ?, jobs_failed = jobs_failed + ?,
                      jobs_retried = jobs_retried + ?, jobs_requeued = jobs_requeued + ?, heartbeat_at = ?
               WHERE id = ?"#,
            done,
            failed,
            retried,
            requeued,
            now,
            fence.owner
        )
        .execute(&mut *tx)
        .await?;
    }
    let claimed = if claim > 0 {
        claim_in(&mut tx, fence, claim, film, now, lease_ms).await?
    } else {
        Vec::new()
    };
    tx.commit().await?;
    Ok((rec, claimed))
}

async fn claim_in(
    tx: &mut Transaction<'static, Sqlite>,
    fence: &Fence,
    n: i64,
    film: Option<i64>,
    now: i64,
    lease_ms: i64,
) -> Result<Vec<ClaimedJob>> {
    // Jobs whose holder vanished without a lease row to prove it (another
    // host, a lost lease) come back when their own lease expires.
    sqlx::query!(
        r#"UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_epoch = NULL, lease_expires_at = NULL, updated_at = ?1
           WHERE state = 'running' AND lease_expires_at < ?1"#,
        now
    )
    .execute(&mut **tx)
    .await?;
    let until = now + lease_ms;
    let rows = match film {
        None => sqlx::query!(
            r#"UPDATE jobs SET state = 'running', lease_owner = ?1, lease_epoch = ?2, lease_expires_at = ?3, updated_at = ?4
               WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' AND run_after <= ?4
                            ORDER BY priority DESC, id LIMIT ?5)
                 AND EXISTS (SELECT 1 FROM gpu_leases WHERE gpu = ?6 AND holder = ?1 AND epoch = ?2)
               RETURNING id AS "id!", attempts, transient_failures, max_attempts"#,
            fence.owner,
            fence.epoch,
            until,
            now,
            n,
            fence.gpu
        )
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(|r| (r.id, r.attempts, r.transient_failures, r.max_attempts))
        .collect::<Vec<_>>(),
        Some(film) => sqlx::query!(
            r#"UPDATE jobs SET state = 'running', lease_owner = ?1, lease_epoch = ?2, lease_expires_at = ?3, updated_at = ?4
               WHERE id IN (SELECT id FROM jobs WHERE film_id = ?7 AND state = 'queued' AND run_after <= ?4
                            ORDER BY id LIMIT ?5)
                 AND EXISTS (SELECT 1 FROM gpu_leases WHERE gpu = ?6 AND holder = ?1 AND epoch = ?2)
               RETURNING id AS "id!", attempts, transient_failures, max_attempts"#,
            fence.owner,
            fence.epoch,
            until,
            now,
            n,
            fence.gpu,
            film
        )
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(|r| (r.id, r.attempts, r.transient_failures, r.max_attempts))
        .collect(),
    };
    let mut claimed = Vec::with_capacity(rows.len());
    for (job_id, attempts, transient_failures, max_attempts) in rows {
        let path = sqlx::query_scalar!("SELECT path FROM frames WHERE id = ?", job_id)
            .fetch_one(&mut **tx)
            .await?;
        claimed.push(ClaimedJob {
            job_id,
            path,
            attempts,
            transient_failures,
            max_attempts,
        });
    }
    claimed.sort_by_key(|j| j.job_id);
    Ok(claimed)
}

async fn record_one(
    tx: &mut Transaction<'static, Sqlite>,
    fence: &Fence,
    f: &Finished,
    now: i64,
    rec: &mut Recorded,
) -> Result<()> {
    let job = &f.job;
    // (state, last_error, attempts, transient_failures, run_after, attempt outcome)
    let (state, error, attempts, transient, run_after, outcome, class, raw) = match &f.outcome {
        Outcome::Done { .. } => (
            "done",
            None,
            job.attempts + 1,
            job.transient_failures,
            0,
            "done",
            None,
            None,
        ),
        Outcome::Retry {
            class,
            error,
            raw,
            backoff_ms,
        } => {
            let attempts = job.attempts + 1;
            if attempts >= job.max_attempts {
                let msg = format!("gave up after {attempts} attempt(s): {error}");
                (
                    "failed",
                    Some(msg),
                    attempts,
                    job.transient_failures,
                    0,
                    "failed",
                    Some(*class),
                    raw.clone(),
                )
            } else {
                (
                    "queued",
                    Some(error.clone()),
                    attempts,
                    job.transient_failures,
                    now + backoff_ms,
                    "retry",
                    Some(*class),
                    raw.clone(),
                )
            }
        }
        Outcome::Fail { class, error } => (
            "failed",
            Some(error.clone()),
            job.attempts + 1,
            job.transient_failures,
            0,
            "failed",
            Some(*class),
            None,
        ),
        Outcome::Requeue {
            class,
            error,
            counts,
            poison_after,
            backoff_ms,
        } => {
            let transient = job.transient_failures + i64::from(*counts);
            if transient >= *poison_after {
                let msg =
                    format!("poison: failed {transient} time(s) in a row this way, last: {error}");
                (
                    "failed",
                    Some(msg),
                    job.attempts,
                    transient,
                    0,
                    "failed",
                    Some(*class),
                    None,
                )
            } else {
                (
                    "queued",
                    Some(error.clone()),
                    job.attempts,
                    transient,
                    now + backoff_ms,
                    "requeued",
                    Some(*class),
                    None,
                )
            }
        }
        Outcome::Release => (
            "queued",
            None,
            job.attempts,
            job.transient_failures,
            0,
            "",
            None,
            None,
        ),
    };
    let updated = sqlx::query!(
        r#"UPDATE jobs SET state = ?1, last_error = coalesce(?2, CASE WHEN ?1 = 'done' THEN NULL ELSE last_error END),
                  attempts = ?3, transient_failures = ?4, run_after = ?5, updated_at = ?6,
                  lease_owner = CASE WHEN ?1 = 'queued' THEN NULL ELSE lease_owner END,
                  lease_epoch = CASE WHEN ?1 = 'queued' THEN NULL ELSE lease_epoch END,
                  lease_expires_at = NULL
           WHERE id = ?7 AND state = 'running' AND lease_owner = ?8 AND lease_epoch = ?9"#,
        state,
        error,
        attempts,
        transient,
        run_after,
        now,
        job.job_id,
        fence.owner,
        fence.epoch
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if updated == 0 {
        rec.fenced += 1;
        tracing::warn!(
            "job {} is no longer ours (lease lost or taken over); result dropped",
            job.job_id
        );
        return Ok(());
    }
    match (state, outcome) {
        ("done", _) => rec.done += 1,
        ("failed", _) => rec.failed += 1,
        (_, "retry") => rec.retried += 1,
        (_, "requeued") => rec.requeued += 1,
        _ => {}
    }
    if let Outcome::Done {
        description: d,
        model,
        model_sha256,
        prompt_version,
        prompt_tokens,
        completion_tokens,
    } = &f.outcome
    {
        let latency = f.finished_at - f.started_at;
        sqlx::query!(
            r#"INSERT INTO descriptions (job_id, frame_id, visual_content, mood, action, setting, model, model_sha256,
                                         prompt_version, latency_ms, prompt_tokens, completion_tokens, created_at)
               VALUES (?1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"#,
            job.job_id,
            d.visual_content,
            d.mood,
            d.action,
            d.setting,
            model,
            model_sha256,
            prompt_version,
            latency,
            prompt_tokens,
            completion_tokens,
            now
        )
        .execute(&mut **tx)
        .await?;
    }
    if !outcome.is_empty() {
        let (pt, ct) = match &f.outcome {
            Outcome::Done {
                prompt_tokens,
                completion_tokens,
                ..
            } => (*prompt_tokens, *completion_tokens),
            _ => (None, None),
        };
        let latency = f.finished_at - f.started_at;
        let attempt_error = match &f.outcome {
            Outcome::Retry { error, .. }
            | Outcome::Fail { error, .. }
            | Outcome::Requeue { error, .. } => Some(error.as_str()),
            _ => None,
        };
        sqlx::query!(
            r#"INSERT INTO attempts (job_id, worker_id, lease_epoch, started_at, finished_at, outcome, error_class, error,
                                     raw_output, latency_ms, prompt_tokens, completion_tokens)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"#,
            job.job_id,
            fence.owner,
            fence.epoch,
            f.started_at,
            f.finished_at,
            outcome,
            class,
            attempt_error,
            raw,
            latency,
            pt,
            ct
        )
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Whether jobs in scope are still queued or running.
pub async fn has_open_work(pool: &SqlitePool, film: Option<i64>) -> Result<bool> {
    Ok(match film {
        None => sqlx::query_scalar!(
            r#"SELECT (EXISTS (SELECT 1 FROM jobs WHERE state = 'queued')
                    OR EXISTS (SELECT 1 FROM jobs WHERE state = 'running')) AS "open!: bool""#
        )
        .fetch_one(pool)
        .await?,
        Some(film) => sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM jobs WHERE film_id = ?1 AND state IN ('queued', 'running')) AS "open!: bool""#,
            film
        )
        .fetch_one(pool)
        .await?,
    })
}

/// Whether a job in scope can be claimed now.
pub async fn has_claimable(pool: &SqlitePool, film: Option<i64>, now: i64) -> Result<bool> {
    Ok(match film {
        None => sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'queued' AND run_after <= ?) AS "open!: bool""#,
            now
        )
        .fetch_one(pool)
        .await?,
        Some(film) => sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM jobs WHERE film_id = ? AND state = 'queued' AND run_after <= ?) AS "open!: bool""#,
            film,
            now
        )
        .fetch_one(pool)
        .await?,
    })
}

/// When the next delayed (backing-off) job in scope becomes claimable.
pub async fn next_run_after(pool: &SqlitePool, film: Option<i64>, now: i64) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar!(
        r#"SELECT min(run_after) AS "t: i64" FROM jobs
           WHERE state = 'queued' AND run_after > ?1 AND (?2 IS NULL OR film_id = ?2)"#,
        now,
        film
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

/// Updates a worker's state and heartbeat; `stopped` marks it gone.
pub async fn set_worker_state(
    pool: &SqlitePool,
    id: &str,
    state: &str,
    now: i64,
    stopped: bool,
) -> Result<()> {
    let stopped_at = stopped.then_some(now);
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

/// Adds to a worker's server start and restart counters.
pub async fn count_server_start(pool: &SqlitePool, id: &str, restart: bool) -> Result<()> {
    let restarts = i64::from(restart);
    let mut tx = begin_immediate(pool).await?;
    sqlx::query!(
        "UPDATE workers SET server_starts = server_starts + 1, server_restarts = server_restarts + ? WHERE id = ?",
        restarts,
        id
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
