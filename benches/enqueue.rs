//! Enqueue throughput: `cinecut enqueue --manifest` of 1,000,000 frames next
//! to the ceiling, a plain bulk insert of the same rows into a bare SQLite
//! table (prepared multi-row INSERTs, one transaction per chunk, same
//! page size and pragmas), and, for reference, the frame and job rows
//! enqueue writes into two bare tables; then the time `cinecut status` takes
//! on the result; a new pass over those frames. The manifest is enqueued
//! with the default flags (near-duplicates on: its stills are hashed by
//! the worker, not opened here), then enqueued again (it adds nothing).
//! Last, stills deduped by the worker: a folder of real 1280×720 JPEGs
//! enqueued with the default dedupe and with `--no-dedupe`, then described
//! by a worker against the fake server (instant answers), side by side:
//! what hashing costs the worker, and the model calls it saves.
//!
//! Run: `cargo bench --bench enqueue` (FRAMES=N, STILLS=N to change the
//! sizes; ONLY=stills for the last part alone). The frame files are made once under $CINECUT_CACHE/bench-frames
//! (empty, they are only checked for existence) and bench-stills-v2 (half
//! Conway's life, a generation per still; half one static picture with
//! sensor noise).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

fn cache_dir() -> PathBuf {
    std::env::var_os("CINECUT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()))
                .join(".cache/cinecut")
        })
}

fn frame_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("{:03}", i / 10_000))
        .join(format!("frame_{i:07}.jpg"))
}

fn ensure_frames(dir: &Path, n: usize) {
    let marker = dir.join(format!(".made-{n}"));
    if marker.exists() {
        return;
    }
    eprintln!(
        "making {n} empty frame files under {} (once)",
        dir.display()
    );
    for i in 0..n {
        let p = frame_path(dir, i);
        if i % 10_000 == 0 {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        }
        std::fs::File::create(&p).unwrap();
    }
    std::fs::File::create(marker).unwrap();
}

