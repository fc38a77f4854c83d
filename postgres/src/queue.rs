//! Films, frames and jobs on PostgreSQL: enqueue in bulk (arrays through
//! `UNNEST`, one statement per chunk), claims with `FOR UPDATE SKIP LOCKED`
//! under a current GPU lease, fenced results, recovery of jobs whose lease
//! expired by the database's clock, and `LISTEN/NOTIFY` wake-ups.

use std::time::Duration;

use sqlx::postgres::PgListener;

use crate::lease::close_attempts;
use crate::{JOBS_CHANNEL, PgQueue, Result};

/// A frame to enqueue.
#[derive(Debug, Clone)]
pub struct NewFrame {
    pub path: String,
    /// `None`: the next free index of the film, in the order given (stills
    /// from folders and globs).
    pub frame_index: Option<i64>,
    pub pts_ms: Option<i64>,
    /// Its size in pixels, where the producer knows it (a film's frames).
    pub width: Option<i64>,
    pub height: Option<i64>,
    /// The shot_index of its shot ([`insert_shots`]; scene mode).
    pub shot: Option<i64>,
    /// The 64-bit difference hash of its 9×8 grey copy.
    pub dhash: Option<i64>,
    /// The path of the earlier frame of the film it nearly repeats: its
    /// job is never claimed, and it gets that frame's description.
    pub duplicate_of: Option<String>,
    /// A still a worker hashes when it claims it: how many bits its hash
    /// may differ by from its original's (0014_worker_dedupe.sql).
    pub dedupe_distance: Option<i64>,
    /// The frame file's bytes, stored with it (`enqueue --store-frames`):
    /// workers then need no file system in common with the producer.
    pub bytes: Option<Vec<u8>>,
}

pub use cinecut_types::{
    Answer, Claimed, ClaimedJob, Fence, Finished, NewShot, Outcome, Recorded, Scope, StoredFrame,
};

/// How long a gpu-lock command's wait counts after its last heartbeat.
pub const WAITER_TTL: Duration = Duration::from_secs(30);

/// Whether pass `pass` has a queued job due now by the database's clock.
pub async fn has_claimable(q: &PgQueue, scope: Scope) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM jobs WHERE pass_id = $1 AND state = 'queued'
                          AND ($2::bigint IS NULL OR film_id = $2)
                          AND run_after <= clock_timestamp()
                          AND (SELECT d.duplicate_of FROM frames d
                               WHERE d.id = jobs.frame_id) IS NULL) AS "any!""#,
        scope.pass,
        scope.film
    )
    .fetch_one(q.pool())
    .await?)
}

/// Whether pass `pass` has jobs still queued or running.
pub async fn has_open_work(q: &PgQueue, scope: Scope) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM jobs WHERE pass_id = $1
                          AND ($2::bigint IS NULL OR film_id = $2)
                          AND state IN ('queued', 'running')) AS "any!""#,
        scope.pass,
        scope.film
    )
    .fetch_one(q.pool())
    .await?)
}

/// How long until pass `pass`'s next backing-off job is due, by the
/// database's clock; `None` when none waits.
pub async fn next_due(q: &PgQueue, scope: Scope) -> Result<Option<Duration>> {
    let ms = sqlx::query_scalar!(
        r#"SELECT (extract(epoch FROM min(run_after) - clock_timestamp()) * 1000)::bigint
           FROM jobs WHERE pass_id = $1 AND ($2::bigint IS NULL OR film_id = $2)
             AND state = 'queued' AND run_after > clock_timestamp()"#,
        scope.pass,
        scope.film
    )
    .fetch_one(q.pool())
    .await?;
    Ok(ms.map(|ms| Duration::from_millis(ms.max(0) as u64)))
}

/// gpu-lock commands waiting for GPU `gpu` (seen within [`WAITER_TTL`]).
pub async fn waiters(q: &PgQueue, gpu: &str) -> Result<i64> {
    let since = i64::try_from(WAITER_TTL.as_millis()).unwrap_or(i64::MAX);
    Ok(sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM gpu_waiters WHERE gpu = $1
             AND heartbeat_at >= clock_timestamp() - make_interval(secs => $2::bigint / 1000.0)"#,
        gpu,
        since
    )
    .fetch_one(q.pool())
    .await?)
}

/// Counts of a pass's jobs by state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub queued: i64,
    pub running: i64,
    pub done: i64,
    pub failed: i64,
}

/// The id of the film titled `title`, made if missing.
pub async fn ensure_film(q: &PgQueue, title: &str) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"INSERT INTO films (title) VALUES ($1)
           ON CONFLICT (title) DO UPDATE SET title = excluded.title
           RETURNING id"#,
        title
    )
    .fetch_one(q.pool())
    .await?)
}

