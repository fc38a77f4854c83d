//! The worker runs llama-server itself: the real server with the tiny
//! generated model for the end-to-end path, crashes and orphans; the fake
//! server for faults the real one cannot show on demand.
//!
//! SQLite only, but for the orphan test: what is tested here is the
//! supervision of a server process (start, health, restart, keys), which
//! is the same code whatever the database; the store side of a supervised
//! worker runs on both backends in `parity.rs` and `promises.rs`, and each
//! of these tests starts a real server or several, which cost minutes
//! twice over. The orphan's record is the lease row's, so reaping it runs
//! on both.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::{
    Backend, Env, FAKE, assert_exit, llama_server, on_both, pids_with, signal, stderr, tiny_model,
    wait_for, wait_until,
};

/// `cinecut worker --model … --mmproj …` on the real server; `alias` tags
/// the server's command line so the test can find it.
fn real_worker(env: &Env, alias: &str, log: &str, extra: &[&str]) -> Command {
    let (model, mmproj, _) = tiny_model();
    let mut c = env.cmd(["worker"]);
    c.arg("--model").arg(model).arg("--mmproj").arg(mmproj);
    c.arg("--server-bin").arg(llama_server());
    // One thread: the server's spinning workers must not starve the test.
    c.arg("--server-arg=-t").arg("--server-arg=1");
    c.arg("--server-arg=--alias")
        .arg(format!("--server-arg={alias}"));
    c.args(extra);
    c.stdout(std::process::Stdio::null());
    c.stderr(std::fs::File::create(env.path().join(log)).unwrap());
    c
}

/// The llama-server processes started with `--alias alias` (not the worker,
/// whose command line holds `--server-arg=alias`).
fn server_pids(alias: &str) -> Vec<i32> {
    pids_with(&format!("--alias {alias}"))
}

fn unique(tag: &str) -> String {
    format!(
        "cinecut-test-{tag}-{}-{}",
        std::process::id(),
        cinecut::db::now_ms()
    )
}

#[tokio::test]
async fn twenty_frames_through_the_real_server_started_once() {
    let env = Env::new();
    env.enqueue_images("real", 20, &[]);
    let alias = unique("e2e");
    let server_log = env.path().join("server.log");
    let mut c = real_worker(&env, &alias, "w.log", &["--until-empty", "--parallel", "2"]);
    c.arg("--server-log").arg(&server_log);
    let status = c.status().unwrap();
    assert!(status.success(), "{}", env.log("w.log"));
    assert_eq!(
        env.count("SELECT count(*) FROM descriptions").await,
        20,
        "{}",
        env.log("w.log")
    );
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'done'")
            .await,
        20
    );
    assert_eq!(
        env.count("SELECT server_starts FROM workers").await,
        1,
        "started once, not per batch"
    );
    assert_eq!(env.count("SELECT server_restarts FROM workers").await, 0);
    assert!(
        server_pids(&alias).is_empty(),
        "llama-server stopped at exit"
    );
    assert_eq!(
        env.count(
            "SELECT count(*) FROM gpu_leases WHERE holder IS NOT NULL OR server_pid IS NOT NULL"
        )
        .await,
        0
    );
    let log = env.log("w.log");
    assert!(
        log.contains("no NVIDIA driver") && log.contains("runs on CPU"),
        "{log}"
    );
    let server_out = std::fs::read_to_string(&server_log).unwrap();
    assert!(
        server_out.contains("listening on http://127.0.0.1:"),
        "server log kept: {server_out}"
    );
    // (That the per-run key is in neither the command line nor any log is
    // the_per_run_key_is_in_a_private_file_and_nowhere_else's check.)
    let models = env.strings("SELECT DISTINCT model FROM descriptions").await;
    assert_eq!(models, vec!["tiny-text.gguf".to_string()]);

    // Every description names its weights: sha256sum of the model and of
    // the mmproj, joined by '+'; each file hashed once, then cached.
    let (model, mmproj, _) = tiny_model();
    let sha256sum = |p: &Path| {
        let out = Command::new("sha256sum").arg(p).output().unwrap();
        String::from_utf8(out.stdout).unwrap()[..64].to_string()
    };
    let want = format!("{}+{}", sha256sum(&model), sha256sum(&mmproj));
    let shas = env
        .strings("SELECT DISTINCT coalesce(model_sha256, 'NULL') FROM descriptions")
        .await;
    assert_eq!(shas, vec![want]);
    assert!(log.contains("hashed "), "{log}");
    assert_eq!(env.count("SELECT count(*) FROM file_hashes").await, 2);
    env.enqueue_images("again", 2, &[]);
    let status = real_worker(&env, &unique("e2e2"), "w2.log", &["--until-empty"])
        .status()
        .unwrap();
    assert!(status.success(), "{}", env.log("w2.log"));
    assert!(
        !env.log("w2.log").contains("hashed "),
        "cached: {}",
        env.log("w2.log")
    );
    assert_eq!(
        env.count(
            "SELECT count(DISTINCT model_sha256) FROM descriptions WHERE model_sha256 IS NOT NULL"
        )
        .await,
        1
    );
    assert_eq!(
        env.count("SELECT count(*) FROM descriptions WHERE model_sha256 IS NULL")
            .await,
        0
    );
}

