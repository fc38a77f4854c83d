//! Worker processes on both backends, side by side in one run: real
//! `cinecut worker` processes with the no-op describer (`--noop-describer`:
//! every frame answered at once, no model, no server), so what is measured
//! is the queue as a worker drives it — claim, record, lease renewals,
//! wake-ups — plus each process's start. 1 worker on SQLite, then 1 and 4
//! workers (4 GPUs) on PostgreSQL, each draining its own pass of the same
//! JOBS frames; also each enqueue. Both durable: SQLite with the default
//! `--durability full`, PostgreSQL with fsync and synchronous_commit on
//! (its defaults). Every run is checked: each job done once.
//!
//! Run: `cargo bench --bench processes` (JOBS=N, PARALLEL=N to change).
//! It starts a throwaway PostgreSQL cluster of its own
//! (scripts/pg-cluster.sh) and removes it after. Claim latency under 4
//! workers is in the queue bench (`cargo bench -p cinecut-postgres`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

#[path = "../postgres/tests/util.rs"]
mod pg_util;

const BIN: &str = env!("CARGO_BIN_EXE_cinecut");

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `cinecut --db DB ARGS…`, its output checked.
fn cinecut(db: &str, args: &[&str]) -> String {
    let o = Command::new(BIN)
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("CINECUT_DB")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "cinecut {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Empty frame files and a manifest of them (with --no-dedupe a frame is
/// only checked for existence at enqueue, and the no-op describer reads
/// nothing).
fn frames(dir: &Path, n: usize) -> PathBuf {
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let manifest = dir.join("frames.jsonl");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&manifest).unwrap());
    for i in 0..n {
        let path = frames.join(format!("frame_{i:07}.jpg"));
        std::fs::File::create(&path).unwrap();
        writeln!(
            w,
            "{{\"path\":{:?},\"frame_index\":{i}}}",
            path.display().to_string()
        )
        .unwrap();
    }
    manifest
}

/// Enqueues the manifest for `passes`; seconds.
fn enqueue(db: &str, manifest: &Path, passes: &[&str]) -> f64 {
    let mut args = vec!["enqueue", "--no-dedupe", "--film", "bench"];
    for p in passes {
        args.extend(["--pass", p]);
    }
    let manifest = manifest.display().to_string();
    args.extend(["--manifest", &manifest]);
    let started = Instant::now();
    cinecut(db, &args);
    started.elapsed().as_secs_f64()
}

/// `workers` worker processes (one GPU each) on pass `pass` until it is
/// empty; seconds from the first start to the last exit.
fn drain(db: &str, pass: &str, workers: usize, parallel: usize, logs: &Path) -> f64 {
    let parallel = parallel.to_string();
    let started = Instant::now();
    let children: Vec<(Child, PathBuf)> = (0..workers)
        .map(|i| {
            let log = logs.join(format!("{pass}-{i}.log"));
            let child = Command::new(BIN)
                .arg("--db")
                .arg(db)
                .args([
                    "worker",
                    "--noop-describer",
                    "--until-empty",
                    "--pass",
                    pass,
                ])
                .args([
                    "--parallel",
                    &parallel,
                    "--gpu-name",
                    &format!("{pass}-gpu{i}"),
                ])
                .env_remove("CINECUT_DB")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            (child, log)
        })
        .collect();
    for (mut child, log) in children {
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    started.elapsed().as_secs_f64()
}

/// Every job of pass `pass` done (once each: a job is one row).
fn check_done(db: &str, pass: &str, jobs: usize) {
    let status: serde_json::Value =
        serde_json::from_str(&cinecut(db, &["status", "--json", "--pass", pass])).unwrap();
    let done = status["films"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["pass"] == pass)
        .map(|f| f["done"].as_u64().unwrap());
    assert_eq!(done, Some(jobs as u64), "{status}");
}

fn main() {
    let jobs = env_or("JOBS", 20_000);
    let parallel = env_or("PARALLEL", 16);
    let work = tempfile::Builder::new()
        .prefix("cinecut-bench-processes-")
        .tempdir()
        .unwrap();
    let manifest = frames(work.path(), jobs);
    println!("{jobs} jobs, --parallel {parallel}, no-op describer, worker processes");

    let sqlite = work.path().join("bench.db").display().to_string();
    let sqlite_enqueue = enqueue(&sqlite, &manifest, &["one"]);
    let sqlite_1 = drain(&sqlite, "one", 1, parallel, work.path());
    check_done(&sqlite, "one", jobs);

    // The cluster is durable, as a production one is.
    // SAFETY: set before any thread starts.
    unsafe { std::env::set_var("CINECUT_PG_FSYNC", "on") };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pg = rt.block_on(pg_util::TestPg::private());
    let pg_enqueue = enqueue(&pg.url, &manifest, &["one", "four"]);
    let pg_1 = drain(&pg.url, "one", 1, parallel, work.path());
    check_done(&pg.url, "one", jobs);
    let pg_4 = drain(&pg.url, "four", 4, parallel, work.path());
    check_done(&pg.url, "four", jobs);

    let rate = |s: f64| jobs as f64 / s;
    println!();
    println!("| | seconds | jobs/s | vs SQLite, 1 worker |");
    println!("|---|---|---|---|");
    for (name, s) in [
        ("SQLite, 1 worker process", sqlite_1),
        ("PostgreSQL, 1 worker process", pg_1),
        ("PostgreSQL, 4 worker processes", pg_4),
    ] {
        println!(
            "| {name} | {s:.2} | {:.0} | {:.2} |",
            rate(s),
            rate(s) / rate(sqlite_1)
        );
    }
    println!(
        "| PostgreSQL, 4 workers / 1 worker | | | {:.2} |",
        rate(pg_4) / rate(pg_1)
    );
    println!();
    println!(
        "enqueue of {jobs} frames: SQLite {:.0} frames/s (1 pass); PostgreSQL {:.0} frames/s (2 passes, {:.0} jobs/s)",
        rate(sqlite_enqueue),
        rate(pg_enqueue),
        2.0 * rate(pg_enqueue)
    );
    drop(pg);
}