fn main() {
    if std::env::var("ONLY").as_deref() == Ok("stills") {
        let work = tempdir();
        stills(env!("CARGO_BIN_EXE_cinecut"), &work);
        std::fs::remove_dir_all(&work).ok();
        return;
    }
    let n: usize = std::env::var("FRAMES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let frames_dir = cache_dir().join("bench-frames");
    ensure_frames(&frames_dir, n);
    let work = tempdir();
    let manifest = work.join("frames.jsonl");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&manifest).unwrap());
        for i in 0..n {
            writeln!(
                w,
                "{{\"path\":{:?},\"frame_index\":{i},\"pts_ms\":{}}}",
                frame_path(&frames_dir, i).display().to_string(),
                i * 40
            )
            .unwrap();
        }
    }
    let bin = env!("CARGO_BIN_EXE_cinecut");

    // cinecut enqueue, end to end through the CLI, with the default flags;
    // then the same manifest again (nothing new).
    let db = work.join("queue.db");
    let enqueue = || {
        let t = Instant::now();
        let out = Command::new(bin)
            .arg("--db")
            .arg(&db)
            .args(["enqueue", "--manifest"])
            .arg(&manifest)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "enqueue failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed().as_secs_f64()
    };
    let enqueue_s = enqueue();
    let again_s = enqueue();

    // The ceiling: the same rows into a bare table. Beside it, for reference,
    // both rows enqueue writes per frame (its frame and its job) into two bare
    // tables: what the data costs before any index, constraint or check.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ceiling_s = rt.block_on(bare_insert(&work.join("bare.db"), &frames_dir, n, false));
    let both_s = rt.block_on(bare_insert(&work.join("bare2.db"), &frames_dir, n, true));

    // status on the enqueued database: best of 5 CLI runs.
    let status_ms = best_status_ms(bin, &db, &["status"]);

    // A second pass over the same frames (what `cinecut describe` queues
    // before its worker starts), then `status` of that pass.
    let pass_s = rt.block_on(async {
        let db = cinecut::db::Db::open(&db, cinecut::db::Durability::Full)
            .await
            .unwrap();
        sqlx::query("INSERT INTO passes (name, created_at) VALUES ('second', 0)")
            .execute(db.pool())
            .await
            .unwrap();
        let pass = cinecut::db::passes::by_name(db.pool(), "second")
            .await
            .unwrap();
        let t = Instant::now();
        let queued = cinecut::db::passes::enqueue_frames(db.pool(), pass.id, &[], 3)
            .await
            .unwrap();
        let pass_s = t.elapsed().as_secs_f64();
        assert_eq!(queued, n as u64);
        db.close().await;
        pass_s
    });
    let pass_status_ms = best_status_ms(bin, &db, &["status", "--pass", "second"]);

    let (mixed_ms, walk_ms) = rt.block_on(mixed_states(&db));
    let mixed_status_ms = best_status_ms(bin, &db, &["status", "--pass", "default"]);

    let rate = n as f64 / enqueue_s;
    let ceiling = n as f64 / ceiling_s;
    println!("frames                         {n}");
    println!(
        "cinecut enqueue --manifest     {enqueue_s:8.2} s  {rate:>10.0} frames/s  (default flags)"
    );
    println!(
        "the same manifest again        {again_s:8.2} s  {:>10.0} frames/s  (adds nothing; {:.2}x the first's time)",
        n as f64 / again_s,
        again_s / enqueue_s
    );
    println!("bare SQLite bulk insert        {ceiling_s:8.2} s  {ceiling:>10.0} frames/s");
    println!("ratio (cinecut / ceiling)      {:8.2}", rate / ceiling);
    let both = n as f64 / both_s;
    println!("bare frame + job rows, 2 tables{both_s:8.2} s  {both:>10.0} frames/s");
    println!("ratio (cinecut / both rows)    {:8.2}", rate / both);
    println!("cinecut status (best of 5)     {status_ms:8.1} ms");
    let pass_rate = n as f64 / pass_s;
    println!("new pass over those frames     {pass_s:8.2} s  {pass_rate:>10.0} jobs/s");
    println!("ratio (new pass / enqueue)     {:8.2}", pass_rate / rate);
    println!("status --pass (best of 5)      {pass_status_ms:8.1} ms");
    println!("states mixed (one UPDATE)      {:8.2} s", mixed_ms / 1000.0);
    println!("status, mixed (best of 5)      {mixed_status_ms:8.1} ms");
    println!("the same counts by index walk  {walk_ms:8.1} ms  (how status counted before 0017)");
    println!(
        "ratio (status / index walk)    {:8.2}",
        mixed_status_ms / walk_ms
    );
    stills(bin, &work);
    std::fs::remove_dir_all(&work).ok();
}

/// The best of 5 runs of `cinecut status ARGS` on `db`, in milliseconds
/// (whole process).
fn best_status_ms(bin: &str, db: &Path, args: &[&str]) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let out = Command::new(bin)
            .arg("--db")
            .arg(db)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        best = best.min(t.elapsed().as_secs_f64() * 1000.0);
    }
    best
}

/// Gives the first pass's jobs a mix of states (70 % done, 15 % failed
/// for three reasons, 10 % queued, 3 % cancelled, 2 % running) in one
/// UPDATE, then times the per-state count status made before migration
/// 0017 (a walk of the jobs_film_state index; best of 5). Returns the
/// UPDATE's and the walk's milliseconds.
async fn mixed_states(path: &Path) -> (f64, f64) {
    let db = cinecut::db::Db::open(path, cinecut::db::Durability::Full)
        .await
        .unwrap();
    let t = Instant::now();
    sqlx::query(
        "UPDATE jobs SET state = CASE WHEN id % 100 < 70 THEN 'done' WHEN id % 100 < 85 THEN 'failed' \
         WHEN id % 100 < 95 THEN 'queued' WHEN id % 100 < 98 THEN 'cancelled' ELSE 'running' END, \
         last_error = CASE WHEN id % 100 BETWEEN 70 AND 84 THEN 'reason ' || (id % 3) END \
         WHERE pass_id = (SELECT id FROM passes WHERE name = 'default')",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let update_ms = t.elapsed().as_secs_f64() * 1000.0;
    let mut walk_ms = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let counts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, count(*) FROM jobs WHERE film_id = (SELECT min(id) FROM films) \
             AND pass_id = (SELECT id FROM passes WHERE name = 'default') \
             AND state IN ('running', 'done', 'failed', 'cancelled') GROUP BY state",
        )
        .fetch_all(db.pool())
        .await
        .unwrap();
        assert_eq!(counts.len(), 4);
        walk_ms = walk_ms.min(t.elapsed().as_secs_f64() * 1000.0);
    }
    db.close().await;
    (update_ms, walk_ms)
}

