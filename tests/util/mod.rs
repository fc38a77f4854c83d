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

pub const FAKE: &str = env!("CARGO_BIN_EXE_fake-llama-server");

/// The fake llama-server, killed on drop.
pub struct FakeServer {
    pub child: std::process::Child,
    pub port: u16,
}

impl FakeServer {
    pub fn start(env: &Env, args: &[&str]) -> FakeServer {
        Self::start_on(env, 0, args)
    }

    #[allow(clippy::zombie_processes)] // waited for in Drop
    pub fn start_on(env: &Env, port: u16, args: &[&str]) -> FakeServer {
        let port_file = env.path().join(format!("fake-port-{}", uuid_like()));
        let child = Command::new(FAKE)
            .args(["--port", &port.to_string(), "--port-file"])
            .arg(&port_file)
            .args(args)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                return FakeServer {
                    child,
                    port: p.trim().parse().unwrap(),
                };
            }
            assert!(
                std::time::Instant::now() < deadline,
                "fake server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

impl Env {
    /// Writes `n` distinct real PNG images `img_1.png` … into `folder`.
    pub fn images(&self, folder: &str, n: usize) -> PathBuf {
        let dir = self.dir.path().join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 1..=n {
            let img = image::RgbImage::from_fn(32, 24, |x, y| {
                image::Rgb([(x * 8) as u8, (y * 10) as u8, (i * 37 % 256) as u8])
            });
            img.save(dir.join(format!("img_{i}.png"))).unwrap();
        }
        dir
    }

    /// Enqueues the images of `folder` (made with [`Env::images`]).
    pub fn enqueue_images(&self, folder: &str, n: usize, extra: &[&str]) -> PathBuf {
        let dir = self.images(folder, n);
        let mut c = self.cmd(["enqueue"]);
        c.arg(&dir).args(extra);
        let o = c.output().unwrap();
        assert_exit(&o, 0);
        dir
    }

    /// `cinecut worker --server-url URL ARGS…` with stderr into `log`, not yet run.
    pub fn worker(&self, url: &str, log: &str, args: &[&str]) -> Command {
        let mut c = self.cmd(["worker", "--server-url", url]);
        c.args(args);
        c.stdout(std::process::Stdio::null());
        c.stderr(std::fs::File::create(self.dir.path().join(log)).unwrap());
        c
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    pub async fn strings(&self, sql: &'static str) -> Vec<String> {
        let pool = self.pool().await;
        let v: Vec<String> = sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap();
        pool.close().await;
        v
    }
}

/// Sends `sig` to `child`.
pub fn signal(child: &std::process::Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

/// Waits for `child` at most `limit`; kills it and panics past that.
pub fn wait_for(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
