//! `cinecut report`: one self-contained HTML contact sheet per film. It
//! works from `file://` with nothing else: thumbnails are inlined JPEGs,
//! the style and the one script are in the page, and its Content Security
//! Policy forbids every fetch (`default-src 'none'`), so a description can
//! never make the page reach out.
//!
//! The page is written in one pass over the frames, a page of rows at a
//! time, so memory stays bounded: the cards first, then the header with
//! the counts and the timeline (one mark per frame, coloured by the value
//! of one field) that only the whole film can give; CSS shows the header
//! first. One script serves the filter box for every card; cards have no
//! scripts of their own, and `content-visibility` lets a browser skip the
//! layout of cards out of view, so 5,000 frames open without freezing.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write};
use std::path::Path;

use base64::Engine;

use serde_json::{Map, Value};

use crate::db::report::{FilmFacts, ReportField, ReportFrame};
use crate::frame::{self, FrameError, Thumbnail};
use crate::ingest::film::thumbnail_path;

/// Longest side of a thumbnail, in pixels (as extraction writes them).
pub const THUMBNAIL_SIDE: u32 = crate::ingest::probe::THUMBNAIL_SIDE;
/// Bytes a thumbnail may take before it is re-encoded at a lower quality:
/// with base64 and the card's text, a frame stays under 20 KB of page.
pub const THUMBNAIL_BUDGET: usize = 12 * 1024;

/// The field of the pass's profile whose value colours the timeline:
/// `asked` (`-` read as `_`, so `visual-content` names `visual_content`),
/// else `mood` where the profile has it, else its first `enum` field, else
/// its first field. An `asked` field the profile lacks is an error that
/// lists the fields it has.
pub fn strip_field(fields: &[ReportField], asked: Option<&str>) -> Result<String, String> {
    let has = |name: &str| fields.iter().any(|f| f.name == name);
    if let Some(asked) = asked {
        let name = asked.replace('-', "_");
        if has(&name) {
            return Ok(name);
        }
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        return Err(format!(
            "--strip {asked}: the pass's profile has no such field; its fields: {}",
            names.join(", ")
        ));
    }
    let pick = if has("mood") {
        Some("mood")
    } else {
        fields
            .iter()
            .find(|f| f.kind == "enum")
            .or(fields.first())
            .map(|f| f.name.as_str())
    };
    pick.map(str::to_string)
        .ok_or_else(|| "the pass's profile has no fields".to_string())
}

/// A field's label: its name with spaces for underscores, capitalised
/// (`visual_content` → "Visual content").
fn label(name: &str) -> String {
    let spaced = name.replace('_', " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => spaced,
    }
}

/// An answer's value as text: a string as it is, tags joined by commas,
/// a number or a boolean as JSON writes it, nothing for null.
pub fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(shown).collect::<Vec<_>>().join(", "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `HH:MM:SS.mmm`.
pub fn clock(ms: i64) -> String {
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// Thumbnails of `frames`, in their order, on every core: made from the
/// frame's bytes when the database holds them; else, for a video's frames,
/// the one extraction wrote beside each ([`thumbnail_path`]), read as it
/// is; otherwise (and when that one is gone) made from the frame's file.
pub fn thumbnails(frames: &[ReportFrame], video: bool) -> Vec<Result<Thumbnail, FrameError>> {
    let one = |f: &ReportFrame| {
        let frame = Path::new(&f.path);
        if let Some(bytes) = &f.stored {
            return frame::thumbnail_of(bytes, frame, THUMBNAIL_SIDE, THUMBNAIL_BUDGET);
        }
        video
            .then(|| extracted_thumbnail(&thumbnail_path(frame)))
            .flatten()
            .map_or_else(
                || frame::thumbnail(frame, THUMBNAIL_SIDE, THUMBNAIL_BUDGET),
                Ok,
            )
    };
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = frames.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let parts: Vec<_> = frames
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(one).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().expect("a thumbnail thread panicked"))
            .collect()
    })
}