#[tokio::test]
async fn a_server_killed_three_times_is_restarted_and_nothing_is_lost() {
    let env = Env::new();
    env.enqueue_images("crash", 200, &[]);
    let alias = unique("crash");
    let mut w = real_worker(
        &env,
        &alias,
        "w.log",
        &[
            "--until-empty",
            "--parallel",
            "2",
            "--request-timeout",
            "20s",
            "--poison-after",
            "4",
        ],
    )
    .spawn()
    .unwrap();
    let mut killed: Vec<i32> = Vec::new();
    let mut in_flight: Vec<String> = Vec::new();
    while killed.len() < 3 {
        // A ready server (one more "ready" line than servers killed) with
        // frames in flight: kill it under them.
        let mut target = None;
        wait_until(
            "a ready llama-server with a frame in flight",
            Duration::from_secs(60),
            || {
                assert!(
                    w.try_wait().unwrap().is_none(),
                    "worker ended before 3 kills: {}",
                    env.log("w.log")
                );
                let ready = env.log("w.log").matches("llama-server is ready").count();
                target = server_pids(&alias)
                    .into_iter()
                    .find(|p| !killed.contains(p));
                ready > killed.len()
                    && target.is_some()
                    && env.count_now("SELECT count(*) FROM jobs WHERE state = 'running'") > 0
            },
        );
        in_flight.extend(
            env.strings("SELECT CAST(id AS TEXT) FROM jobs WHERE state = 'running'")
                .await,
        );
        let pid = target.unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        killed.push(pid);
    }
    let status = wait_for(&mut w, Duration::from_secs(240));
    assert!(status.success(), "{}", env.log("w.log"));
    assert_eq!(env.count("SELECT count(*) FROM descriptions").await, 200);
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state != 'done'")
            .await,
        0
    );
    assert_eq!(env.count("SELECT server_restarts FROM workers").await, 3);
    assert!(server_pids(&alias).is_empty());
    // The frames in flight under each kill went back to the queue (an
    // attempt `requeued`, none burnt) and were described exactly once.
    assert!(
        env.count("SELECT count(*) FROM attempts WHERE outcome = 'requeued'")
            .await
            >= 3,
        "{}",
        env.log("w.log")
    );
    let pool = env.pool().await;
    for id in &in_flight {
        let (state, done): (String, i64) = sqlx::query_as(
            "SELECT state, (SELECT count(*) FROM attempts WHERE job_id = jobs.id AND outcome = 'done')
             FROM jobs WHERE id = ?",
        )
        .bind(id.parse::<i64>().unwrap())
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!((state.as_str(), done), ("done", 1), "job {id}");
    }
    let o = env.run(["status"]);
    assert!(
        crate::util::stdout(&o).contains("restarts 3"),
        "{}",
        crate::util::stdout(&o)
    );
}

#[tokio::test]
async fn a_killed_worker_leaves_no_server_behind() {
    let env = Env::new();
    env.enqueue_images("orphan", 200, &[]);
    let alias = unique("orphan");
    let mut w = real_worker(&env, &alias, "w1.log", &["--parallel", "2"])
        .spawn()
        .unwrap();
    wait_until("frames described", Duration::from_secs(30), || {
        env.count_now("SELECT count(*) FROM descriptions") >= 5
    });
    signal(&w, Signal::SIGKILL);
    w.wait().unwrap();
    let o = real_worker(
        &env,
        &alias,
        "w2.log",
        &["--until-empty", "--parallel", "2"],
    )
    .status()
    .unwrap();
    assert!(o.success(), "{}", env.log("w2.log"));
    assert!(
        server_pids(&alias).is_empty(),
        "no llama-server left running"
    );
    assert_eq!(env.count("SELECT count(*) FROM descriptions").await, 200);
    assert!(
        env.log("w2.log").contains("took over the GPU lease"),
        "{}",
        env.log("w2.log")
    );
}

#[tokio::test]
async fn configuration_errors_stop_the_worker_at_once_with_the_servers_lines() {
    let env = Env::new();
    env.enqueue_images("config", 3, &[]);
    let (model, _, mismatch) = tiny_model();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--mmproj".into(),
                mismatch.display().to_string(),
                "--model".into(),
                model.display().to_string(),
            ],
            "mismatch between text model",
        ),
        (
            vec![
                "--model".into(),
                env.path().join("missing.gguf").display().to_string(),
                "--mmproj".into(),
                mismatch.display().to_string(),
            ],
            "missing.gguf",
        ),
        (
            vec![
                "--model".into(),
                model.display().to_string(),
                "--mmproj".into(),
                mismatch.display().to_string(),
                "--server-arg=--no-such-flag".into(),
            ],
            "--no-such-flag",
        ),
    ];
    for (args, want) in cases {
        let mut c = env.cmd(["worker", "--until-empty"]);
        c.args(&args).arg("--server-bin").arg(llama_server());
        let o = c.output().unwrap();
        assert_exit(&o, 1);
        let err = stderr(&o);
        assert!(
            err.contains("llama-server exited during load") && err.contains(want),
            "{want}: {err}"
        );
        assert_eq!(
            err.matches("started llama-server").count(),
            1,
            "no retry loop: {err}"
        );
        assert_eq!(
            env.count("SELECT count(*) FROM jobs WHERE state = 'queued'")
                .await,
            3,
            "no job failed"
        );
        assert_eq!(
            env.count("SELECT count(*) FROM gpu_leases WHERE holder IS NOT NULL")
                .await,
            0
        );
    }
}

fn fake_worker(env: &Env, log: &str, server_args: &[&str], extra: &[&str]) -> Command {
    let (model, mmproj, _) = tiny_model();
    let mut c = env.cmd(["worker", "--until-empty", "--server-bin", FAKE]);
    c.arg("--model").arg(model).arg("--mmproj").arg(mmproj);
    for a in server_args {
        c.arg(format!("--server-arg={a}"));
    }
    c.args(extra);
    c.stdout(std::process::Stdio::null());
    c.stderr(std::fs::File::create(env.path().join(log)).unwrap());
    c
}

#[tokio::test]
async fn a_server_that_never_becomes_healthy_hits_the_load_timeout() {
    let env = Env::new();
    env.enqueue_images("slow", 2, &[]);
    let o = fake_worker(
        &env,
        "w.log",
        &["--loading-ms", "600000"],
        &["--load-timeout", "1s"],
    )
    .status()
    .unwrap();
    assert_eq!(o.code(), Some(1));
    let log = env.log("w.log");
    assert!(
        log.contains("printed nothing for 1 s while loading"),
        "{log}"
    );
    assert_eq!(
        log.matches("started llama-server").count(),
        1,
        "a load that times out is not retried: {log}"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'queued'")
            .await,
        2
    );
}

#[tokio::test]
async fn a_server_that_exits_during_load_is_reported_at_once() {
    let env = Env::new();
    env.enqueue_images("exit", 2, &[]);
    let o = fake_worker(
        &env,
        "w.log",
        &["--exit-during-load"],
        &["--load-timeout", "60s"],
    )
    .status()
    .unwrap();
    assert_eq!(o.code(), Some(1));
    let log = env.log("w.log");
    assert!(
        log.contains("exited during load")
            && log.contains("failed to load model (--exit-during-load)"),
        "{log}"
    );
    assert!(
        !log.contains("printed nothing") && log.matches("started llama-server").count() == 1,
        "noticed from the exit status, not a timeout, and not retried: {log}"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'queued'")
            .await,
        2
    );
}

