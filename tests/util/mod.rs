//! Helpers shared by the integration tests: temp folders with real database
//! files, the cinecut binary, and generated frames.

#![allow(dead_code)]

pub mod browser;
pub mod pg;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sqlx::SqlitePool;
use sqlx::sqlite::SqliteConnectOptions;

pub const BIN: &str = env!("CARGO_BIN_EXE_cinecut");

/// The database a test's commands run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A real SQLite file in the test's folder (never `:memory:`).
    Sqlite,
    /// A PostgreSQL database of the test's own.
    Postgres,
}

/// A temp folder for a test's files, and the database its commands run
/// on: a SQLite file in the folder, or a PostgreSQL database of its own.
/// Every read through it fails the test with its query and error, never
/// a quiet 0.
pub struct Env {
    pub dir: tempfile::TempDir,
    pg: Option<pg::Pg>,
}

/// Runs one test body on both backends: for each `body`, a function
/// `fn body(env: &Env)` (or `async fn`, after `async`), a module `body`
/// holding the tests `sqlite` and `postgres`. A test for one backend only
/// is written without it and says why.
macro_rules! on_both {
    (async $($body:ident),+ $(,)?) => {$(
        mod $body {
            #[tokio::test]
            async fn sqlite() {
                super::$body(&$crate::util::Env::new()).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$body(&$crate::util::Env::postgres()).await
            }
        }
    )+};
    ($($body:ident),+ $(,)?) => {$(
        mod $body {
            #[test]
            fn sqlite() {
                super::$body(&$crate::util::Env::new())
            }
            #[test]
            fn postgres() {
                super::$body(&$crate::util::Env::postgres())
            }
        }
    )+};
}
pub(crate) use on_both;

impl Env {
    /// A temp folder and a SQLite database file in it.
    pub fn new() -> Env {
        Env {
            dir: tempfile::Builder::new()
                .prefix("cinecut-test-")
                .tempdir()
                .unwrap(),
            pg: None,
        }
    }

    /// A temp folder whose commands run on a PostgreSQL database of its own.
    pub fn postgres() -> Env {
        Env {
            pg: Some(pg::Pg::new()),
            ..Env::new()
        }
    }

    pub fn on(backend: Backend) -> Env {
        match backend {
            Backend::Sqlite => Env::new(),
            Backend::Postgres => Env::postgres(),
        }
    }

    pub fn backend(&self) -> Backend {
        match self.pg {
            Some(_) => Backend::Postgres,
            None => Backend::Sqlite,
        }
    }

