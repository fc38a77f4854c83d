//! Passes: the same frames described by several models and prompt
//! profiles, every answer kept; a worker answers only for its own pass;
//! custom profiles are checked field by field; databases of the release
//! before passes migrate into one pass per model and prompt.

use std::process::Stdio;

use crate::util::{
    Env, FakeServer, assert_exit, llama_server, on_both, second_tiny_model, stderr, stdout,
    tiny_model,
};

/// A profile whose every field is bounded, so that even a random-weight
/// model's grammar-constrained answer ends well within --max-tokens.
pub(crate) const BOUNDED_PROFILE: &str = r#"
name = "bounded"
user = "Describe this frame for a trailer editor."
[[fields]]
name = "shot_type"
type = "enum"
values = ["close-up", "medium", "wide"]
instruction = "the framing"
[[fields]]
name = "characters"
type = "tags"
max_items = 3
max_length = 12
instruction = "who is on screen"
[[fields]]
name = "intensity"
type = "integer"
min = 1
max = 5
[[fields]]
name = "night"
type = "boolean"
[[fields]]
name = "note"
type = "text"
max_length = 40
"#;

/// The stored answers of pass `pass` that break a bound of
/// BOUNDED_PROFILE (none when all hold), read whole from the database.
fn bounded_violations(env: &Env, pass: &str) -> Vec<String> {
    let rows = env.rows_now(&format!(
        "SELECT CAST(d.fields AS TEXT) AS fields, \
         CASE WHEN d.visual_content IS NULL THEN 1 ELSE 0 END AS seed_empty \
         FROM descriptions d JOIN passes p ON p.id = d.pass_id WHERE p.name = '{pass}'"
    ));
    assert!(!rows.is_empty(), "pass {pass} has answers");
    let holds = |f: &serde_json::Value| {
        let Some(obj) = f.as_object() else {
            return false;
        };
        let tags = f["characters"].as_array();
        obj.len() == 5
            && ["close-up", "medium", "wide"].contains(&f["shot_type"].as_str().unwrap_or(""))
            && tags.is_some_and(|t| {
                t.len() <= 3
                    && t.iter().all(|c| {
                        c.as_str()
                            .is_some_and(|c| (1..=12).contains(&c.chars().count()))
                    })
            })
            && f["intensity"]
                .as_i64()
                .is_some_and(|i| (1..=5).contains(&i))
            && f["night"].is_boolean()
            && f["note"]
                .as_str()
                .is_some_and(|n| (1..=40).contains(&n.chars().count()))
    };
    rows.iter()
        .filter(|r| {
            let fields: serde_json::Value =
                serde_json::from_str(r["fields"].as_str().unwrap()).unwrap();
            !(holds(&fields) && r["seed_empty"] == 1)
        })
        .map(|r| r["fields"].to_string())
        .collect()
}

fn count_in_pass(env: &Env, sql: &str, pass: &str) -> i64 {
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    conn.query_row(sql, [pass], |r| r.get(0)).unwrap()
}

