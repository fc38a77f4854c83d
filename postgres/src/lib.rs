//! cinecut's queue on PostgreSQL: many GPU hosts, one queue.
//!
//! The same model as the SQLite queue (films, frames, passes, jobs, GPU
//! leases with fencing epochs, attempts, descriptions) with what a shared
//! server gives and needs:
//!
//! - **One clock, the database's.** Lease expiry, job leases and
//!   `run_after` are `timestamptz` values made and compared with
//!   `clock_timestamp()` on the server; no host's clock decides anything, so
//!   hosts whose clocks drift neither steal a live lease nor keep a dead one.
//! - **Claims that do not wait on each other**: `FOR UPDATE SKIP LOCKED`.
//! - **GPU leases keyed by GPU UUID** (globally unique), each holder known by
//!   its host identity ([`host::HostId`]: hostname + boot id) and pid: a dead
//!   holder on the same host is replaced at once, one on another host only
//!   when its lease expires.
//! - **Wake-ups through `LISTEN/NOTIFY`** instead of polling.
//!
//! Migrations (`migrations/postgres/`) run on [`PgQueue::connect`]; sqlx's
//! migrator holds an advisory lock while it does, so hosts starting at once
//! do not race.

pub mod dedupe;
pub mod dialogue;
pub mod films;
pub mod host;
pub mod lease;
pub mod passes;
pub mod queue;
pub mod report;
pub mod workers;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error("PostgreSQL migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// How long the server lets one of our sessions sit in an open
/// transaction before it ends it (our transactions take milliseconds).
pub const IDLE_IN_TRANSACTION: &str = "5s";

/// The channel enqueue notifies when it adds jobs.
pub const JOBS_CHANNEL: &str = "cinecut_jobs";

/// A connection pool to one cinecut database on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgQueue {
    pool: PgPool,
}

impl PgQueue {
    /// Connects to `url` (`postgres://…`) and brings its schema up to date.
    pub async fn connect(url: &str) -> Result<PgQueue> {
        let options: PgConnectOptions = url.parse()?;
        // A session that stops in the middle of a transaction (a paused or
        // frozen worker, a host that lost the network) would hold its row
        // locks, and with them the GPU lease's row, for good: the server
        // ends it after this long, and a takeover goes on.
        // The server's notices (a migration's "relation … already exists,
        // skipping" on every start) are not the user's news: warnings and
        // errors only.
        let options = options.application_name("cinecut").options([
            ("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION),
            ("client_min_messages", "warning"),
        ]);
        // One connection first: a server that is down or a password that
        // is wrong is its own error at once, not a pool that times out
        // after retrying for `acquire_timeout`.
        sqlx::Connection::close(sqlx::ConnectOptions::connect(&options).await?).await?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Ok(PgQueue { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The database's own time, in ms since the epoch (what every lease
    /// and delay is measured against).
    pub async fn now_ms(&self) -> Result<i64> {
        Ok(sqlx::query_scalar!(
            r#"SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS "ms!""#
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
