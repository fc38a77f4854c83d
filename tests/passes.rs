//! Passes: the same frames described by several models and prompt
//! profiles, every answer kept; a worker answers only for its own pass;
//! custom profiles are checked field by field; databases of the release
//! before passes migrate into one pass per model and prompt.

use std::process::Stdio;

use crate::util::{Env, FakeServer, assert_exit, llama_server, stderr, stdout, tiny_model};

/// A profile whose every field is bounded, so that even a random-weight
/// model's grammar-constrained answer ends well within --max-tokens.
const BOUNDED_PROFILE: &str = r#"
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

/// Every stored answer of pass `pass` checked against BOUNDED_PROFILE in
/// SQL: how many rows break a bound (0 when all hold).
const BOUNDED_VIOLATIONS: &str = "SELECT count(*) FROM descriptions d JOIN passes p ON p.id = d.pass_id \
     WHERE p.name = ?1 AND NOT ( \
       (SELECT count(*) FROM json_each(d.fields)) = 5 \
       AND d.fields ->> '$.shot_type' IN ('close-up', 'medium', 'wide') \
       AND json_type(d.fields, '$.characters') = 'array' \
       AND json_array_length(d.fields, '$.characters') <= 3 \
       AND NOT EXISTS (SELECT 1 FROM json_each(d.fields, '$.characters') t \
                       WHERE t.type <> 'text' OR length(t.value) NOT BETWEEN 1 AND 12) \
       AND json_type(d.fields, '$.intensity') = 'integer' \
       AND d.fields ->> '$.intensity' BETWEEN 1 AND 5 \
       AND json_type(d.fields, '$.night') IN ('true', 'false') \
       AND length(d.fields ->> '$.note') BETWEEN 1 AND 40 \
       AND d.visual_content IS NULL)";

fn count_in_pass(env: &Env, sql: &str, pass: &str) -> i64 {
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    conn.query_row(sql, [pass], |r| r.get(0)).unwrap()
}

/// Two models (two passes) over the same frames, then a third pass with a
/// custom profile, all through the real llama-server: every answer kept,
/// compared side by side in SQL, and re-running a pass adds nothing.
#[test]
fn two_models_and_a_custom_profile_describe_the_same_frames_side_by_side() {
    let env = Env::new();
    env.enqueue_images("shared", 3, &[]);
    let (model, mmproj, _) = tiny_model();
    let profile = env.path().join("bounded.toml");
    std::fs::write(&profile, BOUNDED_PROFILE).unwrap();
    let real = |command: &str, extra: &[&str]| {
        let mut c = env.cmd([command]);
        c.arg("--model").arg(&model).arg("--mmproj").arg(&mmproj);
        c.arg("--server-bin").arg(llama_server());
        c.arg("--server-arg=-t").arg("--server-arg=1");
        c.args(["--until-empty", "--retry-backoff", "10ms"])
            .args(extra);
        c.stdin(Stdio::null());
        c.output().unwrap()
    };
    // The first worker binds the pass enqueue made; `describe` makes the second.
    assert_exit(&real("worker", &["--model-name", "tiny-a"]), 0);
    let o = real("describe", &["--model-name", "tiny-b", "--pass", "tiny-b"]);
    assert_exit(&o, 0);
    assert_eq!(env.count_now("SELECT count(*) FROM descriptions"), 6);
    assert_eq!(
        env.string_now("SELECT group_concat(name || '=' || model, ' ') FROM passes ORDER BY id"),
        "default=tiny-a tiny-b=tiny-b"
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
    // Again: nothing new to do, nothing added.
    assert_exit(
        &real("describe", &["--model-name", "tiny-b", "--pass", "tiny-b"]),
        0,
    );
    assert_eq!(env.count_now("SELECT count(*) FROM jobs"), 6);
    assert_eq!(env.count_now("SELECT count(*) FROM descriptions"), 6);
    // A third pass with the custom profile: every stored answer holds to it.
    let profile_arg = profile.display().to_string();
    let o = real(
        "describe",
        &[
            "--model-name",
            "tiny-a",
            "--pass",
            "custom",
            "--prompt",
            &profile_arg,
        ],
    );
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
    assert_eq!(count_in_pass(&env, BOUNDED_VIOLATIONS, "custom"), 0);
    // The same model with another profile is another pass, and a worker of
    // another model is refused a pass settled on this one.
    let o = real("worker", &["--model-name", "tiny-b", "--pass", "custom"]);
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

/// Two workers for two passes, at once, on one database and two servers:
/// neither ever claims a job of the other's pass.
#[test]
fn a_worker_never_claims_a_job_of_another_pass() {
    let env = Env::new();
    env.enqueue_images("both", 40, &["--pass", "a", "--pass", "b"]);
    assert_eq!(env.count_now("SELECT count(*) FROM jobs"), 80);
    let server_a = FakeServer::start(&env, &["--model-id", "model-a", "--delay-ms", "5"]);
    let server_b = FakeServer::start(&env, &["--model-id", "model-b", "--delay-ms", "5"]);
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
            "SELECT group_concat(p.name || ':' || d.model || ':' || n, ' ') FROM \
             (SELECT pass_id, model, count(*) AS n FROM descriptions GROUP BY pass_id, model) d \
             JOIN passes p ON p.id = d.pass_id ORDER BY p.id"
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
             GROUP BY t.worker_id HAVING count(DISTINCT j.pass_id) > 1)"
        ),
        0
    );
}

/// A custom profile's answers are checked field by field: an enum value not
/// allowed, an integer out of range, too many tags are bad output, retried
/// and then failed with the raw text kept; good answers are stored whole and
/// found by search through their tags.
#[test]
fn a_custom_profile_fails_answers_out_of_bounds_and_searches_its_tags() {
    let env = Env::new();
    let profile = env.path().join("bounded.toml");
    std::fs::write(&profile, BOUNDED_PROFILE).unwrap();
    let profile = profile.display().to_string();
    env.enqueue_images("bad", 2, &["--pass", "custom"]);
    let bad = FakeServer::start(&env, &["--answers", "out-of-bounds"]);
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
    let good = FakeServer::start(&env, &[]);
    let o = env
        .worker(
            &good.url(),
            "good.log",
            &["--pass", "custom", "--prompt", &profile, "--until-empty"],
        )
        .status()
        .unwrap();
    assert!(o.success(), "{}", env.log("good.log"));
    assert_eq!(count_in_pass(&env, BOUNDED_VIOLATIONS, "custom"), 0);
    let tag = env.string_now(
        "SELECT t.value FROM descriptions d, json_each(d.fields, '$.characters') t LIMIT 1",
    );
    let o = env.run(["search", &tag, "--pass", "custom"]);
    assert_exit(&o, 0);
    let hits = stdout(&o);
    assert!(
        !hits.is_empty() && hits.lines().all(|l| l.contains(&format!("fields: {tag}"))),
        "{hits}"
    );
}

/// A database written by the release before passes (its migrations only)
/// opens with every description in the pass of its model and prompt, its
/// other jobs in the latest pass, nothing lost.
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
            "SELECT group_concat(name || '|' || model || '|' || coalesce(model_sha256, '-'), ' ') \
             FROM (SELECT * FROM passes ORDER BY id)"
        ),
        "small/default|small|abc big/default+dialogue|big|-"
    );
    assert_eq!(
        env.string_now(
            "SELECT group_concat(fr.frame_index || ':' || p.name, ' ') FROM \
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
