//! The llama-server supervisor: start, wait until healthy, notice a crash,
//! stop. One [`LlamaServer`] is one child process.
//!
//! Invariants: the child runs in its own process group (stopping it stops
//! everything it started); it binds 127.0.0.1 on a free port with a random
//! per-run API key passed through a 0600 file (never on the command line or in
//! logs); its stdout and stderr are always drained into a bounded ring of
//! recent lines (and a log file when asked), so it never blocks on a full
//! pipe; with a parent-death signal it dies with the worker's runtime thread.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// Lines of server output kept for error messages.
const RING_LINES: usize = 200;
/// Lines quoted in an error.
const QUOTED_LINES: usize = 12;

/// How to start llama-server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bin: PathBuf,
    pub model: PathBuf,
    pub mmproj: PathBuf,
    /// `-c`: the context all slots share (each gets `ctx_size / parallel`).
    pub ctx_size: u32,
    pub gpu_layers: Option<String>,
    pub parallel: u16,
    pub extra_args: Vec<String>,
    pub log_file: Option<PathBuf>,
    /// Counted from the last line the server printed.
    pub load_timeout: Duration,
    /// CUDA_VISIBLE_DEVICES for the server; `None` keeps the inherited one.
    pub cuda_visible_devices: Option<String>,
}

/// Why the server is not serving.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServerError {
    #[error(
        "llama-server not found at {0}; install it with scripts/setup.sh, or pass --server-bin or LLAMA_SERVER"
    )]
    NotFound(PathBuf),
    #[error("cannot start llama-server {bin}: {reason}")]
    Spawn { bin: PathBuf, reason: String },
    /// Exit before ready: the model, mmproj or flags are wrong. Not retried.
    #[error("llama-server exited during load ({status}); its last lines:\n{lines}")]
    ExitedDuringLoad { status: String, lines: String },
    /// Killed by a signal while loading (OOM killer, an operator): a crash,
    /// not a configuration error.
    #[error("llama-server was killed during load ({status}); its last lines:\n{lines}")]
    KilledDuringLoad { status: String, lines: String },
    #[error(
        "llama-server printed nothing for {waited_s} s while loading (--load-timeout); its last lines:\n{lines}"
    )]
    LoadTimeout { waited_s: u64, lines: String },
}

#[derive(Debug, Default)]
struct Output {
    lines: VecDeque<String>,
    last_line_at: Option<Instant>,
}

/// A running llama-server child.
pub struct LlamaServer {
    child: Child,
    pub pid: i64,
    pub port: u16,
    pub api_key: String,
    pub cmdline: String,
    output: Arc<Mutex<Output>>,
    _key_dir: tempfile::TempDir,
}

