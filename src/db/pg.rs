//! A cinecut database on PostgreSQL (`--db postgres://…`): [`PgDb`], its
//! connection and the helpers its side of the contract (`pg_store.rs`,
//! `pg_work.rs`) shares, and the producer's [`PgLoader`]. Every statement
//! is in the `cinecut-postgres` crate (checked offline against
//! `migrations/postgres`), which takes and returns the same
//! `cinecut-types` as SQLite's code; nothing here writes SQL. Its errors
//! become ours, with the URL shown without its password.
//!
//! What PostgreSQL decides differently: every lease, job lease and backoff
//! is measured on the database's clock (a host's own clock decides
//! nothing); a holder's pid is checked only on its own host (hostname +
//! boot id); idle workers wake on `LISTEN/NOTIFY`; running jobs whose job
//! lease expired are recovered by any worker's heartbeat.

use std::fmt;

use cinecut_postgres::host::HostId;
use cinecut_postgres::{PgQueue, lease as pgl, queue as pgq, workers as pgw};

use super::lease::Holder;
use super::load::FrameLoader;
use super::queue::{ChunkOutcome, JobSpec, NewFrame};
use crate::error::{Error, Result};

/// A cinecut database on PostgreSQL, and the URL it was opened with
/// (shown without its password).
#[derive(Clone)]
pub struct PgDb {
    queue: PgQueue,
    pub(super) shown: String,
}

impl fmt::Debug for PgDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgDb").field("url", &self.shown).finish()
    }
}

/// `url` with its password replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _password)) => format!("{scheme}://{name}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

impl PgDb {
    /// Connects and brings the schema up to date (under the migrator's
    /// advisory lock, so hosts starting at once do not race).
    pub async fn connect(url: &str) -> Result<PgDb> {
        let shown = redact(url);
        let queue = PgQueue::connect(url).await.map_err(|e| Error::Postgres {
            url: shown.clone(),
            source: e,
        })?;
        Ok(PgDb { queue, shown })
    }

    pub fn queue(&self) -> &PgQueue {
        &self.queue
    }

    pub(super) fn err(&self) -> impl Fn(cinecut_postgres::Error) -> Error + '_ {
        |source| Error::Postgres {
            url: self.shown.clone(),
            source,
        }
    }

    /// The passes an enqueue creates jobs in (see
    /// [`pgq::passes_for_enqueue`]).
    pub async fn passes_for_enqueue(&self, names: &[String]) -> Result<Vec<i64>> {
        pgq::passes_for_enqueue(&self.queue, names)
            .await
            .map_err(self.err())
    }

    /// The film titled `title`: its id and frame count, if there is one.
    pub async fn film(&self, title: &str) -> Result<Option<(i64, i64)>> {
        pgw::film(&self.queue, title).await.map_err(self.err())
    }

    /// Adds `frames` to film `film` and a job in pass `pass` to each that
    /// has none; what was new.
    pub async fn enqueue_frames_of(
        &self,
        film: i64,
        pass: i64,
        frames: &[pgq::NewFrame],
        max_attempts: i64,
    ) -> Result<pgq::Enqueued> {
        pgq::enqueue(&self.queue, film, pass, frames, max_attempts)
            .await
            .map_err(self.err())
    }

    /// The pass a worker of `identity` serves: `name` (made if new), bound
    /// to its model and profile unless it is settled on others (an error
    /// saying which). Also whether it was made now.
    pub(super) async fn serve_named(
        &self,
        name: &str,
        identity: super::passes::PassIdentity<'_>,
    ) -> Result<(super::passes::Pass, bool)> {
        let (suffix, hash) = (identity.profile.pass_suffix(), identity.profile.hash());
        let profile: serde_json::Value =
            serde_json::from_str(&identity.profile.to_json()).expect("a profile is JSON");
        let pg_identity = cinecut_postgres::passes::Identity {
            model: identity.model,
            profile_name: &suffix,
            profile_hash: &hash,
            profile: &profile,
        };
        let served = cinecut_postgres::passes::serve(&self.queue, name, pg_identity)
            .await
            .map_err(self.err())?;
        match served {
            Ok(s) => Ok((
                super::passes::Pass {
                    id: s.id,
                    name: name.to_string(),
                    binding: s.binding,
                },
                s.made,
            )),
            Err(m) => Err(Error::PassMismatch {
                pass: name.to_string(),
                what: m.what,
                has: m.has,
                wants: match m.what {
                    "model" => identity.model.to_string(),
                    _ => format!("{suffix} ({})", &hash[..12]),
                },
            }),
        }
    }

    /// The fields of each pass's profile, with their types (see
    /// [`cinecut_postgres::passes::fields`]).
    pub(super) async fn field_kinds(
        &self,
        only: Option<i64>,
    ) -> Result<Vec<(i64, Option<(String, String)>)>> {
        cinecut_postgres::passes::fields(&self.queue, only)
            .await
            .map_err(self.err())
    }
}

