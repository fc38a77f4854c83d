//! The same inputs give the same data on both backends: the views SQL users
//! read have the same columns in the same order, and a description written
//! by a supervised worker keeps the same facts of its try (the weights'
//! SHA-256, the prompt version, latency and token counts) on SQLite and on
//! PostgreSQL. Regression: PostgreSQL's descriptions kept only the answer
//! and the model's name, and `passes` there printed other columns.

use crate::util::{Backend, Env, assert_exit, llama_server, on_both, stderr, stdout, tiny_model};

/// The columns of view `view` of `env`'s database, in order.
fn columns(env: &Env, view: &str) -> Vec<String> {
    let sql = match env.backend() {
        Backend::Sqlite => format!("SELECT name FROM pragma_table_info('{view}') ORDER BY cid"),
        Backend::Postgres => format!(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_name = '{view}' ORDER BY ordinal_position"
        ),
    };
    env.strings_now(&sql)
}

/// The views README presents as the schema, for SQL users.
const VIEWS: [&str; 5] = [
    "frame_descriptions",
    "frame_times",
    "frame_dialogue",
    "film_progress",
    "pass_comparison",
];

#[test]
fn the_views_have_the_same_columns_on_both_backends() {
    let sqlite = Env::new();
    let postgres = Env::postgres();
    for env in [&sqlite, &postgres] {
        env.make_db();
    }
    for view in VIEWS {
        let on_sqlite = columns(&sqlite, view);
        assert!(!on_sqlite.is_empty(), "SQLite has no view {view}");
        assert_eq!(on_sqlite, columns(&postgres, view), "view {view}");
    }
}

on_both!(a_supervised_worker_records_the_weights_prompt_tokens_and_latency);

/// Three stills described by the real
/// llama-server with the tiny model; each description names the weights
/// that answered (the pass learns them too), its prompt version, its
/// tokens and its latency, and `passes --json` reports the means.
fn a_supervised_worker_records_the_weights_prompt_tokens_and_latency(env: &Env) {
    env.enqueue_images("stills", 3, &[]);
    let (model, mmproj, _) = tiny_model();
    let mut w = env.cmd(["worker", "--until-empty", "--parallel", "2"]);
    w.arg("--model").arg(&model).arg("--mmproj").arg(&mmproj);
    w.arg("--server-bin").arg(llama_server());
    w.args(["--server-arg=-t", "--server-arg=1"]);
    let o = w.output().unwrap();
    assert_exit(&o, 0);
    assert_eq!(
        env.count_now("SELECT count(*) FROM frame_descriptions"),
        3,
        "{}",
        stderr(&o)
    );
    let sha = env.strings_now("SELECT DISTINCT model_sha256 FROM frame_descriptions");
    assert_eq!(sha.len(), 1, "one set of weights answered: {sha:?}");
    let hex = |h: &str| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
    assert!(
        sha[0].split('+').map(hex).eq([true, true]),
        "the model's and the mmproj's SHA-256 in hex: {sha:?}"
    );
    assert_eq!(
        env.count_now(
            "SELECT count(*) FROM frame_descriptions WHERE prompt_version >= 1 \
             AND latency_ms > 0 AND prompt_tokens > 0 AND completion_tokens > 0"
        ),
        3,
        "every description keeps its try's facts"
    );
    assert_eq!(
        env.strings_now("SELECT model_sha256 FROM passes WHERE model_sha256 IS NOT NULL"),
        sha,
        "the pass learnt its weights from its first description"
    );
    let listed = stdout(&env.run(["passes", "--json"]));
    let pass: serde_json::Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(pass["model_sha256"], sha[0].as_str(), "{listed}");
    assert_eq!(pass["described"], 3, "{listed}");
    for mean in [
        "mean_latency_ms",
        "mean_prompt_tokens",
        "mean_completion_tokens",
    ] {
        assert!(
            pass[mean].as_f64().is_some_and(|v| v > 0.0),
            "{mean}: {listed}"
        );
    }
}

/// One script of commands, run on a SQLite file and on PostgreSQL, each in
/// a folder of its own with the same inputs: a film and stills enqueued for
/// two passes, described by the fake server, a frame that fails and is
/// retried, a film cancelled, then every reader. What each command prints
/// is the same on both, field for field, once the folder, ids and times
/// are taken out.
#[test]
fn one_script_of_commands_prints_the_same_on_both_backends() {
    let sqlite = Env::new();
    let postgres = Env::postgres();
    let on_sqlite = script(&sqlite);
    let on_postgres = script(&postgres);
    // What is compared is what the script promises, not two empty outputs.
    let lines = |step: &str| {
        let (_, text) = on_sqlite.iter().find(|(s, _)| s == step).unwrap();
        text.lines().count()
    };
    assert_eq!(
        lines("results --state failed --format jsonl"),
        1,
        "the lost still"
    );
    assert_eq!(lines("results --format jsonl"), 12, "6 frames in 2 passes");
    assert_eq!(lines("passes --json"), 2, "passes a and b, nothing else");
    assert_eq!(on_sqlite.len(), on_postgres.len());
    for ((step, a), (_, b)) in on_sqlite.iter().zip(&on_postgres) {
        assert_eq!(a, b, "`{step}` printed otherwise on PostgreSQL");
    }
}

