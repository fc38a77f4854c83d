//! The worker against the fake server: the happy path, and each error class
//! ending in its documented state. Plus fencing at the database level with an
//! injected clock.

use std::time::Duration;

use cinecut::db::jobs::{self, Batch, Fence, Finished, Outcome, Scope};
use cinecut::db::lease::{self, Acquire, Holder, Purpose};
use cinecut::db::{Db, Durability};
use cinecut::profile::{Answer, Profile};

use crate::util::{Env, FakeServer, assert_exit, on_both, stderr};

pub const FAST: &[&str] = &["--until-empty", "--retry-backoff", "10ms"];

/// `cinecut worker --server-url url`, fast, until the queue is empty.
pub fn run_worker(env: &Env, url: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["worker", "--server-url", url];
    args.extend_from_slice(FAST);
    args.extend_from_slice(extra);
    env.run(args)
}

on_both!(async twenty_frames_are_described_once_each);

async fn twenty_frames_are_described_once_each(env: &Env) {
    env.enqueue_images("film", 20, &[]);
    let record = env.path().join("requests.jsonl");
    let fake = FakeServer::start(
        env,
        &[
            "--delay-ms",
            "20",
            "--record",
            record.to_str().unwrap(),
            "--api-key",
            "k3y",
        ],
    );
    let o = run_worker(env, &fake.url(), &["--parallel", "4", "--api-key", "k3y"]);
    assert_exit(&o, 0);
    assert!(!stderr(&o).contains("k3y"), "the API key is never logged");
    assert_eq!(env.count("SELECT count(*) FROM descriptions").await, 20);
    assert_eq!(
        env.count("SELECT count(DISTINCT visual_content) FROM descriptions")
            .await,
        20,
        "answers depend on the image"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'done'")
            .await,
        20
    );
    assert_eq!(
        env.count("SELECT count(*) FROM attempts WHERE outcome = 'done'")
            .await,
        20
    );
    assert_eq!(
        env.count("SELECT count(*) FROM frame_descriptions WHERE film = 'film'")
            .await,
        20
    );
    assert_eq!(
        env.count("SELECT count(*) FROM gpu_leases WHERE holder IS NOT NULL")
            .await,
        0,
        "lease released"
    );
    assert_eq!(env.count("SELECT jobs_done FROM workers").await, 20);

    // The request carries the schema once, in response_format, and the image as a data URI.
    let first = std::fs::read_to_string(&record).unwrap();
    let req: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert_eq!(req["response_format"]["type"], "json_schema");
    assert_eq!(
        req["response_format"]["json_schema"]["schema"],
        Profile::default().json_schema()
    );
    assert!(req.get("json_schema").is_none());
    assert_eq!(req["temperature"], 0);
    let url = req["messages"][1]["content"][1]["image_url"]["url"]
        .as_str()
        .unwrap();
    assert!(url.starts_with("data:image/png;base64,"), "{}", &url[..40]);
}

/// One frame enqueued into `env` and a worker run on it against the fake
/// server answering `answers`.
async fn single_frame_with(
    env: &Env,
    answers: &str,
    worker_args: &[&str],
    max_attempts: &str,
) -> std::process::Output {
    env.enqueue_images("one", 1, &["--max-attempts", max_attempts]);
    let fake = FakeServer::start(env, &["--answers", answers]);
    run_worker(env, &fake.url(), worker_args)
}

on_both!(async bad_output_is_retried_then_failed_with_the_raw_output_kept);

async fn bad_output_is_retried_then_failed_with_the_raw_output_kept(env: &Env) {
    for (answers, reason) in [
        ("garbage", "output is not JSON"),
        ("truncated", "finish_reason: length"),
        ("missing-field", "missing field `setting`"),
    ] {
        // A database of its own for each.
        let env = &Env::on(env.backend());
        let o = single_frame_with(env, answers, &[], "2").await;
        assert_exit(&o, 0);
        let errors = env
            .strings("SELECT last_error FROM jobs WHERE state = 'failed'")
            .await;
        assert_eq!(errors.len(), 1, "{answers}: {}", stderr(&o));
        assert!(
            errors[0].starts_with("gave up after 2 attempt(s)") && errors[0].contains(reason),
            "{answers}: {}",
            errors[0]
        );
        assert_eq!(env.count("SELECT count(*) FROM attempts WHERE error_class = 'bad_output' AND raw_output IS NOT NULL").await, 2);
        assert_eq!(env.count("SELECT count(*) FROM descriptions").await, 0);
    }
}