/// The id of the film titled `title`, made with its source (the stills'
/// folder or manifest) and priority if missing.
pub async fn ensure_film_from(
    q: &PgQueue,
    title: &str,
    source_path: Option<&str>,
    priority: i64,
) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"INSERT INTO films (title, source_path, priority) VALUES ($1, $2, $3)
           ON CONFLICT (title) DO UPDATE SET title = excluded.title
           RETURNING id"#,
        title,
        source_path,
        priority
    )
    .fetch_one(q.pool())
    .await?)
}

/// The id of the pass named `name`, made if missing.
pub async fn ensure_pass(q: &PgQueue, name: &str) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"INSERT INTO passes (name) VALUES ($1)
           ON CONFLICT (name) DO UPDATE SET name = excluded.name
           RETURNING id"#,
        name
    )
    .fetch_one(q.pool())
    .await?)
}

/// The ids of the passes an enqueue creates jobs in: the passes `names`,
/// made if missing, or with no names every pass of the database (a pass
/// `default` when there is none), as on SQLite.
pub async fn passes_for_enqueue(q: &PgQueue, names: &[String]) -> Result<Vec<i64>> {
    if !names.is_empty() {
        let mut ids = Vec::with_capacity(names.len());
        for name in names {
            ids.push(ensure_pass(q, name).await?);
        }
        return Ok(ids);
    }
    let ids = sqlx::query_scalar!("SELECT id FROM passes ORDER BY id")
        .fetch_all(q.pool())
        .await?;
    if ids.is_empty() {
        return Ok(vec![ensure_pass(q, "default").await?]);
    }
    Ok(ids)
}

/// Deletes film `film` with its frames and jobs (and, through their keys,
/// the jobs' attempts and descriptions): the bulk tables carry no foreign
/// keys to cascade (see migrations/postgres/0001_queue.sql). Returns
/// whether the film existed.
pub async fn delete_film(q: &PgQueue, film: i64) -> Result<bool> {
    let mut tx = q.pool().begin().await?;
    sqlx::query!("DELETE FROM jobs WHERE film_id = $1", film)
        .execute(&mut *tx)
        .await?;
    sqlx::query!("DELETE FROM frames WHERE film_id = $1", film)
        .execute(&mut *tx)
        .await?;
    sqlx::query!("DELETE FROM shots WHERE film_id = $1", film)
        .execute(&mut *tx)
        .await?;
    sqlx::query!("DELETE FROM subtitles WHERE film_id = $1", film)
        .execute(&mut *tx)
        .await?;
    let existed = sqlx::query!("DELETE FROM films WHERE id = $1", film)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    tx.commit().await?;
    Ok(existed)
}

/// Stores film `film`'s shots (before its frames, which name them by
/// shot_index); source frame numbers at `fps`, when the film has a rate.
pub async fn insert_shots(
    q: &PgQueue,
    film: i64,
    fps: Option<f64>,
    shots: &[NewShot],
) -> Result<()> {
    let index: Vec<i64> = shots.iter().map(|s| s.shot_index).collect();
    let start: Vec<i64> = shots.iter().map(|s| s.start_ms).collect();
    let end: Vec<i64> = shots.iter().map(|s| s.end_ms).collect();
    let score: Vec<f64> = shots.iter().map(|s| s.score).collect();
    sqlx::query!(
        r#"INSERT INTO shots (film_id, shot_index, start_ms, end_ms, first_frame, last_frame, score)
           SELECT $1, i, s, e, round(s * $2::float8 / 1000.0)::bigint,
                  greatest(round(e * $2::float8 / 1000.0)::bigint - 1, round(s * $2::float8 / 1000.0)::bigint), c
           FROM UNNEST($3::bigint[], $4::bigint[], $5::bigint[], $6::float8[]) AS u(i, s, e, c)"#,
        film,
        fps,
        &index,
        &start,
        &end,
        &score
    )
    .execute(q.pool())
    .await?;
    Ok(())
}

/// What an enqueue added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enqueued {
    /// Frames the film did not have.
    pub frames: u64,
    /// Jobs the pass did not have (for new frames, and for frames the film
    /// had without a job in this pass).
    pub jobs: u64,
    /// Frames marked as near-duplicates of an earlier one.
    pub near_duplicates: u64,
    /// Frames not added because their explicit index is held by another
    /// path of the film: (path, index).
    pub index_conflicts: Vec<(String, i64)>,
}