/// The holder as the PostgreSQL lease knows it: its host identity is
/// hostname + boot id (`CINECUT_TEST_HOST_ID` in tests).
pub(super) fn pg_holder(me: &Holder) -> pgl::Holder {
    pgl::Holder {
        id: me.id.clone(),
        host: HostId::this(),
        pid: me.pid,
        purpose: me.purpose.as_str(),
    }
}

/// The PostgreSQL loader: the passes of the enqueue, made if new.
pub struct PgLoader {
    db: PgDb,
    passes: Vec<i64>,
}

impl FrameLoader for PgLoader {
    type Rows = Vec<pgq::NewFrame>;

    fn rows(frames: &[NewFrame], stored: Option<Vec<Vec<u8>>>) -> Self::Rows {
        let mut stored = stored.map(Vec::into_iter);
        frames
            .iter()
            .map(|f| pgq::NewFrame {
                path: f.path.clone(),
                frame_index: f.frame_index,
                pts_ms: f.pts_ms,
                width: f.width,
                height: f.height,
                shot: f.shot,
                dhash: f.dhash,
                duplicate_of: f.duplicate_of.clone(),
                dedupe_distance: f.dedupe_distance.map(i64::from),
                bytes: stored.as_mut().and_then(Iterator::next),
            })
            .collect()
    }

    /// Pass by pass; a frame is new (and a near-duplicate) once, in the
    /// first pass; a frame whose explicit index another path holds is
    /// rejected, as on SQLite.
    async fn load(
        &mut self,
        film: i64,
        rows: &Self::Rows,
        jobs: &JobSpec<'_>,
    ) -> Result<ChunkOutcome> {
        let mut outcome = ChunkOutcome::default();
        for (i, pass) in self.passes.iter().enumerate() {
            let added = self
                .db
                .enqueue_frames_of(film, *pass, rows, jobs.max_attempts)
                .await?;
            if i == 0 {
                outcome.inserted = added.frames;
                let conflicts = added.index_conflicts.len() as u64;
                outcome.already = rows.len() as u64 - added.frames - conflicts;
                outcome.index_conflicts = added.index_conflicts;
                outcome.near_duplicates = added.near_duplicates;
            }
        }
        Ok(outcome)
    }
}

impl PgLoader {
    /// The PostgreSQL loader for the passes `names`, each made if new; with
    /// no names, every pass of the database (`default` when there is none),
    /// as on SQLite.
    pub(super) async fn new(db: &PgDb, names: &[String]) -> Result<PgLoader> {
        let passes = db.passes_for_enqueue(names).await?;
        Ok(PgLoader {
            db: db.clone(),
            passes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn a_password_never_shows() {
        assert_eq!(
            redact("postgres://cinecut:s3cret@db.example:5432/films?sslmode=disable"),
            "postgres://cinecut:***@db.example:5432/films?sslmode=disable"
        );
        assert_eq!(
            redact("postgres://cinecut@localhost/films"),
            "postgres://cinecut@localhost/films"
        );
        assert_eq!(
            redact("postgresql:///films?host=/tmp/pg"),
            "postgresql:///films?host=/tmp/pg"
        );
    }
}
