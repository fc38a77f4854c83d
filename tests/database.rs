//! Opening a database: migrations, pragmas, and the errors for bad locations.
//!
//! SQLite only: a SQLite file's own behaviour (its migrations, WAL, locks,
//! paths); PostgreSQL's migrations and connection errors are tested in
//! `postgres.rs`.

use cinecut::db::{Db, Durability};

use crate::util::{Env, FakeServer, assert_exit, stderr};

#[tokio::test]
async fn every_migration_applies_to_a_fresh_file() {
    let env = Env::new();
    let db = Db::open(&env.db(), Durability::Full).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(applied as usize, cinecut::MIGRATOR.iter().count());
    let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(
        page_size,
        i64::from(cinecut::db::PAGE_SIZE),
        "a new file gets the bulk-load page size"
    );
    for table in [
        "films",
        "frames",
        "jobs",
        "attempts",
        "descriptions",
        "gpu_leases",
        "gpu_waiters",
        "workers",
    ] {
        let strict: i64 = sqlx::query_scalar("SELECT strict FROM pragma_table_list WHERE name = ?")
            .bind(table)
            .fetch_one(db.pool())
            .await
            .unwrap_or_else(|e| panic!("table {table}: {e}"));
        assert_eq!(strict, 1, "{table} is STRICT");
    }
    for view in ["frame_descriptions", "film_progress"] {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {view}")))
                .fetch_one(db.pool())
                .await
                .unwrap();
        assert_eq!(n, 0, "{view} is queryable and empty");
    }
    db.close().await;
    // Opening again applies nothing new and succeeds.
    Db::open(&env.db(), Durability::Full)
        .await
        .unwrap()
        .close()
        .await;
}

#[tokio::test]
async fn every_pooled_connection_has_the_pragmas() {
    let env = Env::new();
    for (durability, sync) in [(Durability::Full, 2), (Durability::Normal, 1)] {
        let db = Db::open(&env.db(), durability).await.unwrap();
        // Hold several connections at once so they are distinct.
        let mut conns = Vec::new();
        for _ in 0..3 {
            conns.push(db.pool().acquire().await.unwrap());
        }
        for conn in &mut conns {
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut **conn)
                .await
                .unwrap();
            let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
                .fetch_one(&mut **conn)
                .await
                .unwrap();
            let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
                .fetch_one(&mut **conn)
                .await
                .unwrap();
            let s: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut **conn)
                .await
                .unwrap();
            assert_eq!(mode, "wal");
            assert_eq!(fk, 1);
            assert!(busy >= 5000, "busy_timeout {busy}");
            assert_eq!(s, sync);
        }
        drop(conns);
        db.close().await;
    }
}

