//! States with their SQL spelling, in one place: `jobs.state`,
//! `attempts.outcome` and `workers.state` hold these words on both
//! backends (each schema's `CHECK` lists the same ones).

/// A job's state, as `jobs.state` spells it (the schema's CHECK lists the
/// same five).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    pub const fn as_sql(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// What one try came to, as `attempts.outcome` spells it. A release (never
/// tried) leaves no attempt row, so it has no outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Done,
    /// Bad output; the job is queued again after a backoff.
    Retry,
    /// Not the frame's fault; queued again.
    Requeued,
    Failed,
}

impl AttemptOutcome {
    pub const fn as_sql(self) -> &'static str {
        match self {
            AttemptOutcome::Done => "done",
            AttemptOutcome::Retry => "retry",
            AttemptOutcome::Requeued => "requeued",
            AttemptOutcome::Failed => "failed",
        }
    }
}

/// A worker's state in `workers.state`, for `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    Starting,
    Running,
    Idle,
    /// A gpu-lock command waits: finishing the frames in flight.
    Yielding,
    /// Gave the lease to a gpu-lock command; waits to get it back.
    Yielded,
    Stopped,
    Failed,
}

impl WorkerState {
    pub const fn as_sql(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Running => "running",
            WorkerState::Idle => "idle",
            WorkerState::Yielding => "yielding",
            WorkerState::Yielded => "yielded",
            WorkerState::Stopped => "stopped",
            WorkerState::Failed => "failed",
        }
    }
}

/// What happened to a worker's llama-server, for its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEvent {
    Started,
    /// Crashed; the worker restarts it.
    Crashed,
}
