//! Getting results out: `results` in three formats, `search`, completions.

use cinecut::db::results::ResultRow;

use crate::util::{Env, FakeServer, assert_exit, stdout};

async fn described(env: &Env, n: usize, answers: &str) {
    described_as(env, "night", n, answers).await;
}

async fn described_as(env: &Env, film: &str, n: usize, answers: &str) {
    env.enqueue_images(film, n, &[]);
    let fake = FakeServer::start(env, &["--answers", answers]);
    let o = env.run([
        "worker",
        "--server-url",
        &fake.url(),
        "--until-empty",
        "--parallel",
        "4",
    ]);
    assert_exit(&o, 0);
}

/// film, frame_index, pts_ms, path, the four fields, model.
type ViewRow = (
    String,
    i64,
    Option<i64>,
    String,
    String,
    String,
    String,
    String,
    String,
);

async fn rows_in_db(env: &Env) -> Vec<ResultRow> {
    let pool = env.pool().await;
    let rows: Vec<ViewRow> = sqlx::query_as(
        "SELECT film, frame_index, pts_ms, path, visual_content, mood, action, setting, model FROM frame_descriptions ORDER BY film_id, frame_index",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(
            |(film, frame_index, pts_ms, path, v, m, a, s, model)| ResultRow {
                film_id: 0,
                film,
                frame_index,
                pts_ms,
                path,
                visual_content: Some(v),
                mood: Some(m),
                action: Some(a),
                setting: Some(s),
                model: Some(model),
                error: None,
            },
        )
        .collect()
}

#[tokio::test]
async fn results_in_all_three_formats_parse_back_to_the_same_rows() {
    let env = Env::new();
    described(&env, 12, "tricky").await;
    let want = rows_in_db(&env).await;
    assert_eq!(want.len(), 12);
    assert!(
        want[0]
            .visual_content
            .as_ref()
            .unwrap()
            .contains("\"quoted\" word,")
            && want[0].visual_content.as_ref().unwrap().contains('\n')
    );

    let o = env.run(["results", "--format", "jsonl"]);
    assert_exit(&o, 0);
    let jsonl: Vec<ResultRow> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(jsonl, want);

    let o = env.run(["results", "--format", "csv"]);
    assert_exit(&o, 0);
    let csv: Vec<ResultRow> = csv::Reader::from_reader(o.stdout.as_slice())
        .deserialize()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(csv, want);

    let o = env.cmd(["results"]).env("COLUMNS", "100").output().unwrap();
    assert_exit(&o, 0);
    let table = stdout(&o);
    assert_eq!(
        table.lines().count(),
        13,
        "a header and one line per frame: {table}"
    );
    assert!(
        table.lines().all(|l| l.chars().count() <= 100),
        "fits the terminal:\n{table}"
    );
    // Frames from a folder have no time: the TIME column says "-".
    for line in table.lines().skip(1) {
        let time: String = line.chars().skip(28).take(12).collect();
        assert_eq!(time.trim(), "-", "{line}");
        assert!(line.starts_with("night "), "{line}");
    }
}

#[tokio::test]
async fn failed_frames_export_with_their_reasons() {
    let env = Env::new();
    described(&env, 2, "http400").await;
    let o = env.run(["results", "--state", "failed", "--format", "jsonl"]);
    assert_exit(&o, 0);
    let rows: Vec<ResultRow> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| {
        r.error
            .as_deref()
            .unwrap()
            .contains("failed to load image (fake)")
    }));
    assert_eq!(
        stdout(&env.run(["results", "--format", "jsonl"]))
            .lines()
            .count(),
        0
    );
}

#[tokio::test]
async fn search_finds_what_another_process_wrote() {
    let env = Env::new();
    described(&env, 5, "tricky").await;
    // The worker (another process) wrote them; this process searches.
    let o = env.run(["search", "rainy night chase"]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 5, "{out}");
    assert!(
        out.lines()
            .all(|l| l.starts_with("night  ") && l.contains(".png  mood: rainy, tense")),
        "{out}"
    );
    // --film narrows the matches to that film.
    described_as(&env, "day", 3, "tricky").await;
    let o = env.run(["search", "rainy night chase", "--film", "day"]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.lines().all(|l| l.starts_with("day  ")), "{out}");
    let o = env.run(["search", "window-less: (submarine)", "--film", "night"]);
    assert_exit(&o, 0);
    assert_eq!(
        stdout(&o),
        "",
        "no match, and punctuation is no FTS syntax error"
    );
    let o = env.run(["search", "chase", "--limit", "2", "--json"]);
    assert_eq!(stdout(&o).lines().count(), 2);
    let hit: serde_json::Value = serde_json::from_str(stdout(&o).lines().next().unwrap()).unwrap();
    assert_eq!(hit["field"], "action");
    assert_exit(&env.run(["search", "  ..  "]), 1);
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let o = std::process::Command::new(crate::util::BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert_exit(&o, 0);
        assert!(
            stdout(&o).contains("cinecut") && stdout(&o).contains("enqueue"),
            "{shell}"
        );
    }
}

/// `datasette cinecut.db`, as a new user runs it: it finds the full-text
/// index of `descriptions` (declared `content="descriptions"`) and its
/// `_search` returns the rows that hold the word, and only those.
#[tokio::test]
async fn datasette_finds_and_searches_the_full_text_index() {
    let env = Env::new();
    env.enqueue_images("ds", 3, &[]);
    let fake = FakeServer::start(&env, &[]);
    let o = env.run(["worker", "--server-url", &fake.url(), "--until-empty"]);
    assert_exit(&o, 0);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = std::process::Command::new(crate::util::datasette())
        .arg("serve")
        .arg(env.db())
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(env.path().join("datasette.log")).unwrap())
        .spawn()
        .unwrap();
    let _server = crate::util::Bystander(server);
    crate::util::wait_until(
        "datasette to listen",
        std::time::Duration::from_secs(60),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    let rows = |word: &str| {
        let url = format!(
            "http://127.0.0.1:{port}/cinecut/descriptions.json?_search={word}&_shape=array"
        );
        async move {
            let body = reqwest::get(&url).await.unwrap().text().await.unwrap();
            let v: serde_json::Value =
                serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
            v.as_array().unwrap_or_else(|| panic!("{body}")).len()
        }
    };
    // Every fake description is "… a figure by a window"; none has a zebra.
    assert_eq!(rows("window").await, 3, "{}", env.log("datasette.log"));
    assert_eq!(
        rows("zebra").await,
        0,
        "_search used the index, not ignored"
    );

    // Times people can read, beside the unix milliseconds.
    let times = env
        .strings("SELECT described_at || ' ' || described_at_iso FROM frame_descriptions")
        .await;
    assert_eq!(times.len(), 3);
    for t in &times {
        let (ms, iso) = t.split_once(' ').unwrap();
        let ms: i64 = ms.parse().unwrap();
        let rest = ms / 1000 % 86_400;
        let clock = format!(
            "T{:02}:{:02}:{:02}.{:03}Z",
            rest / 3600,
            rest / 60 % 60,
            rest % 60,
            ms % 1000
        );
        assert!(iso.ends_with(&clock) && iso.len() == 24, "{t}");
        assert!(iso > "2024", "{t}");
    }
}
