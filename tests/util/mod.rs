//! Helpers shared by the integration tests: temp folders with real database
//! files, the cinecut binary, and generated frames.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sqlx::SqlitePool;
use sqlx::sqlite::SqliteConnectOptions;

pub const BIN: &str = env!("CARGO_BIN_EXE_cinecut");

/// A temp folder holding a database file (never `:memory:`).
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::Builder::new()
                .prefix("cinecut-test-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("cinecut.db")
    }

    /// `cinecut --db <db> ARGS…`, not yet run.
    pub fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = Command::new(BIN);
        c.arg("--db")
            .arg(self.db())
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("CINECUT_DB");
        c
    }

    /// Runs cinecut and returns its output.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd(args).output().unwrap()
    }

    /// Writes `n` small files named `frame_1.jpg` … into `folder` (created).
    pub fn frames(&self, folder: &str, n: usize) -> PathBuf {
        let dir = self.dir.path().join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 1..=n {
            std::fs::write(
                dir.join(format!("frame_{i}.jpg")),
                b"not decoded at enqueue",
            )
            .unwrap();
        }
        dir
    }

    /// A read-only pool on the test database for assertions.
    pub async fn pool(&self) -> SqlitePool {
        let opts = SqliteConnectOptions::new()
            .filename(self.db())
            .read_only(true);
        SqlitePool::connect_with(opts).await.unwrap()
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        let pool = self.pool().await;
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        n
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code and shows both streams when it differs.
#[track_caller]
pub fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit code\n--- stdout\n{}\n--- stderr\n{}",
        stdout(o),
        stderr(o)
    );
}
