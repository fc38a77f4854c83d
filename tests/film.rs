//! Whole films through ffmpeg: videos generated with lavfi sources, with
//! cuts at known times.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{Env, assert_exit, ffmpeg, on_both, stderr, stdout};

/// Three 2-second shots of different sources: cuts at 2 s and 4 s.
pub fn three_shots(env: &Env, name: &str) -> PathBuf {
    let out = env.path().join(name);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25:duration=2",
        "-f",
        "lavfi",
        "-i",
        "color=c=red:size=320x240:rate=25:duration=2",
        "-f",
        "lavfi",
        "-i",
        "smptebars=size=320x240:rate=25:duration=2",
        "-filter_complex",
        "[0][1][2]concat=n=3:v=1:a=0",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "25",
        out.to_str().unwrap(),
    ]);
    out
}

async fn frames_of(env: &Env, title: &str) -> Vec<(i64, i64, i64, i64, String)> {
    let rows = env.rows_now(&format!(
        "SELECT fr.frame_index, fr.pts_ms, fr.width, fr.height, fr.path FROM frames fr \
         JOIN films f ON f.id = fr.film_id WHERE f.title = '{title}' ORDER BY fr.frame_index"
    ));
    let n = |r: &serde_json::Map<String, serde_json::Value>, c: &str| r[c].as_i64().unwrap();
    rows.iter()
        .map(|r| {
            let path = r["path"].as_str().unwrap().to_string();
            (
                n(r, "frame_index"),
                n(r, "pts_ms"),
                n(r, "width"),
                n(r, "height"),
                path,
            )
        })
        .collect()
}

on_both!(async scene_mode_finds_the_cuts_at_their_times);

async fn scene_mode_finds_the_cuts_at_their_times(env: &Env) {
    let video = three_shots(env, "my fïlm with spaces.mp4");
    let o = env.run(["enqueue".as_ref(), video.as_os_str()]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("film \"my fïlm with spaces\": 3 new"),
        "{}",
        stdout(&o)
    );
    let frames = frames_of(env, "my fïlm with spaces").await;
    let times: Vec<i64> = frames.iter().map(|f| f.1).collect();
    // --pick middle (the default): each shot's middle, ± one frame.
    assert_eq!(times.len(), 3, "{times:?}");
    for (got, want) in times.iter().zip([1000, 3000, 5000]) {
        assert!(
            (got - want).abs() <= 40,
            "frame at {got} ms, want the shot's middle {want} ms ± one frame"
        );
    }
    // The shots: cuts at 2 s and 4 s, source frame numbers at 25 fps, the
    // cut's score; each frame names its shot.
    let shots: Vec<(i64, i64, i64, i64, i64, f64)> = env
        .rows_now(
            "SELECT shot_index, start_ms, end_ms, first_frame, last_frame, score FROM shots \
             ORDER BY shot_index",
        )
        .iter()
        .map(|r| {
            let n = |c: &str| r[c].as_i64().unwrap();
            let score = r["score"].as_f64().unwrap();
            (
                n("shot_index"),
                n("start_ms"),
                n("end_ms"),
                n("first_frame"),
                n("last_frame"),
                score,
            )
        })
        .collect();
    assert_eq!(
        shots
            .iter()
            .map(|s| (s.0, s.1, s.2, s.3, s.4))
            .collect::<Vec<_>>(),
        vec![
            (0, 0, 2000, 0, 49),
            (1, 2000, 4000, 50, 99),
            (2, 4000, 6000, 100, 149)
        ]
    );
    assert!(
        shots[0].5 == 0.0 && shots[1].5 > 0.3 && shots[2].5 > 0.3,
        "{shots:?}"
    );
    assert_eq!(
        env.count_now(
            "SELECT count(*) FROM frames fr JOIN shots s ON s.id = fr.shot_id \
             WHERE fr.pts_ms >= s.start_ms AND fr.pts_ms < s.end_ms"
        ),
        3
    );
    for (_, _, w, h, path) in &frames {
        assert_eq!((*w, *h), (320, 240));
        assert!(
            Path::new(path).is_absolute() && Path::new(path).is_file(),
            "{path}"
        );
        assert!(image::open(path).is_ok(), "a real JPEG");
    }
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'queued'")
            .await,
        3
    );
    assert_eq!(env.count("SELECT duration_ms FROM films").await, 6000);

    // Again: nothing new, and ffmpeg is not even run (a wrapper first on
    // PATH records every call, then runs the real one).
    let wrappers = env.path().join("wrappers");
    std::fs::create_dir_all(&wrappers).unwrap();
    let calls = env.path().join("ffmpeg-calls");
    let real =
        String::from_utf8(Command::new("which").arg("ffmpeg").output().unwrap().stdout).unwrap();
    let wrapper = wrappers.join("ffmpeg");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\nexec {} \"$@\"\n",
            calls.display(),
            real.trim()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!("{}:{}", wrappers.display(), std::env::var("PATH").unwrap());
    // The wrapper is what PATH finds, and it records.
    let probe = Command::new("ffmpeg")
        .arg("-version")
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(probe.status.success() && calls.exists());
    std::fs::remove_file(&calls).unwrap();
    let o = env
        .cmd(["enqueue".as_ref(), video.as_os_str()])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert!(
        !calls.exists(),
        "ffmpeg ran: {}",
        std::fs::read_to_string(&calls).unwrap_or_default()
    );
    assert!(
        stdout(&o).contains("0 new, 3 already queued"),
        "{}",
        stdout(&o)
    );
    assert_eq!(env.count("SELECT count(*) FROM frames").await, 3);
}