#[tokio::test]
async fn a_server_that_hangs_after_ready_is_restarted() {
    let env = Env::new();
    env.enqueue_images("hang", 1, &[]);
    let o = fake_worker(
        &env,
        "w.log",
        &["--answers", "hang"],
        &["--request-timeout", "500ms", "--poison-after", "2"],
    )
    .status()
    .unwrap();
    assert!(o.success(), "{}", env.log("w.log"));
    assert!(
        env.log("w.log")
            .contains("does not answer within the request deadline; restarting it"),
        "{}",
        env.log("w.log")
    );
    let errors = env.strings("SELECT last_error FROM jobs").await;
    assert!(
        errors[0].starts_with("poison") && errors[0].contains("no answer within"),
        "{}",
        errors[0]
    );
    assert!(env.count("SELECT server_restarts FROM workers").await >= 1);
}

/// README: "a frame in flight at `--poison-after` crashes is failed as
/// poison". A frame on which the supervised server dies every time (the
/// fake server exits mid-request) is failed after two crashes, with the
/// reason, and the worker ends cleanly with the queue empty.
#[tokio::test]
async fn a_frame_that_crashes_the_server_each_time_is_failed_as_poison() {
    let env = Env::new();
    env.enqueue_images("crash", 1, &[]);
    let o = fake_worker(
        &env,
        "w.log",
        &["--answers", "exit"],
        &["--poison-after", "2", "--crash-budget", "5"],
    )
    .status()
    .unwrap();
    let log = env.log("w.log");
    assert!(o.success(), "{log}");
    let errors = env
        .strings("SELECT coalesce(last_error, '') FROM jobs WHERE state = 'failed'")
        .await;
    assert_eq!(errors.len(), 1, "{log}");
    assert!(
        errors[0].starts_with("poison: failed 2 time(s) in a row"),
        "{}",
        errors[0]
    );
    assert_eq!(
        env.count("SELECT count(*) FROM attempts WHERE outcome = 'done'")
            .await,
        0
    );
    // One start, then a restart after the first crash (the second crash
    // failed the frame and left nothing to restart for).
    assert!(
        env.count("SELECT server_restarts FROM workers").await >= 1,
        "{log}"
    );
}

#[tokio::test]
async fn vram_check_required_without_a_driver_is_a_clear_error() {
    let env = Env::new();
    env.enqueue_images("vram", 2, &[]);
    let o = fake_worker(&env, "w.log", &[], &["--vram-check", "required"])
        .status()
        .unwrap();
    assert_eq!(o.code(), Some(1));
    assert!(
        env.log("w.log")
            .contains("--vram-check required, but no NVIDIA driver"),
        "{}",
        env.log("w.log")
    );
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'queued'")
            .await,
        2
    );
    // `cinecut gpu` says the same, with exit code 1.
    let o = env.run(["gpu"]);
    assert_exit(&o, 1);
    assert!(crate::util::stdout(&o).contains("no NVIDIA driver"));
}

#[tokio::test]
async fn sigterm_stops_the_server_and_releases_the_lease() {
    let env = Env::new();
    env.enqueue_images("term", 300, &[]);
    let alias = unique("term");
    let mut w = real_worker(&env, &alias, "w.log", &["--parallel", "2"])
        .spawn()
        .unwrap();
    wait_until("frames described", Duration::from_secs(30), || {
        env.count_now("SELECT count(*) FROM descriptions") >= 3
    });
    assert_eq!(server_pids(&alias).len(), 1);
    wait_until(
        "four frames in flight (2 sent, 2 prepared ahead)",
        Duration::from_secs(30),
        || env.count_now("SELECT count(*) FROM jobs WHERE state = 'running'") == 4,
    );
    let in_flight = env
        .strings("SELECT CAST(id AS TEXT) FROM jobs WHERE state = 'running'")
        .await;
    signal(&w, Signal::SIGTERM);
    let status = wait_for(&mut w, Duration::from_secs(15));
    assert!(status.success(), "{}", env.log("w.log"));
    assert!(server_pids(&alias).is_empty(), "server gone");
    // Finished within --grace, not put back.
    for id in &in_flight {
        let state = env.count_now(&format!("SELECT state = 'done' FROM jobs WHERE id = {id}"));
        assert_eq!(state, 1, "job {id} was in flight at SIGTERM");
    }
    assert_eq!(
        env.count("SELECT count(*) FROM gpu_leases WHERE holder IS NOT NULL")
            .await,
        0
    );
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'running'")
            .await,
        0
    );
}

/// `cinecut run` on a generated film, killed part-way and run again with the
/// same arguments: it resumes and describes each frame once.
#[tokio::test]
async fn run_resumes_after_sigkill_and_describes_each_frame_once() {
    let env = Env::new();
    let film = env.path().join("short film.mkv");
    let status = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=25:duration=12",
        ])
        .args(["-c:v", "libx264"])
        .arg(&film)
        .status()
        .expect("ffmpeg (scripts/setup.sh installs it)");
    assert!(status.success());
    let (model, mmproj, _) = tiny_model();
    let run = |log: &str| {
        let mut c = env.cmd(["run"]);
        c.arg(&film)
            .args(["--select", "interval", "--every", "0.1", "--parallel", "2"])
            .args(["--server-arg=-t", "--server-arg=1"]);
        c.arg("--model")
            .arg(&model)
            .arg("--mmproj")
            .arg(&mmproj)
            .arg("--server-bin")
            .arg(llama_server());
        c.stdout(std::fs::File::create(env.path().join(format!("{log}.out"))).unwrap());
        c.stderr(std::fs::File::create(env.path().join(log)).unwrap());
        c
    };
    let mut first = run("first.log").spawn().unwrap();
    // (`run` makes the database itself.)
    crate::util::wait_for_descriptions_while_running(&env, &mut first, "first.log", 20);
    signal(&first, Signal::SIGKILL);
    first.wait().unwrap();
    let partial = env.count("SELECT count(*) FROM descriptions").await;
    let total = env.count("SELECT count(*) FROM frames").await;
    assert!(
        total >= 90 && partial < total,
        "killed part-way ({partial} of {total})"
    );

    let status = run("second.log").status().unwrap();
    assert!(status.success(), "{}", env.log("second.log"));
    let out = env.log("second.log.out");
    assert!(
        out.contains(&format!("0 new, {total} already queued")),
        "{out}"
    );
    assert!(
        out.contains(&format!("described {} frame(s)", total - partial)),
        "re-describes nothing: {out}"
    );
    assert!(
        out.contains("SELECT film, pts_ms, mood, visual_content FROM frame_descriptions"),
        "{out}"
    );
    assert_eq!(env.count("SELECT count(*) FROM frames").await, total);
    assert_eq!(env.count("SELECT count(*) FROM descriptions").await, total);
    // Each frame described once: by the model, or as a copy of the frame
    // it nearly repeats (the film has still shots).
    let originals = env
        .count("SELECT count(*) FROM frames WHERE duplicate_of IS NULL")
        .await;
    assert_eq!(
        env.count("SELECT count(*) FROM attempts WHERE outcome = 'done'")
            .await,
        originals,
        "each frame sent once"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM descriptions WHERE duplicate_of IS NOT NULL")
            .await,
        total - originals
    );
}

