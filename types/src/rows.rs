//! The rows the readers return (`status`, `gpu`, `results`, `search`,
//! `passes`, `report`) and the film facts the producer writes, the same on
//! both backends field for field.

use serde::{Deserialize, Serialize};

/// One film's progress in one pass.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct FilmStatus {
    pub film_id: i64,
    pub title: String,
    pub pass: String,
    pub total: i64,
    pub queued: i64,
    pub running: i64,
    pub done: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// Enqueue time of the oldest job still queued.
    pub oldest_queued_at: Option<i64>,
    /// Most frequent failure reasons with their counts.
    pub top_failures: Vec<FailureReason>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FailureReason {
    pub reason: String,
    pub count: i64,
}

/// The holder of a GPU lease.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LeaseHolder {
    pub gpu: String,
    pub holder: String,
    pub holder_pid: Option<i64>,
    pub host: Option<String>,
    pub purpose: Option<String>,
    pub epoch: i64,
    pub expires_at: Option<i64>,
    pub server_pid: Option<i64>,
}

/// A worker seen recently.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WorkerRow {
    pub id: String,
    pub pid: i64,
    pub host: String,
    pub gpu: String,
    pub state: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub jobs_done: i64,
    pub jobs_failed: i64,
    pub jobs_retried: i64,
    pub jobs_requeued: i64,
    pub server_starts: i64,
    pub server_restarts: i64,
}

/// One described (or failed) frame.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Deserialize)]
pub struct ResultRow {
    /// The paging key with `frame_index`; not exported.
    #[serde(skip)]
    pub film_id: i64,
    pub film: String,
    pub frame_index: i64,
    pub pts_ms: Option<i64>,
    pub path: String,
    pub visual_content: Option<String>,
    pub mood: Option<String>,
    pub action: Option<String>,
    pub setting: Option<String>,
    pub model: Option<String>,
    /// Why the frame failed (failed rows only).
    pub error: Option<String>,
    /// The pass the description (or failure) belongs to.
    pub pass: String,
    /// The whole answer as JSON (every profile's fields).
    pub fields: Option<String>,
    /// The paging key after `frame_index`; not exported.
    #[serde(skip)]
    pub pass_id: i64,
}

/// A full-text match.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SearchHit {
    pub film: String,
    pub pass: String,
    pub pts_ms: Option<i64>,
    pub path: String,
    pub visual_content: Option<String>,
    pub mood: Option<String>,
    pub action: Option<String>,
    pub setting: Option<String>,
    /// A custom profile's other text and tags, one per line.
    pub search_text: Option<String>,
    /// The whole answer as JSON.
    pub fields: String,
    pub rank: f64,
}

/// A subtitle line that matches, with the frame on screen during it (the
/// first one; else the first after it starts), when the film has one.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DialogueHit {
    pub film: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub text: String,
    pub frame_index: Option<i64>,
    pub path: Option<String>,
}

/// A film as the report's header shows it.
#[derive(Debug, Clone)]
pub struct FilmFacts {
    pub id: i64,
    pub title: String,
    pub source_path: Option<String>,
    pub fps: Option<f64>,
    pub duration_ms: Option<i64>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub frame_count: i64,
    /// Its frames were extracted from a video (with thumbnails beside them).
    pub is_video: bool,
}

/// One frame of the report, in time order: its description when the job
/// is done, its reason when it failed, its state otherwise.
#[derive(Debug, Clone)]
pub struct ReportFrame {
    pub frame_index: i64,
    pub pts_ms: Option<i64>,
    pub path: String,
    /// `queued`, `running`, `done`, `failed` or `cancelled`.
    pub state: String,
    pub attempts: i64,
    pub error: Option<String>,
    /// The whole validated answer (a JSON object), when described.
    pub fields: Option<String>,
    pub model: Option<String>,
    /// The subtitle line on screen at the frame's time (as `frame_dialogue`).
    pub line: Option<String>,
    /// A near-duplicate's description: the frame_index it was copied from.
    pub copied_from: Option<i64>,
    /// Its bytes, when the database holds them (`enqueue --store-frames`).
    pub stored: Option<Vec<u8>>,
}

/// A field of a pass's profile, as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportField {
    pub name: String,
    /// `text`, `enum`, `tags`, `integer` or `boolean`.
    pub kind: String,
}

/// A pass as the worker serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    pub id: i64,
    pub name: String,
    /// Its binding generation when read: a worker claims the pass's jobs
    /// only while it is unchanged (another worker may rebind a pass that
    /// is not settled yet).
    pub binding: i64,
}

/// A pass as a worker given no pass name chooses among them (the rule is
/// `cinecut::db::passes::choose`, the same on both backends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassCandidate {
    pub id: i64,
    pub name: String,
    pub model: Option<String>,
    pub profile_name: Option<String>,
    pub profile_hash: Option<String>,
    /// Bound, with a description or a running job: its binding holds.
    pub settled: bool,
}

/// One pass, for `cinecut passes`.
#[derive(Debug, Clone, Serialize)]
pub struct PassSummary {
    pub name: String,
    pub model: Option<String>,
    pub model_sha256: Option<String>,
    pub profile: Option<String>,
    pub jobs: i64,
    pub done: i64,
    pub queued: i64,
    pub failed: i64,
    /// The model's own answers (copies of near-duplicates not counted).
    pub described: i64,
    pub mean_latency_ms: Option<f64>,
    pub mean_prompt_tokens: Option<f64>,
    pub mean_completion_tokens: Option<f64>,
    pub created_at: i64,
}

/// One subtitle line of a film, its markup stripped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubtitleLine {
    pub start_ms: i64,
    pub end_ms: i64,
    pub text: String,
}

/// One shot of a film, as scene mode found it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewShot {
    pub shot_index: i64,
    pub start_ms: i64,
    pub end_ms: i64,
    /// The scene score of the cut that opened it (0 for the first shot).
    pub score: f64,
}

/// A film made from a video file, identified by path, size and mtime.
#[derive(Debug, Clone, Default)]
pub struct VideoFilm {
    pub title: String,
    pub source_path: String,
    pub source_size: i64,
    pub source_mtime_ms: i64,
    pub fps: Option<f64>,
    pub duration_ms: Option<i64>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub priority: i64,
    /// The frame selection it is extracted with, as flags.
    pub extraction: String,
}

/// A film already made from a video file.
#[derive(Debug, Clone)]
pub struct ExistingFilm {
    pub id: i64,
    pub title: String,
    pub frame_count: i64,
    /// Its frame selection as flags (`None` for films from before it was kept).
    pub extraction: Option<String>,
}
