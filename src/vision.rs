//! One frame in, one validated [`Answer`] out, through llama-server's
//! OpenAI-compatible `POST /v1/chat/completions`.
//!
//! Every request has the same system prompt and user text (the pass's
//! [`Profile`]) before the image,
//! so the server's prompt cache is reused across frames. The JSON schema goes
//! in `response_format` only (a second copy at the top level is an HTTP 400).
//! Failures are classified here, once, into [`DescribeError`], which decides
//! what the worker does with the job.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde_json::{Value, json};

use crate::frame;
pub use crate::frame::LoadedFrame;
use crate::profile::{Answer, Profile};

/// Bump when the prompt changes: stored with each description.
pub const PROMPT_VERSION: i64 = 1;
/// The prompt of [`PROMPT_VERSION`] with the dialogue line on screen added
/// as context (`--dialogue-context`), for the frames that have one.
pub const DIALOGUE_PROMPT_VERSION: i64 = 2;

/// Describes one frame. The worker does not care how: llama-server over HTTP
/// in production, an instant in-process answer in the queue benchmark.
pub trait Describer: Send + Sync + 'static {
    /// Describes the frame at `path`, or its `stored` bytes when the
    /// database holds them (`path` then names it); `dialogue` is the line
    /// on screen, given to the model as context.
    fn describe<'a>(
        &'a self,
        path: &'a str,
        stored: Option<&'a [u8]>,
        dialogue: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Described, DescribeError>>;
    /// The model name stored with each description.
    fn model(&self) -> &str;
    /// The weights' SHA-256 stored with each description, when known.
    fn model_sha256(&self) -> Option<&str> {
        None
    }
}

/// Answers every frame at once with the same answer of the built-in
/// profile, reading nothing (`worker --noop-describer`, for benchmarks: what
/// is left is the queue's own cost).
pub struct NoopDescriber {
    answer: Answer,
}

impl NoopDescriber {
    pub const MODEL: &'static str = "noop";

    pub fn new() -> NoopDescriber {
        let answer = Profile::default()
            .parse_answer(
                r#"{"visual_content":"nothing described","mood":"none","action":"none","setting":"none"}"#,
            )
            .expect("a valid answer of the built-in profile");
        NoopDescriber { answer }
    }
}

impl Default for NoopDescriber {
    fn default() -> Self {
        NoopDescriber::new()
    }
}

impl Describer for NoopDescriber {
    fn describe<'a>(
        &'a self,
        _: &'a str,
        _: Option<&'a [u8]>,
        _: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Described, DescribeError>> {
        Box::pin(async {
            Ok(Described {
                answer: self.answer.clone(),
                prompt_version: PROMPT_VERSION,
                prompt_tokens: None,
                completion_tokens: None,
            })
        })
    }

    fn model(&self) -> &str {
        NoopDescriber::MODEL
    }
}

/// Frames described through an OpenAI-compatible chat endpoint. Frames are
/// prepared as soon as they are claimed (the worker claims a few more than
/// the server has slots); the requests themselves wait for a free slot, so
/// the server never waits for a frame to be decoded or resized.
pub struct HttpDescriber {
    pub client: VisionClient,
    pub model: String,
    /// The server's slots: requests sent at once.
    pub slots: Arc<tokio::sync::Semaphore>,
    /// Longest side of a frame as sent (`--max-side`).
    pub max_side: u32,
    /// Set when a request failed the server's way: frames waiting for a
    /// slot are not sent before then (the server may be down or restarting).
    hold_off: Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
    /// The weights' identity ([`crate::weights`]), for a server we run.
    pub weights_sha256: Option<String>,
}

/// How long requests waiting for a slot hold off after one failed the
/// server's way (as long as the worker pauses its claims).
const HOLD_OFF: Duration = Duration::from_secs(1);

impl HttpDescriber {
    pub fn new(client: VisionClient, model: String, slots: usize, max_side: u32) -> Self {
        HttpDescriber {
            client,
            model,
            slots: Arc::new(tokio::sync::Semaphore::new(slots.max(1))),
            max_side,
            hold_off: Arc::default(),
            weights_sha256: None,
        }
    }
}

