//! What a GGUF file's header says about its model, read before the server
//! loads it: the chat template it carries (or not), its family, and the
//! shape that sizes its KV cache. Only the key-value section is read (a
//! 7B model's header is a few MB, its tokenizer's vocabulary mostly);
//! arrays are skipped, never collected.
//!
//! Hand-written rather than a crate: the GGUF crates on crates.io either
//! pull a command-line program's dependencies (clap, a table printer, a
//! logger) into the library or parse the tensor list too and fail on
//! quantisation types newer than they are; the key-value section is a
//! stable, small format (magic, version, counts, then typed pairs).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// The facts of one GGUF file that cinecut uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelFacts {
    /// `general.architecture` (`llama`, `qwen2vl`, `clip`, …).
    pub architecture: String,
    /// `general.name`, else `general.basename`.
    pub name: Option<String>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
    /// `<arch>.block_count`.
    pub block_count: Option<u64>,
    /// `<arch>.embedding_length`.
    pub embedding_length: Option<u64>,
    /// `<arch>.attention.head_count`.
    pub head_count: Option<u64>,
    /// `<arch>.attention.head_count_kv` (grouped-query attention).
    pub head_count_kv: Option<u64>,
    /// `clip.has_llava_projector` (an mmproj made for LLaVA).
    pub llava_projector: bool,
}

impl ModelFacts {
    /// Bytes of an f16 KV cache of `tokens` tokens (all slots together):
    /// keys and values, every layer, one `embedding / heads × kv heads`
    /// wide vector each. `None` when the header lacks the shape.
    pub fn kv_cache_bytes(&self, tokens: u64) -> Option<u64> {
        let layers = self.block_count?;
        let embd = self.embedding_length?;
        let heads = self.head_count.filter(|h| *h > 0)?;
        let kv_heads = self.head_count_kv.unwrap_or(heads);
        let width = embd / heads * kv_heads;
        Some(2 * layers * tokens * width * 2)
    }
}

const MAGIC: &[u8; 4] = b"GGUF";

/// Reads `path`'s header (GGUF version 2 or 3).
pub fn read(path: &Path) -> Result<ModelFacts, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut r = Reader(BufReader::with_capacity(1 << 16, file));
    let mut magic = [0u8; 4];
    r.0.read_exact(&mut magic).map_err(|e| e.to_string())?;
    if &magic != MAGIC {
        return Err("not a GGUF file".into());
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(format!(
            "GGUF version {version} (this cinecut reads 2 and 3)"
        ));
    }
    let _tensors = r.u64()?;
    let pairs = r.u64()?;
    let mut raw = Vec::new();
    for _ in 0..pairs {
        let key = r.string()?;
        let kind = r.u32()?;
        let value = r.value(kind)?;
        raw.push((key, value));
    }
    let get = |key: &str| raw.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let text = |key: &str| match get(key) {
        Some(Value::Text(s)) => Some(s.clone()),
        _ => None,
    };
    let architecture = text("general.architecture").unwrap_or_default();
    let number = |suffix: &str| match get(&format!("{architecture}.{suffix}")) {
        Some(Value::Number(n)) => Some(*n),
        _ => None,
    };
    Ok(ModelFacts {
        name: text("general.name").or_else(|| text("general.basename")),
        chat_template: text("tokenizer.chat_template"),
        block_count: number("block_count"),
        embedding_length: number("embedding_length"),
        head_count: number("attention.head_count"),
        head_count_kv: number("attention.head_count_kv"),
        llava_projector: matches!(get("clip.has_llava_projector"), Some(Value::Bool(true))),
        architecture,
    })
}

/// A value kept from the header (arrays and floats are skipped).
enum Value {
    Number(u64),
    Bool(bool),
    Text(String),
    Other,
}

struct Reader(BufReader<File>);

impl Reader {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut b = [0u8; N];
        self.0
            .read_exact(&mut b)
            .map_err(|e| format!("header cut short: {e}"))?;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    fn string(&mut self) -> Result<String, String> {
        let len = self.u64()?;
        if len > 64 << 20 {
            return Err(format!("a header string of {len} bytes"));
        }
        let mut b = vec![0u8; len as usize];
        self.0
            .read_exact(&mut b)
            .map_err(|e| format!("header cut short: {e}"))?;
        String::from_utf8(b).map_err(|_| "a header string is not UTF-8".into())
    }

    fn skip(&mut self, n: u64) -> Result<(), String> {
        let n = i64::try_from(n).map_err(|_| "a header array too long".to_string())?;
        self.0
            .seek(SeekFrom::Current(n))
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// One value of GGUF type `kind` (0 u8, 1 i8, 2 u16, 3 i16, 4 u32,
    /// 5 i32, 6 f32, 7 bool, 8 string, 9 array, 10 u64, 11 i64, 12 f64).
    fn value(&mut self, kind: u32) -> Result<Value, String> {
        Ok(match kind {
            0 => Value::Number(u64::from(self.bytes::<1>()?[0])),
            2 => Value::Number(u64::from(u16::from_le_bytes(self.bytes()?))),
            4 => Value::Number(u64::from(self.u32()?)),
            10 => Value::Number(self.u64()?),
            1 => self.skip(1).map(|()| Value::Other)?,
            3 => self.skip(2).map(|()| Value::Other)?,
            5 => {
                let v = i32::from_le_bytes(self.bytes()?);
                u64::try_from(v).map_or(Value::Other, Value::Number)
            }
            11 => {
                let v = i64::from_le_bytes(self.bytes()?);
                u64::try_from(v).map_or(Value::Other, Value::Number)
            }
            6 => self.skip(4).map(|()| Value::Other)?,
            12 => self.skip(8).map(|()| Value::Other)?,
            7 => Value::Bool(self.bytes::<1>()?[0] != 0),
            8 => Value::Text(self.string()?),
            9 => {
                let inner = self.u32()?;
                let len = self.u64()?;
                match fixed_size(inner) {
                    Some(size) => self.skip(size * len)?,
                    None => {
                        for _ in 0..len {
                            self.value(inner)?;
                        }
                    }
                }
                Value::Other
            }
            other => return Err(format!("unknown GGUF value type {other}")),
        })
    }
}

/// The size of one value of a fixed-size GGUF type.
fn fixed_size(kind: u32) -> Option<u64> {
    match kind {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kv_cache_of_a_grouped_query_model() {
        // A 7B Llama-3 shape: 32 layers, 4096 wide, 32 heads, 8 KV heads.
        let facts = ModelFacts {
            block_count: Some(32),
            embedding_length: Some(4096),
            head_count: Some(32),
            head_count_kv: Some(8),
            ..ModelFacts::default()
        };
        // 2 (K, V) × 32 layers × 8192 tokens × 1024 wide × 2 bytes = 1 GiB.
        assert_eq!(facts.kv_cache_bytes(8192), Some(1 << 30));
        assert_eq!(ModelFacts::default().kv_cache_bytes(8192), None);
    }

    #[test]
    fn a_file_that_is_not_gguf_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gguf");
        std::fs::write(&path, b"not a model at all").unwrap();
        assert_eq!(read(&path).unwrap_err(), "not a GGUF file");
        std::fs::write(&path, b"GGUF\x03\x00\x00\x00\x01").unwrap();
        assert!(read(&path).unwrap_err().starts_with("header cut short"));
    }
}
