//! Reading results out: pages of rows for `results` (keyset paging, so
//! memory stays bounded at any size), ranked full-text matches for `search`.

use sqlx::SqlitePool;

use crate::error::Result;

pub use cinecut_types::{DialogueHit, ResultRow, SearchHit};

/// Rows per page: memory stays bounded whatever the table size.
pub const PAGE: i64 = 5000;

/// The field names of each pass's profile, in pass then profile order,
/// for pass `only` or every pass: `(pass id, None)` for a pass with no
/// profile recorded (its answers are the default profile's).
pub async fn pass_fields(
    pool: &SqlitePool,
    only: Option<i64>,
) -> Result<Vec<(i64, Option<String>)>> {
    Ok(sqlx::query!(
        r#"SELECT p.id AS "pass!", f.value ->> '$.name' AS "name?: String"
           FROM passes p LEFT JOIN json_each(p.profile, '$.fields') f
           WHERE ?1 IS NULL OR p.id = ?1
           ORDER BY p.id, f.key"#,
        only
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.pass, r.name))
    .collect())
}

/// The films to export, in order.
pub async fn film_ids(pool: &SqlitePool, only: Option<i64>) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar!(
        r#"SELECT id AS "id!" FROM films WHERE ?1 IS NULL OR id = ?1 ORDER BY id"#,
        only
    )
    .fetch_all(pool)
    .await?)
}

/// Where a page starts: after this (frame_index, pass id).
pub type PageKey = (i64, i64);

/// A page of one film's described frames in frame then pass order (of one
/// pass, or of all), after `after`: a range seek on `UNIQUE(film_id,
/// frame_index)`, so each page costs the same however far the export has got.
pub async fn done_page(
    pool: &SqlitePool,
    film: i64,
    pass: Option<i64>,
    after: PageKey,
) -> Result<Vec<ResultRow>> {
    let (after_frame, after_pass) = after;
    Ok(sqlx::query_as!(
        ResultRow,
        r#"SELECT fr.film_id AS "film_id!", (SELECT title FROM films WHERE id = ?1) AS "film!: String",
                  fr.frame_index AS "frame_index!", fr.pts_ms,
                  fr.path AS "path!", d.visual_content AS "visual_content?", d.mood AS "mood?",
                  d.action AS "action?", d.setting AS "setting?", d.model AS "model?", NULL AS "error?: String",
                  p.name AS "pass!", d.fields AS "fields?", d.pass_id AS "pass_id!"
           FROM frames fr
           JOIN descriptions d ON d.frame_id = fr.id
           JOIN passes p ON p.id = d.pass_id
           WHERE fr.film_id = ?1 AND fr.frame_index >= ?2 AND (fr.frame_index > ?2 OR d.pass_id > ?3)
             AND (?4 IS NULL OR d.pass_id = ?4)
           ORDER BY fr.frame_index, d.pass_id
           LIMIT ?5"#,
        film,
        after_frame,
        after_pass,
        pass,
        PAGE
    )
    .fetch_all(pool)
    .await?)
}

/// A page of failed frames with their reasons, as [`done_page`].
pub async fn failed_page(
    pool: &SqlitePool,
    film: i64,
    pass: Option<i64>,
    after: PageKey,
) -> Result<Vec<ResultRow>> {
    let (after_frame, after_pass) = after;
    Ok(sqlx::query_as!(
        ResultRow,
        r#"SELECT fr.film_id AS "film_id!", (SELECT title FROM films WHERE id = ?1) AS "film!: String",
                  fr.frame_index AS "frame_index!", fr.pts_ms,
                  fr.path AS "path!", NULL AS "visual_content?: String", NULL AS "mood?: String",
                  NULL AS "action?: String", NULL AS "setting?: String", NULL AS "model?: String",
                  j.last_error AS "error?", p.name AS "pass!", NULL AS "fields?: String",
                  j.pass_id AS "pass_id!"
           FROM frames fr
           JOIN jobs j ON j.frame_id = fr.id AND j.state = 'failed'
           JOIN passes p ON p.id = j.pass_id
           WHERE fr.film_id = ?1 AND fr.frame_index >= ?2 AND (fr.frame_index > ?2 OR j.pass_id > ?3)
             AND (?4 IS NULL OR j.pass_id = ?4)
           ORDER BY fr.frame_index, j.pass_id
           LIMIT ?5"#,
        film,
        after_frame,
        after_pass,
        pass,
        PAGE
    )
    .fetch_all(pool)
    .await?)
}

/// Best matches first (FTS5 bm25). `query` is an FTS5 expression.
/// An FTS5 query that matches all of the user's words, whatever punctuation
/// they typed (each word quoted, so FTS5 syntax cannot break it); `None`
/// when the text has no words.
pub fn fts_query(text: &str) -> Option<String> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| format!("\"{w}\""))
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

pub async fn search(
    pool: &SqlitePool,
    query: &str,
    film: Option<i64>,
    pass: Option<i64>,
    limit: i64,
) -> Result<Vec<SearchHit>> {
    Ok(sqlx::query_as!(
        SearchHit,
        r#"SELECT f.title AS "film!", p.name AS "pass!", fr.pts_ms, fr.path AS "path!",
                  d.visual_content, d.mood, d.action, d.setting, d.search_text,
                  d.fields AS "fields!", bm25(description_search) AS "rank!: f64"
           FROM description_search
           JOIN descriptions d ON d.job_id = description_search.rowid
           JOIN passes p ON p.id = d.pass_id
           JOIN frames fr ON fr.id = d.frame_id
           JOIN films f ON f.id = fr.film_id
           WHERE description_search MATCH ?1 AND (?2 IS NULL OR f.id = ?2) AND (?3 IS NULL OR d.pass_id = ?3)
           ORDER BY bm25(description_search)
           LIMIT ?4"#,
        query,
        film,
        pass,
        limit
    )
    .fetch_all(pool)
    .await?)
}

