//! A real headless Chromium, driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: commands in on fd 3, replies and events out
//! on fd 4, each a JSON text ending in a NUL byte). No port, no WebSocket
//! client: two pipes and serde_json.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use serde_json::{Value, json};

/// Debian's `chromium`, which scripts/setup.sh installs.
fn chromium() -> &'static str {
    let found = Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "chromium not found; install it with `bash scripts/setup.sh --tests` (Debian package chromium)"
    );
    "chromium"
}

/// A browser with one page open, its events recorded.
pub struct Browser {
    child: Child,
    to: std::fs::File,
    from: Receiver<Value>,
    next_id: u64,
    /// Every event received so far (`method` and `params`).
    pub events: Vec<Value>,
    session: String,
    _profile: tempfile::TempDir,
}

/// `fd` duplicated to a number of 10 or more, close-on-exec: out of the
/// way of the 3 and 4 the child gets.
fn high(fd: OwnedFd) -> OwnedFd {
    let n = fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(10)).unwrap();
    // SAFETY: fcntl just returned this new descriptor; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(n) }
}

impl Browser {
    /// Starts Chromium headless with a profile of its own, a 1400×1000
    /// window, and attaches to a blank page with its network and page
    /// events on.
    pub fn launch() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let (their_in, our_out) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let (our_in, their_out) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let (their_in, their_out) = (high(their_in), high(their_out));
        let (r, w) = (their_in.as_raw_fd(), their_out.as_raw_fd());
        let mut cmd = Command::new(chromium());
        cmd.args([
            "--headless",
            // Root (as in CI) has no user namespace sandbox to give.
            "--no-sandbox",
            "--disable-gpu",
            "--remote-debugging-pipe",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(profile.path().join("chromium.log")).unwrap());
        // SAFETY: dup2 is async-signal-safe; the sources are ≥ 10, so
        // neither target overwrites the other's source, and dup2 clears
        // close-on-exec on the copies.
        unsafe {
            cmd.pre_exec(move || {
                if nix::libc::dup2(r, 3) < 0 || nix::libc::dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop((their_in, their_out));
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(std::fs::File::from(our_in));
            let mut message = Vec::new();
            while reader.read_until(0, &mut message).is_ok_and(|n| n > 0) {
                message.pop_if(|b| *b == 0);
                if let Ok(v) = serde_json::from_slice(&message)
                    && tx.send(v).is_err()
                {
                    return;
                }
                message.clear();
            }
        });
        let mut b = Browser {
            child,
            to: std::fs::File::from(our_out),
            from: rx,
            next_id: 0,
            events: Vec::new(),
            session: String::new(),
            _profile: profile,
        };
        let target = b.call_browser("Target.createTarget", json!({"url": "about:blank"}));
        let target = target["targetId"].as_str().unwrap().to_string();
        let attached = b.call_browser(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        b.call("Page.enable", json!({}));
        b.call("Network.enable", json!({}));
        b.call("Runtime.enable", json!({}));
        b
    }

    fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let m = self.next_message(deadline, method);
            if m["id"] == json!(id) {
                if let Some(e) = m.get("error") {
                    panic!("{method} failed: {e}");
                }
                return m["result"].clone();
            }
            if m.get("method").is_some() {
                self.events.push(m);
            }
        }
    }

    fn next_message(&mut self, deadline: Instant, waiting_for: &str) -> Value {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.from.recv_timeout(left) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => panic!("chromium: no answer to {waiting_for}"),
            Err(RecvTimeoutError::Disconnected) => {
                panic!("chromium exited while the test waited for {waiting_for}")
            }
        }
    }

    fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(None, method, params)
    }

    /// A command to the page.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(Some(&session), method, params)
    }

    /// Opens `file` and waits for its load event.
    pub fn open(&mut self, file: &Path) -> String {
        let url = format!("file://{}", file.canonicalize().unwrap().display());
        self.call("Page.navigate", json!({"url": url}));
        self.wait_event("Page.loadEventFired", Duration::from_secs(60));
        url
    }

    /// Waits for the first event named `method` not seen before.
    pub fn wait_event(&mut self, method: &str, limit: Duration) -> Value {
        let seen = |e: &&Value| e["method"] == json!(method) && e.get("consumed").is_none();
        if let Some(i) = self.events.iter().position(|e| seen(&e)) {
            self.events[i]["consumed"] = json!(true);
            return self.events[i].clone();
        }
        let deadline = Instant::now() + limit;
        loop {
            let mut m = self.next_message(deadline, method);
            let hit = m["method"] == json!(method);
            if hit {
                m["consumed"] = json!(true);
            }
            self.events.push(m.clone());
            if hit {
                return m;
            }
        }
    }

    /// The value of a JavaScript expression (awaited when it is a promise).
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Types `text` into the focused element, as a keyboard would.
    pub fn type_text(&mut self, text: &str) {
        self.call("Input.insertText", json!({"text": text}));
    }

    /// A PNG of the visible page, written to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        use base64::Engine;
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Every URL the page asked the network layer for.
    pub fn requested_urls(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["method"] == json!("Network.requestWillBeSent"))
            .map(|e| {
                e["params"]["request"]["url"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
