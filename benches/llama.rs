//! Frames/s against the real llama-server and the tiny test model, in one run:
//! 1. the ceiling: a direct client sending the same requests to a server
//!    started with the same `-np`, `PARALLEL` in flight;
//! 2. `cinecut worker` (supervised server, same `-np`), queue included;
//! 3. the seed's design: one request at a time, a server started per batch
//!    of 16 frames.
//! 4. stills as users have them (GRAIN=0: smooth pictures): the same frames as 4000×3000 PNGs and as
//!    1024×768 JPEGs, through the worker at `--parallel PARALLEL` with its
//!    default prefetch, and the preparation time of one frame of each.
//!
//! Run: `bash scripts/setup.sh && cargo bench --bench llama` (FRAMES,
//! PARALLEL; ONLY=stills for the fourth part alone).

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
                let frame = load_frame(p, None, 1024).await.unwrap();
                let _ = client.describe(&frame, None).await;
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

async fn through_worker(
    dir: &std::path::Path,
    paths: &[PathBuf],
    np: u16,
    prefetch: usize,
) -> (f64, u64) {
    through_server(dir, paths, server_config(np), prefetch).await
}

/// The worker with a supervised `server` (llama-server, or the fake one).
async fn through_server(
    dir: &std::path::Path,
    paths: &[PathBuf],
    server: ServerConfig,
    prefetch: usize,
) -> (f64, u64) {
    let np = server.parallel;
    let _ = std::fs::remove_file(dir.join("bench.db"));
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
            server,
            model_name: "tiny".into(),
            profile: std::sync::Arc::default(),
            max_side: 1024,
            max_tokens: 384,
            request_timeout: Duration::from_secs(60),
            vram_check: VramCheck::Off,
            nvml_index: None,
            vram_need_mib: 0,
            vram_wait: Duration::ZERO,
            crash_budget: 5,
            crash_window: Duration::from_secs(600),
        },
        Arc::new(Nvml::default()),
    );
    let cfg = WorkerConfig {
        parallel: usize::from(np),
        prefetch,
        until_empty: true,
        ..WorkerConfig::default()
    };
    let t = Instant::now();
    let s = worker::run(
        &cinecut::db::Store::from(db.clone()),
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
            let frame = load_frame(p, None, 1024).await.unwrap();
            let _ = client.describe(&frame, None).await;
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
    if std::env::var("ONLY").as_deref() != Ok("stills") {
        rt.block_on(async {
            let ceiling = direct(&paths, np).await;
            let (worker_rate, recorded) = through_worker(dir.path(), &paths, np, 0).await;
        let seed = seed_design(&paths).await;
        println!("frames {n}, -np {np}, tiny model, CPU");
        println!("direct client (ceiling)            {ceiling:8.1} frames/s");
        println!("cinecut worker                     {worker_rate:8.1} frames/s  ({:.2} of the ceiling, {recorded} recorded)", worker_rate / ceiling);
        println!("seed design (1 at a time, server per 16 frames) {seed:8.1} frames/s  (cinecut is {:.1}x)", worker_rate / seed);
        });
    }
    stills(&rt, n, np);
}

