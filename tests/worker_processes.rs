//! Workers as real processes: SIGKILL at random moments, two workers on one
//! GPU, gpu-lock, a paused (SIGSTOP) worker, SIGTERM.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::{
    Backend, Env, FakeServer, assert_exit, on_both, signal, stderr, stdout, wait_for, wait_until,
};

fn now_ms() -> i64 {
    cinecut::db::now_ms()
}

on_both!(killing_the_worker_ten_times_loses_and_duplicates_nothing);

/// Ten workers in turn, each killed (SIGKILL) once it holds the GPU lease
/// and has recorded a random number of frames more (1 to 24: a moment of
/// its run chosen by state, not by time), then one to the end. Each next
/// worker takes the dead one's lease over at once (the lease lasts 120 s;
/// waiting for it would outlast every wait here) and requeues its frames.
fn killing_the_worker_ten_times_loses_and_duplicates_nothing(env: &Env) {
    env.enqueue_images("kill", 300, &[]);
    let fake = FakeServer::start(env, &["--delay-ms", "20"]);
    // A long lease: recovery must not wait for it to expire.
    let args = ["--parallel", "4", "--lease-ttl", "120s"];
    // (The database exists: enqueue_images made it.)
    let described = || env.count_now("SELECT count(*) FROM descriptions");
    env.kill_workers_in_turn(&fake.url(), &args, (10, 24, 300), described);
    let o = {
        let mut c = env.worker(&fake.url(), "final.log", &args);
        c.arg("--until-empty");
        c.status().unwrap()
    };
    assert!(o.success(), "{}", env.log("final.log"));
    // Every worker after the first found its predecessor dead, holding
    // the lease.
    let took_over = |log: &str| env.log(log).contains("took over the GPU lease");
    let missed: Vec<String> = (1..10)
        .map(|r| format!("kill{r}.log"))
        .chain(["final.log".to_string()])
        .filter(|log| !took_over(log))
        .collect();
    assert!(missed.is_empty(), "no takeover in {missed:?}");
    assert_eq!(env.count_now("SELECT count(*) FROM descriptions"), 300);
    assert_eq!(
        env.count_now("SELECT count(*) FROM jobs WHERE state = 'done'"),
        300
    );
    assert_eq!(
        env.count_now("SELECT count(*) FROM jobs WHERE state != 'done'"),
        0
    );
    assert_eq!(
        env.count_now("SELECT count(*) FROM attempts WHERE outcome = 'done'"),
        300,
        "one recorded success per job"
    );
    assert_eq!(env.count_now("SELECT count(*) FROM frames"), 300);
}

on_both!(async two_workers_on_one_gpu_never_run_together);

async fn two_workers_on_one_gpu_never_run_together(env: &Env) {
    // Enough work that A is still at it when B and the --no-wait worker ask
    // (about 6 s at this pace).
    env.enqueue_images("pair", 400, &[]);
    let fake = FakeServer::start(env, &["--delay-ms", "30"]);
    let args = ["--parallel", "2", "--until-empty", "--lease-ttl", "120s"];
    let mut a = env.worker(&fake.url(), "a.log", &args).spawn().unwrap();
    wait_until("A to describe frames", Duration::from_secs(30), || {
        env.count_now("SELECT count(*) FROM attempts WHERE outcome = 'done'") >= 2
    });
    let mut b = env.worker(&fake.url(), "b.log", &args).spawn().unwrap();
    wait_until("B to wait for A's lease", Duration::from_secs(30), || {
        env.log("b.log").contains("is held by worker-")
    });
    let o = env.run(["worker", "--server-url", &fake.url(), "--no-wait"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("GPU gpu0 is held by"), "{}", stderr(&o));

    signal(&a, Signal::SIGKILL);
    a.wait().unwrap();
    let killed_at = now_ms();
    assert!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'queued'")
            .await
            > 0,
        "A was still working when it was killed"
    );
    let status = wait_for(&mut b, Duration::from_secs(60));
    assert!(status.success(), "{}", env.log("b.log"));
    assert_eq!(env.count("SELECT count(*) FROM descriptions").await, 400);
    let workers = env.strings_now("SELECT DISTINCT worker_id FROM attempts");
    assert_eq!(workers.len(), 2, "both worked, one after the other");
    let b_id = env.string_now("SELECT id FROM workers WHERE state = 'stopped'");
    let b_first = env.count_now(&format!(
        "SELECT min({}) FROM attempts WHERE worker_id = '{b_id}'",
        env.ms("started_at")
    ));
    assert!(
        b_first >= killed_at - 50,
        "B started no frame while A held the lease"
    );
}