/// Adds `frames` to film `film` (frames the film has, by path or index,
/// are left as they are) and gives each of them, new or not, a job in pass
/// `pass` unless it has one. Workers waiting for work are woken.
pub async fn enqueue(
    q: &PgQueue,
    film: i64,
    pass: i64,
    frames: &[NewFrame],
    max_attempts: i64,
) -> Result<Enqueued> {
    let paths: Vec<&str> = frames.iter().map(|f| f.path.as_str()).collect();
    let indexes: Vec<Option<i64>> = frames.iter().map(|f| f.frame_index).collect();
    let pts: Vec<Option<i64>> = frames.iter().map(|f| f.pts_ms).collect();
    let bytes: Vec<Option<&[u8]>> = frames.iter().map(|f| f.bytes.as_deref()).collect();
    let shots: Vec<Option<i64>> = frames.iter().map(|f| f.shot).collect();
    let dhashes: Vec<Option<i64>> = frames.iter().map(|f| f.dhash).collect();
    let widths: Vec<Option<i64>> = frames.iter().map(|f| f.width).collect();
    let heights: Vec<Option<i64>> = frames.iter().map(|f| f.height).collect();
    let distances: Vec<Option<i64>> = frames.iter().map(|f| f.dedupe_distance).collect();
    let mut tx = q.pool().begin().await?;
    let added = sqlx::query!(
        r#"WITH new_frames AS (
               INSERT INTO frames (film_id, frame_index, pts_ms, path, jpeg, shot_id, dhash,
                                   width, height, dedupe_distance)
               SELECT $1, coalesce(i, (SELECT coalesce(max(frame_index) + 1, 0) FROM frames
                                       WHERE film_id = $1) + row_number() OVER (ORDER BY n) - 1),
                      p, f, b,
                      (SELECT s.id FROM shots s WHERE s.film_id = $1 AND s.shot_index = u.shot), h,
                      w, ht, d
               FROM UNNEST($2::bigint[], $3::bigint[], $4::text[], $7::bytea[], $8::bigint[],
                           $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[])
                    WITH ORDINALITY AS u(i, p, f, b, shot, h, w, ht, d, n)
               WHERE NOT EXISTS (SELECT 1 FROM frames x WHERE x.film_id = $1 AND x.path = u.f)
               ON CONFLICT DO NOTHING
               RETURNING id),
           new_jobs AS (
               INSERT INTO jobs (frame_id, pass_id, film_id, priority, max_attempts)
               SELECT n.id, $5, $1, (SELECT priority FROM films WHERE id = $1), $6
               FROM new_frames n
               RETURNING id)
           SELECT (SELECT count(*) FROM new_frames) AS "frames!",
                  (SELECT count(*) FROM new_jobs) AS "jobs!""#,
        film,
        &indexes as &[Option<i64>],
        &pts as &[Option<i64>],
        &paths as &[&str],
        pass,
        max_attempts,
        &bytes as &[Option<&[u8]>],
        &shots as &[Option<i64>],
        &dhashes as &[Option<i64>],
        &widths as &[Option<i64>],
        &heights as &[Option<i64>],
        &distances as &[Option<i64>]
    )
    .fetch_one(&mut *tx)
    .await?;
    let mut jobs = added.jobs;
    let mut index_conflicts = Vec::new();
    // Frames the film had already (a re-enqueue, or another pass over the
    // same frames): a job in this pass for each that has none. Looked up
    // only then, so a fresh enqueue pays nothing for it.
    if added.frames < frames.len() as i64 {
        // A frame not added whose path the film does not have: its
        // explicit index is another path's.
        index_conflicts = sqlx::query!(
            r#"SELECT u.p AS "path!", u.i AS "index!" FROM UNNEST($2::bigint[], $3::text[]) AS u(i, p)
               WHERE u.i IS NOT NULL
                 AND NOT EXISTS (SELECT 1 FROM frames WHERE film_id = $1 AND path = u.p)"#,
            film,
            &indexes as &[Option<i64>],
            &paths as &[&str]
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| (r.path, r.index))
        .collect();
        jobs += sqlx::query!(
            r#"INSERT INTO jobs (frame_id, pass_id, film_id, priority, max_attempts)
               SELECT fr.id, $2, $1, f.priority, $4
               FROM frames fr JOIN films f ON f.id = fr.film_id
               WHERE fr.film_id = $1 AND fr.path = ANY($3::text[])
               ON CONFLICT (frame_id, pass_id) DO NOTHING"#,
            film,
            pass,
            &paths as &[&str],
            max_attempts
        )
        .execute(&mut *tx)
        .await?
        .rows_affected() as i64;
        // Enqueued again with its bytes: a frame stored without them gets them.
        if bytes.iter().any(Option::is_some) {
            sqlx::query!(
                r#"UPDATE frames SET jpeg = u.b
                   FROM UNNEST($2::text[], $3::bytea[]) AS u(p, b)
                   WHERE frames.film_id = $1 AND frames.path = u.p
                     AND frames.jpeg IS NULL AND u.b IS NOT NULL"#,
                film,
                &paths as &[&str],
                &bytes as &[Option<&[u8]>]
            )
            .execute(&mut *tx)
            .await?;
        }
    }
    let near_duplicates = match frames.iter().any(|f| f.duplicate_of.is_some()) {
        true => mark_duplicates(&mut tx, film, frames).await?,
        false => 0,
    };
    sqlx::query!(
        "UPDATE films SET frame_count = frame_count + $2 WHERE id = $1",
        film,
        added.frames
    )
    .execute(&mut *tx)
    .await?;
    if jobs > 0 {
        sqlx::query!("SELECT pg_notify($1, $2::bigint::text)", JOBS_CHANNEL, pass)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Enqueued {
        frames: added.frames as u64,
        jobs: jobs as u64,
        near_duplicates,
        index_conflicts,
    })
}