    /// The PostgreSQL database (for a read only PostgreSQL has).
    #[track_caller]
    pub fn pg(&self) -> &pg::Pg {
        self.pg.as_ref().expect("a test on PostgreSQL")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The SQLite file (where a SQLite database is).
    pub fn db(&self) -> PathBuf {
        self.dir.path().join("cinecut.db")
    }

    /// What `--db` names: the SQLite file or the PostgreSQL URL.
    pub fn db_arg(&self) -> std::ffi::OsString {
        match &self.pg {
            Some(pg) => pg.url().into(),
            None => self.db().into(),
        }
    }

    /// `cinecut --db <db> ARGS…`, not yet run; it runs in the test's folder
    /// (what it writes beside itself, such as a film's --frames-dir on
    /// PostgreSQL, stays there).
    pub fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = Command::new(BIN);
        c.arg("--db").arg(self.db_arg()).current_dir(self.path());
        c.args(args)
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

    /// A read-only sqlx pool on the SQLite file, for a test that reads
    /// what only SQLite has.
    pub async fn pool(&self) -> SqlitePool {
        assert_eq!(self.backend(), Backend::Sqlite, "a pool on SQLite's file");
        let opts = SqliteConnectOptions::new()
            .filename(self.db())
            .read_only(true);
        SqlitePool::connect_with(opts).await.unwrap()
    }

    /// [`Env::count_now`] for an async test.
    pub async fn count(&self, sql: &str) -> i64 {
        self.count_now(sql)
    }
}

/// Runs ffmpeg quietly (the tests make their videos with it; scripts/setup.sh
/// installs it) and asserts that it succeeded.
pub fn ffmpeg<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) {
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .status()
        .expect(
            "ffmpeg not found: install it with `bash scripts/setup.sh` (Debian package ffmpeg)",
        );
    assert!(status.success(), "ffmpeg {args:?}");
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code and shows both streams when it differs.
#[track_caller]
/// Runs `commands` side by side (their output piped) and asserts each
/// exits 0.
pub fn all_succeed(commands: impl IntoIterator<Item = Command>) {
    let children: Vec<std::process::Child> = commands
        .into_iter()
        .map(|mut c| {
            c.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        assert_exit(&child.wait_with_output().unwrap(), 0);
    }
}

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
    /// Writes `n` distinct real PNG images `img_1.png` … into `folder`:
    /// noise of their own, so that no two are near-duplicates (enqueue
    /// would describe one and copy it to the other).
    pub fn images(&self, folder: &str, n: usize) -> PathBuf {
        let dir = self.dir.path().join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 1..=n {
            let img = image::RgbImage::from_fn(32, 24, |x, y| {
                let mut h = (i as u32) << 16 ^ y << 8 ^ x;
                h = h.wrapping_mul(0x9e37_79b9) ^ h >> 15;
                h = h.wrapping_mul(0x85eb_ca6b) ^ h >> 13;
                image::Rgb([h as u8, (h >> 8) as u8, (i * 37 % 256) as u8])
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

    /// [`Env::strings_now`] for an async test.
    pub async fn strings(&self, sql: &str) -> Vec<String> {
        self.strings_now(sql)
    }
}

/// Runs `cmd` with its stdout on a pseudo-terminal `columns` wide (as a
/// person's terminal is) and returns what it printed there, lines ending
/// in `\n`, and its exit status.
pub fn on_terminal(cmd: &mut Command, columns: u16) -> (String, std::process::ExitStatus) {
    use std::io::Read;
    let size = nix::pty::Winsize {
        ws_row: 50,
        ws_col: columns,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    let mut child = cmd
        .stdout(std::process::Stdio::from(pty.slave))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Our copy of the terminal's other end is closed (moved into the
    // child's stdout and dropped with `cmd`'s copy when it is replaced), so
    // reading ends (EIO) once the child exits.
    cmd.stdout(std::process::Stdio::null());
    let mut master = std::fs::File::from(pty.master);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    let status = child.wait().unwrap();
    (String::from_utf8_lossy(&out).replace("\r\n", "\n"), status)
}

impl Env {
    /// `rounds` workers in turn (stderr into `kill{round}.log`), each
    /// killed (SIGKILL) once it holds the GPU lease and `progress` has grown
    /// by a random 1 to `most` since it started (a moment of its run chosen
    /// by state, not by time; `progress` stops counting at `total`).
    pub fn kill_workers_in_turn(
        &self,
        url: &str,
        args: &[&str],
        (rounds, most, total): (usize, u64, i64),
        progress: impl Fn() -> i64,
    ) {
        let mut seed = 0x9e37_79b9_u64;
        for round in 0..rounds {
            let log = format!("kill{round}.log");
            let before = progress();
            let mut w = self.worker(url, &log, args).spawn().unwrap();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let more = 1 + (seed % most) as i64;
            wait_until(
                &format!("worker {round} to hold the lease and record {more} more"),
                std::time::Duration::from_secs(60),
                || {
                    assert!(w.try_wait().unwrap().is_none(), "{}", self.log(&log));
                    self.log(&log).contains("holding the GPU lease")
                        && progress() >= (before + more).min(total)
                },
            );
            signal(&w, nix::sys::signal::Signal::SIGKILL);
            w.wait().unwrap();
        }
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

fn cache_dir() -> PathBuf {
    std::env::var_os("CINECUT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/cinecut")
        })
}

/// The datasette that scripts/setup.sh installed into its environment.
pub fn datasette() -> PathBuf {
    let path = cache_dir().join("venv/bin/datasette");
    assert!(
        path.is_file(),
        "datasette not found ({}); install it with `bash scripts/setup.sh --tests`",
        path.display()
    );
    path
}

/// The sqlite-utils that scripts/setup.sh installed into its environment.
pub fn sqlite_utils() -> PathBuf {
    let path = cache_dir().join("venv/bin/sqlite-utils");
    assert!(
        path.is_file(),
        "sqlite-utils not found ({}); install it with `bash scripts/setup.sh --tests`",
        path.display()
    );
    path
}

/// The llama-server that scripts/setup.sh installed (or LLAMA_SERVER).
pub fn llama_server() -> PathBuf {
    let from_env = std::env::var_os("LLAMA_SERVER").map(PathBuf::from);
    let from_setup = std::fs::read_to_string(cache_dir().join("env.sh"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("export LLAMA_SERVER=")
                    .map(|v| PathBuf::from(v.trim_matches('"')))
            })
        });
    let path = from_env.or(from_setup).unwrap_or_default();
    assert!(
        path.is_file(),
        "llama-server not found ({}); install it with `bash scripts/setup.sh` (or set LLAMA_SERVER)",
        path.display()
    );
    path
}

/// The tiny test model pair: (text model, mmproj, mismatched mmproj),
/// generated once into the cache by tests/gen_tiny_model.py.
pub fn tiny_model() -> (PathBuf, PathBuf, PathBuf) {
    let [a, b, c, ..] = tiny_model_files();
    (a, b, c)
}

/// A second tiny text model, other weights of the same shape (so the same
/// mmproj fits it): another model for tests of several passes.
pub fn second_tiny_model() -> PathBuf {
    let [.., other, _] = tiny_model_files();
    other
}

/// The tiny text model named as a LLaVA model and written without a chat
/// template (the mmproj of [`tiny_model`] fits it).
pub fn templateless_llava_model() -> PathBuf {
    let [.., llava] = tiny_model_files();
    llava
}

fn tiny_model_files() -> [PathBuf; 5] {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gen_tiny_model.py");
    let text = std::fs::read(&script).unwrap();
    let digest = text.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    let dir = cache_dir().join(format!("tiny-model-{digest:016x}"));
    let files = [
        "tiny-text.gguf",
        "tiny-mmproj.gguf",
        "tiny-mmproj-mismatch.gguf",
        "tiny-text-b.gguf",
        "tiny-llava.gguf",
    ]
    .map(|f| dir.join(f));
    if !files.iter().all(|f| f.is_file()) {
        let python = cache_dir().join("venv/bin/python");
        assert!(
            python.is_file(),
            "the test model needs Python with gguf and numpy; run `bash scripts/setup.sh`"
        );
        let tmp = cache_dir().join(format!(
            "tiny-model-tmp-{}-{}",
            std::process::id(),
            uuid_like()
        ));
        let status = Command::new(&python)
            .arg(&script)
            .arg(&tmp)
            .status()
            .unwrap();
        assert!(status.success(), "tests/gen_tiny_model.py failed");
        // Another test process may have won the race; either copy is the same.
        if std::fs::rename(&tmp, &dir).is_err() {
            std::fs::remove_dir_all(&tmp).ok();
        }
    }
    files
}

/// Pids of processes whose command line contains `needle`.
pub fn pids_with(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(false);
        if cmd.contains(needle) && !zombie && pid as u32 != std::process::id() {
            out.push(pid);
        }
    }
    out
}

/// Polls `condition` until it holds, at most `limit`; panics naming `what`
/// otherwise. Tests wait for state through this, never for a fixed time.
#[track_caller]
/// Waits until `n` descriptions are recorded (the database made by the
/// command itself, perhaps) while `child`, logging to `log`, still runs.
pub fn wait_for_descriptions_while_running(
    env: &Env,
    child: &mut std::process::Child,
    log: &str,
    n: i64,
) {
    wait_until(
        &format!("{n} frames described"),
        std::time::Duration::from_secs(60),
        || {
            assert!(
                child.try_wait().unwrap().is_none(),
                "finished too soon: {}",
                env.log(log)
            );
            env.count_if_ready("SELECT count(*) FROM descriptions")
                .is_some_and(|done| done >= n)
        },
    );
}

pub fn wait_until(what: &str, limit: std::time::Duration, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "waited {limit:?} for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

impl Env {
    /// The SQLite file, opened read-only with a wait for a writer's lock.
    #[track_caller]
    fn sqlite(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open_with_flags(
            self.db(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", self.db().display()));
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        conn
    }

    /// The one number `sql` selects (one row, one column), from any test
    /// thread; a query that fails, or finds no row, fails the test.
    #[track_caller]
    pub fn count_now(&self, sql: &str) -> i64 {
        match &self.pg {
            Some(pg) => pg.count(sql),
            None => self
                .sqlite()
                .query_row(sql, [], |r| r.get(0))
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
        }
    }

    /// Like [`Env::count_now`], but `None` while the database or its schema
    /// does not exist yet (a process of the test is still creating it).
    #[track_caller]
    pub fn count_if_ready(&self, sql: &str) -> Option<i64> {
        if let Some(pg) = &self.pg {
            return pg.count_if_ready(sql);
        }
        if !self.db().exists() {
            return None;
        }
        let conn = self.sqlite();
        let count = |q: &str| -> i64 {
            conn.query_row(q, [], |r| r.get(0))
                .unwrap_or_else(|e| panic!("{}: {q}: {e}", self.db().display()))
        };
        // The table is made before the first migration: ready once the last
        // one has committed.
        let table = count("SELECT count(*) FROM sqlite_master WHERE name = '_sqlx_migrations'");
        let applied = match table {
            0 => 0,
            _ => count("SELECT count(*) FROM _sqlx_migrations WHERE success"),
        };
        (applied == migrations("migrations")).then(|| self.count_now(sql))
    }

    /// The one text value `sql` selects.
    #[track_caller]
    pub fn string_now(&self, sql: &str) -> String {
        let all = self.strings_now(sql);
        match <[String; 1]>::try_from(all) {
            Ok([one]) => one,
            Err(all) => panic!("{sql}: {} rows, not one: {all:?}", all.len()),
        }
    }

    /// Every text value `sql` selects (one column).
    #[track_caller]
    pub fn strings_now(&self, sql: &str) -> Vec<String> {
        if let Some(pg) = &self.pg {
            return pg.strings(sql);
        }
        let conn = self.sqlite();
        let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        stmt.query_map([], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .map(|v| v.unwrap_or_else(|e| panic!("{sql}: {e}")))
            .collect()
    }

    /// SQL for time column `col` in ms since the epoch (SQLite keeps
    /// times as such numbers, PostgreSQL as `timestamptz`).
    pub fn ms(&self, col: &str) -> String {
        match self.backend() {
            Backend::Sqlite => col.to_string(),
            Backend::Postgres => format!("CAST(extract(epoch FROM {col}) * 1000 AS BIGINT)"),
        }
    }

    /// Every row `sql` selects, as column name → value (SQL's NULL, number
    /// or text; a PostgreSQL `json` column comes as its JSON: cast it to
    /// text to read the same on both).
    #[track_caller]
    pub fn rows_now(&self, sql: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
        use serde_json::Value;
        if let Some(pg) = &self.pg {
            let rows = pg.strings(&format!(
                "SELECT CAST(row_to_json(t) AS TEXT) FROM ({sql}) t"
            ));
            return rows
                .iter()
                .map(|r| serde_json::from_str(r).unwrap())
                .collect();
        }
        let conn = self.sqlite();
        let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let names: Vec<String> = stmt.column_names().iter().map(|n| n.to_string()).collect();
        let mut rows = stmt.query([]).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let mut out = Vec::new();
        while let Some(row) = rows.next().unwrap_or_else(|e| panic!("{sql}: {e}")) {
            let mut map = serde_json::Map::new();
            for (i, name) in names.iter().enumerate() {
                use rusqlite::types::ValueRef;
                let v = match row.get_ref(i).unwrap() {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(n) => n.into(),
                    ValueRef::Real(x) => x.into(),
                    ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
                    ValueRef::Blob(b) => format!("<{} bytes>", b.len()).into(),
                };
                map.insert(name.clone(), v);
            }
            out.push(map);
        }
        out
    }

    /// Makes the database and its schema, as a first enqueue or worker
    /// would (the commands that only read refuse a SQLite file that does
    /// not exist).
    pub fn make_db(&self) {
        if self.pg.is_some() {
            return assert_exit(&self.run(["status"]), 0);
        }
        let path = self.db();
        // A thread of its own: async tests call this from their runtime.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let db = cinecut::db::Db::open(&path, cinecut::db::Durability::Full)
                    .await
                    .unwrap();
                db.close().await;
            });
        })
        .join()
        .unwrap();
    }

    /// Runs `sql`, a change a test makes to the data (not to the queue).
    #[track_caller]
    pub fn execute_now(&self, sql: &str) {
        if let Some(pg) = &self.pg {
            return pg.execute(sql);
        }
        let conn = rusqlite::Connection::open(self.db()).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        conn.execute_batch(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// How many migrations the folder `dir` (under the crate) holds.
pub fn migrations(dir: &str) -> i64 {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter(|f| {
            f.as_ref()
                .is_ok_and(|f| f.path().extension().is_some_and(|x| x == "sql"))
        })
        .count() as i64
}

/// A stand-in `libnvidia-ml.so.1` (tests/fake_nvml) and its state file:
/// cinecut started with [`FakeNvml::apply`] sees the GPUs of the file.
pub struct FakeNvml {
    dir: PathBuf,
    state: PathBuf,
}

/// One fake GPU: UUID, total and free MiB, compute processes (pid, MiB).
pub struct FakeGpu<'a> {
    pub uuid: &'a str,
    pub total_mib: u64,
    pub free_mib: u64,
    pub processes: Vec<(u32, u64)>,
}

impl FakeNvml {
    /// Builds the library if needed (`cargo build -p fake-nvml`) and links
    /// it as `libnvidia-ml.so.1` into a folder of `env`.
    pub fn new(env: &Env) -> FakeNvml {
        let target = Path::new(BIN).parent().unwrap().to_path_buf();
        let lib = target.join("libfake_nvml.so");
        if !lib.is_file() {
            let status = Command::new(env!("CARGO"))
                .args(["build", "--quiet", "-p", "fake-nvml"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("cargo");
            assert!(
                status.success() && lib.is_file(),
                "the stand-in NVML did not build ({}); run `cargo build -p fake-nvml`",
                lib.display()
            );
        }
        let dir = env.path().join("fake-nvml");
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(&lib, dir.join("libnvidia-ml.so.1")).unwrap();
        FakeNvml {
            state: dir.join("state"),
            dir,
        }
    }

    /// Writes the GPUs every later NVML call sees.
    pub fn set(&self, gpus: &[FakeGpu]) {
        let text: String = gpus
            .iter()
            .map(|g| {
                let procs: Vec<String> = g
                    .processes
                    .iter()
                    .map(|(pid, mib)| format!("{pid}:{mib}"))
                    .collect();
                format!(
                    "{}|NVIDIA Fake GPU|{}|{}|{}\n",
                    g.uuid,
                    g.total_mib,
                    g.free_mib,
                    procs.join(",")
                )
            })
            .collect();
        let tmp = self.state.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, &self.state).unwrap();
    }

    /// Points `cmd`'s NVML at this stand-in.
    pub fn apply<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.env("LD_LIBRARY_PATH", &self.dir)
            .env("FAKE_NVML_STATE", &self.state)
            .env_remove("CUDA_VISIBLE_DEVICES")
    }
}

/// SIGSTOPs `child` at a moment it holds no SQLite write lock: a process
/// stopped inside its transaction keeps every other writer out until it is
/// resumed (SQLite's nature, not a takeover to test). Checked from outside
/// with a write transaction of our own; if the lock is held, resume it and
/// stop it again a moment later.
pub fn stop_outside_a_transaction(env: &Env, child: &std::process::Child) {
    for _ in 0..50 {
        signal(child, nix::sys::signal::Signal::SIGSTOP);
        let conn = rusqlite::Connection::open(env.db()).unwrap();
        conn.busy_timeout(std::time::Duration::from_millis(200))
            .unwrap();
        if conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;").is_ok() {
            return;
        }
        signal(child, nix::sys::signal::Signal::SIGCONT);
        // Paces the next try (lets the transaction finish); not a wait for state.
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    panic!("the worker held the write lock at every try");
}

/// A process a test keeps alive beside cinecut (a GPU memory holder, a
/// reused pid, a lock holder), killed when dropped, also when the test
/// fails; [`Bystander::start`] makes a `sleep 600`.
pub struct Bystander(pub std::process::Child);

impl Bystander {
    pub fn start() -> Bystander {
        Bystander(Command::new("sleep").arg("600").spawn().unwrap())
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The times (ms since the epoch) a test's script wrote with
/// `date +%s%3N` into `<marks>.start` and `<marks>.end`.
pub fn read_marks(marks: &Path) -> (i64, i64) {
    let read = |ext: &str| -> i64 {
        let path = format!("{}.{ext}", marks.display());
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .trim()
            .parse()
            .unwrap()
    };
    (read("start"), read("end"))
}
