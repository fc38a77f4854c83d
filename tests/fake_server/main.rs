//! A stand-in for llama-server, for the faults the real one cannot be made
//! to show on demand: garbage or truncated answers, 4xx/5xx, slowness, hangs,
//! a crash mid-request, a load that never ends, a context too small, a
//! server that insists on a `model` field (as vLLM does). It speaks the
//! endpoints cinecut uses (`GET /health`, `GET /props`, `GET /v1/models`,
//! `POST /v1/chat/completions`) over plain HTTP/1.1 on 127.0.0.1.
//!
//! Usage: fake-llama-server [--port N] [--port-file F] [--api-key K]
//!        [--answers MODE,MODE,…] [--delay-ms N] [--loading-ms N]
//!        [--record FILE] [--exit-during-load] [--model-id ID]
//!        [--require-model] [--slots N] [--slot-ctx N] [--no-vision]
//!        [--no-props] [--peak-file F]
//! MODES (one per request, the last repeats): ok (an answer that fits the
//! request's schema), out-of-bounds (an enum value not allowed, an integer
//! past its maximum, one tag too many), garbage, truncated, missing-field,
//! tricky, http500, http400, context, hang, exit.
//! `--peak-file` holds the most requests it has had in flight at once.
//! Every completion request is first checked for the shape cinecut promises
//! to send (`check_request`); one that strays is answered HTTP 400.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

struct Config {
    answers: Vec<String>,
    api_key: Option<String>,
    delay: Duration,
    loading_until: Instant,
    record: Option<std::path::PathBuf>,
    count: AtomicUsize,
    model_id: String,
    require_model: bool,
    /// `/props`' answer; `None` answers 404, as servers without it do.
    props: Option<serde_json::Value>,
    peak_file: Option<std::path::PathBuf>,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    peak_write: std::sync::Mutex<()>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let port: u16 = get("--port").map_or(0, |p| p.parse().expect("--port"));
    if args.iter().any(|a| a == "--exit-during-load") {
        eprintln!("fake-llama-server: loading model");
        std::thread::sleep(Duration::from_millis(200));
        eprintln!("error: failed to load model (--exit-during-load)");
        std::process::exit(1);
    }
    let cfg = Arc::new(Config {
        answers: get("--answers")
            .unwrap_or_else(|| "ok".into())
            .split(',')
            .map(str::to_string)
            .collect(),
        api_key: get("--api-key").or_else(|| {
            get("--api-key-file").map(|f| {
                std::fs::read_to_string(f)
                    .expect("--api-key-file")
                    .trim()
                    .to_string()
            })
        }),
        delay: Duration::from_millis(
            get("--delay-ms").map_or(0, |d| d.parse().expect("--delay-ms")),
        ),
        loading_until: Instant::now()
            + Duration::from_millis(
                get("--loading-ms").map_or(0, |d| d.parse().expect("--loading-ms")),
            ),
        record: get("--record").map(Into::into),
        count: AtomicUsize::new(0),
        model_id: get("--model-id").unwrap_or_else(|| "fake-model".into()),
        require_model: args.iter().any(|a| a == "--require-model"),
        props: (!args.iter().any(|a| a == "--no-props")).then(|| {
            serde_json::json!({
                "total_slots": get("--slots").map_or(1, |n| n.parse::<u64>().expect("--slots")),
                "default_generation_settings": {
                    "n_ctx": get("--slot-ctx").map_or(4096, |n| n.parse::<u64>().expect("--slot-ctx")),
                },
                "modalities": { "vision": !args.iter().any(|a| a == "--no-vision") },
            })
        }),
        peak_file: get("--peak-file").map(Into::into),
        in_flight: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
        peak_write: std::sync::Mutex::new(()),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        if let Some(f) = get("--port-file") {
            let tmp = format!("{f}.tmp");
            std::fs::write(&tmp, port.to_string()).unwrap();
            std::fs::rename(tmp, f).unwrap();
        }
        eprintln!("fake-llama-server: listening on 127.0.0.1:{port}");
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let cfg = cfg.clone();
            tokio::spawn(async move {
                let _ = serve(stream, cfg).await;
            });
        }
    });
}

async fn serve(stream: TcpStream, cfg: Arc<Config>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let mut content_length = 0usize;
        let mut auth = None;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            match name.to_ascii_lowercase().as_str() {
                "content-length" => content_length = value.trim().parse().unwrap_or(0),
                "authorization" => auth = Some(value.trim().to_string()),
                _ => {}
            }
        }
        let mut body = vec![0; content_length];
        reader.read_exact(&mut body).await?;
        let (status, payload) = respond(&request_line, auth.as_deref(), &body, &cfg).await;
        let out = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{payload}",
            payload.len()
        );
        reader.get_mut().write_all(out.as_bytes()).await?;
    }
}

