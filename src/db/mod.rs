//! The database: one SQLite file in WAL mode, shared by producers, workers
//! and SQL users. Every connection gets the same pragmas through its connect
//! options; migrations run on open. All SQL of the crate lives under this
//! module, so another backend (PostgreSQL for many GPU hosts) only touches it.
//!
//! Invariant: every transaction that reads and then writes starts with
//! `BEGIN IMMEDIATE` ([`begin_immediate`]); a deferred one can fail with
//! SQLITE_BUSY on its first write, which `busy_timeout` cannot cure.
//!
//! Other SQLite users (a `sqlite3` shell left in a transaction, DB Browser
//! editing a row) can hold the write lock for minutes. A write that still
//! finds it held after `busy_timeout` is tried again ([`retry_busy`]) for as
//! long as the command's lock wait allows (forever for the long-running
//! commands, `--lock-wait` for the others), saying so in the log; in WAL mode
//! only taking the write lock can be busy, so a retried transaction has
//! written nothing yet.

pub mod contract;
mod dedupe;
pub mod files;
pub mod jobs;
pub mod lease;
pub mod load;
pub mod passes;
pub mod pg;
mod pg_store;
mod pg_work;
pub mod queue;
pub mod report;
pub mod results;
mod sqlite;
pub mod status;
pub mod work;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use crate::error::{Error, Result};

/// How long a connection waits for another writer before SQLite gives up
/// and [`retry_busy`] takes over; `CINECUT_BUSY_TIMEOUT` overrides it (tests).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// `CINECUT_BUSY_TIMEOUT` (e.g. `500ms`, `2s`), else [`BUSY_TIMEOUT`]; never
/// longer than the command's lock wait (`--lock-wait 5s` waits 5 s, not 30).
pub fn busy_timeout() -> Duration {
    let configured = std::env::var("CINECUT_BUSY_TIMEOUT")
        .ok()
        .and_then(|v| humantime::parse_duration(v.trim()).ok())
        .unwrap_or(BUSY_TIMEOUT);
    lock_wait().map_or(configured, |limit| configured.min(limit))
}

/// How long this process's writes wait for another connection's write
/// lock, in ms; `u64::MAX` waits as long as it takes.
static LOCK_WAIT_MS: AtomicU64 = AtomicU64::new(u64::MAX);

/// Sets how long writes wait for another connection's write lock (`None`:
/// as long as it takes, for the worker and other long-running commands).
pub fn set_lock_wait(wait: Option<Duration>) {
    let ms = wait.map_or(u64::MAX, |w| {
        w.as_millis().try_into().unwrap_or(u64::MAX - 1)
    });
    LOCK_WAIT_MS.store(ms, Ordering::Relaxed);
}

fn lock_wait() -> Option<Duration> {
    match LOCK_WAIT_MS.load(Ordering::Relaxed) {
        u64::MAX => None,
        ms => Some(Duration::from_millis(ms)),
    }
}

/// The SQLite primary result code of a database error, if it is one.
fn sqlite_code(err: &sqlx::Error) -> Option<i32> {
    let sqlx::Error::Database(db) = err else {
        return None;
    };
    db.code()?.parse::<i32>().ok()
}

/// SQLITE_BUSY or SQLITE_LOCKED (any extended code): another connection
/// holds a lock we need.
pub fn is_busy(err: &Error) -> bool {
    match err {
        Error::Sqlx(e) => sqlite_code(e).is_some_and(|c| matches!(c & 0xff, 5 | 6)),
        _ => false,
    }
}

/// Runs `op` until it does not fail with SQLITE_BUSY, within the process's
/// lock wait ([`BusyWait`]). `op` must be all-or-nothing (one transaction),
/// which makes it safe to run again.
pub async fn retry_busy<T, F: Future<Output = Result<T>>>(mut op: impl FnMut() -> F) -> Result<T> {
    let mut wait = BusyWait::default();
    loop {
        match op().await {
            Err(e) => wait.again(e).await?,
            Ok(v) => {
                wait.done();
                return Ok(v);
            }
        }
    }
}

/// Waiting out another connection's write lock, one failed try at a time
/// (for loops whose operation borrows a connection, which [`retry_busy`]'s
/// closure cannot lend). Logs when it starts waiting, every 30 s while it
/// waits, and when the lock is released.
#[derive(Debug, Default)]
pub struct BusyWait {
    /// When SQLite started waiting for the first busy try.
    started: Option<std::time::Instant>,
    told_at: Option<std::time::Instant>,
    pause: Duration,
}

