//! Passes: one way of describing frames (a model and a prompt profile).
//! A frame has one job and at most one description per pass.
//!
//! A pass is created by `enqueue`/`describe` (named, not yet bound to a
//! model) or by the first worker that serves it; that worker binds the
//! pass's model name and profile. The binding is settled once the pass has
//! a description or a job running: until then another worker may rebind it
//! (a worker that could not start its server, or that named its model
//! wrongly, does not lock a pass to that name). A worker never serves a
//! pass settled on another model or profile ([`serve`]). The model's
//! SHA-256 is learnt from the first description that carries one (a trigger).

use sqlx::{SqliteConnection, SqlitePool};

use super::{begin_immediate, now_ms};
use crate::error::{Error, Result};
use crate::profile::Profile;

pub use cinecut_types::{Pass, PassCandidate, PassSummary};

/// What a worker describes with: its model name and prompt profile.
#[derive(Debug, Clone, Copy)]
pub struct PassIdentity<'a> {
    pub model: &'a str,
    pub profile: &'a Profile,
}

impl PassIdentity<'_> {
    /// The name a pass of this identity gets by default: `model/profile`.
    pub fn derived_name(&self) -> String {
        format!("{}/{}", self.model, self.profile.pass_suffix())
    }
}

/// The pass a worker of `identity` serves, and whether it was made now:
/// `name` if given (created, or bound if not settled, or refused if settled
/// on another model or profile); otherwise the one [`choose`] picks, else
/// a new pass named `model/profile`.
pub async fn serve(
    pool: &SqlitePool,
    name: Option<&str>,
    identity: PassIdentity<'_>,
) -> Result<(Pass, bool)> {
    let hash = identity.profile.hash();
    let suffix = identity.profile.pass_suffix();
    let mut tx = begin_immediate(pool).await?;
    let rows = sqlx::query_as!(
        PassCandidate,
        r#"SELECT p.id AS "id!", p.name, p.model, p.profile_name, p.profile_hash,
                  p.model IS NOT NULL
                  AND (EXISTS (SELECT 1 FROM descriptions d WHERE d.pass_id = p.id)
                       OR EXISTS (SELECT 1 FROM jobs j WHERE j.state = 'running' AND j.pass_id = p.id))
                  AS "settled!: bool"
           FROM passes p ORDER BY p.id"#
    )
    .fetch_all(&mut *tx)
    .await?;
    let chosen = match name {
        Some(name) => rows.iter().find(|r| r.name == name),
        None => choose(&rows, identity)?,
    };
    let name = name.map_or_else(|| identity.derived_name(), str::to_string);
    let profile = identity.profile.to_json();
    let made = chosen.is_none();
    let id = match chosen {
        Some(row) => {
            if row.settled {
                refuse_another_identity(row, identity, &hash, &suffix)?;
            }
            // Binds (or, not settled, rebinds) the pass to this identity; a
            // settled pass it matches only gains what it lacked (a pass
            // migrated from before passes has no profile hash).
            sqlx::query!(
                r#"UPDATE passes SET binding = binding + (model IS NOT ?2 OR profile_hash IS NOT ?4),
                                     model = ?2, profile_name = ?3, profile_hash = ?4, profile = ?5
                   WHERE id = ?1"#,
                row.id,
                identity.model,
                suffix,
                hash,
                profile
            )
            .execute(&mut *tx)
            .await?;
            row.id
        }
        None => {
            let now = now_ms();
            sqlx::query_scalar!(
                r#"INSERT INTO passes (name, model, profile_name, profile_hash, profile, created_at)
                   VALUES (?, ?, ?, ?, ?, ?) RETURNING id AS "id!""#,
                name,
                identity.model,
                suffix,
                hash,
                profile,
                now
            )
            .fetch_one(&mut *tx)
            .await?
        }
    };
    let pass = sqlx::query_as!(
        Pass,
        r#"SELECT id AS "id!", name, binding FROM passes WHERE id = ?"#,
        id
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((pass, made))
}

/// The pass a worker of `identity` given no pass name serves, on either
/// backend: the one pass bound to this identity (its model and profile),
/// else the one pass not settled on another, else the pass named after the
/// identity (`model/profile`) if there is one; `None`: that pass is to be
/// made. Two bound passes, or two unsettled ones, are an error naming them.
pub fn choose<'a>(
    rows: &'a [PassCandidate],
    identity: PassIdentity<'_>,
) -> Result<Option<&'a PassCandidate>> {
    let hash = identity.profile.hash();
    let suffix = identity.profile.pass_suffix();
    let matches = |r: &PassCandidate| {
        r.model.as_deref() == Some(identity.model)
            && match &r.profile_hash {
                Some(h) => *h == hash,
                None => r.profile_name.as_deref() == Some(suffix.as_str()),
            }
    };
    let bound: Vec<&PassCandidate> = rows.iter().filter(|r| matches(r)).collect();
    let unbound: Vec<&PassCandidate> = rows.iter().filter(|r| !r.settled && !matches(r)).collect();
    let names = |v: &[&PassCandidate]| {
        v.iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (bound.as_slice(), unbound.as_slice()) {
        ([one], _) => Ok(Some(*one)),
        ([_, _, ..], _) => Err(Error::AmbiguousPass {
            names: names(&bound),
        }),
        ([], [one]) => Ok(Some(*one)),
        ([], [_, _, ..]) => Err(Error::AmbiguousPass {
            names: names(&unbound),
        }),
        ([], []) => Ok(rows.iter().find(|r| r.name == identity.derived_name())),
    }
}