/// Points `frames`' near-duplicates at their originals (by path; an
/// original is earlier in the film, so already there), then gives those
/// whose original is described already its description. Only a frame
/// whose every job is still queued is marked, and only against an original
/// that is queued, running or done. The originals' jobs are locked first
/// (`FOR SHARE`): a worker recording or failing an original meanwhile waits
/// for this enqueue, and its trigger then sees the marks (else a duplicate
/// marked after its original's description was copied would wait for good).
/// Returns how many frames it marked.
async fn mark_duplicates(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    film: i64,
    frames: &[NewFrame],
) -> Result<u64> {
    let (paths, originals): (Vec<&str>, Vec<&str>) = frames
        .iter()
        .filter_map(|f| Some((f.path.as_str(), f.duplicate_of.as_deref()?)))
        .unzip();
    sqlx::query!(
        "SELECT j.id FROM jobs j JOIN frames o ON o.id = j.frame_id
         WHERE o.film_id = $1 AND o.path = ANY($2::text[])
         ORDER BY j.id
         FOR SHARE OF j",
        film,
        &originals as &[&str]
    )
    .fetch_all(&mut **tx)
    .await?;
    let marked: Vec<i64> = sqlx::query_scalar!(
        r#"UPDATE frames SET duplicate_of = o.id
           FROM UNNEST($2::text[], $3::text[]) AS u(path, original)
           JOIN frames o ON o.film_id = $1 AND o.path = u.original
           WHERE frames.film_id = $1 AND frames.path = u.path AND frames.duplicate_of IS NULL
             AND EXISTS (SELECT 1 FROM jobs oj
                         WHERE oj.frame_id = o.id AND oj.state IN ('queued', 'running', 'done'))
             AND NOT EXISTS (SELECT 1 FROM jobs fj
                             WHERE fj.frame_id = frames.id AND fj.state <> 'queued')
           RETURNING frames.id"#,
        film,
        &paths as &[&str],
        &originals as &[&str]
    )
    .fetch_all(&mut **tx)
    .await?;
    crate::dedupe::copy_to_duplicates(tx, &marked).await?;
    Ok(marked.len() as u64)
}

/// Claims up to `n` queued jobs of pass `pass` due by the database's clock,
/// under the pass's binding as it is now, while `fence`'s lease is current
/// (see [`record_and_claim`]); for tools and tests that claim without a
/// worker's round.
pub async fn claim(
    q: &PgQueue,
    fence: &Fence,
    pass: i64,
    n: i64,
    ttl: Duration,
) -> Result<Vec<ClaimedJob>> {
    let binding = sqlx::query_scalar!("SELECT binding FROM passes WHERE id = $1", pass)
        .fetch_optional(q.pool())
        .await?
        .unwrap_or_default();
    let scope = Scope {
        pass,
        binding,
        film: None,
    };
    Ok(record_and_claim(q, fence, &[], scope, n, ttl).await?.1.jobs)
}

/// Records one finished try, only if its job is still `fence`'s (running
/// under its epoch, the lease current): `false` when the job was taken
/// away (its lease expired and it went back to the queue).
pub async fn finish(q: &PgQueue, fence: &Fence, finished: Finished) -> Result<bool> {
    let scope = Scope {
        pass: 0,
        binding: 0,
        film: None,
    };
    let (recorded, _) = record_and_claim(q, fence, &[finished], scope, 0, Duration::ZERO).await?;
    Ok(recorded.fenced == 0)
}

