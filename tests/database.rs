//! Opening a database: migrations, pragmas, and the errors for bad locations.

use cinecut::db::{Db, Durability};

use crate::util::{Env, assert_exit, stderr};

#[tokio::test]
async fn every_migration_applies_to_a_fresh_file() {
    let env = Env::new();
    let db = Db::open(&env.db(), Durability::Full).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(applied as usize, cinecut::MIGRATOR.iter().count());
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
        .arg("status")
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
    assert_exit(&env.run(["status"]), 0);
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

#[test]
fn help_documents_the_exit_codes() {
    let o = std::process::Command::new(crate::util::BIN)
        .arg("--help")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let help = crate::util::stdout(&o);
    assert!(help.contains("2  usage error"), "{help}");
}
