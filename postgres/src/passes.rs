//! Passes bound to the model and prompt profile that describe them (see
//! migrations/postgres/0005_pass_binding.sql).

use crate::{PgQueue, Result};

/// What a worker describes with.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub model: &'a str,
    pub profile_name: &'a str,
    /// SHA-256 of the profile's canonical JSON.
    pub profile_hash: &'a str,
    pub profile: &'a sqlx::types::JsonValue,
}

/// The pass a worker serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub id: i64,
    /// The binding generation this worker made or found: its claims hold
    /// only while the pass keeps it.
    pub binding: i64,
    /// The pass did not exist before.
    pub made: bool,
}

/// Why a pass cannot be served: it is settled on another model or profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// `model` or `prompt profile`.
    pub what: &'static str,
    /// What the pass is bound to.
    pub has: String,
}

/// Serves pass `name` (made if new) with `identity`: binds it when it is
/// not settled (no description, no running job; a change of model or
/// profile raises its binding), or refuses when it is settled on another
/// model or profile. The pass row is locked first, so that a claim in
/// flight (which reads it `FOR SHARE`) either ends before the check sees
/// its running jobs, or waits and then finds the binding changed.
pub async fn serve(
    q: &PgQueue,
    name: &str,
    identity: Identity<'_>,
) -> Result<std::result::Result<Served, Mismatch>> {
    let mut tx = q.pool().begin().await?;
    let made = sqlx::query_scalar!(
        "INSERT INTO passes (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id",
        name
    )
    .fetch_optional(&mut *tx)
    .await?
    .is_some();
    let row = sqlx::query!(
        "SELECT id, model, profile_name, profile_hash FROM passes WHERE name = $1
         FOR NO KEY UPDATE",
        name
    )
    .fetch_one(&mut *tx)
    .await?;
    let settled = row.model.is_some()
        && sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM descriptions WHERE pass_id = $1)
                      OR EXISTS (SELECT 1 FROM jobs WHERE pass_id = $1 AND state = 'running')
                      AS "settled!""#,
            row.id
        )
        .fetch_one(&mut *tx)
        .await?;
    if settled {
        if let Some(model) = row.model.filter(|m| m != identity.model) {
            return Ok(Err(Mismatch {
                what: "model",
                has: model,
            }));
        }
        if row
            .profile_hash
            .as_deref()
            .is_some_and(|h| h != identity.profile_hash)
        {
            return Ok(Err(Mismatch {
                what: "prompt profile",
                has: row.profile_name.unwrap_or_default(),
            }));
        }
    }
    let binding = sqlx::query_scalar!(
        "UPDATE passes
         SET binding = binding
                       + (model IS DISTINCT FROM $2 OR profile_hash IS DISTINCT FROM $4)::int,
             model = $2, profile_name = $3, profile_hash = $4, profile = $5
         WHERE id = $1
         RETURNING binding",
        row.id,
        identity.model,
        identity.profile_name,
        identity.profile_hash,
        identity.profile
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Ok(Served {
        id: row.id,
        binding,
        made,
    }))
}

/// The fields of each pass's profile (of pass `only`, or of every pass),
/// in pass then profile order, with their types: `(pass id, None)` for a
/// pass with no profile recorded (it answers in the default profile).
pub async fn fields(
    q: &PgQueue,
    only: Option<i64>,
) -> Result<Vec<(i64, Option<(String, String)>)>> {
    Ok(sqlx::query!(
        r#"SELECT p.id, f.value ->> 'name' AS name, f.value ->> 'type' AS kind
           FROM passes p
           LEFT JOIN LATERAL jsonb_array_elements(p.profile -> 'fields') WITH ORDINALITY
                AS f(value, n) ON true
           WHERE $1::bigint IS NULL OR p.id = $1
           ORDER BY p.id, f.n"#,
        only
    )
    .fetch_all(q.pool())
    .await?
    .into_iter()
    .map(|r| (r.id, r.name.zip(r.kind)))
    .collect())
}

pub use cinecut_types::{Pass, PassCandidate};

/// Every pass, oldest first, as a worker given no pass name chooses among
/// them.
pub async fn candidates(q: &PgQueue) -> Result<Vec<PassCandidate>> {
    Ok(sqlx::query_as!(
        PassCandidate,
        r#"SELECT p.id, p.name, p.model, p.profile_name, p.profile_hash,
                  p.model IS NOT NULL
                  AND (EXISTS (SELECT 1 FROM descriptions d WHERE d.pass_id = p.id)
                       OR EXISTS (SELECT 1 FROM jobs j WHERE j.state = 'running' AND j.pass_id = p.id))
                  AS "settled!"
           FROM passes p ORDER BY p.id"#
    )
    .fetch_all(q.pool())
    .await?)
}

/// Every pass, oldest first, after making a pass `default` if there is
/// none (for a worker given no pass, which serves the only one).
pub async fn all_or_default(q: &PgQueue) -> Result<Vec<Pass>> {
    sqlx::query!(
        "INSERT INTO passes (name) SELECT 'default' WHERE NOT EXISTS (SELECT 1 FROM passes)
         ON CONFLICT (name) DO NOTHING"
    )
    .execute(q.pool())
    .await?;
    Ok(
        sqlx::query_as!(Pass, "SELECT id, name, binding FROM passes ORDER BY id")
            .fetch_all(q.pool())
            .await?,
    )
}
