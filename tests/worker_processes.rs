//! Workers as real processes: SIGKILL at random moments, two workers on one
//! GPU, gpu-lock, a paused (SIGSTOP) worker, SIGTERM.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::{Env, FakeServer, assert_exit, signal, stderr, wait_for};

fn now_ms() -> i64 {
    cinecut::db::now_ms()
}

#[tokio::test]
async fn killing_the_worker_ten_times_loses_and_duplicates_nothing() {
    let env = Env::new();
    env.enqueue_images("kill", 300, &[]);
    let fake = FakeServer::start(&env, &["--delay-ms", "5"]);
    // A long lease: recovery must not wait for it to expire.
    let args = ["--parallel", "4", "--lease-ttl", "120s"];
    let started = Instant::now();
    let mut seed = 0x9e37_79b9_u64;
    for round in 0..10 {
        let mut w = env
            .worker(&fake.url(), &format!("kill{round}.log"), &args)
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(150 + seed % 250));
        signal(&w, Signal::SIGKILL);
        w.wait().unwrap();
    }
    let o = {
        let mut c = env.worker(&fake.url(), "final.log", &args);
        c.arg("--until-empty");
        c.status().unwrap()
    };
    assert!(o.success(), "{}", env.log("final.log"));
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "recovery waited for lease expiry"
    );
    let takeovers = (1..10)
        .filter(|r| {
            env.log(&format!("kill{r}.log"))
                .contains("took over the GPU lease")
        })
        .count()
        + usize::from(env.log("final.log").contains("took over the GPU lease"));
    assert!(
        takeovers >= 5,
        "each restart recovers the killed worker at once ({takeovers} takeovers)"
    );
    assert_eq!(env.count("SELECT count(*) FROM descriptions").await, 300);
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'done'")
            .await,
        300
    );
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state != 'done'")
            .await,
        0
    );
    assert_eq!(
        env.count("SELECT count(*) FROM attempts WHERE outcome = 'done'")
            .await,
        300,
        "one recorded success per job"
    );
    assert_eq!(env.count("SELECT count(*) FROM frames").await, 300);
}

#[tokio::test]
async fn two_workers_on_one_gpu_never_run_together() {
    let env = Env::new();
    env.enqueue_images("pair", 60, &[]);
    let fake = FakeServer::start(&env, &["--delay-ms", "30"]);
    let args = ["--parallel", "2", "--until-empty", "--lease-ttl", "120s"];
    let mut a = env.worker(&fake.url(), "a.log", &args).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let mut b = env.worker(&fake.url(), "b.log", &args).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        env.log("b.log").contains("is held by worker-"),
        "{}",
        env.log("b.log")
    );
    let o = env.run(["worker", "--server-url", &fake.url(), "--no-wait"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("GPU gpu0 is held by"), "{}", stderr(&o));

    signal(&a, Signal::SIGKILL);
    a.wait().unwrap();
    let killed_at = now_ms();
    let status = wait_for(&mut b, Duration::from_secs(60));
    assert!(status.success(), "{}", env.log("b.log"));
    assert_eq!(env.count("SELECT count(*) FROM descriptions").await, 60);
    let pool = env.pool().await;
    let workers: Vec<String> = sqlx::query_scalar("SELECT DISTINCT worker_id FROM attempts")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(workers.len(), 2, "both worked, one after the other");
    let b_id: String = sqlx::query_scalar("SELECT id FROM workers WHERE state = 'stopped'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let b_first: i64 =
        sqlx::query_scalar("SELECT min(started_at) FROM attempts WHERE worker_id = ?")
            .bind(&b_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        b_first >= killed_at - 50,
        "B started no frame while A held the lease"
    );
}

#[tokio::test]
async fn gpu_lock_gets_the_gpu_within_a_batch_and_the_worker_resumes() {
    let env = Env::new();
    env.enqueue_images("lock", 80, &[]);
    let fake = FakeServer::start(&env, &["--delay-ms", "100"]);
    let mut w = env
        .worker(
            &fake.url(),
            "w.log",
            &["--parallel", "2", "--until-empty", "--lease-ttl", "1500ms"],
        )
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let marks = env.path().join("marks");
    let script = format!(
        "date +%s%3N > {0}.start; sleep 2; date +%s%3N > {0}.end; exit 7",
        marks.display()
    );
    let asked = now_ms();
    let o = env.run(["gpu-lock", "--", "sh", "-c", &script]);
    assert_exit(&o, 7);
    let read = |ext: &str| -> i64 {
        std::fs::read_to_string(format!("{}.{ext}", marks.display()))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (start, end) = (read("start"), read("end"));
    assert!(start - asked < 1500, "gpu-lock waited {} ms", start - asked);
    let status = wait_for(&mut w, Duration::from_secs(60));
    assert!(status.success(), "{}", env.log("w.log"));
    assert_eq!(
        env.count("SELECT count(*) FROM descriptions").await,
        80,
        "nothing lost"
    );
    let pool = env.pool().await;
    let overlapping: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM attempts WHERE finished_at > ? AND started_at < ?",
    )
    .bind(start)
    .bind(end)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        overlapping, 0,
        "the worker ran no frame while gpu-lock held the GPU"
    );
    assert!(
        env.log("w.log").contains("yielded the GPU lease"),
        "{}",
        env.log("w.log")
    );
}