/// gpu-lock and a worker that supervises the real server: the command gets
/// the GPU at the worker's next claim (plus the frame in flight), the server
/// is gone before the lease is handed over, and the worker resumes after.
#[tokio::test]
async fn gpu_lock_stops_the_supervised_server_and_the_worker_resumes() {
    let env = Env::new();
    // More than 20 s of work at this machine's pace: the queue outlasts the test.
    env.enqueue_images("long", 1500, &[]);
    let alias = unique("lock");
    let mut w = real_worker(&env, &alias, "w.log", &["--parallel", "1"])
        .spawn()
        .unwrap();
    wait_until(
        "frames described by the real server",
        Duration::from_secs(120),
        || env.count_now("SELECT count(*) FROM attempts WHERE outcome = 'done'") >= 10,
    );
    let marks = env.path().join("m");
    let script = format!(
        "date +%s%3N > {0}.start; sleep 2; date +%s%3N > {0}.end",
        marks.display()
    );
    let asked = cinecut::db::now_ms();
    let mut lock = env
        .cmd(["gpu-lock", "--", "sh", "-c", &script])
        .stderr(std::fs::File::create(env.path().join("lock.log")).unwrap())
        .spawn()
        .unwrap();
    let start_file = marks.with_extension("start");
    wait_until(
        "gpu-lock to run its command",
        Duration::from_secs(60),
        || start_file.exists(),
    );
    assert!(
        server_pids(&alias).is_empty(),
        "no llama-server runs while the gpu-lock command holds the GPU"
    );
    assert!(wait_for(&mut lock, Duration::from_secs(30)).success());
    let (start, end) = crate::util::read_marks(&marks);
    let resumed =
        format!("SELECT count(*) FROM attempts WHERE outcome = 'done' AND started_at >= {end}");
    wait_until(
        "the worker to describe frames again after the command",
        Duration::from_secs(120),
        || env.count_now(&resumed) > 0,
    );
    let pool = env.pool().await;
    let times: Vec<(i64, i64)> =
        sqlx::query_as("SELECT started_at, finished_at FROM attempts ORDER BY started_at")
            .fetch_all(&pool)
            .await
            .unwrap();
    signal(&w, Signal::SIGTERM);
    assert!(
        wait_for(&mut w, Duration::from_secs(60)).success(),
        "{}",
        env.log("w.log")
    );
    assert!(
        times.iter().all(|(s, f)| *f <= start || *s >= end),
        "no frame ran while the command held the GPU"
    );
    let in_flight_done = times
        .iter()
        .filter(|(s, f)| *s <= asked && *f > asked)
        .map(|(_, f)| *f)
        .max()
        .unwrap_or(asked);
    assert!(
        start - in_flight_done < 2_000,
        "gpu-lock ran {} ms after the frame in flight finished",
        start - in_flight_done
    );
    let log = env.log("w.log");
    assert!(log.contains("yielded the GPU lease"), "{log}");
    assert!(
        env.count("SELECT server_starts FROM workers").await >= 2,
        "started again after the command: {log}"
    );
    assert!(server_pids(&alias).is_empty(), "no orphan after SIGTERM");
}

/// A lease row naming a dead worker on this host and its llama-server,
/// unexpired (only the dead pid frees it); the host as each backend names
/// it (PostgreSQL: hostname and boot id).
fn record_dead_holder(env: &Env, server_pid: u32, cmdline: &str) {
    let mut gone = Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let started =
        cinecut::process::start_ticks(i64::from(server_pid)).expect("server's start time");
    let cmdline = cmdline.replace('\'', "''");
    let hostname = cinecut::process::hostname();
    let sql = match env.backend() {
        Backend::Sqlite => format!(
            "INSERT INTO gpu_leases (gpu, holder, holder_pid, host, purpose, epoch, heartbeat_at, expires_at,
                                     server_pid, server_started_at, server_cmdline)
             VALUES ('gpu0', 'worker-dead', {dead_pid}, '{hostname}', 'worker', 1, {now}, {now} + 3600000,
                     {server_pid}, {started}, '{cmdline}')",
            now = cinecut::db::now_ms()
        ),
        // The host as the worker names it (hostname and boot id).
        Backend::Postgres => format!(
            "INSERT INTO gpu_leases (gpu, holder, holder_pid, host, purpose, epoch, heartbeat_at, expires_at,
                                     server_pid, server_started_at, server_cmdline)
             VALUES ('gpu0', 'worker-dead', {dead_pid}, '{}', 'worker', 1, now(),
                     now() + interval '1 hour', {server_pid}, {started}, '{cmdline}')",
            cinecut_postgres::host::HostId::this().0
        ),
    };
    env.execute_now(&sql);
}

on_both!(async the_next_worker_kills_a_live_orphan_server_and_spares_a_reused_pid);

