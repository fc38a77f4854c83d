//! Near-duplicates on PostgreSQL, as on SQLite (`src/db/dedupe.rs`): what a
//! worker compares a claimed still with, the marks it writes once it hashed
//! it, and the copy of an original's description to its marked frames'
//! queued jobs, which enqueue and the worker share.

use cinecut_types::{ClaimedJob, Fence, Finished, HashedFrame, Neighbour, Outcome, Recorded};

use crate::{PgQueue, Result};

/// The frame before each of `frames` in its film, and that frame's original
/// (itself, or the frame it repeats) when the original has a grey copy.
pub async fn neighbours(q: &PgQueue, frames: &[i64]) -> Result<Vec<Neighbour>> {
    let rows = sqlx::query!(
        r#"SELECT f.id AS "frame!", p.id AS "previous?", o.id AS "original?",
                  o.dhash AS "dhash?", o.grey AS "grey?"
           FROM frames f
           LEFT JOIN LATERAL (SELECT x.id, x.duplicate_of FROM frames x
                              WHERE x.film_id = f.film_id AND x.frame_index < f.frame_index
                              ORDER BY x.frame_index DESC LIMIT 1) p ON true
           LEFT JOIN frames o ON o.id = coalesce(p.duplicate_of, p.id)
                             AND o.grey IS NOT NULL AND o.dhash IS NOT NULL
           WHERE f.id = ANY($1::bigint[])"#,
        frames
    )
    .fetch_all(q.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Neighbour::new(r.frame, r.previous, (r.original, r.dhash, r.grey)))
        .collect())
}

/// Writes claimed stills' hashes and marks their near-duplicates, under
/// the rules SQLite's `Work::mark_hashed` states; returns the marked
/// frames among `hashed` (none when the lease is no longer `fence`'s).
/// Locks in the order enqueue's marks and a worker's record take them:
/// the originals' jobs (`FOR SHARE`: an
/// original's description or failure meanwhile waits, and then sees the
/// marks), then the hashed frames' rows.
///
/// A lock held longer than 250 ms (a paused worker's open
/// transaction, until the server ends it) is not waited for: nothing is
/// written, and the stills go to the model as originals, so that the
/// worker's own loop (its lease renewals) never stalls here.
pub async fn mark_hashed(
    q: &PgQueue,
    fence: &Fence,
    hashed: &[HashedFrame],
    claimed: &[ClaimedJob],
) -> Result<Vec<i64>> {
    match mark_hashed_in(q, fence, hashed, claimed).await {
        Err(crate::Error::Sql(sqlx::Error::Database(e)))
            if e.code().as_deref() == Some(LOCK_NOT_AVAILABLE) =>
        {
            tracing::debug!("near-duplicate marks skipped: rows locked by another session");
            Ok(Vec::new())
        }
        other => other,
    }
}

/// PostgreSQL's `lock_not_available`, which `lock_timeout` raises.
const LOCK_NOT_AVAILABLE: &str = "55P03";