on_both!(async a_static_shot_gets_a_frame_every_max_gap);

async fn a_static_shot_gets_a_frame_every_max_gap(env: &Env) {
    let video = env.path().join("static.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=blue:size=160x120:rate=10:duration=25",
        "-c:v",
        "libx264",
        video.to_str().unwrap(),
    ]);
    assert_exit(
        &env.run([
            "enqueue".as_ref(),
            video.as_os_str(),
            "--max-gap".as_ref(),
            "10".as_ref(),
        ]),
        0,
    );
    let times: Vec<i64> = frames_of(env, "static").await.iter().map(|f| f.1).collect();
    // One 25 s shot: three parts of 8.33 s, each at its middle (the frame
    // nearest to it, at 10 fps).
    assert_eq!(times, vec![4200, 12_500, 20_800]);

    // --pick first: the start of each part (the first frame at or after it).
    assert_exit(
        &env.run([
            "enqueue".as_ref(),
            video.as_os_str(),
            "--film".as_ref(),
            "first".as_ref(),
            "--pick".as_ref(),
            "first".as_ref(),
        ]),
        0,
    );
    let times: Vec<i64> = frames_of(env, "first").await.iter().map(|f| f.1).collect();
    assert_eq!(times, vec![0, 8400, 16_700]);
}

on_both!(async a_three_minute_shot_with_per_shot_3_gives_3_frames);

/// `--per-shot N`: a shot longer than --max-gap gets N evenly spaced frames.
async fn a_three_minute_shot_with_per_shot_3_gives_3_frames(env: &Env) {
    let video = env.path().join("long take.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "smptebars=size=160x120:rate=5:duration=180",
        "-c:v",
        "libx264",
        video.to_str().unwrap(),
    ]);
    let o = env.run([
        "enqueue".as_ref(),
        video.as_os_str(),
        "--per-shot".as_ref(),
        "3".as_ref(),
        "--no-dedupe".as_ref(),
    ]);
    assert_exit(&o, 0);
    let times: Vec<i64> = frames_of(env, "long take")
        .await
        .iter()
        .map(|f| f.1)
        .collect();
    assert_eq!(times, vec![30_000, 90_000, 150_000]);
    assert_eq!(env.count_now("SELECT count(*) FROM shots"), 1);
    assert_eq!(
        env.count_now("SELECT count(DISTINCT shot_id) FROM frames WHERE shot_id IS NOT NULL"),
        1
    );
}

on_both!(async a_variable_frame_rate_film_keeps_its_real_timestamps);

async fn a_variable_frame_rate_film_keeps_its_real_timestamps(env: &Env) {
    let video = env.path().join("vfr.mkv");
    // 1 s at 10 fps, then 1 s at 4 fps: frame times only the container knows.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=10:duration=1",
        "-f",
        "lavfi",
        "-i",
        "smptebars=size=160x120:rate=4:duration=1",
        "-filter_complex",
        "[0]settb=1/1000[a];[1]settb=1/1000[b];[a][b]concat=n=2:v=1:a=0",
        "-fps_mode",
        "vfr",
        "-c:v",
        "libx264",
        video.to_str().unwrap(),
    ]);
    assert_exit(
        &env.run([
            "enqueue".as_ref(),
            video.as_os_str(),
            "--select".as_ref(),
            "all".as_ref(),
        ]),
        0,
    );
    let times: Vec<i64> = frames_of(env, "vfr").await.iter().map(|f| f.1).collect();
    let want: Vec<i64> = (0..10)
        .map(|i| i * 100)
        .chain((0..4).map(|i| 1000 + i * 250))
        .collect();
    assert_eq!(times, want);
}

