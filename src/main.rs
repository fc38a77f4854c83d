//! Parse, set up tracing, run, map the error to an exit code.

use std::process::ExitCode;

use cinecut::cli::{Cli, LogFormat};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cinecut::cmd::run(cli));
    // A blocking task still waiting (the open lock, when a signal came
    // first) must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The log level without RUST_LOG: cinecut's own messages from `info` up;
/// sqlx's notes on statements (one slower than a second is a warning with
/// its whole SQL) only for whoever asks with RUST_LOG, as cinecut says
/// itself what a wait is for.
const DEFAULT_LOG: &str = "info,sqlx::query=error";

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    // Colour only for a person at a terminal, and never with NO_COLOR set.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    /// A log written into memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_default_level_keeps_sqlx_statement_notes_out_and_ours_in() {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(super::DEFAULT_LOG))
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            // As sqlx-core's QueryLogger writes it.
            tracing::warn!(
                target: "sqlx::query",
                summary = "INSERT INTO file_hashes (path, …",
                "slow statement: execution time exceeded alert threshold"
            );
            tracing::warn!(target: "cinecut::db", "the database is write-locked by another connection");
            tracing::info!(target: "cinecut::worker", "worker started");
            tracing::error!(target: "sqlx::query", "a statement sqlx itself failed");
        });
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("slow statement"), "{text}");
        assert!(text.contains("write-locked"), "{text}");
        assert!(text.contains("worker started"), "{text}");
        assert!(
            text.contains("sqlx itself failed"),
            "errors still show: {text}"
        );
    }
}
