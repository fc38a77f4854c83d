//! What real models and real servers need (#13): the request's `model`
//! field, the server's slots, a context per slot that holds a frame, and a
//! server that reads images. Fake-server tests for the servers that are not
//! llama-server (vLLM insists on `model`) and for faults on demand; the
//! real llama-server ones are in `server.rs`.

use crate::util::{Env, FakeServer, assert_exit, stderr};

const FAST: &[&str] = &["--until-empty", "--retry-backoff", "10ms"];

fn run_worker(env: &Env, url: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["worker", "--server-url", url];
    args.extend_from_slice(FAST);
    args.extend_from_slice(extra);
    env.run(args)
}

/// A server that rejects requests without its model's name (as vLLM
/// does): the attached worker asks `/v1/models` and names it.
#[tokio::test]
async fn an_attached_worker_names_the_servers_model() {
    let env = Env::new();
    env.enqueue_images("named", 4, &[]);
    let fake = FakeServer::start(&env, &["--require-model", "--model-id", "vlm-7b-q4"]);
    let o = run_worker(&env, &fake.url(), &[]);
    assert_exit(&o, 0);
    assert_eq!(
        env.count("SELECT count(*) FROM descriptions WHERE model = 'vlm-7b-q4'")
            .await,
        4,
        "{}",
        stderr(&o)
    );

    // --model-name wins over the server's list; a name the server does not
    // serve (HTTP 404, as vLLM answers) stops the worker and fails no frame.
    env.enqueue_images("renamed", 2, &[]);
    let o = run_worker(&env, &fake.url(), &["--model-name", "other"]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("The model `\"other\"` does not exist"),
        "{err}"
    );
    assert!(err.contains("--model-name"), "{err}");
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'queued'")
            .await,
        2
    );
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'failed'")
            .await,
        0
    );
}

/// An HTTP 400 "exceeds the available context size" is a setting to
/// change, not a bad frame: the worker stops naming --ctx-per-slot and
/// every frame stays queued, untried.
#[tokio::test]
async fn a_context_overflow_stops_the_worker_and_fails_no_frame() {
    let env = Env::new();
    env.enqueue_images("big", 6, &[]);
    let fake = FakeServer::start(&env, &["--answers", "context", "--slots", "2"]);
    let o = run_worker(&env, &fake.url(), &[]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(err.contains("--ctx-per-slot"), "{err}");
    assert!(err.contains("2210 tokens needed, 1024 per slot"), "{err}");
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'queued'")
            .await,
        6
    );
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE attempts > 0")
            .await,
        0
    );
    assert_eq!(env.count("SELECT count(*) FROM attempts").await, 0);
}

/// With no --parallel, an attached worker keeps as many frames in flight
/// as the server has slots (`/props` total_slots).
#[tokio::test]
async fn an_attached_worker_fills_the_servers_slots() {
    let env = Env::new();
    env.enqueue_images("slots", 12, &[]);
    let peak = env.path().join("peak");
    let fake = FakeServer::start(
        &env,
        &[
            "--slots",
            "3",
            "--delay-ms",
            "300",
            "--peak-file",
            peak.to_str().unwrap(),
        ],
    );
    let o = run_worker(&env, &fake.url(), &[]);
    assert_exit(&o, 0);
    assert!(
        stderr(&o).contains("has 3 slot(s): --parallel 3"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(&peak).unwrap(), "3");
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'done'")
            .await,
        12
    );

    // A server without /props: one at a time, as before.
    env.enqueue_images("plain", 3, &[]);
    let plain_peak = env.path().join("plain-peak");
    let plain = FakeServer::start(
        &env,
        &[
            "--no-props",
            "--delay-ms",
            "100",
            "--peak-file",
            plain_peak.to_str().unwrap(),
        ],
    );
    let o = run_worker(&env, &plain.url(), &[]);
    assert_exit(&o, 0);
    assert_eq!(std::fs::read_to_string(&plain_peak).unwrap(), "1");
}

/// A server that says it cannot read images is refused before any frame
/// is claimed; so is one whose slot cannot hold even the answer.
#[tokio::test]
async fn a_server_that_cannot_take_a_frame_is_refused_at_start() {
    let env = Env::new();
    env.enqueue_images("blind", 2, &[]);
    let blind = FakeServer::start(&env, &["--no-vision"]);
    let o = run_worker(&env, &blind.url(), &[]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("has no vision support"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("--mmproj"), "{}", stderr(&o));

    let tiny = FakeServer::start(&env, &["--slot-ctx", "256"]);
    let o = run_worker(&env, &tiny.url(), &["--max-tokens", "384"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("--ctx-per-slot"), "{}", stderr(&o));
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'queued'")
            .await,
        2
    );
    assert_eq!(env.count("SELECT count(*) FROM attempts").await, 0);
}
