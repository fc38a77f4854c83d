//! Which host a process runs on, as other hosts see it: its hostname and
//! its boot id (`/proc/sys/kernel/random/boot_id`, new at every boot, so a
//! rebooted host is another host and no pid of its previous life is
//! trusted). A pid means something only on the host it came from.

/// A host's identity: `hostname/boot-id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostId(pub String);

/// Test-only: stands for another host identity (several "hosts" on one
/// machine in the tests).
pub const HOST_OVERRIDE_ENV: &str = "CINECUT_TEST_HOST_ID";

impl HostId {
    /// This host: `CINECUT_TEST_HOST_ID` if set, else hostname + boot id.
    pub fn this() -> HostId {
        if let Ok(id) = std::env::var(HOST_OVERRIDE_ENV) {
            return HostId(id);
        }
        let name = nix::unistd::gethostname()
            .ok()
            .and_then(|n| n.into_string().ok())
            .unwrap_or_else(|| "unknown-host".into());
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|b| b.trim().to_string())
            .unwrap_or_default();
        HostId(format!("{name}/{boot}"))
    }
}

/// Whether process `pid` is alive on this host (a zombie counts as dead).
pub fn pid_alive(pid: i64) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => {
            // Alive unless a zombie (exited, not yet reaped).
            std::fs::read_to_string(format!("/proc/{raw}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, rest)| rest.trim_start().starts_with('Z'))
                })
                .is_none_or(|zombie| !zombie)
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_pid_zero_is_not() {
        assert!(pid_alive(i64::from(std::process::id())));
        assert!(!pid_alive(0));
        assert!(!pid_alive(i64::from(i32::MAX)));
    }
}
