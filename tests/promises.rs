//! README promises that no other test exercised: each test names the
//! promise it pins.

use std::process::Stdio;
use std::time::Duration;

use crate::util::{
    Env, FAKE, FakeServer, assert_exit, on_both, stderr, stdout, tiny_model, wait_for, wait_until,
};

/// A worker that supervises the fake server (`--server-bin`), so server
/// lifecycle flags run without a model.
fn supervised(env: &Env, log: &str, extra: &[&str]) -> std::process::Command {
    let (model, mmproj, _) = tiny_model();
    let mut c = env.cmd(["worker", "--server-bin", FAKE]);
    c.arg("--model").arg(model).arg("--mmproj").arg(mmproj);
    c.args(extra);
    c.stdout(Stdio::null());
    c.stderr(std::fs::File::create(env.path().join(log)).unwrap());
    c
}

on_both!(the_worker_stops_once_the_crash_budget_is_spent);

/// "the worker stops after the crash budget"
fn the_worker_stops_once_the_crash_budget_is_spent(env: &Env) {
    env.enqueue_images("crash", 5, &[]);
    let o = supervised(
        env,
        "w.log",
        &[
            "--until-empty",
            "--crash-budget",
            "2",
            "--poison-after",
            "10",
            "--server-arg=--answers",
            "--server-arg=exit",
        ],
    )
    .status()
    .unwrap();
    assert_eq!(o.code(), Some(1), "{}", env.log("w.log"));
    let log = env.log("w.log");
    assert!(
        log.contains("llama-server crashed 2 times within 600 s; giving up"),
        "{log}"
    );
    assert_eq!(env.count_now("SELECT server_restarts FROM workers"), 2);
    assert_eq!(
        env.count_now("SELECT count(*) FROM jobs WHERE state = 'failed'"),
        0,
        "crashes are not the frames' fault"
    );
}

on_both!(the_lease_row_names_the_running_server_and_none_once_it_stops);

/// While a supervised worker's server runs, its lease row names it: pid,
/// start time and command line, what a later holder on this host checks
/// before it reaps an orphan. Once the worker stops, the server is gone
/// and the row names none.
fn the_lease_row_names_the_running_server_and_none_once_it_stops(env: &Env) {
    env.enqueue_images("named", 1, &[]);
    let mut w = supervised(env, "w.log", &[]).spawn().unwrap();
    wait_until("the frame described", Duration::from_secs(30), || {
        env.count_now("SELECT count(*) FROM descriptions") == 1
    });
    let rows = env.rows_now(
        "SELECT server_pid, server_started_at, server_cmdline FROM gpu_leases \
         WHERE server_pid IS NOT NULL",
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    let pid = rows[0]["server_pid"].as_i64().unwrap();
    let started = cinecut::process::start_ticks(pid);
    assert!(started.is_some(), "the recorded server {pid} runs");
    assert_eq!(rows[0]["server_started_at"].as_i64(), started);
    let cmdline = rows[0]["server_cmdline"].as_str().unwrap();
    assert_eq!(Some(cmdline), cinecut::process::cmdline(pid).as_deref());
    assert!(cmdline.starts_with(FAKE), "{cmdline}");
    crate::util::signal(&w, nix::sys::signal::Signal::SIGTERM);
    assert!(wait_for(&mut w, Duration::from_secs(30)).success());
    assert_eq!(
        env.count_now("SELECT count(*) FROM gpu_leases WHERE server_pid IS NOT NULL"),
        0
    );
    assert!(
        !cinecut::process::is_alive(pid, started),
        "the server is gone"
    );
}

on_both!(an_idle_server_is_stopped_and_started_again_when_work_comes);

/// "--idle-unload 5m (stop the server when idle, start it again when work comes)";
/// once stopped, the lease row names no server.
fn an_idle_server_is_stopped_and_started_again_when_work_comes(env: &Env) {
    env.enqueue_images("first", 2, &[]);
    let mut w = supervised(env, "w.log", &["--idle-unload", "300ms"])
        .spawn()
        .unwrap();
    wait_until(
        "the first frames described",
        Duration::from_secs(30),
        || env.count_now("SELECT count(*) FROM descriptions") == 2,
    );
    wait_until(
        "the idle server to be stopped",
        Duration::from_secs(30),
        || {
            env.log("w.log")
                .contains("stopping llama-server (--idle-unload)")
                && env.count_now("SELECT count(*) FROM gpu_leases WHERE server_pid IS NOT NULL")
                    == 0
        },
    );
    assert_eq!(env.count_now("SELECT server_starts FROM workers"), 1);
    env.enqueue_images("second", 2, &[]);
    wait_until("the new frames described", Duration::from_secs(30), || {
        env.count_now("SELECT count(*) FROM descriptions") == 4
    });
    assert_eq!(
        env.count_now("SELECT server_starts FROM workers"),
        2,
        "started again for the new work"
    );
    crate::util::signal(&w, nix::sys::signal::Signal::SIGTERM);
    assert!(wait_for(&mut w, Duration::from_secs(30)).success());
}

on_both!(refused_connections_are_not_counted_against_the_frame);

/// "server refuses connections: back to the queue, not counted against the frame"
fn refused_connections_are_not_counted_against_the_frame(env: &Env) {
    env.enqueue_images("refused", 3, &[]);
    // A port that nothing listens on, until the server starts on it below.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut w = env
        .worker(&url, "w.log", &["--until-empty", "--poison-after", "1"])
        .spawn()
        .unwrap();
    wait_until("refused tries", Duration::from_secs(30), || {
        env.count_now("SELECT count(*) FROM attempts WHERE outcome = 'requeued'") >= 2
    });
    let _server = FakeServer::start_on(env, port, &[]);
    assert!(
        wait_for(&mut w, Duration::from_secs(60)).success(),
        "{}",
        env.log("w.log")
    );
    assert_eq!(
        env.count_now("SELECT count(*) FROM jobs WHERE state = 'done'"),
        3,
        "--poison-after 1 failed nothing: a refused connection is not the frame's fault"
    );
    assert_eq!(env.count_now("SELECT max(transient_failures) FROM jobs"), 0);
    assert_eq!(
        env.count_now("SELECT count(*) FROM jobs WHERE attempts > 1"),
        0,
        "no attempt burnt by a refused connection"
    );
}

on_both!(higher_priority_films_are_described_first);

/// "--priority N (higher first)"
fn higher_priority_films_are_described_first(env: &Env) {
    env.enqueue_images("low", 3, &[]);
    env.enqueue_images("high", 3, &["--priority", "5"]);
    let fake = FakeServer::start(env, &[]);
    // One frame at a time (no prefetch): each claim waits for the last
    // frame's answer to be recorded, so the attempts' order is the claims'.
    // With prefetch, a frame claimed later could start its try within the
    // same millisecond as one claimed before it and be recorded first (a
    // flake under stress-ng).
    let o = env
        .worker(
            &fake.url(),
            "w.log",
            &["--until-empty", "--parallel", "1", "--prefetch", "0"],
        )
        .status()
        .unwrap();
    assert!(o.success(), "{}", env.log("w.log"));
    let order = env.count_now(
        "SELECT count(*) FROM (SELECT f.title FROM attempts a JOIN jobs j ON j.id = a.job_id
         JOIN films f ON f.id = j.film_id ORDER BY a.started_at, a.id LIMIT 3) t WHERE title = 'high'",
    );
    assert_eq!(
        order, 3,
        "the first three frames were the high-priority film's"
    );
}