on_both!(async keyframes_and_interval_modes);

async fn keyframes_and_interval_modes(env: &Env) {
    let video = three_shots(env, "modes.mp4");
    assert_exit(
        &env.run([
            "enqueue".as_ref(),
            video.as_os_str(),
            "--select".as_ref(),
            "keyframes".as_ref(),
            "--film".as_ref(),
            "k".as_ref(),
        ]),
        0,
    );
    let k: Vec<i64> = frames_of(env, "k").await.iter().map(|f| f.1).collect();
    assert!(
        k.len() >= 6 && k[0] == 0,
        "a key frame at least every second (-g 25): {k:?}"
    );
    let v2 = env.path().join("copy.mp4");
    std::fs::copy(&video, &v2).unwrap();
    let o = env.run([
        "enqueue".as_ref(),
        v2.as_os_str(),
        "--select".as_ref(),
        "interval".as_ref(),
        "--every".as_ref(),
        "1.5".as_ref(),
        "--max-side".as_ref(),
        "100".as_ref(),
    ]);
    assert_exit(&o, 0);
    let i = frames_of(env, "copy").await;
    assert_eq!(
        i.iter().map(|f| f.1).collect::<Vec<_>>(),
        vec![0, 1520, 3040, 4560]
    );
    assert_eq!(
        (i[0].2, i[0].3),
        (100, 76),
        "downscaled to --max-side, aspect kept"
    );
}

on_both!(async a_changed_file_is_a_new_film_unless_replace);

async fn a_changed_file_is_a_new_film_unless_replace(env: &Env) {
    let video = three_shots(env, "cut.mp4");
    assert_exit(&env.run(["enqueue".as_ref(), video.as_os_str()]), 0);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&video)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    let o = env.run(["enqueue".as_ref(), video.as_os_str()]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("film \"cut (2)\": 3 new"),
        "{}",
        stdout(&o)
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(&video)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(10))
        .unwrap();
    let o = env.run(["enqueue".as_ref(), video.as_os_str(), "--replace".as_ref()]);
    assert_exit(&o, 0);
    assert_eq!(
        env.count("SELECT count(*) FROM films").await,
        1,
        "--replace removed the earlier films"
    );
    assert_eq!(env.count("SELECT count(*) FROM jobs").await, 3);
}

on_both!(async broken_videos_give_clear_errors_and_enqueue_nothing);

async fn broken_videos_give_clear_errors_and_enqueue_nothing(env: &Env) {
    let junk = env.path().join("junk.mp4");
    std::fs::write(&junk, b"this is not a video at all").unwrap();
    let empty = env.path().join("empty.mkv");
    std::fs::write(&empty, b"").unwrap();
    let good = three_shots(env, "good.mp4");
    let o = env.run([
        "enqueue".as_ref(),
        junk.as_os_str(),
        empty.as_os_str(),
        good.as_os_str(),
    ]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains(&format!("video {}: ", junk.display())) && err.contains("Invalid data found"),
        "{err}"
    );
    assert!(err.contains("the file is empty (zero length)"), "{err}");
    assert!(err.contains("2 of 3 video(s) failed"), "{err}");
    assert!(
        stdout(&o).contains("film \"good\": 3 new"),
        "each video on its own: {}",
        stdout(&o)
    );
    assert_eq!(env.count("SELECT count(*) FROM films").await, 1);
}

on_both!(async a_truncated_video_enqueues_what_decodes_with_a_warning);