async fn respond(
    request_line: &str,
    auth: Option<&str>,
    body: &[u8],
    cfg: &Config,
) -> (&'static str, String) {
    if request_line.starts_with("GET /health") {
        return if Instant::now() < cfg.loading_until {
            (
                "503 Service Unavailable",
                r#"{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}"#
                    .into(),
            )
        } else {
            ("200 OK", r#"{"status":"ok"}"#.into())
        };
    }
    if request_line.starts_with("GET /props") {
        return match &cfg.props {
            Some(props) => ("200 OK", props.to_string()),
            None => (
                "404 Not Found",
                r#"{"error":{"message":"not found"}}"#.into(),
            ),
        };
    }
    if request_line.starts_with("GET /v1/models") {
        let list = serde_json::json!({"object": "list", "data": [{"id": cfg.model_id, "object": "model"}]});
        return ("200 OK", list.to_string());
    }
    if !request_line.starts_with("POST /v1/chat/completions") {
        return (
            "404 Not Found",
            r#"{"error":{"message":"not found"}}"#.into(),
        );
    }
    if let Some(key) = &cfg.api_key
        && auth != Some(&format!("Bearer {key}"))
    {
        return (
            "401 Unauthorized",
            r#"{"error":{"code":401,"message":"Invalid API Key","type":"authentication_error"}}"#
                .into(),
        );
    }
    if let Some(path) = &cfg.record {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        // One write per line: concurrent requests append whole lines.
        let mut line = body.to_vec();
        line.push(b'\n');
        f.write_all(&line).unwrap();
    }
    // As llama-server does, a request it cannot take is an HTTP 400; here
    // also one that strays from the shape cinecut promises to send.
    if let Err(why) = check_request(body) {
        return (
            "400 Bad Request",
            serde_json::json!({"error": {"code": 400, "message": format!("fake-llama-server: {why}"), "type": "invalid_request_error"}})
                .to_string(),
        );
    }
    if cfg.require_model {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        if v["model"] != cfg.model_id.as_str() {
            // As vLLM answers a request for a model it does not serve.
            return (
                "404 Not Found",
                serde_json::json!({"object": "error", "message": format!("The model `{}` does not exist.", v["model"]), "type": "NotFoundError", "code": 404})
                    .to_string(),
            );
        }
    }
    let _in_flight = InFlight::enter(cfg);
    let n = cfg.count.fetch_add(1, Ordering::SeqCst);
    let mode = cfg
        .answers
        .get(n)
        .or(cfg.answers.last())
        .cloned()
        .unwrap_or_default();
    if !cfg.delay.is_zero() {
        tokio::time::sleep(cfg.delay).await;
    }
    // A description that depends on the image, like a real model's.
    let digest = body
        .iter()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b)));
    let schema = serde_json::from_slice::<serde_json::Value>(body)
        .map(|v| v["response_format"]["json_schema"]["schema"].clone())
        .unwrap_or_default();
    let (status, content, finish) = match mode.as_str() {
        "ok" => ("200 OK", answer_for(&schema, digest, false), "stop"),
        // Every enum, integer and tags field just outside its bounds.
        "out-of-bounds" => ("200 OK", answer_for(&schema, digest, true), "stop"),
        "garbage" => (
            "200 OK",
            "Sure! This frame shows a person.".to_string(),
            "stop",
        ),
        // Commas, quotes and a newline: what CSV export must quote.
        "tricky" => (
            "200 OK",
            format!(
                r#"{{"visual_content":"a \"quoted\" word, {digest:x}\nand a second line","mood":"rainy, tense","action":"a chase","setting":"night street"}}"#
            ),
            "stop",
        ),
        "truncated" => (
            "200 OK",
            r#"{"visual_content":"a dark ro"#.to_string(),
            "length",
        ),
        "missing-field" => (
            "200 OK",
            r#"{"visual_content":"a","mood":"b","action":"c"}"#.to_string(),
            "stop",
        ),
        "http500" => {
            return (
                "500 Internal Server Error",
                r#"{"error":{"code":500,"message":"fake internal error"}}"#.into(),
            );
        }
        "context" => {
            return (
                "400 Bad Request",
                r#"{"error":{"code":400,"message":"request (2210 tokens) exceeds the available context size (1024 tokens), try increasing it","type":"exceed_context_size_error","n_prompt_tokens":2210,"n_ctx":1024}}"#.into(),
            );
        }
        "http400" => {
            return (
                "400 Bad Request",
                r#"{"error":{"code":400,"message":"failed to load image (fake)"}}"#.into(),
            );
        }
        "hang" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            unreachable!()
        }
        "exit" => {
            eprintln!("fake-llama-server: exiting mid-request as told");
            std::process::exit(3);
        }
        other => panic!("unknown mode {other}"),
    };
    let resp = serde_json::json!({
        "choices": [{ "index": 0, "finish_reason": finish, "message": { "role": "assistant", "content": content } }],
        "usage": { "prompt_tokens": 80, "completion_tokens": 30 },
    });
    (status, resp.to_string())
}