/// Records `finished` and claims up to `n` more jobs of pass `pass`, in one
/// transaction (the worker's group commit), all fenced by `fence`: when its
/// lease is no longer current nothing is recorded or claimed, and a job
/// taken away meanwhile is not recorded. Nothing is claimed while a
/// gpu-lock command waits for the GPU ([`Round::gpu_wanted`]), nor, with a
/// `binding`, once the pass has another ([`Round::rebound`]; the pass row
/// is read `FOR SHARE`, so a rebinding waits for this claim to end).
pub async fn record_and_claim(
    q: &PgQueue,
    fence: &Fence,
    finished: &[Finished],
    scope: Scope,
    n: i64,
    ttl: Duration,
) -> Result<(Recorded, Claimed)> {
    let (pass, binding) = (scope.pass, scope.binding);
    let mut tx = q.pool().begin().await?;
    // One statement for what gates the round: the lease still ours (its
    // row read FOR SHARE: a takeover waits for this round), a gpu-lock
    // command waiting, and the pass's binding (read FOR SHARE too: a
    // rebinding waits for this claim), each only as far as it is needed.
    let waiters_since_ms = i64::try_from(WAITER_TTL.as_millis()).unwrap_or(i64::MAX);
    let gate = sqlx::query!(
        r#"SELECT EXISTS (SELECT 1 FROM gpu_leases
                          WHERE gpu = $1 AND holder = $2 AND epoch = $3
                            AND expires_at > clock_timestamp()
                          FOR SHARE) AS "current!",
                  $4::bigint > 0 AND EXISTS (SELECT 1 FROM gpu_waiters WHERE gpu = $1
                      AND heartbeat_at >= clock_timestamp() - make_interval(secs => $5::bigint / 1000.0))
                      AS "wanted!",
                  (SELECT binding FROM passes WHERE id = $6 AND $4::bigint > 0
                   FOR SHARE) AS binding"#,
        fence.gpu,
        fence.owner,
        fence.epoch,
        n,
        waiters_since_ms,
        pass
    )
    .fetch_one(&mut *tx)
    .await?;
    let every = finished.len() as u64;
    if !gate.current {
        let fenced = Recorded {
            fenced: every,
            ..Recorded::default()
        };
        return Ok((fenced, Claimed::default()));
    }
    let done: Vec<&Finished> = finished
        .iter()
        .filter(|f| matches!(f.outcome, Outcome::Done { .. }))
        .collect();
    let mut recorded = Recorded::default();
    let mut released = 0;
    if !done.is_empty() {
        recorded.done = record_in(&mut tx, fence, &done).await?;
    }
    if done.len() < finished.len() {
        released = settle_in(&mut tx, fence, finished, &mut recorded).await?;
    }
    let r = &recorded;
    let settled = r.done + r.retried + r.failed + r.requeued + released;
    recorded.fenced = every.saturating_sub(settled);
    let r = &recorded;
    if r.failed + r.retried + r.requeued > 0 {
        // The worker's other counters (its id is the fence's owner; the
        // done ones are counted with the answers), with its results.
        let n = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
        sqlx::query!(
            "UPDATE workers SET jobs_failed = jobs_failed + $2, jobs_retried = jobs_retried + $3,
                                jobs_requeued = jobs_requeued + $4, heartbeat_at = clock_timestamp()
             WHERE id = $1",
            fence.owner,
            n(r.failed),
            n(r.retried),
            n(r.requeued)
        )
        .execute(&mut *tx)
        .await?;
    }
    let mut claimed = Claimed::default();
    if n > 0 {
        if gate.wanted {
            claimed.gpu_wanted = true;
        } else if gate.binding != Some(binding) {
            claimed.rebound = true;
        } else {
            claimed.jobs = claim_in(&mut tx, fence, scope, n, ttl).await?;
        }
    }
    tx.commit().await?;
    Ok((recorded, claimed))
}

