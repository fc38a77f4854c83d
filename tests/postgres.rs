//! The commands on PostgreSQL (`--db postgres://…`) as real processes:
//! several `cinecut worker` processes standing for several hosts
//! (`CINECUT_TEST_HOST_ID`), a host lost with SIGKILL, a skewed clock
//! (`CINECUT_TEST_CLOCK_SKEW_MS`), a server restart. The server is a real
//! PostgreSQL: the cluster `scripts/test.sh` started, or one of the test's
//! own (see `postgres/tests/util.rs`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

pub use crate::util::pg::Pg;
use crate::util::{
    BIN, Env, FakeServer, assert_exit, signal, stderr, stdout, wait_for, wait_until,
};

impl Pg {
    /// `cinecut --db <url> ARGS…`, not yet run.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(["--db", self.url()])
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("CINECUT_DB");
        c
    }

    /// A worker process on host `host`, GPU `gpu`, logging to `<gpu>.log`.
    fn worker(&self, env: &Env, fake: &FakeServer, host: &str, gpu: &str, extra: &[&str]) -> Child {
        let mut c = self.cmd(&[
            "worker",
            "--server-url",
            &fake.url(),
            "--gpu-name",
            gpu,
            "--until-empty",
        ]);
        c.args(extra)
            .env("CINECUT_TEST_HOST_ID", host)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(env.path().join(format!("{gpu}.log"))).unwrap());
        c.spawn().unwrap()
    }

    /// Every frame described once: one description per job, one finished
    /// `done` attempt per job, and no two tries of a job ever ran at once.
    fn assert_each_described_once(&self, frames: i64) {
        assert_eq!(
            self.count("SELECT count(*) FROM jobs WHERE state = 'done'"),
            frames
        );
        assert_eq!(
            self.count("SELECT count(DISTINCT frame_id) FROM descriptions"),
            frames
        );
        assert_eq!(self.count("SELECT count(*) FROM descriptions"), frames);
        assert_eq!(
            self.count("SELECT count(*) FROM attempts WHERE outcome = 'done'"),
            frames,
            "one successful try per frame"
        );
        assert_eq!(
            self.count(
                "SELECT count(*) FROM attempts a JOIN attempts b ON a.job_id = b.job_id AND a.id < b.id
                 WHERE tstzrange(a.started_at, coalesce(a.finished_at, 'infinity'))
                    && tstzrange(b.started_at, coalesce(b.finished_at, 'infinity'))"
            ),
            0,
            "no frame was held by two workers at once"
        );
    }
}

