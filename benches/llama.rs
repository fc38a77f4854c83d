//! Frames/s against the real llama-server and the tiny test model, in one run:
//! 1. the ceiling: a direct client sending the same requests to a server
//!    started with the same `-np`, `PARALLEL` in flight;
//! 2. `cinecut worker` (supervised server, same `-np`), queue included;
//! 3. the seed's design: one request at a time, a server started per batch
//!    of 16 frames.
//!
//! Run: `bash scripts/setup.sh && cargo bench --bench llama` (FRAMES, PARALLEL).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cinecut::db::{Db, Durability};
use cinecut::engine::{Engine, Supervised, SupervisorConfig};
use cinecut::gpu::{Nvml, VramCheck};
use cinecut::ingest::frames::Source;
use cinecut::ingest::{self, EnqueueOptions};
use cinecut::server::{LlamaServer, ServerConfig};
use cinecut::vision::{VisionClient, load_frame};
use cinecut::worker::{self, WorkerConfig};
use tokio_util::sync::CancellationToken;

fn cache() -> PathBuf {
    std::env::var_os("CINECUT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/cinecut"))
}

fn server_config(np: u16) -> ServerConfig {
    let env = std::fs::read_to_string(cache().join("env.sh")).expect("run scripts/setup.sh first");
    let bin = env
        .lines()
        .find_map(|l| l.strip_prefix("export LLAMA_SERVER="))
        .expect("LLAMA_SERVER in env.sh")
        .trim_matches('"');
    let models = cache().join("bench-model");
    if !models.join("tiny-text.gguf").exists() {
        let ok = std::process::Command::new(cache().join("venv/bin/python"))
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/gen_tiny_model.py"
            ))
            .arg(&models)
            .status()
            .unwrap()
            .success();
        assert!(ok, "gen_tiny_model.py failed");
    }
    ServerConfig {
        bin: PathBuf::from(bin),
        model: models.join("tiny-text.gguf"),
        mmproj: models.join("tiny-mmproj.gguf"),
        ctx_size: 4096 * u32::from(np),
        gpu_layers: None,
        parallel: np,
        extra_args: Vec::new(),
        log_file: None,
        load_timeout: Duration::from_secs(60),
        cuda_visible_devices: None,
    }
}

async fn direct(paths: &[PathBuf], np: u16) -> f64 {
    let mut server = LlamaServer::spawn(&server_config(np)).unwrap();
    server
        .wait_until_healthy(Duration::from_secs(60))
        .await
        .unwrap();
    let client = Arc::new(VisionClient::new(
        &server.base_url(),
        Some(server.api_key.clone()),
        384,
        Duration::from_secs(60),
    ));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let paths = Arc::new(paths.to_vec());
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..np {
        let (client, next, paths) = (client.clone(), next.clone(), paths.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(p) = paths.get(i) else { break };
                let frame = load_frame(p, 1024).await.unwrap();
                let _ = client.describe(&frame).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rate = paths.len() as f64 / t.elapsed().as_secs_f64();
    server.stop().await;
    rate
}

async fn through_worker(dir: &std::path::Path, paths: &[PathBuf], np: u16) -> (f64, u64) {
    let db = Db::open(&dir.join("bench.db"), Durability::Full)
        .await
        .unwrap();
    let sources = vec![Source::Paths {
        title: "bench".into(),
        paths: paths.to_vec(),
    }];
    ingest::enqueue(&db, sources, Vec::new(), &EnqueueOptions::default())
        .await
        .unwrap();
    let engine = Supervised::new(
        SupervisorConfig {
            server: server_config(np),
            model_name: "tiny".into(),
            max_side: 1024,
            max_tokens: 384,
            request_timeout: Duration::from_secs(60),
            vram_check: VramCheck::Off,
            nvml_index: None,
            vram_min_mib: 0,
            vram_wait: Duration::ZERO,
            crash_budget: 5,
            crash_window: Duration::from_secs(600),
        },
        Arc::new(Nvml::default()),
    );
    let cfg = WorkerConfig {
        parallel: usize::from(np),
        until_empty: true,
        ..WorkerConfig::default()
    };
    let t = Instant::now();
    let s = worker::run(
        &db,
        &cfg,
        Engine::Supervised(Box::new(engine)),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let rate = paths.len() as f64 / t.elapsed().as_secs_f64();
    db.close().await;
    (rate, s.done + s.failed)
}

async fn seed_design(paths: &[PathBuf]) -> f64 {
    let t = Instant::now();
    for batch in paths.chunks(16) {
        let mut server = LlamaServer::spawn(&server_config(1)).unwrap();
        server
            .wait_until_healthy(Duration::from_secs(60))
            .await
            .unwrap();
        let client = VisionClient::new(
            &server.base_url(),
            Some(server.api_key.clone()),
            384,
            Duration::from_secs(60),
        );
        for p in batch {
            let frame = load_frame(p, 1024).await.unwrap();
            let _ = client.describe(&frame).await;
        }
        server.stop().await;
    }
    paths.len() as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let n: usize = std::env::var("FRAMES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let np: u16 = std::env::var("PARALLEL")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = (0..n)
        .map(|i| {
            let p = dir.path().join(format!("f{i}.png"));
            image::RgbImage::from_fn(64, 48, |x, y| {
                image::Rgb([(x * 4) as u8, (y * 5) as u8, (i * 37 % 256) as u8])
            })
            .save(&p)
            .unwrap();
            p
        })
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ceiling = direct(&paths, np).await;
        let (worker_rate, recorded) = through_worker(dir.path(), &paths, np).await;
        let seed = seed_design(&paths).await;
        println!("frames {n}, -np {np}, tiny model, CPU");
        println!("direct client (ceiling)            {ceiling:8.1} frames/s");
        println!("cinecut worker                     {worker_rate:8.1} frames/s  ({:.2} of the ceiling, {recorded} recorded)", worker_rate / ceiling);
        println!("seed design (1 at a time, server per 16 frames) {seed:8.1} frames/s  (cinecut is {:.1}x)", worker_rate / seed);
    });
}