/// Two different models (two passes) over the same frames, then a third
/// pass with a custom profile, all through the real llama-server: every
/// answer kept, compared side by side in SQL, and re-running a pass adds
/// nothing.
#[test]
fn two_models_and_a_custom_profile_describe_the_same_frames_side_by_side() {
    let env = Env::new();
    env.enqueue_images("shared", 3, &[]);
    let (model_a, mmproj, _) = tiny_model();
    let model_b = second_tiny_model();
    let profile = env.path().join("bounded.toml");
    std::fs::write(&profile, BOUNDED_PROFILE).unwrap();
    let real = |command: &str, model: &std::path::Path, extra: &[&str]| {
        let mut c = env.cmd([command]);
        c.arg("--model").arg(model).arg("--mmproj").arg(&mmproj);
        c.arg("--server-bin").arg(llama_server());
        c.arg("--server-arg=-t").arg("--server-arg=1");
        c.args(["--until-empty", "--retry-backoff", "10ms"])
            .args(extra);
        c.stdin(Stdio::null());
        c.output().unwrap()
    };
    // The first worker binds the pass enqueue made; `describe` makes the second.
    assert_exit(&real("worker", &model_a, &["--model-name", "tiny-a"]), 0);
    let describe_b = ["--model-name", "tiny-b", "--pass", "tiny-b"];
    assert_exit(&real("describe", &model_b, &describe_b), 0);
    assert_eq!(env.count_now("SELECT count(*) FROM descriptions"), 6);
    assert_eq!(
        env.string_now("SELECT string_agg(name || '=' || model, ' ') FROM passes ORDER BY id"),
        "default=tiny-a tiny-b=tiny-b"
    );
    // Two models indeed: each pass learnt its own weights' hash.
    assert_eq!(
        env.count_now(
            "SELECT count(DISTINCT model_sha256) FROM passes WHERE model_sha256 LIKE '%+%'"
        ),
        2
    );
    // Each frame and field once, with both passes' answers side by side.
    assert_eq!(
        env.count_now(
            "SELECT count(*) FROM pass_comparison \
             WHERE passes = 2 AND answers ->> '$.default' IS NOT NULL \
               AND answers ->> '$.\"tiny-b\"' IS NOT NULL"
        ),
        3 * 4
    );
    assert!(
        env.count_now("SELECT count(*) FROM pass_comparison WHERE NOT agree") > 0,
        "two different models gave the same answers everywhere"
    );
    // Again: nothing new to do, nothing added.
    assert_exit(&real("describe", &model_b, &describe_b), 0);
    assert_eq!(env.count_now("SELECT count(*) FROM jobs"), 6);
    assert_eq!(env.count_now("SELECT count(*) FROM descriptions"), 6);
    // A third pass with the custom profile: every stored answer holds to it.
    let profile_arg = profile.display().to_string();
    let custom = [
        "--model-name",
        "tiny-a",
        "--pass",
        "custom",
        "--prompt",
        &profile_arg,
    ];
    let o = real("describe", &model_a, &custom);
    assert_exit(&o, 0);
    assert_eq!(
        count_in_pass(
            &env,
            "SELECT count(*) FROM descriptions d JOIN passes p ON p.id = d.pass_id WHERE p.name = ?1",
            "custom"
        ),
        3,
        "{}",
        stderr(&o)
    );
    assert_eq!(bounded_violations(&env, "custom"), Vec::<String>::new());
    // A tag the model gave is found by search within that pass.
    let word = longest_word_of_a_tag(&env, "custom");
    let found = stdout(&env.run(["search", "--pass", "custom", &word]));
    assert!(
        found
            .lines()
            .any(|l| l.contains("fields: ") && l.contains(&word)),
        "search {word:?}: {found}"
    );
    // A table of every pass: the profiles differ, so one answer column.
    let table = stdout(&env.run(["results"]));
    let lines: Vec<Vec<&str>> = table.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines[0], ["FILM", "FRAME", "TIME", "PASS", "ANSWER"]);
    assert_eq!(lines.len(), 1 + 9, "{table}");
    for line in &lines[1..] {
        let first_key = if line[3] == "custom" {
            "shot_type: "
        } else {
            "visual_content: "
        };
        assert!(line[4].starts_with(first_key), "{line:?}");
    }
    // A worker of another model is refused a pass settled on this one.
    let o = real(
        "worker",
        &model_b,
        &["--model-name", "tiny-b", "--pass", "custom"],
    );
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("pass \"custom\" is described with model \"tiny-a\""),
        "{}",
        stderr(&o)
    );
    let listed = stdout(&env.run(["passes"]));
    assert_eq!(listed.lines().count(), 4, "{listed}");
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("custom\ttiny-a\tbounded\t3\t3\t")),
        "{listed}"
    );
}

/// The longest run of letters and digits in any tag of pass `pass` (a word
/// full-text search indexes).
fn longest_word_of_a_tag(env: &Env, pass: &str) -> String {
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT t.value FROM descriptions d JOIN passes p ON p.id = d.pass_id, \
             json_each(d.fields, '$.characters') t WHERE p.name = ?1",
        )
        .unwrap();
    let tags: Vec<String> = stmt
        .query_map([pass], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let word = tags
        .iter()
        .flat_map(|t| t.split(|c: char| !c.is_ascii_alphanumeric()))
        .max_by_key(|w| w.len())
        .unwrap_or_default()
        .to_string();
    assert!(!word.is_empty(), "no tag with a searchable word: {tags:?}");
    word
}

on_both!(a_worker_overtaken_on_an_unsettled_pass_answers_nothing_for_it);

