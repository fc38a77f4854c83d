//! The crate's error type. Each message says what went wrong and what to do
//! about it; `main` prints the whole chain and maps every error to exit code 1
//! (usage errors are clap's, exit code 2).

use std::path::PathBuf;

/// Everything cinecut can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The folder that should hold the database does not exist.
    #[error("database folder {0} does not exist; create it or pass another --db")]
    DbFolderMissing(PathBuf),
    /// The database folder cannot be written (SQLite needs it for the WAL file).
    #[error("database folder {0} is not writable; fix its permissions or pass another --db")]
    DbFolderNotWritable(PathBuf),
    /// `--db` names a directory.
    #[error("{0} is a directory, not a database file; pass a file path to --db")]
    DbIsDirectory(PathBuf),
    /// The file exists but is not SQLite.
    #[error("{0} is not a SQLite database; pass another --db (cinecut will create a new one)")]
    NotADatabase(PathBuf),
    /// A command that only reads was pointed at a file that does not exist.
    #[error(
        "no database at {0}: nothing was enqueued there; check --db (or CINECUT_DB), or make one with `cinecut enqueue`"
    )]
    NoDatabase(PathBuf),
    /// SQLite could not open or write the file.
    #[error("cannot open database {path}: {reason}; check the path and its permissions")]
    DbCannotOpen { path: PathBuf, reason: String },
    /// The database was migrated by a newer cinecut.
    #[error(
        "database {path} has schema version {found}, newer than this cinecut knows (up to {known}); \
         upgrade cinecut or use another --db"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    /// A migration failed for another reason.
    #[error("cannot migrate the database")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The PostgreSQL server refused, failed or could not be reached.
    #[error(
        "PostgreSQL database {url}: check that the server runs and the URL, user and password are right"
    )]
    Postgres {
        url: String,
        #[source]
        source: cinecut_postgres::Error,
    },
    /// A named film does not exist.
    #[error("no film titled {0:?}; `cinecut status` lists the films")]
    UnknownFilm(String),
    /// A named pass does not exist.
    #[error("no pass named {0:?}; `cinecut passes` lists them")]
    UnknownPass(String),
    /// A pass is described by another model or prompt profile than this worker's.
    #[error(
        "pass {pass:?} is described with {what} {has:?}, and this worker has {wants:?}; \
         serve another pass with --pass NAME (`cinecut describe --pass NAME` queues the frames for it)"
    )]
    PassMismatch {
        pass: String,
        what: &'static str,
        has: String,
        wants: String,
    },
    /// Another worker bound the pass (not settled yet) to another model or
    /// profile after this worker bound it.
    #[error(
        "pass {pass:?} was bound to another model or prompt profile by a worker started after this \
         one; this worker stops without answering for it (`cinecut passes` shows the pass; start \
         this worker with --pass NAME to give it a pass of its own)"
    )]
    PassRebound { pass: String },
    /// No --pass, and the database has several a worker could serve.
    #[error("several passes could be served ({names}); choose one with --pass NAME")]
    AmbiguousPass { names: String },
    /// A prompt profile file cannot be used.
    #[error(transparent)]
    Profile(#[from] crate::profile::ProfileError),
    /// A film disappeared (deleted by another process) while frames were added to it.
    #[error("film #{0} was deleted while its frames were being enqueued; enqueue it again")]
    FilmDeleted(i64),
    /// Some inputs of an enqueue were rejected (listed before this error).
    #[error("{rejected} frame(s) rejected{}; fix or remove them and enqueue again (already enqueued frames are skipped)",
        if *enqueued_anyway { "" } else { ", nothing enqueued (--strict)" })]
    FramesRejected {
        rejected: usize,
        enqueued_anyway: bool,
    },
    /// Some videos of an enqueue failed (each listed before this error).
    #[error("{failed} of {videos} video(s) failed (see above){}",
        if *enqueued_anyway { "" } else { "; nothing enqueued (--strict)" })]
    VideosFailed {
        failed: usize,
        videos: usize,
        enqueued_anyway: bool,
    },
    /// A manifest line could not be read.
    #[error("manifest {path}, line {line}: {reason}")]
    Manifest {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    /// Nothing to enqueue was given.
    #[error("no input: give image files, folders, globs or --manifest FILE")]
    NoInput,
    /// Another process holds the GPU lease and `--no-wait` was given.
    #[error(
        "GPU {gpu} is held by {holder}; wait for it (drop --no-wait) or use another --gpu-name"
    )]
    GpuBusy { gpu: String, holder: String },
    /// The server refused our requests outright (wrong API key).
    #[error("{0}")]
    ServerRefused(String),
    /// One frame does not fit the server's context per slot.
    #[error(
        "the model's context per slot is too small for one frame: {detail}; give each slot more \
         with --ctx-per-slot (or --ctx-size, or -c for a server you run yourself), or lower \
         --max-tokens; no frame was failed, the frame is back in the queue"
    )]
    ContextTooSmall { detail: String },
    /// The server cannot read images.
    #[error(
        "{server} has no vision support (its /props says modalities.vision = false): \
         start llama-server with the model's --mmproj"
    )]
    NoVision { server: String },
    /// gpu-lock gave up waiting.
    #[error(
        "GPU {gpu} was not free within {waited_s} s (--timeout); `cinecut status` shows who holds it"
    )]
    GpuLockTimeout { gpu: String, waited_s: u64 },
    /// A command could not be started.
    #[error("cannot run {program} (is it installed and on PATH?)")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    /// llama-server could not be started or made ready (not retried).
    #[error(transparent)]
    Server(#[from] crate::server::ServerError),
    /// llama-server kept crashing.
    #[error(
        "llama-server crashed {crashes} times within {window_s} s; giving up (its in-flight frames went back to the queue). Its last lines:\n{lines}"
    )]
    CrashBudget {
        crashes: usize,
        window_s: u64,
        lines: String,
    },
    /// `--vram-check required` on a machine without an NVIDIA driver.
    #[error(
        "--vram-check required, but {0}; install the NVIDIA driver, or use --vram-check auto to run on CPU"
    )]
    NoGpu(String),
    /// Not enough free VRAM within --vram-wait.
    #[error(
        "GPU {index} has {free_mib} MiB free, {need_mib} MiB needed (--vram-need), after waiting {waited_s} s; memory is held by: {holders}"
    )]
    VramShort {
        index: u32,
        free_mib: u64,
        need_mib: u64,
        waited_s: u64,
        holders: String,
    },
    /// A video could not be turned into frames.
    #[error("video {path}: {reason}")]
    Video { path: PathBuf, reason: String },
    /// Another connection held the write lock longer than `--lock-wait`.
    #[error(
        "database {path} is locked by another connection (waited {waited_s} s, --lock-wait); \
         `fuser -v {path}` or `lsof {path}` names the process: end its transaction (COMMIT or ROLLBACK, \
         or close DB Browser's edit), then run the same command again (nothing was changed)"
    )]
    DatabaseLocked { path: PathBuf, waited_s: u64 },
    /// The file system holding the database is full.
    #[error(
        "disk full while writing {path}: free space and run the same command again (nothing was lost)"
    )]
    DiskFull { path: PathBuf },
    /// The database file or its folder cannot be written.
    #[error(
        "database {path} is read-only (the file, its -wal/-shm files or its folder cannot be written); \
         fix the permissions or pass another --db"
    )]
    DatabaseReadOnly { path: PathBuf },
    /// SQLite found the file damaged.
    #[error(
        "database {path} is corrupt ({detail}); recover what it holds with \
         `sqlite3 {path} .recover | sqlite3 recovered.db`, then use --db recovered.db"
    )]
    DatabaseCorrupt { path: PathBuf, detail: String },
    /// The GPU lease was taken over (this worker was presumed dead).
    #[error("the GPU lease {gpu} was taken over by another process while {during}")]
    LeaseLost { gpu: String, during: &'static str },
    /// A database error without a more specific meaning.
    #[error("database error")]
    Sqlx(#[from] sqlx::Error),
    /// An I/O error with the path involved.
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether this is the PostgreSQL connection going away (the server
    /// restarting, the network dropping): the worker reconnects and takes
    /// its lease again rather than stopping. What it had in flight is
    /// requeued by the new lease epoch or by job-lease expiry.
    pub fn is_connection_lost(&self) -> bool {
        let Error::Postgres {
            source: cinecut_postgres::Error::Sql(e),
            ..
        } = self
        else {
            return false;
        };
        match e {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_) => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|c| {
                // 08: connection exception; 57P01-03: admin or crash
                // shutdown, cannot connect now.
                c.get(..2) == Some("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03")
            }),
            _ => false,
        }
    }

    /// [`Error::explain_database`] for one cause in an error chain, which
    /// may be our error wrapping the driver's or the driver's own.
    pub fn explain_cause(
        cause: &(dyn std::error::Error + 'static),
        path: &std::path::Path,
        lock_wait_s: u64,
    ) -> Option<Error> {
        let sqlx_err = match cause.downcast_ref::<Error>() {
            Some(Error::Sqlx(e)) => Some(e),
            _ => cause.downcast_ref::<sqlx::Error>(),
        }?;
        Error::explain_database(sqlx_err, path, lock_wait_s)
    }

    /// The error a person can act on for a database failure at `path`:
    /// locked, disk full, read-only or corrupt; `None` for anything else.
    /// The driver's own text is not repeated.
    pub fn explain_database(
        err: &sqlx::Error,
        path: &std::path::Path,
        lock_wait_s: u64,
    ) -> Option<Error> {
        let path = path.to_path_buf();
        if let sqlx::Error::Io(io) = err {
            return is_disk_full(io).then_some(Error::DiskFull { path });
        }
        let sqlx::Error::Database(db) = err else {
            return None;
        };
        let code: i32 = db.code()?.parse().ok()?;
        Some(match (code & 0xff, code) {
            (5 | 6, _) => Error::DatabaseLocked {
                path,
                waited_s: lock_wait_s,
            },
            // SQLITE_FULL, or SQLITE_IOERR_SHMSIZE: no room for the -shm file.
            (13, _) | (10, 4874) => Error::DiskFull { path },
            (8, _) => Error::DatabaseReadOnly { path },
            (11, _) | (26, _) => Error::DatabaseCorrupt {
                path,
                detail: db.message().to_string(),
            },
            _ => return None,
        })
    }
}

/// ENOSPC or EDQUOT.
pub fn is_disk_full(io: &std::io::Error) -> bool {
    matches!(io.raw_os_error(), Some(28) | Some(122))
}
