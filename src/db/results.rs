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
