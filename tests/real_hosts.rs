//! What real hosts do that a bare test machine does not: NVML answering (a
//! stand-in `libnvidia-ml.so.1`, tests/fake_nvml), schedulers that set
//! CUDA_VISIBLE_DEVICES, other SQLite users holding the write lock, many
//! processes opening one new database, a full disk, logs read through a pipe.
//!
//! The gpu-lock and lease tests here run on both backends. The others are
//! SQLite only: the VRAM pre-flight and CUDA_VISIBLE_DEVICES are the same
//! code whatever the database, and the write lock, a new database file and
//! a full disk are SQLite's (PostgreSQL's restart and clock skew are in
//! `postgres.rs`).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{
    Bystander, Env, FAKE, FakeGpu, FakeNvml, FakeServer, assert_exit, on_both, stderr, tiny_model,
    wait_for, wait_until,
};

const GPU0: &str = "GPU-00000000-1111-2222-3333-444444444444";
const GPU1: &str = "GPU-11111111-aaaa-bbbb-cccc-dddddddddddd";

fn gpu(uuid: &str, free_mib: u64) -> FakeGpu<'_> {
    FakeGpu {
        uuid,
        total_mib: 81_559,
        free_mib,
        processes: vec![],
    }
}

/// Reads a unix-ms timestamp that a shell command wrote.
fn read_ms(path: &Path) -> i64 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

/// `gpu-lock ARGS -- sh -c 'date > start; sleep S; date > end'`, not yet run.
fn marked_lock(env: &Env, nvml: &FakeNvml, tag: &str, args: &[&str], seconds: &str) -> Command {
    let marks = env.path().join(tag);
    let script = format!(
        "date +%s%3N > {0}.start; sleep {seconds}; date +%s%3N > {0}.end",
        marks.display()
    );
    let mut c = env.cmd(["gpu-lock"]);
    c.args(args).args(["--", "sh", "-c", &script]);
    nvml.apply(&mut c);
    c
}

fn marks(env: &Env, tag: &str) -> (i64, i64) {
    let base = env.path().join(tag);
    (
        read_ms(&base.with_extension("start")),
        read_ms(&base.with_extension("end")),
    )
}

