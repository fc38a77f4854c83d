//! The queue on PostgreSQL against the queue on SQLite, in one run: a
//! 1,000,000-frame enqueue, then the worker's database loop with a no-op
//! describer (record the batch of answers and claim the next batch, one
//! transaction a round) with 1 and 4 workers on PostgreSQL, each its own
//! connection pool and GPU lease, next to 1 worker on SQLite
//! (`cinecut::db::jobs::record_and_claim`, the same loop); claim latency
//! p50/p99 under 4 workers. Both durable: PostgreSQL with fsync on and
//! synchronous_commit on (its defaults), SQLite with synchronous=FULL.
//!
//! Then what `--store-frames` costs: enqueue with and without the frames'
//! bytes, the database's growth, claims that bring the bytes back.
//!
//! Run: `cargo bench -p cinecut-postgres --bench queue` (FRAMES=N, JOBS=N,
//! BATCH=N, STORED=N, FRAME_KB=N to change the sizes). It starts a throwaway cluster of its own
//! (scripts/pg-cluster.sh, fsync on) and removes it after.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cinecut_postgres::PgQueue;
use cinecut_postgres::host::HostId;
use cinecut_postgres::lease::{self, Acquire, Holder};
use cinecut_postgres::queue::{
    self, Answer, ClaimedJob, Fence, Finished, NewFrame, Outcome, Scope,
};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cluster(action: &str, dir: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-cluster.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(action)
        .arg(dir)
        .env("CINECUT_PG_FSYNC", "on")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg-cluster.sh {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn answer() -> Answer {
    let serde_json::Value::Object(fields) = serde_json::json!({
        "visual_content": "a figure by a window", "mood": "tense",
        "action": "someone waits", "setting": "a small room at night"
    }) else {
        unreachable!("a JSON object")
    };
    Answer::validated(fields, None)
}

/// A no-op worker's answer to `job`, as a real worker records one.
fn answered(job: &ClaimedJob) -> Finished {
    Finished {
        job: job.clone(),
        outcome: Outcome::Done {
            answer: answer(),
            model: "instant".into(),
            model_sha256: None,
            prompt_version: 1,
            prompt_tokens: None,
            completion_tokens: None,
        },
        started_at: 0,
        finished_at: 0,
    }
}

/// One no-op worker on PostgreSQL: its own pool and GPU lease, rounds of
/// record-and-claim until the pass is empty; returns the jobs it recorded
/// and each round's latency.
async fn pg_worker(url: String, gpu: String, pass: i64, batch: i64) -> (u64, Vec<Duration>) {
    let q = PgQueue::connect(&url).await.unwrap();
    let me = Holder {
        id: format!("bench-{gpu}"),
        host: HostId::this(),
        pid: i64::from(std::process::id()),
        purpose: "worker",
    };
    let ttl = Duration::from_secs(60);
    let Acquire::Acquired { epoch, .. } = lease::acquire(&q, &gpu, &me, ttl).await.unwrap() else {
        panic!("a free GPU")
    };
    let fence = Fence {
        gpu,
        owner: me.id.clone(),
        epoch,
    };
    let (mut done, mut rounds) = (0, Vec::new());
    let mut finished: Vec<Finished> = Vec::new();
    loop {
        let t = Instant::now();
        let (recorded, claimed) = queue::record_and_claim(
            &q,
            &fence,
            &finished,
            Scope {
                pass,
                binding: 0,
                film: None,
            },
            batch,
            ttl,
        )
        .await
        .unwrap();
        rounds.push(t.elapsed());
        done += recorded.done;
        if claimed.jobs.is_empty() {
            break;
        }
        finished = claimed.jobs.iter().map(answered).collect();
    }
    q.close().await;
    (done, rounds)
}

/// `workers` no-op workers at once on a new pass of every frame; jobs/s
/// and all rounds' latencies.
async fn pg_run(
    q: &PgQueue,
    url: &str,
    workers: usize,
    jobs: usize,
    batch: i64,
) -> (f64, Vec<Duration>) {
    let pass = queue::ensure_pass(q, &format!("bench-{workers}"))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO jobs (frame_id, pass_id, film_id) \
         SELECT id, $1, film_id FROM frames ORDER BY id LIMIT $2",
    )
    .bind(pass)
    .bind(jobs as i64)
    .execute(q.pool())
    .await
    .unwrap();
    let t = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            tokio::spawn(pg_worker(
                url.to_string(),
                format!("GPU-bench-{workers}-{w}"),
                pass,
                batch,
            ))
        })
        .collect();
    let (mut done, mut rounds) = (0, Vec::new());
    for h in handles {
        let (d, r) = h.await.unwrap();
        done += d;
        rounds.extend(r);
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(done as usize, jobs);
    (done as f64 / secs, rounds)
}