impl LlamaServer {
    /// Spawns the server; it is not ready yet (see [`Self::wait_until_healthy`]).
    /// One long function on purpose: it builds one argument vector, flag by
    /// flag, and reads best as that list.
    pub fn spawn(cfg: &ServerConfig) -> Result<LlamaServer, ServerError> {
        if !cfg.bin.is_file() {
            return Err(ServerError::NotFound(cfg.bin.clone()));
        }
        let port = free_port().map_err(|e| ServerError::Spawn {
            bin: cfg.bin.clone(),
            reason: e.to_string(),
        })?;
        let api_key = format!("{:032x}", uuid::Uuid::new_v4().as_u128());
        let key_dir = tempfile::Builder::new()
            .prefix("cinecut-key-")
            .tempdir()
            .map_err(|e| ServerError::Spawn {
                bin: cfg.bin.clone(),
                reason: e.to_string(),
            })?;
        let key_file = key_dir.path().join("api-key");
        write_private(&key_file, &api_key).map_err(|e| ServerError::Spawn {
            bin: cfg.bin.clone(),
            reason: e.to_string(),
        })?;

        let mut cmd = Command::new(&cfg.bin);
        cmd.arg("-m")
            .arg(&cfg.model)
            .arg("--mmproj")
            .arg(&cfg.mmproj);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
        cmd.arg("--api-key-file").arg(&key_file);
        cmd.args(["-np", &cfg.parallel.to_string()]);
        cmd.args(["-c", &cfg.ctx_size.to_string()]);
        if let Some(l) = &cfg.gpu_layers {
            cmd.args(["-ngl", l]);
        }
        cmd.args(&cfg.extra_args);
        // NVML numbers GPUs by PCI bus, CUDA by default fastest first: with
        // this, an index means the same GPU to the lease and to the server.
        cmd.env("CUDA_DEVICE_ORDER", "PCI_BUS_ID");
        if let Some(devices) = &cfg.cuda_visible_devices {
            cmd.env("CUDA_VISIBLE_DEVICES", devices);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.process_group(0).kill_on_drop(true);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| ServerError::Spawn {
            bin: cfg.bin.clone(),
            reason: e.to_string(),
        })?;
        let pid = i64::from(child.id().unwrap_or_default());
        let output = Arc::new(Mutex::new(Output {
            last_line_at: Some(Instant::now()),
            ..Output::default()
        }));
        let log = cfg.log_file.as_ref().and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map(|f| Arc::new(Mutex::new(f)))
                .ok()
        });
        if let Some(out) = child.stdout.take() {
            tokio::spawn(drain(out, output.clone(), log.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(drain(err, output.clone(), log));
        }
        let cmdline = crate::process::command_line(cmd.as_std());
        tracing::info!(pid, port, "started llama-server");
        Ok(LlamaServer {
            child,
            pid,
            port,
            api_key,
            cmdline,
            output,
            _key_dir: key_dir,
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Polls `/health` until 200. An exit meanwhile is noticed at once from
    /// the child's status; silence longer than `load_timeout` kills it.
    pub async fn wait_until_healthy(&mut self, load_timeout: Duration) -> Result<(), ServerError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("HTTP client");
        let url = format!("{}/health", self.base_url());
        loop {
            if let Some(status) = self.exited() {
                // Let the drain tasks take the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let (status_text, lines) = (status.to_string(), self.last_lines());
                return Err(
                    if std::os::unix::process::ExitStatusExt::signal(&status).is_some() {
                        ServerError::KilledDuringLoad {
                            status: status_text,
                            lines,
                        }
                    } else {
                        ServerError::ExitedDuringLoad {
                            status: status_text,
                            lines,
                        }
                    },
                );
            }
            if let Ok(resp) = http.get(&url).send().await
                && resp.status().is_success()
            {
                tracing::info!(pid = self.pid, "llama-server is ready");
                return Ok(());
            }
            let silent = self
                .output
                .lock()
                .expect("output lock")
                .last_line_at
                .map_or(Duration::ZERO, |t| t.elapsed());
            if silent > load_timeout {
                self.stop().await;
                return Err(ServerError::LoadTimeout {
                    waited_s: load_timeout.as_secs(),
                    lines: self.last_lines(),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The exit status if the child has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The server's last lines, for error messages.
    pub fn last_lines(&self) -> String {
        let out = self.output.lock().expect("output lock");
        let skip = out.lines.len().saturating_sub(QUOTED_LINES);
        out.lines
            .iter()
            .skip(skip)
            .map(|l| format!("  | {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGTERM to the group, up to 10 s, then SIGKILL; reaps the child.
    pub async fn stop(&mut self) {
        stop_group(&mut self.child, self.pid, Duration::from_secs(10)).await;
    }
}

async fn stop_group(child: &mut Child, pid: i64, grace: Duration) {
    let pgid = Pid::from_raw(pid as i32);
    if child.try_wait().ok().flatten().is_none() {
        let _ = killpg(pgid, Signal::SIGTERM);
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            tracing::warn!(
                pid,
                "llama-server ignored SIGTERM for {} s; killing it",
                grace.as_secs()
            );
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait().await;
        }
    }
    // Anything the server left in its group goes too.
    let _ = killpg(pgid, Signal::SIGKILL);
    tracing::info!(pid, "llama-server stopped");
}

async fn drain<R: AsyncRead + Unpin>(
    stream: R,
    output: Arc<Mutex<Output>>,
    log: Option<Arc<Mutex<std::fs::File>>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(log) = &log {
            use std::io::Write;
            let _ = writeln!(log.lock().expect("log lock"), "{line}");
        }
        let mut out = output.lock().expect("output lock");
        if out.lines.len() == RING_LINES {
            out.lines.pop_front();
        }
        out.lines.push_back(line);
        out.last_line_at = Some(Instant::now());
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// Kills an orphaned llama-server left by a dead worker, if the recorded pid
/// still runs the recorded command line (pid reuse is not murder). Returns
/// whether one was killed.
/// [`reap_orphan`] for the server a lease row records, off the runtime
/// (it waits for the process to go).
pub async fn reap_recorded(orphan: cinecut_types::OrphanServer) -> bool {
    tokio::task::spawn_blocking(move || {
        reap_orphan(orphan.pid, orphan.started_at, orphan.cmdline.as_deref())
    })
    .await
    .expect("reaping thread")
}

pub fn reap_orphan(pid: i64, started_at: Option<i64>, cmdline: Option<&str>) -> bool {
    if !crate::process::is_alive(pid, started_at) {
        return false;
    }
    let now = crate::process::cmdline(pid);
    if cmdline.is_none() || now.as_deref() != cmdline {
        tracing::warn!(
            pid,
            "the recorded llama-server pid now runs something else; leaving it alone"
        );
        return false;
    }
    tracing::warn!(pid, "killing the orphaned llama-server of a dead worker");
    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    // Its memory is free only once it is gone: wait (briefly; SIGKILL is
    // not refused) before a new server starts and checks VRAM.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while crate::process::is_alive(pid, started_at) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Finds the llama-server binary: the flag, else `LLAMA_SERVER`, else `PATH`.
pub fn find_binary(flag: Option<&Path>) -> Result<PathBuf, ServerError> {
    if let Some(p) = flag {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("LLAMA_SERVER").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("llama-server"))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| ServerError::NotFound(PathBuf::from("llama-server (not on PATH)")))
}
