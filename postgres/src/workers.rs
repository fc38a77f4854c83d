//! Worker rows on PostgreSQL (what `status` shows of each worker), and the
//! queue's counts by pass. Times are the database's.

use crate::host::HostId;
use crate::{PgQueue, Result};

pub use cinecut_types::{
    FailureReason, FilmStatus, LeaseHolder, PassSummary, ResultRow, SearchHit, WorkerRow,
    WorkerState,
};

/// Adds (or restarts) worker `id`'s row.
pub async fn register(q: &PgQueue, id: &str, host: &HostId, pid: i64, gpu: &str) -> Result<()> {
    sqlx::query!(
        r#"INSERT INTO workers (id, host, pid, gpu) VALUES ($1, $2, $3, $4)
           ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid,
               gpu = excluded.gpu, state = 'starting', stopped_at = NULL,
               heartbeat_at = clock_timestamp()"#,
        id,
        host.0,
        pid,
        gpu
    )
    .execute(q.pool())
    .await?;
    Ok(())
}

/// Sets worker `id`'s state and heartbeat; a final state (stopped,
/// failed) also sets `stopped_at`.
pub async fn set_state(q: &PgQueue, id: &str, state: WorkerState) -> Result<()> {
    let last = matches!(state, WorkerState::Stopped | WorkerState::Failed);
    let state = state.as_sql();
    sqlx::query!(
        r#"UPDATE workers SET state = $2, heartbeat_at = clock_timestamp(),
               stopped_at = CASE WHEN $3 THEN clock_timestamp() ELSE NULL END
           WHERE id = $1"#,
        id,
        state,
        last
    )
    .execute(q.pool())
    .await?;
    Ok(())
}

/// Workers that are running, or stopped within the last `since` (by the
/// database's clock).
pub async fn workers(
    q: &PgQueue,
    since: Option<std::time::Duration>,
) -> Result<(Vec<WorkerRow>, i64)> {
    // NULL: every worker.
    let since_ms = since.map(|s| i64::try_from(s.as_millis()).unwrap_or(i64::MAX / 2));
    let seen = sqlx::query_as!(
        WorkerRow,
        r#"SELECT id, pid, host, gpu, state,
                  (extract(epoch FROM started_at) * 1000)::bigint AS "started_at!",
                  (extract(epoch FROM heartbeat_at) * 1000)::bigint AS "heartbeat_at!",
                  jobs_done, jobs_failed, jobs_retried, jobs_requeued, server_starts, server_restarts
           FROM workers
           WHERE $1::bigint IS NULL
              OR coalesce(stopped_at, heartbeat_at) >= clock_timestamp() - make_interval(secs => $1::bigint / 1000.0)
           ORDER BY started_at"#,
        since_ms
    )
    .fetch_all(q.pool())
    .await?;
    let gone = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM workers
           WHERE coalesce(stopped_at, heartbeat_at) < clock_timestamp() - make_interval(secs => $1::bigint / 1000.0)"#,
        since_ms
    )
    .fetch_one(q.pool())
    .await?;
    Ok((seen, gone))
}

/// Adds one to worker `id`'s llama-server starts, or restarts with
/// `crashed`.
pub async fn count_server_event(q: &PgQueue, id: &str, crashed: bool) -> Result<()> {
    sqlx::query!(
        "UPDATE workers SET server_starts = server_starts + (NOT $2)::int,
                            server_restarts = server_restarts + $2::int
         WHERE id = $1",
        id,
        crashed
    )
    .execute(q.pool())
    .await?;
    Ok(())
}

/// One film's jobs in one pass by state.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FilmCounts {
    pub film_id: i64,
    pub title: String,
    pub pass_id: i64,
    pub pass: String,
    pub queued: i64,
    pub running: i64,
    pub done: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// When its oldest queued job was made, ms since the epoch.
    pub oldest_queued_at: Option<i64>,
}