/// What `--store-frames` costs: `n` frames of `kb` KB each (bytes that do
/// not compress, as JPEG's do not) enqueued with their bytes and without,
/// the database's growth per frame, and one no-op worker's claims of each
/// (a stored frame's bytes come back with its claim).
struct Stored {
    plain_fps: f64,
    stored_fps: f64,
    stored_mb_s: f64,
    bytes_per_frame: f64,
    claim_plain: f64,
    claim_stored: f64,
}

async fn stored_frames(q: &PgQueue, url: &str, n: usize, kb: usize) -> Stored {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    let frames = |film: &str, bytes: &mut dyn FnMut() -> Option<Vec<u8>>| -> Vec<NewFrame> {
        (0..n as i64)
            .map(|i| NewFrame {
                path: format!("/shared/{film}/frame_{i:07}.jpg"),
                shot: None,
                dhash: None,
                duplicate_of: None,
                dedupe_distance: None,
                frame_index: Some(i),
                pts_ms: Some(i * 40),
                width: None,
                height: None,
                bytes: bytes(),
            })
            .collect()
    };
    let size = || async {
        sqlx::query_scalar::<_, i64>("SELECT pg_total_relation_size('frames')")
            .fetch_one(q.pool())
            .await
            .unwrap()
    };
    let pass = queue::ensure_pass(q, "stored-enqueue").await.unwrap();
    let timed = async |title: &str, all: Vec<NewFrame>| {
        let film = queue::ensure_film(q, title).await.unwrap();
        let t = Instant::now();
        for chunk in all.chunks(500) {
            queue::enqueue(q, film, pass, chunk, 3).await.unwrap();
        }
        (film, t.elapsed().as_secs_f64())
    };
    let (plain_film, plain_s) = timed("plain", frames("plain", &mut || None)).await;
    let before = size().await;
    let (stored_film, stored_s) =
        timed("stored", frames("stored", &mut || Some(noise(kb * 1024)))).await;
    let grown = size().await - before;
    let claims = async |film: i64, name: &str| {
        let pass = queue::ensure_pass(q, name).await.unwrap();
        sqlx::query(
            "INSERT INTO jobs (frame_id, pass_id, film_id) SELECT id, $1, film_id FROM frames WHERE film_id = $2",
        )
        .bind(pass)
        .bind(film)
        .execute(q.pool())
        .await
        .unwrap();
        let t = Instant::now();
        let (done, _) = pg_worker(url.to_string(), format!("GPU-{name}"), pass, 16).await;
        assert_eq!(done as usize, n);
        n as f64 / t.elapsed().as_secs_f64()
    };
    let claim_plain = claims(plain_film, "claim-plain").await;
    let claim_stored = claims(stored_film, "claim-stored").await;
    Stored {
        plain_fps: n as f64 / plain_s,
        stored_fps: n as f64 / stored_s,
        stored_mb_s: (n * kb) as f64 / 1024.0 / stored_s,
        bytes_per_frame: grown as f64 / n as f64,
        claim_plain,
        claim_stored,
    }
}