/// The next worker kills a live orphan llama-server recorded in the lease
/// row of a dead worker (its parent-death signal defeated: the test started
/// it), and leaves alone a pid that now runs something else. On both
/// backends: the record is the lease row's.
async fn the_next_worker_kills_a_live_orphan_server_and_spares_a_reused_pid(env: &Env) {
    env.enqueue_images("orphans", 3, &[]);
    let (model, mmproj, _) = tiny_model();
    let alias = unique("orphan-live");
    let mut orphan = Command::new(llama_server())
        .arg("-m")
        .arg(&model)
        .arg("--mmproj")
        .arg(&mmproj)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "-t",
            "1",
            "--alias",
            &alias,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Right after spawn, /proc/PID/cmdline can still be empty (before exec).
    let mut cmdline = String::new();
    wait_until("the orphan to exec", Duration::from_secs(10), || {
        cmdline = cinecut::process::cmdline(i64::from(orphan.id())).unwrap_or_default();
        cmdline.contains(&alias)
    });
    record_dead_holder(env, orphan.id(), &cmdline);
    let fake = crate::util::FakeServer::start(env, &[]);
    let o = env.run(["worker", "--server-url", &fake.url(), "--until-empty"]);
    assert_exit(&o, 0);
    assert!(
        stderr(&o).contains("killing the orphaned llama-server"),
        "{}",
        stderr(&o)
    );
    let status = wait_for(&mut orphan, Duration::from_secs(10));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "the orphan was killed");
    assert!(server_pids(&alias).is_empty());

    // The recorded pid now belongs to another program: it lives.
    env.enqueue_images("more", 2, &[]);
    let mut bystander = crate::util::Bystander::start();
    env.execute_now("DELETE FROM gpu_leases");
    record_dead_holder(env, bystander.id(), &cmdline);
    let o = env.run(["worker", "--server-url", &fake.url(), "--until-empty"]);
    assert_exit(&o, 0);
    assert!(
        stderr(&o).contains("runs something else; leaving it alone"),
        "{}",
        stderr(&o)
    );
    assert!(
        bystander.0.try_wait().unwrap().is_none(),
        "the bystander lives"
    );

    // gpu-lock taking a dead worker's lease reaps its server too: it must
    // not share the GPU with the command. (A `sleep` stands for the server:
    // reaping checks pid, start time and command line, not the program.)
    env.execute_now("DELETE FROM gpu_leases");
    let mut stand_in = crate::util::Bystander::start();
    let pid = i64::from(stand_in.id());
    let mut stand_in_cmdline = None;
    wait_until("the stand-in to exec", Duration::from_secs(10), || {
        stand_in_cmdline = cinecut::process::cmdline(pid);
        stand_in_cmdline
            .as_deref()
            .is_some_and(|c| c.starts_with("sleep"))
    });
    let stand_in_cmdline = stand_in_cmdline.unwrap();
    record_dead_holder(env, stand_in.id(), &stand_in_cmdline);
    let o = env.run(["gpu-lock", "--", "true"]);
    assert_exit(&o, 0);
    assert!(
        stderr(&o).contains("killing the orphaned llama-server"),
        "{}",
        stderr(&o)
    );
    let status = wait_for(&mut stand_in.0, Duration::from_secs(10));
    assert_eq!(status.signal(), Some(9), "gpu-lock reaped the orphan");
    assert_eq!(env.count("SELECT count(*) FROM descriptions").await, 5);
}

/// The per-run key: in a 0600 file only, in no process's command line or
/// environment and in no log, and gone with the server.
#[tokio::test]
async fn the_per_run_key_is_in_a_private_file_and_nowhere_else() {
    let env = Env::new();
    env.enqueue_images("key", 400, &[]);
    let alias = unique("key");
    let server_log = env.path().join("server.log");
    let mut c = real_worker(&env, &alias, "w.log", &["--parallel", "2"]);
    c.arg("--server-log").arg(&server_log);
    let mut w = c.spawn().unwrap();
    wait_until(
        "frames described by the real server",
        Duration::from_secs(60),
        || env.count_now("SELECT count(*) FROM descriptions") >= 3,
    );
    let pid = server_pids(&alias)[0];
    let cmdline = cinecut::process::cmdline(i64::from(pid)).unwrap();
    let key_file = cmdline
        .split(' ')
        .skip_while(|a| *a != "--api-key-file")
        .nth(1)
        .expect("--api-key-file on the server's command line")
        .to_string();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{key_file}");
    let key = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(key.len() >= 32, "a random key: {key:?}");
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        for part in ["cmdline", "environ"] {
            if let Ok(raw) = std::fs::read(entry.path().join(part)) {
                assert!(
                    !String::from_utf8_lossy(&raw).contains(&key),
                    "the key is in {}/{part}",
                    entry.path().display()
                );
            }
        }
    }
    signal(&w, Signal::SIGTERM);
    assert!(
        wait_for(&mut w, Duration::from_secs(60)).success(),
        "{}",
        env.log("w.log")
    );
    assert!(!env.log("w.log").contains(&key));
    assert!(!std::fs::read_to_string(&server_log).unwrap().contains(&key));
    assert!(
        !Path::new(&key_file).exists(),
        "the key file goes with the server"
    );
}

/// llama-server on a free port, started by the test with its own flags.
fn own_server(alias: &str, extra: &[&str]) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (model, mmproj, _) = tiny_model();
    let child = Command::new(llama_server())
        .arg("-m")
        .arg(&model)
        .arg("--mmproj")
        .arg(&mmproj)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "-t",
            "1",
            "--alias",
            alias,
        ])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    wait_until("llama-server to load", Duration::from_secs(60), || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .and_then(|mut s| {
                use std::io::{Read, Write};
                s.write_all(b"GET /health HTTP/1.0\r\n\r\n").ok()?;
                let mut answer = String::new();
                s.read_to_string(&mut answer).ok()?;
                Some(answer.starts_with("HTTP/1.1 200"))
            })
            .unwrap_or(false)
    });
    (child, url)
}

/// The real server's own error body for a wrong key (401: the worker stops,
/// nothing failed); and a TIFF, which its image loader cannot read, is
/// described all the same (sent as a JPEG). Its 400 for a frame it cannot
/// load is the fake server's `http400` test now: no frame we send is one.
#[tokio::test]
async fn the_real_servers_401_and_400_are_understood() {
    let env = Env::new();
    let dir = env.images("errs", 2);
    image::RgbImage::from_fn(32, 24, |x, y| image::Rgb([x as u8 * 8, y as u8 * 10, 99]))
        .save(dir.join("img_3.tiff"))
        .unwrap();
    assert_exit(&env.run(["enqueue".as_ref(), dir.as_os_str()]), 0);
    let (mut server, url) = own_server(&unique("errs"), &["--api-key", "the-right-key"]);

    let o = env.run([
        "worker",
        "--server-url",
        &url,
        "--until-empty",
        "--api-key",
        "a-wrong-key",
    ]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("server refused the API key (HTTP 401): Invalid API Key"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'queued'")
            .await,
        3
    );

    let o = env.run([
        "worker",
        "--server-url",
        &url,
        "--until-empty",
        "--api-key",
        "the-right-key",
    ]);
    assert_exit(&o, 0);
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'done'")
            .await,
        3
    );
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'failed'")
            .await,
        0,
        "the TIFF frame too"
    );
    server.kill().ok();
    server.wait().ok();
}

