//! What the model must answer for a frame: [`SceneDescription`], the JSON
//! schema sent with each request, and the validation of the answer. The
//! schema and the validation are both made from [`FIELDS`] and
//! [`MAX_FIELD_CHARS`], so they cannot disagree.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The answer's fields, in the order the model is asked to write them.
pub const FIELDS: [&str; 4] = ["visual_content", "mood", "action", "setting"];

/// Upper bound on each field, in characters.
pub const MAX_FIELD_CHARS: usize = 600;

/// A validated description of one frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SceneDescription {
    pub visual_content: String,
    pub mood: String,
    pub action: String,
    pub setting: String,
}

/// Why an answer is not a valid description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAnswer {
    #[error("output is not JSON: {0}")]
    NotJson(String),
    #[error("output does not match the schema: {0}")]
    Schema(String),
    #[error("field {0} is empty")]
    EmptyField(&'static str),
    #[error("field {field} is {chars} characters long (at most {MAX_FIELD_CHARS})")]
    TooLong { field: &'static str, chars: usize },
}

impl SceneDescription {
    /// The JSON schema sent in `response_format.json_schema.schema`.
    pub fn json_schema() -> Value {
        let props: serde_json::Map<String, Value> = FIELDS
            .iter()
            .map(|f| {
                (
                    f.to_string(),
                    json!({ "type": "string", "minLength": 1, "maxLength": MAX_FIELD_CHARS }),
                )
            })
            .collect();
        json!({
            "type": "object",
            "properties": props,
            "required": FIELDS,
            "additionalProperties": false,
        })
    }

    /// Parses and validates the model's answer.
    pub fn parse(text: &str) -> Result<SceneDescription, InvalidAnswer> {
        let value: Value =
            serde_json::from_str(text.trim()).map_err(|e| InvalidAnswer::NotJson(e.to_string()))?;
        let d: SceneDescription =
            serde_json::from_value(value).map_err(|e| InvalidAnswer::Schema(e.to_string()))?;
        for (field, text) in FIELDS.iter().zip(d.fields()) {
            if text.trim().is_empty() {
                return Err(InvalidAnswer::EmptyField(field));
            }
            let chars = text.chars().count();
            if chars > MAX_FIELD_CHARS {
                return Err(InvalidAnswer::TooLong { field, chars });
            }
        }
        Ok(d)
    }

    /// The field values in [`FIELDS`] order.
    pub fn fields(&self) -> [&str; 4] {
        [
            &self.visual_content,
            &self.mood,
            &self.action,
            &self.setting,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_and_struct_name_the_same_fields() {
        let schema = SceneDescription::json_schema();
        let props: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        let mut want: Vec<&str> = FIELDS.to_vec();
        want.sort();
        let mut got: Vec<&str> = props.iter().map(|s| s.as_str()).collect();
        got.sort();
        assert_eq!(got, want);
        let d = SceneDescription::parse(
            r#"{"visual_content":"a","mood":"b","action":"c","setting":"d"}"#,
        )
        .unwrap();
        assert_eq!(d.fields(), ["a", "b", "c", "d"]);
    }

    #[test]
    fn bad_answers_are_named() {
        assert!(matches!(
            SceneDescription::parse("sure! here"),
            Err(InvalidAnswer::NotJson(_))
        ));
        assert!(matches!(
            SceneDescription::parse(r#"{"visual_content":"a","mood":"b","action":"c"}"#),
            Err(InvalidAnswer::Schema(e)) if e.contains("setting")
        ));
        assert!(matches!(
            SceneDescription::parse(
                r#"{"visual_content":"a","mood":"b","action":"c","setting":"d","x":1}"#
            ),
            Err(InvalidAnswer::Schema(_))
        ));
        assert_eq!(
            SceneDescription::parse(
                r#"{"visual_content":"a","mood":" ","action":"c","setting":"d"}"#
            ),
            Err(InvalidAnswer::EmptyField("mood"))
        );
        let long = "x".repeat(MAX_FIELD_CHARS + 1);
        let text =
            format!(r#"{{"visual_content":"{long}","mood":"b","action":"c","setting":"d"}}"#);
        assert!(matches!(
            SceneDescription::parse(&text),
            Err(InvalidAnswer::TooLong {
                field: "visual_content",
                ..
            })
        ));
    }
}