#[tokio::test]
async fn a_worker_started_under_gpu_lock_waits() {
    let env = Env::new();
    env.enqueue_images("wait", 5, &[]);
    let fake = FakeServer::start(&env, &[]);
    let mut lock = env.cmd(["gpu-lock", "--", "sleep", "1.5"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let o = env.run([
        "worker",
        "--server-url",
        &fake.url(),
        "--until-empty",
        "--no-wait",
    ]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("(gpu-lock"), "{}", stderr(&o));
    let started = Instant::now();
    let o = env.run(["worker", "--server-url", &fake.url(), "--until-empty"]);
    assert_exit(&o, 0);
    assert!(
        started.elapsed() > Duration::from_millis(700),
        "the worker waited for gpu-lock"
    );
    assert!(lock.wait().unwrap().success());
    assert_eq!(env.count("SELECT count(*) FROM descriptions").await, 5);
    let o = env.run(["gpu-lock", "--", "/no/such/program"]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("cannot run /no/such/program"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        env.count("SELECT count(*) FROM gpu_leases WHERE holder IS NOT NULL")
            .await,
        0
    );
}

/// A worker paused past its lease and resumed after another took over
/// writes nothing.
#[tokio::test]
async fn a_paused_worker_is_fenced_out_after_a_takeover() {
    let env = Env::new();
    env.enqueue_images("stop", 40, &[]);
    let fake = FakeServer::start(&env, &["--delay-ms", "300"]);
    let args = ["--parallel", "4", "--until-empty", "--lease-ttl", "1s"];
    let mut a = env.worker(&fake.url(), "a.log", &args).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    signal(&a, Signal::SIGSTOP);
    let mut b = env.worker(&fake.url(), "b.log", &args).spawn().unwrap();
    // B takes over once A's lease expires (A is alive, so only expiry frees it).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !env.log("b.log").contains("took over the GPU lease") {
        assert!(Instant::now() < deadline, "{}", env.log("b.log"));
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let resumed_at = now_ms();
    signal(&a, Signal::SIGCONT);
    assert!(
        wait_for(&mut b, Duration::from_secs(60)).success(),
        "{}",
        env.log("b.log")
    );
    signal(&a, Signal::SIGTERM);
    wait_for(&mut a, Duration::from_secs(20));
    assert!(
        env.log("a.log").contains("lost the GPU lease")
            || env.log("a.log").contains("no longer ours"),
        "{}",
        env.log("a.log")
    );
    let pool = env.pool().await;
    let a_id: String = sqlx::query_scalar("SELECT id FROM workers ORDER BY started_at LIMIT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    let late: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM attempts WHERE worker_id = ? AND finished_at >= ?",
    )
    .bind(&a_id)
    .bind(resumed_at)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(late, 0, "the stale worker wrote after it was resumed");
    assert_eq!(env.count("SELECT count(*) FROM descriptions").await, 40);
    assert_eq!(
        env.count("SELECT count(*) FROM attempts WHERE outcome = 'done'")
            .await,
        40
    );
}

#[tokio::test]
async fn sigterm_finishes_in_flight_frames_releases_the_lease_and_exits_0() {
    let env = Env::new();
    env.enqueue_images("term", 30, &[]);
    let fake = FakeServer::start(&env, &["--delay-ms", "400"]);
    let mut w = env
        .worker(&fake.url(), "w.log", &["--parallel", "3"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let sent = Instant::now();
    signal(&w, Signal::SIGTERM);
    let status = wait_for(&mut w, Duration::from_secs(15));
    assert!(status.success(), "{}", env.log("w.log"));
    assert!(sent.elapsed() < Duration::from_secs(15));
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'running'")
            .await,
        0
    );
    assert_eq!(
        env.count("SELECT count(*) FROM gpu_leases WHERE holder IS NOT NULL")
            .await,
        0
    );
    let done = env.count("SELECT count(*) FROM descriptions").await;
    assert!(done > 0 && done < 30, "{done}");
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'queued'")
            .await,
        30 - done
    );

    // A server that hangs: in-flight frames go back to the queue after the grace period.
    let hang = FakeServer::start(&env, &["--answers", "hang"]);
    let mut w = env
        .worker(
            &hang.url(),
            "h.log",
            &["--parallel", "2", "--grace", "500ms"],
        )
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    signal(&w, Signal::SIGINT);
    assert!(
        wait_for(&mut w, Duration::from_secs(15)).success(),
        "{}",
        env.log("h.log")
    );
    assert!(
        env.log("h.log").contains("go back to the queue"),
        "{}",
        env.log("h.log")
    );
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'queued'")
            .await,
        30 - done
    );
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state IN ('running', 'failed')")
            .await,
        0
    );
}