/// The same loop on SQLite (synchronous=FULL), 1 worker.
async fn sqlite_run(dir: &Path, jobs: usize, batch: usize) -> f64 {
    use cinecut::db::jobs::{self as sjobs, Batch, Finished, Outcome, Scope};
    use cinecut::db::lease::{self as slease, Acquire as SAcquire, Purpose};
    use cinecut::db::{Db, Durability, now_ms};

    let db = Db::open(&dir.join("bench.db"), Durability::Full)
        .await
        .unwrap();
    let paths: Vec<_> = (0..jobs).map(|i| dir.join(format!("f{i}.png"))).collect();
    for p in &paths {
        std::fs::File::create(p).unwrap();
    }
    let sources = vec![cinecut::ingest::frames::Source::Paths {
        title: "bench".into(),
        paths,
    }];
    let opts = cinecut::ingest::EnqueueOptions {
        dedupe_distance: None,
        ..Default::default()
    };
    cinecut::ingest::enqueue(&db, sources, Vec::new(), &opts)
        .await
        .unwrap();
    let pool = db.pool();
    let me = cinecut::db::lease::this_process(Purpose::Worker);
    sjobs::register_worker(pool, &me.id, me.pid, &me.host, "gpu0", now_ms())
        .await
        .unwrap();
    let SAcquire::Acquired { epoch, .. } = slease::acquire(pool, "gpu0", &me, 60_000, now_ms())
        .await
        .unwrap()
    else {
        panic!("a free GPU")
    };
    let fence = sjobs::Fence {
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
    let seed = cinecut::profile::Profile::default()
        .parse_answer(&serde_json::Value::Object(answer().fields().clone()).to_string())
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let (t, mut done) = (Instant::now(), 0);
    let mut finished: Vec<Finished> = Vec::new();
    loop {
        let b = Batch {
            fence: &fence,
            finished: &finished,
            claim: batch,
            scope,
            now: now_ms(),
            lease_ms: 60_000,
        };
        let (rec, claimed) = sjobs::record_and_claim(&mut conn, &b).await.unwrap();
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
                    answer: seed.clone(),
                    model: "instant".into(),
                    model_sha256: None,
                    prompt_version: 1,
                    prompt_tokens: None,
                    completion_tokens: None,
                },
                started_at: now,
                finished_at: now,
            })
            .collect();
    }
    assert_eq!(done as usize, jobs);
    done as f64 / t.elapsed().as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let frames = env_or("FRAMES", 1_000_000);
    let jobs = env_or("JOBS", 50_000).min(frames);
    let batch = env_or("BATCH", 16);
    let dir = tempfile::Builder::new()
        .prefix("cinecut-pg-bench-")
        .tempdir()
        .unwrap();
    let admin = cluster("start", dir.path());
    let url = format!("{}/bench", admin.rsplit_once('/').unwrap().0);
    let pool = sqlx::PgPool::connect(&admin).await.unwrap();
    sqlx::query("CREATE DATABASE bench")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let q = PgQueue::connect(&url).await.unwrap();

    let film = queue::ensure_film(&q, "bench").await.unwrap();
    let pass = queue::ensure_pass(&q, "enqueue").await.unwrap();
    let all: Vec<NewFrame> = (0..frames as i64)
        .map(|i| NewFrame {
            path: format!("/shared/frames/{:03}/frame_{i:07}.jpg", i / 10_000),
            shot: None,
            dhash: None,
            duplicate_of: None,
            dedupe_distance: None,
            frame_index: Some(i),
            bytes: None,
            pts_ms: Some(i * 40),
            width: None,
            height: None,
        })
        .collect();
    let t = Instant::now();
    for chunk in all.chunks(20_000) {
        queue::enqueue(&q, film, pass, chunk, 3).await.unwrap();
    }
    let enqueue_s = t.elapsed().as_secs_f64();

    let (one, _) = pg_run(&q, &url, 1, jobs, batch as i64).await;
    let (four, mut rounds) = pg_run(&q, &url, 4, jobs, batch as i64).await;
    rounds.sort();
    let (stored_n, stored_kb) = (env_or("STORED", 2_000), env_or("FRAME_KB", 60));
    let stored = stored_frames(&q, &url, stored_n, stored_kb).await;
    q.close().await;
    cluster("stop", dir.path());

    let sqlite_dir = tempfile::tempdir().unwrap();
    let sqlite = sqlite_run(sqlite_dir.path(), jobs, batch).await;

    println!("frames enqueued                      {frames}");
    println!(
        "PostgreSQL enqueue (UNNEST, 20k/tx)  {enqueue_s:8.2} s  {:>10.0} frames/s",
        frames as f64 / enqueue_s
    );
    println!("no-op jobs per run                   {jobs} (batch {batch})");
    println!("PostgreSQL, 1 worker                 {one:>10.0} jobs/s");
    println!("PostgreSQL, 4 workers                {four:>10.0} jobs/s");
    println!("SQLite, 1 worker (synchronous=FULL)  {sqlite:>10.0} jobs/s");
    println!("ratio PG 4 workers / PG 1 worker     {:10.2}", four / one);
    println!(
        "ratio PG 4 workers / SQLite 1 worker {:10.2}",
        four / sqlite
    );
    println!("ratio PG 1 worker / SQLite 1 worker  {:10.2}", one / sqlite);
    println!(
        "record+claim round, 4 workers        p50 {:.2} ms  p99 {:.2} ms  ({} rounds)",
        percentile(&rounds, 0.5),
        percentile(&rounds, 0.99),
        rounds.len()
    );
    println!("--store-frames: {stored_n} frames of {stored_kb} KB, 500 frames/tx");
    println!(
        "enqueue, paths only                  {:>10.0} frames/s",
        stored.plain_fps
    );
    println!(
        "enqueue, bytes stored                {:>10.0} frames/s  ({:.0} MB/s)",
        stored.stored_fps, stored.stored_mb_s
    );
    println!(
        "database growth per stored frame     {:>10.0} bytes  ({:.2}x the frame)",
        stored.bytes_per_frame,
        stored.bytes_per_frame / (stored_kb * 1024) as f64
    );
    println!(
        "claims, 1 worker: paths / bytes      {:>10.0} / {:.0} jobs/s  (ratio {:.2})",
        stored.claim_plain,
        stored.claim_stored,
        stored.claim_plain / stored.claim_stored
    );
}
