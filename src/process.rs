//! Facts about processes on this host, for deciding whether a lease holder
//! is alive: a pid alone can be reused, so a process is identified by its pid
//! and its start time (clock ticks after boot, from /proc/PID/stat).

use nix::sys::signal::kill;
use nix::unistd::Pid;

/// This machine's host name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The start time of `pid` in clock ticks after boot, if it exists.
pub fn start_ticks(pid: i64) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: skip past its last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    // rest starts at field 3 (state); starttime is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process `pid` that started at `started` still runs. A zombie
/// counts as gone.
pub fn is_alive(pid: i64, started: Option<i64>) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    match kill(Pid::from_raw(raw), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => {}
        Err(_) => return false,
    }
    if is_zombie(pid) {
        return false;
    }
    match (started, start_ticks(pid)) {
        (Some(want), Some(have)) => want == have,
        _ => true,
    }
}

fn is_zombie(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(false)
}

/// The command line of `pid`, arguments joined by spaces.
pub fn cmdline(pid: i64) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let parts: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    Some(parts.join(" "))
}

/// The command line `cmd` will show once it runs, as [`cmdline`] reads it
/// (arguments joined by spaces, empty ones left out). Taken from the
/// command, not from `/proc`: right after a spawn returns, the child may
/// not have its new arguments yet (exec closes the close-on-exec pipe
/// spawn waits for before it sets them), and `/proc` then shows none.
pub fn command_line(cmd: &std::process::Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .filter(|a| !a.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Who this process is, for lease rows.
pub fn me() -> (i64, Option<i64>) {
    let pid = i64::from(std::process::id());
    (pid, start_ticks(pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `command_line` says is what `/proc` shows once the child runs
    /// (an empty argument left out on both sides).
    #[test]
    fn the_command_line_is_the_one_proc_shows() {
        let mut odd = std::process::Command::new("x");
        odd.args(["a", "", "b"]);
        assert_eq!(command_line(&odd), "x a b");
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30");
        let mut child = cmd.spawn().unwrap();
        let pid = i64::from(child.id());
        let want = command_line(&cmd);
        assert_eq!(want, "sleep 30");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while cmdline(pid).as_deref() != Some(want.as_str()) {
            assert!(std::time::Instant::now() < deadline, "{:?}", cmdline(pid));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
