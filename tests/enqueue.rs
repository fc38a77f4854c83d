//! The producer: folders, globs, files, manifests; idempotence; concurrent
//! producers; rejected inputs.

use std::process::Stdio;

use crate::util::{Backend, Env, assert_exit, on_both, stderr, stdout};

on_both!(async a_folder_is_enqueued_in_natural_order_once);

async fn a_folder_is_enqueued_in_natural_order_once(env: &Env) {
    let dir = env.frames("shots", 12);
    std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
    assert_exit(&env.run(["enqueue".as_ref(), dir.as_os_str()]), 0);
    let again = env.run(["enqueue".as_ref(), dir.as_os_str()]);
    assert_exit(&again, 0);
    assert!(
        stdout(&again).contains("film \"shots\": 0 new, 12 already queued"),
        "{}",
        stdout(&again)
    );

    assert_eq!(env.count("SELECT count(*) FROM frames").await, 12);
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'queued'")
            .await,
        12
    );
    assert_eq!(
        env.count("SELECT frame_count FROM films WHERE title = 'shots'")
            .await,
        12
    );
    let paths = env.strings_now("SELECT path FROM frames ORDER BY frame_index");
    let names: Vec<String> = paths
        .iter()
        .map(|p| p.rsplit('/').next().unwrap().to_string())
        .collect();
    let want: Vec<String> = (1..=12).map(|i| format!("frame_{i}.jpg")).collect();
    assert_eq!(names, want, "natural order: frame_2 before frame_10");
    let canonical = std::fs::canonicalize(&dir).unwrap();
    assert!(
        paths
            .iter()
            .all(|p| p.starts_with(canonical.to_str().unwrap())),
        "canonical paths"
    );
}

on_both!(async new_frames_in_a_folder_are_appended_after_the_old_ones);

async fn new_frames_in_a_folder_are_appended_after_the_old_ones(env: &Env) {
    let dir = env.frames("reel", 3);
    assert_exit(&env.run(["enqueue".as_ref(), dir.as_os_str()]), 0);
    std::fs::write(dir.join("frame_0.jpg"), b"x").unwrap();
    let o = env.run(["enqueue".as_ref(), dir.as_os_str(), "--json".as_ref()]);
    assert_exit(&o, 0);
    let summary: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(summary["new"], 1);
    assert_eq!(summary["already"], 3);
    let idx = env.count_now("SELECT frame_index FROM frames WHERE path LIKE '%frame_0.jpg'");
    assert_eq!(idx, 3, "numbered after the film's last frame, no gaps");
}

on_both!(async globs_and_files_go_to_the_film_named_by_their_folder_or_by_film);

async fn globs_and_files_go_to_the_film_named_by_their_folder_or_by_film(env: &Env) {
    let dir = env.frames("cut one", 5);
    let pattern = format!("{}/frame_[1-3].jpg", dir.display());
    let o = env.run(["enqueue", &pattern]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("film \"cut one\": 3 new"),
        "{}",
        stdout(&o)
    );
    let file = dir.join("frame_5.jpg");
    let o = env.run([
        "enqueue".as_ref(),
        file.as_os_str(),
        "--film".as_ref(),
        "Ünïcode title".as_ref(),
    ]);
    assert_exit(&o, 0);
    assert_eq!(env.count("SELECT count(*) FROM films").await, 2);
    assert_eq!(
        env.count("SELECT frame_count FROM films WHERE title = 'Ünïcode title'")
            .await,
        1
    );
}

on_both!(async manifests_in_jsonl_and_csv_keep_index_and_time);