/// Records the tries that did not end in an answer (see [`Outcome`]), in
/// one statement for the jobs and one for their attempts; returns how many
/// were released (never tried).
pub(crate) async fn settle_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    fence: &Fence,
    finished: &[Finished],
    recorded: &mut Recorded,
) -> Result<u64> {
    let mut jobs = Vec::new();
    let mut kinds = Vec::new();
    let mut classes: Vec<Option<String>> = Vec::new();
    let mut errors: Vec<Option<String>> = Vec::new();
    let mut raws: Vec<Option<String>> = Vec::new();
    let mut backoffs = Vec::new();
    let mut counts = Vec::new();
    let mut poison = Vec::new();
    for f in finished {
        let (kind, class, error, raw, backoff, counted, poison_after) = match &f.outcome {
            Outcome::Done { .. } => continue,
            Outcome::Retry {
                class,
                error,
                raw,
                backoff_ms,
            } => (
                "retry",
                Some(*class),
                Some(error),
                raw.clone(),
                (*backoff_ms).max(0),
                false,
                0,
            ),
            Outcome::Fail { class, error } => {
                ("fail", Some(*class), Some(error), None, 0, false, 0)
            }
            Outcome::Requeue {
                class,
                error,
                counts,
                poison_after,
                backoff_ms,
            } => (
                "requeue",
                Some(*class),
                Some(error),
                None,
                (*backoff_ms).max(0),
                *counts,
                *poison_after,
            ),
            Outcome::Release => ("release", None, None, None, 0, false, 0),
        };
        jobs.push(f.job.job_id);
        kinds.push(kind);
        classes.push(class.map(str::to_string));
        errors.push(error.cloned());
        raws.push(raw);
        backoffs.push(backoff);
        counts.push(counted);
        poison.push(poison_after);
    }
    // last_error repeats the end conditions of `state`: one SET cannot read
    // another, and a CTE computing them once would read the row before the
    // UPDATE locks it.
    let settled = sqlx::query!(
        r#"WITH o AS (
               SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bool[],
                                    $6::bigint[])
                        AS o(job_id, kind, error, backoff_ms, counts, poison_after))
           UPDATE jobs j SET
               attempts = j.attempts - CASE WHEN o.kind IN ('requeue', 'release') THEN 1 ELSE 0 END,
               transient_failures = j.transient_failures + CASE WHEN o.counts THEN 1 ELSE 0 END,
               state = CASE
                   WHEN o.kind = 'fail' THEN 'failed'
                   WHEN o.kind = 'retry' AND j.attempts >= j.max_attempts THEN 'failed'
                   WHEN o.kind = 'requeue' AND o.counts
                        AND j.transient_failures + 1 >= o.poison_after THEN 'failed'
                   ELSE 'queued' END,
               run_after = clock_timestamp() + make_interval(secs => o.backoff_ms / 1000.0),
               -- Worded as SQLite words them: why the job ended.
               last_error = CASE
                   WHEN o.kind = 'retry' AND j.attempts >= j.max_attempts
                       THEN 'gave up after ' || j.attempts || ' attempt(s): ' || o.error
                   WHEN o.kind = 'requeue' AND o.counts
                        AND j.transient_failures + 1 >= o.poison_after
                       THEN 'poison: failed ' || (j.transient_failures + 1)
                            || ' time(s) in a row this way, last: ' || o.error
                   ELSE coalesce(o.error, j.last_error) END,
               lease_owner = NULL, lease_gpu = NULL, lease_epoch = NULL, lease_expires_at = NULL,
               updated_at = clock_timestamp()
           FROM o
           WHERE j.id = o.job_id AND j.state = 'running' AND j.lease_owner = $7
             AND j.lease_gpu = $8 AND j.lease_epoch = $9
           RETURNING j.id AS "job!", o.kind AS "kind!", j.state AS "state!""#,
        &jobs,
        &kinds as &[&str],
        &errors as &[Option<String>],
        &backoffs,
        &counts,
        &poison,
        fence.owner,
        fence.gpu,
        fence.epoch
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut released = 0;
    for r in &settled {
        match (r.kind.as_str(), r.state.as_str()) {
            ("release", _) => released += 1,
            (_, "failed") => recorded.failed += 1,
            ("retry", _) => recorded.retried += 1,
            _ => recorded.requeued += 1,
        }
    }
    let ids: Vec<i64> = settled.iter().map(|r| r.job).collect();
    sqlx::query!(
        r#"WITH o AS (
               SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[])
                        AS o(job_id, kind, class, error, raw))
           , released AS (
               DELETE FROM attempts a USING o
               WHERE a.job_id = o.job_id AND o.kind = 'release' AND a.finished_at IS NULL
                 AND a.job_id = ANY($6))
           UPDATE attempts a SET finished_at = clock_timestamp(),
                  -- As SQLite spells them: a try that ended its job (retries
                  -- run out, poison) is `failed`.
                  outcome = CASE WHEN j.state = 'failed' THEN 'failed'
                                 WHEN o.kind = 'requeue' THEN 'requeued' ELSE o.kind END,
                  error_class = o.class, error = o.error, raw_output = o.raw
           FROM o JOIN jobs j ON j.id = o.job_id
           WHERE a.job_id = o.job_id AND o.kind <> 'release' AND a.finished_at IS NULL
             AND a.job_id = ANY($6)"#,
        &jobs,
        &kinds as &[&str],
        &classes as &[Option<String>],
        &errors as &[Option<String>],
        &raws as &[Option<String>],
        &ids
    )
    .execute(&mut **tx)
    .await?;
    Ok(released)
}