on_both!(async bad_output_then_a_good_answer_is_done_after_a_retry);

async fn bad_output_then_a_good_answer_is_done_after_a_retry(env: &Env) {
    let o = single_frame_with(env, "garbage,ok", &[], "3").await;
    assert_exit(&o, 0);
    assert_eq!(env.count("SELECT count(*) FROM descriptions").await, 1);
    assert_eq!(
        env.strings("SELECT outcome FROM attempts ORDER BY id")
            .await,
        vec!["retry", "done"]
    );
    assert_eq!(env.count("SELECT attempts FROM jobs").await, 2);
}

on_both!(async a_server_error_requeues_and_poisons_after_the_bound);

async fn a_server_error_requeues_and_poisons_after_the_bound(env: &Env) {
    let o = single_frame_with(env, "http500", &["--poison-after", "2"], "3").await;
    assert_exit(&o, 0);
    let errors = env
        .strings("SELECT last_error FROM jobs WHERE state = 'failed'")
        .await;
    assert!(
        errors[0].starts_with("poison: failed 2 time(s)") && errors[0].contains("HTTP 500"),
        "{}",
        errors[0]
    );
    assert_eq!(
        env.count("SELECT attempts FROM jobs").await,
        0,
        "transient failures burn no attempt"
    );
    assert_eq!(
        env.strings("SELECT outcome FROM attempts ORDER BY id")
            .await,
        vec!["requeued", "failed"]
    );
}

on_both!(async a_server_error_then_success_is_done);

async fn a_server_error_then_success_is_done(env: &Env) {
    let o = single_frame_with(env, "http500,ok", &[], "3").await;
    assert_exit(&o, 0);
    assert_eq!(env.count("SELECT count(*) FROM descriptions").await, 1);
    assert!(
        stderr(&o).contains("pausing claims"),
        "the worker backs off: {}",
        stderr(&o)
    );
}

on_both!(async a_rejected_request_fails_at_once_with_the_servers_message);

async fn a_rejected_request_fails_at_once_with_the_servers_message(env: &Env) {
    let o = single_frame_with(env, "http400", &[], "3").await;
    assert_exit(&o, 0);
    let errors = env
        .strings("SELECT last_error FROM jobs WHERE state = 'failed'")
        .await;
    assert_eq!(
        errors,
        vec!["server rejected the request (HTTP 400): failed to load image (fake)".to_string()]
    );
    assert_eq!(env.count("SELECT count(*) FROM attempts").await, 1);
}

on_both!(async a_hanging_request_times_out_and_is_poisoned);

async fn a_hanging_request_times_out_and_is_poisoned(env: &Env) {
    let o = single_frame_with(
        env,
        "hang",
        &["--request-timeout", "300ms", "--poison-after", "2"],
        "3",
    )
    .await;
    assert_exit(&o, 0);
    let errors = env.strings("SELECT last_error FROM jobs").await;
    assert!(
        errors[0].contains("poison") && errors[0].contains("no answer within"),
        "{}",
        errors[0]
    );
}

on_both!(async missing_and_corrupt_frames_fail_at_once_naming_the_path);