async fn manifests_in_jsonl_and_csv_keep_index_and_time(env: &Env) {
    let dir = env.frames("m", 3);
    let jsonl = env.path().join("film.jsonl");
    std::fs::write(
        &jsonl,
        "{\"path\":\"m/frame_1.jpg\",\"frame_index\":10,\"pts_ms\":400}\n\n{\"path\":\"m/frame_2.jpg\",\"frame_index\":20,\"pts_ms\":800}\n",
    )
    .unwrap();
    let o = env.run(["enqueue".as_ref(), "--manifest".as_ref(), jsonl.as_os_str()]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("film \"film\": 2 new"),
        "{}",
        stdout(&o)
    );

    let csv = env.path().join("other.csv");
    std::fs::write(
        &csv,
        format!(
            "path,pts_ms\n\"{}\",1234\nm/frame_2.jpg,5678\n",
            dir.join("frame_3.jpg").display()
        ),
    )
    .unwrap();
    let o = env.run(["enqueue".as_ref(), "--manifest".as_ref(), csv.as_os_str()]);
    assert_exit(&o, 0);

    let short = env.strings_now(
        "SELECT f.title || ' ' || CAST(fr.frame_index AS TEXT) || ' ' || CAST(fr.pts_ms AS TEXT) \
         || ' ' || fr.path FROM frames fr JOIN films f ON f.id = fr.film_id \
         ORDER BY f.id, fr.frame_index",
    );
    let short: Vec<String> = short
        .iter()
        .map(|row| {
            let (facts, path) = row.rsplit_once(' ').unwrap();
            format!("{facts} {}", path.rsplit('/').next().unwrap())
        })
        .collect();
    assert_eq!(
        short,
        [
            "film 10 400 frame_1.jpg",
            "film 20 800 frame_2.jpg",
            "other 0 1234 frame_3.jpg",
            "other 1 5678 frame_2.jpg",
        ]
    );

    // Again, plus a path the film has under another index: nothing new, and
    // neither counts as a clash of indexes.
    let mut text = std::fs::read_to_string(&jsonl).unwrap();
    text.push_str("{\"path\":\"m/frame_1.jpg\",\"frame_index\":30,\"pts_ms\":1200}\n");
    std::fs::write(&jsonl, text).unwrap();
    let o = env.run(["enqueue".as_ref(), "--manifest".as_ref(), jsonl.as_os_str()]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("film \"film\": 0 new, 3 already queued"),
        "{}",
        stdout(&o)
    );
    assert_eq!(env.count("SELECT count(*) FROM frames").await, 4);
    assert_eq!(env.count("SELECT count(*) FROM jobs").await, 4);
    // SQLite's bulk loader skips per-row foreign-key checks; every
    // reference holds (PostgreSQL checks its keys itself).
    if env.backend() == Backend::Sqlite {
        assert_eq!(
            env.count("SELECT count(*) FROM pragma_foreign_key_check")
                .await,
            0
        );
    }
}

on_both!(async links_and_odd_files_are_followed_or_rejected_with_their_reason);