async fn record_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    fence: &Fence,
    done: &[&Finished],
) -> Result<u64> {
    let mut jobs = Vec::with_capacity(done.len());
    let mut fields = Vec::with_capacity(done.len());
    let mut search_text: Vec<Option<&str>> = Vec::with_capacity(done.len());
    let mut models = Vec::with_capacity(done.len());
    let mut sha: Vec<Option<&str>> = Vec::with_capacity(done.len());
    let mut versions = Vec::with_capacity(done.len());
    let mut latency = Vec::with_capacity(done.len());
    let mut prompt: Vec<Option<i64>> = Vec::with_capacity(done.len());
    let mut completion: Vec<Option<i64>> = Vec::with_capacity(done.len());
    for f in done {
        let Outcome::Done {
            answer,
            model,
            model_sha256,
            prompt_version,
            prompt_tokens,
            completion_tokens,
        } = &f.outcome
        else {
            continue;
        };
        jobs.push(f.job.job_id);
        // As text, kept as written (the column is `json`): the same bytes
        // SQLite keeps.
        fields.push(serde_json::to_string(answer.fields()).expect("an answer is JSON"));
        search_text.push(answer.search_text());
        models.push(model.as_str());
        sha.push(model_sha256.as_deref());
        versions.push(*prompt_version);
        latency.push((f.finished_at - f.started_at).max(0));
        prompt.push(*prompt_tokens);
        completion.push(*completion_tokens);
    }
    Ok(sqlx::query_scalar!(
        r#"WITH answer AS (
               SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                                    $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[])
                        AS a(job_id, text, search_text, model, sha, version, latency, pt, ct)
                        CROSS JOIN LATERAL (SELECT text::json AS fields) j),
           finished AS (
               UPDATE jobs j SET state = 'done', lease_owner = NULL, lease_gpu = NULL,
                      lease_epoch = NULL, lease_expires_at = NULL, updated_at = clock_timestamp()
               FROM answer a
               WHERE j.id = a.job_id AND j.state = 'running' AND j.lease_owner = $10
                 AND j.lease_gpu = $11 AND j.lease_epoch = $12
               RETURNING j.id, j.frame_id, j.pass_id),
           stored AS (
               INSERT INTO descriptions (job_id, frame_id, pass_id, visual_content, mood, action,
                                         setting, fields, search_text, model, model_sha256,
                                         prompt_version, latency_ms, prompt_tokens,
                                         completion_tokens)
               SELECT f.id, f.frame_id, f.pass_id, seed(a.fields, 'visual_content'),
                      seed(a.fields, 'mood'), seed(a.fields, 'action'), seed(a.fields, 'setting'),
                      a.fields, a.search_text, a.model,
                      a.sha, a.version, a.latency, a.pt, a.ct
               FROM finished f JOIN answer a ON a.job_id = f.id),
           tried AS (
               UPDATE attempts SET finished_at = clock_timestamp(), outcome = 'done'
               WHERE job_id IN (SELECT id FROM finished) AND finished_at IS NULL),
           counted AS (
               UPDATE workers SET jobs_done = jobs_done + (SELECT count(*) FROM finished),
                                  heartbeat_at = clock_timestamp()
               WHERE id = $10)
           SELECT count(*) AS "n!" FROM finished"#,
        &jobs,
        &fields,
        &search_text as &[Option<&str>],
        &models as &[&str],
        &sha as &[Option<&str>],
        &versions,
        &latency,
        &prompt as &[Option<i64>],
        &completion as &[Option<i64>],
        fence.owner,
        fence.gpu,
        fence.epoch
    )
    .fetch_one(&mut **tx)
    .await? as u64)
}