/// Two workers of different models bind one pass that is not settled yet,
/// one after the other, before either claims (each waits for its GPU,
/// held by a gpu-lock command): the one overtaken stops with a clear error
/// once it gets its GPU, having answered nothing, and the pass is
/// described by the other's model alone.
fn a_worker_overtaken_on_an_unsettled_pass_answers_nothing_for_it(env: &Env) {
    env.enqueue_images("frames", 6, &["--pass", "p"]);
    let hold = |gpu: &str| {
        let mut c = env.cmd(["gpu-lock", "--gpu-name", gpu, "--", "cat"]);
        c.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = c.spawn().unwrap();
        let held =
            format!("SELECT count(*) FROM gpu_leases WHERE gpu = '{gpu}' AND purpose = 'gpu-lock'");
        crate::util::wait_until(
            "the gpu-lock command to hold its GPU",
            std::time::Duration::from_secs(20),
            || env.count_now(&held) == 1,
        );
        child
    };
    let (mut lock_1, mut lock_2) = (hold("g1"), hold("g2"));
    let binding = || {
        env.strings_now(
            "SELECT coalesce(model, '-') || ':' || binding FROM passes WHERE name = 'p'",
        )
        .join(",")
    };
    let wait_binding = |want: &str| {
        crate::util::wait_until(want, std::time::Duration::from_secs(20), || {
            binding() == want
        })
    };
    let server_a = FakeServer::start(env, &["--model-id", "model-a"]);
    let server_b = FakeServer::start(env, &["--model-id", "model-b"]);
    let worker = |server: &FakeServer, gpu: &str, log: &str| {
        env.worker(
            &server.url(),
            log,
            &["--pass", "p", "--gpu-name", gpu, "--until-empty"],
        )
        .spawn()
        .unwrap()
    };
    let mut a = worker(&server_a, "g1", "a.log");
    wait_binding("model-a:1");
    let mut b = worker(&server_b, "g2", "b.log");
    wait_binding("model-b:2");

    // A gets its GPU first: its claim finds the pass rebound.
    drop(lock_1.stdin.take());
    assert_eq!(a.wait().unwrap().code(), Some(1), "{}", env.log("a.log"));
    assert!(
        env.log("a.log")
            .contains("pass \"p\" was bound to another model or prompt profile"),
        "{}",
        env.log("a.log")
    );
    drop(lock_2.stdin.take());
    assert!(b.wait().unwrap().success(), "{}", env.log("b.log"));
    lock_1.wait().unwrap();
    lock_2.wait().unwrap();
    assert_eq!(
        env.strings_now("SELECT model || ':' || count(*) FROM descriptions GROUP BY model"),
        ["model-b:6"]
    );
    assert_eq!(
        env.count_now("SELECT count(DISTINCT worker_id) FROM attempts"),
        1,
        "the overtaken worker tried nothing"
    );
    // Settled now: another model is refused, with what the pass has.
    let o = env
        .worker(
            &server_a.url(),
            "late.log",
            &["--pass", "p", "--until-empty"],
        )
        .output()
        .unwrap();
    assert_exit(&o, 1);
    assert!(
        env.log("late.log").contains(
            "pass \"p\" is described with model \"model-b\", and this worker has \"model-a\""
        ),
        "{}",
        env.log("late.log")
    );
}

on_both!(a_worker_never_claims_a_job_of_another_pass);

/// Two workers for two passes, at once, on one database and two servers:
/// neither ever claims a job of the other's pass.
fn a_worker_never_claims_a_job_of_another_pass(env: &Env) {
    env.enqueue_images("both", 40, &["--pass", "a", "--pass", "b"]);
    assert_eq!(env.count_now("SELECT count(*) FROM jobs"), 80);
    let server_a = FakeServer::start(env, &["--model-id", "model-a", "--delay-ms", "5"]);
    let server_b = FakeServer::start(env, &["--model-id", "model-b", "--delay-ms", "5"]);
    let start = |server: &FakeServer, pass: &str, log: &str| {
        env.worker(
            &server.url(),
            log,
            &["--pass", pass, "--gpu-name", pass, "--until-empty"],
        )
        .spawn()
        .unwrap()
    };
    let mut a = start(&server_a, "a", "a.log");
    let mut b = start(&server_b, "b", "b.log");
    assert!(a.wait().unwrap().success(), "{}", env.log("a.log"));
    assert!(b.wait().unwrap().success(), "{}", env.log("b.log"));
    assert_eq!(
        env.count_now("SELECT count(*) FROM jobs WHERE state = 'done'"),
        80
    );
    // Each pass answered by its own model only, every try by one worker.
    assert_eq!(
        env.string_now(
            "SELECT string_agg(p.name || ':' || d.model || ':' || n, ' ' ORDER BY p.id) FROM \
             (SELECT pass_id, model, count(*) AS n FROM descriptions GROUP BY pass_id, model) d \
             JOIN passes p ON p.id = d.pass_id"
        ),
        "a:model-a:40 b:model-b:40"
    );
    assert_eq!(
        env.count_now(
            "SELECT count(DISTINCT j.pass_id || '/' || t.worker_id) FROM attempts t \
             JOIN jobs j ON j.id = t.job_id"
        ),
        2,
        "one worker per pass"
    );
    assert_eq!(
        env.count_now(
            "SELECT count(*) FROM (SELECT t.worker_id FROM attempts t JOIN jobs j ON j.id = t.job_id \
             GROUP BY t.worker_id HAVING count(DISTINCT j.pass_id) > 1) w"
        ),
        0
    );
}