/// Links are followed to what they point at; a broken link, a link to a
/// folder, a frame in a missing folder and a FIFO are each rejected with
/// their reason, and the rest is enqueued.
async fn links_and_odd_files_are_followed_or_rejected_with_their_reason(env: &Env) {
    use std::os::unix::fs::symlink;

    let real = env.frames("real", 2);
    let dir = env.path().join("links");
    std::fs::create_dir(&dir).unwrap();
    symlink(real.join("frame_1.jpg"), dir.join("a_link.jpg")).unwrap();
    symlink(real.join("gone.jpg"), dir.join("b_broken.jpg")).unwrap();
    symlink(&real, dir.join("c_folder.jpg")).unwrap();
    nix::unistd::mkfifo(&dir.join("d_fifo.jpg"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let in_missing_folder = env.path().join("nowhere").join("e.jpg");
    // A manifest, so each path reaches the frame check as it is (on the
    // command line a link to a folder is a folder of frames).
    let manifest = env.path().join("links.jsonl");
    let rows: String = [
        dir.join("a_link.jpg"),
        dir.join("b_broken.jpg"),
        dir.join("c_folder.jpg"),
        dir.join("d_fifo.jpg"),
        in_missing_folder.clone(),
        real.join("frame_2.jpg"),
    ]
    .iter()
    .map(|p| format!("{}\n", serde_json::json!({ "path": p })))
    .collect();
    std::fs::write(&manifest, rows).unwrap();
    let o = env.run([
        "enqueue".as_ref(),
        "--manifest".as_ref(),
        manifest.as_os_str(),
    ]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    for (name, reason) in [
        ("b_broken.jpg", "broken link"),
        ("c_folder.jpg", "is a folder, not an image file"),
        ("d_fifo.jpg", "is not a regular file"),
    ] {
        assert!(
            err.contains(&format!("{}: {reason}", dir.join(name).display())),
            "{name}: {err}"
        );
    }
    assert!(
        err.contains(&format!("{}: does not exist", in_missing_folder.display())),
        "{err}"
    );
    assert!(err.contains("4 frame(s) rejected"), "{err}");
    let paths = env.strings_now("SELECT path FROM frames ORDER BY frame_index");
    let canonical = std::fs::canonicalize(&real).unwrap();
    assert_eq!(
        paths,
        vec![
            canonical.join("frame_1.jpg").display().to_string(),
            canonical.join("frame_2.jpg").display().to_string(),
        ],
        "a link is stored as the canonical path of its target"
    );
}

on_both!(async missing_frames_are_reported_and_the_rest_enqueued);

async fn missing_frames_are_reported_and_the_rest_enqueued(env: &Env) {
    let dir = env.frames("f", 4);
    let missing = dir.join("frame_99.jpg");
    let sub = dir.join("frame_dir.jpg");
    std::fs::create_dir(&sub).unwrap();
    let o = env.run([
        "enqueue".as_ref(),
        dir.join("frame_1.jpg").as_os_str(),
        missing.as_os_str(),
        dir.join("frame_2.jpg").as_os_str(),
    ]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains(&format!("rejected {}: does not exist", missing.display())),
        "{err}"
    );
    assert!(err.contains("1 frame(s) rejected"), "{err}");
    assert_eq!(env.count("SELECT count(*) FROM jobs").await, 2);

    // A manifest naming a folder and a missing file.
    let m = env.path().join("bad.jsonl");
    std::fs::write(
        &m,
        "{\"path\":\"f/frame_3.jpg\"}\n{\"path\":\"f/frame_dir.jpg\"}\n{\"path\":\"f/gone.jpg\"}\n",
    )
    .unwrap();
    let o = env.run(["enqueue".as_ref(), "--manifest".as_ref(), m.as_os_str()]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("is a folder, not an image file"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("2 frame(s) rejected"), "{}", stderr(&o));
    assert_eq!(env.count("SELECT count(*) FROM jobs").await, 3);
}

on_both!(async strict_enqueues_nothing_when_a_frame_is_rejected);

async fn strict_enqueues_nothing_when_a_frame_is_rejected(env: &Env) {
    let dir = env.frames("s", 3);
    let o = env.run([
        "enqueue".as_ref(),
        dir.as_os_str(),
        "nope.png".as_ref(),
        "--strict".as_ref(),
    ]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("nothing enqueued (--strict)"),
        "{}",
        stderr(&o)
    );
    assert_eq!(env.count("SELECT count(*) FROM frames").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM films").await, 0);
}

on_both!(async a_malformed_manifest_changes_nothing);

async fn a_malformed_manifest_changes_nothing(env: &Env) {
    env.frames("b", 3);
    for (name, body, want) in [
        (
            "syntax.jsonl",
            "{\"path\":\"b/frame_1.jpg\"}\n{\"path\": oops}\n",
            "line 2: not a valid row",
        ),
        (
            "mixed.jsonl",
            "{\"path\":\"b/frame_1.jpg\",\"frame_index\":1}\n{\"path\":\"b/frame_2.jpg\"}\n",
            "line 2: give frame_index on every row or on none",
        ),
        (
            "unknown.jsonl",
            "{\"path\":\"b/frame_1.jpg\",\"colour\":\"red\"}\n",
            "unknown field `colour`",
        ),
        (
            "nopath.csv",
            "pts_ms,frame_index\n3,1\n",
            "missing field `path`",
        ),
        (
            "negative.csv",
            "path,frame_index\nb/frame_1.jpg,-4\n",
            "must not be negative",
        ),
    ] {
        let m = env.path().join(name);
        std::fs::write(&m, body).unwrap();
        let o = env.run(["enqueue".as_ref(), "--manifest".as_ref(), m.as_os_str()]);
        assert_exit(&o, 1);
        assert!(stderr(&o).contains(want), "{name}: {}", stderr(&o));
    }
    let o = env.run(["enqueue", "--manifest", "/no/such/manifest.csv"]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("cannot read /no/such/manifest.csv: No such file"),
        "{}",
        stderr(&o)
    );
    assert_eq!(env.count("SELECT count(*) FROM frames").await, 0);
}

on_both!(async an_explicit_index_held_by_another_frame_is_rejected);

async fn an_explicit_index_held_by_another_frame_is_rejected(env: &Env) {
    env.frames("c", 2);
    let m1 = env.path().join("one.jsonl");
    std::fs::write(&m1, "{\"path\":\"c/frame_1.jpg\",\"frame_index\":0}\n").unwrap();
    let m2 = env.path().join("two.jsonl");
    std::fs::write(&m2, "{\"path\":\"c/frame_2.jpg\",\"frame_index\":0}\n").unwrap();
    assert_exit(
        &env.run([
            "enqueue".as_ref(),
            "--film".as_ref(),
            "c".as_ref(),
            "--manifest".as_ref(),
            m1.as_os_str(),
        ]),
        0,
    );
    let o = env.run([
        "enqueue".as_ref(),
        "--film".as_ref(),
        "c".as_ref(),
        "--manifest".as_ref(),
        m2.as_os_str(),
    ]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("frame_index 0 of film \"c\" already holds another frame"),
        "{}",
        stderr(&o)
    );
    assert_eq!(env.count("SELECT count(*) FROM frames").await, 1);
}

on_both!(no_input_and_empty_folders_are_clear_errors);

fn no_input_and_empty_folders_are_clear_errors(env: &Env) {
    let o = env.run(["enqueue"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("no input"), "{}", stderr(&o));
    let empty = env.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = env.run(["enqueue".as_ref(), empty.as_os_str()]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("folder has no image files"),
        "{}",
        stderr(&o)
    );
    let txt = env.path().join("readme.txt");
    std::fs::write(&txt, "x").unwrap();
    let o = env.run(["enqueue".as_ref(), txt.as_os_str()]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("not a video or image file (ffprobe: "),
        "{}",
        stderr(&o)
    );
}

on_both!(async two_producers_at_once_neither_fail_nor_duplicate);

/// Two producer processes enqueue overlapping frame sets into one database at
/// the same time, in small chunks so their transactions interleave.
async fn two_producers_at_once_neither_fail_nor_duplicate(env: &Env) {
    let dir = env.frames("race", 3000);
    // Create the schema first so both processes race on the data, not on migration.
    env.make_db();
    let spawn = |extra: &str| {
        let mut c = env.cmd(["enqueue", "--json", "--chunk-size", "50", "--film", "race"]);
        c.arg(&dir);
        if !extra.is_empty() {
            c.arg(extra);
        }
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn("");
    let b = spawn("");
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_exit(&a, 0);
    assert_exit(&b, 0);
    let sa: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    let sb: serde_json::Value = serde_json::from_str(&stdout(&b)).unwrap();
    let new = sa["new"].as_u64().unwrap() + sb["new"].as_u64().unwrap();
    let already = sa["already"].as_u64().unwrap() + sb["already"].as_u64().unwrap();
    assert_eq!(new, 3000, "each frame created by exactly one producer");
    assert_eq!(already, 3000, "and reported as already queued by the other");
    assert_eq!(env.count("SELECT count(*) FROM frames").await, 3000);
    assert_eq!(
        env.count("SELECT count(DISTINCT path) FROM frames").await,
        3000
    );
    assert_eq!(env.count("SELECT count(*) FROM jobs").await, 3000);
    assert_eq!(env.count("SELECT frame_count FROM films").await, 3000);
    assert_eq!(
        env.count("SELECT count(DISTINCT frame_index) FROM frames")
            .await,
        3000
    );
    assert_eq!(
        env.count("SELECT max(frame_index) FROM frames").await,
        2999,
        "no gaps in numbering"
    );
}
