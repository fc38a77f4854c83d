//! The same inputs give the same data on both backends: the views SQL users
//! read have the same columns in the same order, and a description written
//! by a supervised worker keeps the same facts of its try (the weights'
//! SHA-256, the prompt version, latency and token counts) on SQLite and on
//! PostgreSQL. Regression: PostgreSQL's descriptions kept only the answer
//! and the model's name, and `passes` there printed other columns.

use crate::postgres::Pg;
use crate::util::{Env, assert_exit, llama_server, stderr, stdout, tiny_model};

/// The database a test body reads, on either backend; every read fails
/// the test with its query and error (never a quiet 0).
enum Backend<'a> {
    Sqlite(&'a Env),
    Postgres(&'a Pg),
}

impl Backend<'_> {
    fn strings(&self, sql: &str) -> Vec<String> {
        match self {
            Backend::Sqlite(env) => env.strings_now(sql),
            Backend::Postgres(pg) => pg.strings(sql),
        }
    }

    fn count(&self, sql: &str) -> i64 {
        let cast = format!("SELECT CAST(({sql}) AS TEXT)");
        let text = self.strings(&cast);
        text.first()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{sql}: no number ({text:?})"))
    }

    /// The columns of view `view`, in order.
    fn columns(&self, view: &str) -> Vec<String> {
        let sql = match self {
            Backend::Sqlite(_) => {
                format!("SELECT name FROM pragma_table_info('{view}') ORDER BY cid")
            }
            Backend::Postgres(_) => format!(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_name = '{view}' ORDER BY ordinal_position"
            ),
        };
        self.strings(&sql)
    }
}

/// The views README presents as the schema, for SQL users.
const VIEWS: [&str; 5] = [
    "frame_descriptions",
    "frame_times",
    "frame_dialogue",
    "film_progress",
    "pass_comparison",
];

#[test]
fn the_views_have_the_same_columns_on_both_backends() {
    let sqlite = Env::new();
    let pg = Pg::new();
    let postgres = Env::on_postgres(pg.url());
    for env in [&sqlite, &postgres] {
        // Any command migrates a new database.
        assert_exit(&env.run(["status"]), 0);
    }
    for view in VIEWS {
        let on_sqlite = Backend::Sqlite(&sqlite).columns(view);
        assert!(!on_sqlite.is_empty(), "SQLite has no view {view}");
        assert_eq!(
            on_sqlite,
            Backend::Postgres(&pg).columns(view),
            "view {view}"
        );
    }
}

#[test]
fn a_supervised_worker_records_the_weights_prompt_tokens_and_latency() {
    let env = Env::new();
    described_with_their_facts(&env, &Backend::Sqlite(&env));
}

#[test]
fn a_supervised_worker_records_the_weights_prompt_tokens_and_latency_on_postgres() {
    let pg = Pg::new();
    let env = Env::on_postgres(pg.url());
    described_with_their_facts(&env, &Backend::Postgres(&pg));
}

/// One test body, two backends: three stills described by the real
/// llama-server with the tiny model; each description names the weights
/// that answered (the pass learns them too), its prompt version, its
/// tokens and its latency, and `passes --json` reports the means.
fn described_with_their_facts(env: &Env, db: &Backend) {
    env.enqueue_images("stills", 3, &[]);
    let (model, mmproj, _) = tiny_model();
    let mut w = env.cmd(["worker", "--until-empty", "--parallel", "2"]);
    w.arg("--model").arg(&model).arg("--mmproj").arg(&mmproj);
    w.arg("--server-bin").arg(llama_server());
    w.args(["--server-arg=-t", "--server-arg=1"]);
    let o = w.output().unwrap();
    assert_exit(&o, 0);
    assert_eq!(
        db.count("SELECT count(*) FROM frame_descriptions"),
        3,
        "{}",
        stderr(&o)
    );
    let sha = db.strings("SELECT DISTINCT model_sha256 FROM frame_descriptions");
    assert_eq!(sha.len(), 1, "one set of weights answered: {sha:?}");
    let hex = |h: &str| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
    assert!(
        sha[0].split('+').map(hex).eq([true, true]),
        "the model's and the mmproj's SHA-256 in hex: {sha:?}"
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM frame_descriptions WHERE prompt_version >= 1 \
             AND latency_ms > 0 AND prompt_tokens > 0 AND completion_tokens > 0"
        ),
        3,
        "every description keeps its try's facts"
    );
    assert_eq!(
        db.strings("SELECT model_sha256 FROM passes WHERE model_sha256 IS NOT NULL"),
        sha,
        "the pass learnt its weights from its first description"
    );
    let listed = stdout(&env.run(["passes", "--json"]));
    let pass: serde_json::Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(pass["model_sha256"], sha[0].as_str(), "{listed}");
    assert_eq!(pass["described"], 3, "{listed}");
    for mean in [
        "mean_latency_ms",
        "mean_prompt_tokens",
        "mean_completion_tokens",
    ] {
        assert!(
            pass[mean].as_f64().is_some_and(|v| v > 0.0),
            "{mean}: {listed}"
        );
    }
}
