//! `cinecut report` on a 5,000-frame film: seconds to write it, bytes per
//! frame and the reporter's peak RSS, against the targets (≤ 5 s, ≤ 20 KB a
//! frame). Two films: a clean test pattern, and the same under film grain
//! (grain costs JPEG bytes, so it is the harder case for the size budget).
//! The frames are extracted by `cinecut enqueue` itself (1024 px JPEGs, as
//! a real film's are); the descriptions are written with SQL at the length
//! a 7B model's answers have.
//!
//! Run: `cargo bench --bench report` (FRAMES=N to change).

use std::path::Path;

#[path = "../tests/util/browser.rs"]
#[allow(dead_code)]
mod browser;

use cinecut::ingest::film::{FilmOptions, SelectMode};
use cinecut::ingest::probe::{filter_chain, output_args};
use cinecut::ingest::shots::Pick;
use cinecut::ingest::subtitles::SubtitleSource;
use std::process::{Command, Stdio};
use std::time::Instant;

/// The child's peak resident set (VmHWM) in KiB, read while it runs.
fn run_watched(cmd: &mut Command) -> (f64, u64) {
    let t = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let mut peak = 0;
    loop {
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
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{cmd:?}");
            return (t.elapsed().as_secs_f64(), peak);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Times `cinecut report` on `db` and prints a row.
fn report(db: &Path, dir: &Path, frames: u32, name: &str) {
    let bin = env!("CARGO_BIN_EXE_cinecut");
    let out = dir.join("report.html");
    let (secs, peak) = run_watched(
        Command::new(bin)
            .arg("--db")
            .arg(db)
            .arg("report")
            .arg("-o")
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let bytes = std::fs::metadata(&out).unwrap().len();
    println!(
        "{:<8} {:>8.2} {:>10.0} {:>11.1} {:>9.1} {:>7} MiB {:>9.2}x",
        name,
        secs,
        f64::from(frames) / secs,
        bytes as f64 / 1024.0 / f64::from(frames),
        bytes as f64 / 1024.0 / 1024.0,
        peak / 1024,
        secs / 5.0,
    );
}

/// The report in headless Chromium: from navigation to the load event,
/// and what typing a word in the filter box costs until the next frame is
/// painted (the page must not freeze at 5,000 cards).
fn in_the_browser(report: &Path) {
    let mut b = browser::Browser::launch();
    let t = Instant::now();
    b.open(report);
    let load = t.elapsed().as_secs_f64();
    let filter = b.eval(
        "(async () => { const box = document.getElementById('filter'); \
           const t = performance.now(); box.value = 'ominous'; \
           box.dispatchEvent(new Event('input')); \
           await new Promise(r => requestAnimationFrame(() => setTimeout(r))); \
           const shown = document.getElementById('shown').textContent; \
           return [performance.now() - t, shown]; })()",
    );
    let scroll = b.eval(
        "(async () => { const t = performance.now(); window.scrollTo(0, document.body.scrollHeight / 2); \
           await new Promise(r => requestAnimationFrame(() => setTimeout(r))); \
           return performance.now() - t; })()",
    );
    println!(
        "  in headless Chromium: loaded in {load:.2} s; filter \"ominous\" -> {} in {:.0} ms; a jump to mid-page painted in {:.0} ms",
        filter[1].as_str().unwrap_or("?"),
        filter[0].as_f64().unwrap_or(f64::NAN),
        scroll.as_f64().unwrap_or(f64::NAN)
    );
}

/// What the thumbnails cost at extraction: ffmpeg with the frames only,
/// then with [`output_args`] (frames + thumbnails from the same decode),
/// every frame selected.
fn extraction_cost(video: &Path, dir: &Path, name: &str) {
    let opts = FilmOptions {
        select: SelectMode::All,
        scene_threshold: 0.3,
        colour_threshold: 27.0,
        max_gap_s: 10.0,
        min_shot_s: 0.6,
        pick: Pick::Middle,
        per_shot: None,
        every_s: 5.0,
        max_side: 1024,
        frames_dir: dir.join("unused"),
        replace: false,
        progress: false,
        subtitles: SubtitleSource::Off,
        dedupe_distance: None,
    };
    let time = |args: Vec<std::ffi::OsString>, out: &Path| {
        std::fs::create_dir_all(out.join("thumbs")).unwrap();
        let t = Instant::now();
        let ok = Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-i"])
            .arg(video)
            .args(args)
            .status()
            .unwrap();
        assert!(ok.success());
        let secs = t.elapsed().as_secs_f64();
        std::fs::remove_dir_all(out).unwrap();
        secs
    };
    let frames_only = dir.join("frames-only");
    let plain: Vec<std::ffi::OsString> = [
        "-map",
        "0:v:0",
        "-vf",
        &filter_chain(&opts),
        "-fps_mode",
        "passthrough",
        "-q:v",
        "3",
        "-y",
    ]
    .iter()
    .map(Into::into)
    .chain([frames_only.join("frame_%06d.jpg").into()])
    .collect();
    let bare = time(plain, &frames_only);
    let both_dir = dir.join("with-thumbs");
    let both = time(output_args(&opts, &both_dir), &both_dir);
    println!(
        "  {name}: extraction of every frame, frames only {bare:.2} s, with thumbnails {both:.2} s ({:+.0} %)",
        100.0 * (both / bare - 1.0)
    );
}

fn make_film(path: &Path, frames: u32, grain: bool) {
    let source = format!(
        "testsrc2=size=1024x576:rate=25:duration={}",
        f64::from(frames) / 25.0
    );
    let filter = if grain {
        "noise=alls=24:allf=t+u"
    } else {
        "null"
    };
    let status = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(&source)
        .args([
            "-vf",
            filter,
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-crf",
            "16",
        ])
        .arg(path)
        .status()
        .expect("ffmpeg (scripts/setup.sh installs it)");
    assert!(status.success());
}

fn main() {
    let frames: u32 = std::env::var("FRAMES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    let bin = env!("CARGO_BIN_EXE_cinecut");
    println!("cinecut report, {frames} frames of 1024x576 (targets: <= 5 s, <= 20 KB/frame)");
    println!(
        "{:<8} {:>8} {:>10} {:>11} {:>9} {:>10} {:>10}",
        "film", "seconds", "frames/s", "KB/frame", "MiB", "peak RSS", "vs 5 s"
    );
    for grain in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("bench.db");
        let video = dir.path().join("film.mp4");
        make_film(&video, frames, grain);
        let o = Command::new(bin)
            .arg("--db")
            .arg(&db)
            .args([
                "enqueue",
                "--select",
                "interval",
                "--every",
                "0.03",
                "--no-dedupe",
            ])
            .arg(&video)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(o.success());
        let describe =
            "INSERT INTO descriptions (job_id, frame_id, pass_id, visual_content, mood, action, setting,
                                       fields, model, prompt_version, created_at)
             SELECT job, frame, pass, v, m, a, s,
                    json_object('visual_content', v, 'mood', m, 'action', a, 'setting', s),
                    'llava-1.6-mistral-7b', 1, 0
             FROM (SELECT j.id AS job, fr.id AS frame, j.pass_id AS pass,
               'A woman in a dark raincoat stands at a rain-streaked window of a small apartment, ' ||
               'her face lit from the side by a flickering neon sign outside; behind her a table ' ||
               'with two cups and an unopened letter, frame ' || frame_index AS v,
               CASE frame_index % 5 WHEN 0 THEN 'tense, quiet' WHEN 1 THEN 'melancholic' WHEN 2 THEN 'hopeful'
                    WHEN 3 THEN 'ominous' ELSE 'calm' END AS m,
               'She waits, then turns towards the door as a shadow passes the frosted glass' AS a,
               'A cramped city apartment at night, rain outside, neon light' AS s
               FROM jobs j JOIN frames fr ON fr.id = j.frame_id);
             UPDATE jobs SET state = 'done';";
        let o = Command::new("sqlite3")
            .arg(&db)
            .arg(describe)
            .status()
            .unwrap();
        assert!(o.success());
        let count = Command::new("sqlite3")
            .arg(&db)
            .arg("SELECT count(*) FROM frames")
            .output()
            .unwrap();
        let frames: u32 = String::from_utf8_lossy(&count.stdout)
            .trim()
            .parse()
            .unwrap();
        let name = if grain { "grainy" } else { "clean" };
        report(&db, dir.path(), frames, name);
        if grain {
            in_the_browser(&dir.path().join("report.html"));
        }
        extraction_cost(&video, dir.path(), name);
        if grain {
            // Frames with no thumbnail beside them (stills, or a film
            // extracted before thumbnails were): each one decoded.
            let thumbs = dir.path().join("bench-frames/1/thumbs");
            std::fs::remove_dir_all(&thumbs).unwrap();
            report(&db, dir.path(), frames, "decoded");
        }
    }
}