async fn mark_hashed_in(
    q: &PgQueue,
    fence: &Fence,
    hashed: &[HashedFrame],
    claimed: &[ClaimedJob],
) -> Result<Vec<i64>> {
    let frames: Vec<i64> = hashed.iter().map(|h| h.frame_id).collect();
    let hashes: Vec<i64> = hashed.iter().map(|h| h.dhash).collect();
    let greys: Vec<&[u8]> = hashed.iter().map(|h| h.grey.as_slice()).collect();
    let originals: Vec<Option<i64>> = hashed.iter().map(|h| h.duplicate_of).collect();
    let mut tx = q.pool().begin().await?;
    sqlx::query("SET LOCAL lock_timeout = '250ms'")
        .execute(&mut *tx)
        .await?;
    if !lease_current(&mut tx, fence).await? {
        return Ok(Vec::new());
    }
    sqlx::query!(
        "SELECT id FROM jobs WHERE frame_id = ANY($1::bigint[]) ORDER BY id FOR SHARE",
        &originals as &[Option<i64>]
    )
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query!(
        "SELECT id FROM frames WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE",
        &frames
    )
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE frames SET dhash = u.h, grey = u.g
         FROM UNNEST($1::bigint[], $2::bigint[], $3::bytea[]) AS u(f, h, g)
         WHERE frames.id = u.f AND frames.dhash IS NULL",
        &frames,
        &hashes,
        &greys as &[&[u8]]
    )
    .execute(&mut *tx)
    .await?;
    let marked: Vec<i64> = sqlx::query_scalar!(
        r#"UPDATE frames SET duplicate_of = u.o
           FROM UNNEST($1::bigint[], $2::bigint[]) AS u(f, o)
           WHERE frames.id = u.f AND u.o IS NOT NULL AND frames.duplicate_of IS NULL
             AND NOT EXISTS (SELECT 1 FROM frames o WHERE o.id = u.o AND o.duplicate_of IS NOT NULL)
             AND NOT EXISTS (
                 SELECT 1 FROM jobs fj
                 WHERE fj.frame_id = frames.id
                   AND (NOT (fj.state = 'queued'
                             OR (fj.state = 'running' AND fj.lease_owner = $3
                                 AND fj.lease_epoch = $4))
                        OR NOT EXISTS (SELECT 1 FROM jobs oj
                                       WHERE oj.frame_id = u.o AND oj.pass_id = fj.pass_id
                                         AND oj.state IN ('queued', 'running', 'done'))))
           RETURNING frames.id"#,
        &frames,
        &originals as &[Option<i64>],
        fence.owner,
        fence.epoch
    )
    .fetch_all(&mut *tx)
    .await?;
    // Marked before (another worker hashed it first) counts too.
    let marked: Vec<i64> = sqlx::query_scalar!(
        "SELECT id FROM frames WHERE id = ANY($1::bigint[]) AND duplicate_of IS NOT NULL",
        &frames
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .chain(marked)
    .collect::<std::collections::BTreeSet<i64>>()
    .into_iter()
    .collect();
    if !marked.is_empty() {
        let released: Vec<Finished> = claimed
            .iter()
            .filter(|j| marked.contains(&j.frame_id))
            .map(|j| Finished {
                job: j.clone(),
                outcome: Outcome::Release,
                started_at: 0,
                finished_at: 0,
            })
            .collect();
        crate::queue::settle_in(&mut tx, fence, &released, &mut Recorded::default()).await?;
        copy_to_duplicates(&mut tx, &marked).await?;
    }
    tx.commit().await?;
    Ok(marked)
}

/// Whether `fence`'s lease is still current. Nothing is written for a
/// worker that lost its lease (paused, taken over). Not locked: a renewal
/// or a takeover never waits for these marks (the job rows are fenced in
/// settle_in all the same).
async fn lease_current(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    fence: &Fence,
) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM gpu_leases
                          WHERE gpu = $1 AND holder = $2 AND epoch = $3
                            AND expires_at > clock_timestamp()) AS "current!""#,
        fence.gpu,
        fence.owner,
        fence.epoch
    )
    .fetch_one(&mut **tx)
    .await?)
}

/// Gives every queued job of `frames` (frames marked as near-duplicates)
/// whose original is described in the job's pass that description, and
/// makes it done.
pub(crate) async fn copy_to_duplicates(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    frames: &[i64],
) -> Result<()> {
    sqlx::query!(
        r#"WITH copied AS (
               INSERT INTO descriptions (job_id, frame_id, pass_id, visual_content, mood, action,
                                         setting, fields, search_text, model, duplicate_of)
               SELECT j.id, fr.id, j.pass_id, d.visual_content, d.mood, d.action, d.setting,
                      d.fields, d.search_text, d.model, d.frame_id
               FROM frames fr
               JOIN jobs j ON j.frame_id = fr.id AND j.state = 'queued'
               JOIN descriptions d ON d.frame_id = fr.duplicate_of AND d.pass_id = j.pass_id
               WHERE fr.id = ANY($1::bigint[])
               ON CONFLICT DO NOTHING
               RETURNING job_id)
           UPDATE jobs SET state = 'done', updated_at = clock_timestamp()
           WHERE id IN (SELECT job_id FROM copied)"#,
        frames
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