/// The JPEG extraction wrote, with its size from its header; `None` when
/// it is missing or not a JPEG.
fn extracted_thumbnail(path: &Path) -> Option<Thumbnail> {
    let jpeg = std::fs::read(path).ok()?;
    let reader =
        image::ImageReader::with_format(std::io::Cursor::new(&jpeg), image::ImageFormat::Jpeg);
    let (width, height) = reader.into_dimensions().ok()?;
    Some(Thumbnail {
        jpeg,
        width,
        height,
    })
}

/// What the timeline needs of a frame once its card is written.
struct Mark {
    frame_index: i64,
    pts_ms: Option<i64>,
    /// The strip field's key (its first word, lower case), when described.
    key: Option<String>,
    state: String,
}

/// A film's report being written: [`Report::start`], a [`Report::card`]
/// per frame in time order, [`Report::finish`].
pub struct Report<W: Write> {
    out: W,
    film: FilmFacts,
    /// The pass shown (empty: none named).
    pass: String,
    /// The pass's fields, in its profile's order, with their labels.
    fields: Vec<(String, String)>,
    strip: String,
    marks: Vec<Mark>,
    models: BTreeSet<String>,
}

impl<W: Write> Report<W> {
    /// Starts `film`'s page for pass `pass`, whose profile has `fields`;
    /// the timeline is coloured by field `strip` (see [`strip_field`]).
    pub fn start(
        mut out: W,
        film: FilmFacts,
        pass: &str,
        fields: &[ReportField],
        strip: String,
    ) -> io::Result<Self> {
        write!(
            out,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
             <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
             img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <meta name=\"generator\" content=\"cinecut {}\">\n\
             <title>{} · cinecut</title>\n<style>{STYLE}</style></head>\n\
             <body>\n<main id=\"cards\">\n",
            env!("CARGO_PKG_VERSION"),
            esc(&film.title),
        )?;
        Ok(Self {
            out,
            film,
            pass: pass.to_string(),
            fields: fields
                .iter()
                .map(|f| (f.name.clone(), label(&f.name)))
                .collect(),
            strip,
            marks: Vec::new(),
            models: BTreeSet::new(),
        })
    }

    /// The frame's card: thumbnail (or why there is none), frame number and
    /// time, then its description, or its failure, or its state.
    pub fn card(
        &mut self,
        frame: &ReportFrame,
        thumb: Result<&Thumbnail, &FrameError>,
    ) -> io::Result<()> {
        let i = frame.frame_index;
        let answer: Map<String, Value> = frame
            .fields
            .as_deref()
            .and_then(|f| serde_json::from_str(f).ok())
            .unwrap_or_default();
        let key = answer
            .get(&self.strip)
            .map(shown)
            .and_then(|v| colour_key(&v));
        let class = match (frame.state.as_str(), &key) {
            ("done", Some(_)) => "card keyed",
            ("done", None) => "card",
            ("failed", _) => "card failed",
            _ => "card pending",
        };
        let colour = key
            .as_deref()
            .map_or_else(String::new, |k| format!(" style=\"--c:{}\"", hue(k)));
        write!(self.out, "<article class=\"{class}\" id=\"f{i}\"{colour}>")?;
        match thumb {
            Ok(t) => write!(
                self.out,
                "<img src=\"data:image/jpeg;base64,{}\" width=\"{}\" height=\"{}\" \
                 loading=\"lazy\" decoding=\"async\" alt=\"frame {i}\" title=\"{}\">",
                base64::engine::general_purpose::STANDARD.encode(&t.jpeg),
                t.width,
                t.height,
                esc(&frame.path),
            )?,
            Err(e) => write!(self.out, "<div class=\"nothumb\">{}</div>", esc(&e.0))?,
        }
        let time = frame.pts_ms.map(clock).unwrap_or_default();
        write!(
            self.out,
            "<p class=\"at\"><a href=\"#f{i}\">#{i}</a> <time>{time}</time></p>"
        )?;
        if let Some(line) = &frame.line {
            write!(self.out, "<q class=\"line\">{}</q>", esc(line))?;
        }
        if frame.state == "done" {
            write!(self.out, "<dl>")?;
            for (name, label) in &self.fields {
                let value = answer.get(name).map(shown).unwrap_or_default();
                write!(self.out, "<dt>{label}</dt><dd>{}</dd>", esc(&value))?;
            }
            write!(self.out, "</dl>")?;
            if let Some(original) = frame.copied_from {
                write!(
                    self.out,
                    "<p class=\"copy\">near-duplicate: the description of \
                     <a href=\"#f{original}\">#{original}</a></p>"
                )?;
            }
            if let Some(model) = &frame.model
                && !self.models.contains(model)
            {
                self.models.insert(model.clone());
            }
        } else if frame.state == "failed" {
            let plural = if frame.attempts == 1 { "" } else { "s" };
            write!(
                self.out,
                "<p class=\"why\">failed after {} attempt{plural}: {}</p>",
                frame.attempts,
                esc(frame.error.as_deref().unwrap_or("no reason recorded"))
            )?;
        } else {
            write!(
                self.out,
                "<p class=\"why\">{}: not described yet</p>",
                esc(&frame.state)
            )?;
        }
        writeln!(self.out, "</article>")?;
        self.marks.push(Mark {
            frame_index: i,
            pts_ms: frame.pts_ms,
            key,
            state: frame.state.clone(),
        });
        Ok(())
    }