/// The script's steps and what each printed (stdout, normalised).
fn script(env: &Env) -> Vec<(String, String)> {
    let video = crate::film::three_shots(env, "trailer.mp4");
    let stills = env.images("stills", 3);
    let extra = env.images("extra", 2);
    let frames_dir = env.path().join("frames");
    let fake = crate::util::FakeServer::start(env, &[]);
    let dir = env.path().canonicalize().unwrap().display().to_string();
    let mut out = Vec::new();
    let mut step = |args: &[&str], code: i32| {
        let o = env.run(args);
        assert_exit(&o, code);
        let text = normalise(&stdout(&o).replace(&dir, "<dir>"));
        // A search ranks by each engine's own relevance (FTS5's bm25,
        // PostgreSQL's ts_rank): the same hits, in an order of its own.
        let text = match args[0] {
            "search" => {
                let mut lines: Vec<&str> = text.lines().collect();
                lines.sort_unstable();
                lines.join("\n")
            }
            _ => text,
        };
        out.push((args.join(" "), text));
    };
    let frames = frames_dir.to_str().unwrap();
    let (video, stills, extra) = (
        video.to_str().unwrap(),
        stills.to_str().unwrap(),
        extra.to_str().unwrap(),
    );
    step(
        &[
            "enqueue",
            video,
            stills,
            "--pass",
            "a",
            "--pass",
            "b",
            "--frames-dir",
            frames,
            "--json",
        ],
        0,
    );
    // A still lost before it is described fails in pass a.
    let lost = format!("{stills}/img_2.png");
    let kept = std::fs::read(&lost).unwrap();
    std::fs::remove_file(&lost).unwrap();
    let url = fake.url();
    step(
        &[
            "worker",
            "--server-url",
            &url,
            "--pass",
            "a",
            "--until-empty",
        ],
        0,
    );
    step(&["results", "--state", "failed", "--format", "jsonl"], 0);
    std::fs::write(&lost, kept).unwrap();
    step(&["retry", "--failed"], 0);
    for pass in ["a", "b"] {
        step(
            &[
                "worker",
                "--server-url",
                &url,
                "--pass",
                pass,
                "--until-empty",
            ],
            0,
        );
    }
    step(&["enqueue", extra, "--pass", "a", "--film", "extra"], 0);
    step(&["cancel", "--film", "extra"], 0);
    step(&["status", "--json"], 0);
    step(&["passes", "--json"], 0);
    step(&["results", "--format", "jsonl"], 0);
    step(&["results", "--format", "csv"], 0);
    step(&["results", "--pass", "b", "--film", "trailer"], 0);
    step(&["search", "figure window", "--json"], 0);
    step(&["search", "figure window"], 0);
    let report = env.path().join("report.html");
    let out_arg = report.to_str().unwrap().to_string();
    step(&["report", "--film", "trailer", "--output", &out_arg], 0);
    assert!(report.is_file(), "the report is written where asked");
    out
}

/// What differs by nature between two databases: ids, times, durations and
/// the workers' own rows. JSON lines lose those keys; other text is kept.
fn normalise(text: &str) -> String {
    const VARYING: [&str; 13] = [
        "rank",
        "film_id",
        "pass_id",
        "created_at",
        "oldest_queued_at",
        "seconds",
        "described_at",
        "described_at_iso",
        "mean_latency_ms",
        "workers",
        "leases",
        "started_at",
        "heartbeat_at",
    ];
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.retain(|k, _| !VARYING.contains(&k.as_str()));
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    text.lines()
        .map(
            |line| match serde_json::from_str::<serde_json::Value>(line) {
                Ok(mut v) if v.is_object() => {
                    strip(&mut v);
                    v.to_string()
                }
                _ => line.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("\n")
}

on_both!(strict_checks_videos_too_and_then_enqueues_nothing);

/// One entry for every input: `--strict` checks videos too, before
/// anything is written. Regression: on PostgreSQL the videos were
/// enqueued before the stills were checked.
fn strict_checks_videos_too_and_then_enqueues_nothing(env: &Env) {
    let junk = env.path().join("junk.mp4");
    std::fs::write(&junk, b"this is not a video at all").unwrap();
    let good = crate::film::three_shots(env, "good.mp4");
    let stills = env.images("stills", 2);
    let o = env.run([
        "enqueue".as_ref(),
        "--strict".as_ref(),
        good.as_os_str(),
        junk.as_os_str(),
        stills.as_os_str(),
    ]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains(&format!("video {}: ", junk.display())),
        "{err}"
    );
    assert!(
        err.contains("1 of 2 video(s) failed (see above); nothing enqueued (--strict)"),
        "{err}"
    );
    assert_eq!(env.count_now("SELECT count(*) FROM films"), 0);
    assert_eq!(env.count_now("SELECT count(*) FROM jobs"), 0);
    let frames_dir = env.path().join("cinecut-frames");
    assert!(
        !frames_dir.exists() || std::fs::read_dir(&frames_dir).unwrap().next().is_none(),
        "no ffmpeg ran"
    );

    // Without the bad video, the same command enqueues both films.
    let o = env.run([
        "enqueue".as_ref(),
        "--strict".as_ref(),
        good.as_os_str(),
        stills.as_os_str(),
    ]);
    assert_exit(&o, 0);
    assert_eq!(env.count_now("SELECT count(*) FROM films"), 2);
    assert_eq!(env.count_now("SELECT count(*) FROM jobs"), 5);
    // A folder of stills is a film with its folder and priority, as on
    // SQLite (PostgreSQL's kept neither).
    let source = stills.canonicalize().unwrap().display().to_string();
    assert_eq!(
        env.strings_now("SELECT source_path FROM films WHERE title = 'stills'"),
        [source]
    );
}