/// 4000×3000 PNGs against the same pictures pre-resized to 1024×768 JPEGs.
fn stills(rt: &tokio::runtime::Runtime, n: usize, np: u16) {
    let dir = tempfile::tempdir().unwrap();
    // A photo-like picture (gradients and grain), so PNG cannot shrink it
    // to nothing; n hard links of one file each (distinct frames, one inode).
    // GRAIN=0 for a smooth picture (a render, an animation frame).
    let grain_max: u32 = std::env::var("GRAIN")
        .ok()
        .and_then(|g| g.parse().ok())
        .unwrap_or(24);
    let mut seed = 0x2545_f491_u32;
    let big = image::RgbImage::from_fn(4000, 3000, |x, y| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let grain = (seed % grain_max.max(1)) as u8;
        image::Rgb([
            (x / 16) as u8 ^ grain,
            (y / 12) as u8 ^ grain,
            ((x + y) / 28) as u8 ^ grain,
        ])
    });
    let png = dir.path().join("big.png");
    big.save(&png).unwrap();
    let small = image::imageops::resize(&big, 1024, 768, image::imageops::FilterType::Triangle);
    let jpg = dir.path().join("small.jpg");
    small.save(&jpg).unwrap();
    let links = |name: &str, file: &PathBuf| -> Vec<PathBuf> {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        (0..n)
            .map(|i| {
                let p = d.join(format!(
                    "f{i:04}.{}",
                    file.extension().unwrap().to_string_lossy()
                ));
                std::fs::hard_link(file, &p).unwrap();
                p
            })
            .collect()
    };
    let pngs = links("png", &png);
    let jpgs = links("jpg", &jpg);
    let prep = |file: &PathBuf| {
        let mut times: Vec<f64> = (0..9)
            .map(|_| {
                let t = Instant::now();
                cinecut::frame::prepare(file, 1024).unwrap();
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    let (prep_png, prep_jpg) = (prep(&png), prep(&jpg));
    // Where a PNG's preparation goes (the same steps as `frame::prepare`).
    {
        let t = Instant::now();
        let img = image::open(&png).unwrap();
        let decode = t.elapsed();
        let t = Instant::now();
        let rgb = img.into_rgb8();
        let convert = t.elapsed();
        let t = Instant::now();
        let mut out = image::RgbImage::new(1024, 768);
        fast_image_resize::Resizer::new()
            .resize(&rgb, &mut out, None)
            .unwrap();
        let resize = t.elapsed();
        let t = Instant::now();
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&out)
            .unwrap();
        let encode = t.elapsed();
        println!(
            "PNG preparation: decode {:.1} ms, to RGB8 {:.1} ms, resize {:.1} ms, JPEG encode {:.1} ms",
            decode.as_secs_f64() * 1e3,
            convert.as_secs_f64() * 1e3,
            resize.as_secs_f64() * 1e3,
            encode.as_secs_f64() * 1e3
        );
    }
    let png_mb = std::fs::metadata(&png).unwrap().len() as f64 / 1e6;
    let prefetch = usize::from(np);
    rt.block_on(async {
        let (jpg_rate, _) = through_worker(dir.path(), &jpgs, np, prefetch).await;
        let (png_rate, _) = through_worker(dir.path(), &pngs, np, prefetch).await;
        println!("stills: {n} frames, --parallel {np}, prefetch {prefetch}, tiny model, CPU");
        println!("1024x768 JPEG, sent as it is       {jpg_rate:8.1} frames/s  preparation {prep_jpg:6.1} ms/frame");
        println!("4000x3000 PNG ({png_mb:.1} MB), prepared {png_rate:8.1} frames/s  preparation {prep_png:6.1} ms/frame  ({:.2} of the JPEG rate)", png_rate / jpg_rate);
        // A model that takes 500 ms a frame, as a 7B model on a GPU does:
        // the fake server, answering after a delay, supervised the same way.
        let m = n.min(60);
        let slow = ServerConfig {
            bin: PathBuf::from(env!("CARGO_BIN_EXE_fake-llama-server")),
            extra_args: vec!["--delay-ms".into(), "500".into()],
            ..server_config(np)
        };
        let (jpg_slow, _) = through_server(dir.path(), &jpgs[..m], slow.clone(), prefetch).await;
        let (png_slow, _) = through_server(dir.path(), &pngs[..m], slow, prefetch).await;
        println!("the same with a 500 ms/frame server ({m} frames):");
        println!("1024x768 JPEG                      {jpg_slow:8.2} frames/s");
        println!("4000x3000 PNG                      {png_slow:8.2} frames/s  ({:.2} of the JPEG rate)", png_slow / jpg_slow);
    });
}