/// Attempts (started, finished) of the worker process `pid`.
async fn attempt_times(env: &Env, pid: u32) -> Vec<(i64, i64)> {
    let rows = env.rows_now(&format!(
        "SELECT {} AS started, {} AS finished FROM attempts a JOIN workers w ON w.id = a.worker_id \
         WHERE w.pid = {pid} ORDER BY a.started_at",
        env.ms("a.started_at"),
        env.ms("a.finished_at"),
    ));
    rows.iter()
        .map(|r| {
            (
                r["started"].as_i64().unwrap(),
                r["finished"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// The lease a worker holds, once it holds one.
fn wait_for_lease(env: &Env, what: &str, sql: &'static str) {
    wait_until(what, Duration::from_secs(30), || env.count_now(sql) == 1);
}

on_both!(async gpu_lock_without_flags_waits_for_the_worker_on_gpu_0_then_the_worker_resumes);

async fn gpu_lock_without_flags_waits_for_the_worker_on_gpu_0_then_the_worker_resumes(env: &Env) {
    let nvml = FakeNvml::new(env);
    nvml.set(&[gpu(GPU0, 80_000)]);
    env.enqueue_images("lock", 60, &[]);
    let fake = FakeServer::start(env, &["--delay-ms", "100"]);
    let mut w = env.worker(&fake.url(), "w.log", &["--parallel", "2", "--until-empty"]);
    nvml.apply(&mut w);
    let mut w = w.spawn().unwrap();
    // The worker names its lease after the GPU's UUID, not gpu0.
    wait_for_lease(
        env,
        "the worker to lease GPU 0 by its UUID",
        "SELECT count(*) FROM gpu_leases WHERE gpu = 'GPU-00000000-1111-2222-3333-444444444444' AND purpose = 'worker'",
    );
    wait_until("a few frames described", Duration::from_secs(30), || {
        env.count_now("SELECT count(*) FROM attempts WHERE outcome = 'done'") >= 4
    });
    let asked = cinecut::db::now_ms();
    let o = marked_lock(env, &nvml, "m", &[], "1").output().unwrap();
    assert_exit(&o, 0);
    let (start, end) = marks(env, "m");
    assert!(
        wait_for(&mut w, Duration::from_secs(60)).success(),
        "{}",
        env.log("w.log")
    );

    let times = attempt_times(env, w.id()).await;
    assert_eq!(times.len(), 60, "{}", env.log("w.log"));
    assert!(
        times.iter().all(|(s, f)| *f <= start || *s >= end),
        "the worker ran no frame while the command held the GPU"
    );
    assert!(
        times.iter().any(|(_, f)| *f > asked && *f <= start),
        "the command waited for the frames in flight when it asked"
    );
    assert!(
        times.iter().any(|(s, _)| *s >= end),
        "the worker resumed after the command"
    );
    // Handed over at the next claim, not at the next renewal (10 s here).
    assert!(
        start - asked < 5_000,
        "gpu-lock got the GPU {} ms after asking",
        start - asked
    );
    let log = env.log("w.log");
    assert!(log.contains("claiming nothing more"), "{log}");
    assert!(log.contains("yielded the GPU lease"), "{log}");
}

on_both!(async two_gpus_two_workers_two_leases_and_gpu_lock_waits_only_for_its_own);

async fn two_gpus_two_workers_two_leases_and_gpu_lock_waits_only_for_its_own(env: &Env) {
    let nvml = FakeNvml::new(env);
    nvml.set(&[gpu(GPU0, 80_000), gpu(GPU1, 80_000)]);
    env.enqueue_images("two", 240, &[]);
    let fake = FakeServer::start(env, &["--delay-ms", "40"]);
    let spawn = |log: &str, index: &str| -> Child {
        let mut c = env.worker(
            &fake.url(),
            log,
            &["--parallel", "2", "--until-empty", "--gpu", index],
        );
        nvml.apply(&mut c);
        c.spawn().unwrap()
    };
    let mut a = spawn("a.log", "0");
    let mut b = spawn("b.log", "1");
    wait_until(
        "both workers to hold a lease",
        Duration::from_secs(30),
        || {
            env.count_now(
            "SELECT count(*) FROM gpu_leases WHERE purpose = 'worker' AND gpu IN
             ('GPU-00000000-1111-2222-3333-444444444444', 'GPU-11111111-aaaa-bbbb-cccc-dddddddddddd')",
        ) == 2
        },
    );
    let o = marked_lock(env, &nvml, "m", &["--gpu", "1"], "0.5")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let (start, end) = marks(env, "m");
    assert!(
        wait_for(&mut a, Duration::from_secs(60)).success(),
        "{}",
        env.log("a.log")
    );
    assert!(
        wait_for(&mut b, Duration::from_secs(60)).success(),
        "{}",
        env.log("b.log")
    );
    let on_a = attempt_times(env, a.id()).await;
    let on_b = attempt_times(env, b.id()).await;
    assert_eq!(on_a.len() + on_b.len(), 240);
    assert!(
        on_b.iter().all(|(s, f)| *f <= start || *s >= end),
        "the worker on GPU 1 yielded to gpu-lock --gpu 1"
    );
    assert!(
        on_a.iter().any(|(s, f)| *s < end && *f > start),
        "the worker on GPU 0 kept working meanwhile"
    );
    assert!(env.log("b.log").contains("yielded the GPU lease"));
    assert!(!env.log("a.log").contains("yielded the GPU lease"));
    assert_eq!(
        env.count("SELECT count(*) FROM descriptions").await,
        240,
        "nothing lost"
    );
}

/// A supervised worker (the fake server as its binary, so that the VRAM
/// check runs before each start) on the stand-in NVML.
fn supervised(env: &Env, nvml: &FakeNvml, log: &str, extra: &[&str]) -> Command {
    let (model, mmproj, _) = tiny_model();
    let mut c = env.cmd(["worker", "--until-empty", "--server-bin", FAKE]);
    c.arg("--model").arg(model).arg("--mmproj").arg(mmproj);
    c.args(extra);
    c.stdout(Stdio::null());
    c.stderr(std::fs::File::create(env.path().join(log)).unwrap());
    nvml.apply(&mut c);
    c
}

#[tokio::test]
async fn too_little_vram_waits_until_the_state_frees_memory_then_starts_the_server() {
    let env = Env::new();
    let nvml = FakeNvml::new(&env);
    let holder = Bystander::start();
    let busy = FakeGpu {
        processes: vec![(holder.id(), 79_000)],
        ..gpu(GPU0, 1_000)
    };
    nvml.set(&[busy]);
    env.enqueue_images("vram", 5, &[]);
    let mut w = supervised(
        &env,
        &nvml,
        "w.log",
        &["--vram-need", "6144", "--vram-wait", "60s"],
    )
    .spawn()
    .unwrap();
    wait_until(
        "the worker to wait for VRAM",
        Duration::from_secs(30),
        || env.log("w.log").contains("6144 MiB needed; waiting"),
    );
    assert_eq!(env.count("SELECT count(*) FROM descriptions").await, 0);
    assert_eq!(env.count_now("SELECT server_starts FROM workers"), 0);
    nvml.set(&[gpu(GPU0, 70_000)]);
    assert!(
        wait_for(&mut w, Duration::from_secs(60)).success(),
        "{}",
        env.log("w.log")
    );
    assert_eq!(env.count("SELECT count(*) FROM descriptions").await, 5);
    let log = env.log("w.log");
    assert!(log.contains("VRAM check passed"), "{log}");
}

/// Without --vram-need, a start needs what its model needs: the tiny
/// model (well under 1 MiB, a KV cache of 2 MiB for 4,096 tokens) needs
/// 514 MiB and starts on a GPU with 2,000 MiB free, where the old
/// fixed 6,144 MiB (given as --vram-need here) waits and fails.
#[test]
fn a_small_model_starts_where_a_fixed_6144_mib_would_wait() {
    let env = Env::new();
    let nvml = FakeNvml::new(&env);
    nvml.set(&[gpu(GPU0, 2_000)]);
    env.enqueue_images("small", 3, &[]);
    let o = supervised(
        &env,
        &nvml,
        "fixed.log",
        &["--vram-need", "6144", "--vram-wait", "1s"],
    )
    .status()
    .unwrap();
    assert_eq!(o.code(), Some(1), "{}", env.log("fixed.log"));
    assert!(
        env.log("fixed.log")
            .contains("2000 MiB free, 6144 MiB needed (--vram-need)"),
        "{}",
        env.log("fixed.log")
    );
    let o = supervised(&env, &nvml, "computed.log", &["--vram-wait", "1s"])
        .status()
        .unwrap();
    let log = env.log("computed.log");
    assert!(o.success(), "{log}");
    assert!(
        log.contains(
            "VRAM need 514 MiB: model 0 MiB + mmproj 0 MiB + KV cache 2 MiB (4096 tokens, f16)"
        ),
        "{log}"
    );
    assert!(log.contains("VRAM check passed"), "{log}");
    assert_eq!(env.count_now("SELECT count(*) FROM descriptions"), 3);
}

/// `--vram-check off` starts the server without asking NVML: on a GPU
/// with 100 MiB free, where the check (`auto`) waits and fails, the worker
/// describes every frame and says the check is off.
#[test]
fn vram_check_off_starts_the_server_whatever_nvml_says() {
    let env = Env::new();
    let nvml = FakeNvml::new(&env);
    nvml.set(&[gpu(GPU0, 100)]);
    env.enqueue_images("off", 3, &[]);
    let flags = ["--vram-need", "6144", "--vram-wait", "1s"];
    let o = supervised(&env, &nvml, "auto.log", &flags)
        .status()
        .unwrap();
    assert_eq!(o.code(), Some(1), "{}", env.log("auto.log"));
    assert_eq!(env.count_now("SELECT count(*) FROM descriptions"), 0);
    let off = [&flags[..], &["--vram-check", "off"]].concat();
    let o = supervised(&env, &nvml, "off.log", &off).status().unwrap();
    let log = env.log("off.log");
    assert!(o.success(), "{log}");
    assert!(log.contains("VRAM check off (--vram-check off)"), "{log}");
    assert!(!log.contains("MiB free"), "NVML not asked: {log}");
    assert_eq!(env.count_now("SELECT count(*) FROM descriptions"), 3);
}

/// A GGUF header alone (no tensors): architecture `llama` and the given
/// u32 keys, as a large model's header states its shape.
fn write_gguf_header(path: &Path, keys: &[(&str, u32)]) {
    let mut b: Vec<u8> = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend((keys.len() as u64 + 1).to_le_bytes());
    let key = |b: &mut Vec<u8>, k: &str| {
        b.extend((k.len() as u64).to_le_bytes());
        b.extend(k.as_bytes());
    };
    key(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes());
    key(&mut b, "llama");
    for (k, v) in keys {
        key(&mut b, k);
        b.extend(4u32.to_le_bytes());
        b.extend(v.to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

/// A model whose KV cache alone is 10 GiB (80 layers, 8192 wide, no
/// grouped-query attention, 4,096 tokens) waits on a GPU with 8,000 MiB
/// free, where the old fixed 6,144 MiB would have started it, and fails
/// after --vram-wait saying the figure and its parts.
#[test]
fn a_large_model_waits_where_a_fixed_6144_mib_would_start() {
    let env = Env::new();
    let nvml = FakeNvml::new(&env);
    nvml.set(&[gpu(GPU0, 8_000)]);
    env.enqueue_images("large", 2, &[]);
    let big = env.path().join("big.gguf");
    write_gguf_header(
        &big,
        &[
            ("llama.block_count", 80),
            ("llama.embedding_length", 8192),
            ("llama.attention.head_count", 64),
            ("llama.attention.head_count_kv", 64),
        ],
    );
    let (_, mmproj, _) = tiny_model();
    let mut c = env.cmd([
        "worker",
        "--until-empty",
        "--server-bin",
        FAKE,
        "--vram-wait",
        "1s",
    ]);
    c.arg("--model").arg(&big).arg("--mmproj").arg(mmproj);
    c.stdout(Stdio::null());
    c.stderr(std::fs::File::create(env.path().join("w.log")).unwrap());
    nvml.apply(&mut c);
    let o = c.status().unwrap();
    let log = env.log("w.log");
    assert_eq!(o.code(), Some(1), "{log}");
    // (10,240 MiB + the files) × 1.1 + 512.
    assert!(
        log.contains("VRAM need 11776 MiB: model 0 MiB + mmproj 0 MiB + KV cache 10240 MiB"),
        "{log}"
    );
    assert!(
        log.contains("8000 MiB free, 11776 MiB needed (--vram-need)"),
        "{log}"
    );
    assert_eq!(env.count_now("SELECT server_starts FROM workers"), 0);
    assert_eq!(
        env.count_now("SELECT count(*) FROM jobs WHERE state = 'queued'"),
        2,
        "nothing lost"
    );
}

#[tokio::test]
async fn vram_that_never_frees_fails_naming_the_processes_that_hold_it() {
    let env = Env::new();
    let nvml = FakeNvml::new(&env);
    let holder = Bystander::start();
    nvml.set(&[FakeGpu {
        processes: vec![(holder.id(), 79_000)],
        ..gpu(GPU0, 500)
    }]);
    env.enqueue_images("vram", 3, &[]);
    let o = supervised(&env, &nvml, "w.log", &["--vram-wait", "1s"])
        .status()
        .unwrap();
    assert_eq!(o.code(), Some(1));
    let log = env.log("w.log");
    let holder_line = format!("pid {} (sleep 600) 79000 MiB", holder.id());
    assert!(log.contains("500 MiB free, 514 MiB needed"), "{log}");
    assert!(log.contains(&holder_line), "{log}");
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'queued'")
            .await,
        3,
        "nothing failed, nothing left running"
    );
}

#[tokio::test]
async fn vram_check_required_passes_where_nvml_answers() {
    let env = Env::new();
    let nvml = FakeNvml::new(&env);
    nvml.set(&[gpu(GPU0, 70_000)]);
    env.enqueue_images("req", 4, &[]);
    let o = supervised(&env, &nvml, "w.log", &["--vram-check", "required"])
        .status()
        .unwrap();
    assert!(o.success(), "{}", env.log("w.log"));
    assert_eq!(env.count("SELECT count(*) FROM descriptions").await, 4);
    assert!(env.log("w.log").contains("VRAM check passed"));
}

/// Pids of the fake servers whose environment holds `needle`.
fn server_env(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', "\n"))
        .unwrap_or_default()
}

#[tokio::test]
async fn an_inherited_cuda_visible_devices_uuid_leads_to_that_gpus_lease() {
    let env = Env::new();
    let nvml = FakeNvml::new(&env);
    nvml.set(&[gpu(GPU0, 70_000), gpu(GPU1, 70_000)]);
    env.enqueue_images("slurm", 30, &[]);
    let tag = format!("cvd-{}", std::process::id());
    let mut c = supervised(
        &env,
        &nvml,
        "w.log",
        &[
            "--server-arg=--delay-ms",
            "--server-arg=100",
            "--server-arg=--record",
            &format!("--server-arg={}", env.path().join(&tag).display()),
        ],
    );
    // As Slurm or a container runtime would set it (a UUID prefix, as CUDA allows).
    c.env("CUDA_VISIBLE_DEVICES", "GPU-11111111-aaaa");
    let mut w = c.spawn().unwrap();
    wait_for_lease(
        &env,
        "the worker to lease GPU 1",
        "SELECT count(*) FROM gpu_leases WHERE gpu = 'GPU-11111111-aaaa-bbbb-cccc-dddddddddddd' AND server_pid IS NOT NULL",
    );
    let server: i32 = {
        let pool = env.pool().await;
        let pid: i64 =
            sqlx::query_scalar("SELECT server_pid FROM gpu_leases WHERE server_pid IS NOT NULL")
                .fetch_one(&pool)
                .await
                .unwrap();
        pid as i32
    };
    let environ = server_env(server);
    assert!(
        wait_for(&mut w, Duration::from_secs(60)).success(),
        "{}",
        env.log("w.log")
    );
    assert!(
        environ.contains("CUDA_VISIBLE_DEVICES=GPU-11111111-aaaa\n"),
        "the inherited value is kept: {environ}"
    );
    assert!(
        environ.contains("CUDA_DEVICE_ORDER=PCI_BUS_ID\n"),
        "{environ}"
    );
    assert_eq!(env.count("SELECT count(*) FROM descriptions").await, 30);
}

on_both!(gpu_lists_each_gpu_with_its_lease_and_holder);

fn gpu_lists_each_gpu_with_its_lease_and_holder(env: &Env) {
    let nvml = FakeNvml::new(env);
    nvml.set(&[gpu(GPU0, 1_234), gpu(GPU1, 5_678)]);
    let mut lock = marked_lock(env, &nvml, "m", &["--gpu", "1"], "30")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("gpu-lock to hold GPU 1", Duration::from_secs(30), || {
        env.path().join("m.start").exists()
    });
    let mut c = env.cmd(["gpu"]);
    nvml.apply(&mut c);
    let o = c.output().unwrap();
    assert_exit(&o, 0);
    let out = crate::util::stdout(&o);
    assert!(
        out.contains(&format!(
            "GPU 0 NVIDIA Fake GPU ({GPU0}): 1234 MiB free of 81559 MiB"
        )),
        "{out}"
    );
    assert!(out.contains(&format!("lease {GPU0}: free")), "{out}");
    let held = format!("lease {GPU1}: held by gpu-lock-");
    assert!(out.contains(&held), "{out}");
    assert!(
        out.contains(&format!("(gpu-lock, pid {}", lock.id())),
        "{out}"
    );
    let mut c = env.cmd(["gpu", "--json"]);
    nvml.apply(&mut c);
    let o = c.output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["devices"][1]["lease"], GPU1);
    assert_eq!(v["devices"][1]["holder"]["purpose"], "gpu-lock");
    assert!(v["devices"][0]["holder"].is_null());
    crate::util::signal(&lock, nix::sys::signal::Signal::SIGTERM);
    lock.wait().unwrap();
}

/// `sqlite3 DB` holding `BEGIN IMMEDIATE` for `seconds`, as a person in the
/// shell would; returned once the lock is held. Dropped, it ends the shell
/// and its `sleep` (their own process group).
struct WriteLock(Child);

impl WriteLock {
    fn hold(env: &Env, seconds: f64) -> WriteLock {
        let flag = env.path().join(format!("locked-{seconds}"));
        let script = format!(
            // `.timeout`: the shell waits for a write of the worker's to end
            // before it takes the lock, as a person's would (sqlite3 does
            // not wait by default, and its BEGIN then fails).
            ".timeout 30000\nBEGIN IMMEDIATE;\nUPDATE films SET priority = priority;\n.shell touch {}\n.shell sleep {seconds}\nCOMMIT;\n",
            flag.display()
        );
        let mut child = Command::new("sqlite3")
            .arg(env.db())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("sqlite3 (install it with scripts/setup.sh)");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        wait_until(
            "sqlite3 to hold the write lock",
            Duration::from_secs(30),
            || flag.exists(),
        );
        WriteLock(child)
    }

    /// Whether the shell still runs (and so still holds the lock).
    fn held(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }

    /// Waits for the shell to commit and end by itself.
    fn wait(mut self) -> bool {
        self.0.wait().unwrap().success()
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_worker_outlives_another_connection_holding_the_write_lock() {
    let env = Env::new();
    env.enqueue_images("co", 100, &[]);
    let fake = FakeServer::start(&env, &["--delay-ms", "40"]);
    let mut w = env.worker(&fake.url(), "w.log", &["--parallel", "2", "--until-empty"]);
    w.env("CINECUT_BUSY_TIMEOUT", "1s");
    let mut w = w.spawn().unwrap();
    wait_until("a few frames described", Duration::from_secs(30), || {
        env.count_now("SELECT count(*) FROM attempts WHERE outcome = 'done'") >= 6
    });
    // Twice the worker's busy_timeout.
    let shell = WriteLock::hold(&env, 2.0);
    let held_done = env.count_now("SELECT count(*) FROM jobs WHERE state = 'done'");
    assert!(shell.wait());
    assert!(
        wait_for(&mut w, Duration::from_secs(60)).success(),
        "{}",
        env.log("w.log")
    );
    assert!(held_done < 100, "the lock came in the middle of the run");
    assert_eq!(env.count("SELECT count(*) FROM descriptions").await, 100);
    assert_eq!(
        env.count("SELECT count(*) FROM attempts WHERE outcome = 'done'")
            .await,
        100,
        "every frame described exactly once"
    );
    assert_eq!(env.count("SELECT count(*) FROM attempts").await, 100);
    let log = env.log("w.log");
    assert!(log.contains("write-locked by another connection"), "{log}");
    assert!(log.contains("write lock was released after"), "{log}");
}

#[test]
fn enqueue_waits_for_the_write_lock_and_gives_up_after_lock_wait() {
    let env = Env::new();
    env.make_db();
    let dir = env.images("a", 5);
    let shell = WriteLock::hold(&env, 1.5);
    let o = env
        .cmd(["enqueue"])
        .arg(&dir)
        .env("CINECUT_BUSY_TIMEOUT", "500ms")
        .output()
        .unwrap();
    assert!(shell.wait());
    assert_exit(&o, 0);
    assert!(
        stderr(&o).contains("write-locked by another connection"),
        "{}",
        stderr(&o)
    );
    assert_eq!(env.count_now("SELECT count(*) FROM frames"), 5);

    let dir = env.images("b", 5);
    let shell = WriteLock::hold(&env, 4.0);
    let o = env
        .cmd(["enqueue", "--lock-wait", "1s"])
        .arg(&dir)
        .env("CINECUT_BUSY_TIMEOUT", "300ms")
        .output()
        .unwrap();
    assert_exit(&o, 1);
    let err = stderr(&o);
    let want = format!(
        "database {} is locked by another connection (waited 1 s, --lock-wait); `fuser -v {0}`",
        env.db().display()
    );
    assert!(err.contains(&want), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(
        err.matches("database is locked").count(),
        0,
        "no driver text: {err}"
    );
    assert!(shell.wait());
    assert_eq!(
        env.count_now("SELECT count(*) FROM frames"),
        5,
        "nothing of b"
    );
}

/// Processes that open a new database at the same moment (a producer and
/// workers started together) all succeed: opening (the switch to WAL) and
/// migrating run one process at a time. Regression: the WAL switch on
/// connect was unguarded and failed about one run in six.
#[test]
fn processes_opening_a_new_database_at_once_all_succeed() {
    let env = Env::new();
    let frames = env.images("one", 1);
    for round in 0..50 {
        let db = env.path().join(format!("fresh-{round}.db"));
        crate::util::all_succeed((0..8).map(|_| {
            let mut c = Command::new(crate::util::BIN);
            c.arg("--db")
                .arg(&db)
                .arg("enqueue")
                .arg(&frames)
                .env_remove("CINECUT_DB");
            c
        }));
    }
}

/// A small tmpfs the test mounts (tests run as root here), unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "the disk-full test mounts a tmpfs and needs root; run the tests as root (CI does)"
        );
        let dir = tempfile::Builder::new()
            .prefix("cinecut-small-")
            .tempdir()
            .unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount -t tmpfs failed");
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills what is free but `keep` bytes with a file.
    fn fill(&self, keep: u64) {
        let stat = nix::sys::statvfs::statvfs(self.path()).unwrap();
        let free = stat.blocks_available() * stat.fragment_size();
        let file = std::fs::File::create(self.path().join("filler")).unwrap();
        file.set_len(0).unwrap();
        use std::io::Write;
        let mut w = std::io::BufWriter::new(file);
        let chunk = vec![7u8; 4096];
        let mut left = free.saturating_sub(keep);
        while left > 0 {
            let n = left.min(4096) as usize;
            if w.write_all(&chunk[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        let _ = w.flush();
    }

    fn unfill(&self) {
        std::fs::remove_file(self.path().join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn integrity(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

fn count(db: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn a_full_disk_is_a_clear_error_and_loses_nothing() {
    let env = Env::new();
    let disk = SmallDisk::mount("64m");
    let db = disk.path().join("cinecut.db");
    let want = format!(
        "disk full while writing {}: free space and run the same command again (nothing was lost)",
        db.display()
    );
    // Enqueue: frames on the ordinary disk, the database on the small one.
    let frames = env.images("many", 3000);
    let run = |args: &[&str]| {
        Command::new(crate::util::BIN)
            .arg("--db")
            .arg(&db)
            .args(args)
            .env_remove("CINECUT_DB")
            .output()
            .unwrap()
    };
    // The database made first (a command that writes makes it).
    assert_exit(&run(&["gpu-lock", "--", "true"]), 0);
    disk.fill(400 * 1024);
    let o = run(&["enqueue", frames.to_str().unwrap(), "--chunk-size", "500"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
    assert_eq!(integrity(&db), "ok");
    let (frames_in, jobs_in) = (
        count(&db, "SELECT count(*) FROM frames"),
        count(&db, "SELECT count(*) FROM jobs"),
    );
    assert_eq!(frames_in, jobs_in, "every frame has its job");
    assert_eq!(frames_in % 500, 0, "whole chunks only");
    disk.unfill();
    let o = run(&["enqueue", frames.to_str().unwrap(), "--chunk-size", "500"]);
    assert_exit(&o, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM frames"), 3000);
    assert_eq!(count(&db, "SELECT count(*) FROM jobs"), 3000);

    // The worker: describes until the disk is full, then stops with the
    // same message; what it wrote is whole.
    let fake = FakeServer::start(&env, &[]);
    disk.fill(256 * 1024);
    let o = run(&[
        "worker",
        "--server-url",
        &fake.url(),
        "--until-empty",
        "--parallel",
        "8",
    ]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
    assert_eq!(integrity(&db), "ok");
    let described = count(&db, "SELECT count(*) FROM descriptions");
    assert!(described < 3000, "the disk filled before the end");
    assert_eq!(
        described,
        count(&db, "SELECT count(*) FROM jobs WHERE state = 'done'"),
        "a description for each done job and no other"
    );
    assert_eq!(
        described,
        count(&db, "SELECT count(*) FROM attempts WHERE outcome = 'done'")
    );
    disk.unfill();
    let o = run(&[
        "worker",
        "--server-url",
        &fake.url(),
        "--until-empty",
        "--parallel",
        "8",
    ]);
    assert_exit(&o, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM descriptions"), 3000);
    assert_eq!(
        count(&db, "SELECT count(*) FROM attempts WHERE outcome = 'done'"),
        3000
    );
}

#[test]
fn logs_through_a_pipe_carry_no_escape_sequences() {
    let env = Env::new();
    let dir = env.frames("plain", 2);
    let o = env
        .cmd(["enqueue"])
        .arg(&dir)
        .arg(env.path().join("missing.png"))
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("WARN") || err.contains("ERROR") || err.contains("INFO"),
        "{err}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "escape sequences in a pipe: {err:?}"
    );
}

/// Signal handlers are in place before the database opens: a worker stopped
/// while it waits to open (another process holds the open lock) exits 130,
/// not by the signal's default action.
#[test]
fn sigterm_while_the_database_opens_stops_the_worker_cleanly() {
    let env = Env::new();
    let mut lock_path = env.db().into_os_string();
    lock_path.push(".migrate-lock");
    // --no-fork: the lock's holder is the process the test kills.
    // Killed when dropped, also when the test fails.
    let _holder = Bystander(
        Command::new("flock")
            .arg("--no-fork")
            .arg(&lock_path)
            .args(["sleep", "60"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("flock (util-linux)"),
    );
    wait_until(
        "flock to hold the open lock",
        Duration::from_secs(10),
        || Path::new(&lock_path).exists(),
    );
    let mut w = env
        .worker("http://127.0.0.1:9", "w.log", &["--until-empty"])
        .spawn()
        .unwrap();
    // SIGTERM (15) caught: the handler is in place, and the worker, which
    // has logged nothing, is still opening the database.
    let catches_sigterm = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                let mask = s
                    .lines()
                    .find_map(|l| l.strip_prefix("SigCgt:"))?
                    .trim()
                    .to_string();
                u64::from_str_radix(&mask, 16).ok()
            })
            .is_some_and(|mask| mask & (1 << 14) != 0)
    };
    wait_until(
        "the worker to catch SIGTERM",
        Duration::from_secs(30),
        || catches_sigterm(w.id()),
    );
    assert!(env.log("w.log").is_empty(), "{}", env.log("w.log"));
    crate::util::signal(&w, nix::sys::signal::Signal::SIGTERM);
    let status = wait_for(&mut w, Duration::from_secs(20));
    assert_eq!(status.code(), Some(130), "{}", env.log("w.log"));
}

/// Reading commands do not wait for another connection's write lock at all.
/// Regression: `PRAGMA optimize` on every connection's close waited out
/// busy_timeout (30 s) per connection while a sqlite3 shell held a
/// transaction, so `status` took a minute.
#[test]
fn status_answers_while_another_connection_holds_the_write_lock() {
    let env = Env::new();
    env.enqueue_images("held", 3, &[]);
    let mut shell = WriteLock::hold(&env, 60.0);
    let o = env.run(["status"]);
    assert_exit(&o, 0);
    assert!(crate::util::stdout(&o).contains("held"));
    let o = env.run(["results", "--format", "jsonl"]);
    assert_exit(&o, 0);
    assert!(
        shell.held(),
        "both answered while the shell still held the lock"
    );
    assert!(!stderr(&o).contains("slow statement"), "{}", stderr(&o));
}

/// `--lock-wait` bounds the whole wait, busy_timeout (30 s by default)
/// included: the command gives up while the lock is still held.
#[test]
fn lock_wait_shorter_than_busy_timeout_is_honoured() {
    let env = Env::new();
    env.make_db();
    let dir = env.images("c", 2);
    let mut shell = WriteLock::hold(&env, 60.0);
    let o = env
        .cmd(["enqueue", "--lock-wait", "1s"])
        .arg(&dir)
        .env_remove("CINECUT_BUSY_TIMEOUT")
        .output()
        .unwrap();
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("is locked by another connection (waited 1 s"),
        "{}",
        stderr(&o)
    );
    assert!(shell.held(), "gave up while the lock was held");
}

/// `retry` and `cancel` under another connection's write lock wait
/// `CINECUT_LOCK_WAIT` (the env of `--lock-wait`), then exit 1 naming the
/// file, having changed nothing; once the lock is gone they do their work.
#[test]
fn retry_and_cancel_wait_lock_wait_from_the_env_then_change_nothing() {
    let env = Env::new();
    env.enqueue_images("held", 3, &[]);
    env.execute_now("UPDATE jobs SET state = 'failed', last_error = 'bad' WHERE id = 1");
    let shell = WriteLock::hold(&env, 600.0);
    for args in [&["retry", "--failed"][..], &["cancel", "--film", "held"]] {
        let o = env
            .cmd(args)
            .env("CINECUT_LOCK_WAIT", "1s")
            .env("CINECUT_BUSY_TIMEOUT", "200ms")
            .output()
            .unwrap();
        assert_exit(&o, 1);
        let err = stderr(&o);
        assert!(
            err.contains(&format!(
                "database {} is locked by another connection (waited 1 s, --lock-wait)",
                env.db().display()
            )) && err.contains("nothing was changed"),
            "{args:?}: {err}"
        );
    }
    drop(shell);
    assert_eq!(
        env.count_now("SELECT count(*) FROM jobs WHERE state = 'failed'"),
        1,
        "nothing changed"
    );
    assert_exit(&env.run(["retry", "--failed"]), 0);
    assert_eq!(
        env.count_now("SELECT count(*) FROM jobs WHERE state = 'queued'"),
        3
    );
    assert_exit(&env.run(["cancel", "--film", "held"]), 0);
    assert_eq!(
        env.count_now("SELECT count(*) FROM jobs WHERE state = 'cancelled'"),
        3
    );
}

/// A database on a read-only file system: `enqueue` exits 1 with the
/// read-only message naming the file (it said "cannot open database …
/// unable to open database file" before: SQLite cannot make the -shm file
/// there), and the database is as it was.
#[test]
fn a_read_only_database_is_a_clear_error() {
    let env = Env::new();
    let disk = SmallDisk::mount("16m");
    let db = disk.path().join("ro.db");
    let frames = env.images("ro", 2);
    let o = env
        .cmd(["enqueue"])
        .arg(&frames)
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let status = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(disk.path())
        .status()
        .unwrap();
    assert!(status.success(), "remount read-only");
    let more = env.images("more", 2);
    let o = env
        .cmd(["enqueue"])
        .arg(&more)
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains(&format!("database {} is read-only", db.display()))
            && err.contains("fix the permissions or pass another --db"),
        "{err}"
    );
    // (Read back once writable again: SQLite opens a WAL database only
    // where it can make its -shm file.)
    let status = Command::new("mount")
        .args(["-o", "remount,rw"])
        .arg(disk.path())
        .status()
        .unwrap();
    assert!(status.success(), "remount read-write");
    assert_eq!(count(&db, "SELECT count(*) FROM frames"), 2, "as it was");
}
