//! A real PostgreSQL server for the tests: the cluster `scripts/test.sh`
//! started (its admin URL in `CINECUT_TEST_PG`), or, when that is not set,
//! a throwaway cluster of the test's own (`scripts/pg-cluster.sh`), stopped
//! when the test ends. Each test gets a database of its own.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use cinecut_postgres::PgQueue;

pub struct TestPg {
    /// The test's own database.
    pub url: String,
    /// A cluster of this test's own, stopped on drop.
    private: Option<tempfile::TempDir>,
}

/// `scripts/pg-cluster.sh`, from this crate's tests or from the workspace
/// root's (which include this file).
fn script() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        here.join("scripts/pg-cluster.sh"),
        here.join("../scripts/pg-cluster.sh"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .expect("scripts/pg-cluster.sh")
}

fn cluster(action: &str, dir: &Path) -> String {
    let out = Command::new("bash")
        .arg(script())
        .arg(action)
        .arg(dir)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "scripts/pg-cluster.sh {action} failed (PostgreSQL is installed by `bash scripts/setup.sh --tests`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

static DATABASES: AtomicU32 = AtomicU32::new(0);

impl TestPg {
    /// A database on the shared cluster, or on a cluster of its own.
    pub async fn new() -> TestPg {
        match std::env::var("CINECUT_TEST_PG") {
            Ok(admin) => TestPg::database_on(&admin, None).await,
            Err(_) => TestPg::private().await,
        }
    }

    /// A cluster of this test's own (for tests that restart the server).
    pub async fn private() -> TestPg {
        let dir = tempfile::Builder::new()
            .prefix("cinecut-pg-")
            .tempdir()
            .unwrap();
        let admin = cluster("start", dir.path());
        TestPg::database_on(&admin, Some(dir)).await
    }

    async fn database_on(admin: &str, private: Option<tempfile::TempDir>) -> TestPg {
        // The pid alone repeats across runs on a long-lived cluster (pids
        // are reused), so the name also carries the time.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!(
            "t_{}_{}_{nanos}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        );
        let pool = sqlx::PgPool::connect(admin).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let base = admin.rsplit_once('/').unwrap().0;
        TestPg {
            url: format!("{base}/{name}"),
            private,
        }
    }

    pub async fn queue(&self) -> PgQueue {
        PgQueue::connect(&self.url).await.unwrap()
    }

    /// `pg_ctl restart` of this test's own cluster.
    pub fn restart(&self) {
        let dir = self.private.as_ref().expect("a private cluster");
        cluster("restart", dir.path());
    }
}

impl Drop for TestPg {
    fn drop(&mut self) {
        if let Some(dir) = &self.private {
            cluster("stop", dir.path());
        }
    }
}
