//! Near-duplicates on SQLite: what a worker compares a claimed still with,
//! the marks it writes once it hashed it ([`super::contract::Work::mark_hashed`]),
//! and the copy of an original's description to its marked frames' queued
//! jobs, which enqueue (a video's frames) and the worker (stills) share.

use sqlx::{Sqlite, SqliteConnection, Transaction};

use super::jobs::{ClaimedJob, Fence, Finished, HashedFrame, Neighbour, Outcome};
use super::{begin_immediate_on, now_ms};
use crate::error::Result;

/// The frame before each of `frames` in its film, and that frame's original
/// (itself, or the frame it repeats) when the original has a grey copy.
pub(super) async fn neighbours(
    conn: &mut SqliteConnection,
    frames: &[i64],
) -> Result<Vec<Neighbour>> {
    let ids = serde_json::to_string(frames).expect("ids serialise");
    let rows = sqlx::query!(
        r#"SELECT f.id AS "frame!: i64", p.id AS "previous?: i64", o.id AS "original?: i64",
                  o.dhash AS "dhash?: i64", o.grey AS "grey?: Vec<u8>"
           FROM json_each(?1) AS m
           JOIN frames f ON f.id = m.value
           LEFT JOIN frames p ON p.id = (SELECT x.id FROM frames x
                                         WHERE x.film_id = f.film_id AND x.frame_index < f.frame_index
                                         ORDER BY x.frame_index DESC LIMIT 1)
           LEFT JOIN frames o ON o.id = coalesce(p.duplicate_of, p.id)
                             AND o.grey IS NOT NULL AND o.dhash IS NOT NULL"#,
        ids
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Neighbour::new(r.frame, r.previous, (r.original, r.dhash, r.grey)))
        .collect())
}

/// See [`super::contract::Work::mark_hashed`]. Another connection's write
/// lock is waited out ([`super::BusyWait`]).
pub(super) async fn mark_hashed(
    conn: &mut SqliteConnection,
    fence: &Fence,
    hashed: &[HashedFrame],
    claimed: &[ClaimedJob],
) -> Result<Vec<i64>> {
    let rows: Vec<_> = hashed
        .iter()
        .map(|h| (h.frame_id, h.dhash, hex(&h.grey), h.duplicate_of))
        .collect();
    let rows = serde_json::to_string(&rows).expect("rows serialise");
    let mut wait = super::BusyWait::default();
    loop {
        match mark_hashed_once(conn, fence, &rows, claimed).await {
            Err(e) => wait.again(e).await?,
            Ok(marked) => {
                wait.done();
                return Ok(marked);
            }
        }
    }
}

async fn mark_hashed_once(
    conn: &mut SqliteConnection,
    fence: &Fence,
    rows: &str,
    claimed: &[ClaimedJob],
) -> Result<Vec<i64>> {
    let mut tx = begin_immediate_on(conn).await?;
    // Nothing from a worker that lost its lease (paused, taken over).
    let current = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM gpu_leases WHERE gpu = ?1 AND holder = ?2 AND epoch = ?3)
           AS "current!: bool""#,
        fence.gpu,
        fence.owner,
        fence.epoch
    )
    .fetch_one(&mut *tx)
    .await?;
    if !current {
        return Ok(Vec::new());
    }
    sqlx::query!(
        r#"UPDATE frames SET dhash = m.value ->> 1, grey = unhex(m.value ->> 2)
           FROM json_each(?1) AS m
           WHERE frames.id = m.value ->> 0 AND frames.dhash IS NULL"#,
        rows
    )
    .execute(&mut *tx)
    .await?;
    // Every job of the frame queued or this worker's; in each of their
    // passes the original has a job that will be described (or fail, which
    // frees the mark).
    sqlx::query!(
        r#"WITH m AS MATERIALIZED (
               SELECT value ->> 0 AS frame, value ->> 3 AS original FROM json_each(?1)
               WHERE value ->> 3 IS NOT NULL)
           UPDATE frames SET duplicate_of = m.original
           FROM m
           WHERE frames.id = m.frame AND frames.duplicate_of IS NULL
             AND NOT EXISTS (SELECT 1 FROM frames o WHERE o.id = m.original AND o.duplicate_of IS NOT NULL)
             AND NOT EXISTS (
                 SELECT 1 FROM jobs fj
                 WHERE fj.frame_id = frames.id
                   AND (NOT (fj.state = 'queued'
                             OR (fj.state = 'running' AND fj.lease_owner = ?2 AND fj.lease_epoch = ?3))
                        OR NOT EXISTS (SELECT 1 FROM jobs oj
                                       WHERE oj.frame_id = m.original AND oj.pass_id = fj.pass_id
                                         AND oj.state IN ('queued', 'running', 'done'))))"#,
        rows,
        fence.owner,
        fence.epoch
    )
    .execute(&mut *tx)
    .await?;
    let marked: Vec<i64> = sqlx::query_scalar!(
        r#"SELECT f.id AS "id!: i64" FROM json_each(?1) AS m JOIN frames f ON f.id = m.value ->> 0
           WHERE f.duplicate_of IS NOT NULL"#,
        rows
    )
    .fetch_all(&mut *tx)
    .await?;
    if !marked.is_empty() {
        let now = now_ms();
        let released: Vec<Finished> = claimed
            .iter()
            .filter(|j| marked.contains(&j.frame_id))
            .map(|j| Finished {
                job: j.clone(),
                outcome: Outcome::Release,
                started_at: now,
                finished_at: now,
            })
            .collect();
        super::jobs::record_batch(&mut tx, fence, &released, now).await?;
        copy_to_duplicates(&mut tx, &marked).await?;
    }
    tx.commit().await?;
    Ok(marked)
}

/// Gives every queued job of `frames` (frames marked as near-duplicates)
/// whose original is described in the job's pass that description, and
/// makes it done.
pub(super) async fn copy_to_duplicates(
    tx: &mut Transaction<'_, Sqlite>,
    frames: &[i64],
) -> Result<()> {
    let ids = serde_json::to_string(frames).expect("ids serialise");
    let now = now_ms();
    sqlx::query!(
        r#"INSERT INTO descriptions (job_id, frame_id, pass_id, visual_content, mood, action, setting,
                                     fields, search_text, model, model_sha256, prompt_version,
                                     created_at, duplicate_of)
           SELECT j.id, fr.id, j.pass_id, d.visual_content, d.mood, d.action, d.setting, d.fields,
                  d.search_text, d.model, d.model_sha256, d.prompt_version, ?2, d.frame_id
           FROM json_each(?1) AS m
           JOIN frames fr ON fr.id = m.value
           JOIN jobs j ON j.frame_id = fr.id AND j.state = 'queued'
           JOIN descriptions d ON d.frame_id = fr.duplicate_of AND d.pass_id = j.pass_id
           WHERE NOT EXISTS (SELECT 1 FROM descriptions x WHERE x.job_id = j.id)"#,
        ids,
        now
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query!(
        r#"UPDATE jobs SET state = 'done', updated_at = ?2
           WHERE state = 'queued' AND frame_id IN (SELECT value FROM json_each(?1))
             AND EXISTS (SELECT 1 FROM descriptions x WHERE x.job_id = jobs.id)"#,
        ids,
        now
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Bytes as hex, for `unhex()` in a JSON row.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
