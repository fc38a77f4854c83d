//! Which weights a description came from: the SHA-256 of the model and of
//! its mmproj, stored with each description as `<model>+<mmproj>`. A file
//! is hashed once per version (path, size, mtime; cached in
//! `file_hashes`), on a blocking thread while llama-server loads.

use std::io::Read;
use std::path::Path;
use std::time::{Instant, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::db::files::{self, FileStamp};
use crate::db::{Db, now_ms};

/// `<model sha256>+<mmproj sha256>`, or why not (logged by the caller;
/// descriptions then carry no hash). Cached in `db` when there is one (a
/// PostgreSQL worker hashes at every server start).
pub async fn identity(db: Option<&Db>, model: &Path, mmproj: &Path) -> Result<String, String> {
    let (model, mmproj) = tokio::join!(file_sha256(db, model), file_sha256(db, mmproj));
    Ok(format!("{}+{}", model?, mmproj?))
}

/// The SHA-256 of `path`, from the cache when the file is unchanged.
pub async fn file_sha256(db: Option<&Db>, path: &Path) -> Result<String, String> {
    let shown = path.display();
    let canonical = std::fs::canonicalize(path).map_err(|e| format!("{shown}: {e}"))?;
    let meta = std::fs::metadata(&canonical).map_err(|e| format!("{shown}: {e}"))?;
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64);
    let stamp = FileStamp {
        path: canonical.to_string_lossy().into_owned(),
        size: meta.len() as i64,
        mtime_ns,
    };
    if let Some(db) = db
        && let Ok(Some(sha)) = files::cached_sha256(db.pool(), &stamp).await
    {
        return Ok(sha);
    }
    let started = Instant::now();
    let sha = tokio::task::spawn_blocking(move || hash_file(&canonical))
        .await
        .expect("hashing thread")
        .map_err(|e| format!("{shown}: {e}"))?;
    tracing::info!(
        "hashed {shown} ({} MiB) in {:.1} s",
        meta.len() >> 20,
        started.elapsed().as_secs_f64()
    );
    if let Some(db) = db
        && let Err(e) = files::store_sha256(db.pool(), &stamp, &sha, now_ms()).await
    {
        tracing::warn!("could not cache the hash of {shown}: {e}");
    }
    Ok(sha)
}

fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn hashes_are_sha256_in_lowercase_hex() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, "abc").unwrap();
        assert_eq!(
            super::hash_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
