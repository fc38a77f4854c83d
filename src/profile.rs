//! What a pass asks the model and what it must answer: a prompt
//! [`Profile`] (system text, user text, and typed fields), the JSON schema
//! sent with each request, and the validation of each answer into an
//! [`Answer`]. The schema and the validation are both made from the
//! profile's fields, so they cannot disagree.
//!
//! The built-in [`Profile::default`] is cinecut's original prompt and its
//! four seed fields (`visual_content`, `mood`, `action`, `setting`),
//! unchanged; `--prompt FILE` reads another from TOML ([`Profile::load`]).
//! A profile's identity is the SHA-256 of its canonical JSON
//! ([`Profile::hash`]), stored with its pass.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// The default profile's fields, in the order the model is asked to write them.
pub const SEED_FIELDS: [&str; 4] = ["visual_content", "mood", "action", "setting"];

/// Upper bound on a default text field, in characters.
pub const MAX_FIELD_CHARS: usize = 600;

const SYSTEM_PROMPT: &str = "You describe single frames of a film for an editor's search index. \
Answer with one JSON object with the keys visual_content, mood, action and setting, and nothing else.";
const USER_TEXT: &str = "Describe this frame. visual_content: what is visible. mood: the emotional tone. \
action: what is happening. setting: the place and time of day. One short sentence each.";

/// A prompt and the fields of its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    pub name: String,
    pub system: String,
    pub user: String,
    pub fields: Vec<Field>,
    /// The dialogue line on screen is added to the prompt (`--dialogue-context`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dialogue_context: bool,
}

/// One field of the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Field {
    pub name: String,
    /// What the model is told about it (a line after the user text); empty
    /// where the user text says it already.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub instruction: String,
    #[serde(flatten)]
    pub kind: FieldKind,
}

/// A field's type and its bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum FieldKind {
    /// Non-empty text of at most `max_length` characters.
    Text {
        max_length: usize,
    },
    /// One of `values`.
    Enum {
        values: Vec<String>,
    },
    /// Up to `max_items` distinct short non-empty strings.
    Tags {
        max_items: usize,
        max_length: usize,
    },
    /// A whole number in `min..=max`.
    Integer {
        min: i64,
        max: i64,
    },
    Boolean,
}

/// Longest tag, unless the profile says.
const DEFAULT_TAG_CHARS: usize = 40;

/// Why a profile file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("prompt profile {path}: {reason}")]
pub struct ProfileError {
    pub path: String,
    pub reason: String,
}

/// Why an answer is not valid for its profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAnswer {
    #[error("output is not JSON: {0}")]
    NotJson(String),
    #[error("output does not match the schema: {0}")]
    Schema(String),
    #[error("field {0} is empty")]
    EmptyField(String),
    #[error("field {field} is {chars} characters long (at most {max})")]
    TooLong {
        field: String,
        chars: usize,
        max: usize,
    },
    #[error("field {field}: {reason}")]
    OutOfBounds { field: String, reason: String },
}

/// A validated answer: every field of its profile, nothing else (made
/// only by [`Profile::parse_answer`]).
pub use cinecut_types::Answer;

impl Default for Profile {
    /// cinecut's original prompt and the four seed fields.
    fn default() -> Profile {
        Profile {
            name: "default".into(),
            system: SYSTEM_PROMPT.into(),
            user: USER_TEXT.into(),
            fields: SEED_FIELDS
                .iter()
                .map(|name| Field {
                    name: (*name).into(),
                    instruction: String::new(),
                    kind: FieldKind::Text {
                        max_length: MAX_FIELD_CHARS,
                    },
                })
                .collect(),
            dialogue_context: false,
        }
    }
}

/// A profile file as written (TOML), before it is checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    name: Option<String>,
    system: Option<String>,
    user: Option<String>,
    #[serde(default)]
    fields: Vec<FieldFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldFile {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    instruction: String,
    max_length: Option<usize>,
    values: Option<Vec<String>>,
    max_items: Option<usize>,
    min: Option<i64>,
    max: Option<i64>,
}

