//! The SHA-256 cache of model files (`file_hashes`): a hash holds while the
//! file's path, size and mtime are what they were.

use sqlx::SqlitePool;

use crate::error::Result;

/// A file as the cache knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    pub path: String,
    pub size: i64,
    pub mtime_ns: i64,
}

/// The cached hash of `file`, if its size and mtime still match.
pub async fn cached_sha256(pool: &SqlitePool, file: &FileStamp) -> Result<Option<String>> {
    Ok(sqlx::query_scalar!(
        "SELECT sha256 FROM file_hashes WHERE path = ? AND size = ? AND mtime_ns = ?",
        file.path,
        file.size,
        file.mtime_ns
    )
    .fetch_optional(pool)
    .await?)
}

/// Remembers `sha256` for `file` (replacing what an older version had).
pub async fn store_sha256(
    pool: &SqlitePool,
    file: &FileStamp,
    sha256: &str,
    now: i64,
) -> Result<()> {
    super::retry_busy(|| async {
        sqlx::query!(
            r#"INSERT INTO file_hashes (path, size, mtime_ns, sha256, hashed_at) VALUES (?1, ?2, ?3, ?4, ?5)
               ON CONFLICT (path) DO UPDATE SET size = ?2, mtime_ns = ?3, sha256 = ?4, hashed_at = ?5"#,
            file.path,
            file.size,
            file.mtime_ns,
            sha256,
            now
        )
        .execute(pool)
        .await?;
        Ok(())
    })
    .await
}
