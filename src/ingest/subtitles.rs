//! A film's dialogue: subtitle lines from a file (`--subtitles`: SRT,
//! WebVTT, ASS/SSA or any text format ffmpeg reads) or from the film's own
//! text subtitle stream. ffmpeg turns every one of them into SRT (it knows
//! the formats, their character sets and ASS's styling); what is left here
//! is reading SRT's blocks and stripping the markup that remains.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where a film's dialogue comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SubtitleSource {
    /// The film's first text subtitle stream, when it has one.
    #[default]
    Auto,
    /// The film's subtitle stream N (0 = its first subtitle stream).
    Stream(u32),
    /// A subtitle file.
    File(PathBuf),
    /// None.
    Off,
}

pub use crate::db::queue::SubtitleLine as Line;

/// Subtitle codecs that carry text (a bitmap stream, PGS or VobSub, would
/// need OCR).
const TEXT_CODECS: [&str; 9] = [
    "subrip",
    "srt",
    "ass",
    "ssa",
    "webvtt",
    "mov_text",
    "text",
    "microdvd",
    "subviewer",
];

/// The film's subtitle streams, in order: (codec, whether it is text).
fn subtitle_streams(video: &Path) -> Result<Vec<(String, bool)>, String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "s", "-show_entries"])
        .args(["stream=codec_name", "-of", "json"])
        .arg(video)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ffprobe: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("unreadable ffprobe output: {e}"))?;
    Ok(v["streams"]
        .as_array()
        .map(|streams| {
            streams
                .iter()
                .map(|s| {
                    let codec = s["codec_name"].as_str().unwrap_or("unknown").to_string();
                    let text = TEXT_CODECS.contains(&codec.as_str());
                    (codec, text)
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The lines `source` gives for `video`, with where they came from (for
/// the log); `None` when there are none to load (`Off`, or `Auto` and the
/// film has no text subtitle stream). An error says why, naming the file
/// or stream.
pub fn load(source: &SubtitleSource, video: &Path) -> Result<Option<(String, Vec<Line>)>, String> {
    let (input, stream, origin) = match source {
        SubtitleSource::Off => return Ok(None),
        SubtitleSource::File(file) => {
            if !file.is_file() {
                return Err(format!("subtitle file {} does not exist", file.display()));
            }
            let bytes = std::fs::read(file)
                .map_err(|e| format!("cannot read subtitle file {}: {e}", file.display()))?;
            check_text(&bytes).map_err(|why| format!("subtitle file {}: {why}", file.display()))?;
            (file.as_path(), None, file.display().to_string())
        }
        SubtitleSource::Auto => {
            let streams = subtitle_streams(video)?;
            match streams.iter().position(|(_, text)| *text) {
                Some(n) => (
                    video,
                    Some(n as u32),
                    format!("subtitle stream {n} of the film"),
                ),
                None => return Ok(None),
            }
        }
        SubtitleSource::Stream(n) => {
            let streams = subtitle_streams(video)?;
            match streams.get(*n as usize) {
                None => {
                    return Err(format!(
                        "--subtitle-stream {n}: the film has {} subtitle stream(s)",
                        streams.len()
                    ));
                }
                Some((codec, false)) => {
                    return Err(format!(
                        "--subtitle-stream {n} is {codec}, pictures of text, not text; \
                         give its text as --subtitles FILE"
                    ));
                }
                Some(_) => (video, Some(*n), format!("subtitle stream {n} of the film")),
            }
        }
    };
    let srt = to_srt(input, stream)?;
    let lines = parse_srt(&srt);
    if lines.is_empty() && matches!(source, SubtitleSource::File(_)) {
        return Err(format!("{origin} has no subtitle lines"));
    }
    Ok(Some((origin, lines)))
}

/// ffmpeg's SRT of `input` (its subtitle stream `stream`, or its first).
fn to_srt(input: &Path, stream: Option<u32>) -> Result<String, String> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(input);
    if let Some(n) = stream {
        cmd.args(["-map", &format!("0:s:{n}")]);
    }
    cmd.args(["-f", "srt", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run ffmpeg: {e}"))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        let why = why.lines().last().unwrap_or("").trim();
        return Err(format!(
            "{} is not a subtitle file ffmpeg can read: {why}",
            input.display()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// SRT blocks (index, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, text lines) as
/// lines in time order, markup stripped; blocks with no text are dropped.
pub fn parse_srt(srt: &str) -> Vec<Line> {
    let mut lines = Vec::new();
    let text = srt.replace("\r\n", "\n");
    for block in text.split("\n\n") {
        let mut rows = block.lines().skip_while(|l| l.trim().is_empty());
        let Some(first) = rows.next() else { continue };
        // The index line is optional in practice; the times line is not.
        let times = if first.contains("-->") {
            first
        } else {
            match rows.next() {
                Some(t) => t,
                None => continue,
            }
        };
        let Some((start, end)) = times.split_once("-->") else {
            continue;
        };
        let (Some(start_ms), Some(end_ms)) = (srt_time(start), srt_time(end)) else {
            continue;
        };
        let body: Vec<String> = rows.map(strip_markup).filter(|l| !l.is_empty()).collect();
        if body.is_empty() || end_ms < start_ms {
            continue;
        }
        lines.push(Line {
            start_ms,
            end_ms,
            text: body.join("\n"),
        });
    }
    lines.sort_by_key(|l| (l.start_ms, l.end_ms));
    lines
}

/// `HH:MM:SS,mmm` (or with a `.`; WebVTT's `MM:SS.mmm` too) as milliseconds.
fn srt_time(s: &str) -> Option<i64> {
    let s = s.split_whitespace().next()?;
    let (clock, ms) = s.split_once([',', '.'])?;
    let parts: Vec<i64> = clock
        .split(':')
        .map(|p| p.parse::<i64>().ok().filter(|n| *n >= 0))
        .collect::<Option<_>>()?;
    let (h, m, sec) = match parts[..] {
        [h, m, sec] => (h, m, sec),
        [m, sec] => (0, m, sec),
        _ => return None,
    };
    if m > 59 || sec > 59 || !(1..=3).contains(&ms.len()) {
        return None;
    }
    let ms: i64 = ms.parse().ok()?;
    Some(((h * 60 + m) * 60 + sec) * 1000 + ms)
}

/// What ffmpeg would read from a subtitle file without a word, checked
/// first so that the error names the line: text that is not UTF-8 (ffmpeg
/// drops such lines) and SRT/WebVTT timing lines that do not parse or end
/// before they start (ffmpeg drops those cues). UTF-16 files (with their
/// byte-order mark) are left to ffmpeg, which reads them.
fn check_text(bytes: &[u8]) -> Result<(), String> {
    if bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]) {
        return Ok(());
    }
    let bytes = bytes.strip_prefix(&[0xef, 0xbb, 0xbf]).unwrap_or(bytes);
    for (n, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let n = n + 1;
        let Ok(line) = std::str::from_utf8(line) else {
            return Err(format!(
                "line {n} is not UTF-8 text (the file has another encoding); convert it \
                 first, e.g. `iconv -f WINDOWS-1252 -t UTF-8 OLD.srt > NEW.srt`"
            ));
        };
        let Some((start, end)) = line.split_once("-->") else {
            continue;
        };
        match (srt_time(start), srt_time(end)) {
            (Some(s), Some(e)) if e >= s => {}
            (Some(_), Some(_)) => {
                return Err(format!(
                    "line {n}: the line ends before it starts: {:?}",
                    line.trim()
                ));
            }
            _ => {
                return Err(format!(
                    "line {n}: bad timestamp {:?} (want HH:MM:SS,mmm --> HH:MM:SS,mmm)",
                    line.trim()
                ));
            }
        }
    }
    Ok(())
}

/// A subtitle line without its markup: HTML-like tags (`<i>`, `<font …>`)
/// and ASS override blocks (`{\an8}`), trimmed.
pub fn strip_markup(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut skip_until = None;
    for c in line.chars() {
        match (skip_until, c) {
            (Some(end), c) if c == end => skip_until = None,
            (Some(_), _) => {}
            (None, '<') => skip_until = Some('>'),
            (None, '{') => skip_until = Some('}'),
            (None, c) => out.push(c),
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srt_blocks_become_lines_without_markup() {
        let srt = "1\r\n00:00:01,000 --> 00:00:02,500\r\n<i>Where were you</i>\r\n{\\an8}last night?\r\n\r\n\
                   2\n00:01:02,040 --> 00:01:03,000\n<font color=\"#ff0000\">Here.</font>\n\n\
                   3\n00:01:04,000 --> 00:01:05,000\n<b></b>\n\n";
        let lines = parse_srt(srt);
        assert_eq!(
            lines,
            vec![
                Line {
                    start_ms: 1000,
                    end_ms: 2500,
                    text: "Where were you\nlast night?".into()
                },
                Line {
                    start_ms: 62_040,
                    end_ms: 63_000,
                    text: "Here.".into()
                },
            ]
        );
        assert_eq!(srt_time("01:02:03.004"), Some(3_723_004));
        assert_eq!(srt_time("nonsense"), None);
    }
}