on_both!(film_filters_for_worker_and_results);

/// "worker --film TITLE" and "results --film F"
fn film_filters_for_worker_and_results(env: &Env) {
    env.enqueue_images("alpha", 3, &[]);
    env.enqueue_images("beta", 2, &[]);
    let fake = FakeServer::start(env, &[]);
    let o = env
        .worker(&fake.url(), "w.log", &["--until-empty", "--film", "beta"])
        .status()
        .unwrap();
    assert!(o.success(), "{}", env.log("w.log"));
    assert_eq!(
        env.count_now(
            "SELECT count(*) FROM jobs j JOIN films f ON f.id = j.film_id WHERE f.title = 'beta' AND j.state = 'done'"
        ),
        2
    );
    assert_eq!(
        env.count_now("SELECT count(*) FROM jobs WHERE state = 'queued'"),
        3,
        "alpha untouched"
    );
    let o = env
        .worker(&fake.url(), "w2.log", &["--until-empty"])
        .status()
        .unwrap();
    assert!(o.success());
    let o = env.run(["results", "--film", "beta", "--format", "jsonl"]);
    assert_exit(&o, 0);
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["film"] == "beta"), "{rows:?}");
}

on_both!(gpu_lock_renews_its_lease_and_a_second_one_times_out);

/// "gpu-lock --timeout" and the lease renewed while a long command runs
/// (one that ends when the test says, not after a fixed time).
fn gpu_lock_renews_its_lease_and_a_second_one_times_out(env: &Env) {
    let marks = env.path().join("long");
    let release = env.path().join("release");
    let script = format!(
        "touch '{}'; while [ ! -e '{}' ]; do sleep 0.05; done",
        marks.display(),
        release.display()
    );
    let mut long = env
        .cmd([
            "gpu-lock",
            "--lease-ttl",
            "600ms",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the first command to run", Duration::from_secs(30), || {
        marks.exists()
    });
    let beat = format!(
        "SELECT {} FROM gpu_leases WHERE gpu = 'gpu0'",
        env.ms("heartbeat_at")
    );
    let first_beat = env.count_now(&beat);
    let o = env.run(["gpu-lock", "--timeout", "1500ms", "--", "true"]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("GPU gpu0 was not free within 1 s (--timeout)"),
        "{}",
        stderr(&o)
    );
    // 1.5 s is more than two lease lengths: only renewal kept it.
    assert!(
        env.count_now(&beat) > first_beat,
        "the lease was renewed while the command ran"
    );
    assert_eq!(
        env.count_now("SELECT count(*) FROM gpu_leases WHERE purpose = 'gpu-lock'"),
        1
    );
    std::fs::write(&release, "").unwrap();
    assert!(wait_for(&mut long, Duration::from_secs(30)).success());
    assert_eq!(env.count_now("SELECT count(*) FROM gpu_waiters"), 0);
}

