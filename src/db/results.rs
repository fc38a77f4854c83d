//! Reading results out: streamed rows for `results`, ranked full-text
//! matches for `search`. Streams never hold more than a row at a time.

use futures_core::stream::BoxStream;
use serde::Serialize;
use sqlx::SqlitePool;

use crate::error::Result;

/// One described (or failed) frame.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, serde::Deserialize)]
pub struct ResultRow {
    pub film: String,
    pub frame_index: i64,
    pub pts_ms: Option<i64>,
    pub path: String,
    pub visual_content: Option<String>,
    pub mood: Option<String>,
    pub action: Option<String>,
    pub setting: Option<String>,
    pub model: Option<String>,
    /// Why the frame failed (failed rows only).
    pub error: Option<String>,
}

/// Described frames in film and frame order.
pub fn done(pool: &SqlitePool, film: Option<i64>) -> BoxStream<'_, Result<ResultRow, sqlx::Error>> {
    sqlx::query_as!(
        ResultRow,
        r#"SELECT f.title AS "film!", fr.frame_index AS "frame_index!", fr.pts_ms, fr.path AS "path!",
                  d.visual_content AS "visual_content?", d.mood AS "mood?", d.action AS "action?",
                  d.setting AS "setting?", d.model AS "model?", NULL AS "error?: String"
           FROM films f
           JOIN frames fr ON fr.film_id = f.id
           JOIN descriptions d ON d.frame_id = fr.id
           WHERE ?1 IS NULL OR f.id = ?1
           ORDER BY f.id, fr.frame_index"#,
        film
    )
    .fetch(pool)
}

/// Failed frames with their reasons.
pub fn failed(
    pool: &SqlitePool,
    film: Option<i64>,
) -> BoxStream<'_, Result<ResultRow, sqlx::Error>> {
    sqlx::query_as!(
        ResultRow,
        r#"SELECT f.title AS "film!", fr.frame_index AS "frame_index!", fr.pts_ms, fr.path AS "path!",
                  NULL AS "visual_content?: String", NULL AS "mood?: String", NULL AS "action?: String",
                  NULL AS "setting?: String", NULL AS "model?: String", j.last_error AS "error?"
           FROM films f
           JOIN jobs j ON j.film_id = f.id AND j.state = 'failed'
           JOIN frames fr ON fr.id = j.frame_id
           WHERE ?1 IS NULL OR f.id = ?1
           ORDER BY f.id, fr.frame_index"#,
        film
    )
    .fetch(pool)
}

/// A full-text match.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SearchHit {
    pub film: String,
    pub pts_ms: Option<i64>,
    pub path: String,
    pub visual_content: String,
    pub mood: String,
    pub action: String,
    pub setting: String,
    pub rank: f64,
}

/// Best matches first (FTS5 bm25). `query` is an FTS5 expression.
pub async fn search(
    pool: &SqlitePool,
    query: &str,
    film: Option<i64>,
    limit: i64,
) -> Result<Vec<SearchHit>> {
    Ok(sqlx::query_as!(
        SearchHit,
        r#"SELECT f.title AS "film!", fr.pts_ms, fr.path AS "path!", d.visual_content AS "visual_content!",
                  d.mood AS "mood!", d.action AS "action!", d.setting AS "setting!",
                  bm25(description_search) AS "rank!: f64"
           FROM description_search
           JOIN descriptions d ON d.job_id = description_search.rowid
           JOIN frames fr ON fr.id = d.frame_id
           JOIN films f ON f.id = fr.film_id
           WHERE description_search MATCH ?1 AND (?2 IS NULL OR f.id = ?2)
           ORDER BY bm25(description_search)
           LIMIT ?3"#,
        query,
        film,
        limit
    )
    .fetch_all(pool)
    .await?)
}
