//! What real models and real servers need (#13): the request's `model`
//! field, the server's slots, a context per slot that holds a frame, and a
//! server that reads images. Fake-server tests for the servers that are not
//! llama-server (vLLM insists on `model`) and for faults on demand; the
//! real llama-server ones are in `server.rs`.
//!
//! SQLite only: these are about what is sent to a server and how its
//! answers are read, the same whatever the database.

use crate::util::{Env, FakeServer, assert_exit, stderr};
use crate::worker::run_worker;

/// A server that rejects requests without its model's name (as vLLM
/// does): the attached worker asks `/v1/models` and names it.
#[tokio::test]
async fn an_attached_worker_names_the_servers_model() {
    let env = Env::new();
    env.enqueue_images("named", 4, &[]);
    let fake = FakeServer::start(&env, &["--require-model", "--model-id", "vlm-7b-q4"]);
    let o = run_worker(&env, &fake.url(), &[]);
    assert_exit(&o, 0);
    assert_eq!(
        env.count("SELECT count(*) FROM descriptions WHERE model = 'vlm-7b-q4'")
            .await,
        4,
        "{}",
        stderr(&o)
    );

    // --model-name wins over the server's list; a name the server does not
    // serve (HTTP 404, as vLLM answers) stops the worker and fails no frame.
    // (Another model is another pass: the frames are queued for one.)
    env.enqueue_images("renamed", 2, &["--pass", "renamed"]);
    let o = run_worker(
        &env,
        &fake.url(),
        &["--model-name", "other", "--pass", "renamed"],
    );
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("The model `\"other\"` does not exist"),
        "{err}"
    );
    assert!(err.contains("--model-name"), "{err}");
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'queued'")
            .await,
        2
    );
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'failed'")
            .await,
        0
    );
}

/// An HTTP 400 "exceeds the available context size" is a setting to
/// change, not a bad frame: the worker stops naming --ctx-per-slot and
/// every frame stays queued, untried.
#[tokio::test]
async fn a_context_overflow_stops_the_worker_and_fails_no_frame() {
    let env = Env::new();
    env.enqueue_images("big", 6, &[]);
    let fake = FakeServer::start(&env, &["--answers", "context", "--slots", "2"]);
    let o = run_worker(&env, &fake.url(), &[]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(err.contains("--ctx-per-slot"), "{err}");
    assert!(err.contains("2210 tokens needed, 1024 per slot"), "{err}");
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'queued'")
            .await,
        6
    );
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE attempts > 0")
            .await,
        0
    );
    assert_eq!(env.count("SELECT count(*) FROM attempts").await, 0);
}

/// With no --parallel, an attached worker keeps as many frames in flight
/// as the server has slots (`/props` total_slots).
#[tokio::test]
async fn an_attached_worker_fills_the_servers_slots() {
    let env = Env::new();
    env.enqueue_images("slots", 12, &[]);
    let peak = env.path().join("peak");
    let fake = FakeServer::start(
        &env,
        &[
            "--slots",
            "3",
            "--delay-ms",
            "300",
            "--peak-file",
            peak.to_str().unwrap(),
        ],
    );
    let o = run_worker(&env, &fake.url(), &[]);
    assert_exit(&o, 0);
    assert!(
        stderr(&o).contains("has 3 slot(s): --parallel 3"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(&peak).unwrap(), "3");
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'done'")
            .await,
        12
    );

    // A server without /props: one at a time, as before.
    env.enqueue_images("plain", 3, &[]);
    let plain_peak = env.path().join("plain-peak");
    let plain = FakeServer::start(
        &env,
        &[
            "--no-props",
            "--delay-ms",
            "100",
            "--peak-file",
            plain_peak.to_str().unwrap(),
        ],
    );
    let o = run_worker(&env, &plain.url(), &[]);
    assert_exit(&o, 0);
    assert_eq!(std::fs::read_to_string(&plain_peak).unwrap(), "1");
}

/// A server that says it cannot read images is refused before any frame
/// is claimed; so is one whose slot cannot hold even the answer.
#[tokio::test]
async fn a_server_that_cannot_take_a_frame_is_refused_at_start() {
    let env = Env::new();
    env.enqueue_images("blind", 2, &[]);
    let blind = FakeServer::start(&env, &["--no-vision"]);
    let o = run_worker(&env, &blind.url(), &[]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("has no vision support"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("--mmproj"), "{}", stderr(&o));

    let tiny = FakeServer::start(&env, &["--slot-ctx", "256"]);
    let o = run_worker(&env, &tiny.url(), &["--max-tokens", "384"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("--ctx-per-slot"), "{}", stderr(&o));
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'queued'")
            .await,
        2
    );
    assert_eq!(env.count("SELECT count(*) FROM attempts").await, 0);
}

/// A JPEG of `w`×`h` whose EXIF says "rotate 90° clockwise to view"
/// (orientation 6), as phones write them.
pub fn exif_rotated_jpeg(path: &std::path::Path, w: u32, h: u32) {
    let mut jpeg = Vec::new();
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 4) as u8, (y * 4) as u8, 60]))
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    // APP1 "Exif": a little-endian TIFF header and one IFD entry,
    // Orientation (0x0112), SHORT, 1 value: 6.
    let mut app1 = vec![0xFF, 0xE1, 0, 34];
    app1.extend_from_slice(b"Exif\0\0II*\0");
    app1.extend_from_slice(&8u32.to_le_bytes());
    app1.extend_from_slice(&1u16.to_le_bytes());
    app1.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0]);
    app1.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(app1.len(), 2 + 34);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    std::fs::write(path, out).unwrap();
}