async fn a_truncated_video_enqueues_what_decodes_with_a_warning(env: &Env) {
    let full = env.path().join("full.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25:duration=8",
        "-c:v",
        "libx264",
        "-g",
        "25",
        full.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&full).unwrap();
    let cut = env.path().join("cut.mkv");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let o = env.run([
        "enqueue".as_ref(),
        cut.as_os_str(),
        "--select".as_ref(),
        "interval".as_ref(),
        "--every".as_ref(),
        "1".as_ref(),
    ]);
    assert_exit(&o, 0);
    let n = env.count("SELECT count(*) FROM frames").await;
    assert!((1..8).contains(&n), "only the decodable part: {n} frames");
    assert!(
        stderr(&o).contains("decoding stopped or failed near"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn missing_ffmpeg_says_how_to_install_it() {
    let env = Env::new();
    let video = env.path().join("film.mp4");
    std::fs::write(&video, b"whatever").unwrap();
    let o = env
        .cmd(["enqueue".as_ref(), video.as_os_str()])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("ffprobe is not installed; install it with `apt-get install ffmpeg`"),
        "{}",
        stderr(&o)
    );
}

on_both!(async frames_go_to_the_frames_dir_given);

/// "--frames-dir": extracted frames go where the user says, in a folder per film.
async fn frames_go_to_the_frames_dir_given(env: &Env) {
    let video = env.path().join("clip.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=10:duration=3",
        "-c:v",
        "libx264",
        video.to_str().unwrap(),
    ]);
    let wanted = env.path().join("my frames");
    let o = env.run([
        "enqueue".as_ref(),
        video.as_os_str(),
        "--select".as_ref(),
        "interval".as_ref(),
        "--every".as_ref(),
        "1".as_ref(),
        "--frames-dir".as_ref(),
        wanted.as_os_str(),
    ]);
    assert_exit(&o, 0);
    let frames = frames_of(env, "clip").await;
    assert_eq!(frames.len(), 3, "{}", stderr(&o));
    for (_, _, _, _, path) in &frames {
        let path = Path::new(path);
        assert!(path.starts_with(&wanted), "{}", path.display());
        assert!(path.is_file() && image::open(path).is_ok());
    }
    assert!(
        !env.path().join("cinecut-frames").exists(),
        "nothing beside the database"
    );
}

on_both!(async json_summary_has_one_shape_for_videos_and_frames);

/// Videos and frames report in one `--json` shape, one object per run.
async fn json_summary_has_one_shape_for_videos_and_frames(env: &Env) {
    let good = three_shots(env, "good.mp4");
    let junk = env.path().join("junk.mkv");
    std::fs::write(&junk, b"").unwrap();
    let stills = env.images("stills", 2);
    let o = env.run([
        "enqueue".as_ref(),
        "--json".as_ref(),
        "--chunk-size".as_ref(),
        "1".as_ref(),
        good.as_os_str(),
        junk.as_os_str(),
        stills.as_os_str(),
    ]);
    assert_exit(&o, 1);
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "one JSON object: {out}");
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    let films = s["films"].as_array().unwrap();
    let titles: Vec<&str> = films.iter().map(|f| f["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["good", "stills"]);
    for f in films {
        for key in ["film_id", "new", "already", "warning"] {
            assert!(f.get(key).is_some(), "{key} in {f}");
        }
    }
    assert_eq!(
        (s["new"].as_u64(), s["already"].as_u64()),
        (Some(5), Some(0))
    );
    assert_eq!(s["videos"].as_u64(), Some(2));
    let failed = s["failed_videos"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["path"].as_str(), Some(junk.to_str().unwrap()));
    assert_eq!(
        failed[0]["reason"].as_str(),
        Some("the file is empty (zero length)")
    );
    assert_eq!(s["rejected"].as_array().map(Vec::len), Some(0));
    // Frames chunked one per transaction, video frames included, all there.
    assert_eq!(env.count("SELECT count(*) FROM jobs").await, 5);
}

on_both!(async other_selection_flags_on_an_enqueued_film_say_so);

/// Enqueuing a film again with another frame selection is not ignored:
/// it says so, changes nothing, and points at --replace or a new title;
/// both work.
async fn other_selection_flags_on_an_enqueued_film_say_so(env: &Env) {
    let video = three_shots(env, "again.mp4");
    let enqueue = |extra: &[&str]| {
        let mut c = env.cmd(["enqueue".as_ref(), video.as_os_str()]);
        c.args(extra);
        c.output().unwrap()
    };
    assert_exit(&enqueue(&[]), 0);
    assert_exit(&enqueue(&[]), 0);
    let o = enqueue(&["--select", "interval", "--every", "0.5"]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("already enqueued as film \"again\" with other frame selection")
            && err.contains(
                "--select scene --scene-threshold 0.3 --colour-threshold 27 --max-gap 10 --min-shot 0.6 --pick middle --max-side 1024"
            )
            && err.contains("--replace")
            && err.contains("--film"),
        "{err}"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM frames").await,
        3,
        "nothing changed"
    );

    // A second film of the same file, then the same again: nothing new.
    for says in ["film \"again, dense\": 12 new", "0 new, 12 already queued"] {
        let o = enqueue(&[
            "--select",
            "interval",
            "--every",
            "0.5",
            "--film",
            "again, dense",
        ]);
        assert_exit(&o, 0);
        assert!(stdout(&o).contains(says), "{}", stdout(&o));
    }

    let o = enqueue(&["--select", "keyframes", "--replace"]);
    assert_exit(&o, 0);
    assert_eq!(
        env.strings("SELECT extraction FROM films").await,
        vec!["--select keyframes --max-side 1024".to_string()]
    );
}

on_both!(async frames_have_source_numbers_and_timecode);

/// Each frame's number in its source and its SMPTE timecode, next to its
/// time (a 25 fps film, every frame taken).
async fn frames_have_source_numbers_and_timecode(env: &Env) {
    let video = env.path().join("tc.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=25:duration=2",
        "-c:v",
        "libx264",
        video.to_str().unwrap(),
    ]);
    assert_exit(
        &env.run([
            "enqueue".as_ref(),
            video.as_os_str(),
            "--select".as_ref(),
            "all".as_ref(),
        ]),
        0,
    );
    let row = |index: i64| {
        let rows = env.rows_now(&format!(
            "SELECT t.pts_ms, t.source_frame, t.timecode, d.timecode AS line_timecode \
             FROM frame_times t JOIN frame_dialogue d \
             ON d.film_id = t.film_id AND d.frame_index = t.frame_index \
             WHERE t.frame_index = {index}"
        ));
        let [r] = rows.as_slice() else {
            panic!("frame {index}: {rows:?}")
        };
        let text = |c: &str| r[c].as_str().unwrap().to_string();
        (
            r["pts_ms"].as_i64().unwrap(),
            r["source_frame"].as_i64().unwrap(),
            text("timecode"),
            text("line_timecode"),
        )
    };
    assert_eq!(row(7), (280, 7, "00:00:00:07".into(), "00:00:00:07".into()));
    assert_eq!(
        row(49),
        (1960, 49, "00:00:01:24".into(), "00:00:01:24".into())
    );
}

/// 2 s of a picture, 2 s of a strobe (black and white frames in turn: a
/// "cut" every frame), 2 s of another picture.
fn strobe(env: &Env) -> PathBuf {
    let out = env.path().join("strobe.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=25:duration=2",
        "-f",
        "lavfi",
        "-i",
        "color=c=black:size=160x120:rate=25:duration=2,format=yuv420p,\
         geq=lum='if(mod(N\\,2)\\,235\\,16)':cb=128:cr=128",
        "-f",
        "lavfi",
        "-i",
        "smptebars=size=160x120:rate=25:duration=2",
        "-filter_complex",
        "[0][1][2]concat=n=3:v=1:a=0,format=yuv420p",
        "-c:v",
        "libx264",
        out.to_str().unwrap(),
    ]);
    out
}