fn enqueue(pg: &Pg, env: &Env, folder: &str, n: usize) {
    let dir = env.images(folder, n);
    let o = pg
        .cmd(&["enqueue", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert!(stdout(&o).contains(&format!("{n} new")), "{}", stdout(&o));
}

#[test]
fn stills_are_enqueued_described_listed_searched_retried_and_cancelled_on_postgres() {
    let env = Env::new();
    let pg = Pg::new();
    enqueue(&pg, &env, "stills", 12);
    // Again: nothing new, nothing doubled.
    let dir = env.path().join("stills");
    let o = pg
        .cmd(&["enqueue", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("0 new, 12 already queued"),
        "{}",
        stdout(&o)
    );
    // The server's notices (a migrated schema's "already exists,
    // skipping") stay out of the user's log.
    assert!(!stderr(&o).contains("skipping"), "{}", stderr(&o));
    // status: SQLite's table (stdout is not a terminal: plain lines).
    let o = pg.cmd(&["status"]).output().unwrap();
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("stills\t12\t12\t0\t0\t0\t0\t0.0\t"),
        "{}",
        stdout(&o)
    );

    let fake = FakeServer::start(&env, &["--answers", "tricky"]);
    let mut w = pg.worker(&env, &fake, "host-a", "GPU-a0", &["--parallel", "3"]);
    assert!(
        wait_for(&mut w, Duration::from_secs(60)).success(),
        "{}",
        env.log("GPU-a0.log")
    );
    pg.assert_each_described_once(12);
    let o = pg.cmd(&["status", "--json"]).output().unwrap();
    assert_exit(&o, 0);
    let status: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(status["films"][0]["done"], 12, "{status}");
    assert_eq!(status["totals"]["done"], 12, "{status}");
    let worker = &status["workers"][0];
    assert_eq!(
        (&worker["gpu"], &worker["state"], &worker["jobs_done"]),
        (
            &serde_json::json!("GPU-a0"),
            &serde_json::json!("stopped"),
            &serde_json::json!(12)
        ),
        "{status}"
    );

    let lines = |o: &std::process::Output| -> Vec<serde_json::Value> {
        stdout(o)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let o = pg.cmd(&["results", "--format", "jsonl"]).output().unwrap();
    assert_exit(&o, 0);
    let rows = lines(&o);
    assert_eq!(rows.len(), 12);
    assert!(
        rows.iter()
            .all(|r| r["action"] == "a chase" && r["film"] == "stills"),
        "{rows:?}"
    );
    // The rows SQLite's results gives, field for field.
    let keys: Vec<&str> = rows[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let expected = [
        "film",
        "frame_index",
        "pts_ms",
        "path",
        "visual_content",
        "mood",
        "action",
        "setting",
        "model",
        "error",
        "pass",
        "fields",
    ];
    assert_eq!(keys, expected, "{:?}", rows[0]);
    let o = pg
        .cmd(&["search", "chases at night", "--json"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert_eq!(
        lines(&o).len(),
        12,
        "stemmed words of the answers are found"
    );
    let o = pg.cmd(&["search", "submarine", "--json"]).output().unwrap();
    assert_exit(&o, 0);
    assert_eq!(lines(&o).len(), 0);

    // A film whose every answer is garbage: failed, listed with the
    // reason, retried, cancelled.
    let bad = env.images("bad", 3);
    let o = pg
        .cmd(&["enqueue", bad.to_str().unwrap(), "--max-attempts", "1"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let garbage = FakeServer::start(&env, &["--answers", "garbage"]);
    let mut w = pg.worker(&env, &garbage, "host-a", "GPU-a1", &[]);
    assert!(
        wait_for(&mut w, Duration::from_secs(60)).success(),
        "{}",
        env.log("GPU-a1.log")
    );
    let o = pg
        .cmd(&["results", "--state", "failed", "--format", "csv"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let csv = stdout(&o);
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.lines().skip(1).all(|l| l.starts_with("bad,")), "{csv}");
    let o = pg
        .cmd(&["retry", "--failed", "--film", "bad"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("requeued 3 failed job(s)"),
        "{}",
        stdout(&o)
    );
    let o = pg.cmd(&["cancel", "--film", "bad"]).output().unwrap();
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("cancelled 3 queued job(s)"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        pg.count("SELECT count(*) FROM jobs WHERE state = 'cancelled'"),
        3
    );
    let o = pg
        .cmd(&["cancel", "--film", "no such film"])
        .output()
        .unwrap();
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("no film titled \"no such film\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_wrong_password_is_a_clear_error_that_never_shows_the_password() {
    let pg = Pg::new();
    let (scheme_host, db) = pg.url().rsplit_once('/').unwrap();
    let hostpart = scheme_host
        .trim_start_matches("postgres://")
        .rsplit_once('@')
        .unwrap()
        .1;
    let url = format!("postgres://nobody:hunter2@{hostpart}/{db}");
    let o = Command::new(BIN)
        .args(["--db", &url, "status"])
        .env_remove("CINECUT_DB")
        .output()
        .unwrap();
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("PostgreSQL database postgres://nobody:***@"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "the password shows: {err}");
}

#[test]
fn four_worker_processes_on_two_hosts_lose_one_host_and_describe_every_frame_once() {
    let env = Env::new();
    let pg = Pg::new();
    let frames = 2000;
    enqueue(&pg, &env, "many", frames as usize);
    let fake = FakeServer::start(&env, &["--delay-ms", "20", "--slots", "8"]);
    let args = ["--parallel", "2", "--lease-ttl", "2s"];
    let mut host_a = [
        pg.worker(&env, &fake, "host-a", "GPU-a0", &args),
        pg.worker(&env, &fake, "host-a", "GPU-a1", &args),
    ];
    let host_b = vec![
        pg.worker(&env, &fake, "host-b", "GPU-b0", &args),
        pg.worker(&env, &fake, "host-b", "GPU-b1", &args),
    ];
    wait_until(
        "host B's workers to describe frames",
        Duration::from_secs(60),
        || {
            pg.count(
                "SELECT count(*) FROM attempts a JOIN workers w ON w.id = a.worker_id
             WHERE w.host = 'host-b' AND a.outcome = 'done'",
            ) >= 100
        },
    );
    // Host B is lost: its workers die with their jobs claimed.
    for mut w in host_b {
        signal(&w, Signal::SIGKILL);
        w.wait().unwrap();
    }
    let lost = Instant::now();
    for (w, log) in host_a.iter_mut().zip(["GPU-a0.log", "GPU-a1.log"]) {
        assert!(
            wait_for(w, Duration::from_secs(120)).success(),
            "{}",
            env.log(log)
        );
    }
    pg.assert_each_described_once(frames);
    // Host B's claims came back by job-lease expiry (the database's
    // clock), not by a pid check or a takeover of its GPUs.
    let expired = pg.count(
        "SELECT count(*) FROM attempts a JOIN workers w ON w.id = a.worker_id
         WHERE w.host = 'host-b' AND a.outcome = 'expired'",
    );
    assert!(expired > 0, "host B had frames in flight when it was lost");
    assert_eq!(
        pg.count("SELECT count(*) FROM attempts WHERE outcome = 'requeued'"),
        0
    );
    assert_eq!(
        pg.strings(
            "SELECT DISTINCT holder FROM gpu_leases WHERE gpu LIKE 'GPU-b%' AND holder IS NOT NULL"
        )
        .len(),
        2,
        "host B's GPU leases were left to expire, not taken"
    );
    assert!(lost.elapsed() < Duration::from_secs(120));
}

#[test]
fn a_worker_with_a_skewed_clock_neither_steals_a_live_lease_nor_keeps_a_dead_one() {
    let env = Env::new();
    let pg = Pg::new();
    enqueue(&pg, &env, "skew", 60);
    let fake = FakeServer::start(&env, &["--delay-ms", "100"]);
    let args = ["--parallel", "1", "--lease-ttl", "2s"];
    let skewed = |host: &str| {
        let mut c = pg.cmd(&[
            "worker",
            "--server-url",
            &fake.url(),
            "--gpu-name",
            "GPU-1",
            "--until-empty",
        ]);
        c.args(args)
            .env("CINECUT_TEST_HOST_ID", host)
            .env("CINECUT_TEST_CLOCK_SKEW_MS", "600000")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(env.path().join(format!("{host}.log"))).unwrap());
        c.spawn().unwrap()
    };
    // 1. A worker 10 minutes ahead does not take a live lease: by its own
    //    clock the holder's lease ran out long ago.
    let mut honest = pg.worker(&env, &fake, "host-a", "GPU-1", &args);
    wait_until(
        "the first worker to describe frames",
        Duration::from_secs(60),
        || pg.count("SELECT count(*) FROM attempts WHERE outcome = 'done'") >= 3,
    );
    let mut ahead = skewed("host-b");
    wait_until(
        "the skewed worker to register",
        Duration::from_secs(30),
        || pg.count("SELECT count(*) FROM workers WHERE host = 'host-b'") == 1,
    );
    // It waits while the first works on (the lease renewed on the
    // database's clock); some frames later, it still has none.
    let done_then = pg.count("SELECT count(*) FROM attempts WHERE outcome = 'done'");
    wait_until(
        "more frames from the first worker",
        Duration::from_secs(60),
        || pg.count("SELECT count(*) FROM attempts WHERE outcome = 'done'") >= done_then + 25,
    );
    assert_eq!(
        pg.count("SELECT count(*) FROM attempts a JOIN workers w ON w.id = a.worker_id WHERE w.host = 'host-b'"),
        0,
        "the skewed worker took a live lease"
    );
    assert!(
        env.log("host-b.log").contains("is held by"),
        "{}",
        env.log("host-b.log")
    );
    // 2. The skewed worker takes the lease once the first is gone, and dies
    //    holding it: the next holder gets it once the lease runs out by the
    //    database's clock (2 s), not 10 minutes later.
    signal(&honest, Signal::SIGKILL);
    honest.wait().unwrap();
    wait_until(
        "the skewed worker to take over",
        Duration::from_secs(60),
        || {
            pg.count(
                "SELECT count(*) FROM attempts a JOIN workers w ON w.id = a.worker_id
             WHERE w.host = 'host-b' AND a.outcome = 'done'",
            ) >= 2
        },
    );
    signal(&ahead, Signal::SIGKILL);
    ahead.wait().unwrap();
    let killed = Instant::now();
    let mut next = pg.worker(&env, &fake, "host-c", "GPU-1", &args);
    assert!(
        wait_for(&mut next, Duration::from_secs(120)).success(),
        "{}",
        env.log("GPU-1.log")
    );
    pg.assert_each_described_once(60);
    assert!(
        pg.count(
            "SELECT count(*) FROM attempts a JOIN workers w ON w.id = a.worker_id
             WHERE w.host = 'host-c' AND a.outcome = 'done'"
        ) > 0
    );
    assert!(killed.elapsed() < Duration::from_secs(120));
}

#[test]
fn worker_processes_carry_on_across_a_postgres_restart() {
    let env = Env::new();
    let pg = Pg::private();
    enqueue(&pg, &env, "restart", 300);
    let fake = FakeServer::start(&env, &["--delay-ms", "20", "--slots", "4"]);
    let args = ["--parallel", "2", "--lease-ttl", "3s"];
    let mut workers = [
        pg.worker(&env, &fake, "host-a", "GPU-a0", &args),
        pg.worker(&env, &fake, "host-b", "GPU-b0", &args),
    ];
    wait_until(
        "the workers to describe frames",
        Duration::from_secs(60),
        || pg.count("SELECT count(*) FROM attempts WHERE outcome = 'done'") >= 40,
    );
    let before = pg.count("SELECT count(*) FROM attempts WHERE outcome = 'done'");
    pg.db.restart();
    assert!(before < 300, "the server restarted while frames were left");
    // A connection that breaks in a statement makes the worker reconnect
    // and take its lease again ("reconnecting" in its log); one that broke
    // while idle is replaced by the pool. Either way the workers finish.
    for (w, log) in workers.iter_mut().zip(["GPU-a0.log", "GPU-b0.log"]) {
        assert!(
            wait_for(w, Duration::from_secs(120)).success(),
            "{}",
            env.log(log)
        );
    }
    pg.assert_each_described_once(300);
}

#[test]
fn gpu_lock_on_one_host_waits_for_the_worker_on_its_gpu_and_not_for_another_hosts() {
    let env = Env::new();
    let pg = Pg::new();
    enqueue(&pg, &env, "lock", 200);
    let fake = FakeServer::start(&env, &["--delay-ms", "50", "--slots", "4"]);
    let args = ["--parallel", "1", "--lease-ttl", "2s"];
    let mut a = pg.worker(&env, &fake, "host-a", "GPU-A", &args);
    let mut b = pg.worker(&env, &fake, "host-b", "GPU-B", &args);
    wait_until(
        "both workers to describe frames",
        Duration::from_secs(60),
        || {
            pg.count(
                "SELECT count(DISTINCT w.host) FROM attempts a JOIN workers w ON w.id = a.worker_id
             WHERE a.outcome = 'done'",
            ) == 2
        },
    );
    // `gpu` shows each GPU lease with its holder's host.
    let o = pg.cmd(&["gpu", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let hosts: Vec<(&str, &str)> = v["gpu_leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["gpu"].as_str().unwrap(), l["host"].as_str().unwrap()))
        .collect();
    assert_eq!(hosts, [("GPU-A", "host-a"), ("GPU-B", "host-b")], "{v}");
    let marks = env.path().join("marks");
    let script = format!(
        "date +%s%3N > {0}.start; sleep 1.5; date +%s%3N > {0}.end; exit 7",
        marks.display()
    );
    let o = pg
        .cmd(&["gpu-lock", "--gpu-name", "GPU-A", "--", "sh", "-c", &script])
        .env("CINECUT_TEST_HOST_ID", "host-a")
        .output()
        .unwrap();
    assert_exit(&o, 7);
    let (start, end) = crate::util::read_marks(&marks);
    let during = |host: &'static str| match host {
        "host-a" => pg.count_during(
            "SELECT count(*) FROM attempts a JOIN workers w ON w.id = a.worker_id
             WHERE w.host = 'host-a' AND a.started_at < to_timestamp($2 / 1000.0)
               AND coalesce(a.finished_at, 'infinity') > to_timestamp($1 / 1000.0)",
            start,
            end,
        ),
        _ => pg.count_during(
            "SELECT count(*) FROM attempts a JOIN workers w ON w.id = a.worker_id
             WHERE w.host = 'host-b' AND a.started_at < to_timestamp($2 / 1000.0)
               AND coalesce(a.finished_at, 'infinity') > to_timestamp($1 / 1000.0)",
            start,
            end,
        ),
    };
    assert_eq!(
        during("host-a"),
        0,
        "host A's worker ran a frame while gpu-lock held its GPU"
    );
    assert!(during("host-b") > 5, "host B's worker went on meanwhile");
    for (w, log) in [(&mut a, "GPU-A.log"), (&mut b, "GPU-B.log")] {
        assert!(
            wait_for(w, Duration::from_secs(120)).success(),
            "{}",
            env.log(log)
        );
    }
    assert!(
        env.log("GPU-A.log").contains("yielded the GPU lease"),
        "{}",
        env.log("GPU-A.log")
    );
    assert!(
        !env.log("GPU-B.log").contains("yielded the GPU lease"),
        "{}",
        env.log("GPU-B.log")
    );
    pg.assert_each_described_once(200);
}

#[test]
fn a_film_is_enqueued_on_postgres_once_with_its_frame_times_and_described() {
    let env = Env::new();
    let pg = Pg::new();
    let video = crate::film::three_shots(&env, "trailer.mp4");
    let shared = env.path().join("shared-frames");
    let enqueue = || {
        pg.cmd(&[
            "enqueue",
            video.to_str().unwrap(),
            "--frames-dir",
            shared.to_str().unwrap(),
        ])
        .output()
        .unwrap()
    };
    let o = enqueue();
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("film \"trailer\": 3 new"),
        "{}",
        stdout(&o)
    );
    // The middle of each 2-second shot, with its time.
    let pts = pg.numbers("SELECT pts_ms FROM frames ORDER BY frame_index");
    assert_eq!(pts.len(), 3, "{pts:?}");
    for (shot, t) in pts.iter().enumerate() {
        let start = 2000 * shot as i64;
        assert!((start..start + 2000).contains(t), "shot {shot}: {t} ms");
    }
    // Its shots, as on SQLite: cuts at 2 s and 4 s, source frame numbers
    // at 25 fps, the cut's score; each frame names its shot.
    assert_eq!(
        pg.strings(
            "SELECT concat_ws(' ', shot_index, start_ms, end_ms, first_frame, last_frame, \
             score = 0, score > 0.3) FROM shots ORDER BY shot_index"
        ),
        [
            "0 0 2000 0 49 t f",
            "1 2000 4000 50 99 f t",
            "2 4000 6000 100 149 f t"
        ]
    );
    assert_eq!(
        pg.count(
            "SELECT count(*) FROM frames fr JOIN shots s ON s.id = fr.shot_id \
             WHERE fr.pts_ms >= s.start_ms AND fr.pts_ms < s.end_ms"
        ),
        3
    );
    for path in pg.strings("SELECT path FROM frames") {
        assert!(
            std::path::Path::new(&path).starts_with(shared.canonicalize().unwrap()),
            "{path}"
        );
        assert!(std::path::Path::new(&path).is_file(), "{path}");
    }
    // Again: nothing extracted, nothing doubled.
    let o = enqueue();
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("0 new, 3 already queued"),
        "{}",
        stdout(&o)
    );
    // A broken video: a clear error, and no film of it left behind.
    let broken = env.path().join("broken.mp4");
    std::fs::write(&broken, b"not a video at all").unwrap();
    let o = pg
        .cmd(&["enqueue", broken.to_str().unwrap()])
        .output()
        .unwrap();
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("broken.mp4"), "{}", stderr(&o));
    assert_eq!(pg.count("SELECT count(*) FROM films"), 1);

    let fake = FakeServer::start(&env, &[]);
    let mut w = pg.worker(&env, &fake, "host-a", "GPU-a0", &[]);
    assert!(
        wait_for(&mut w, Duration::from_secs(60)).success(),
        "{}",
        env.log("GPU-a0.log")
    );
    pg.assert_each_described_once(3);

    // Its report, read in a real browser: a card per frame with its
    // thumbnail, and the video's facts in the header.
    let report = env.path().join("trailer.html");
    let o = pg
        .cmd(&["report", "-o", report.to_str().unwrap()])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let mut b = crate::util::browser::Browser::launch();
    b.open(&report);
    assert_eq!(
        b.eval("[...document.querySelectorAll('#cards > article')].map(c => c.id)"),
        serde_json::json!(["f0", "f1", "f2"])
    );
    let widths = b.eval(
        "Promise.all([...document.querySelectorAll('#cards img')].map(i => { \
           i.loading = 'eager'; return i.decode().then(() => i.naturalWidth, () => 0); }))",
    );
    let widths = widths.as_array().unwrap();
    assert_eq!(widths.len(), 3, "{widths:?}");
    assert!(widths.iter().all(|w| w.as_u64().unwrap() > 0), "{widths:?}");
    let facts = b.eval("document.querySelector('.facts').textContent");
    let facts = facts.as_str().unwrap();
    for fact in [
        "3 frames · 3 described · 0 failed",
        "00:00:06",
        "fps",
        "pass default",
        "described by fake-model",
        "trailer.mp4",
    ] {
        assert!(facts.contains(fact), "{fact:?} in {facts:?}");
    }

    // As on SQLite, a film is known by its file: another frame selection
    // is refused with nothing changed; with --replace the film is made
    // again with it; a changed file is a new film.
    let other = |extra: &[&str]| {
        pg.cmd(&[
            "enqueue",
            video.to_str().unwrap(),
            "--frames-dir",
            shared.to_str().unwrap(),
            "--select",
            "interval",
            "--every",
            "1",
            "--no-dedupe",
        ])
        .args(extra)
        .output()
        .unwrap()
    };
    let o = other(&[]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("with other frame selection") && stderr(&o).contains("--replace"),
        "{}",
        stderr(&o)
    );
    assert_eq!(pg.count("SELECT count(*) FROM frames"), 3);
    let o = other(&["--replace"]);
    assert_exit(&o, 0);
    assert_eq!(pg.count("SELECT count(*) FROM films"), 1);
    assert_eq!(pg.count("SELECT count(*) FROM descriptions"), 0, "replaced");
    let frames = pg.count("SELECT count(*) FROM frames");
    assert_eq!(frames, 6, "{}", stdout(&o));
    let later = std::time::SystemTime::now() + Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&video)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let o = other(&[]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("film \"trailer (2)\": 6 new"),
        "{}",
        stdout(&o)
    );
    let mut w = pg.worker(&env, &fake, "host-a", "GPU-a1", &[]);
    assert!(
        wait_for(&mut w, Duration::from_secs(60)).success(),
        "{}",
        env.log("GPU-a1.log")
    );
    pg.assert_each_described_once(12);
}

#[test]
fn run_and_describe_on_postgres_and_again_add_nothing() {
    let env = Env::new();
    let pg = Pg::new();
    let dir = env.images("run", 6);
    let fake = FakeServer::start(&env, &[]);
    let run = || {
        pg.cmd(&[
            "run",
            dir.to_str().unwrap(),
            "--server-url",
            &fake.url(),
            "--pass",
            "first",
        ])
        .output()
        .unwrap()
    };
    let o = run();
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("described 6 frame(s)")
            && stdout(&o).contains("6 done, 0 failed, 0 still queued of 6"),
        "{}",
        stdout(&o)
    );
    pg.assert_each_described_once(6);
    let o = run();
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("described 0 frame(s)"),
        "{}",
        stdout(&o)
    );
    pg.assert_each_described_once(6);
    // The same frames in a second pass, nothing extracted again.
    let o = pg
        .cmd(&["describe", "--server-url", &fake.url(), "--pass", "second"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("described 6 frame(s)"),
        "{}",
        stdout(&o)
    );
    assert_eq!(pg.count("SELECT count(*) FROM frames"), 6);
    let o = pg.cmd(&["passes", "--json"]).output().unwrap();
    assert_exit(&o, 0);
    let passes: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = passes.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["first", "second"], "{passes:?}");
    assert!(
        passes.iter().all(|p| p["done"] == 6
            && p["model"] == "fake-model"
            && p["mean_prompt_tokens"].as_f64() > Some(0.0)),
        "{passes:?}"
    );
    assert_eq!(
        pg.count("SELECT count(*) FROM frame_descriptions WHERE pass = 'second'"),
        6
    );

    // A pass with a custom profile: bound to it, its fields are the
    // columns of results and the lines of each card of the report.
    let profile = env.path().join("bounded.toml");
    std::fs::write(&profile, crate::passes::BOUNDED_PROFILE).unwrap();
    let o = pg
        .cmd(&["describe", "--server-url", &fake.url(), "--pass", "custom"])
        .arg("--prompt")
        .arg(&profile)
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert_eq!(
        pg.strings("SELECT profile_name || ':' || model FROM passes WHERE name = 'custom'"),
        ["bounded:fake-model"]
    );
    let o = pg.cmd(&["results", "--pass", "custom"]).output().unwrap();
    assert_exit(&o, 0);
    let header = stdout(&o).lines().next().unwrap_or_default().to_string();
    assert_eq!(
        header,
        "FILM\tFRAME\tTIME\tPASS\tSHOT TYPE\tCHARACTERS\tINTENSITY\tNIGHT\tNOTE",
        "{}",
        stdout(&o)
    );
    assert_eq!(stdout(&o).lines().count(), 7, "{}", stdout(&o));
    let report = env.path().join("custom.html");
    let o = pg
        .cmd(&["report", "--pass", "custom", "-o", report.to_str().unwrap()])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let html = std::fs::read_to_string(&report).unwrap();
    assert_eq!(html.matches("<dt>Shot type</dt>").count(), 6);
    assert!(!html.contains("<dt>Visual content</dt>"));
}

/// A lease taken over from a holder on another host never touches the
/// llama-server it names: that pid is the other host's. The record names a
/// live process here whose pid, start time and command line all match, so
/// only the host check spares it (the same record from this host is
/// reaped: `server::the_next_worker_kills_a_live_orphan_server…`).
#[test]
fn a_lease_taken_over_from_another_host_leaves_the_server_it_names_alone() {
    let env = Env::new();
    let pg = Pg::new();
    enqueue(&pg, &env, "far", 2);
    let bystander = crate::util::Bystander::start();
    let pid = i64::from(bystander.id());
    let mut cmdline = None;
    wait_until("the bystander to exec", Duration::from_secs(10), || {
        cmdline = cinecut::process::cmdline(pid);
        cmdline.as_deref().is_some_and(|c| c.starts_with("sleep"))
    });
    let cmdline = cmdline.unwrap();
    let started = cinecut::process::start_ticks(pid).unwrap();
    pg.execute(&format!(
        "INSERT INTO gpu_leases (gpu, holder, host, holder_pid, purpose, epoch, heartbeat_at, expires_at,
                                 server_pid, server_started_at, server_cmdline)
         VALUES ('far-gpu', 'worker-far', 'another-host/boot', {pid}, 'worker', 3,
                 now() - interval '1 hour', now() - interval '1 minute', {pid}, {started}, '{cmdline}')"
    ));
    let fake = FakeServer::start(&env, &[]);
    let mut w = pg.worker(&env, &fake, "this-host", "far-gpu", &[]);
    assert!(wait_for(&mut w, Duration::from_secs(60)).success());
    let log = env.log("far-gpu.log");
    assert!(
        log.contains("took over the GPU lease of worker-far"),
        "{log}"
    );
    assert!(!log.contains("orphaned llama-server"), "{log}");
    let mut bystander = bystander;
    assert!(
        bystander.0.try_wait().unwrap().is_none(),
        "the bystander lives"
    );
    assert_eq!(
        pg.count("SELECT count(*) FROM jobs WHERE state = 'done'"),
        2
    );
}

/// Several hosts starting at once on a new PostgreSQL database: eight
/// producers, each standing for a host (`CINECUT_TEST_HOST_ID`), run the
/// migrations together (the migrator's advisory lock takes them one at a
/// time): every one succeeds, each migration is applied once, and every
/// frame is there once.
#[test]
fn hosts_starting_at_once_on_a_new_database_all_migrate_and_enqueue() {
    let env = Env::new();
    for round in 0..3 {
        let pg = Pg::new();
        crate::util::all_succeed((0..8).map(|host| {
            let frames = env.images(&format!("r{round}-host{host}"), 3);
            let mut c = pg.cmd(&["enqueue", frames.to_str().unwrap()]);
            c.env("CINECUT_TEST_HOST_ID", format!("host-{host}"));
            c
        }));
        let migrations = std::fs::read_dir(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres"),
        )
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sql")
        })
        .count() as i64;
        assert_eq!(
            pg.count("SELECT count(*) FROM _sqlx_migrations WHERE success"),
            migrations,
            "each migration once"
        );
        assert_eq!(pg.count("SELECT count(*) FROM frames"), 24);
        assert_eq!(pg.count("SELECT count(*) FROM films"), 8);
    }
}