on_both!(a_worker_without_a_pass_serves_the_pass_bound_to_its_model);

/// A worker given no --pass picks its pass by one rule on both backends:
/// the pass bound to its model and profile, else the one pass not settled
/// yet, else a new pass named after its model and profile. Regression: on
/// PostgreSQL it always served a pass `default`.
fn a_worker_without_a_pass_serves_the_pass_bound_to_its_model(env: &Env) {
    let server_a = FakeServer::start(env, &["--model-id", "model-a"]);
    let server_b = FakeServer::start(env, &["--model-id", "model-b"]);
    let work = |server: &FakeServer, log: &str| {
        let o = env
            .worker(&server.url(), log, &["--until-empty"])
            .output()
            .unwrap();
        assert_exit(&o, 0);
        env.log(log)
    };
    let done_in = |pass: &str| {
        env.count_now(&format!(
            "SELECT count(*) FROM jobs j JOIN passes p ON p.id = j.pass_id \
             WHERE j.state = 'done' AND p.name = '{pass}'"
        ))
    };
    // The only pass, not settled: model-a binds it.
    env.enqueue_images("first", 3, &["--pass", "alpha"]);
    let log = work(&server_a, "a1.log");
    assert!(log.contains("serving pass pass=alpha"), "{log}");
    assert_eq!(done_in("alpha"), 3);
    // alpha is model-a's: model-a serves it again, not the new beta.
    env.enqueue_images("second", 2, &["--pass", "alpha", "--pass", "beta"]);
    let log = work(&server_a, "a2.log");
    assert!(log.contains("serving pass pass=alpha"), "{log}");
    assert_eq!((done_in("alpha"), done_in("beta")), (5, 0));
    // model-b: alpha is settled on another model, beta is the one not settled.
    let log = work(&server_b, "b1.log");
    assert!(log.contains("serving pass pass=beta"), "{log}");
    assert_eq!(done_in("beta"), 2);
    // Both settled on other models than model-c's: a pass of its own.
    let server_c = FakeServer::start(env, &["--model-id", "model-c"]);
    let log = work(&server_c, "c1.log");
    assert!(log.contains("serving pass pass=model-c/"), "{log}");
    assert_eq!(
        env.strings_now("SELECT name FROM passes ORDER BY id"),
        ["alpha", "beta", "model-c/default"]
    );
}

on_both!(a_custom_profile_fails_answers_out_of_bounds_and_searches_its_tags);