/// One request in flight, counted while it lives; the peak goes to
/// `--peak-file`.
struct InFlight<'a>(&'a Config);

impl<'a> InFlight<'a> {
    fn enter(cfg: &'a Config) -> InFlight<'a> {
        let now = cfg.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let before = cfg.peak.fetch_max(now, Ordering::SeqCst);
        if now > before
            && let Some(f) = &cfg.peak_file
        {
            // One writer at a time, writing the peak as it is then.
            let _one = cfg.peak_write.lock().unwrap();
            let tmp = f.with_extension("tmp");
            std::fs::write(&tmp, cfg.peak.load(Ordering::SeqCst).to_string()).unwrap();
            std::fs::rename(tmp, f).unwrap();
        }
        InFlight(cfg)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The request shape cinecut sends: a system and a user message, the user's
/// text and one image as a data URI, the schema only under
/// `response_format.json_schema.schema` (llama-server rejects a second,
/// top-level `json_schema`), temperature 0, bounded `max_tokens`.
fn check_request(body: &[u8]) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let messages = v["messages"].as_array().ok_or("no messages")?;
    let roles: Vec<&str> = messages.iter().filter_map(|m| m["role"].as_str()).collect();
    if roles != ["system", "user"] {
        return Err(format!("roles {roles:?}, want [system, user]"));
    }
    let parts = messages[1]["content"]
        .as_array()
        .ok_or("user content is not a list")?;
    let images: Vec<&str> = parts
        .iter()
        .filter(|p| p["type"] == "image_url")
        .filter_map(|p| p["image_url"]["url"].as_str())
        .collect();
    if images.len() != 1 || !images[0].starts_with("data:image/") {
        return Err("want exactly one image_url data URI".into());
    }
    if !parts.iter().any(|p| p["type"] == "text") {
        return Err("no text part".into());
    }
    if v.get("json_schema").is_some() {
        return Err("\"json_schema\" beside \"response_format\"".into());
    }
    if v["response_format"]["type"] != "json_schema" {
        return Err("response_format.type is not json_schema".into());
    }
    let schema = &v["response_format"]["json_schema"]["schema"];
    let required = schema["required"]
        .as_array()
        .ok_or("no schema under response_format.json_schema.schema")?;
    let properties = schema["properties"]
        .as_object()
        .ok_or("the schema has no properties")?;
    if required.is_empty() || required.len() != properties.len() {
        return Err("the schema must require each of its properties".into());
    }
    if v["temperature"] != 0 || !v["max_tokens"].is_u64() {
        return Err("want temperature 0 and a max_tokens".into());
    }
    Ok(())
}

/// An answer to `schema` (an object of typed properties) that depends on
/// the image (`digest`), as a real model's does; the seed fields read like
/// a description. `out_of_bounds` puts each enum, integer and tags field
/// just outside what the schema allows.
fn answer_for(schema: &serde_json::Value, digest: u64, out_of_bounds: bool) -> String {
    use serde_json::{Value, json};
    let mut answer = serde_json::Map::new();
    let empty = serde_json::Map::new();
    for (name, p) in schema["properties"].as_object().unwrap_or(&empty) {
        let value = match (p["type"].as_str(), name.as_str()) {
            (Some("string"), _) if p.get("enum").is_some() => match out_of_bounds {
                true => json!("not-an-allowed-value"),
                false => {
                    p["enum"][digest as usize % p["enum"].as_array().map_or(1, Vec::len)].clone()
                }
            },
            (Some("string"), "visual_content") => {
                json!(format!("frame {digest:x}, a figure by a window"))
            }
            (Some("string"), "mood") => json!("tense, quiet"),
            (Some("string"), "action") => json!("someone waits"),
            (Some("string"), "setting") => json!("a small room at night"),
            (Some("string"), _) => json!(format!("{name} of frame {digest:x}")),
            (Some("integer"), _) => match out_of_bounds {
                true => json!(p["maximum"].as_i64().unwrap_or(0) + 1),
                false => p["minimum"].clone(),
            },
            (Some("boolean"), _) => json!(digest.is_multiple_of(2)),
            (Some("array"), _) => {
                let n = match out_of_bounds {
                    true => p["maxItems"].as_u64().unwrap_or(0) + 1,
                    false => 1,
                };
                Value::Array(
                    (0..n)
                        .map(|i| json!(format!("tag{i}-{:x}", digest % 7)))
                        .collect(),
                )
            }
            _ => Value::Null,
        };
        answer.insert(name.clone(), value);
    }
    Value::Object(answer).to_string()
}
