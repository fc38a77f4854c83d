//! Getting results out: `results` in three formats, `search`, completions.

use cinecut::db::results::ResultRow;

use unicode_width::UnicodeWidthStr;

use crate::util::{Backend, Env, FakeServer, assert_exit, on_both, stdout};

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

async fn rows_in_db(env: &Env) -> Vec<ResultRow> {
    let rows = env.rows_now(
        "SELECT film, frame_index, pts_ms, path, visual_content, mood, action, setting, model, \
         pass, CAST(fields AS TEXT) AS fields FROM frame_descriptions ORDER BY film_id, frame_index",
    );
    let text = |v: &serde_json::Value| v.as_str().unwrap().to_string();
    rows.iter()
        .map(|r| ResultRow {
            film_id: 0,
            film: text(&r["film"]),
            frame_index: r["frame_index"].as_i64().unwrap(),
            pts_ms: r["pts_ms"].as_i64(),
            path: text(&r["path"]),
            visual_content: Some(text(&r["visual_content"])),
            mood: Some(text(&r["mood"])),
            action: Some(text(&r["action"])),
            setting: Some(text(&r["setting"])),
            model: Some(text(&r["model"])),
            error: None,
            pass: text(&r["pass"]),
            fields: Some(text(&r["fields"])),
            pass_id: 0,
        })
        .collect()
}

on_both!(async results_in_all_three_formats_parse_back_to_the_same_rows);

async fn results_in_all_three_formats_parse_back_to_the_same_rows(env: &Env) {
    described(env, 12, "tricky").await;
    let want = rows_in_db(env).await;
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

    // A person's terminal, 100 columns wide: a table that fits it, cut by
    // display width (a wide character takes two columns).
    env.execute_now(match env.backend() {
        Backend::Sqlite => {
            "UPDATE descriptions SET mood = '雨の夜の街、静かな緊張 🌙 ' || mood, \
             fields = json_set(fields, '$.mood', '雨の夜の街、静かな緊張 🌙 ' || mood)"
        }
        Backend::Postgres => {
            "UPDATE descriptions SET mood = '雨の夜の街、静かな緊張 🌙 ' || mood, \
             fields = jsonb_set(fields::jsonb, '{mood}', to_jsonb('雨の夜の街、静かな緊張 🌙 ' || mood))::json"
        }
    });
    let (table, status) = crate::util::on_terminal(&mut env.cmd(["results"]), 100);
    assert!(status.success());
    assert_eq!(
        table.lines().count(),
        13,
        "a header and one line per frame: {table}"
    );
    assert!(
        table.lines().all(|l| l.width() <= 100),
        "fits the terminal:\n{table}"
    );
    assert!(table.contains("雨の夜"), "{table}");
    // Frames from a folder have no time: the TIME column says "-".
    for line in table.lines().skip(1) {
        let time: String = line.chars().skip(28).take(12).collect();
        assert_eq!(time.trim(), "-", "{line}");
        assert!(line.starts_with("night "), "{line}");
    }

    // Through a pipe: plain lines, tab-separated, every value whole.
    let o = env.run(["results"]);
    assert_exit(&o, 0);
    let plain = stdout(&o);
    let lines: Vec<Vec<&str>> = plain.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(
        lines[0],
        [
            "FILM",
            "FRAME",
            "TIME",
            "PASS",
            "VISUAL CONTENT",
            "MOOD",
            "ACTION",
            "SETTING"
        ]
    );
    assert_eq!(lines.len(), 13, "{plain}");
    let moods = env
        .strings("SELECT mood FROM frame_descriptions ORDER BY film_id, frame_index")
        .await;
    for (line, mood) in lines[1..].iter().zip(&moods) {
        assert_eq!(line.len(), 8, "{line:?}");
        assert_eq!(line[3], want[0].pass, "the pass of every row");
        assert_eq!(line[5], mood.replace('\n', " "), "whole, never cut");
    }
    let first = want[0].visual_content.as_ref().unwrap();
    assert_eq!(lines[1][4], first.replace('\n', " "));

    // `cinecut results | less`: stderr is a terminal, stdout is not.
    let size = nix::pty::Winsize {
        ws_row: 50,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    let o = env
        .cmd(["results"])
        .stderr(std::process::Stdio::from(pty.slave))
        .output()
        .unwrap();
    assert_eq!(stdout(&o), plain, "plain lines whenever stdout is a pipe");
}

on_both!(async failed_frames_export_with_their_reasons);

async fn failed_frames_export_with_their_reasons(env: &Env) {
    described(env, 2, "http400").await;
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

on_both!(async search_finds_what_another_process_wrote);

async fn search_finds_what_another_process_wrote(env: &Env) {
    described(env, 5, "tricky").await;
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
    described_as(env, "day", 3, "tricky").await;
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

/// `sqlite-utils search cinecut.db descriptions WORD`, as a new user runs
/// it: it finds the full-text table by itself and returns the rows that
/// hold the word (one description is changed, so the index must follow).
/// SQLite only: sqlite-utils reads a SQLite file.
#[test]
fn sqlite_utils_searches_the_descriptions() {
    let env = Env::new();
    env.enqueue_images("su", 3, &[]);
    let fake = FakeServer::start(&env, &[]);
    assert_exit(
        &env.run(["worker", "--server-url", &fake.url(), "--until-empty"]),
        0,
    );
    env.execute_now(
        "UPDATE descriptions SET visual_content = 'a lighthouse in a storm' \
         WHERE job_id = (SELECT max(job_id) FROM descriptions)",
    );
    let search = |word: &str| -> Vec<serde_json::Value> {
        let o = std::process::Command::new(crate::util::sqlite_utils())
            .arg("search")
            .arg(env.db())
            .args(["descriptions", word])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
    };
    let hits = search("lighthouse");
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0]["visual_content"], "a lighthouse in a storm");
    assert_eq!(
        hits[0]["job_id"].as_i64(),
        Some(env.count_now("SELECT max(job_id) FROM descriptions"))
    );
    assert_eq!(search("window").len(), 2, "the changed row left the index");
    assert!(search("zebra").is_empty());
}

/// `datasette cinecut.db`, as a new user runs it: it finds the full-text
/// index of `descriptions` (declared `content="descriptions"`) and its
/// `_search` returns the rows that hold the word, and only those. SQLite
/// only: datasette serves a SQLite file.
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
