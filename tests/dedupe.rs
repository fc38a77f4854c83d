//! Near-duplicates: a video's frames are hashed as they are extracted,
//! stills by the worker that claims them; a frame that nearly repeats the
//! last distinct one is not sent to the model but gets that frame's
//! description, marked as a copy in SQL.

use std::path::{Path, PathBuf};

use crate::util::{Env, FakeServer, assert_exit, ffmpeg, on_both, stderr, stdout};

/// `seconds` of one static camera picture with sensor noise (a new noise
/// pattern every frame).
fn static_clip(env: &Env, seconds: u32) -> PathBuf {
    let out = env.path().join(format!("static-{seconds}.mkv"));
    let src = format!("smptebars=size=320x240:rate=10:duration={seconds},noise=alls=20:allf=t");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &src,
        "-c:v",
        "libx264",
        out.to_str().unwrap(),
    ]);
    out
}

/// Five 2-second shots of unrelated pictures, one after another.
fn five_shots(env: &Env) -> PathBuf {
    let out = env.path().join("five-shots.mkv");
    let shots = [
        "testsrc=size=320x240:rate=10:duration=2",
        "smptebars=size=320x240:rate=10:duration=2",
        "rgbtestsrc=size=320x240:rate=10:duration=2",
        "mandelbrot=size=320x240:rate=10,trim=duration=2",
        "cellauto=size=320x240:rate=10,trim=duration=2",
    ];
    let mut args: Vec<String> = Vec::new();
    for s in shots {
        args.extend(["-f".into(), "lavfi".into(), "-i".into(), s.into()]);
    }
    args.extend([
        "-filter_complex".into(),
        "[0][1][2][3][4]concat=n=5:v=1:a=0,format=yuv420p".into(),
        "-c:v".into(),
        "libx264".into(),
        out.to_str().unwrap().into(),
    ]);
    ffmpeg(&args.iter().map(String::as_str).collect::<Vec<_>>());
    out
}

