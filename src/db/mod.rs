//! The database: one SQLite file in WAL mode, shared by producers, workers
//! and SQL users. Every connection gets the same pragmas through its connect
//! options; migrations run on open. All SQL of the crate lives under this
//! module, so another backend (PostgreSQL for many GPU hosts) only touches it.
//!
//! Invariant: every transaction that reads and then writes starts with
//! `BEGIN IMMEDIATE` ([`begin_immediate`]); a deferred one can fail with
//! SQLITE_BUSY on its first write, which `busy_timeout` cannot cure.

pub mod jobs;
pub mod lease;
pub mod queue;
pub mod results;
pub mod status;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use crate::error::{Error, Result};

/// How long a connection waits for another writer before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Page size of a new database file.
pub const PAGE_SIZE: u32 = 16_384;

/// `synchronous` pragma: FULL keeps every finished description across a power
/// failure; NORMAL is faster and only risks the last transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Durability {
    #[default]
    Full,
    Normal,
}

/// A handle on the database file.
#[derive(Debug, Clone)]
pub struct Db {
    pool: SqlitePool,
    path: PathBuf,
}

impl Db {
    /// Opens (creating if missing) the database at `path` and applies pending
    /// migrations.
    pub async fn open(path: &Path, durability: Durability) -> Result<Db> {
        check_location(path)?;
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(Error::Sqlx)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .synchronous(match durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Normal => SqliteSynchronous::Normal,
            })
            // New databases only (an existing file keeps its page size): 16 KiB
            // pages made the million-frame enqueue a quarter faster than 4 KiB.
            .page_size(PAGE_SIZE)
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-8192")
            .optimize_on_close(true, None);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .acquire_timeout(BUSY_TIMEOUT * 2)
            .connect_with(options)
            .await
            .map_err(|e| classify_open_error(path, e))?;
        migrate(&pool, path).await?;
        Ok(Db {
            pool,
            path: path.to_path_buf(),
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A connection of its own for bulk loading, with foreign-key checks
    /// off: the loader's statements keep every reference by construction
    /// (see [`queue::enqueue_chunk`]), and checking them row by row costs
    /// two parent lookups per frame, a tenth of a million-frame enqueue.
    pub async fn bulk_loader(&self) -> Result<sqlx::SqliteConnection> {
        use sqlx::ConnectOptions;
        let options = (*self.pool.connect_options()).clone().foreign_keys(false);
        Ok(options.connect().await?)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for every connection to close, so WAL is checkpointed.
    pub async fn close(self) {
        self.pool.close().await;
    }
}

/// Starts a write transaction that takes the write lock at once.
pub async fn begin_immediate(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>> {
    Ok(pool.begin_with(BEGIN_IMMEDIATE).await?)
}

/// [`begin_immediate`] on a connection held apart from the pool (the bulk
/// loader, a worker's batch connection).
pub async fn begin_immediate_on(
    conn: &mut sqlx::SqliteConnection,
) -> Result<Transaction<'_, Sqlite>> {
    use sqlx::Connection;
    Ok(conn.begin_with(BEGIN_IMMEDIATE).await?)
}

const BEGIN_IMMEDIATE: &str = "BEGIN IMMEDIATE";

/// The current time in unix milliseconds.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

fn check_location(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::DbIsDirectory(path.to_path_buf()));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(Error::DbFolderMissing(parent));
    }
    let writable = nix::unistd::access(&parent, nix::unistd::AccessFlags::W_OK).is_ok();
    if !writable && !path.exists() {
        return Err(Error::DbFolderNotWritable(parent));
    }
    Ok(())
}

fn classify_open_error(path: &Path, err: sqlx::Error) -> Error {
    if let sqlx::Error::Database(db) = &err {
        match db.code().as_deref() {
            // SQLITE_NOTADB
            Some("26") => return Error::NotADatabase(path.to_path_buf()),
            // SQLITE_CANTOPEN, SQLITE_READONLY, SQLITE_PERM
            Some("14") | Some("8") | Some("3") => {
                return Error::DbCannotOpen {
                    path: path.to_path_buf(),
                    reason: db.message().to_string(),
                };
            }
            _ => {}
        }
    }
    Error::Sqlx(err)
}

/// Applies pending migrations, one process at a time: two processes opening
/// a new (or older) database together would otherwise both apply the same
/// migration, and one would fail ("table films already exists"). The lock is
/// an `flock` on a file beside the database, dropped when this returns or the
/// process dies. A folder where it cannot be made goes on unlocked.
async fn migrate(pool: &SqlitePool, path: &Path) -> Result<()> {
    use sqlx::migrate::MigrateError;
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".migrate-lock");
    let lock = tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .ok()?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).ok()
    })
    .await
    .expect("migration lock thread");
    let result = crate::MIGRATOR.run(pool).await;
    drop(lock);
    match result {
        Ok(()) => Ok(()),
        Err(MigrateError::VersionMissing(found)) => Err(Error::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            known: crate::MIGRATOR
                .iter()
                .map(|m| m.version)
                .max()
                .unwrap_or_default(),
        }),
        Err(MigrateError::Execute(e)) => Err(classify_open_error(path, e)),
        Err(e) => Err(Error::Migrate(e)),
    }
}

/// `PRAGMA data_version` of one connection: it changes when another
/// connection commits.
pub async fn data_version(conn: &mut sqlx::SqliteConnection) -> Result<i64> {
    Ok(sqlx::query_scalar!(r#"PRAGMA data_version"#)
        .fetch_one(conn)
        .await?
        .unwrap_or_default())
}
