//! Queue throughput of the worker: claim → describe → record, with an
//! instant in-process describer, next to two ceilings, for
//! synchronous=NORMAL and FULL, in one run: the same database calls
//! (`record_and_claim`) in a bare loop with no worker around them, and the
//! very same SQL (`src/db/sql/`) run straight on SQLite (rusqlite, on the
//! calling thread: no driver thread, no async). Also the same worker against
//! the fake llama-server over loopback HTTP, answering at once.
//!
//! Run: `cargo bench --bench worker` (JOBS=N, PARALLEL=N, ROUNDS=N to change).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cinecut::db::jobs::{self, Batch, Fence, Finished, Outcome, Scope};
use cinecut::db::lease::{self, Acquire, Purpose};
use cinecut::db::{Db, Durability, now_ms};
use cinecut::engine::{Attached, Engine};
use cinecut::ingest::frames::Source;
use cinecut::ingest::{self, EnqueueOptions};
use cinecut::profile::{Answer, Profile};
use cinecut::vision::{Describer, HttpDescriber, NoopDescriber, VisionClient};
use cinecut::worker::{self, WorkerConfig};
use tokio_util::sync::CancellationToken;

fn answer() -> Answer {
    Profile::default()
        .parse_answer(
            r#"{"visual_content":"a figure by a window","mood":"tense","action":"someone waits","setting":"a small room at night"}"#,
        )
        .unwrap()
}

async fn fresh_db(dir: &Path, name: &str, frames: &Path, n: usize, durability: Durability) -> Db {
    let db = Db::open(&dir.join(name), durability).await.unwrap();
    let paths = (0..n).map(|i| frames.join(format!("f{i}.png"))).collect();
    let sources = vec![Source::Paths {
        title: "bench".into(),
        paths,
    }];
    // Every frame a model call: the HTTP path's frames are one picture,
    // which dedupe would describe once.
    let opts = EnqueueOptions {
        dedupe_distance: None,
        ..EnqueueOptions::default()
    };
    let s = ingest::enqueue(&db, sources, Vec::new(), &opts)
        .await
        .unwrap();
    assert_eq!(s.new as usize, n);
    db
}

fn cfg(parallel: usize) -> WorkerConfig {
    WorkerConfig {
        parallel,
        until_empty: true,
        ..WorkerConfig::default()
    }
}