/// Samples the llama-servers tagged `alias` until `done`; panics if two ever
/// run at once (two servers on one GPU lease).
fn never_two_servers(alias: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while !done() {
        let running = server_pids(alias);
        assert!(running.len() <= 1, "two llama-servers at once: {running:?}");
        assert!(Instant::now() < deadline, "did not finish");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The two-workers test with supervised servers: B waits while A (and its
/// server) holds the GPU; A killed, its server dies with it, B starts its
/// own; never two servers; each frame described once.
#[tokio::test]
async fn two_supervised_workers_never_run_two_servers() {
    let env = Env::new();
    env.enqueue_images("pair", 600, &[]);
    let alias = unique("pair");
    let args = ["--until-empty", "--parallel", "2", "--lease-ttl", "120s"];
    let mut a = real_worker(&env, &alias, "a.log", &args).spawn().unwrap();
    wait_until("A to describe frames", Duration::from_secs(60), || {
        env.count_now("SELECT count(*) FROM descriptions") >= 5
    });
    let mut b = real_worker(&env, &alias, "b.log", &args).spawn().unwrap();
    wait_until("B to wait for A", Duration::from_secs(30), || {
        env.log("b.log").contains("is held by worker-")
    });
    assert_eq!(
        server_pids(&alias).len(),
        1,
        "B started no server while waiting"
    );
    signal(&a, Signal::SIGKILL);
    a.wait().unwrap();
    never_two_servers(&alias, || b.try_wait().unwrap().is_some());
    assert!(b.wait().unwrap().success(), "{}", env.log("b.log"));
    assert!(server_pids(&alias).is_empty(), "no orphan");
    assert_eq!(env.count("SELECT count(*) FROM descriptions").await, 600);
    assert_eq!(
        env.count("SELECT count(*) FROM attempts WHERE outcome = 'done'")
            .await,
        600
    );
}

/// SIGSTOP with supervised servers: A is paused past its lease with its
/// server still running; B takes over, kills A's server before starting its
/// own, and A, resumed, writes nothing and starts no server.
#[tokio::test]
async fn a_paused_supervised_worker_loses_its_server_and_writes_nothing() {
    let env = Env::new();
    env.enqueue_images("stop", 400, &[]);
    let alias = unique("stop");
    let args = ["--until-empty", "--parallel", "2", "--lease-ttl", "1s"];
    let mut a = real_worker(&env, &alias, "a.log", &args).spawn().unwrap();
    wait_until("A to describe frames", Duration::from_secs(60), || {
        env.count_now("SELECT count(*) FROM descriptions") >= 5
    });
    let a_server = server_pids(&alias);
    assert_eq!(a_server.len(), 1);
    crate::util::stop_outside_a_transaction(&env, &a);
    let mut b = real_worker(&env, &alias, "b.log", &args).spawn().unwrap();
    wait_until("B to take over", Duration::from_secs(60), || {
        env.log("b.log").contains("took over the GPU lease")
    });
    wait_until("B to describe frames", Duration::from_secs(60), || {
        env.log("b.log").contains("llama-server is ready")
    });
    assert!(
        !server_pids(&alias).contains(&a_server[0]),
        "A's server was killed before B's started"
    );
    assert!(
        env.log("b.log")
            .contains("killing the orphaned llama-server")
    );
    let resumed_at = cinecut::db::now_ms();
    signal(&a, Signal::SIGCONT);
    never_two_servers(&alias, || b.try_wait().unwrap().is_some());
    assert!(b.wait().unwrap().success(), "{}", env.log("b.log"));
    signal(&a, Signal::SIGTERM);
    wait_for(&mut a, Duration::from_secs(30));
    let a_log = env.log("a.log");
    assert!(a_log.contains("lost the GPU lease"), "{a_log}");
    let pool = env.pool().await;
    let late: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM attempts WHERE worker_id = (SELECT id FROM workers ORDER BY started_at LIMIT 1)
         AND finished_at >= ?",
    )
    .bind(resumed_at)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(late, 0, "the stale worker wrote after it was resumed");
    assert_eq!(env.count("SELECT count(*) FROM descriptions").await, 400);
    assert!(server_pids(&alias).is_empty(), "no orphan");
}

/// Repeated SIGKILL of supervised workers: no server outlives its worker,
/// nothing is lost or described twice.
#[tokio::test]
async fn killing_supervised_workers_leaves_no_server_and_loses_nothing() {
    let env = Env::new();
    env.enqueue_images("kills", 300, &[]);
    let alias = unique("kills");
    let args = ["--parallel", "2", "--lease-ttl", "120s"];
    for round in 0..5 {
        let log = format!("k{round}.log");
        let mut w = real_worker(&env, &alias, &log, &args).spawn().unwrap();
        let before = env.count_now("SELECT count(*) FROM descriptions");
        wait_until(
            "the worker to describe a frame",
            Duration::from_secs(60),
            || env.count_now("SELECT count(*) FROM descriptions") > before,
        );
        signal(&w, Signal::SIGKILL);
        w.wait().unwrap();
        wait_until("its server to die with it", Duration::from_secs(10), || {
            server_pids(&alias).is_empty()
        });
    }
    let o = real_worker(
        &env,
        &alias,
        "final.log",
        &["--until-empty", "--parallel", "2"],
    )
    .status()
    .unwrap();
    assert!(o.success(), "{}", env.log("final.log"));
    assert!(server_pids(&alias).is_empty());
    assert_eq!(env.count("SELECT count(*) FROM descriptions").await, 300);
    assert_eq!(
        env.count("SELECT count(*) FROM attempts WHERE outcome = 'done'")
            .await,
        300
    );
}

/// A slot too small for one frame, on the real server: the worker stops at
/// once naming --ctx-per-slot, and no frame is failed or even tried.
#[tokio::test]
async fn a_slot_too_small_for_one_frame_stops_the_worker_at_once() {
    let env = Env::new();
    env.enqueue_images("cramped", 3, &[]);
    // Runs a worker that must stop with exit 1; its log.
    let stopped = |alias: &str, log: &str, args: &[&str]| {
        let o = real_worker(&env, alias, log, args).status().unwrap();
        let log = env.log(log);
        assert_eq!(o.code(), Some(1), "{log}");
        log
    };
    // The answer fits, the prompt and the image do not: the server's 400.
    let alias = unique("ctx");
    let log = stopped(
        &alias,
        "w.log",
        &[
            "--until-empty",
            "--ctx-per-slot",
            "64",
            "--max-tokens",
            "16",
        ],
    );
    assert!(log.contains("--ctx-per-slot"), "{log}");
    assert!(
        log.contains("tokens needed, 256 per slot"),
        "the server's numbers: {log}"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'queued' AND attempts = 0")
            .await,
        3
    );
    assert_eq!(env.count("SELECT count(*) FROM attempts").await, 0);
    assert!(server_pids(&alias).is_empty(), "llama-server stopped");

    // Not even the answer fits: refused from /props, before any request
    // (llama-server gives a slot at least 256 tokens).
    let log = stopped(
        &unique("ctx2"),
        "w2.log",
        &[
            "--until-empty",
            "--ctx-per-slot",
            "64",
            "--max-tokens",
            "256",
        ],
    );
    assert!(
        log.contains("gives each slot 256 tokens, not even --max-tokens 256"),
        "{log}"
    );
    assert_eq!(env.count("SELECT count(*) FROM attempts").await, 0);

    // An explicit --ctx-size shared by two slots: warned at start, and the
    // same clean stop when a frame does not fit.
    let log = stopped(
        &unique("ctx3"),
        "w3.log",
        &["--until-empty", "--ctx-size", "512", "--parallel", "2"],
    );
    assert!(
        log.contains("--ctx-size 512 over --parallel 2 leaves 256 tokens a slot"),
        "{log}"
    );
    assert!(log.contains("--ctx-per-slot"), "{log}");
    assert_eq!(env.count("SELECT count(*) FROM attempts").await, 0);
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'queued'")
            .await,
        3
    );
}

/// Every kind of still a user may have, on the real server: WebP, TIFF,
/// a 16-bit PNG, a 4000×3000 PNG and an EXIF-rotated phone JPEG are each
/// described.
#[tokio::test]
async fn every_kind_of_still_is_described_by_the_real_server() {
    let env = Env::new();
    let dir = env.path().join("stills");
    std::fs::create_dir_all(&dir).unwrap();
    let rgb = |w: u32, h: u32| {
        image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 251) as u8, (y % 241) as u8, 70])
        })
    };
    rgb(48, 32).save(dir.join("a.webp")).unwrap();
    rgb(48, 32).save(dir.join("b.tiff")).unwrap();
    image::DynamicImage::ImageRgb16(image::ImageBuffer::from_fn(48, 32, |x, y| {
        image::Rgb([x as u16 * 1300, y as u16 * 2000, 40_000])
    }))
    .save(dir.join("c_16bit.png"))
    .unwrap();
    rgb(4000, 3000).save(dir.join("d_big.png")).unwrap();
    crate::real_models::exif_rotated_jpeg(&dir.join("e_phone.jpg"), 64, 32);
    assert_exit(&env.run(["enqueue".as_ref(), dir.as_os_str()]), 0);
    let status = real_worker(&env, &unique("stills"), "w.log", &["--until-empty"])
        .status()
        .unwrap();
    let log = env.log("w.log");
    assert!(status.success(), "{log}");
    let done = env
        .strings(
            "SELECT f.path FROM jobs j JOIN frames f ON f.id = j.frame_id
             WHERE j.state = 'done' ORDER BY f.path",
        )
        .await;
    let names: Vec<&str> = done.iter().filter_map(|p| p.rsplit('/').next()).collect();
    assert_eq!(
        names,
        [
            "a.webp",
            "b.tiff",
            "c_16bit.png",
            "d_big.png",
            "e_phone.jpg"
        ],
        "{log}"
    );
}