on_both!(json_logs_are_one_object_per_line);

/// "--log-format json"
fn json_logs_are_one_object_per_line(env: &Env) {
    let dir = env.images("json", 2);
    let o = env
        .cmd(["--log-format", "json", "enqueue"])
        .arg(&dir)
        .arg(env.path().join("missing.png"))
        .output()
        .unwrap();
    assert_exit(&o, 1);
    let lines: Vec<&str> = std::str::from_utf8(&o.stderr)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("error:"))
        .collect();
    assert!(!lines.is_empty());
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
}

on_both!(run_summarises_the_top_failure_reasons);

/// "run" ends with a summary that names the top failure reasons.
fn run_summarises_the_top_failure_reasons(env: &Env) {
    let dir = env.images("mixed", 3);
    std::fs::write(dir.join("img_4.png"), b"this is not a picture").unwrap();
    let fake = FakeServer::start(env, &[]);
    let o = env
        .cmd(["run"])
        .arg(&dir)
        .args(["--server-url", &fake.url()])
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(out.contains("3 done, 1 failed"), "{out}\n{}", stderr(&o));
    assert!(out.contains("\"mixed\": 1 failed:"), "{out}");
}

/// The fake server checks the request shape (so every fake-server test
/// also checks what cinecut sends): a stray shape is an HTTP 400.
#[tokio::test]
async fn the_fake_server_rejects_a_request_of_another_shape() {
    let env = Env::new();
    let fake = FakeServer::start(&env, &[]);
    let url = format!("{}/v1/chat/completions", fake.url());
    let good = serde_json::json!({
        "messages": [
            {"role": "system", "content": "describe"},
            {"role": "user", "content": [
                {"type": "text", "text": "this frame"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
            ]}
        ],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s",
            "schema": cinecut::profile::Profile::default().json_schema()}},
        "temperature": 0,
        "max_tokens": 64
    });
    let client = reqwest::Client::new();
    let status = |body: serde_json::Value| {
        let req = client.post(&url).json(&body);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(good.clone()).await, 200);
    let mut both = good.clone();
    both["json_schema"] = good["response_format"]["json_schema"].clone();
    assert_eq!(status(both).await, 400, "the schema in two places");
    let mut no_image = good.clone();
    no_image["messages"][1]["content"] = serde_json::json!([{"type": "text", "text": "x"}]);
    assert_eq!(status(no_image).await, 400, "no image");
    let mut unrequired = good.clone();
    unrequired["response_format"]["json_schema"]["schema"]["required"] = serde_json::json!([]);
    assert_eq!(status(unrequired).await, 400, "a property not required");
}

on_both!(an_idle_worker_is_woken_by_another_process_commit);

/// "it notices other processes' commits through PRAGMA data_version"
/// (on PostgreSQL, through LISTEN/NOTIFY)
fn an_idle_worker_is_woken_by_another_process_commit(env: &Env) {
    env.make_db();
    let fake = FakeServer::start(env, &[]);
    // A long lease: no heartbeat (a commit of the worker's own) meanwhile.
    let mut w = env.worker(&fake.url(), "w.log", &["--lease-ttl", "600s"]);
    w.env("RUST_LOG", "info,cinecut=trace");
    let mut w = w.spawn().unwrap();
    wait_until(
        "the worker to wait for a commit",
        Duration::from_secs(30),
        || env.log("w.log").contains("idle: waiting up to"),
    );
    let before = env.log("w.log").len();
    env.enqueue_images("late", 3, &[]);
    wait_until("the new frames described", Duration::from_secs(30), || {
        env.count_now("SELECT count(*) FROM descriptions") == 3
    });
    // Woken by the producer's commit, before claiming: not found by a
    // timed poll (then the first wake would follow the worker's own claim).
    crate::util::signal(&w, nix::sys::signal::Signal::SIGTERM);
    assert!(wait_for(&mut w, Duration::from_secs(30)).success());
    let after = env.log("w.log")[before..].to_string();
    let woken = after.find("another connection committed; looking for work");
    let claimed = after.find("TRACE claimed ");
    assert!(woken.is_some() && claimed.is_some(), "{after}");
    assert!(woken < claimed, "{after}");
}
