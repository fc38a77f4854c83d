//! A PostgreSQL database of a test's own (on the cluster `scripts/test.sh`
//! started, or on one of the test's own) and synchronous reads of it that
//! work from any thread, a `#[tokio::test]`'s included: each query runs on
//! one runtime shared by the whole test binary, from a thread of its own.

use std::sync::OnceLock;

use crate::pg_util::TestPg;

pub struct Pg {
    pool: sqlx::PgPool,
    pub db: TestPg,
}

/// Runs `fut` to its end on the shared runtime and returns its output.
fn block_on<T: Send>(fut: impl std::future::Future<Output = T> + Send) -> T {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    });
    // A thread of its own: blocking on a runtime is refused on a thread
    // that is already running one.
    std::thread::scope(|s| s.spawn(|| rt.block_on(fut)).join().unwrap())
}

impl Pg {
    pub fn new() -> Pg {
        Self::with(TestPg::new)
    }

    /// On a cluster of the test's own (a test that restarts the server).
    pub fn private() -> Pg {
        Self::with(TestPg::private)
    }

    fn with<F: std::future::Future<Output = TestPg> + Send>(make: impl FnOnce() -> F) -> Pg {
        let db = block_on(make());
        let pool = block_on(sqlx::PgPool::connect(&db.url)).unwrap();
        Pg { pool, db }
    }

    pub fn url(&self) -> &str {
        &self.db.url
    }

    /// The one number `sql` selects (one row, one column, an integer of any
    /// width); a query that fails, or finds no row, fails the test.
    #[track_caller]
    pub fn count(&self, sql: &str) -> i64 {
        let q = sqlx::AssertSqlSafe(format!("SELECT CAST(({sql}) AS BIGINT)"));
        // The cast of a scalar subquery turns no row into NULL.
        block_on(sqlx::query_scalar::<_, Option<i64>>(q).fetch_one(&self.pool))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .unwrap_or_else(|| panic!("{sql}: no row"))
    }

    /// Like [`Pg::count`], but `None` while the schema is not there yet
    /// (a process of the test is still migrating the new database).
    #[track_caller]
    pub fn count_if_ready(&self, sql: &str) -> Option<i64> {
        // The table is made before the first migration: ready once the
        // last one has committed.
        let table = "SELECT count(*) FROM pg_tables WHERE tablename = '_sqlx_migrations'";
        let applied = match self.count(table) {
            0 => 0,
            _ => self.count("SELECT count(*) FROM _sqlx_migrations WHERE success"),
        };
        (applied == super::migrations("migrations/postgres")).then(|| self.count(sql))
    }

    /// Every text value `sql` selects (one column).
    #[track_caller]
    pub fn strings(&self, sql: &str) -> Vec<String> {
        let q = sqlx::AssertSqlSafe(sql.to_string());
        block_on(sqlx::query_scalar::<_, String>(q).fetch_all(&self.pool))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Every number `sql` selects (one column).
    #[track_caller]
    pub fn numbers(&self, sql: &str) -> Vec<i64> {
        let q = sqlx::AssertSqlSafe(sql.to_string());
        block_on(sqlx::query_scalar::<_, i64>(q).fetch_all(&self.pool))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Runs `sql` (statements separated by `;`), a change a test makes.
    #[track_caller]
    pub fn execute(&self, sql: &str) {
        let q = sqlx::AssertSqlSafe(sql.to_string());
        block_on(sqlx::raw_sql(q).execute(&self.pool)).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A count over the period from `start` to `end` (ms since the epoch),
    /// bound as `$1` and `$2`.
    #[track_caller]
    pub fn count_during(&self, sql: &'static str, start: i64, end: i64) -> i64 {
        block_on(
            sqlx::query_scalar::<_, i64>(sql)
                .bind(start)
                .bind(end)
                .fetch_one(&self.pool),
        )
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}