    /// The header (counts, legend, filter box, timeline) and the script;
    /// returns the writer, flushed.
    pub fn finish(mut self) -> io::Result<W> {
        let n = self.marks.len();
        let count = |state: &str| self.marks.iter().filter(|m| m.state == state).count();
        let (done, failed) = (count("done"), count("failed"));
        let pending = n - done - failed;
        let film = &self.film;
        write!(
            self.out,
            "</main>\n<header>\n<h1>{}</h1>\n<p class=\"facts\">",
            esc(&film.title)
        )?;
        let mut facts = vec![format!(
            "{n} frames · {done} described · {failed} failed · {pending} not yet"
        )];
        if let Some(ms) = film.duration_ms {
            facts.push(clock(ms));
        }
        if let (Some(w), Some(h)) = (film.width, film.height) {
            facts.push(format!("{w}×{h}"));
        }
        if let Some(fps) = film.fps {
            facts.push(format!("{fps:.3} fps"));
        }
        if !self.pass.is_empty() {
            facts.push(format!("pass {}", self.pass));
        }
        if !self.models.is_empty() {
            let models: Vec<&str> = self.models.iter().map(String::as_str).collect();
            facts.push(format!("described by {}", models.join(", ")));
        }
        if let Some(source) = &film.source_path {
            facts.push(source.clone());
        }
        writeln!(self.out, "{}</p>", esc(&facts.join(" · ")))?;
        self.legend()?;
        writeln!(
            self.out,
            "<p class=\"find\"><input id=\"filter\" type=\"search\" \
             placeholder=\"Filter: words in any field, e.g. night rain\" autocomplete=\"off\"> \
             <span id=\"shown\">{n} frames</span></p>"
        )?;
        self.timeline()?;
        write!(
            self.out,
            "</header>\n<script>{SCRIPT}</script>\n</body></html>\n"
        )?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// The commonest values of the strip field with their colours.
    fn legend(&mut self) -> io::Result<()> {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for key in self.marks.iter().filter_map(|m| m.key.as_deref()) {
            *counts.entry(key).or_default() += 1;
        }
        let mut top: Vec<(&str, usize)> = counts.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        write!(
            self.out,
            "<p class=\"legend\">Timeline by {}:",
            esc(&label(&self.strip).to_lowercase())
        )?;
        for (key, count) in top.iter().take(10) {
            write!(
                self.out,
                " <span><i style=\"--c:{}\"></i>{} {count}</span>",
                hue(key),
                esc(key)
            )?;
        }
        let any = |pick: fn(&Mark) -> bool| self.marks.iter().any(pick);
        if any(|m| m.state == "done" && m.key.is_none()) {
            write!(self.out, " <span><i class=\"blank\"></i>empty</span>")?;
        }
        if any(|m| m.state == "failed") {
            write!(self.out, " <span><i class=\"failed\"></i>failed</span>")?;
        }
        if any(|m| m.state != "done" && m.state != "failed") {
            write!(self.out, " <span><i class=\"pending\"></i>not yet</span>")?;
        }
        writeln!(self.out, "</p>")
    }

    /// One mark per frame, placed by its time in the film (by its place
    /// in the list when times are unknown), linking to its card.
    fn timeline(&mut self) -> io::Result<()> {
        let n = self.marks.len().max(1);
        let span = self
            .film
            .duration_ms
            .filter(|d| *d > 0)
            .or_else(|| self.marks.iter().filter_map(|m| m.pts_ms).max())
            .filter(|d| *d > 0);
        // Each mark is 1/n of the strip wide (at least 0.15 %, 2 px), and
        // its left edge is placed along what is left, so the last one ends
        // at the strip's end.
        let width = (100.0 / n as f64).max(0.15);
        write!(
            self.out,
            "<nav id=\"timeline\" style=\"--w:{width:.4}%\" aria-label=\"timeline\">"
        )?;
        for (place, m) in self.marks.iter().enumerate() {
            let along = match (span, m.pts_ms) {
                (Some(span), Some(pts)) => pts as f64 / span as f64,
                _ => place as f64 / n as f64,
            };
            let left = along.clamp(0.0, 1.0) * (100.0 - width);
            let look = match (&m.key, m.state.as_str()) {
                (_, "failed") => format!("class=\"failed\" style=\"left:{left:.3}%\""),
                (Some(key), _) => format!("style=\"left:{left:.3}%;--c:{}\"", hue(key)),
                (None, "done") => format!("class=\"blank\" style=\"left:{left:.3}%\""),
                _ => format!("class=\"pending\" style=\"left:{left:.3}%\""),
            };
            let title = match (&m.key, m.pts_ms) {
                (Some(k), Some(pts)) => format!("{} {}", clock(pts), k),
                (Some(k), None) => format!("#{} {k}", m.frame_index),
                (None, Some(pts)) => format!("{} {}", clock(pts), m.state),
                (None, None) => format!("#{} {}", m.frame_index, m.state),
            };
            write!(
                self.out,
                "<a href=\"#f{}\" {look} title=\"{}\"></a>",
                m.frame_index,
                esc(&title)
            )?;
        }
        writeln!(self.out, "</nav>")
    }
}

/// What colours a value: its first word, in lower case ("Tense, dark" and
/// "tense" are one colour); a value with no word (a symbol a small model
/// gave) is its own key; an empty one has none.
fn colour_key(value: &str) -> Option<String> {
    let value = value.trim();
    let word = value
        .split(|c: char| !c.is_alphanumeric())
        .find(|w| !w.is_empty())
        .unwrap_or(value);
    (!word.is_empty()).then(|| word.chars().take(24).collect::<String>().to_lowercase())
}

/// A hue for a key, the same in every report (FNV-1a of its bytes).
fn hue(key: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h % 360
}

/// Text made safe for HTML content and attribute values.
fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out.into()
}