on_both!(async gpu_lock_gets_the_gpu_within_a_batch_and_the_worker_resumes);

async fn gpu_lock_gets_the_gpu_within_a_batch_and_the_worker_resumes(env: &Env) {
    env.enqueue_images("lock", 80, &[]);
    let fake = FakeServer::start(env, &["--delay-ms", "100"]);
    let mut w = env
        .worker(
            &fake.url(),
            "w.log",
            &["--parallel", "2", "--until-empty", "--lease-ttl", "1500ms"],
        )
        .spawn()
        .unwrap();
    wait_until(
        "the worker to describe frames",
        Duration::from_secs(30),
        || env.count_now("SELECT count(*) FROM attempts WHERE outcome = 'done'") >= 4,
    );
    let marks = env.path().join("marks");
    let script = format!(
        "date +%s%3N > {0}.start; sleep 2; date +%s%3N > {0}.end; exit 7",
        marks.display()
    );
    let asked = now_ms();
    let o = env.run(["gpu-lock", "--", "sh", "-c", &script]);
    assert_exit(&o, 7);
    let (start, end) = crate::util::read_marks(&marks);
    // The worker yields at its next claim; the bound leaves room for a
    // loaded machine (process start, the frames in flight, 100 ms each).
    assert!(start - asked < 5000, "gpu-lock waited {} ms", start - asked);
    let status = wait_for(&mut w, Duration::from_secs(60));
    assert!(status.success(), "{}", env.log("w.log"));
    assert_eq!(
        env.count("SELECT count(*) FROM descriptions").await,
        80,
        "nothing lost"
    );
    let overlapping = env.count_now(&format!(
        "SELECT count(*) FROM attempts WHERE {} > {start} AND {} < {end}",
        env.ms("finished_at"),
        env.ms("started_at")
    ));
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

on_both!(async a_worker_started_under_gpu_lock_waits);

async fn a_worker_started_under_gpu_lock_waits(env: &Env) {
    env.enqueue_images("wait", 5, &[]);
    let fake = FakeServer::start(env, &[]);
    let end_mark = env.path().join("lock.end");
    let script = format!("sleep 1; date +%s%3N > {}", end_mark.display());
    let mut lock = env
        .cmd(["gpu-lock", "--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    wait_until(
        "gpu-lock to hold the lease",
        Duration::from_secs(30),
        || env.count_now("SELECT count(*) FROM gpu_leases WHERE purpose = 'gpu-lock'") == 1,
    );
    let o = env.run([
        "worker",
        "--server-url",
        &fake.url(),
        "--until-empty",
        "--no-wait",
    ]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("(gpu-lock"), "{}", stderr(&o));
    let o = env.run(["worker", "--server-url", &fake.url(), "--until-empty"]);
    assert_exit(&o, 0);
    assert!(lock.wait().unwrap().success());
    let lock_end: i64 = std::fs::read_to_string(&end_mark)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        env.count_now(&format!(
            "SELECT min({}) FROM attempts",
            env.ms("started_at")
        )) >= lock_end,
        "the worker waited for the gpu-lock command to end"
    );
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
/// writes nothing. (SQLite's; PostgreSQL's, which may stop inside a
/// transaction, is the next test.)
#[tokio::test]
async fn a_paused_worker_is_fenced_out_after_a_takeover() {
    let env = Env::new();
    env.enqueue_images("stop", 40, &[]);
    let fake = FakeServer::start(&env, &["--delay-ms", "300"]);
    let args = ["--parallel", "4", "--until-empty", "--lease-ttl", "1s"];
    let mut a = env.worker(&fake.url(), "a.log", &args).spawn().unwrap();
    wait_until("A to claim frames", Duration::from_secs(30), || {
        env.count_now("SELECT count(*) FROM jobs WHERE state = 'running'") > 0
    });
    crate::util::stop_outside_a_transaction(&env, &a);
    let mut b = env.worker(&fake.url(), "b.log", &args).spawn().unwrap();
    // B takes over once A's lease expires (A is alive, so only expiry frees it).
    wait_until(
        "B to take over A's expired lease",
        Duration::from_secs(30),
        || env.log("b.log").contains("took over the GPU lease"),
    );
    wait_until("B to describe frames", Duration::from_secs(30), || {
        env.count_now("SELECT count(*) FROM attempts WHERE outcome = 'done'") >= 2
    });
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

/// On PostgreSQL a paused worker may stop in the middle of a transaction,
/// holding its rows' locks: the server ends such a session
/// (`idle_in_transaction_session_timeout`), the takeover goes on, and the
/// resumed worker, fenced out, writes nothing.
#[test]
fn a_paused_worker_is_fenced_out_after_a_takeover_on_postgres() {
    let env = Env::postgres();
    let pg = env.pg();
    env.enqueue_images("stop", 40, &[]);
    let fake = FakeServer::start(&env, &["--delay-ms", "300"]);
    let args = ["--parallel", "4", "--until-empty", "--lease-ttl", "1s"];
    let mut a = env.worker(&fake.url(), "a.log", &args).spawn().unwrap();
    wait_until("A to claim frames", Duration::from_secs(30), || {
        pg.count("SELECT count(*) FROM jobs WHERE state = 'running'") > 0
    });
    // A's lease epoch: what it writes under it after it is resumed is stale
    // (with a 1 s lease it may later win the lease back from B, under a
    // new epoch, and work on legitimately).
    let epoch = pg.count("SELECT epoch FROM gpu_leases");
    // Anywhere, a transaction included.
    signal(&a, Signal::SIGSTOP);
    let mut b = env.worker(&fake.url(), "b.log", &args).spawn().unwrap();
    wait_until(
        "B to take over A's expired lease",
        Duration::from_secs(60),
        || env.log("b.log").contains("took over the GPU lease"),
    );
    wait_until("B to describe frames", Duration::from_secs(30), || {
        pg.count(
            "SELECT count(*) FROM attempts a JOIN workers w ON w.id = a.worker_id
             WHERE a.outcome = 'done' AND w.id <> (SELECT id FROM workers ORDER BY started_at LIMIT 1)",
        ) >= 2
    });
    let resumed_at = now_ms();
    signal(&a, Signal::SIGCONT);
    assert!(
        wait_for(&mut b, Duration::from_secs(60)).success(),
        "{}",
        env.log("b.log")
    );
    signal(&a, Signal::SIGTERM);
    wait_for(&mut a, Duration::from_secs(20));
    let late = pg.count(&format!(
        "SELECT count(*) FROM attempts WHERE worker_id = (SELECT id FROM workers ORDER BY started_at LIMIT 1)
           AND lease_epoch = {epoch} AND finished_at >= to_timestamp({resumed_at} / 1000.0)"
    ));
    assert_eq!(
        late, 0,
        "the stale worker wrote under its old epoch after it was resumed"
    );
    assert_eq!(pg.count("SELECT count(*) FROM descriptions"), 40);
    assert_eq!(
        pg.count("SELECT count(*) FROM attempts WHERE outcome = 'done'"),
        40
    );
}

on_both!(sigterm_finishes_in_flight_frames_releases_the_lease_and_exits_0);

fn sigterm_finishes_in_flight_frames_releases_the_lease_and_exits_0(env: &Env) {
    env.enqueue_images("term", 30, &[]);
    let fake = FakeServer::start(env, &["--delay-ms", "400"]);
    let mut w = env
        .worker(&fake.url(), "w.log", &["--parallel", "3"])
        .spawn()
        .unwrap();
    wait_until(
        "frames described and six in flight (3 sent, 3 prepared ahead)",
        Duration::from_secs(30),
        || {
            env.count_now("SELECT count(*) FROM attempts WHERE outcome = 'done'") >= 3
                && env.count_now("SELECT count(*) FROM jobs WHERE state = 'running'") == 6
        },
    );
    let in_flight = env.strings_now("SELECT CAST(id AS TEXT) FROM jobs WHERE state = 'running'");
    let sent = Instant::now();
    signal(&w, Signal::SIGTERM);
    let status = wait_for(&mut w, Duration::from_secs(15));
    assert!(status.success(), "{}", env.log("w.log"));
    assert!(sent.elapsed() < Duration::from_secs(15));
    assert_eq!(
        env.count_now("SELECT count(*) FROM jobs WHERE state = 'running'"),
        0
    );
    assert_eq!(
        env.count_now("SELECT count(*) FROM gpu_leases WHERE holder IS NOT NULL"),
        0
    );
    let done = env.count_now("SELECT count(*) FROM descriptions");
    assert!(done > 0 && done < 30, "{done}");
    // Frames in flight at SIGTERM are finished within --grace, not requeued.
    let finished = env.count_now(&format!(
        "SELECT count(*) FROM jobs WHERE state = 'done' AND id IN ({})",
        in_flight.join(", ")
    ));
    assert_eq!(
        finished as usize,
        in_flight.len(),
        "in flight at SIGTERM: {in_flight:?}"
    );
    assert!(
        env.log("w.log").contains("waiting up to 10 s for"),
        "{}",
        env.log("w.log")
    );
    assert_eq!(
        env.count_now("SELECT count(*) FROM jobs WHERE state = 'queued'"),
        30 - done
    );

    // A server that hangs: in-flight frames go back to the queue after the grace period.
    let hang = FakeServer::start(env, &["--answers", "hang"]);
    let mut w = env
        .worker(
            &hang.url(),
            "h.log",
            &["--parallel", "2", "--grace", "500ms"],
        )
        .spawn()
        .unwrap();
    wait_until(
        "four frames in flight on the hanging server (2 sent, 2 waiting for a slot)",
        Duration::from_secs(30),
        || env.count_now("SELECT count(*) FROM jobs WHERE state = 'running'") == 4,
    );
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
        env.count_now("SELECT count(*) FROM jobs WHERE state = 'queued'"),
        30 - done
    );
    assert_eq!(
        env.count_now("SELECT count(*) FROM jobs WHERE state IN ('running', 'failed')"),
        0
    );
}

on_both!(a_worker_reads_frames_through_its_path_map);

/// Frames on shared storage mounted elsewhere on the worker's host: with
/// `--path-map FROM=TO` the worker reads them under TO, and the database
/// keeps the paths it was given. A bad mapping is refused before anything
/// runs.
fn a_worker_reads_frames_through_its_path_map(env: &Env) {
    let enqueued = env.enqueue_images("enqueued-here", 4, &[]);
    let from = std::fs::canonicalize(&enqueued).unwrap();
    let mounted = env.path().join("mounted-there");
    std::fs::rename(&from, &mounted).unwrap();
    let fake = FakeServer::start(env, &[]);
    let map = format!("{}={}", from.display(), mounted.display());
    let o = env
        .worker(
            &fake.url(),
            "mapped.log",
            &["--until-empty", "--path-map", &map],
        )
        .status()
        .unwrap();
    assert!(o.success(), "{}", env.log("mapped.log"));
    assert_eq!(
        env.count_now("SELECT count(*) FROM jobs WHERE state = 'done'"),
        4
    );
    let kept = env.count_now(&format!(
        "SELECT count(*) FROM frames WHERE path LIKE '{}/%'",
        from.display()
    ));
    assert_eq!(kept, 4, "the database keeps the paths it was given");

    let o = env.run([
        "worker",
        "--server-url",
        &fake.url(),
        "--path-map",
        "no-equals-sign",
    ]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("is not FROM=TO"), "{}", stderr(&o));
}

on_both!(frames_stored_in_the_database_are_described_without_their_files);

fn frames_stored_in_the_database_are_described_without_their_files(env: &Env) {
    // The frames whose bytes the database holds.
    let stored = match env.backend() {
        Backend::Sqlite => "SELECT count(*) FROM stored_frames",
        Backend::Postgres => "SELECT count(*) FROM frames WHERE jpeg IS NOT NULL",
    };
    let dir = env.images("stored", 8);
    let enqueue = |dir: &std::path::Path, extra: &[&str]| {
        let o = env.cmd(["enqueue"]).arg(dir).args(extra).output().unwrap();
        assert_exit(&o, 0);
    };
    enqueue(&dir, &["--store-frames"]);
    assert_eq!(env.count_now(stored), 8);
    // Enqueued without the flag first, a frame gets its bytes when
    // enqueued again with it (and no second job).
    let late = env.images("late", 9);
    for i in 1..=8 {
        std::fs::remove_file(late.join(format!("img_{i}.png"))).unwrap();
    }
    enqueue(&late, &[]);
    assert_eq!(env.count_now(stored), 8);
    enqueue(&late, &["--store-frames"]);
    assert_eq!(env.count_now(stored), 9);
    assert_eq!(env.count_now("SELECT count(*) FROM jobs"), 9);
    // The worker's host has no copy of the files.
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&late).unwrap();
    let fake = FakeServer::start(env, &[]);
    let w = env
        .worker(
            &fake.url(),
            "stored.log",
            &["--parallel", "2", "--until-empty"],
        )
        .status()
        .unwrap();
    assert!(w.success(), "{}", env.log("stored.log"));
    let described = results(env, &[]);
    assert_eq!(described.len(), 9, "{described:?}");
    // Each frame's own bytes were sent: the fake's answer follows them.
    let answers: std::collections::BTreeSet<String> = described
        .iter()
        .map(|d| d["visual_content"].to_string())
        .collect();
    assert_eq!(answers.len(), 9, "{answers:?}");
    // The report draws their thumbnails from the stored bytes too.
    let report = env.path().join("stored.html");
    let o = env
        .cmd(["report", "--film", "stored", "-o"])
        .arg(&report)
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let html = std::fs::read_to_string(&report).unwrap();
    assert_eq!(html.matches("src=\"data:image/jpeg").count(), 8, "{html}");
    assert!(!html.contains("class=\"nothumb\""), "{html}");

    // Without --store-frames, a frame the worker cannot reach fails as a
    // bad frame, with the reason; nothing else is lost.
    let unstored = env.images("unstored", 2);
    enqueue(&unstored, &[]);
    std::fs::remove_dir_all(&unstored).unwrap();
    let w = env
        .worker(&fake.url(), "unstored.log", &["--until-empty"])
        .status()
        .unwrap();
    assert!(w.success(), "{}", env.log("unstored.log"));
    let failed = results(env, &["--state", "failed"]);
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(
        failed
            .iter()
            .all(|f| f["error"].as_str().unwrap().contains("does not exist")),
        "{failed:?}"
    );
    assert_eq!(results(env, &[]).len(), 9);
    assert_eq!(env.count_now(stored), 9);
}

/// `cinecut results --format jsonl ARGS…`, one value per line.
fn results(env: &Env, args: &[&str]) -> Vec<serde_json::Value> {
    let o = env
        .cmd(["results", "--format", "jsonl"])
        .args(args)
        .output()
        .unwrap();
    assert_exit(&o, 0);
    stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

on_both!(the_noop_describer_answers_every_frame_without_a_server);

/// The benchmarks' describer: every frame answered at once, no server.
fn the_noop_describer_answers_every_frame_without_a_server(env: &Env) {
    env.enqueue_images("noop", 5, &[]);
    let o = env
        .cmd([
            "worker",
            "--noop-describer",
            "--until-empty",
            "--gpu-name",
            "g0",
        ])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert_eq!(
        env.strings_now("SELECT model || ':' || count(*) FROM descriptions GROUP BY model"),
        ["noop:5"]
    );
    // It is for benchmarks: with a server or a model it is a usage error.
    let o = env
        .cmd([
            "worker",
            "--noop-describer",
            "--server-url",
            "http://127.0.0.1:9",
        ])
        .output()
        .unwrap();
    assert_exit(&o, 2);
}

on_both!(a_worker_for_one_film_takes_only_its_frames);

fn a_worker_for_one_film_takes_only_its_frames(env: &Env) {
    env.enqueue_images("first", 3, &[]);
    env.enqueue_images("second", 4, &[]);
    let fake = FakeServer::start(env, &[]);
    let o = env
        .worker(
            &fake.url(),
            "first.log",
            &["--film", "first", "--until-empty"],
        )
        .status()
        .unwrap();
    assert!(o.success(), "{}", env.log("first.log"));
    let done_of = |film: &str| {
        env.count_now(&format!(
            "SELECT count(*) FROM jobs j JOIN films f ON f.id = j.film_id \
             WHERE f.title = '{film}' AND j.state = 'done'"
        ))
    };
    assert_eq!((done_of("first"), done_of("second")), (3, 0));
    let o = env
        .worker(&fake.url(), "all.log", &["--until-empty"])
        .status()
        .unwrap();
    assert!(o.success(), "{}", env.log("all.log"));
    assert_eq!((done_of("first"), done_of("second")), (3, 4));
    // A film that is not there: a clear error.
    let o = env
        .cmd(["worker", "--server-url", &fake.url(), "--film", "third"])
        .output()
        .unwrap();
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("no film titled \"third\""),
        "{}",
        stderr(&o)
    );
}

on_both!(run_interrupted_by_ctrl_c_then_run_again_describes_each_frame_once);

/// README's `run`: interrupted (Ctrl-C, SIGINT) part-way it exits 130
/// with nothing left claimed; run again with the same arguments, it
/// re-enqueues nothing, and every frame ends described once, none tried
/// twice to success.
fn run_interrupted_by_ctrl_c_then_run_again_describes_each_frame_once(env: &Env) {
    let dir = env.images("ctrl-c", 40);
    let fake = FakeServer::start(env, &["--delay-ms", "50"]);
    let run = |log: &str| {
        let mut c = env.cmd(["run"]);
        c.arg(&dir)
            .args(["--server-url", &fake.url(), "--parallel", "2"])
            .stdout(std::fs::File::create(env.path().join(format!("{log}.out"))).unwrap())
            .stderr(std::fs::File::create(env.path().join(log)).unwrap());
        c
    };
    let mut first = run("first.log").spawn().unwrap();
    crate::util::wait_for_descriptions_while_running(env, &mut first, "first.log", 5);
    signal(&first, Signal::SIGINT);
    let status = wait_for(&mut first, Duration::from_secs(60));
    assert_eq!(
        status.code(),
        Some(130),
        "interrupted: {}",
        env.log("first.log")
    );
    let partial = env.count_now("SELECT count(*) FROM descriptions");
    assert!(partial < 40, "interrupted part-way ({partial} of 40)");
    assert_eq!(
        env.count_now("SELECT count(*) FROM jobs WHERE state = 'running'"),
        0,
        "nothing left claimed"
    );

    let status = run("second.log").status().unwrap();
    assert!(status.success(), "{}", env.log("second.log"));
    assert!(
        env.log("second.log.out")
            .contains("0 new, 40 already queued"),
        "{}",
        env.log("second.log.out")
    );
    assert_eq!(env.count_now("SELECT count(*) FROM descriptions"), 40);
    assert_eq!(
        env.count_now("SELECT count(*) FROM attempts WHERE outcome = 'done'"),
        40,
        "each frame described once"
    );
}