impl Profile {
    /// Reads a TOML profile; an error names the file and the field.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let fail = |reason: String| ProfileError {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "custom".into());
        Profile::parse(&text, &stem).map_err(fail)
    }

    /// Parses a TOML profile named `stem` unless it names itself.
    pub fn parse(text: &str, stem: &str) -> Result<Profile, String> {
        let file: ProfileFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.fields.is_empty() {
            return Err("no fields: add at least one [[fields]] table".into());
        }
        let mut fields: Vec<Field> = Vec::with_capacity(file.fields.len());
        for f in file.fields {
            let field = checked_field(f)?;
            if fields.iter().any(|g| g.name == field.name) {
                return Err(format!("field {:?} is given twice", field.name));
            }
            fields.push(field);
        }
        let keys: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        let system = file.system.unwrap_or_else(|| {
            format!(
                "You describe single frames of a film for an editor's search index. Answer with \
                 one JSON object with the keys {}, and nothing else.",
                keys.join(", ")
            )
        });
        let name = file.name.unwrap_or_else(|| stem.to_string());
        if name.trim().is_empty() || name.contains('/') {
            return Err(format!("name {name:?}: give a non-empty name without '/'"));
        }
        Ok(Profile {
            name,
            system,
            user: file
                .user
                .unwrap_or_else(|| "Describe this frame.".to_string()),
            fields,
            dialogue_context: false,
        })
    }

    /// This profile with the dialogue line on screen added to its prompt.
    pub fn with_dialogue(mut self, on: bool) -> Profile {
        self.dialogue_context = on;
        self
    }

    /// The name a pass derives from it (`default`, `default+dialogue`).
    pub fn pass_suffix(&self) -> String {
        if self.dialogue_context {
            format!("{}+dialogue", self.name)
        } else {
            self.name.clone()
        }
    }

    /// The canonical JSON stored with a pass.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a profile serialises")
    }

    /// The SHA-256 of [`Profile::to_json`], hex.
    pub fn hash(&self) -> String {
        let digest = Sha256::digest(self.to_json().as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The user text sent before the image: the profile's text, then one
    /// line per field that has an instruction (with its allowed values).
    pub fn user_text(&self) -> String {
        let mut text = self.user.clone();
        for f in self.fields.iter().filter(|f| !f.instruction.is_empty()) {
            let hint = match &f.kind {
                FieldKind::Text { .. } => String::new(),
                FieldKind::Enum { values } => format!(" (one of: {})", values.join(", ")),
                FieldKind::Tags { max_items, .. } => {
                    format!(" (a list of at most {max_items} short tags)")
                }
                FieldKind::Integer { min, max } => format!(" (a whole number from {min} to {max})"),
                FieldKind::Boolean => " (true or false)".into(),
            };
            text.push_str(&format!("\n{}: {}{hint}", f.name, f.instruction));
        }
        text
    }

    /// The JSON schema sent in `response_format.json_schema.schema`.
    pub fn json_schema(&self) -> Value {
        let props: Map<String, Value> = self
            .fields
            .iter()
            .map(|f| (f.name.clone(), f.kind.schema()))
            .collect();
        let required: Vec<&str> = self.fields.iter().map(|f| f.name.as_str()).collect();
        json!({
            "type": "object",
            "properties": props,
            "required": required,
            "additionalProperties": false,
        })
    }

    /// Parses and validates the model's answer.
    pub fn parse_answer(&self, text: &str) -> Result<Answer, InvalidAnswer> {
        let value: Value =
            serde_json::from_str(text.trim()).map_err(|e| InvalidAnswer::NotJson(e.to_string()))?;
        let Value::Object(mut map) = value else {
            return Err(InvalidAnswer::Schema("not a JSON object".into()));
        };
        if let Some(extra) = map
            .keys()
            .find(|k| !self.fields.iter().any(|f| &f.name == *k))
        {
            return Err(InvalidAnswer::Schema(format!("unknown field `{extra}`")));
        }
        let mut answer = Map::new();
        let mut lines: Vec<String> = Vec::new();
        for f in &self.fields {
            let value = map
                .remove(&f.name)
                .ok_or_else(|| InvalidAnswer::Schema(format!("missing field `{}`", f.name)))?;
            let value = f.kind.validate(&f.name, value)?;
            if !SEED_FIELDS.contains(&f.name.as_str()) {
                match (&f.kind, &value) {
                    (FieldKind::Text { .. }, Value::String(s)) => lines.push(s.clone()),
                    (FieldKind::Tags { .. }, Value::Array(tags)) => {
                        lines.extend(tags.iter().filter_map(Value::as_str).map(str::to_string))
                    }
                    _ => {}
                }
            }
            answer.insert(f.name.clone(), value);
        }
        Ok(Answer::validated(
            answer,
            (!lines.is_empty()).then(|| lines.join("\n")),
        ))
    }
}

/// A field file's entry checked into a [`Field`]; an error names the field.
fn checked_field(f: FieldFile) -> Result<Field, String> {
    let name = f.name.trim().to_string();
    let ok_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok_name {
        return Err(format!(
            "field name {:?}: use letters, digits, '_' or '-'",
            f.name
        ));
    }
    let bad = |what: &str| Err(format!("field {name:?} ({}): {what}", f.kind));
    let unused = |keys: &[(&str, bool)]| -> Result<(), String> {
        match keys.iter().find(|(_, given)| *given) {
            Some((key, _)) => Err(format!(
                "field {name:?} ({}): `{key}` does not apply to this type",
                f.kind
            )),
            None => Ok(()),
        }
    };
    let kind = match f.kind.as_str() {
        "text" => {
            unused(&[
                ("values", f.values.is_some()),
                ("max_items", f.max_items.is_some()),
                ("min", f.min.is_some()),
                ("max", f.max.is_some()),
            ])?;
            let max_length = f.max_length.unwrap_or(MAX_FIELD_CHARS);
            if max_length == 0 {
                return bad("max_length must be at least 1");
            }
            FieldKind::Text { max_length }
        }
        "enum" => {
            unused(&[
                ("max_length", f.max_length.is_some()),
                ("max_items", f.max_items.is_some()),
                ("min", f.min.is_some()),
                ("max", f.max.is_some()),
            ])?;
            let values = f.values.clone().unwrap_or_default();
            if values.is_empty() {
                return bad("give its allowed values, e.g. values = [\"wide\", \"close-up\"]");
            }
            if values.iter().any(|v| v.trim().is_empty()) {
                return bad("an allowed value is empty");
            }
            FieldKind::Enum { values }
        }
        "tags" => {
            unused(&[
                ("values", f.values.is_some()),
                ("min", f.min.is_some()),
                ("max", f.max.is_some()),
            ])?;
            let Some(max_items) = f.max_items else {
                return bad("give max_items, e.g. max_items = 5");
            };
            if max_items == 0 {
                return bad("max_items must be at least 1");
            }
            let max_length = f.max_length.unwrap_or(DEFAULT_TAG_CHARS);
            if max_length == 0 {
                return bad("max_length must be at least 1");
            }
            FieldKind::Tags {
                max_items,
                max_length,
            }
        }
        "integer" => {
            unused(&[
                ("values", f.values.is_some()),
                ("max_items", f.max_items.is_some()),
                ("max_length", f.max_length.is_some()),
            ])?;
            let (Some(min), Some(max)) = (f.min, f.max) else {
                return bad("give its range, e.g. min = 1 and max = 5");
            };
            if min > max {
                return bad(&format!("min {min} is above max {max}"));
            }
            FieldKind::Integer { min, max }
        }
        "boolean" => {
            unused(&[
                ("values", f.values.is_some()),
                ("max_items", f.max_items.is_some()),
                ("max_length", f.max_length.is_some()),
                ("min", f.min.is_some()),
                ("max", f.max.is_some()),
            ])?;
            FieldKind::Boolean
        }
        other => {
            return Err(format!(
                "field {name:?}: unknown type {other:?}; use text, enum, tags, integer or boolean"
            ));
        }
    };
    Ok(Field {
        name,
        instruction: f.instruction.trim().to_string(),
        kind,
    })
}

impl FieldKind {
    fn schema(&self) -> Value {
        match self {
            FieldKind::Text { max_length } => {
                json!({ "type": "string", "minLength": 1, "maxLength": max_length })
            }
            FieldKind::Enum { values } => json!({ "type": "string", "enum": values }),
            FieldKind::Tags {
                max_items,
                max_length,
            } => json!({
                "type": "array",
                "items": { "type": "string", "minLength": 1, "maxLength": max_length },
                "maxItems": max_items,
            }),
            FieldKind::Integer { min, max } => {
                json!({ "type": "integer", "minimum": min, "maximum": max })
            }
            FieldKind::Boolean => json!({ "type": "boolean" }),
        }
    }

    /// Checks one field's value against its type and bounds.
    fn validate(&self, field: &str, value: Value) -> Result<Value, InvalidAnswer> {
        let schema = |what: &str| InvalidAnswer::Schema(format!("field `{field}`: {what}"));
        let bounds = |reason: String| InvalidAnswer::OutOfBounds {
            field: field.to_string(),
            reason,
        };
        match self {
            FieldKind::Text { max_length } => {
                let Value::String(s) = &value else {
                    return Err(schema("expected a string"));
                };
                if s.trim().is_empty() {
                    return Err(InvalidAnswer::EmptyField(field.to_string()));
                }
                let chars = s.chars().count();
                if chars > *max_length {
                    return Err(InvalidAnswer::TooLong {
                        field: field.to_string(),
                        chars,
                        max: *max_length,
                    });
                }
            }
            FieldKind::Enum { values } => {
                let Value::String(s) = &value else {
                    return Err(schema("expected a string"));
                };
                if !values.contains(s) {
                    return Err(bounds(format!("{s:?} is not one of {}", values.join(", "))));
                }
            }
            FieldKind::Tags {
                max_items,
                max_length,
            } => {
                let Value::Array(items) = &value else {
                    return Err(schema("expected a list of strings"));
                };
                if items.len() > *max_items {
                    return Err(bounds(format!(
                        "{} tags (at most {max_items})",
                        items.len()
                    )));
                }
                for item in items {
                    let Value::String(s) = item else {
                        return Err(schema("expected a list of strings"));
                    };
                    if s.trim().is_empty() {
                        return Err(bounds("a tag is empty".into()));
                    }
                    if s.chars().count() > *max_length {
                        return Err(bounds(format!(
                            "tag {s:?} is longer than {max_length} characters"
                        )));
                    }
                }
            }
            FieldKind::Integer { min, max } => {
                let Some(n) = value.as_i64() else {
                    return Err(schema("expected a whole number"));
                };
                if n < *min || n > *max {
                    return Err(bounds(format!("{n} is outside {min}..={max}")));
                }
            }
            FieldKind::Boolean => {
                if !value.is_boolean() {
                    return Err(schema("expected true or false"));
                }
            }
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = r#"{"visual_content":"a","mood":"b","action":"c","setting":"d"}"#;

    #[test]
    fn the_default_profile_is_the_original_prompt_and_schema() {
        let p = Profile::default();
        assert_eq!(p.user_text(), USER_TEXT);
        let schema = p.json_schema();
        let props = schema["properties"].as_object().unwrap();
        assert_eq!(props.len(), 4);
        for f in SEED_FIELDS {
            assert_eq!(
                props[f],
                json!({ "type": "string", "minLength": 1, "maxLength": MAX_FIELD_CHARS })
            );
        }
        assert_eq!(schema["required"], json!(SEED_FIELDS));
        let a = p.parse_answer(ANSWER).unwrap();
        assert_eq!(a.text("mood"), Some("b"));
        assert_eq!(a.search_text(), None);
        // The dialogue variant is another profile (another pass).
        assert_ne!(p.hash(), p.clone().with_dialogue(true).hash());
    }

    #[test]
    fn bad_answers_are_named() {
        let p = Profile::default();
        assert!(matches!(
            p.parse_answer("sure! here"),
            Err(InvalidAnswer::NotJson(_))
        ));
        assert!(matches!(
            p.parse_answer(r#"{"visual_content":"a","mood":"b","action":"c"}"#),
            Err(InvalidAnswer::Schema(e)) if e.contains("setting")
        ));
        assert!(matches!(
            p.parse_answer(r#"{"visual_content":"a","mood":"b","action":"c","setting":"d","x":1}"#),
            Err(InvalidAnswer::Schema(_))
        ));
        assert_eq!(
            p.parse_answer(r#"{"visual_content":"a","mood":" ","action":"c","setting":"d"}"#),
            Err(InvalidAnswer::EmptyField("mood".into()))
        );
        let long = "x".repeat(MAX_FIELD_CHARS + 1);
        let text =
            format!(r#"{{"visual_content":"{long}","mood":"b","action":"c","setting":"d"}}"#);
        assert!(matches!(
            p.parse_answer(&text),
            Err(InvalidAnswer::TooLong { field, .. }) if field == "visual_content"
        ));
    }

    const TRAILER: &str = r#"
name = "trailer"
user = "Describe this frame for a trailer editor."
[[fields]]
name = "shot_type"
type = "enum"
values = ["close-up", "wide"]
instruction = "the framing"
[[fields]]
name = "characters"
type = "tags"
max_items = 2
instruction = "who is on screen"
[[fields]]
name = "intensity"
type = "integer"
min = 1
max = 5
[[fields]]
name = "night"
type = "boolean"
"#;

    #[test]
    fn a_custom_profile_makes_its_schema_and_checks_every_bound() {
        let p = Profile::parse(TRAILER, "file").unwrap();
        assert_eq!(p.name, "trailer");
        let schema = p.json_schema();
        assert_eq!(
            schema["properties"]["shot_type"]["enum"],
            json!(["close-up", "wide"])
        );
        assert_eq!(schema["properties"]["characters"]["maxItems"], 2);
        assert_eq!(schema["properties"]["intensity"]["maximum"], 5);
        assert!(
            p.user_text()
                .contains("shot_type: the framing (one of: close-up, wide)")
        );
        let ok = r#"{"shot_type":"wide","characters":["a hero"],"intensity":3,"night":true}"#;
        let a = p.parse_answer(ok).unwrap();
        assert_eq!(a.search_text(), Some("a hero"));
        for (bad, field) in [
            (
                r#"{"shot_type":"medium","characters":[],"intensity":3,"night":true}"#,
                "shot_type",
            ),
            (
                r#"{"shot_type":"wide","characters":["a","b","c"],"intensity":3,"night":true}"#,
                "characters",
            ),
            (
                r#"{"shot_type":"wide","characters":[],"intensity":9,"night":true}"#,
                "intensity",
            ),
        ] {
            match p.parse_answer(bad) {
                Err(InvalidAnswer::OutOfBounds { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(matches!(
            p.parse_answer(r#"{"shot_type":"wide","characters":[],"intensity":3,"night":"yes"}"#),
            Err(InvalidAnswer::Schema(e)) if e.contains("night")
        ));
    }

    #[test]
    fn the_example_profiles_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        for name in ["trailer-editor.toml", "french.toml"] {
            let p = Profile::load(&dir.join(name)).unwrap();
            assert!(p.fields.len() >= 4, "{name}");
        }
    }

    #[test]
    fn a_profile_that_cannot_be_a_schema_names_the_field() {
        let cases = [
            (
                "[[fields]]\nname = \"x\"\ntype = \"enum\"\n",
                "\"x\" (enum)",
            ),
            (
                "[[fields]]\nname = \"n\"\ntype = \"integer\"\nmin = 5\nmax = 1\n",
                "min 5 is above max 1",
            ),
            ("[[fields]]\nname = \"t\"\ntype = \"tags\"\n", "max_items"),
            (
                "[[fields]]\nname = \"c\"\ntype = \"colour\"\n",
                "unknown type",
            ),
            (
                "[[fields]]\nname = \"b\"\ntype = \"boolean\"\nmax = 3\n",
                "`max` does not apply",
            ),
            ("name = \"empty\"\n", "no fields"),
        ];
        for (text, want) in cases {
            let err = Profile::parse(text, "p").unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
