//! cinecut: a SQLite job queue of film frames and a worker that describes
//! each with a local vision-language model. ARCHITECTURE.md is the map.
//!
//! The command line, top down:
//! - [`cli`]: the flags (clap); [`cmd`]: one file per command, which turns
//!   flags into configs ([`config`]), calls the library and prints.
//!
//! The library (no clap below this line):
//! - [`ingest`]: inputs (images, folders, globs, manifests, videos) into
//!   films, frames and jobs.
//! - [`worker`]: the loop under a GPU lease: claim, describe, record.
//! - [`engine`]: what the worker describes with: a server someone else runs,
//!   or a supervised llama-server ([`server`]) with a VRAM check ([`gpu`]),
//!   its model given by path or by name ([`hf`]).
//! - [`vision`]: one frame to one validated [`profile::Answer`] over
//!   HTTP, and the [`vision::Describer`] trait the worker speaks; [`frame`]
//!   makes a frame file something any server can read.
//! - [`db`]: every SQL statement, behind one boundary.
//! - [`process`]: facts about other processes (alive? started when?).
//! - [`error`]: the error enum.

pub mod cli;
pub mod cmd;
pub mod config;
pub mod db;
pub mod engine;
pub mod error;
pub mod frame;
pub mod gguf;
pub mod gpu;
pub mod hf;
pub mod ingest;
pub mod process;
pub mod profile;
pub mod report;
pub mod server;
pub mod vision;
pub mod weights;
pub mod worker;

/// The schema migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub use error::{Error, Result};