#[test]
fn a_missing_folder_is_a_clear_error() {
    let env = Env::new();
    let o = std::process::Command::new(crate::util::BIN)
        .arg("--db")
        .arg(env.path().join("no/such/folder/x.db"))
        .args(["enqueue", "frames"])
        .output()
        .unwrap();
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("does not exist; create it or pass another --db"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_directory_as_database_is_a_clear_error() {
    let env = Env::new();
    let o = std::process::Command::new(crate::util::BIN)
        .arg("--db")
        .arg(env.path())
        .arg("status")
        .output()
        .unwrap();
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("is a directory"), "{}", stderr(&o));
}

#[test]
fn a_file_that_is_not_sqlite_is_a_clear_error_and_stays_unchanged() {
    let env = Env::new();
    let text = "these are my notes, not a database\n".repeat(200);
    std::fs::write(env.db(), &text).unwrap();
    let o = env.run(["status"]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("is not a SQLite database"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(env.db()).unwrap(), text);
}

#[tokio::test]
async fn a_schema_newer_than_the_binary_is_a_clear_error() {
    let env = Env::new();
    env.make_db();
    {
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(env.db());
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (9999, 'from the future', 1, x'00', 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let o = env.run(["status"]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("schema version 9999, newer than this cinecut knows"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_bad_flag_is_a_usage_error_with_exit_code_2() {
    let env = Env::new();
    let o = env.run(["enqueue", "--no-such-flag"]);
    assert_exit(&o, 2);
    let o = env.run(["--durability", "sometimes", "status"]);
    assert_exit(&o, 2);
    let o = env.run(["enqueue", "--max-attempts", "0", "x"]);
    assert_exit(&o, 2);
    assert!(!env.db().exists(), "a usage error touches no database");
}

/// A command that only reads, pointed at a file that does not exist (a
/// mistyped --db), fails naming the file and makes none: an empty database
/// would answer as an empty queue. A worker may start before the first
/// enqueue, so it makes the database.
#[test]
fn a_read_command_on_a_missing_database_is_an_error_and_makes_no_file() {
    let env = Env::new();
    let commands: [&[&str]; 8] = [
        &["status"],
        &["results"],
        &["search", "car"],
        &["passes"],
        &["report"],
        &["gpu"],
        &["retry", "--failed"],
        &["cancel", "--film", "x"],
    ];
    for args in commands {
        let o = env.run(args);
        assert_exit(&o, 1);
        let expected = format!("no database at {}", env.db().display());
        assert!(stderr(&o).contains(&expected), "{args:?}: {}", stderr(&o));
        assert!(!env.db().exists(), "{args:?} made a database");
    }
    let fake = FakeServer::start(&env, &[]);
    let o = env.run(["worker", "--server-url", &fake.url(), "--until-empty"]);
    assert_exit(&o, 0);
    assert!(env.db().exists(), "a worker makes the database it waits on");
}

/// A PostgreSQL URL given to --db (or CINECUT_DB) selects PostgreSQL, never
/// a SQLite file named `postgres:` made in the current folder, and a server
/// that cannot be reached is a clear error (the commands that run there:
/// tests/postgres.rs).
#[test]
fn a_postgres_url_selects_postgresql_and_writes_no_file() {
    let env = Env::new();
    for (how, url) in [
        ("--db", "postgres://cinecut:secret@127.0.0.1:1/cinecut"),
        ("CINECUT_DB", "postgresql://cinecut:secret@127.0.0.1:1/y"),
    ] {
        let run = |command: &str| {
            let mut c = std::process::Command::new(crate::util::BIN);
            c.current_dir(env.path());
            if how == "--db" {
                c.args(["--db", url, command]).env_remove("CINECUT_DB");
            } else {
                c.arg(command).env("CINECUT_DB", url);
            }
            c.output().unwrap()
        };
        // Every command goes to PostgreSQL (none to a file named like the
        // URL): here none is listening.
        for command in ["status", "report"] {
            let o = run(command);
            assert_exit(&o, 1);
            assert!(
                stderr(&o).contains("PostgreSQL database postgres"),
                "{how} {command}: {}",
                stderr(&o)
            );
            assert!(
                !stderr(&o).contains("secret"),
                "{how} {command}: the password shows: {}",
                stderr(&o)
            );
        }
        assert!(
            std::fs::read_dir(env.path()).unwrap().next().is_none(),
            "{how}: nothing written"
        );
    }
}

/// Numbers that parse but cannot work are usage errors that say what
/// would; flags that only fail together are runtime errors naming the flag.
#[test]
fn a_value_that_cannot_work_is_refused_by_name() {
    let env = Env::new();
    for (flag, value) in [
        ("--every", "0"),
        ("--every", "nan"),
        ("--max-gap", "-3"),
        ("--scene-threshold", "1.5"),
    ] {
        let o = env.run(["enqueue", &format!("{flag}={value}"), "film.mp4"]);
        assert_exit(&o, 2);
        let err = stderr(&o);
        assert!(
            err.contains(flag) && err.contains(value),
            "{flag} {value}: {err}"
        );
    }
    let o = env.run([
        "worker",
        "--server-url",
        "http://127.0.0.1:9",
        "--request-timeout",
        "0s",
    ]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("--request-timeout 0s"),
        "{}",
        stderr(&o)
    );
    let o = env.run([
        "worker",
        "--server-url",
        "http://127.0.0.1:9",
        "--lease-ttl",
        "100ms",
    ]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("--lease-ttl 100ms is too short"),
        "{}",
        stderr(&o)
    );
}

/// What `cinecut --help` prints (it exits 0).
fn main_help() -> String {
    let o = std::process::Command::new(crate::util::BIN)
        .arg("--help")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    crate::util::stdout(&o)
}

#[test]
fn help_documents_the_exit_codes() {
    let help = main_help();
    assert!(help.contains("2  usage error"), "{help}");
}

/// The commands in the order a user meets them: the whole job, the
/// producer and the worker, then the readers, then the rest.
#[test]
fn help_lists_the_commands_in_the_order_a_user_meets_them() {
    let help = main_help();
    let listed: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // A command's first line; its wrapped help is indented further.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .collect();
    assert_eq!(
        listed,
        [
            "run",
            "enqueue",
            "worker",
            "describe",
            "status",
            "results",
            "search",
            "passes",
            "report",
            "retry",
            "cancel",
            "gpu",
            "gpu-lock",
            "completions"
        ],
        "{help}"
    );
    assert!(
        help.contains("Enqueue films"),
        "enqueue's line names films first: {help}"
    );
}

/// A database made by the first release (migrations 0001 and 0002) keeps all
/// its rows, references and search index through the later migrations, and
/// the rebuilt tables still refuse what they refused before.
#[tokio::test]
async fn a_database_with_work_in_it_migrates_without_losing_anything() {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    let env = Env::new();
    // The schema as the first release left it.
    let first = tempfile::tempdir().unwrap();
    for m in ["0001_schema.sql", "0002_search.sql"] {
        std::fs::copy(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(m),
            first.path().join(m),
        )
        .unwrap();
    }
    let old = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(env.db())
                .create_if_missing(true)
                .foreign_keys(true),
        )
        .await
        .unwrap();
    sqlx::migrate::Migrator::new(first.path())
        .await
        .unwrap()
        .run(&old)
        .await
        .unwrap();
    sqlx::raw_sql(
        "INSERT INTO films (id, title, frame_count, created_at) VALUES (1, 'film', 3, 0);
         INSERT INTO frames (id, film_id, frame_index, pts_ms, path, created_at) VALUES
             (1, 1, 0, 0, '/f/0.jpg', 0), (2, 1, 1, 40, '/f/1.jpg', 0), (3, 1, 2, 80, '/f/2.jpg', 0);
         INSERT INTO jobs (id, frame_id, film_id, state, created_at, updated_at) VALUES
             (1, 1, 1, 'done', 0, 0), (2, 2, 1, 'failed', 0, 0), (3, 3, 1, 'queued', 0, 0);
         INSERT INTO attempts (job_id, worker_id, started_at, outcome) VALUES
             (1, 'w', 0, 'done'), (2, 'w', 0, 'retry'), (2, 'w', 0, 'failed');
         INSERT INTO descriptions (job_id, frame_id, visual_content, mood, action, setting,
                                   model, prompt_version, created_at)
             VALUES (1, 1, 'a red door', 'calm', 'nothing moves', 'a hallway', 'm', 1, 0);",
    )
    .execute(&old)
    .await
    .unwrap();
    old.close().await;

    let db = Db::open(&env.db(), Durability::Full).await.unwrap();
    let pool = db.pool();
    let count = |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(pool)
            .await
            .unwrap()
    };
    assert_eq!(count("SELECT count(*) FROM jobs").await, 3);
    assert_eq!(
        count("SELECT count(*) FROM jobs WHERE state = 'failed'").await,
        1
    );
    assert_eq!(count("SELECT count(*) FROM attempts").await, 3);
    assert_eq!(count("SELECT count(*) FROM descriptions").await, 1);
    assert_eq!(
        count("SELECT count(*) FROM film_progress WHERE done = 1 AND failed = 1 AND queued = 1")
            .await,
        1
    );
    assert_eq!(
        count("SELECT count(*) FROM description_search WHERE description_search MATCH 'door'")
            .await,
        1
    );
    assert_eq!(
        count("SELECT count(*) FROM pragma_foreign_key_check").await,
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND sql LIKE '%IN (%'")
            .await,
        0,
        "no CHECK (x IN (...)) is left"
    );
    // The checks still hold, and the references still cascade.
    let bad_state = sqlx::query("UPDATE jobs SET state = 'lost' WHERE id = 3")
        .execute(pool)
        .await;
    assert!(bad_state.is_err(), "a state outside the list is refused");
    let bad_outcome = sqlx::query(
        "INSERT INTO attempts (job_id, worker_id, started_at, outcome) VALUES (3, 'w', 0, 'maybe')",
    )
    .execute(pool)
    .await;
    assert!(
        bad_outcome.is_err(),
        "an outcome outside the list is refused"
    );
    let orphan = sqlx::query(
        "INSERT INTO attempts (job_id, worker_id, started_at, outcome) VALUES (99, 'w', 0, 'done')",
    )
    .execute(pool)
    .await;
    assert!(orphan.is_err(), "attempts still reference jobs");
    sqlx::query("DELETE FROM films WHERE id = 1")
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(count("SELECT count(*) FROM jobs").await, 0);
    assert_eq!(count("SELECT count(*) FROM attempts").await, 0);
    db.close().await;
}

/// A film deleted by another process while its frames are being enqueued is
/// a clear error, and nothing of the chunk is written.
#[tokio::test]
async fn enqueuing_into_a_deleted_film_is_a_clear_error() {
    use cinecut::db::queue::{self, FilmSpec, FrameChunk, JobSpec, NewFrame};

    let env = Env::new();
    let db = Db::open(&env.db(), Durability::Full).await.unwrap();
    let film = queue::ensure_film(
        db.pool(),
        &FilmSpec {
            title: "gone".into(),
            ..FilmSpec::default()
        },
    )
    .await
    .unwrap();
    queue::delete_film(db.pool(), film).await.unwrap();
    let chunk = FrameChunk::new(&[NewFrame {
        path: "/frames/1.jpg".into(),
        frame_index: Some(0),
        pts_ms: None,
        width: None,
        height: None,
        dhash: None,
        duplicate_of: None,
        dedupe_distance: None,
        shot: None,
    }]);
    let mut loader = db.bulk_loader().await.unwrap();
    let err = loader
        .enqueue_chunk(
            film,
            &chunk,
            &JobSpec {
                max_attempts: 3,
                passes: &[],
            },
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("was deleted while its frames were being enqueued"),
        "{err}"
    );
    let frames: i64 = sqlx::query_scalar("SELECT count(*) FROM frames")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(frames, 0);
    db.close().await;
}

/// A near-duplicate enqueued after its original was described (a later
/// chunk of a long film, a fast worker) gets the copy at once and is done;
/// one whose original failed is left to be described on its own.
#[tokio::test]
async fn a_duplicate_of_an_already_described_frame_is_done_when_enqueued() {
    use cinecut::db::queue::{self, FilmSpec, FrameChunk, JobSpec, NewFrame};

    let env = Env::new();
    let db = Db::open(&env.db(), Durability::Full).await.unwrap();
    let film = queue::ensure_film(
        db.pool(),
        &FilmSpec {
            title: "long".into(),
            ..FilmSpec::default()
        },
    )
    .await
    .unwrap();
    let frame = |i: i64, duplicate_of: Option<i64>| NewFrame {
        path: format!("/frames/{i}.jpg"),
        duplicate_of: duplicate_of.map(|o| format!("/frames/{o}.jpg")),
        dedupe_distance: None,
        frame_index: Some(i),
        pts_ms: Some(i * 1000),
        width: None,
        height: None,
        dhash: Some(0x0f0f),
        shot: None,
    };
    const ONE_TRY: JobSpec = JobSpec {
        max_attempts: 1,
        passes: &[],
    };
    let mut loader = db.bulk_loader().await.unwrap();
    loader
        .enqueue_chunk(
            film,
            &FrameChunk::new(&[frame(0, None), frame(1, None)]),
            &ONE_TRY,
        )
        .await
        .unwrap();
    env.execute_now(
        "INSERT INTO descriptions (job_id, frame_id, pass_id, visual_content, mood, action, setting, \
         fields, model, prompt_version, created_at) \
         SELECT j.id, j.frame_id, j.pass_id, 'a lighthouse', 'calm', 'none', 'coast', '{}', 'm', 1, 5 \
         FROM frames fr JOIN jobs j ON j.frame_id = fr.id WHERE fr.frame_index = 0; \
         UPDATE jobs SET state = 'done' WHERE frame_id = (SELECT id FROM frames WHERE frame_index = 0); \
         UPDATE jobs SET state = 'failed' WHERE frame_id = (SELECT id FROM frames WHERE frame_index = 1);",
    );
    loader
        .enqueue_chunk(
            film,
            &FrameChunk::new(&[frame(2, Some(0)), frame(3, Some(1))]),
            &ONE_TRY,
        )
        .await
        .unwrap();
    let rows: Vec<(i64, String, Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT fr.frame_index, j.state, d.visual_content, fr.duplicate_of \
         FROM frames fr JOIN jobs j ON j.frame_id = fr.id LEFT JOIN descriptions d ON d.job_id = j.id \
         WHERE fr.frame_index >= 2 ORDER BY fr.frame_index",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let original: i64 = sqlx::query_scalar("SELECT id FROM frames WHERE frame_index = 0")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![
            (
                2,
                "done".into(),
                Some("a lighthouse".into()),
                Some(original)
            ),
            (3, "queued".into(), None, None),
        ]
    );
    db.close().await;
}