const STYLE: &str = r#"
:root { color-scheme: dark; --bg: #121316; --fg: #e6e6e6; --dim: #8b8f98; --card: #1c1e23; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.4 system-ui, sans-serif; display: flex; flex-direction: column; }
header { order: -1; position: sticky; top: 0; z-index: 1; background: var(--bg);
  padding: 12px 16px 8px; border-bottom: 1px solid #2a2d33; }
h1 { margin: 0 0 4px; font-size: 20px; }
.facts, .legend { margin: 0 0 6px; color: var(--dim); }
.legend span { margin-right: 10px; white-space: nowrap; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px;
  background: hsl(var(--c) 65% 52%); vertical-align: -1px; }
.find { margin: 0 0 8px; }
#filter { width: min(480px, 70vw); padding: 5px 8px; background: var(--card); color: var(--fg);
  border: 1px solid #3a3e46; border-radius: 4px; }
#shown { color: var(--dim); margin-left: 8px; }
#timeline { position: relative; height: 26px; background: #0b0c0e; border-radius: 3px;
  overflow: hidden; }
#timeline a { position: absolute; top: 0; bottom: 0; width: max(2px, var(--w));
  background: hsl(var(--c) 65% 52%); }
#timeline a.off { opacity: .12; }
#timeline a.failed, .legend i.failed { background: repeating-linear-gradient(45deg, #d33 0 3px, #611 3px 6px); }
#timeline a.pending, .legend i.pending { background: #444; }
#timeline a.blank, .legend i.blank { background: #777; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr));
  gap: 12px; padding: 16px; }