/// The command line of the supervised server the lease row names, once
/// `frames` jobs are done (near-duplicates too; the server stays up, idle).
fn running_server_cmdline(env: &Env, frames: i64, log: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    while env.count_now("SELECT count(*) FROM jobs WHERE state = 'done'") != frames {
        assert!(
            Instant::now() < deadline,
            "frames not described: {}",
            env.log(log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    env.string_now("SELECT server_cmdline FROM gpu_leases WHERE server_cmdline IS NOT NULL")
}

/// LLaVA-1.5's GGUFs carry no chat template: for the tiny model written
/// that way (named as LLaVA) the worker starts the real llama-server with
/// `--chat-template vicuna --no-jinja`, says so, and every frame is
/// described. (With Jinja, llama-server's default, the name `vicuna` is
/// read as a template of its own, the image marker is lost and every
/// request fails "Failed to tokenize prompt": shown by dropping
/// `--no-jinja`.)
#[test]
fn a_llava_model_without_a_chat_template_is_served_with_vicuna() {
    let env = Env::new();
    env.enqueue_images("llava", 2, &[]);
    let (_, mmproj, _) = tiny_model();
    let mut c = env.cmd(["worker", "--until-empty"]);
    c.arg("--server-bin").arg(llama_server());
    c.args(["--server-arg=-t", "--server-arg=1"]);
    c.arg("--model")
        .arg(crate::util::templateless_llava_model())
        .arg("--mmproj")
        .arg(mmproj);
    let o = c.output().unwrap();
    assert_exit(&o, 0);
    let log = stderr(&o);
    assert!(
        log.contains("carries no chat template; LLaVA answers in vicuna's")
            && log.contains("--chat-template vicuna --no-jinja"),
        "{log}"
    );
    assert_eq!(
        env.count_now("SELECT count(*) FROM descriptions"),
        2,
        "{log}"
    );
    assert_eq!(
        env.count_now("SELECT count(*) FROM jobs WHERE state = 'failed'"),
        0
    );
}

/// `--server-arg=--chat-template` chooses the template itself: no vicuna
/// is added (a name gets `--no-jinja`, unless `--jinja` is given), and a
/// model that carries a template gets nothing.
#[test]
fn a_chat_template_given_is_kept_and_one_carried_gets_nothing_added() {
    let (model, mmproj, _) = tiny_model();
    let run = |model: &Path, extra: &[&str]| {
        let env = Env::new();
        env.enqueue_images("one", 1, &[]);
        let mut c = env.cmd(["worker", "--server-bin", FAKE]);
        c.arg("--model")
            .arg(model)
            .arg("--mmproj")
            .arg(&mmproj)
            .args(extra);
        c.stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(env.path().join("w.log")).unwrap());
        let mut w = c.spawn().unwrap();
        let cmdline = running_server_cmdline(&env, 1, "w.log");
        signal(&w, Signal::SIGTERM);
        assert!(wait_for(&mut w, Duration::from_secs(30)).success());
        cmdline
    };
    let llava = crate::util::templateless_llava_model();
    let chosen = run(
        &llava,
        &["--server-arg=--chat-template", "--server-arg=chatml"],
    );
    assert!(chosen.contains("--chat-template chatml"), "{chosen}");
    assert!(!chosen.contains("vicuna"), "{chosen}");
    // A template by name is built in: llama.cpp applies it only without
    // Jinja, so --no-jinja comes with it, unless Jinja is asked for.
    assert!(chosen.contains("--no-jinja"), "{chosen}");
    let jinja = run(
        &llava,
        &[
            "--server-arg=--chat-template=mistral-v1",
            "--server-arg=--jinja",
        ],
    );
    assert!(jinja.contains("--chat-template=mistral-v1"), "{jinja}");
    assert!(!jinja.contains("--no-jinja"), "{jinja}");
    let carried = run(&model, &[]);
    assert!(
        !carried.contains("--chat-template") && !carried.contains("jinja"),
        "{carried}"
    );
}

/// llama.cpp's cache (`LLAMA_CACHE`) laid out as its downloader writes it:
/// `models--USER--REPO/refs/main` names a commit whose snapshot holds the
/// files. The repository holds the tiny model at two quants (Q8_0 the
/// tiny model, F16 other weights of its shape) and one mmproj.
fn llama_cache(dir: &Path) -> std::path::PathBuf {
    let (model, mmproj, _) = tiny_model();
    let repo = dir.join("models--cinecut-test--tiny-vlm-GGUF");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let link = |to: &Path, name: &str| std::os::unix::fs::symlink(to, snapshot.join(name)).unwrap();
    link(&crate::util::second_tiny_model(), "tiny-vlm-F16.gguf");
    link(&model, "tiny-vlm-Q8_0.gguf");
    link(&mmproj, "mmproj-tiny-vlm-F16.gguf");
    snapshot
}

/// `run FILM --hf USER/REPO:QUANT --offline` loads the files llama.cpp's
/// own downloader picks from its cache for that name (the Q8_0 model, not
/// the F16 beside it, and the mmproj), describes the film and records
/// those files' hashes; a name the cache lacks is a clear error that
/// starts no server and loses no job.
#[tokio::test]
async fn a_model_by_name_is_loaded_from_llama_cpps_cache_offline() {
    let env = Env::new();
    let cache = env.path().join("hub");
    let snapshot = llama_cache(&cache);
    let film = env.path().join("film.mkv");
    crate::util::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=25:duration=4",
        "-c:v",
        "libx264",
        film.to_str().unwrap(),
    ]);
    let o = env.run([
        "enqueue",
        film.to_str().unwrap(),
        "--select",
        "interval",
        "--every",
        "1",
    ]);
    assert_exit(&o, 0);
    let frames = env.count("SELECT count(*) FROM frames").await;
    assert!(frames >= 4, "one frame a second: {frames}");
    let alias = unique("hf");
    let run = |command: &[&str], name: &str, log: &str| {
        let mut c = env.cmd(command);
        c.args(["--hf", name, "--offline"])
            .arg("--server-bin")
            .arg(llama_server())
            .args(["--server-arg=-t", "--server-arg=1"])
            .arg("--server-arg=--alias")
            .arg(format!("--server-arg={alias}"))
            .env("LLAMA_CACHE", &cache)
            .env_remove("HF_HUB_CACHE")
            .env_remove("HF_HOME");
        c.stdout(std::process::Stdio::null());
        c.stderr(std::fs::File::create(env.path().join(log)).unwrap());
        c.status().unwrap()
    };

    // A name that is not USER/REPO[:QUANT], or --offline alone: usage errors.
    for bad in [
        &["--hf", "tiny-vlm"][..],
        &["--hf", "a/b/c"],
        &["--offline"],
    ] {
        let o = env.run(["worker", "--until-empty"].iter().chain(bad));
        assert_exit(&o, 2);
    }
    let status = run(
        &["worker", "--until-empty"],
        "cinecut-test/not-there-GGUF",
        "missing.log",
    );
    let log = env.log("missing.log");
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("--hf cinecut-test/not-there-GGUF: not in llama.cpp's cache")
            && log.contains(cache.to_str().unwrap()),
        "names the name and the cache: {log}"
    );
    assert!(!log.contains("started llama-server"), "{log}");
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'queued'")
            .await,
        frames,
        "every job still queued"
    );

    let film = film.to_str().unwrap();
    let args = ["run", film, "--select", "interval", "--every", "1"];
    let status = run(&args, "cinecut-test/tiny-vlm-GGUF:Q8_0", "hf.log");
    let log = env.log("hf.log");
    assert!(status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "model {}, mmproj {}",
            snapshot.join("tiny-vlm-Q8_0.gguf").display(),
            snapshot.join("mmproj-tiny-vlm-F16.gguf").display()
        )),
        "the files llama.cpp picked, said: {log}"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM descriptions").await,
        frames,
        "{log}"
    );
    assert_eq!(
        env.strings("SELECT DISTINCT model FROM descriptions").await,
        vec!["tiny-vlm-Q8_0.gguf".to_string()]
    );
    let (model, mmproj, _) = tiny_model();
    let sha256sum = |p: &Path| {
        let out = Command::new("sha256sum").arg(p).output().unwrap();
        String::from_utf8(out.stdout).unwrap()[..64].to_string()
    };
    let want = format!("{}+{}", sha256sum(&model), sha256sum(&mmproj));
    assert_eq!(
        env.strings("SELECT DISTINCT coalesce(model_sha256, 'NULL') FROM descriptions")
            .await,
        vec![want.clone()],
        "the Q8_0 file's weights, not the F16's"
    );
    assert_eq!(
        env.strings("SELECT coalesce(model_sha256, 'NULL') FROM passes")
            .await,
        vec![want],
        "the pass is bound to those weights"
    );
    assert!(
        server_pids(&alias).is_empty(),
        "llama-server stopped at exit"
    );
}