impl Describer for HttpDescriber {
    fn describe<'a>(
        &'a self,
        path: &'a str,
        stored: Option<&'a [u8]>,
        dialogue: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Described, DescribeError>> {
        // A task of its own: the request and its deadline go on while the
        // worker's loop waits (another connection's write lock can hold it
        // for minutes), and its answer waits there to be recorded. Dropped
        // (shutdown, yield, lost lease), it is aborted, as before.
        let client = self.client.clone();
        let path = path.to_string();
        let stored = stored.map(<[u8]>::to_vec);
        let dialogue = dialogue.map(str::to_string);
        let (slots, max_side, hold_off) =
            (self.slots.clone(), self.max_side, self.hold_off.clone());
        let request = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            let frame = load_frame(Path::new(&path), stored, max_side).await?;
            let _slot = slots.acquire_owned().await.expect("never closed");
            let until = *hold_off.lock().expect("hold-off lock");
            if let Some(until) = until {
                tokio::time::sleep_until(until).await;
            }
            let result = client.describe(&frame, dialogue.as_deref()).await;
            if let Err(DescribeError::Transient { .. }) = &result {
                *hold_off.lock().expect("hold-off lock") =
                    Some(tokio::time::Instant::now() + HOLD_OFF);
            }
            result
        }));
        Box::pin(async move {
            match request.await {
                Ok(result) => result,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        })
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn model_sha256(&self) -> Option<&str> {
        self.weights_sha256.as_deref()
    }
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct Described {
    pub answer: Answer,
    /// The prompt it answered ([`PROMPT_VERSION`] or [`DIALOGUE_PROMPT_VERSION`]).
    pub prompt_version: i64,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
}

/// Why a frame was not described; each class has its own fate.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DescribeError {
    /// The frame is missing, unreadable or not an image: fail at once.
    #[error("{0}")]
    Frame(String),
    /// The model answered something that is not a valid description: retry.
    #[error("{reason}")]
    BadOutput { reason: String, raw: String },
    /// Crash, reset, timeout, 5xx, refused: requeue; `kind` decides whether
    /// the frame is blamed and whether the server is restarted.
    #[error("{reason}")]
    Transient { reason: String, kind: TransientKind },
    /// The server rejected the request (4xx): fail with its message.
    #[error("server rejected the request (HTTP {status}): {message}")]
    BadRequest { status: u16, message: String },
    /// The request does not fit the server's context per slot: a setting to
    /// change, not the frame's fault. The worker stops; the frame goes back
    /// to the queue untried.
    #[error("{}", match (n_prompt, n_ctx) {
        (Some(need), Some(have)) => format!("{need} tokens needed, {have} per slot"),
        _ => message.clone(),
    })]
    ContextExceeded {
        message: String,
        n_prompt: Option<i64>,
        n_ctx: Option<i64>,
    },
    /// The endpoint or the model does not exist there (HTTP 404): a setting
    /// to change (`--server-url`, `--model-name`); the worker stops.
    #[error("the server has no such endpoint or model (HTTP 404 from {url}): {message}")]
    NotFound { url: String, message: String },
    /// The server refuses us (wrong API key): stop the worker.
    #[error(
        "server refused the API key (HTTP {status}): {message}; pass the server's key with --api-key"
    )]
    Unauthorized { status: u16, message: String },
}

/// How a request failed the server's way. The worker decides on this, never
/// on the message: a timeout from a live server restarts it; a refused
/// connection is not counted against the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransientKind {
    /// No answer within the request deadline.
    Timeout,
    /// The connection broke after the request was sent (a crash).
    Reset,
    /// HTTP 5xx.
    ServerError,
    /// The server could not be reached at all (connection refused).
    Unreachable,
}

impl TransientKind {
    /// Whether the request reached the server (and so may be the frame's fault).
    pub fn reached(self) -> bool {
        self != TransientKind::Unreachable
    }
}

impl DescribeError {
    /// The short name stored in `attempts.error_class`.
    pub fn class(&self) -> &'static str {
        match self {
            DescribeError::Frame(_) => "frame",
            DescribeError::BadOutput { .. } => "bad_output",
            DescribeError::Transient { .. } => "transient",
            DescribeError::BadRequest { .. } => "bad_request",
            DescribeError::Unauthorized { .. } => "unauthorized",
            DescribeError::ContextExceeded { .. } => "context",
            DescribeError::NotFound { .. } => "not_found",
        }
    }
}