/// Every film's progress in every pass (of one film, of one pass, if
/// given), in film then pass order, with the commonest reasons of its
/// failures: one pass over the `jobs_film_state` index, then one query per
/// film and pass that has failures.
pub async fn film_status(
    q: &PgQueue,
    film: Option<i64>,
    pass: Option<i64>,
) -> Result<Vec<FilmStatus>> {
    let counts = film_counts(q, film, pass).await?;
    let mut out = Vec::with_capacity(counts.len());
    for c in counts {
        let top_failures = match c.failed {
            0 => Vec::new(),
            _ => top_failures(q, c.film_id, c.pass_id, 3).await?,
        };
        out.push(FilmStatus {
            film_id: c.film_id,
            title: c.title,
            pass: c.pass,
            total: c.queued + c.running + c.done + c.failed + c.cancelled,
            queued: c.queued,
            running: c.running,
            done: c.done,
            failed: c.failed,
            cancelled: c.cancelled,
            oldest_queued_at: c.oldest_queued_at,
            top_failures,
        });
    }
    Ok(out)
}

async fn film_counts(q: &PgQueue, film: Option<i64>, pass: Option<i64>) -> Result<Vec<FilmCounts>> {
    Ok(sqlx::query_as!(
        FilmCounts,
        r#"SELECT f.id AS film_id, f.title, p.id AS pass_id, p.name AS pass,
                  c.queued AS "queued!", c.running AS "running!", c.done AS "done!",
                  c.failed AS "failed!", c.cancelled AS "cancelled!",
                  (SELECT (extract(epoch FROM min(j.created_at)) * 1000)::bigint FROM jobs j
                   WHERE j.film_id = f.id AND j.pass_id = p.id AND j.state = 'queued')
                   AS oldest_queued_at
           FROM (SELECT film_id, pass_id,
                        count(*) FILTER (WHERE state = 'queued') AS queued,
                        count(*) FILTER (WHERE state = 'running') AS running,
                        count(*) FILTER (WHERE state = 'done') AS done,
                        count(*) FILTER (WHERE state = 'failed') AS failed,
                        count(*) FILTER (WHERE state = 'cancelled') AS cancelled
                 FROM jobs
                 WHERE ($1::bigint IS NULL OR film_id = $1) AND ($2::bigint IS NULL OR pass_id = $2)
                 GROUP BY film_id, pass_id) c
           JOIN films f ON f.id = c.film_id
           JOIN passes p ON p.id = c.pass_id
           ORDER BY f.id, p.id"#,
        film,
        pass
    )
    .fetch_all(q.pool())
    .await?)
}

/// The commonest reasons the failed jobs of a film in a pass failed, with
/// how many: at most `n`.
async fn top_failures(q: &PgQueue, film: i64, pass: i64, n: i64) -> Result<Vec<FailureReason>> {
    Ok(sqlx::query!(
        r#"SELECT coalesce(last_error, 'unknown') AS "reason!", count(*) AS "count!"
           FROM jobs WHERE film_id = $1 AND pass_id = $2 AND state = 'failed'
           GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $3"#,
        film,
        pass,
        n
    )
    .fetch_all(q.pool())
    .await?
    .into_iter()
    .map(|r| FailureReason {
        reason: r.reason,
        count: r.count,
    })
    .collect())
}

/// The film titled `title`: its id and how many frames it has.
pub async fn film(q: &PgQueue, title: &str) -> Result<Option<(i64, i64)>> {
    Ok(
        sqlx::query!("SELECT id, frame_count FROM films WHERE title = $1", title)
            .fetch_optional(q.pool())
            .await?
            .map(|r| (r.id, r.frame_count)),
    )
}

/// The id of the pass named `name`, if there is one.
pub async fn pass_id(q: &PgQueue, name: &str) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar!("SELECT id FROM passes WHERE name = $1", name)
            .fetch_optional(q.pool())
            .await?,
    )
}