.card { background: var(--card); border-radius: 6px; overflow: hidden;
  border-top: 4px solid #777; content-visibility: auto;
  contain-intrinsic-size: auto 420px; }
.card.keyed { border-top-color: hsl(var(--c) 65% 52%); }
.card.pending { border-top-color: #444; }
.card.failed { border-top-color: #d33; }
.card img { display: block; width: 100%; height: auto; background: #000; }
.nothumb { padding: 24px 12px; color: var(--dim); background: #000; font-size: 12px; }
.at { margin: 6px 10px 0; color: var(--dim); font-variant-numeric: tabular-nums; }
.at a { color: var(--fg); text-decoration: none; font-weight: 600; }
dl { margin: 4px 10px 10px; }
.line { display: block; margin: 6px 10px 0; font-style: italic; white-space: pre-line; }
.copy { margin: 0 10px 8px; font-size: 12px; opacity: .7; }
dt { color: var(--dim); font-size: 11px; text-transform: uppercase; letter-spacing: .04em; margin-top: 4px; }
dd { margin: 0; }
.why { margin: 6px 10px 10px; color: #f08a8a; }
.pending .why { color: var(--dim); }
[hidden] { display: none !important; }
"#;

/// The filter box: one script for the page, nothing per card.
const SCRIPT: &str = r#"
(() => {
  const cards = Array.from(document.querySelectorAll('#cards > article'));
  const marks = Array.from(document.querySelectorAll('#timeline > a'));
  const text = cards.map(c => c.textContent.toLowerCase());
  const box = document.getElementById('filter');
  const shown = document.getElementById('shown');
  box.addEventListener('input', () => {
    const words = box.value.toLowerCase().split(/\s+/).filter(Boolean);
    let n = 0;
    cards.forEach((card, i) => {
      const hit = words.every(w => text[i].includes(w));
      card.hidden = !hit;
      if (marks[i]) marks[i].classList.toggle('off', !hit);
      if (hit) n += 1;
    });
    shown.textContent = words.length ? n + ' of ' + cards.length + ' frames' : cards.length + ' frames';
  });
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_keys_are_first_words() {
        assert_eq!(esc("<b a=\"x\">&'"), "&lt;b a=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(esc("plain"), "plain");
        assert_eq!(colour_key("Tense, dark").as_deref(), Some("tense"));
        assert_eq!(
            colour_key(" /* "),
            Some("/*".into()),
            "a symbol is its own key"
        );
        assert_eq!(colour_key("  "), None);
        assert_eq!(hue("tense"), hue("tense"));
        assert_eq!(clock(3_723_004), "01:02:03.004");
    }

    #[test]
    fn the_strip_field_is_asked_or_mood_or_the_first_enum() {
        let field = |name: &str, kind: &str| ReportField {
            name: name.into(),
            kind: kind.into(),
        };
        let seed = [field("visual_content", "text"), field("mood", "text")];
        assert_eq!(strip_field(&seed, None).unwrap(), "mood");
        assert_eq!(
            strip_field(&seed, Some("visual-content")).unwrap(),
            "visual_content"
        );
        let custom = [field("note", "text"), field("shot_type", "enum")];
        assert_eq!(strip_field(&custom, None).unwrap(), "shot_type");
        assert_eq!(
            strip_field(&custom, Some("mood")).unwrap_err(),
            "--strip mood: the pass's profile has no such field; its fields: note, shot_type"
        );
        assert_eq!(strip_field(&custom[..1], None).unwrap(), "note");
        assert_eq!(label("visual_content"), "Visual content");
        assert_eq!(shown(&serde_json::json!(["a", "b c"])), "a, b c");
        assert_eq!(shown(&serde_json::json!(3)), "3");
    }
}