on_both!(async a_strobe_gives_no_two_frames_closer_than_min_shot);

/// `--min-shot`: a cut closer than that to the previous one is ignored, so
/// a strobe gives frames `--min-shot` apart, not one per flash.
async fn a_strobe_gives_no_two_frames_closer_than_min_shot(env: &Env) {
    let video = strobe(env);
    let gaps = |title: &str, times: Vec<i64>| -> Vec<i64> {
        assert!(times.len() > 2, "{title}: {times:?}");
        times.windows(2).map(|w| w[1] - w[0]).collect()
    };
    // Without it, the strobe's flashes are cuts a frame apart.
    let o = env.run([
        "enqueue".as_ref(),
        video.as_os_str(),
        "--film".as_ref(),
        "every cut".as_ref(),
        "--min-shot".as_ref(),
        "0".as_ref(),
        "--pick".as_ref(),
        "first".as_ref(),
    ]);
    assert_exit(&o, 0);
    let times: Vec<i64> = frames_of(env, "every cut")
        .await
        .iter()
        .map(|f| f.1)
        .collect();
    assert!(
        gaps("every cut", times.clone()).iter().any(|&g| g <= 40),
        "the strobe makes cuts a frame apart: {times:?}"
    );

    // The default, 0.6 s (a second film of the same file).
    let o = env.run([
        "enqueue".as_ref(),
        video.as_os_str(),
        "--film".as_ref(),
        "strobe".as_ref(),
    ]);
    assert_exit(&o, 0);
    let times: Vec<i64> = frames_of(env, "strobe").await.iter().map(|f| f.1).collect();
    assert!(
        gaps("strobe", times.clone()).iter().all(|&g| g >= 600),
        "frames closer than 0.6 s: {times:?}"
    );
    // Its shots: none shorter than 0.6 s but the last; without it, the
    // strobe made shots of a frame.
    let shortest = |film: &str| {
        env.count_now(&format!(
            "SELECT min(end_ms - start_ms) FROM shots s JOIN films f ON f.id = s.film_id \
             WHERE f.title = '{film}' AND s.shot_index < (SELECT max(shot_index) FROM shots \
             WHERE film_id = f.id)"
        ))
    };
    assert!(shortest("strobe") >= 600, "{}", shortest("strobe"));
    assert!(
        shortest("every cut") <= 40 && env.count_now("SELECT count(*) FROM shots") > 6,
        "{}",
        shortest("every cut")
    );
    assert_eq!(
        env.count_now("SELECT count(*) FROM shots s JOIN films f ON f.id = s.film_id WHERE f.title = 'strobe' AND s.start_ms = 2000"),
        1,
        "the cut into the strobe is still taken"
    );
    assert_eq!(
        env.string_now("SELECT extraction FROM films WHERE title = 'strobe'"),
        "--select scene --scene-threshold 0.3 --colour-threshold 27 --max-gap 10 --min-shot 0.6 --pick middle --max-side 1024"
    );
}

