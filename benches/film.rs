//! Film ingestion: a generated 10-minute 720p film in `scene` mode through
//! `cinecut enqueue`, next to the bare ffmpeg command that does the same
//! detection (same filter graph, same JPEG and thumbnail outputs), in one run; and the
//! `keyframes` mode's speed-up; then the model calls near-duplicate
//! detection saves, on a static clip and on the cut-heavy film, side by side.
//!
//! Run: `cargo bench --bench film` (MINUTES=N to change). The film is made
//! once under $CINECUT_CACHE/bench-film.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use cinecut::ingest::film::{FilmOptions, SelectMode, output_args};
use cinecut::ingest::subtitles::SubtitleSource;

fn cache() -> PathBuf {
    std::env::var_os("CINECUT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/cinecut"))
}

fn run(cmd: &mut Command) -> f64 {
    let t = Instant::now();
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed().as_secs_f64()
}

fn main() {
    let minutes: u32 = std::env::var("MINUTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let dir = cache().join("bench-film");
    std::fs::create_dir_all(&dir).unwrap();
    let film = dir.join(format!("film-{minutes}min-720p.mp4"));
    if !film.exists() {
        eprintln!("making a {minutes}-minute 720p film (once)");
        // Five 7-second shots, encoded alike, then repeated by the concat
        // demuxer without re-encoding: a cut every 7 s.
        let sources = [
            "testsrc2",
            "smptebars",
            "mandelbrot",
            "rgbtestsrc",
            "testsrc",
        ];
        let mut list = String::new();
        for (k, src) in sources.iter().enumerate() {
            let clip = dir.join(format!("shot{k}.mp4"));
            let ok = Command::new("ffmpeg")
                .args([
                    "-hide_banner",
                    "-loglevel",
                    "error",
                    "-y",
                    "-f",
                    "lavfi",
                    "-i",
                ])
                .arg(format!("{src}=size=1280x720:rate=24"))
                .args([
                    "-t", "7", "-c:v", "libx264", "-preset", "veryfast", "-g", "48", "-pix_fmt",
                    "yuv420p",
                ])
                .arg(&clip)
                .status()
                .unwrap()
                .success();
            assert!(ok, "making shot {k} failed");
        }
        for i in 0..(minutes * 60).div_ceil(7) {
            list += &format!(
                "file '{}'\n",
                dir.join(format!("shot{}.mp4", i as usize % sources.len()))
                    .display()
            );
        }
        let list_file = dir.join("list.txt");
        std::fs::write(&list_file, list).unwrap();
        let ok = Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "concat",
                "-safe",
                "0",
                "-i",
            ])
            .arg(&list_file)
            .args(["-c", "copy", "-t", &(minutes * 60).to_string()])
            .arg(&film)
            .status()
            .unwrap()
            .success();
        assert!(ok, "making the film failed");
    }

    let work = tempfile::tempdir().unwrap();
    let opts = FilmOptions {
        select: SelectMode::Scene,
        scene_threshold: 0.3,
        max_gap_s: 10.0,
        min_shot_s: 0.6,
        every_s: 5.0,
        max_side: 1024,
        frames_dir: work.path().join("x"),
        replace: false,
        progress: false,
        subtitles: SubtitleSource::Off,
        dedupe_distance: None,
    };
    let bare_out = work.path().join("bare");
    std::fs::create_dir_all(bare_out.join("thumbs")).unwrap();
    let bare = run(Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-nostats",
            "-loglevel",
            "info",
            "-i",
        ])
        .arg(&film)
        .args(output_args(&opts, &bare_out)));
    let bin = env!("CARGO_BIN_EXE_cinecut");
    let scene = run(Command::new(bin)
        .arg("--db")
        .arg(work.path().join("a.db"))
        .arg("enqueue")
        .arg(&film));
    let key = run(Command::new(bin)
        .arg("--db")
        .arg(work.path().join("b.db"))
        .args(["enqueue", "--select", "keyframes"])
        .arg(&film));
    let frames = std::fs::read_dir(&bare_out).unwrap().count() - 1; // thumbs/
    println!("film: {minutes} min, 1280x720, 24 fps, H.264; scene mode found {frames} frames");
    println!("bare ffmpeg, same filter chain   {bare:7.2} s");
    println!(
        "cinecut enqueue (scene)          {scene:7.2} s   {:.2}x the bare ffmpeg time (target <= 1.1)",
        scene / bare
    );
    println!(
        "cinecut enqueue --select keyframes {key:5.2} s   {:.1}x faster than scene mode",
        scene / key
    );

    // Model calls saved by dedupe: one frame a second, so that a static
    // shot repeats itself.
    let still = dir.join("static-2min-720p.mp4");
    if !still.exists() {
        eprintln!("making a 2-minute static 720p clip with sensor noise (once)");
        let ok = Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
            ])
            .arg("smptehdbars=size=1280x720:rate=24:duration=120,noise=alls=20:allf=t")
            .args([
                "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
            ])
            .arg(&still)
            .status()
            .unwrap()
            .success();
        assert!(ok, "making the static clip failed");
    }
    println!();
    println!("near-duplicates, --select interval --every 1:");
    println!(
        "{:<34} {:>7} {:>12} {:>12}",
        "clip", "frames", "model calls", "saved"
    );
    for (name, clip, db) in [
        ("static 2 min, sensor noise", &still, "c.db"),
        ("cut-heavy (a cut every 7 s)", &film, "d.db"),
    ] {
        let out = Command::new(bin)
            .arg("--db")
            .arg(work.path().join(db))
            .args(["enqueue", "--json", "--select", "interval", "--every", "1"])
            .arg(clip)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let film = &summary["films"][0];
        let (frames, copies) = (
            film["new"].as_u64().unwrap(),
            film["near_duplicates"].as_u64().unwrap(),
        );
        println!(
            "{name:<34} {frames:>7} {:>12} {:>11.0}%",
            frames - copies,
            100.0 * copies as f64 / frames as f64
        );
    }
}