async fn missing_and_corrupt_frames_fail_at_once_naming_the_path(env: &Env) {
    let dir = env.enqueue_images("bad", 3, &[]);
    std::fs::remove_file(dir.join("img_1.png")).unwrap();
    std::fs::write(dir.join("img_2.png"), b"this is not a png").unwrap();
    let fake = FakeServer::start(env, &[]);
    assert_exit(&run_worker(env, &fake.url(), &[]), 0);
    let errors = env
        .strings("SELECT last_error FROM jobs WHERE state = 'failed' ORDER BY id")
        .await;
    assert_eq!(errors.len(), 2);
    assert!(
        errors[0].contains("img_1.png does not exist"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("img_2.png is not a decodable image"),
        "{}",
        errors[1]
    );
    assert_eq!(
        env.count("SELECT count(*) FROM attempts WHERE error_class = 'frame'")
            .await,
        2,
        "no retry"
    );
    assert_eq!(env.count("SELECT count(*) FROM descriptions").await, 1);
}

on_both!(async a_server_that_dies_mid_request_costs_nothing_once_it_is_back);

async fn a_server_that_dies_mid_request_costs_nothing_once_it_is_back(env: &Env) {
    env.enqueue_images("crash", 3, &[]);
    let fake = FakeServer::start(env, &["--answers", "exit"]);
    let port = fake.port;
    let mut worker = env.worker(&fake.url(), "w.log", FAST).spawn().unwrap();
    // Wait until the server died mid-request, then bring it back on the same port.
    let mut fake = fake;
    crate::util::wait_for(&mut fake.child, Duration::from_secs(10));
    let _back = FakeServer::start_on(env, port, &[]);
    let status = crate::util::wait_for(&mut worker, Duration::from_secs(30));
    assert!(status.success(), "{}", env.log("w.log"));
    assert_eq!(env.count("SELECT count(*) FROM descriptions").await, 3);
    assert_eq!(env.count("SELECT count(*) FROM attempts WHERE outcome = 'requeued' AND error LIKE '%connection lost%'").await, 1, "{}", env.log("w.log"));
    assert!(
        env.log("w.log").contains("connection lost"),
        "{}",
        env.log("w.log")
    );
}

on_both!(async a_wrong_api_key_stops_the_worker_and_fails_no_job);

async fn a_wrong_api_key_stops_the_worker_and_fails_no_job(env: &Env) {
    env.enqueue_images("key", 2, &[]);
    let fake = FakeServer::start(env, &["--api-key", "right"]);
    let o = run_worker(env, &fake.url(), &["--api-key", "wrong"]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("refused the API key (HTTP 401)"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("wrong"), "the key is not logged");
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'queued'")
            .await,
        2
    );
    assert_eq!(
        env.count("SELECT count(*) FROM gpu_leases WHERE holder IS NOT NULL")
            .await,
        0
    );
}

// The tests from here on drive SQLite's queue and lease functions directly,
// with a clock they inject: SQLite only, as PostgreSQL's take their time
// from the database server. PostgreSQL's queue has its library-level
// twins in postgres/tests/queue.rs (a lease expiring by the database clock
// and fencing its old holder, each outcome moving a job as here).

/// Registers `h` as a worker and takes the free lease of `gpu` for it at `now`.
async fn take_lease(pool: &sqlx::SqlitePool, h: &Holder, gpu: &str, ttl: i64, now: i64) -> Fence {
    jobs::register_worker(pool, &h.id, h.pid, &h.host, gpu, 0)
        .await
        .unwrap();
    let Acquire::Acquired { epoch, .. } = lease::acquire(pool, gpu, h, ttl, now).await.unwrap()
    else {
        panic!("the lease of {gpu} is free")
    };
    Fence {
        gpu: gpu.into(),
        owner: h.id.clone(),
        epoch,
    }
}

/// The `default` pass that enqueue makes in a new database.
const SCOPE: Scope = Scope {
    pass: 1,
    binding: 0,
    film: None,
};

fn seed_answer() -> Answer {
    Profile::default()
        .parse_answer(r#"{"visual_content":"a","mood":"b","action":"c","setting":"d"}"#)
        .unwrap()
}

fn done_now(job: &jobs::ClaimedJob, at: i64) -> Finished {
    Finished {
        job: job.clone(),
        outcome: Outcome::Done {
            answer: seed_answer(),
            model: "m".into(),
            model_sha256: None,
            prompt_version: 1,
            prompt_tokens: None,
            completion_tokens: None,
        },
        started_at: at,
        finished_at: at,
    }
}

/// A running job whose holder vanished without a lease row to prove it (a
/// worker on another GPU, another host) goes back to the queue at the first
/// lease renewal after its own lease expired, not before; other jobs of the
/// same holder stay its own, and in a batch that mixes both, only the
/// fenced result is dropped. (The sweep used to run in every batch.)
#[tokio::test]
async fn expired_job_leases_are_swept_at_renewal_and_fence_only_their_results() {
    let env = Env::new();
    env.enqueue_images("sweep", 3, &[]);
    let db = Db::open(&env.db(), Durability::Full).await.unwrap();
    let pool = db.pool();
    let mut conn = pool.acquire().await.unwrap();
    let mut a = cinecut::db::lease::this_process(Purpose::Worker);
    a.host = "elsewhere".into();
    let b = cinecut::db::lease::this_process(Purpose::Worker);
    let fa = take_lease(pool, &a, "g1", 5000, 10_000).await;
    // A claims one job leased until 11_000, another leased until 11_800.
    let first = jobs::record_and_claim(
        &mut conn,
        &Batch {
            fence: &fa,
            finished: &[],
            claim: 1,
            scope: SCOPE,
            now: 10_000,
            lease_ms: 1000,
        },
    )
    .await
    .unwrap()
    .1
    .jobs;
    let second = jobs::record_and_claim(
        &mut conn,
        &Batch {
            fence: &fa,
            finished: &[],
            claim: 1,
            scope: SCOPE,
            now: 10_800,
            lease_ms: 1000,
        },
    )
    .await
    .unwrap()
    .1
    .jobs;
    let fb = take_lease(pool, &b, "g2", 1000, 10_900).await;
    let running = "SELECT count(*) FROM jobs WHERE state = 'running'";
    assert_eq!(env.count(running).await, 2, "not expired yet at 10_900");
    assert!(
        lease::renew(pool, "g2", &b.id, fb.epoch, 1000, 11_400)
            .await
            .unwrap()
            .held
    );
    assert_eq!(
        env.count(running).await,
        1,
        "the job leased until 11_000 is back in the queue at 11_400; the other is not"
    );
    // B claims the swept job; A then reports both: one is fenced, one lands.
    let taken = jobs::record_and_claim(
        &mut conn,
        &Batch {
            fence: &fb,
            finished: &[],
            claim: 1,
            scope: SCOPE,
            now: 11_400,
            lease_ms: 1000,
        },
    )
    .await
    .unwrap()
    .1
    .jobs;
    assert_eq!(taken[0].job_id, first[0].job_id);
    let results = [done_now(&first[0], 11_500), done_now(&second[0], 11_500)];
    let (rec, _) = jobs::record_and_claim(
        &mut conn,
        &Batch {
            fence: &fa,
            finished: &results,
            claim: 0,
            scope: SCOPE,
            now: 11_500,
            lease_ms: 1000,
        },
    )
    .await
    .unwrap();
    assert_eq!((rec.done, rec.fenced), (1, 1));
    let ro = env.pool().await;
    let described: Vec<i64> = sqlx::query_scalar("SELECT job_id FROM descriptions")
        .fetch_all(&ro)
        .await
        .unwrap();
    assert_eq!(described, [second[0].job_id]);
    assert_eq!(env.count("SELECT count(*) FROM attempts").await, 1);
    let owner: Option<String> =
        sqlx::query_scalar("SELECT lease_owner FROM jobs WHERE id = ? AND state = 'running'")
            .bind(first[0].job_id)
            .fetch_one(&ro)
            .await
            .unwrap();
    assert_eq!(
        owner.as_deref(),
        Some(b.id.as_str()),
        "B's job is untouched by A's late result"
    );
}

/// The same sweep at a lease acquire: a worker that starts after another
/// host's worker vanished gets its expired jobs back at once, without
/// waiting for a heartbeat.
#[tokio::test]
async fn expired_job_leases_are_swept_when_a_lease_is_taken() {
    let env = Env::new();
    env.enqueue_images("sweep-acquire", 2, &[]);
    let db = Db::open(&env.db(), Durability::Full).await.unwrap();
    let pool = db.pool();
    let mut conn = pool.acquire().await.unwrap();
    let mut a = cinecut::db::lease::this_process(Purpose::Worker);
    a.host = "elsewhere".into();
    let fa = take_lease(pool, &a, "g1", 5000, 10_000).await;
    let claimed = jobs::record_and_claim(
        &mut conn,
        &Batch {
            fence: &fa,
            finished: &[],
            claim: 2,
            scope: SCOPE,
            now: 10_000,
            lease_ms: 1000,
        },
    )
    .await
    .unwrap()
    .1
    .jobs;
    assert_eq!(claimed.len(), 2);
    let b = cinecut::db::lease::this_process(Purpose::Worker);
    take_lease(pool, &b, "g2", 1000, 11_001).await;
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'queued' AND lease_owner IS NULL")
            .await,
        2
    );
}

/// Every column a batch writes lands where it belongs: the batch statements
/// read their rows from positional JSON, where a swapped index would go
/// unnoticed by counts alone.
#[tokio::test]
async fn a_batch_writes_each_field_to_its_column() {
    let env = Env::new();
    env.enqueue_images("columns", 2, &[]);
    let db = Db::open(&env.db(), Durability::Full).await.unwrap();
    let pool = db.pool();
    let mut conn = pool.acquire().await.unwrap();
    let me = cinecut::db::lease::this_process(Purpose::Worker);
    let fence = take_lease(pool, &me, "g", 60_000, 10_000).await;
    let claimed = jobs::record_and_claim(
        &mut conn,
        &Batch {
            fence: &fence,
            finished: &[],
            claim: 2,
            scope: SCOPE,
            now: 10_000,
            lease_ms: 60_000,
        },
    )
    .await
    .unwrap()
    .1
    .jobs;
    let done = Finished {
        job: claimed[0].clone(),
        outcome: Outcome::Done {
            answer: Profile::default()
                .parse_answer(
                    r#"{"visual_content":"vc","mood":"mood","action":"action","setting":"setting"}"#,
                )
                .unwrap(),
            model: "model.gguf".into(),
            model_sha256: Some("5ha".into()),
            prompt_version: 7,
            prompt_tokens: Some(81),
            completion_tokens: Some(29),
        },
        started_at: 10_000,
        finished_at: 10_250,
    };
    let retry = Finished {
        job: claimed[1].clone(),
        outcome: Outcome::Retry {
            class: "bad_output",
            error: "not JSON".into(),
            raw: Some("{oops".into()),
            backoff_ms: 500,
        },
        started_at: 10_100,
        finished_at: 10_400,
    };
    let (rec, _) = jobs::record_and_claim(
        &mut conn,
        &Batch {
            fence: &fence,
            finished: &[done, retry],
            claim: 0,
            scope: SCOPE,
            now: 10_500,
            lease_ms: 60_000,
        },
    )
    .await
    .unwrap();
    assert_eq!((rec.done, rec.retried, rec.fenced), (1, 1, 0));
    let ro = env.pool().await;
    let row = |sql: &'static str, id: i64| {
        let ro = ro.clone();
        async move {
            let json: String = sqlx::query_scalar(sql)
                .bind(id)
                .fetch_one(&ro)
                .await
                .unwrap();
            serde_json::from_str::<serde_json::Value>(&json).unwrap()
        }
    };
    assert_eq!(
        row(
            "SELECT json_array(frame_id, visual_content, mood, action, setting, model, model_sha256,
                               prompt_version, latency_ms, prompt_tokens, completion_tokens, created_at)
             FROM descriptions WHERE job_id = ?",
            claimed[0].job_id
        )
        .await,
        serde_json::json!([
            claimed[0].job_id,
            "vc",
            "mood",
            "action",
            "setting",
            "model.gguf",
            "5ha",
            7,
            250,
            81,
            29,
            10_500
        ])
    );
    assert_eq!(
        row(
            "SELECT json_array(worker_id, lease_epoch, started_at, finished_at, outcome, error_class, error,
                               raw_output, latency_ms, prompt_tokens, completion_tokens)
             FROM attempts WHERE job_id = ?",
            claimed[1].job_id
        )
        .await,
        serde_json::json!([
            me.id,
            fence.epoch,
            10_100,
            10_400,
            "retry",
            "bad_output",
            "not JSON",
            "{oops",
            300,
            null,
            null
        ])
    );
    let j: (String, i64, i64, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT state, attempts, run_after, last_error, lease_owner FROM jobs WHERE id = ?",
    )
    .bind(claimed[1].job_id)
    .fetch_one(&ro)
    .await
    .unwrap();
    assert_eq!(
        j,
        ("queued".into(), 1, 11_000, Some("not JSON".into()), None)
    );
    let j: (String, i64, Option<String>) =
        sqlx::query_as("SELECT state, attempts, last_error FROM jobs WHERE id = ?")
            .bind(claimed[0].job_id)
            .fetch_one(&ro)
            .await
            .unwrap();
    assert_eq!(j, ("done".into(), 1, None));
}