/// Puts the failed jobs (of one film, of one pass, if given) back in the
/// queue with fresh attempts, waking the workers; how many.
pub async fn retry_failed(q: &PgQueue, film: Option<i64>, pass: Option<i64>) -> Result<u64> {
    let mut tx = q.pool().begin().await?;
    let n = sqlx::query!(
        r#"UPDATE jobs SET state = 'queued', attempts = 0, transient_failures = 0,
                  run_after = '-infinity', last_error = NULL, lease_owner = NULL, lease_gpu = NULL,
                  lease_epoch = NULL, lease_expires_at = NULL, updated_at = clock_timestamp()
           WHERE state = 'failed' AND ($1::bigint IS NULL OR film_id = $1)
             AND ($2::bigint IS NULL OR pass_id = $2)"#,
        film,
        pass
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n > 0 {
        sqlx::query!("SELECT pg_notify($1, '')", crate::JOBS_CHANNEL)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(n)
}

/// Cancels a film's queued jobs (of one pass, if given); running ones
/// finish. How many.
pub async fn cancel_queued(q: &PgQueue, film: i64, pass: Option<i64>) -> Result<u64> {
    Ok(sqlx::query!(
        r#"UPDATE jobs SET state = 'cancelled', updated_at = clock_timestamp()
           WHERE film_id = $1 AND state = 'queued' AND ($2::bigint IS NULL OR pass_id = $2)"#,
        film,
        pass
    )
    .execute(q.pool())
    .await?
    .rows_affected())
}

/// The films `results` goes through, in order (the one given, or all).
pub async fn film_ids(q: &PgQueue, only: Option<i64>) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM films WHERE $1::bigint IS NULL OR id = $1 ORDER BY id",
        only
    )
    .fetch_all(q.pool())
    .await?)
}

/// A page of film `film`'s described frames (of one pass, if given) in
/// frame then pass order, after `(frame_index, pass id)`: a range seek on
/// `UNIQUE(film_id, frame_index)`, each page as cheap as the first.
pub async fn done_page(
    q: &PgQueue,
    film: i64,
    pass: Option<i64>,
    after: (i64, i64),
    limit: i64,
) -> Result<Vec<ResultRow>> {
    Ok(sqlx::query_as!(
        ResultRow,
        r#"SELECT fr.film_id AS "film_id!", f.title AS "film!", fr.frame_index AS "frame_index!",
                  fr.pts_ms, fr.path AS "path!", d.visual_content, d.mood, d.action, d.setting,
                  d.model AS "model?", NULL::text AS error, p.name AS "pass!", d.fields::text AS fields,
                  d.pass_id AS "pass_id!"
           FROM frames fr
           JOIN films f ON f.id = fr.film_id
           JOIN descriptions d ON d.frame_id = fr.id
           JOIN passes p ON p.id = d.pass_id
           WHERE fr.film_id = $1 AND (fr.frame_index, d.pass_id) > ($2, $3)
             AND ($4::bigint IS NULL OR d.pass_id = $4)
           ORDER BY fr.frame_index, d.pass_id
           LIMIT $5"#,
        film,
        after.0,
        after.1,
        pass,
        limit
    )
    .fetch_all(q.pool())
    .await?)
}

/// A page of failed frames with their last errors, as [`done_page`].
pub async fn failed_page(
    q: &PgQueue,
    film: i64,
    pass: Option<i64>,
    after: (i64, i64),
    limit: i64,
) -> Result<Vec<ResultRow>> {
    Ok(sqlx::query_as!(
        ResultRow,
        r#"SELECT fr.film_id, f.title AS film, fr.frame_index, fr.pts_ms, fr.path,
                  NULL::text AS visual_content, NULL::text AS mood, NULL::text AS action,
                  NULL::text AS setting, NULL::text AS model, j.last_error AS error,
                  p.name AS pass, NULL::text AS fields, j.pass_id
           FROM frames fr
           JOIN films f ON f.id = fr.film_id
           JOIN jobs j ON j.frame_id = fr.id AND j.state = 'failed'
           JOIN passes p ON p.id = j.pass_id
           WHERE fr.film_id = $1 AND (fr.frame_index, j.pass_id) > ($2, $3)
             AND ($4::bigint IS NULL OR j.pass_id = $4)
           ORDER BY fr.frame_index, j.pass_id
           LIMIT $5"#,
        film,
        after.0,
        after.1,
        pass,
        limit
    )
    .fetch_all(q.pool())
    .await?)
}

/// Described frames whose answer has every word of `words` (PostgreSQL's
/// full-text search, English stemming), best match first; `rank` is
/// negated, so that lower is better as with SQLite's bm25.
pub async fn search(
    q: &PgQueue,
    words: &str,
    film: Option<i64>,
    pass: Option<i64>,
    limit: i64,
) -> Result<Vec<SearchHit>> {
    Ok(sqlx::query_as!(
        SearchHit,
        r#"SELECT f.title AS film, p.name AS pass, fr.pts_ms, fr.path, d.visual_content, d.mood,
                  d.action, d.setting, d.search_text, d.fields::text AS "fields!",
                  (-ts_rank(d.search, plainto_tsquery('english', $1)))::float8 AS "rank!"
           FROM descriptions d
           JOIN frames fr ON fr.id = d.frame_id
           JOIN films f ON f.id = fr.film_id
           JOIN passes p ON p.id = d.pass_id
           WHERE d.search @@ plainto_tsquery('english', $1)
             AND ($2::bigint IS NULL OR fr.film_id = $2) AND ($3::bigint IS NULL OR d.pass_id = $3)
           ORDER BY 11, f.title, fr.frame_index
           LIMIT $4"#,
        words,
        film,
        pass,
        limit
    )
    .fetch_all(q.pool())
    .await?)
}