/// Best matching subtitle lines first (FTS5 bm25 over `subtitle_search`).
pub async fn search_dialogue(
    pool: &SqlitePool,
    query: &str,
    film: Option<i64>,
    limit: i64,
) -> Result<Vec<DialogueHit>> {
    Ok(sqlx::query_as!(
        DialogueHit,
        r#"SELECT f.title AS "film!", s.start_ms AS "start_ms!", s.end_ms AS "end_ms!", s.text AS "text!",
                  fr.frame_index AS "frame_index?", fr.path AS "path?"
           FROM subtitle_search
           JOIN subtitles s ON s.id = subtitle_search.rowid
           JOIN films f ON f.id = s.film_id
           LEFT JOIN frames fr ON fr.id = (
               SELECT x.id FROM frames x
               WHERE x.film_id = s.film_id AND x.pts_ms >= s.start_ms
               ORDER BY x.pts_ms LIMIT 1)
           WHERE subtitle_search MATCH ?1 AND (?2 IS NULL OR f.id = ?2)
           ORDER BY bm25(subtitle_search)
           LIMIT ?3"#,
        query,
        film,
        limit
    )
    .fetch_all(pool)
    .await?)
}

/// What `results` and `search` read, on either backend.
impl super::Store {
    /// The id of the film titled `title`.
    pub async fn film_id(&self, title: &str) -> Result<i64> {
        match self {
            super::Store::Sqlite(db) => super::queue::film_id(db.pool(), title).await,
            super::Store::Postgres(db) => db.film_id(title).await,
        }
    }

    /// The id of the pass named `name`.
    pub async fn pass_id(&self, name: &str) -> Result<i64> {
        match self {
            super::Store::Sqlite(db) => Ok(super::passes::by_name(db.pool(), name).await?.id),
            super::Store::Postgres(db) => db.pass_id(name).await,
        }
    }

    /// How many passes there are.
    pub async fn pass_count(&self) -> Result<i64> {
        match self {
            super::Store::Sqlite(db) => super::passes::count(db.pool()).await,
            super::Store::Postgres(db) => Ok(db.passes().await?.len() as i64),
        }
    }

    /// See [`pass_fields`].
    pub async fn pass_fields(&self, only: Option<i64>) -> Result<Vec<(i64, Option<String>)>> {
        match self {
            super::Store::Sqlite(db) => pass_fields(db.pool(), only).await,
            super::Store::Postgres(db) => Ok(db
                .pass_fields(only)
                .await?
                .into_iter()
                .map(|(pass, field)| (pass, field.map(|(name, _)| name)))
                .collect()),
        }
    }

    /// See [`film_ids`].
    pub async fn result_films(&self, only: Option<i64>) -> Result<Vec<i64>> {
        match self {
            super::Store::Sqlite(db) => film_ids(db.pool(), only).await,
            super::Store::Postgres(db) => db.result_films(only).await,
        }
    }

    /// See [`done_page`] and (with `failed`) [`failed_page`].
    pub async fn result_page(
        &self,
        film: i64,
        pass: Option<i64>,
        after: PageKey,
        failed: bool,
    ) -> Result<Vec<ResultRow>> {
        match (self, failed) {
            (super::Store::Sqlite(db), false) => done_page(db.pool(), film, pass, after).await,
            (super::Store::Sqlite(db), true) => failed_page(db.pool(), film, pass, after).await,
            (super::Store::Postgres(db), _) => db.result_page(film, pass, after, failed).await,
        }
    }

    /// Descriptions with every word of `text`, best first: FTS5 on SQLite,
    /// `tsvector` (English stemming) on PostgreSQL. `None` when `text`
    /// has no words.
    pub async fn search(
        &self,
        text: &str,
        film: Option<i64>,
        pass: Option<i64>,
        limit: i64,
    ) -> Result<Option<Vec<SearchHit>>> {
        let Some(query) = fts_query(text) else {
            return Ok(None);
        };
        Ok(Some(match self {
            super::Store::Sqlite(db) => search(db.pool(), &query, film, pass, limit).await?,
            super::Store::Postgres(db) => db.search(text, film, pass, limit).await?,
        }))
    }

    /// See [`search_dialogue`]; on PostgreSQL, its full-text search.
    pub async fn search_dialogue(
        &self,
        text: &str,
        film: Option<i64>,
        limit: i64,
    ) -> Result<Vec<DialogueHit>> {
        match (self, fts_query(text)) {
            (super::Store::Sqlite(db), Some(query)) => {
                search_dialogue(db.pool(), &query, film, limit).await
            }
            (super::Store::Postgres(db), Some(_)) => db.search_dialogue(text, film, limit).await,
            (_, None) => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fts_query;

    #[test]
    fn every_word_is_quoted_and_punctuation_dropped() {
        assert_eq!(
            fts_query("rainy night").as_deref(),
            Some("\"rainy\" \"night\"")
        );
        assert_eq!(
            fts_query("  \"neon\" OR (rain)* -car:").as_deref(),
            Some("\"neon\" \"OR\" \"rain\" \"car\"")
        );
        assert_eq!(fts_query("café über").as_deref(), Some("\"café\" \"über\""));
    }

    #[test]
    fn text_without_words_is_no_query() {
        assert_eq!(fts_query(""), None);
        assert_eq!(fts_query(" -*\"() "), None);
    }
}
