//! The GPU lease: who asks for it, what an acquire answers, what a
//! heartbeat learns.

use serde::Serialize;

/// Who asks for a lease.
#[derive(Debug, Clone)]
pub struct Holder {
    pub id: String,
    pub pid: i64,
    /// The process's start time (clock ticks after boot), against pid reuse.
    pub started_at: Option<i64>,
    pub host: String,
    pub purpose: Purpose,
}

/// What a lease is held for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Purpose {
    Worker,
    GpuLock,
}

impl Purpose {
    /// As `gpu_leases.purpose` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Worker => "worker",
            Purpose::GpuLock => "gpu-lock",
        }
    }
}

/// The previous holder's llama-server, for the new holder to reap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanServer {
    pub pid: i64,
    pub started_at: Option<i64>,
    pub cmdline: Option<String>,
}

/// The answer to an acquire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// The lease is ours under `epoch`.
    Acquired {
        epoch: i64,
        /// Running jobs of a dead previous holder put back in the queue.
        recovered: u64,
        /// The dead holder, if this was a takeover.
        took_over_from: Option<String>,
        orphan_server: Option<OrphanServer>,
    },
    /// Someone alive holds it.
    Held {
        holder: String,
        pid: Option<i64>,
        host: Option<String>,
        purpose: Option<String>,
    },
    /// It is free but a gpu-lock command waits for it first.
    WaitersFirst,
}

/// What a heartbeat learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewal {
    /// False when the lease was taken from us: stop using the GPU at once.
    pub held: bool,
    /// gpu-lock commands waiting for this GPU.
    pub waiters: i64,
}