/// Fencing, deterministic: worker A's lease expires (clock injected), B
/// takes over; A's late result writes nothing.
#[tokio::test]
async fn a_stale_holder_cannot_write_after_a_takeover() {
    let env = Env::new();
    env.enqueue_images("fence", 2, &[]);
    let db = Db::open(&env.db(), Durability::Full).await.unwrap();
    let pool = db.pool();
    // A looks like a process on another host: only expiry can free its lease.
    let mut a = cinecut::db::lease::this_process(Purpose::Worker);
    a.host = "elsewhere".into();
    let b = cinecut::db::lease::this_process(Purpose::Worker);
    let fa = take_lease(pool, &a, "g", 1000, 10_000).await;
    let ea = fa.epoch;
    let claimed = jobs::record_and_claim(
        &mut pool.acquire().await.unwrap(),
        &Batch {
            fence: &fa,
            finished: &[],
            claim: 2,
            scope: SCOPE,
            now: 10_000,
            lease_ms: 1000,
        },
    )
    .await
    .unwrap()
    .1
    .jobs;
    assert_eq!(claimed.len(), 2);

    // Before expiry B must wait; after it, B takes over and recovers A's jobs.
    assert!(matches!(
        lease::acquire(pool, "g", &b, 1000, 10_500).await.unwrap(),
        Acquire::Held { .. }
    ));
    let Acquire::Acquired {
        epoch: eb,
        recovered,
        took_over_from,
        ..
    } = lease::acquire(pool, "g", &b, 1000, 11_500).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (eb, recovered, took_over_from.as_deref()),
        (ea + 1, 2, Some(a.id.as_str()))
    );

    // A comes back with a result: fenced.
    let done = done_now(&claimed[0], 11_600);
    let (rec, more) = jobs::record_and_claim(
        &mut pool.acquire().await.unwrap(),
        &Batch {
            fence: &fa,
            finished: &[done],
            claim: 1,
            scope: SCOPE,
            now: 11_600,
            lease_ms: 1000,
        },
    )
    .await
    .unwrap();
    assert_eq!(rec.fenced, 1);
    assert!(more.jobs.is_empty(), "a stale holder claims nothing");
    assert_eq!(env.count("SELECT count(*) FROM descriptions").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM attempts").await, 0);
    assert!(
        !lease::renew(pool, "g", &a.id, ea, 1000, 11_600)
            .await
            .unwrap()
            .held
    );
    // B's renewals never shorten the lease.
    lease::renew(pool, "g", &b.id, eb, 5000, 11_600)
        .await
        .unwrap();
    lease::renew(pool, "g", &b.id, eb, 10, 11_700)
        .await
        .unwrap();
    assert_eq!(env.count("SELECT expires_at FROM gpu_leases").await, 16_600);
    db.close().await;
}