on_both!(async pick_sharpest_passes_over_a_blurred_middle);

/// `--pick sharpest`: of a few frames around a shot's middle, the least
/// blurred; only the chosen frame's files are left.
async fn pick_sharpest_passes_over_a_blurred_middle(env: &Env) {
    let video = env.path().join("focus pull.mp4");
    // One 4 s shot, blurred from 1.9 s to 2.1 s: its middle is blurred.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=25:duration=4,boxblur=8:enable='between(t,1.9,2.1)'",
        "-c:v",
        "libx264",
        video.to_str().unwrap(),
    ]);
    for pick in ["middle", "sharpest"] {
        let o = env.run([
            "enqueue".as_ref(),
            video.as_os_str(),
            "--film".as_ref(),
            pick.as_ref(),
            "--pick".as_ref(),
            pick.as_ref(),
        ]);
        assert_exit(&o, 0);
    }
    let middle = frames_of(env, "middle").await;
    let sharpest = frames_of(env, "sharpest").await;
    assert_eq!((middle.len(), sharpest.len()), (1, 1));
    assert!((1960..=2040).contains(&middle[0].1), "{middle:?}");
    let t = sharpest[0].1;
    assert!(
        (1500..=2500).contains(&t) && !(1900..=2100).contains(&t),
        "a sharp frame near the middle, not the blurred one: {t} ms"
    );
    let dir = Path::new(&sharpest[0].4).parent().unwrap();
    let mut left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .chain(std::fs::read_dir(dir.join("thumbs")).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["frame_000001.jpg", "frame_000001.jpg", "thumbs"]);
    assert!(image::open(&sharpest[0].4).is_ok());
}

on_both!(async a_film_where_seeking_is_not_exact_gets_first_frames_and_a_warning);

/// An MPEG-TS film (no index: ffmpeg's seeks land seconds away): the
/// middles cannot be trusted, so the first frame of each shot is taken in
/// one pass instead, with a warning that says so; the shots are right.
async fn a_film_where_seeking_is_not_exact_gets_first_frames_and_a_warning(env: &Env) {
    // Three 2 s shots, key frames only where x264 puts them (at the cuts).
    let ts = env.path().join("broadcast.ts");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=25:duration=2",
        "-f",
        "lavfi",
        "-i",
        "color=c=red:size=160x120:rate=25:duration=2",
        "-f",
        "lavfi",
        "-i",
        "smptebars=size=160x120:rate=25:duration=2",
        "-filter_complex",
        "[0][1][2]concat=n=3:v=1:a=0,format=yuv420p",
        "-c:v",
        "libx264",
        ts.to_str().unwrap(),
    ]);
    let o = env.run(["enqueue".as_ref(), ts.as_os_str()]);
    assert_exit(&o, 0);
    assert!(
        stderr(&o).contains("seeking is not exact in this file: took the first frame of each shot, not --pick middle"),
        "{}",
        stderr(&o)
    );
    let times: Vec<i64> = frames_of(env, "broadcast")
        .await
        .iter()
        .map(|f| f.1)
        .collect();
    assert_eq!(times.len(), 3, "{times:?}");
    for (got, want) in times.iter().zip([0, 2000, 4000]) {
        assert!((got - want).abs() <= 40, "{times:?}");
    }
    assert_eq!(
        env.count_now(
            "SELECT count(*) FROM frames fr JOIN shots s ON s.id = fr.shot_id \
             WHERE fr.pts_ms >= s.start_ms AND fr.pts_ms < s.end_ms"
        ),
        3
    );
    let dir = Path::new(&frames_of(env, "broadcast").await[0].4)
        .parent()
        .unwrap()
        .to_path_buf();
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        4,
        "3 frames and thumbs/, nothing else"
    );
}

