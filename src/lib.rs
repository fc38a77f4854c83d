//! cinecut: a SQLite job queue of film frames and a worker that describes
//! each with a local vision-language model.
//!
//! - [`cli`]: the command line; [`app`]: runs a parsed command.
//! - [`db`]: every SQL statement (pool and pragmas, queue, status).
//! - [`ingest`]: inputs to frames (folders, globs, manifests).
//! - [`error`]: the error enum.

pub mod app;
pub mod cli;
pub mod db;
pub mod engine;
pub mod error;
pub mod gpu;
pub mod ingest;
pub mod process;
pub mod scene;
pub mod server;
pub mod vision;
pub mod worker;

/// The schema migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub use error::{Error, Result};
