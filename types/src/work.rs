//! The queue as a worker sees it: what it claims, under which fence and
//! scope, what became of each try, and what a round recorded.

use serde::Serialize;
use serde_json::{Map, Value};

/// A validated answer: every field of its pass's profile, nothing else
/// (the profile's validation is the only maker of one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    #[serde(flatten)]
    fields: Map<String, Value>,
    /// The text and tags answers other than the seed fields, one per line,
    /// for full-text search.
    #[serde(skip)]
    search_text: Option<String>,
}

impl Answer {
    /// An answer of these fields, already validated against its profile.
    pub fn validated(fields: Map<String, Value>, search_text: Option<String>) -> Answer {
        Answer {
            fields,
            search_text,
        }
    }

    /// A text field's value (the seed columns read these).
    pub fn text(&self, field: &str) -> Option<&str> {
        self.fields.get(field).and_then(Value::as_str)
    }

    /// Every field, as the answer's JSON object holds them.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// The text and tags answers other than the seed fields, one per line
    /// (`None` when there are none): what full-text search adds.
    pub fn search_text(&self) -> Option<&str> {
        self.search_text.as_deref()
    }
}

/// shared, and shown by their length only.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredFrame(pub std::sync::Arc<[u8]>);

impl std::fmt::Debug for StoredFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredFrame({} bytes)", self.0.len())
    }
}

/// A job this worker holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub job_id: i64,
    pub frame_id: i64,
    pub path: String,
    /// The dialogue line on screen at the frame's time, when the worker
    /// asked for it (`--dialogue-context`).
    pub line: Option<String>,
    pub attempts: i64,
    pub transient_failures: i64,
    pub max_attempts: i64,
    /// The frame's bytes when the database holds them (read instead of
    /// `path`).
    pub stored: Option<StoredFrame>,
    /// A still not hashed yet, enqueued with near-duplicate detection: the
    /// most bits its hash may differ by from its original's
    /// (`--dedupe-distance`). The worker hashes it before sending it.
    pub dedupe: Option<u32>,
}

/// A claimed still as the worker hashed it: its 64-bit difference hash, its
/// 9×8 grey copy, and the earlier frame it nearly repeats, if it found one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashedFrame {
    pub frame_id: i64,
    pub dhash: i64,
    pub grey: Vec<u8>,
    pub duplicate_of: Option<i64>,
}

/// What a claimed still is compared with: the frame before it in its film
/// and, when that one is hashed, its original (itself, or the frame it
/// nearly repeats) with that original's hash and grey copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub frame_id: i64,
    pub previous: Option<i64>,
    pub original: Option<(i64, i64, Vec<u8>)>,
}

impl Neighbour {
    /// From a row as both backends read it: the original counts only with
    /// its hash and grey copy.
    pub fn new(
        frame_id: i64,
        previous: Option<i64>,
        original: (Option<i64>, Option<i64>, Option<Vec<u8>>),
    ) -> Neighbour {
        let original = match original {
            (Some(id), Some(hash), Some(grey)) => Some((id, hash, grey)),
            _ => None,
        };
        Neighbour {
            frame_id,
            previous,
            original,
        }
    }
}

/// Which jobs a worker works on: one pass's, of one film or of all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    pub pass: i64,
    /// The pass's binding generation the worker bound it under: its jobs
    /// are claimed only while the pass keeps it.
    pub binding: i64,
    pub film: Option<i64>,
}

/// Who writes: the claims and results of one worker under one lease epoch.
#[derive(Debug, Clone)]
pub struct Fence {
    pub gpu: String,
    pub owner: String,
    pub epoch: i64,
}

/// What became of one try.
#[derive(Debug, Clone)]
pub enum Outcome {
    Done {
        answer: Answer,
        model: String,
        model_sha256: Option<String>,
        prompt_version: i64,
        prompt_tokens: Option<i64>,
        completion_tokens: Option<i64>,
    },
    /// Bad model output: burns an attempt; failed once attempts run out.
    Retry {
        class: &'static str,
        error: String,
        raw: Option<String>,
        backoff_ms: i64,
    },
    /// Hopeless (bad frame, request rejected): failed now.
    Fail { class: &'static str, error: String },
    /// Not the frame's fault, probably (crash, timeout, 5xx): back to the
    /// queue without burning an attempt; `counts` adds to the frame's
    /// transient failures, and at `poison_after` of them it is failed as poison.
    Requeue {
        class: &'static str,
        error: String,
        counts: bool,
        poison_after: i64,
        backoff_ms: i64,
    },
    /// Never tried (shutdown, yield): back to the queue, no trace.
    Release,
}

/// One finished try, to record.
#[derive(Debug, Clone)]
pub struct Finished {
    pub job: ClaimedJob,
    pub outcome: Outcome,
    pub started_at: i64,
    pub finished_at: i64,
}

/// What a claim got.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub jobs: Vec<ClaimedJob>,
    /// A gpu-lock command waits for this GPU: nothing was claimed, and the
    /// worker should yield once its frames in flight are done.
    pub gpu_wanted: bool,
    /// Another worker has bound the pass to another model or profile since
    /// this worker bound it: nothing was claimed, and the worker must stop.
    pub rebound: bool,
}

/// What a record step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    pub done: u64,
    pub failed: u64,
    pub retried: u64,
    pub requeued: u64,
    /// Results dropped because the job is no longer ours.
    pub fenced: u64,
}
