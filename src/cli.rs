//! Command-line definitions (clap derive) and nothing else.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::db::Durability;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  runtime error (bad input, missing tool, database or server failure)
  2  usage error (unknown flag, bad value)";

/// Describe every keyframe of a film with a local vision-language model and
/// keep the results in SQLite.
#[derive(Debug, Parser)]
#[command(name = "cinecut", version, after_help = EXIT_CODES, propagate_version = true)]
pub struct Cli {
    /// SQLite database file (created if missing).
    #[arg(long, global = true, env = "CINECUT_DB", default_value = "cinecut.db")]
    pub db: PathBuf,

    /// SQLite durability: `full` fsyncs every commit (no finished description
    /// is lost on power failure), `normal` is faster.
    #[arg(long, global = true, value_enum, env = "CINECUT_DURABILITY", default_value_t = Durability::Full)]
    pub durability: Durability,

    /// Log format on stderr. Verbosity follows RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enqueue frames (image files, folders, globs, a manifest): one job per frame.
    #[command(after_help = "\
A folder's image files are taken in natural order (frame2 before frame10).
Re-enqueuing frames a film already has adds nothing. Frames that are missing
or unreadable are listed and skipped; the exit code is then 1.")]
    Enqueue(EnqueueArgs),
    /// Show progress per film, failures, the GPU lease holder and workers.
    Status(StatusArgs),
    /// Put failed jobs back in the queue.
    Retry(RetryArgs),
    /// Cancel a film's queued jobs.
    Cancel(CancelArgs),
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// Image files, folders of images, or glob patterns (quote them).
    pub inputs: Vec<String>,

    /// A manifest of frames: JSON Lines or CSV with `path` and optional
    /// `frame_index`, `pts_ms`. Relative paths are relative to the manifest.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,

    /// Film title (default: the folder's name, or the manifest's name).
    #[arg(long, value_name = "TITLE")]
    pub film: Option<String>,

    /// Enqueue nothing if any frame is rejected.
    #[arg(long)]
    pub strict: bool,

    /// Higher priorities are claimed first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i64,

    /// Tries per frame when the model answers badly.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i64).range(1..=100))]
    pub max_attempts: i64,

    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this film.
    #[arg(long, value_name = "TITLE")]
    pub film: Option<String>,

    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Requeue the failed jobs (with fresh attempts).
    #[arg(long, required = true)]
    pub failed: bool,

    /// Only this film's.
    #[arg(long, value_name = "TITLE")]
    pub film: Option<String>,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The film whose queued jobs to cancel.
    #[arg(long, value_name = "TITLE")]
    pub film: String,
}