async fn claim_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    fence: &Fence,
    scope: Scope,
    n: i64,
    ttl: Duration,
) -> Result<Vec<ClaimedJob>> {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let rows = sqlx::query!(
        r#"WITH picked AS (
               SELECT id FROM jobs
               WHERE pass_id = $1 AND state = 'queued' AND run_after <= clock_timestamp()
                 AND ($7::bigint IS NULL OR film_id = $7)
                 -- A filter per candidate, not an anti-join: with an
                 -- anti-join the planner, on statistics not yet updated
                 -- after a big enqueue, sorted every queued job of the pass
                 -- (119 ms a claim on 50,000) instead of walking jobs_claim.
                 AND (SELECT d.duplicate_of FROM frames d WHERE d.id = jobs.frame_id) IS NULL
               ORDER BY priority DESC, id
               LIMIT $2
               FOR UPDATE SKIP LOCKED),
           claimed AS (
               UPDATE jobs j SET state = 'running', attempts = j.attempts + 1, lease_owner = $3,
                      lease_gpu = $4, lease_epoch = $5,
                      lease_expires_at = clock_timestamp() + make_interval(secs => $6::bigint / 1000.0),
                      updated_at = clock_timestamp()
               FROM picked WHERE j.id = picked.id
               RETURNING j.id, j.frame_id, j.attempts, j.transient_failures, j.max_attempts),
           tried AS (
               INSERT INTO attempts (job_id, worker_id, gpu, lease_epoch)
               SELECT id, $3, $4, $5 FROM claimed)
           SELECT c.id AS "job_id!", c.frame_id AS "frame_id!", f.path AS "path!",
                  c.attempts AS "attempts!", c.transient_failures AS "transient_failures!",
                  c.max_attempts AS "max_attempts!", f.jpeg AS bytes,
                  CASE WHEN f.dhash IS NULL THEN f.dedupe_distance END AS dedupe
           FROM claimed c JOIN frames f ON f.id = c.frame_id
           ORDER BY c.id"#,
        scope.pass,
        n,
        fence.owner,
        fence.gpu,
        fence.epoch,
        ttl_ms,
        scope.film
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ClaimedJob {
            job_id: r.job_id,
            frame_id: r.frame_id,
            path: r.path,
            line: None,
            attempts: r.attempts,
            transient_failures: r.transient_failures,
            max_attempts: r.max_attempts,
            stored: r.bytes.map(|b| StoredFrame(b.into())),
            dedupe: r.dedupe.and_then(|d| u32::try_from(d).ok()),
        })
        .collect())
}

/// Puts every running job whose job lease expired by the database's clock
/// back in the queue (its holder died or lost the network: whoever runs
/// this, on any host, recovers it without asking about pids); returns how
/// many.
pub async fn recover_expired(q: &PgQueue) -> Result<u64> {
    let mut tx = q.pool().begin().await?;
    let ids: Vec<i64> = sqlx::query_scalar!(
        r#"UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_gpu = NULL, lease_epoch = NULL,
                  lease_expires_at = NULL, updated_at = clock_timestamp()
           WHERE id IN (SELECT id FROM jobs
                        WHERE state = 'running' AND lease_expires_at <= clock_timestamp()
                        FOR UPDATE SKIP LOCKED)
           RETURNING id"#
    )
    .fetch_all(&mut *tx)
    .await?;
    close_attempts(&mut tx, &ids, "expired").await?;
    tx.commit().await?;
    if !ids.is_empty() {
        sqlx::query!("SELECT pg_notify($1, '')", JOBS_CHANNEL)
            .execute(q.pool())
            .await?;
    }
    Ok(ids.len() as u64)
}

/// Counts of pass `pass`'s jobs by state.
pub async fn counts(q: &PgQueue, pass: i64) -> Result<Counts> {
    let r = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE state = 'queued') AS "queued!",
                  count(*) FILTER (WHERE state = 'running') AS "running!",
                  count(*) FILTER (WHERE state = 'done') AS "done!",
                  count(*) FILTER (WHERE state = 'failed') AS "failed!"
           FROM jobs WHERE pass_id = $1"#,
        pass
    )
    .fetch_one(q.pool())
    .await?;
    Ok(Counts {
        queued: r.queued,
        running: r.running,
        done: r.done,
        failed: r.failed,
    })
}

/// Wake-ups for workers with nothing to claim: a listener on the jobs
/// channel (its own connection).
pub struct Wakeups {
    listener: PgListener,
}

impl Wakeups {
    pub async fn listen(q: &PgQueue) -> Result<Wakeups> {
        let mut listener = PgListener::connect_with(q.pool()).await?;
        listener.listen(JOBS_CHANNEL).await?;
        Ok(Wakeups { listener })
    }

    /// Waits until jobs are enqueued or recovered, or `limit` passes;
    /// `true` when woken.
    pub async fn wait(&mut self, limit: Duration) -> Result<bool> {
        match tokio::time::timeout(limit, self.listener.recv()).await {
            Ok(note) => {
                note?;
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }
}
