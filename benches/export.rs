//! Exporting 1,000,000 descriptions: time and the exporter's peak RSS for
//! each `cinecut results` format, and the plan of a query by film and frame.
//!
//! Run: `cargo bench --bench export` (ROWS=N to change).

use std::process::{Command, Stdio};
use std::time::Instant;

use cinecut::db::{Db, Durability};

/// The child's peak resident set (VmHWM), read while it runs.
fn watch_peak(
    pid: u32,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                for line in status.lines().filter(|l| l.starts_with("VmHWM:")) {
                    let kib: u64 = line
                        .split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    peak = peak.max(kib);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        peak
    })
}

fn main() {
    let n: i64 = std::env::var("ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("big.db");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = Instant::now();
    rt.block_on(async {
        let db = Db::open(&db_path, Durability::Normal).await.unwrap();
        let pool = db.pool();
        let mut tx = pool.begin().await.unwrap();
        for sql in [
            "INSERT INTO films (id, title, frame_count, created_at) VALUES (1, 'big film', ?1, 0)",
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?1)
             INSERT INTO frames (id, film_id, frame_index, pts_ms, path, created_at)
             SELECT i, 1, i - 1, (i - 1) * 40, '/films/big/frame_' || i || '.jpg', 0 FROM s",
            // A new database has its unbound pass `default` (id 1).
            "UPDATE passes SET model = 'bench' WHERE id = 1 AND ?1 > 0",
            "INSERT INTO jobs (id, frame_id, pass_id, film_id, state, created_at, updated_at)
             SELECT id, id, 1, 1, 'done', 0, 0 FROM frames WHERE ?1 > 0",
            "INSERT INTO film_passes (film_id, pass_id, job_count) VALUES (1, 1, ?1)",
            "INSERT INTO descriptions (job_id, frame_id, pass_id, visual_content, mood, action, setting, fields,
                                       model, prompt_version, created_at)
             SELECT id, id, 1, v, m, a, s, json_object('visual_content', v, 'mood', m, 'action', a, 'setting', s),
                    'bench', 1, 0
             FROM (SELECT id, 'a figure by a rain-streaked window, frame ' || id AS v, 'tense, \"quiet\"' AS m,
                          'someone waits,
             then turns' AS a, 'a small room at night' AS s FROM frames WHERE ?1 > 0)",
        ] {
            sqlx::query(sql).bind(n).execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
        // Start from a checkpointed file, as a long-lived database would be.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(pool).await.unwrap();
        db.close().await;
    });
    println!("rows {n} (made in {:.1} s)", t.elapsed().as_secs_f64());
    let bin = env!("CARGO_BIN_EXE_cinecut");
    for format in ["jsonl", "csv", "table"] {
        let t = Instant::now();
        let mut child = Command::new(bin)
            .arg("--db")
            .arg(&db_path)
            .args(["results", "--format", format])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = watch_peak(child.id(), stop.clone());
        let mut stdout = child.stdout.take().unwrap();
        let bytes = std::io::copy(&mut stdout, &mut std::io::sink()).unwrap();
        // Read VmHWM once more before the child is reaped.
        std::thread::sleep(std::time::Duration::from_millis(60));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let peak = watcher.join().unwrap();
        assert!(child.wait().unwrap().success());
        let secs = t.elapsed().as_secs_f64();
        println!(
            "results --format {format:<6} {secs:6.2} s  {:>9.0} rows/s  {:>6} MiB out  peak RSS {} MiB",
            n as f64 / secs,
            bytes / (1024 * 1024),
            peak / 1024
        );
    }
    let out = Command::new("sqlite3")
        .arg(&db_path)
        .arg("EXPLAIN QUERY PLAN SELECT pts_ms, visual_content FROM frame_descriptions WHERE film = 'big film' ORDER BY frame_index LIMIT 10")
        .output()
        .unwrap();
    println!(
        "plan of a query by film in frame order:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let t = Instant::now();
    let ok = Command::new(bin)
        .arg("--db")
        .arg(&db_path)
        .arg("status")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    println!(
        "cinecut status on {n} done jobs: {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
}