/// The image a recorded request carries, decoded.
fn sent_image(request: &serde_json::Value) -> (String, image::DynamicImage, usize) {
    let uri = request["messages"][1]["content"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|p| p["image_url"]["url"].as_str())
        .unwrap();
    let (head, b64) = uri.split_once(',').unwrap();
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    (
        head.to_string(),
        image::load_from_memory(&bytes).unwrap(),
        uri.len(),
    )
}

/// What the server is sent: a 4000×3000 PNG as a JPEG of 1024×768 (the
/// request under 1 MB), an EXIF-rotated photo upright, a TIFF as a JPEG, a
/// small PNG as it is.
#[tokio::test]
async fn frames_are_sent_upright_small_and_in_a_format_servers_read() {
    let env = Env::new();
    let dir = env.path().join("stills");
    std::fs::create_dir_all(&dir).unwrap();
    image::RgbImage::from_fn(4000, 3000, |x, y| {
        image::Rgb([(x / 16) as u8, (y / 12) as u8, 90])
    })
    .save(dir.join("a_big.png"))
    .unwrap();
    exif_rotated_jpeg(&dir.join("b_phone.jpg"), 64, 32);
    image::RgbImage::from_pixel(40, 30, image::Rgb([1, 2, 3]))
        .save(dir.join("c_scan.tiff"))
        .unwrap();
    image::RgbImage::from_pixel(40, 30, image::Rgb([4, 5, 6]))
        .save(dir.join("d_small.png"))
        .unwrap();
    // Every still sent, though the two flat ones are near-duplicates.
    assert_exit(
        &env.run(["enqueue".as_ref(), "--no-dedupe".as_ref(), dir.as_os_str()]),
        0,
    );
    let record = env.path().join("requests.jsonl");
    let fake = FakeServer::start(&env, &["--record", record.to_str().unwrap()]);
    let o = run_worker(&env, &fake.url(), &["--parallel", "1"]);
    assert_exit(&o, 0);
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'done'")
            .await,
        4
    );
    let text = std::fs::read_to_string(&record).unwrap();
    let sent: Vec<(String, (u32, u32), usize)> = text
        .lines()
        .map(|l| {
            let (head, img, len) = sent_image(&serde_json::from_str(l).unwrap());
            (head, (img.width(), img.height()), len)
        })
        .collect();
    assert_eq!(sent.len(), 4);
    // Prepared ahead of the slot, so in any order: told apart by what came.
    let find = |dims: (u32, u32)| {
        sent.iter()
            .find(|s| s.1 == dims)
            .unwrap_or_else(|| panic!("no {dims:?} image among {sent:?}"))
    };
    let big = find((1024, 768));
    assert_eq!(big.0, "data:image/jpeg;base64");
    assert!(
        big.2 < 1_000_000,
        "the 4000×3000 frame's image is {} bytes",
        big.2
    );
    let longest = text.lines().map(str::len).max().unwrap();
    assert!(
        longest < 1_000_000,
        "every request under 1 MB: {longest} bytes"
    );
    find((32, 64)); // the 64×32 photo, turned upright
    assert!(
        !sent.iter().any(|s| s.1 == (64, 32)),
        "sent sideways: {sent:?}"
    );
    let scan_and_small: Vec<&str> = sent
        .iter()
        .filter(|s| s.1 == (40, 30))
        .map(|s| s.0.as_str())
        .collect();
    assert_eq!(scan_and_small.len(), 2);
    assert!(
        scan_and_small.contains(&"data:image/jpeg;base64"),
        "the TIFF as a JPEG"
    );
    assert!(
        scan_and_small.contains(&"data:image/png;base64"),
        "a small PNG as it is"
    );
}

/// The worker's `--max-side` decides how large a frame is sent.
#[tokio::test]
async fn the_worker_sends_frames_no_larger_than_max_side() {
    let env = Env::new();
    let dir = env.path().join("wide");
    std::fs::create_dir_all(&dir).unwrap();
    image::RgbImage::from_pixel(800, 600, image::Rgb([30, 60, 90]))
        .save(dir.join("f.png"))
        .unwrap();
    assert_exit(&env.run(["enqueue".as_ref(), dir.as_os_str()]), 0);
    let record = env.path().join("requests.jsonl");
    let fake = FakeServer::start(&env, &["--record", record.to_str().unwrap()]);
    assert_exit(&run_worker(&env, &fake.url(), &["--max-side", "200"]), 0);
    let text = std::fs::read_to_string(&record).unwrap();
    let (head, img, _) = sent_image(&serde_json::from_str(text.trim()).unwrap());
    assert_eq!(head, "data:image/jpeg;base64");
    assert_eq!((img.width(), img.height()), (200, 150));
}