/// A signal during a model download (`--hf`) stops it with the command:
/// `run` exits 130 and the downloader (here a stand-in `llama` that never
/// ends) is killed, not left running.
#[test]
fn a_signal_during_a_model_download_stops_the_download() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let bin = env.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let pid_file = env.path().join("llama.pid");
    let scripts = [
        ("llama-server", "#!/bin/sh\nexit 1\n".to_string()),
        (
            "llama",
            format!(
                "#!/bin/sh\necho $$ > '{}'\nexec sleep 600\n",
                pid_file.display()
            ),
        ),
    ];
    for (name, text) in scripts {
        let path = bin.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let frames = env.images("hf", 1);
    let mut c = env.cmd(["run"]);
    c.arg(&frames)
        .args(["--hf", "cinecut-test/slow-GGUF", "--server-bin"])
        .arg(bin.join("llama-server"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(env.path().join("run.log")).unwrap());
    let mut run = c.spawn().unwrap();
    wait_until("the download to start", Duration::from_secs(30), || {
        pid_file.exists()
            && !std::fs::read_to_string(&pid_file)
                .unwrap()
                .trim()
                .is_empty()
    });
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    signal(&run, Signal::SIGINT);
    let status = wait_for(&mut run, Duration::from_secs(30));
    assert_eq!(status.code(), Some(130), "{}", env.log("run.log"));
    wait_until("the downloader to be gone", Duration::from_secs(30), || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
    });
}