/// Gives every frame (of the films `films`, or of all when empty) a job in
/// pass `pass` unless it has one, waking the workers; how many were new.
pub async fn enqueue_frames(
    q: &PgQueue,
    pass: i64,
    films: &[i64],
    max_attempts: i64,
) -> Result<u64> {
    let mut tx = q.pool().begin().await?;
    let n = sqlx::query!(
        r#"INSERT INTO jobs (frame_id, pass_id, film_id, priority, max_attempts)
           SELECT fr.id, $1, fr.film_id, f.priority, $3
           FROM frames fr JOIN films f ON f.id = fr.film_id
           WHERE cardinality($2::bigint[]) = 0 OR fr.film_id = ANY($2)
           ON CONFLICT (frame_id, pass_id) DO NOTHING"#,
        pass,
        films,
        max_attempts
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n > 0 {
        sqlx::query!("SELECT pg_notify($1, '')", crate::JOBS_CHANNEL)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(n)
}

/// Every pass with its counts and its descriptions' means (the model's
/// own answers: copies of near-duplicates not counted), oldest first.
pub async fn passes(q: &PgQueue) -> Result<Vec<PassSummary>> {
    Ok(sqlx::query_as!(
        PassSummary,
        r#"SELECT p.name, p.model,
                  -- Learnt from its first description (see 0011's trigger,
                  -- which gives way when the row is busy).
                  coalesce(p.model_sha256,
                           (SELECT x.model_sha256 FROM descriptions x
                            WHERE x.pass_id = p.id AND x.model_sha256 IS NOT NULL
                              AND x.duplicate_of IS NULL
                            ORDER BY x.job_id LIMIT 1)) AS model_sha256,
                  p.profile_name AS profile,
                  (SELECT count(*) FROM jobs j WHERE j.pass_id = p.id) AS "jobs!",
                  (SELECT count(*) FROM jobs j WHERE j.pass_id = p.id AND j.state = 'done') AS "done!",
                  (SELECT count(*) FROM jobs j WHERE j.pass_id = p.id AND j.state = 'queued') AS "queued!",
                  (SELECT count(*) FROM jobs j WHERE j.pass_id = p.id AND j.state = 'failed') AS "failed!",
                  d.described AS "described!",
                  d.latency AS mean_latency_ms,
                  d.pt AS mean_prompt_tokens,
                  d.ct AS mean_completion_tokens,
                  (extract(epoch FROM p.created_at) * 1000)::bigint AS "created_at!"
           FROM passes p
           JOIN LATERAL (SELECT count(x.job_id) AS described,
                                avg(x.latency_ms)::float8 AS latency,
                                avg(x.prompt_tokens)::float8 AS pt,
                                avg(x.completion_tokens)::float8 AS ct
                         FROM descriptions x
                         WHERE x.pass_id = p.id AND x.duplicate_of IS NULL) d ON true
           ORDER BY p.id"#
    )
    .fetch_all(q.pool())
    .await?)
}

/// Every GPU lease that has a holder, with the llama-server it runs.
pub async fn held_leases(q: &PgQueue) -> Result<Vec<LeaseHolder>> {
    Ok(sqlx::query_as!(
        LeaseHolder,
        r#"SELECT gpu, holder AS "holder!", holder_pid, host, purpose, epoch,
                  (extract(epoch FROM expires_at) * 1000)::bigint AS expires_at,
                  server_pid
           FROM gpu_leases WHERE holder IS NOT NULL ORDER BY gpu"#
    )
    .fetch_all(q.pool())
    .await?)
}

/// Whether the database has any frame.
pub async fn has_frames(q: &PgQueue) -> Result<bool> {
    Ok(
        sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM frames) AS "any!""#)
            .fetch_one(q.pool())
            .await?,
    )
}