/// A folder of real stills enqueued with the default dedupe and with
/// `--no-dedupe`, then enqueued again; then each database described by a
/// worker against the fake server (instant answers, so the worker's own
/// time shows): the worker's hashing cost per still beside the model calls
/// it saves.
fn stills(bin: &str, work: &Path) {
    let n: usize = std::env::var("STILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let dir = cache_dir().join(format!("bench-stills-v2-{n}"));
    make_stills(&dir, n);
    let enqueue = |db: &str, extra: &[&str]| {
        let t = Instant::now();
        let out = Command::new(bin)
            .arg("--db")
            .arg(work.join(db))
            .arg("enqueue")
            .args(extra)
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed().as_secs_f64()
    };
    let hashed_s = enqueue("stills-hashed.db", &[]);
    let plain_s = enqueue("stills-plain.db", &["--no-dedupe"]);
    let again_s = enqueue("stills-hashed.db", &[]);
    let (work_hashed_s, calls_hashed) = describe(bin, work, "stills-hashed.db");
    let (work_plain_s, calls_plain) = describe(bin, work, "stills-plain.db");
    let copies = rusqlite_count(
        &work.join("stills-hashed.db"),
        "SELECT count(*) FROM frames WHERE duplicate_of IS NOT NULL",
    );
    assert_eq!(calls_plain, n, "--no-dedupe sends every still");
    assert_eq!(calls_hashed + copies, n, "every still is sent or copied");
    println!("stills (1280x720 JPEG)         {n}");
    println!(
        "enqueue (default dedupe)       {hashed_s:8.2} s  {:>10.0} frames/s",
        n as f64 / hashed_s
    );
    println!(
        "enqueue --no-dedupe            {plain_s:8.2} s  {:>10.0} frames/s",
        n as f64 / plain_s
    );
    println!("ratio (default / --no-dedupe)  {:8.2}", hashed_s / plain_s);
    println!(
        "enqueued again (adds nothing)  {again_s:8.2} s  {:>10.0} frames/s  ({:.2}x --no-dedupe's time)",
        n as f64 / again_s,
        again_s / plain_s
    );
    println!("worker, hashing each still     {work_hashed_s:8.2} s  {calls_hashed:6} model calls");
    println!("worker, --no-dedupe stills     {work_plain_s:8.2} s  {calls_plain:6} model calls");
    println!(
        "hashing cost to the worker     {:8.2} ms/still  ({:.2}x the --no-dedupe worker's time)",
        (work_hashed_s - work_plain_s * calls_hashed as f64 / n as f64) * 1000.0 / n as f64,
        work_hashed_s / work_plain_s
    );
    println!(
        "near-duplicates found          {copies:8} of {n} ({:.0} % of model calls saved)",
        copies as f64 * 100.0 / n as f64
    );
}

/// `n` 1280×720 JPEGs in `dir`, made once: half a changing picture
/// (Conway's life, a generation per still), half one static picture with
/// fresh sensor noise in each.
fn make_stills(dir: &Path, n: usize) {
    if dir.join("done").exists() {
        return;
    }
    eprintln!(
        "making {n} 1280x720 JPEG stills under {} (once)",
        dir.display()
    );
    std::fs::create_dir_all(dir).unwrap();
    let half = n / 2;
    let graph = format!(
        "[0]trim=end_frame={half}[a];[1]trim=end_frame={}[b];[a][b]concat=n=2:v=1:a=0",
        n - half
    );
    let status = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg("life=size=1280x720:rate=2.5:ratio=0.3:mold=10,format=yuv420p")
        .args(["-f", "lavfi", "-i"])
        .arg("smptehdbars=size=1280x720:rate=2.5,noise=alls=20:allf=t,format=yuv420p")
        .args(["-filter_complex", &graph, "-q:v", "3"])
        .arg(dir.join("still_%06d.jpg"))
        .status()
        .expect("ffmpeg (bash scripts/setup.sh installs it)");
    assert!(status.success());
    std::fs::File::create(dir.join("done")).unwrap();
}

/// `cinecut worker --until-empty` on `db` against the fake server with
/// instant answers: its seconds and the model calls it made.
fn describe(bin: &str, work: &Path, db: &str) -> (f64, usize) {
    let port_file = work.join(format!("{db}.port"));
    let record = work.join(format!("{db}.requests"));
    let mut fake = Command::new(env!("CARGO_BIN_EXE_fake-llama-server"))
        .arg("--port-file")
        .arg(&port_file)
        .arg("--record")
        .arg(&record)
        .args(["--slots", "4"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while !port_file.exists() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let port = std::fs::read_to_string(&port_file).unwrap();
    let t = Instant::now();
    let out = Command::new(bin)
        .arg("--db")
        .arg(work.join(db))
        .args(["worker", "--until-empty", "--parallel", "4", "--server-url"])
        .arg(format!("http://127.0.0.1:{}", port.trim()))
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    fake.kill().ok();
    fake.wait().ok();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = std::fs::read_to_string(&record)
        .unwrap_or_default()
        .lines()
        .count();
    (secs, calls)
}

/// One count from the SQLite database at `path`.
fn rusqlite_count(path: &Path, sql: &str) -> usize {
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as usize
}

async fn bare_insert(db: &Path, frames_dir: &Path, n: usize, with_jobs: bool) -> f64 {
    let opts = SqliteConnectOptions::new()
        .filename(db)
        .create_if_missing(true)
        .page_size(cinecut::db::PAGE_SIZE)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE t (film_id INTEGER, frame_index INTEGER, pts_ms INTEGER, path TEXT, created_at INTEGER) STRICT")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE j (id INTEGER, frame_id INTEGER, film_id INTEGER, priority INTEGER, state TEXT, max_attempts INTEGER, created_at INTEGER, updated_at INTEGER) STRICT")
        .execute(&pool)
        .await
        .unwrap();
    const ROWS: usize = 500;
    let job_sql = format!(
        "INSERT INTO j VALUES {}",
        vec!["(?, ?, ?, ?, ?, ?, ?, ?)"; ROWS].join(", ")
    );
    let sql = format!(
        "INSERT INTO t VALUES {}",
        vec!["(?, ?, ?, ?, ?)"; ROWS].join(", ")
    );
    let paths: Vec<String> = (0..n)
        .map(|i| frame_path(frames_dir, i).display().to_string())
        .collect();
    let t = Instant::now();
    for chunk in paths.chunks(20_000).enumerate() {
        let (c, chunk) = chunk;
        let mut tx = pool.begin().await.unwrap();
        for (s, rows) in chunk.chunks(ROWS).enumerate() {
            let base = c * 20_000 + s * ROWS;
            if rows.len() == ROWS {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
                for (k, p) in rows.iter().enumerate() {
                    q = q
                        .bind(1_i64)
                        .bind((base + k) as i64)
                        .bind(((base + k) * 40) as i64)
                        .bind(p)
                        .bind(0_i64);
                }
                q.execute(&mut *tx).await.unwrap();
                if with_jobs {
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(job_sql.clone()));
                    for k in 0..ROWS {
                        let id = (base + k + 1) as i64;
                        q = q
                            .bind(id)
                            .bind(id)
                            .bind(1_i64)
                            .bind(0_i64)
                            .bind("queued")
                            .bind(3_i64)
                            .bind(0_i64)
                            .bind(0_i64);
                    }
                    q.execute(&mut *tx).await.unwrap();
                }
            } else {
                for (k, p) in rows.iter().enumerate() {
                    sqlx::query("INSERT INTO t VALUES (?, ?, ?, ?, ?)")
                        .bind(1_i64)
                        .bind((base + k) as i64)
                        .bind(((base + k) * 40) as i64)
                        .bind(p)
                        .bind(0_i64)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    if with_jobs {
                        let id = (base + k + 1) as i64;
                        sqlx::query("INSERT INTO j VALUES (?, ?, 1, 0, 'queued', 3, 0, 0)")
                            .bind(id)
                            .bind(id)
                            .execute(&mut *tx)
                            .await
                            .unwrap();
                    }
                }
            }
        }
        tx.commit().await.unwrap();
    }
    t.elapsed().as_secs_f64()
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("cinecut-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