fn enqueue_every_second(env: &Env, video: &Path, extra: &[&str]) -> String {
    let o = env
        .cmd([
            "enqueue",
            video.to_str().unwrap(),
            "--select",
            "interval",
            "--every",
            "1",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert_exit(&o, 0);
    stdout(&o)
}

/// Runs a worker against a fake server until the queue is empty; returns
/// how many frames were sent to the model (by this worker).
fn describe(env: &Env, answers: &str) -> usize {
    let record = env.path().join("requests.jsonl");
    if record.exists() {
        std::fs::remove_file(&record).unwrap();
    }
    let fake = FakeServer::start(
        env,
        &["--answers", answers, "--record", record.to_str().unwrap()],
    );
    let o = env
        .cmd(["worker", "--server-url", &fake.url(), "--until-empty"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    std::fs::read_to_string(&record)
        .unwrap_or_default()
        .lines()
        .count()
}

on_both!(a_static_minute_sends_a_few_frames_and_stores_sixty_descriptions);

fn a_static_minute_sends_a_few_frames_and_stores_sixty_descriptions(env: &Env) {
    let video = static_clip(env, 60);
    let out = enqueue_every_second(env, &video, &[]);
    let copies = env.count_now("SELECT count(*) FROM frames WHERE duplicate_of IS NOT NULL");
    assert!(
        out.contains(&format!(
            "60 new, 0 already queued ({copies} near-duplicates"
        )),
        "{out}"
    );
    assert_eq!(
        env.count_now("SELECT count(*) FROM frames WHERE dhash IS NOT NULL"),
        60,
        "every frame is hashed"
    );

    let sent = describe(env, "ok");
    assert!(
        sent <= 5,
        "{sent} of 60 frames of a static shot went to the model"
    );
    assert_eq!(env.count_now("SELECT count(*) FROM descriptions"), 60);
    assert_eq!(
        env.count_now("SELECT count(*) FROM jobs WHERE state = 'done'"),
        60
    );
    assert_eq!(
        env.count_now("SELECT count(*) FROM descriptions WHERE duplicate_of IS NULL"),
        sent as i64,
        "one description of its own per frame sent"
    );
    // SQL users see which are copies and of what; a copy says what its
    // original says.
    assert_eq!(
        env.count_now(
            "SELECT count(*) FROM frame_descriptions WHERE copied_from_frame IS NOT NULL"
        ),
        60 - sent as i64
    );
    assert_eq!(
        env.count_now(
            "SELECT count(*) FROM frame_descriptions c JOIN frame_descriptions o \
             ON o.film_id = c.film_id AND o.frame_index = c.copied_from_frame \
             WHERE o.copied_from_frame IS NULL AND o.visual_content = c.visual_content \
               AND o.mood = c.mood AND o.action = c.action AND o.setting = c.setting \
               AND o.frame_index < c.frame_index"
        ),
        60 - sent as i64
    );

    // The report says which cards are copies, linking to their original.
    let html = env.path().join("static.html");
    let o = env.run(["report".as_ref(), "-o".as_ref(), html.as_os_str()]);
    assert_exit(&o, 0);
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(
        page.matches("near-duplicate: the description of <a href=\"#f")
            .count(),
        60 - sent
    );

    // --no-dedupe (here a second film of the same file) sends every frame.
    let out = enqueue_every_second(env, &video, &["--film", "every frame", "--no-dedupe"]);
    assert!(out.contains("60 new, 0 already queued\n"), "{out}");
    assert_eq!(describe(env, "ok"), 60);
}

on_both!(five_distinct_shots_are_all_sent);

fn five_distinct_shots_are_all_sent(env: &Env) {
    let video = five_shots(env);
    enqueue_every_second(env, &video, &[]);
    assert_eq!(env.count_now("SELECT count(*) FROM frames"), 10);
    let sent = describe(env, "ok");
    assert!(
        sent >= 5,
        "only {sent} frames of 5 unrelated shots went to the model"
    );
    // Each shot's first frame (0 s, 2 s, …) is an original.
    assert_eq!(
        env.count_now(
            "SELECT count(*) FROM frames WHERE duplicate_of IS NULL AND pts_ms % 2000 = 0"
        ),
        5
    );
    assert_eq!(env.count_now("SELECT count(*) FROM descriptions"), 10);
}

on_both!(when_an_original_fails_its_first_duplicate_is_described_instead);

/// An original the model cannot describe does not take its duplicates down:
/// the first of them is sent instead, and the others get its description.
fn when_an_original_fails_its_first_duplicate_is_described_instead(env: &Env) {
    let video = static_clip(env, 10);
    let out = enqueue_every_second(env, &video, &["--max-attempts", "1"]);
    assert_eq!(
        env.count_now("SELECT count(*) FROM frames WHERE duplicate_of IS NOT NULL"),
        9,
        "a static shot: one original, nine near-duplicates"
    );
    assert!(
        out.contains("10 new, 0 already queued (9 near-duplicates"),
        "{out}"
    );
    assert_eq!(
        env.count_now("SELECT count(*) FROM frames WHERE dhash IS NOT NULL"),
        10
    );
    assert_eq!(describe(env, "http400,ok"), 2);
    assert_eq!(
        env.count_now(
            "SELECT count(*) FROM jobs WHERE state = 'failed' AND id = (SELECT min(id) FROM jobs)"
        ),
        1
    );
    assert_eq!(
        env.count_now("SELECT count(*) FROM jobs WHERE state = 'done'"),
        9
    );
    assert_eq!(
        env.count_now(
            "SELECT count(*) FROM frame_descriptions WHERE copied_from_frame = 1 AND frame_index > 1"
        ),
        8
    );
    // The same frames in a second pass: the marks hold (the first frame,
    // which failed in the first pass, is the original of none now), so
    // two frames are sent and the others get the second's description.
    let record = env.path().join("second.jsonl");
    let fake = FakeServer::start(env, &["--record", record.to_str().unwrap()]);
    let o = env
        .cmd(["describe", "--server-url", &fake.url(), "--pass", "second"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let sent = std::fs::read_to_string(&record).unwrap_or_default();
    assert_eq!(sent.lines().count(), 2, "{}", stderr(&o));
    assert_eq!(
        env.count_now("SELECT count(*) FROM jobs WHERE state = 'done'"),
        19
    );
}

/// `n` stills of one picture (`pattern` gives a pixel's grey from x and y)
/// with fresh noise in each, `first`.png … into `dir`.
fn noisy_stills(dir: &Path, first: usize, n: usize, pattern: fn(u32, u32) -> u8) {
    std::fs::create_dir_all(dir).unwrap();
    for i in first..first + n {
        let mut seed = (i as u32).wrapping_mul(2_654_435_761);
        let img = image::RgbImage::from_fn(160, 120, |x, y| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let noise = (seed >> 24) as i32 % 21 - 10;
            let v = (i32::from(pattern(x, y)) + noise).clamp(0, 255) as u8;
            image::Rgb([v, v / 2, 255 - v])
        });
        img.save(dir.join(format!("img_{i:02}.png"))).unwrap();
    }
}

on_both!(stills_from_folders_and_manifests_are_hashed_and_deduped);

/// Stills from a folder and from a manifest are enqueued without being
/// opened and hashed by the worker that claims them: a run of stills of one
/// picture costs one model call, a new picture another; an unreadable still
/// gets no hash and still fails with its reason; --no-dedupe sends every
/// still and the worker hashes none of them.
fn stills_from_folders_and_manifests_are_hashed_and_deduped(env: &Env) {
    let dir = env.path().join("stills");
    noisy_stills(&dir, 1, 10, |x, _| (x * 255 / 160) as u8);
    noisy_stills(&dir, 11, 10, |x, y| {
        if (x / 20 + y / 20) % 2 == 0 { 40 } else { 220 }
    });
    std::fs::write(dir.join("img_21.png"), b"not a picture").unwrap();
    noisy_stills(&dir, 22, 3, |x, y| {
        if (x / 20 + y / 20) % 2 == 0 { 40 } else { 220 }
    });

    let o = env.run(["enqueue".as_ref(), dir.as_os_str()]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("24 new, 0 already queued\n"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        env.count_now("SELECT count(*) FROM frames WHERE dhash IS NULL AND dedupe_distance = 4"),
        24,
        "nothing is decoded at enqueue; each still waits for its worker's hash"
    );

    // Enqueued again, it adds nothing; a new still beside them is added.
    noisy_stills(&dir, 25, 1, |x, _| (x * 255 / 160) as u8);
    let o = env.run(["enqueue".as_ref(), dir.as_os_str()]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("1 new, 24 already queued"),
        "{}",
        stdout(&o)
    );
    std::fs::remove_file(dir.join("img_25.png")).unwrap();

    let manifest = env.path().join("stills.jsonl");
    let lines: String = (1..=24)
        .map(|i| format!("{{\"path\": \"stills/img_{i:02}.png\"}}\n"))
        .collect();
    std::fs::write(&manifest, lines).unwrap();
    let o = env.run([
        "enqueue".as_ref(),
        "--manifest".as_ref(),
        manifest.as_os_str(),
        "--film".as_ref(),
        "listed".as_ref(),
    ]);
    assert_exit(&o, 0);
    let o = env.run([
        "enqueue".as_ref(),
        dir.as_os_str(),
        "--film".as_ref(),
        "every still".as_ref(),
        "--no-dedupe".as_ref(),
    ]);
    assert_exit(&o, 0);

    let sent = describe(env, "ok");
    let in_film = |title: &str, condition: &str| {
        env.count_now(&format!(
            "SELECT count(*) FROM frames fr JOIN films f ON f.id = fr.film_id \
             WHERE f.title = '{title}' AND {condition}"
        ))
    };
    assert_eq!(
        in_film("stills", "fr.dhash IS NOT NULL"),
        23,
        "every readable still is hashed by the worker"
    );
    assert_eq!(
        in_film("every still", "fr.dhash IS NOT NULL"),
        0,
        "--no-dedupe: the worker hashes nothing"
    );
    let copies = in_film("stills", "fr.duplicate_of IS NOT NULL");
    assert_eq!(
        in_film("listed", "fr.duplicate_of IS NOT NULL"),
        copies,
        "a manifest of the same stills dedupes them alike"
    );
    // Copies point back within their own picture, never across.
    assert_eq!(
        env.count_now(
            "SELECT count(*) FROM frames c JOIN frames o ON o.id = c.duplicate_of \
             WHERE (c.frame_index < 10) <> (o.frame_index < 10) OR o.frame_index >= c.frame_index \
                OR o.film_id <> c.film_id"
        ),
        0
    );
    // Per deduped film: one call per picture (three runs: the third
    // picture starts afresh after the unreadable still), at most one more
    // per picture for noise; the undecodable still is tried and fails.
    let per_film = sent - 23;
    assert!(
        per_film / 2 >= 3 && per_film / 2 <= 6,
        "{sent} model calls: {per_film} for the two deduped films"
    );
    assert_eq!(per_film as i64, 2 * (23 - copies), "{sent} model calls");
    assert_eq!(
        env.count_now("SELECT count(*) FROM descriptions"),
        3 * 23,
        "every readable still of every film is described"
    );
    assert_eq!(
        env.count_now("SELECT count(*) FROM descriptions WHERE duplicate_of IS NOT NULL"),
        2 * copies
    );
    assert_eq!(
        env.count_now(
            "SELECT count(*) FROM jobs j JOIN frames fr ON fr.id = j.frame_id \
             WHERE j.state = 'failed' AND fr.path LIKE '%img_21.png'"
        ),
        3,
        "the unreadable still fails in each film, with its reason"
    );
}

on_both!(a_still_added_after_its_original_was_described_gets_its_description_unsent);

/// A still enqueued later that repeats the described still before it is
/// not sent: its worker hashes it and gives it that still's description at
/// once (model calls: none).
fn a_still_added_after_its_original_was_described_gets_its_description_unsent(env: &Env) {
    let dir = env.path().join("stills");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["a", "b", "c"] {
        cells(&dir.join(format!("{name}.png")), &[]);
    }
    // The worker's summary: described by the model, and repeats not sent
    // (one claim holds all three stills: --parallel 4).
    let fake = FakeServer::start(env, &["--answers", "ok"]);
    let work = |described: &str, repeats: &str| {
        assert_exit(&env.run(["enqueue".as_ref(), dir.as_os_str()]), 0);
        let o = env
            .cmd([
                "worker",
                "--server-url",
                &fake.url(),
                "--until-empty",
                "--parallel",
                "4",
            ])
            .output()
            .unwrap();
        assert_exit(&o, 0);
        let log = stderr(&o);
        let said = format!(
            "{repeats} still(s) nearly repeated the frame before them: not sent, given that frame's description"
        );
        assert!(
            log.contains(&format!("worker done: {described} described")) && log.contains(&said),
            "{described} described, {repeats} repeats expected: {log}"
        );
    };
    work("1", "2");
    for name in ["d", "e"] {
        cells(&dir.join(format!("{name}.png")), &[]);
    }
    work("0", "2");
    assert_eq!(
        env.count_now(
            "SELECT count(*) FROM descriptions d JOIN frames fr ON fr.id = d.frame_id \
             WHERE fr.frame_index >= 3 AND d.duplicate_of IS NOT NULL"
        ),
        2
    );
    assert_eq!(
        env.count_now("SELECT count(*) FROM jobs WHERE state <> 'done'"),
        0
    );
}

on_both!(a_still_is_marked_only_where_its_original_is_described_in_each_of_its_passes);

/// A still with a job in a pass where the still before it will never be
/// described (cancelled there) is not marked, since nothing would ever give
/// it a description there: it is described in both its passes, the one
/// after it repeats it, and no job is left waiting.
fn a_still_is_marked_only_where_its_original_is_described_in_each_of_its_passes(env: &Env) {
    let dir = env.path().join("stills");
    std::fs::create_dir_all(&dir).unwrap();
    cells(&dir.join("a.png"), &[]);
    let enqueue = || {
        let o = env.run([
            "enqueue".as_ref(),
            dir.as_os_str(),
            "--pass".as_ref(),
            "alpha".as_ref(),
            "--pass".as_ref(),
            "beta".as_ref(),
        ]);
        assert_exit(&o, 0);
    };
    enqueue();
    let cancel = env.run(["cancel", "--film", "stills", "--pass", "beta"]);
    assert_exit(&cancel, 0);
    let record = env.path().join("requests.jsonl");
    let fake = FakeServer::start(
        env,
        &["--answers", "ok", "--record", record.to_str().unwrap()],
    );
    let work = |pass: &str| {
        let o = env
            .cmd([
                "worker",
                "--server-url",
                &fake.url(),
                "--until-empty",
                "--pass",
                pass,
            ])
            .output()
            .unwrap();
        assert_exit(&o, 0);
    };
    work("alpha");
    cells(&dir.join("b.png"), &[]);
    cells(&dir.join("c.png"), &[]);
    enqueue();
    work("alpha");
    work("beta");
    let marks = env.count_now(
        "SELECT count(*) FROM frames WHERE duplicate_of = (SELECT id FROM frames WHERE frame_index = 1)",
    );
    assert_eq!(
        (
            env.count_now("SELECT count(*) FROM frames WHERE duplicate_of IS NOT NULL"),
            marks
        ),
        (1, 1),
        "b is not marked (a is cancelled in beta); c repeats b"
    );
    let sent = std::fs::read_to_string(&record).unwrap().lines().count();
    assert_eq!(sent, 3, "a in alpha, b in alpha and in beta");
    assert_eq!(
        env.count_now("SELECT count(*) FROM jobs WHERE state NOT IN ('done', 'cancelled')"),
        0,
        "no job is left waiting"
    );
}

/// A 90×80 grey still of nine columns (a 9×8 grey copy of it has one
/// cell per 10×10 block), 40 to 200 left to right; each of `bumped` cells
/// (column < 8, row) is made brighter than the cell to its right, which
/// turns exactly one bit of its difference hash.
fn cells(path: &Path, bumped: &[(u32, u32)]) {
    let img = image::GrayImage::from_fn(90, 80, |x, y| {
        let (col, row) = (x / 10, y / 10);
        let base = 40 + 20 * col;
        image::Luma([if bumped.contains(&(col, row)) {
            base + 25
        } else {
            base
        } as u8])
    });
    img.save(path).unwrap();
}

on_both!(dedupe_distance_sets_how_many_bits_a_near_duplicate_may_differ_by);

/// `--dedupe-distance N`: a still whose hash is within N bits of the one
/// before it (and close in brightness) is a near-duplicate. A pair 1 bit
/// apart is one under the default 4 and not under 0; a pair 6 bits apart
/// is not one under the default and is one under 8.
fn dedupe_distance_sets_how_many_bits_a_near_duplicate_may_differ_by(env: &Env) {
    let one = env.path().join("one bit");
    let six = env.path().join("six bits");
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&six).unwrap();
    cells(&one.join("a.png"), &[]);
    cells(&one.join("b.png"), &[(3, 2)]);
    cells(&six.join("a.png"), &[]);
    let bumped: Vec<(u32, u32)> = (0..6).map(|r| (r % 8, r)).collect();
    cells(&six.join("c.png"), &bumped);
    let enqueue = |folder: &Path, extra: &[&str]| {
        let title = format!(
            "{} {}",
            folder.file_name().unwrap().to_string_lossy(),
            extra.join(" ")
        );
        let mut c = env.cmd([
            "enqueue".as_ref(),
            folder.as_os_str(),
            "--film".as_ref(),
            title.as_ref(),
        ]);
        c.args(extra);
        let o = c.output().unwrap();
        assert_exit(&o, 0);
        title
    };
    let films = [
        enqueue(&one, &[]),
        enqueue(&one, &["--dedupe-distance", "0"]),
        enqueue(&six, &[]),
        enqueue(&six, &["--dedupe-distance", "8"]),
    ];
    describe(env, "ok");
    let duplicates: Vec<i64> = films
        .iter()
        .map(|title| {
            env.count_now(&format!(
                "SELECT count(*) FROM frames fr JOIN films f ON f.id = fr.film_id \
                 WHERE f.title = '{title}' AND fr.duplicate_of IS NOT NULL"
            ))
        })
        .collect();
    assert_eq!(
        duplicates,
        [1, 0, 0, 1],
        "1 bit apart: one under the default 4, none under 0; \
         6 bits apart: none under the default, one under 8"
    );
}

on_both!(killing_the_worker_while_it_marks_repeats_loses_and_duplicates_nothing);

/// Twelve pictures, ten identical stills of each in a row; the worker is
/// killed (SIGKILL) five times, each once the database holds a random
/// number of descriptions more (a moment chosen by state), then one runs
/// to the end. Every still has one description, each picture's from one
/// model answer, copied within its run only; every job is done, with one
/// recorded success per model answer.
fn killing_the_worker_while_it_marks_repeats_loses_and_duplicates_nothing(env: &Env) {
    let dir = env.path().join("runs");
    std::fs::create_dir_all(&dir).unwrap();
    for picture in 0..12u32 {
        // 4×4 blocks of colours hashed from the picture's number: a 9×8
        // grey copy of each is unrelated to the others'.
        let img = image::RgbImage::from_fn(36, 32, |x, y| {
            let mut h = picture << 16 ^ (y / 4) << 8 ^ (x / 4);
            h = h.wrapping_mul(0x9e37_79b9) ^ h >> 15;
            h = h.wrapping_mul(0x85eb_ca6b) ^ h >> 13;
            image::Rgb([h as u8, (h >> 8) as u8, (h >> 16) as u8])
        });
        for copy in 0..10 {
            img.save(dir.join(format!("p{picture:02}_{copy}.png")))
                .unwrap();
        }
    }
    assert_exit(&env.run(["enqueue".as_ref(), dir.as_os_str()]), 0);
    let fake = FakeServer::start(env, &["--delay-ms", "20"]);
    let args = ["--parallel", "4", "--lease-ttl", "120s"];
    let described = || env.count_now("SELECT count(*) FROM descriptions");
    env.kill_workers_in_turn(&fake.url(), &args, (5, 20, 120), described);
    let mut last = env.worker(&fake.url(), "final.log", &args);
    last.arg("--until-empty");
    assert!(last.status().unwrap().success(), "{}", env.log("final.log"));
    assert_eq!(described(), 120);
    assert_eq!(
        env.count_now("SELECT count(*) FROM jobs WHERE state <> 'done'"),
        0
    );
    assert_eq!(
        env.count_now("SELECT count(*) FROM descriptions WHERE duplicate_of IS NULL"),
        12,
        "one model answer per picture"
    );
    assert_eq!(
        env.count_now("SELECT count(*) FROM attempts WHERE outcome = 'done'"),
        12,
        "one recorded success per model answer"
    );
    assert_eq!(
        env.count_now(
            "SELECT count(*) FROM frames c JOIN frames o ON o.id = c.duplicate_of \
             WHERE c.frame_index / 10 <> o.frame_index / 10 OR o.duplicate_of IS NOT NULL"
        ),
        0,
        "a copy names an original of its own run"
    );
    assert_eq!(
        env.count_now("SELECT count(*) FROM frames WHERE duplicate_of IS NOT NULL"),
        108
    );
}

on_both!(a_darker_still_is_no_repeat_of_one_hashed_in_an_earlier_claim);

/// A still of the same picture, darker (a fade: the same difference hash,
/// 30 grey levels apart), enqueued after the first was described, is no
/// repeat: the grey copy kept with the first is compared, not only its
/// hash (each grey copy is kept whole: 72 bytes).
fn a_darker_still_is_no_repeat_of_one_hashed_in_an_earlier_claim(env: &Env) {
    let dir = env.path().join("stills");
    std::fs::create_dir_all(&dir).unwrap();
    let picture = |path: &Path, darker: u8| {
        image::GrayImage::from_fn(90, 80, |x, _| {
            image::Luma([(40 + 20 * (x / 10)) as u8 - darker])
        })
        .save(path)
        .unwrap();
    };
    picture(&dir.join("a.png"), 0);
    assert_exit(&env.run(["enqueue".as_ref(), dir.as_os_str()]), 0);
    assert_eq!(describe(env, "ok"), 1);
    picture(&dir.join("b.png"), 30);
    assert_exit(&env.run(["enqueue".as_ref(), dir.as_os_str()]), 0);
    assert_eq!(describe(env, "ok"), 1, "the darker still is sent");
    assert_eq!(
        (
            env.count_now("SELECT count(*) FROM frames WHERE length(grey) = 72"),
            env.count_now("SELECT count(DISTINCT dhash) FROM frames")
        ),
        (2, 1),
        "both hashed alike, each with its grey copy"
    );
    assert_eq!(
        env.count_now("SELECT count(*) FROM frames WHERE duplicate_of IS NOT NULL"),
        0
    );
}