/// Reads (unless its bytes are `stored`) and prepares a frame (see
/// [`crate::frame`]) on a blocking thread.
pub async fn load_frame(
    path: &Path,
    stored: Option<Vec<u8>>,
    max_side: u32,
) -> Result<LoadedFrame, DescribeError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || match stored {
        Some(bytes) => frame::prepare_bytes(&bytes, &path, max_side),
        None => frame::prepare(&path, max_side),
    })
    .await
    .expect("frame preparation thread")
    .map_err(|e| DescribeError::Frame(e.0))
}

/// A client for one llama-server (or compatible) endpoint.
#[derive(Debug, Clone)]
pub struct VisionClient {
    http: reqwest::Client,
    base_url: String,
    url: String,
    api_key: Option<String>,
    /// The request's `model` field; none for a server that needs none.
    model: Option<String>,
    /// What is asked and how the answer is checked.
    profile: Arc<Profile>,
    max_tokens: u32,
    timeout: Duration,
}

/// What a server says about itself (llama-server's `GET /props`); each
/// part `None` when the server does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerProps {
    /// Requests it runs at once (`-np`).
    pub total_slots: Option<u32>,
    /// The context of one slot, in tokens.
    pub slot_ctx: Option<i64>,
    /// Whether it can read images (an mmproj is loaded).
    pub vision: Option<bool>,
}

impl ServerProps {
    /// Reads llama-server's `/props` body.
    pub fn parse(body: &Value) -> ServerProps {
        ServerProps {
            total_slots: body["total_slots"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok()),
            slot_ctx: body["default_generation_settings"]["n_ctx"].as_i64(),
            vision: body["modalities"]["vision"].as_bool(),
        }
    }
}

impl VisionClient {
    /// `base_url` like `http://127.0.0.1:8080`.
    pub fn new(
        base_url: &str,
        api_key: Option<String>,
        max_tokens: u32,
        timeout: Duration,
    ) -> VisionClient {
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        let base_url = base_url.trim_end_matches('/').to_string();
        VisionClient {
            http,
            url: format!("{base_url}/v1/chat/completions"),
            base_url,
            api_key,
            model: None,
            profile: Arc::new(Profile::default()),
            max_tokens,
            timeout,
        }
    }

    /// Names the model in every request (`"model"`): servers that route on
    /// it (llama-swap) or check it (vLLM, Ollama) need it.
    pub fn with_model(mut self, model: Option<String>) -> VisionClient {
        self.model = model;
        self
    }

    /// Asks with `profile`'s prompt and checks answers against its fields.
    pub fn with_profile(mut self, profile: Arc<Profile>) -> VisionClient {
        self.profile = profile;
        self
    }

    /// `GET /props`, within `deadline`; `None` from a server without it.
    pub async fn props(&self, deadline: Duration) -> Result<Option<ServerProps>, String> {
        Ok(self
            .get_json("/props", deadline)
            .await?
            .map(|v| ServerProps::parse(&v)))
    }

    /// The first model id of `GET /v1/models`; `None` from a server
    /// without the endpoint or with an empty list.
    pub async fn first_model(&self, deadline: Duration) -> Result<Option<String>, String> {
        Ok(self
            .get_json("/v1/models", deadline)
            .await?
            .and_then(|v| v["data"][0]["id"].as_str().map(str::to_string)))
    }

