//! Film ingestion: a generated 10-minute 720p film in `scene` mode through
//! `cinecut enqueue` (shots, then the middle of each), next to bare ffmpeg
//! scene detection on the same file and to the one-pass extraction of
//! first frames, in one run; and the `keyframes` mode's speed-up; then the model calls near-duplicate
//! detection saves, on a static clip and on the cut-heavy film, side by side.
//!
//! Run: `cargo bench --bench film` (MINUTES=N to change). The film is made
//! once under $CINECUT_CACHE/bench-film.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use cinecut::ingest::film::{FilmOptions, SelectMode};
use cinecut::ingest::probe::output_args;
use cinecut::ingest::shots::Pick;
use cinecut::ingest::subtitles::SubtitleSource;

fn cache() -> PathBuf {
    std::env::var_os("CINECUT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/cinecut"))
}

/// Encodes a lavfi source as H.264 (fast preset, 4:2:0) into `out`.
fn lavfi_clip(source: &str, extra: &[&str], out: &std::path::Path) -> bool {
    Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            source,
        ])
        .args(extra)
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        ])
        .arg(out)
        .status()
        .unwrap()
        .success()
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
            let ok = lavfi_clip(
                &format!("{src}=size=1280x720:rate=24"),
                &["-t", "7", "-g", "48"],
                &clip,
            );
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
        colour_threshold: 27.0,
        max_gap_s: 10.0,
        min_shot_s: 0.6,
        pick: Pick::Middle,
        per_shot: None,
        every_s: 5.0,
        max_side: 1024,
        frames_dir: work.path().join("x"),
        replace: false,
        progress: false,
        subtitles: SubtitleSource::Off,
        dedupe_distance: None,
    };
    let ffmpeg = || {
        let mut c = Command::new("ffmpeg");
        c.args(["-hide_banner", "-nostdin", "-nostats", "-loglevel", "info"]);
        c
    };
    // Bare scene detection: the decode and the scores, nothing written.
    let detect = run(ffmpeg().arg("-i").arg(&film).args([
        "-vf",
        "select='gt(scene,0.3)',showinfo",
        "-f",
        "null",
        "-",
    ]));
    // The one-pass extraction of first frames (cinecut's scene mode before
    // shots): the same select, with the JPEG, thumbnail and hash outputs.
    let bare_out = work.path().join("bare");
    std::fs::create_dir_all(bare_out.join("thumbs")).unwrap();
    let one_pass = run(ffmpeg()
        .arg("-i")
        .arg(&film)
        .args(output_args(&opts, &bare_out)));
    let bin = env!("CARGO_BIN_EXE_cinecut");
    let enqueue = |db: &str, flags: &[&str]| {
        run(Command::new(bin)
            .arg("--db")
            .arg(work.path().join(db))
            .arg("enqueue")
            .args(flags)
            .arg(&film))
    };
    let middle = enqueue("a.db", &[]);
    let first = enqueue("a2.db", &["--pick", "first", "--film", "first"]);
    let sharpest = enqueue("a3.db", &["--pick", "sharpest", "--film", "sharpest"]);
    let key = enqueue("b.db", &["--select", "keyframes"]);
    let conn = rusqlite::Connection::open(work.path().join("a.db")).unwrap();
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    let (shots, frames) = (
        count("SELECT count(*) FROM shots"),
        count("SELECT count(*) FROM frames"),
    );
    println!("film: {minutes} min, 1280x720, 24 fps, H.264; {shots} shots, {frames} frames");
    println!("bare ffmpeg scene detection (decode + scores)       {detect:7.2} s");
    println!(
        "one pass, first frame after each cut, with outputs  {one_pass:7.2} s   {:.2}x detection",
        one_pass / detect
    );
    println!(
        "cinecut enqueue (scene, --pick middle)              {middle:7.2} s   {:.2}x detection (target <= 1.1)",
        middle / detect
    );
    println!(
        "cinecut enqueue --pick first                        {first:7.2} s   {:.2}x detection",
        first / detect
    );
    println!(
        "cinecut enqueue --pick sharpest (5 candidates)      {sharpest:7.2} s   {:.2}x detection",
        sharpest / detect
    );
    println!(
        "cinecut enqueue --select keyframes                  {key:7.2} s   {:.1}x faster than scene mode",
        middle / key
    );

    // Model calls saved by dedupe: one frame a second, so that a static
    // shot repeats itself.
    let still = dir.join("static-2min-720p.mp4");
    if !still.exists() {
        eprintln!("making a 2-minute static 720p clip with sensor noise (once)");
        let ok = lavfi_clip(
            "smptehdbars=size=1280x720:rate=24:duration=120,noise=alls=20:allf=t",
            &[],
            &still,
        );
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