/// A settled pass serves only its own model and profile.
fn refuse_another_identity(
    row: &PassCandidate,
    identity: PassIdentity<'_>,
    hash: &str,
    suffix: &str,
) -> Result<()> {
    if let Some(model) = row.model.as_deref().filter(|m| *m != identity.model) {
        return Err(Error::PassMismatch {
            pass: row.name.clone(),
            what: "model",
            has: model.to_string(),
            wants: identity.model.to_string(),
        });
    }
    let profile_differs = match (&row.profile_hash, &row.profile_name) {
        (Some(h), _) => h != hash,
        (None, Some(n)) => n != suffix,
        (None, None) => false,
    };
    if profile_differs {
        return Err(Error::PassMismatch {
            pass: row.name.clone(),
            what: "prompt profile",
            has: row.profile_name.clone().unwrap_or_default(),
            wants: format!("{suffix} ({})", &hash[..12]),
        });
    }
    Ok(())
}

/// The database's only pass, for a worker told no pass (a pass `default`
/// is made when there is none); several are an error asking for one.
pub async fn only(pool: &SqlitePool) -> Result<Pass> {
    let mut tx = begin_immediate(pool).await?;
    let now = now_ms();
    sqlx::query!(
        r#"INSERT INTO passes (name, created_at) SELECT 'default', ?
           WHERE NOT EXISTS (SELECT 1 FROM passes)"#,
        now
    )
    .execute(&mut *tx)
    .await?;
    let all = sqlx::query_as!(
        Pass,
        r#"SELECT id AS "id!", name, binding FROM passes ORDER BY id"#
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    the_only(all)
}

/// The one pass of `all`, for a worker given none; several are an error
/// naming them (either backend).
pub fn the_only(mut all: Vec<Pass>) -> Result<Pass> {
    match all.as_slice() {
        [_] => Ok(all.remove(0)),
        _ => Err(Error::AmbiguousPass {
            names: all
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The ids of the passes an enqueue creates jobs in, as a JSON array, inside
/// the enqueue's transaction: the passes `names` (created unbound when
/// new), or with no names every pass of the database (a pass `default`
/// when there is none).
pub async fn for_enqueue(conn: &mut SqliteConnection, names: &[String]) -> Result<String> {
    let now = now_ms();
    if names.is_empty() {
        sqlx::query!(
            r#"INSERT INTO passes (name, created_at) SELECT 'default', ?
               WHERE NOT EXISTS (SELECT 1 FROM passes)"#,
            now
        )
        .execute(&mut *conn)
        .await?;
    }
    let names = serde_json::to_string(names).expect("names serialise");
    sqlx::query!(
        r#"INSERT INTO passes (name, created_at) SELECT value, ?2 FROM json_each(?1) WHERE true
           ON CONFLICT (name) DO NOTHING"#,
        names,
        now
    )
    .execute(&mut *conn)
    .await?;
    Ok(sqlx::query_scalar!(
        r#"SELECT json_group_array(id) AS "ids!: String" FROM passes
           WHERE json_array_length(?1) = 0 OR name IN (SELECT value FROM json_each(?1))"#,
        names
    )
    .fetch_one(&mut *conn)
    .await?)
}

/// Whether the database has any frame.
pub async fn has_frames(pool: &SqlitePool) -> Result<bool> {
    Ok(
        sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM frames) AS "any!: bool""#)
            .fetch_one(pool)
            .await?,
    )
}

/// How many passes the database has.
pub async fn count(pool: &SqlitePool) -> Result<i64> {
    Ok(
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!: i64" FROM passes"#)
            .fetch_one(pool)
            .await?,
    )
}

/// A pass by name.
pub async fn by_name(pool: &SqlitePool, name: &str) -> Result<Pass> {
    sqlx::query_as!(
        Pass,
        r#"SELECT id AS "id!", name, binding FROM passes WHERE name = ?"#,
        name
    )
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| Error::UnknownPass(name.to_string()))
}

/// The pass a reader means by default: the oldest pass with jobs of
/// `film` (`None`: the film has no jobs).
pub async fn first_with_film(pool: &SqlitePool, film: i64) -> Result<Option<Pass>> {
    Ok(sqlx::query_as!(
        Pass,
        r#"SELECT p.id AS "id!", p.name, p.binding FROM passes p JOIN film_passes fp ON fp.pass_id = p.id
           WHERE fp.film_id = ? ORDER BY p.id LIMIT 1"#,
        film
    )
    .fetch_optional(pool)
    .await?)
}

/// Queues every frame of `films` (all films when empty) for pass `pass`,
/// without re-extracting anything; frames that have a job in the pass keep
/// it. Returns how many jobs were created.
pub async fn enqueue_frames(
    pool: &SqlitePool,
    pass: i64,
    films: &[i64],
    max_attempts: i64,
) -> Result<u64> {
    let films = serde_json::to_string(films).expect("ids serialise");
    let now = now_ms();
    let mut tx = begin_immediate(pool).await?;
    let before = sqlx::query_scalar!(r#"SELECT coalesce(max(id), 0) AS "id!: i64" FROM jobs"#)
        .fetch_one(&mut *tx)
        .await?;
    let n = sqlx::query!(
        r#"INSERT INTO jobs (frame_id, pass_id, film_id, priority, max_attempts, created_at, updated_at)
           SELECT fr.id, ?1, fr.film_id, f.priority, ?3, ?4, ?4
           FROM frames fr JOIN films f ON f.id = fr.film_id
           WHERE (json_array_length(?2) = 0 OR fr.film_id IN (SELECT value FROM json_each(?2)))
           ORDER BY fr.id
           ON CONFLICT (frame_id, pass_id) DO NOTHING"#,
        pass,
        films,
        max_attempts,
        now
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query!(
        r#"INSERT INTO film_passes (film_id, pass_id, job_count)
           SELECT film_id, ?1, count(*) FROM jobs WHERE id > ?2
           GROUP BY film_id
           ON CONFLICT DO UPDATE SET job_count = job_count + excluded.job_count"#,
        pass,
        before
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(n)
}

/// Every pass with its counts and means, oldest first.
pub async fn list(pool: &SqlitePool) -> Result<Vec<PassSummary>> {
    Ok(sqlx::query_as!(
        PassSummary,
        r#"SELECT p.name AS "name!", p.model, p.model_sha256, p.profile_name AS profile,
                  (SELECT count(*) FROM jobs j WHERE j.pass_id = p.id) AS "jobs!: i64",
                  (SELECT count(*) FROM jobs j WHERE j.pass_id = p.id AND j.state = 'done') AS "done!: i64",
                  (SELECT count(*) FROM jobs j WHERE j.pass_id = p.id AND j.state = 'queued') AS "queued!: i64",
                  (SELECT count(*) FROM jobs j WHERE j.pass_id = p.id AND j.state = 'failed') AS "failed!: i64",
                  d.described AS "described!: i64",
                  d.latency AS "mean_latency_ms: f64",
                  d.pt AS "mean_prompt_tokens: f64",
                  d.ct AS "mean_completion_tokens: f64",
                  p.created_at AS "created_at!"
           FROM passes p
           JOIN (SELECT p2.id AS pass_id,
                        count(x.job_id) AS described,
                        avg(x.latency_ms) AS latency,
                        avg(x.prompt_tokens) AS pt,
                        avg(x.completion_tokens) AS ct
                 FROM passes p2 LEFT JOIN descriptions x ON x.pass_id = p2.id AND x.duplicate_of IS NULL
                 GROUP BY p2.id) d ON d.pass_id = p.id
           ORDER BY p.id"#
    )
    .fetch_all(pool)
    .await?)
}