    /// A JSON document from the server; `None` for a 404 (not offered).
    async fn get_json(&self, path: &str, deadline: Duration) -> Result<Option<Value>, String> {
        let mut req = self
            .http
            .get(format!("{}{path}", self.base_url))
            .timeout(deadline);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("GET {path}: {}", error_chain(&e)))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(format!("GET {path}: HTTP {}", resp.status().as_u16()));
        }
        let v = resp
            .json::<Value>()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        Ok(Some(v))
    }

    /// The request body for one frame.
    /// The chat request for `frame`; with `dialogue`, the line on screen
    /// follows the instructions as context.
    pub fn request_body(&self, frame: &LoadedFrame, dialogue: Option<&str>) -> Value {
        let user = self.profile.user_text();
        let text = match dialogue {
            None => user,
            Some(line) => format!(
                "{user}\n\nDialogue heard at this moment, as context (describe only what \
                 the frame shows): {}",
                serde_json::Value::String(line.replace('\n', " "))
            ),
        };
        let mut body = json!({
            "messages": [
                { "role": "system", "content": self.profile.system },
                { "role": "user", "content": [
                    { "type": "text", "text": text },
                    { "type": "image_url", "image_url": { "url": frame.data_uri } },
                ]},
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": { "name": "scene_description", "schema": self.profile.json_schema() },
            },
            "temperature": 0,
            "max_tokens": self.max_tokens,
            "stream": false,
        });
        if let Some(model) = &self.model {
            body["model"] = json!(model);
        }
        body
    }

    /// Sends one frame and validates the answer, within the request deadline.
    pub async fn describe(
        &self,
        frame: &LoadedFrame,
        dialogue: Option<&str>,
    ) -> Result<Described, DescribeError> {
        let started = Instant::now();
        let mut req = self
            .http
            .post(&self.url)
            .timeout(self.timeout)
            .json(&self.request_body(frame, dialogue));
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.transport_error(&e, started))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| self.transport_error(&e, started))?;
        if status.is_server_error() {
            return Err(DescribeError::Transient {
                reason: format!(
                    "server error HTTP {}: {}",
                    status.as_u16(),
                    error_message(&body)
                ),
                kind: TransientKind::ServerError,
            });
        }
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(DescribeError::Unauthorized {
                status: status.as_u16(),
                message: error_message(&body),
            });
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(DescribeError::NotFound {
                url: self.url.clone(),
                message: error_message(&body),
            });
        }
        if !status.is_success() {
            return Err(rejection(status.as_u16(), &body));
        }
        let mut described = parse_completion(&body, &self.profile)?;
        if dialogue.is_some() {
            described.prompt_version = DIALOGUE_PROMPT_VERSION;
        }
        Ok(described)
    }

    fn transport_error(&self, e: &reqwest::Error, started: Instant) -> DescribeError {
        if e.is_timeout() {
            return DescribeError::Transient {
                reason: format!(
                    "no answer within {:.0} s (request deadline)",
                    self.timeout.as_secs_f64()
                ),
                kind: TransientKind::Timeout,
            };
        }
        let refused = e.is_connect();
        DescribeError::Transient {
            reason: format!(
                "{} after {} ms: {}",
                if refused {
                    "cannot connect to the server"
                } else {
                    "connection lost"
                },
                started.elapsed().as_millis(),
                error_chain(e)
            ),
            kind: if refused {
                TransientKind::Unreachable
            } else {
                TransientKind::Reset
            },
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A 4xx, classified by the error's type (llama-server's
/// `exceed_context_size_error`, OpenAI's `context_length_exceeded` code),
/// never by its wording.
fn rejection(status: u16, body: &str) -> DescribeError {
    let v: Value = serde_json::from_str(body).unwrap_or_default();
    let err = &v["error"];
    let context = err["type"] == "exceed_context_size_error"
        || err["code"] == "context_length_exceeded"
        || v["code"] == "context_length_exceeded";
    if context {
        return DescribeError::ContextExceeded {
            message: error_message(body),
            n_prompt: err["n_prompt_tokens"].as_i64(),
            n_ctx: err["n_ctx"].as_i64(),
        };
    }
    DescribeError::BadRequest {
        status,
        message: error_message(body),
    }
}

/// The `error.message` of an OpenAI-style error body (or vLLM's top-level
/// `message`), else the body itself.
fn error_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v["error"]["message"]
                .as_str()
                .or(v["message"].as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.chars().take(500).collect())
}

/// Reads a chat completion and validates its content.
pub fn parse_completion(body: &str, profile: &Profile) -> Result<Described, DescribeError> {
    let v: Value = serde_json::from_str(body).map_err(|e| DescribeError::BadOutput {
        reason: format!("response is not JSON: {e}"),
        raw: body.chars().take(4000).collect(),
    })?;
    let choice = &v["choices"][0];
    let content = choice["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if choice["finish_reason"].as_str() == Some("length") {
        return Err(DescribeError::BadOutput {
            reason: "output cut off at max_tokens (finish_reason: length)".into(),
            raw: content,
        });
    }
    let answer = profile
        .parse_answer(&content)
        .map_err(|e| DescribeError::BadOutput {
            reason: e.to_string(),
            raw: content.clone(),
        })?;
    Ok(Described {
        answer,
        prompt_version: PROMPT_VERSION,
        prompt_tokens: v["usage"]["prompt_tokens"].as_i64(),
        completion_tokens: v["usage"]["completion_tokens"].as_i64(),
    })
}

#[cfg(test)]
mod tests {
    use super::{DescribeError, ServerProps, rejection};
    use crate::profile::Profile;

    fn parse_completion(body: &str) -> Result<super::Described, DescribeError> {
        super::parse_completion(body, &Profile::default())
    }
    use serde_json::json;

    #[test]
    fn props_say_slots_context_and_vision_or_nothing() {
        let body = json!({
            "total_slots": 4,
            "default_generation_settings": { "n_ctx": 8192 },
            "modalities": { "vision": true, "audio": false },
        });
        assert_eq!(
            ServerProps::parse(&body),
            ServerProps {
                total_slots: Some(4),
                slot_ctx: Some(8192),
                vision: Some(true)
            }
        );
        assert_eq!(
            ServerProps::parse(&json!({ "model": "x" })),
            ServerProps::default()
        );
    }

    #[test]
    fn a_context_overflow_is_told_by_its_type_not_its_words() {
        let llama = r#"{"error":{"code":400,"message":"request (900 tokens) exceeds the available context size (512 tokens), try increasing it","type":"exceed_context_size_error","n_prompt_tokens":900,"n_ctx":512}}"#;
        match rejection(400, llama) {
            DescribeError::ContextExceeded {
                n_prompt, n_ctx, ..
            } => {
                assert_eq!((n_prompt, n_ctx), (Some(900), Some(512)))
            }
            other => panic!("{other:?}"),
        }
        let openai = r#"{"error":{"message":"maximum context length is 4096","type":"invalid_request_error","code":"context_length_exceeded"}}"#;
        assert!(matches!(
            rejection(400, openai),
            DescribeError::ContextExceeded { n_ctx: None, .. }
        ));
        // The same words without the type: the frame's own 400.
        let worded = r#"{"error":{"code":400,"message":"exceeds the available context size"}}"#;
        assert!(matches!(
            rejection(400, worded),
            DescribeError::BadRequest { status: 400, .. }
        ));
    }

    fn completion(content: &str, finish: &str) -> String {
        json!({
            "choices": [{ "message": { "role": "assistant", "content": content }, "finish_reason": finish }],
            "usage": { "prompt_tokens": 612, "completion_tokens": 41 }
        })
        .to_string()
    }

    const ANSWER: &str =
        r#"{"visual_content":"a door","mood":"calm","action":"nothing","setting":"a hall"}"#;

    #[test]
    fn a_complete_answer_gives_the_description_and_token_counts() {
        let d = parse_completion(&completion(ANSWER, "stop")).unwrap();
        assert_eq!(
            ["visual_content", "mood", "action", "setting"].map(|f| d.answer.text(f).unwrap()),
            ["a door", "calm", "nothing", "a hall"]
        );
        assert_eq!(
            (d.prompt_tokens, d.completion_tokens),
            (Some(612), Some(41))
        );
        let bare = json!({ "choices": [{ "message": { "content": ANSWER } }] }).to_string();
        let d = parse_completion(&bare).unwrap();
        assert_eq!((d.prompt_tokens, d.completion_tokens), (None, None));
    }

    #[test]
    fn a_cut_off_answer_is_bad_output_with_its_text() {
        let cut = &ANSWER[..30];
        match parse_completion(&completion(cut, "length")) {
            Err(DescribeError::BadOutput { reason, raw }) => {
                assert!(reason.contains("max_tokens"), "{reason}");
                assert_eq!(raw, cut);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_is_bad_output_and_keeps_what_came() {
        match parse_completion("<html>502</html>") {
            Err(DescribeError::BadOutput { raw, .. }) => assert_eq!(raw, "<html>502</html>"),
            other => panic!("{other:?}"),
        }
        let prose = completion("Sure! The frame shows a door.", "stop");
        match parse_completion(&prose) {
            Err(DescribeError::BadOutput { raw, .. }) => {
                assert_eq!(raw, "Sure! The frame shows a door.")
            }
            other => panic!("{other:?}"),
        }
        let no_choices = json!({ "object": "chat.completion" }).to_string();
        assert!(matches!(
            parse_completion(&no_choices),
            Err(DescribeError::BadOutput { .. })
        ));
    }
}