/// The shot flags given with a mode that has no shots are a usage error
/// (exit 2) that writes nothing, not silently ignored.
#[test]
fn shot_flags_without_scene_mode_are_a_usage_error() {
    let env = Env::new();
    let video = env.path().join("any.mp4");
    std::fs::write(&video, b"never read").unwrap();
    for (flag, value) in [
        ("--pick", "sharpest"),
        ("--per-shot", "3"),
        ("--min-shot", "1"),
    ] {
        let o = env.run([
            "enqueue".as_ref(),
            video.as_os_str(),
            "--select".as_ref(),
            "interval".as_ref(),
            flag.as_ref(),
            value.as_ref(),
        ]);
        assert_exit(&o, 2);
        assert!(
            stderr(&o).contains(&format!(
                "{flag} shapes the shots of --select scene; it has no meaning with --select interval"
            )),
            "{}",
            stderr(&o)
        );
        assert!(!env.db().exists(), "nothing written");
    }
}

/// The shots' start times (ms) and scores.
fn shot_starts(env: &Env) -> Vec<(i64, f64)> {
    env.rows_now("SELECT start_ms, score FROM shots ORDER BY shot_index")
        .iter()
        .map(|r| {
            (
                r["start_ms"].as_i64().unwrap(),
                r["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// A film of generated cuts of each kind and of changes that are no cut,
/// 320×180 at 25 fps: (source, seconds) in order.
fn cuts_film(env: &Env, name: &str, parts: &[(&str, f64)]) -> PathBuf {
    let out = env.path().join(name);
    let mut args: Vec<String> = Vec::new();
    let mut graph = String::new();
    for (i, (source, seconds)) in parts.iter().enumerate() {
        args.extend(["-f", "lavfi", "-i"].map(String::from));
        // The size and rate belong to the source, before any filter on it
        // (unless the source names its own).
        let (source, filters) = source.split_once(',').unwrap_or((source, ""));
        let filters = if filters.is_empty() {
            String::new()
        } else {
            format!(",{filters}")
        };
        let sep = if source.contains('=') { ':' } else { '=' };
        args.push(match source.contains("size=") {
            true => format!("{source}{filters}"),
            false => format!("{source}{sep}size=320x180:rate=25{filters}"),
        });
        graph.push_str(&format!(
            "[{i}]trim=duration={seconds},setpts=PTS-STARTPTS,format=yuv420p[p{i}];"
        ));
    }
    for i in 0..parts.len() {
        graph.push_str(&format!("[p{i}]"));
    }
    graph.push_str(&format!("concat=n={}:v=1:a=0", parts.len()));
    args.extend(["-filter_complex".into(), graph]);
    args.extend(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "50"].map(String::from));
    args.push(out.to_str().unwrap().into());
    ffmpeg(&args);
    out
}

on_both!(async cuts_of_colour_and_of_brightness_are_found_and_flashes_fades_and_motion_are_not);

/// Scene mode's cuts, each kind at a known time: colour alone (dark grey
/// to dark blue, which ffmpeg's brightness-driven score puts under 0.3),
/// brightness alone (grey to light grey), hard cuts to a pan and to a
/// moving test card; and what is no cut: a two-frame white flash, a fade
/// to black, a static shot, a slow pan, motion in a shot. (Before colour
/// scores and flashes, ffmpeg's score alone gave 4, 6, 7 — the flash —
/// and 11 s, and scored the colour cut 0.04.)
async fn cuts_of_colour_and_of_brightness_are_found_and_flashes_fades_and_motion_are_not(
    env: &Env,
) {
    let film = cuts_film(
        env,
        "cuts.mp4",
        &[
            ("color=c=0x141414", 2.0),
            ("color=c=darkblue", 2.0),
            ("color=c=0x505050", 2.0),
            ("color=c=0xb0b0b0", 1.0),
            ("color=c=white", 0.08),
            ("color=c=0xb0b0b0", 1.92),
            ("color=c=0xb0b0b0,fade=t=out:st=0:d=1.5", 2.0),
            // A slow pan across the bars: 60 pixels a second.
            ("smptebars=size=960x180:rate=25,crop=320:180:'t*60':0", 3.0),
            ("testsrc2", 3.0),
        ],
    );
    let o = env.run(["enqueue".as_ref(), film.as_os_str()]);
    assert_exit(&o, 0);
    let starts = shot_starts(env);
    let times: Vec<i64> = starts.iter().map(|s| s.0).collect();
    assert_eq!(
        times,
        vec![0, 2000, 4000, 6000, 11_000, 14_000],
        "cuts at 2 s (colour), 4 s and 6 s (brightness), 11 s (to the pan) and 14 s \
         (to motion); none at the flash (7 s), in the fade (9–10.5 s), in the pan or in \
         the test card: {starts:?}"
    );
    // The colour cut's score is the colour score over 255 (dark grey to
    // saturated dark blue: about 0.45), above what ffmpeg gives it.
    assert!(starts[1].1 > 0.3, "{starts:?}");
}

/// The demo's sample film, written by the script the demo runs.
fn sample_film(env: &Env) -> PathBuf {
    let film = env.path().join("sample film.mp4");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sample-film.sh");
    let status = Command::new("bash")
        .arg(script)
        .arg(&film)
        .status()
        .unwrap();
    assert!(status.success(), "scripts/sample-film.sh");
    film
}

on_both!(async the_demo_films_five_shots_are_five);

/// The demo's sample film (scripts/sample-film.sh) has five shots; the cut
/// from the game of life (coloured cells on black) to dark blue is one of
/// colour, which ffmpeg's score alone misses (0.126).
async fn the_demo_films_five_shots_are_five(env: &Env) {
    let film = sample_film(env);
    let o = env.run(["enqueue".as_ref(), film.as_os_str()]);
    assert_exit(&o, 0);
    let times: Vec<i64> = shot_starts(env).iter().map(|s| s.0).collect();
    assert_eq!(times, vec![0, 3000, 6000, 9000, 12_000], "{}", stderr(&o));
}

on_both!(async a_colour_threshold_of_255_finds_only_what_the_scene_score_does);

/// `--colour-threshold 255` switches the colour score off (nothing passes
/// it): the demo film's colour cut is missed again, as before it existed,
/// and the flag is in what the film remembers.
async fn a_colour_threshold_of_255_finds_only_what_the_scene_score_does(env: &Env) {
    let film = sample_film(env);
    let o = env.run([
        "enqueue".as_ref(),
        film.as_os_str(),
        "--colour-threshold".as_ref(),
        "255".as_ref(),
    ]);
    assert_exit(&o, 0);
    let times: Vec<i64> = shot_starts(env).iter().map(|s| s.0).collect();
    assert_eq!(times, vec![0, 3000, 6000, 9000], "{}", stderr(&o));
    let o = env.run(["enqueue".as_ref(), film.as_os_str()]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("--colour-threshold 255"),
        "{}",
        stderr(&o)
    );
}

on_both!(async a_film_whose_tags_are_not_utf8_is_still_cut_into_its_shots);

/// ffmpeg prints a file's tags as they are: a title in Latin-1 (an old
/// AVI's, say) is a line of its log that is not UTF-8, and must not end
/// the reading of the scores after it (the film came out as one shot).
async fn a_film_whose_tags_are_not_utf8_is_still_cut_into_its_shots(env: &Env) {
    use std::os::unix::ffi::OsStrExt;
    let plain = three_shots(env, "plain.mp4");
    let tagged = env.path().join("tagged.mkv");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(&plain)
        .args(["-c", "copy", "-metadata"])
        .arg(std::ffi::OsStr::from_bytes(b"title=Caf\xe9 \xe0 minuit"))
        .arg(&tagged)
        .status()
        .expect("ffmpeg (scripts/setup.sh installs it)");
    assert!(status.success());
    let o = env.run(["enqueue".as_ref(), tagged.as_os_str()]);
    assert_exit(&o, 0);
    let times: Vec<i64> = shot_starts(env).iter().map(|s| s.0).collect();
    assert_eq!(times, vec![0, 2000, 4000], "{}", stderr(&o));
}