/// A custom profile's answers are checked field by field: an enum value not
/// allowed, an integer out of range, too many tags are bad output, retried
/// and then failed with the raw text kept; good answers are stored whole and
/// found by search through their tags.
fn a_custom_profile_fails_answers_out_of_bounds_and_searches_its_tags(env: &Env) {
    let profile = env.path().join("bounded.toml");
    std::fs::write(&profile, BOUNDED_PROFILE).unwrap();
    let profile = profile.display().to_string();
    env.enqueue_images("bad", 2, &["--pass", "custom"]);
    let bad = FakeServer::start(env, &["--answers", "out-of-bounds"]);
    let o = env
        .worker(
            &bad.url(),
            "bad.log",
            &[
                "--pass",
                "custom",
                "--prompt",
                &profile,
                "--until-empty",
                "--retry-backoff",
                "10ms",
            ],
        )
        .status()
        .unwrap();
    assert!(o.success(), "{}", env.log("bad.log"));
    assert_eq!(
        env.count_now("SELECT count(*) FROM jobs WHERE state = 'failed'"),
        2
    );
    assert_eq!(
        env.count_now(
            "SELECT count(*) FROM attempts WHERE error_class = 'bad_output' \
             AND raw_output LIKE '%not-an-allowed-value%' AND error LIKE '%shot_type%'"
        ),
        6,
        "three tries each, the raw answer kept"
    );
    // Each bound on its own: integer past its maximum, one tag too many.
    let p = cinecut::profile::Profile::load(std::path::Path::new(&profile)).unwrap();
    let raw: String = env.string_now("SELECT raw_output FROM attempts LIMIT 1");
    let mut v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    v["shot_type"] = "wide".into();
    let err = p.parse_answer(&v.to_string()).unwrap_err().to_string();
    assert!(
        err.contains("characters") || err.contains("intensity"),
        "{err}"
    );
    v["characters"] = serde_json::json!(["one"]);
    let err = p.parse_answer(&v.to_string()).unwrap_err().to_string();
    assert!(err.contains("intensity: 6 is outside 1..=5"), "{err}");

    // Good answers: stored whole, seed columns empty, tags searchable.
    env.enqueue_images("good", 3, &["--pass", "custom"]);
    let good = FakeServer::start(env, &[]);
    let o = env
        .worker(
            &good.url(),
            "good.log",
            &["--pass", "custom", "--prompt", &profile, "--until-empty"],
        )
        .status()
        .unwrap();
    assert!(o.success(), "{}", env.log("good.log"));
    assert_eq!(bounded_violations(env, "custom"), Vec::<String>::new());
    let first_good: serde_json::Value = serde_json::from_str(&env.string_now(
        "SELECT CAST(d.fields AS TEXT) FROM descriptions d JOIN frames f ON f.id = d.frame_id \
         JOIN films m ON m.id = f.film_id WHERE m.title = 'good' ORDER BY f.frame_index LIMIT 1",
    ))
    .unwrap();
    let tags: Vec<&str> = first_good["characters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let tag = tags[0].to_string();
    let o = env.run(["search", &tag, "--pass", "custom"]);
    assert_exit(&o, 0);
    let hits = stdout(&o);
    assert!(
        !hits.is_empty() && hits.lines().all(|l| l.contains(&format!("fields: {tag}"))),
        "{hits}"
    );

    // A table of the pass: a column per field of its profile.
    let table = stdout(&env.run(["results", "--film", "good", "--pass", "custom"]));
    let lines: Vec<Vec<&str>> = table.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(
        lines[0],
        [
            "FILM",
            "FRAME",
            "TIME",
            "PASS",
            "SHOT TYPE",
            "CHARACTERS",
            "INTENSITY",
            "NIGHT",
            "NOTE"
        ]
    );
    assert_eq!(lines.len(), 1 + 3, "{table}");
    assert!(
        lines[1..]
            .iter()
            .all(|l| l[3] == "custom" && ["close-up", "medium", "wide"].contains(&l[4])),
        "{table}"
    );

    // The report shows the profile's own fields, coloured by its enum.
    let html_path = env.path().join("custom.html");
    let html_arg = html_path.display().to_string();
    assert_exit(
        &env.run([
            "report", "--film", "good", "--pass", "custom", "-o", &html_arg,
        ]),
        0,
    );
    let html = std::fs::read_to_string(&html_path).unwrap();
    let shot = first_good["shot_type"].as_str().unwrap();
    let tags = tags.join(", ");
    for needle in [
        format!("<dt>Shot type</dt><dd>{shot}</dd><dt>Characters</dt><dd>{tags}</dd>"),
        "<dt>Intensity</dt><dd>".into(),
        "<dt>Night</dt><dd>".into(),
        "Timeline by shot type:".into(),
        "pass custom".into(),
    ] {
        assert!(html.contains(&needle), "{needle} not in the report");
    }
    assert!(
        !html.contains("<dt>Mood</dt>"),
        "no seed field in a custom pass"
    );
    let o = env.run([
        "report", "--film", "good", "--pass", "custom", "--strip", "mood", "-o", &html_arg,
    ]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("--strip mood: the pass's profile has no such field; its fields: shot_type, characters, intensity, night, note"),
        "{}",
        stderr(&o)
    );
}

/// A database written by the release before passes (its migrations only)
/// opens with every description in the pass of its model and prompt, its
/// other jobs in the latest pass, nothing lost. (SQLite only: PostgreSQL
/// came after passes, and has no such databases.)
#[tokio::test]
async fn a_database_from_before_passes_migrates_into_one_pass_per_model_and_prompt() {
    let env = Env::new();
    let path = env.db();
    {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        let mut old = sqlx::migrate::Migrator::new(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations"),
        )
        .await
        .unwrap();
        old.migrations = old
            .migrations
            .iter()
            .filter(|m| m.version <= 10)
            .cloned()
            .collect::<Vec<_>>()
            .into();
        old.run(&pool).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO films (id, title, frame_count, created_at) VALUES (1, 'old', 4, 0);
             INSERT INTO frames (id, film_id, frame_index, path, created_at)
             VALUES (1, 1, 0, '/f/0.png', 0), (2, 1, 1, '/f/1.png', 0), (3, 1, 2, '/f/2.png', 0),
                    (4, 1, 3, '/f/3.png', 0);
             INSERT INTO jobs (id, frame_id, film_id, state, created_at, updated_at)
             VALUES (1, 1, 1, 'done', 0, 0), (2, 2, 1, 'done', 0, 0), (3, 3, 1, 'done', 0, 0),
                    (4, 4, 1, 'queued', 0, 0);
             INSERT INTO descriptions (job_id, frame_id, visual_content, mood, action, setting, model,
                                       model_sha256, prompt_version, created_at)
             VALUES (1, 1, 'a door', 'calm', 'none', 'hall', 'small', 'abc', 1, 10),
                    (2, 2, 'a lamp', 'warm', 'none', 'room', 'small', 'abc', 1, 20),
                    (3, 3, 'a road', 'dusty', 'a car', 'desert', 'big', NULL, 2, 30);",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let db = cinecut::db::Db::open(&path, cinecut::db::Durability::Full)
        .await
        .unwrap();
    db.close().await;
    assert_eq!(
        env.string_now(
            "SELECT string_agg(name || '|' || model || '|' || coalesce(model_sha256, '-'), ' ') \
             FROM (SELECT * FROM passes ORDER BY id)"
        ),
        "small/default|small|abc big/default+dialogue|big|-"
    );
    assert_eq!(
        env.string_now(
            "SELECT string_agg(fr.frame_index || ':' || p.name, ' ') FROM \
             (SELECT * FROM jobs ORDER BY id) j JOIN frames fr ON fr.id = j.frame_id \
             JOIN passes p ON p.id = j.pass_id"
        ),
        "0:small/default 1:small/default 2:big/default+dialogue 3:big/default+dialogue",
        "the undescribed job joins the latest pass"
    );
    assert_eq!(
        env.count_now(
            "SELECT count(*) FROM descriptions d JOIN jobs j ON j.id = d.job_id \
             WHERE d.pass_id = j.pass_id AND d.fields ->> '$.visual_content' = d.visual_content"
        ),
        3
    );
    assert_eq!(
        env.count_now("SELECT count(*) FROM frame_descriptions WHERE pass = 'small/default'"),
        2
    );
    assert_eq!(
        env.count_now(
            "SELECT count(*) FROM description_search WHERE description_search MATCH 'desert'"
        ),
        1
    );
    assert_eq!(env.count_now("SELECT sum(job_count) FROM film_passes"), 4);
    let status = stdout(&env.run(["status", "--pass", "small/default"]));
    assert!(status.contains("old"), "{status}");
}

on_both!(an_enqueue_without_a_pass_queues_the_frames_in_every_pass);

/// With no --pass, enqueue queues the frames in every pass the database
/// has, and makes no pass `default` beside them. Regression: on
/// PostgreSQL it queued them in a new pass `default` only.
fn an_enqueue_without_a_pass_queues_the_frames_in_every_pass(env: &Env) {
    env.enqueue_images("first", 2, &["--pass", "alpha", "--pass", "beta"]);
    env.enqueue_images("later", 3, &[]);
    assert_eq!(
        env.strings_now("SELECT name FROM passes ORDER BY name"),
        ["alpha", "beta"]
    );
    assert_eq!(
        env.strings_now(
            "SELECT p.name || ' ' || CAST(count(*) AS TEXT) FROM jobs j \
             JOIN passes p ON p.id = j.pass_id GROUP BY p.name ORDER BY p.name"
        ),
        ["alpha 5", "beta 5"]
    );
    // A new database's first enqueue without --pass makes `default`.
    let fresh = Env::on(env.backend());
    fresh.enqueue_images("stills", 1, &[]);
    assert_eq!(fresh.strings_now("SELECT name FROM passes"), ["default"]);
}