impl BusyWait {
    /// After a failed try: returns once it is time to try again, or the
    /// error itself when it is not SQLITE_BUSY or the lock wait is over.
    pub async fn again(&mut self, e: Error) -> Result<()> {
        if !is_busy(&e) {
            return Err(e);
        }
        let now = std::time::Instant::now();
        // SQLite itself waited busy_timeout before answering busy.
        let since = *self
            .started
            .get_or_insert_with(|| now.checked_sub(busy_timeout()).unwrap_or(now));
        if lock_wait().is_some_and(|limit| since.elapsed() >= limit) {
            return Err(e);
        }
        match self.told_at {
            None => tracing::warn!(
                "the database is write-locked by another connection (a sqlite3 shell or DB Browser in a transaction?); waiting for it{}",
                db_path_hint()
            ),
            Some(t) if t.elapsed() >= Duration::from_secs(30) => tracing::warn!(
                "still waiting for the database's write lock ({:.0} s so far){}",
                since.elapsed().as_secs_f64(),
                db_path_hint()
            ),
            Some(_) => return self.pause().await,
        }
        self.told_at = Some(now);
        self.pause().await
    }

    async fn pause(&mut self) -> Result<()> {
        self.pause = (self.pause * 2).clamp(Duration::from_millis(50), Duration::from_secs(1));
        tokio::time::sleep(self.pause).await;
        Ok(())
    }

    /// The try succeeded: says so if it had waited.
    pub fn done(&self) {
        if let Some(since) = self.started {
            tracing::info!(
                "the database's write lock was released after {:.1} s; carrying on",
                since.elapsed().as_secs_f64()
            );
        }
    }
}

/// The database this process opened, for messages.
static DB_PATH: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

fn db_path_hint() -> String {
    match DB_PATH.lock().ok().and_then(|p| p.clone()) {
        Some(p) => format!("; `fuser -v {}` names it", p.display()),
        None => String::new(),
    }
}

/// Page size of a new database file.
pub const PAGE_SIZE: u32 = 16_384;

/// `synchronous` pragma: FULL keeps every finished description across a power
/// failure; NORMAL is faster and only risks the last transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    #[default]
    Full,
    Normal,
}

/// Where `--db` points: a SQLite file (the default, one host) or a
/// PostgreSQL server (many hosts, one queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Location {
    /// A `postgres://` or `postgresql://` URL selects PostgreSQL; anything
    /// else is a SQLite file's path.
    pub fn parse(s: &str) -> Location {
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Location::Postgres(s.to_string())
        } else {
            Location::Sqlite(PathBuf::from(s))
        }
    }
}

impl std::fmt::Display for Location {
    /// The path, or the URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(url) => f.write_str(&pg::redact(url)),
        }
    }
}

pub use contract::{Backend, Store, Work, WorkQueue};

/// The producer's writer on one backend or the other. The producer is
/// generic over [`load::FrameLoader`] (its rows are made on a blocking thread
/// in the backend's own shape), so it takes the loader out of this enum
/// once per enqueue, and nothing else does.
pub enum Loader {
    Sqlite(queue::BulkLoader),
    Postgres(pg::PgLoader),
}

impl Store {
    /// Connects to the PostgreSQL database at `url` and brings its schema
    /// up to date (see [`pg::PgDb::connect`]).
    pub async fn connect_postgres(url: &str) -> Result<Store> {
        Ok(Store::new(pg::PgDb::connect(url).await?))
    }
}