async fn through_worker(db: &Db, parallel: usize, describer: Arc<dyn Describer>) -> f64 {
    let t = Instant::now();
    let s = worker::run(
        &cinecut::db::Store::from(db.clone()),
        &cfg(parallel),
        Engine::Attached(Attached(describer)),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let secs = t.elapsed().as_secs_f64();
    s.done as f64 / secs
}

async fn ceiling(db: &Db, parallel: usize) -> f64 {
    let pool = db.pool();
    let me = cinecut::db::lease::this_process(Purpose::Worker);
    jobs::register_worker(pool, &me.id, me.pid, &me.host, "gpu0", now_ms())
        .await
        .unwrap();
    let Acquire::Acquired { epoch, .. } = lease::acquire(pool, "gpu0", &me, 30_000, now_ms())
        .await
        .unwrap()
    else {
        panic!()
    };
    let fence = Fence {
        gpu: "gpu0".into(),
        owner: me.id.clone(),
        epoch,
    };
    let pass = cinecut::db::passes::only(pool).await.unwrap();
    let scope = Scope {
        pass: pass.id,
        binding: pass.binding,
        film: None,
    };
    let mut conn = pool.acquire().await.unwrap();
    let t = Instant::now();
    let mut done = 0u64;
    let mut finished: Vec<Finished> = Vec::new();
    loop {
        let (rec, claimed) = jobs::record_and_claim(
            &mut conn,
            &Batch {
                fence: &fence,
                finished: &finished,
                claim: parallel,
                scope,
                now: now_ms(),
                lease_ms: 30_000,
            },
        )
        .await
        .unwrap();
        done += rec.done;
        if claimed.jobs.is_empty() {
            break;
        }
        let now = now_ms();
        finished = claimed
            .jobs
            .into_iter()
            .map(|job| Finished {
                job,
                outcome: Outcome::Done {
                    answer: answer(),
                    model: "instant".into(),
                    model_sha256: None,
                    prompt_version: 1,
                    prompt_tokens: Some(80),
                    completion_tokens: Some(30),
                },
                started_at: now,
                finished_at: now,
            })
            .collect();
    }
    done as f64 / t.elapsed().as_secs_f64()
}

/// The batch statements straight on SQLite: what `record_and_claim` does
/// for all-done batches, with the SQL files it uses, on the calling thread.
fn raw_ceiling(path: &Path, durability: Durability, parallel: usize, n: usize) -> f64 {
    use rusqlite::{Connection, TransactionBehavior, params};
    let mut c = Connection::open(path).unwrap();
    let sync = match durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    c.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON; PRAGMA cache_size = -8192;
         PRAGMA temp_store = memory; PRAGMA busy_timeout = 30000;"
    ))
    .unwrap();
    let me = cinecut::db::lease::this_process(Purpose::Worker);
    let epoch = 1i64;
    c.execute(
        "INSERT INTO workers (id, pid, host, gpu, started_at, heartbeat_at, state) VALUES (?1, 0, 'h', 'gpu0', 0, 0, 'running')",
        params![me.id],
    )
    .unwrap();
    c.execute(
        "INSERT INTO gpu_leases (gpu, holder, epoch) VALUES ('gpu0', ?1, ?2)",
        params![me.id, epoch],
    )
    .unwrap();
    let d = answer();
    let t = Instant::now();
    // claim_pick.sql's rows: [id, attempts, transient, max_attempts, path, frame, dedupe].
    type ClaimRow = (i64, i64, i64, i64, String, i64, Option<u32>);
    let mut claimed: Vec<ClaimRow> = Vec::new();
    let (pass, binding): (i64, i64) = c
        .query_row("SELECT id, binding FROM passes", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    loop {
        let now = now_ms();
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        if !claimed.is_empty() {
            let ids =
                serde_json::to_string(&claimed.iter().map(|r| r.0).collect::<Vec<_>>()).unwrap();
            let fenced: String = tx
                .prepare_cached(include_str!("../src/db/sql/batch_fenced.sql"))
                .unwrap()
                .query_row(params![ids, me.id, epoch], |r| r.get(0))
                .unwrap();
            assert_eq!(fenced, "[]");
            let jobs = claimed
                .iter()
                .map(|r| (r.0, "done", None::<&str>, r.1 + 1, r.2, 0))
                .collect::<Vec<_>>();
            tx.prepare_cached(include_str!("../src/db/sql/batch_jobs.sql"))
                .unwrap()
                .execute(params![
                    serde_json::to_string(&jobs).unwrap(),
                    me.id,
                    epoch,
                    now
                ])
                .unwrap();
            let described = claimed
                .iter()
                .map(|r| {
                    let text = |f| d.text(f).unwrap();
                    (
                        r.0,
                        text("visual_content"),
                        text("mood"),
                        text("action"),
                        text("setting"),
                        "instant",
                        None::<&str>,
                        1,
                        0,
                        80,
                        30,
                        &d,
                        None::<&str>,
                    )
                })
                .collect::<Vec<_>>();
            tx.prepare_cached(include_str!("../src/db/sql/batch_descriptions.sql"))
                .unwrap()
                .execute(params![serde_json::to_string(&described).unwrap(), now])
                .unwrap();
            let tried = claimed
                .iter()
                .map(|r| {
                    (
                        r.0,
                        now,
                        now,
                        "done",
                        None::<&str>,
                        None::<&str>,
                        None::<&str>,
                        80,
                        30,
                    )
                })
                .collect::<Vec<_>>();
            tx.prepare_cached(include_str!("../src/db/sql/batch_attempts.sql"))
                .unwrap()
                .execute(params![
                    serde_json::to_string(&tried).unwrap(),
                    me.id,
                    epoch
                ])
                .unwrap();
            tx.prepare_cached(include_str!("../src/db/sql/batch_worker_counters.sql"))
                .unwrap()
                .execute(params![claimed.len() as i64, 0, 0, 0, now, me.id])
                .unwrap();
        }
        let picked: String = tx
            .prepare_cached(include_str!("../src/db/sql/claim_pick.sql"))
            .unwrap()
            .query_row(
                params![
                    now,
                    parallel as i64,
                    "gpu0",
                    me.id,
                    epoch,
                    now - 90_000,
                    pass,
                    binding
                ],
                |r| r.get(0),
            )
            .unwrap();
        claimed = serde_json::from_str(&picked).unwrap();
        if !claimed.is_empty() {
            let ids =
                serde_json::to_string(&claimed.iter().map(|r| r.0).collect::<Vec<_>>()).unwrap();
            tx.prepare_cached(include_str!("../src/db/sql/claim_mark.sql"))
                .unwrap()
                .execute(params![me.id, epoch, now + 30_000, now, ids])
                .unwrap();
        }
        tx.commit().unwrap();
        if claimed.is_empty() {
            break;
        }
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    // The rows this loop shapes by hand must be the ones the worker writes.
    let counts: (i64, i64, i64) = c
        .query_row(
            "SELECT (SELECT count(*) FROM jobs WHERE state = 'done'), (SELECT count(*) FROM descriptions),
                    (SELECT count(*) FROM attempts WHERE outcome = 'done')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(counts, (n as i64, n as i64, n as i64));
    rate
}

/// Sorts `xs` and returns its median.
fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let n: usize = std::env::var("JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let parallel: usize = std::env::var("PARALLEL")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    for i in 0..n {
        std::fs::write(frames.join(format!("f{i}.png")), b"").unwrap();
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        println!("jobs {n}, parallel {parallel}, median of {rounds} rounds");
        println!(
            "{:<8} {:>14} {:>18} {:>18} {:>11}",
            "sync", "worker jobs/s", "same calls jobs/s", "raw SQLite jobs/s", "worker/raw"
        );
        // Worker and ceiling alternate, `rounds` times each, on fresh
        // databases; the medians are printed (this machine's timings vary
        // by a fifth from run to run), with the range of the worker's.
        for (label, d) in [("NORMAL", Durability::Normal), ("FULL", Durability::Full)] {
            let (mut ws, mut cs, mut rs) = (Vec::new(), Vec::new(), Vec::new());
            for round in 0..rounds {
                let db =
                    fresh_db(dir.path(), &format!("w-{label}-{round}.db"), &frames, n, d).await;
                ws.push(through_worker(&db, parallel, Arc::new(NoopDescriber::new())).await);
                db.close().await;
                let db =
                    fresh_db(dir.path(), &format!("c-{label}-{round}.db"), &frames, n, d).await;
                cs.push(ceiling(&db, parallel).await);
                db.close().await;
                let name = format!("r-{label}-{round}.db");
                fresh_db(dir.path(), &name, &frames, n, d)
                    .await
                    .close()
                    .await;
                rs.push(raw_ceiling(&dir.path().join(name), d, parallel, n));
            }
            let (w, c, r) = (median(&mut ws), median(&mut cs), median(&mut rs));
            println!(
                "{label:<8} {w:>14.0} {c:>18.0} {r:>18.0} {:>11.2}   worker {:.0}-{:.0}",
                w / r,
                ws[0],
                ws[ws.len() - 1]
            );
        }
        // The same worker over loopback HTTP against the fake server (instant answers).
        let fake = std::process::Command::new(env!("CARGO_BIN_EXE_fake-llama-server"))
            .args(["--port-file"])
            .arg(dir.path().join("port"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        while !dir.path().join("port").exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let port = std::fs::read_to_string(dir.path().join("port")).unwrap();
        let m = n.min(5000);
        // Real image files for the HTTP path (the fake hashes the request).
        let img_dir = dir.path().join("img");
        std::fs::create_dir(&img_dir).unwrap();
        let png = image::RgbImage::from_pixel(32, 24, image::Rgb([10, 20, 30]));
        for i in 0..m {
            png.save(img_dir.join(format!("f{i}.png"))).unwrap();
        }
        let db = fresh_db(dir.path(), "http.db", &img_dir, m, Durability::Normal).await;
        let client = VisionClient::new(
            &format!("http://127.0.0.1:{}", port.trim()),
            None,
            256,
            Duration::from_secs(10),
        );
        let http = through_worker(
            &db,
            parallel.min(16),
            Arc::new(HttpDescriber::new(
                client,
                "fake".into(),
                parallel.min(16),
                1024,
            )),
        )
        .await;
        println!(
            "NORMAL, over HTTP to the fake server ({m} jobs, parallel {}): {http:.0} jobs/s",
            parallel.min(16)
        );
        let mut fake = fake;
        fake.kill().ok();
        fake.wait().ok();
    });
}