impl From<Db> for Store {
    fn from(db: Db) -> Store {
        Store::new(db)
    }
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
        if let Ok(mut p) = DB_PATH.lock() {
            *p = Some(path.to_path_buf());
        }
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(Error::Sqlx)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(busy_timeout())
            .foreign_keys(true)
            .synchronous(match durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Normal => SqliteSynchronous::Normal,
            })
            // New databases only (an existing file keeps its page size): 16 KiB
            // pages made the million-frame enqueue a quarter faster than 4 KiB.
            .page_size(PAGE_SIZE)
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-8192");
        // The first connection switches a new file to WAL, which takes an
        // exclusive lock that busy_timeout cannot wait for: another process
        // doing the same at that moment failed with "database is locked".
        // So connecting, like migrating, happens one process at a time.
        let lock = open_lock(path).await;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(120))
            .connect_with(options)
            .await
            .map_err(|e| classify_open_error(path, e))?;
        let migrated = retry_busy(|| migrate(&pool, path)).await;
        drop(lock);
        migrated?;
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
    pub async fn bulk_loader(&self) -> Result<queue::BulkLoader> {
        use sqlx::ConnectOptions;
        let options = (*self.pool.connect_options()).clone().foreign_keys(false);
        Ok(queue::BulkLoader(options.connect().await?))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `PRAGMA optimize` (as SQLite advises before closing), then
    /// waits for every connection to close, so WAL is checkpointed. The
    /// optimize gives way to another connection's write lock at once: run
    /// on every connection's close (sqlx's `optimize_on_close`), it made a
    /// read-only `status` wait out busy_timeout once per connection while a
    /// sqlite3 shell held a transaction open.
    pub async fn close(&self) {
        if let Ok(mut conn) = self.pool.acquire().await {
            // Fixed pragmas that the query macros cannot type (optimize
            // answers a column of no type); nothing is bound.
            let _ = sqlx::raw_sql("PRAGMA busy_timeout = 0; PRAGMA optimize")
                .execute(&mut *conn)
                .await;
            // Not back to the pool with its busy_timeout of 0.
            let _ = conn.close().await;
        }
        self.pool.close().await;
    }
}

/// Starts a write transaction that takes the write lock at once, waiting
/// for another connection's lock as [`retry_busy`] does.
pub async fn begin_immediate(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>> {
    retry_busy(|| async { Ok(pool.begin_with(BEGIN_IMMEDIATE).await?) }).await
}

/// [`begin_immediate`] on a connection held apart from the pool (the bulk
/// loader, a worker's batch connection). It does not wait past
/// busy_timeout (a transaction borrowed from `conn` cannot be returned from
/// a retry loop): its callers run their whole transaction again ([`BusyWait`]).
pub async fn begin_immediate_on(
    conn: &mut sqlx::SqliteConnection,
) -> Result<Transaction<'_, Sqlite>> {
    use sqlx::Connection;
    Ok(conn.begin_with(BEGIN_IMMEDIATE).await?)
}

const BEGIN_IMMEDIATE: &str = "BEGIN IMMEDIATE";

/// Test-only: milliseconds added to this process's clock ([`now_ms`]), to
/// stand for a host whose clock drifts. The PostgreSQL queue reads no
/// host's clock for anything a lease or a delay decides, so a skewed worker
/// there neither steals a live lease nor keeps a dead one (tests/postgres.rs).
pub const CLOCK_SKEW_ENV: &str = "CINECUT_TEST_CLOCK_SKEW_MS";

/// The current time in unix milliseconds (plus the test-only skew).
pub fn now_ms() -> i64 {
    static SKEW: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let skew = *SKEW.get_or_init(|| {
        std::env::var(CLOCK_SKEW_ENV)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis())
        .unwrap_or(i64::MAX)
        .saturating_add(skew)
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
                // An existing database that cannot be written where it
                // lies (a read-only mount or file; SQLite cannot make its
                // -wal/-shm files there) says so.
                let folder = path.parent().map(|p| {
                    if p.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        p
                    }
                });
                let read_only = |p: &Path| {
                    nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_err_and(|e| {
                        matches!(e, nix::errno::Errno::EROFS | nix::errno::Errno::EACCES)
                    })
                };
                if path.exists() && (read_only(path) || folder.is_some_and(read_only)) {
                    return Error::DatabaseReadOnly {
                        path: path.to_path_buf(),
                    };
                }
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

/// Opening (the switch to WAL) and migrating run one process at a time:
/// two processes opening a new (or older) database together would otherwise
/// race for the WAL switch or apply the same migration twice ("table films
/// already exists"). The lock is an `flock` on a file beside the database,
/// dropped by the caller or when the process dies. A folder where it cannot
/// be made goes on unlocked.
async fn open_lock(path: &Path) -> Option<nix::fcntl::Flock<std::fs::File>> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".migrate-lock");
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .ok()?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).ok()
    })
    .await
    .expect("open lock thread")
}

/// Applies pending migrations (under [`open_lock`]).
async fn migrate(pool: &SqlitePool, path: &Path) -> Result<()> {
    use sqlx::migrate::MigrateError;
    let result = crate::MIGRATOR.run(pool).await;
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
