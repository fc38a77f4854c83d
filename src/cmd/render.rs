//! Small helpers for what commands print: times, ages, percentages,
//! truncated text, the queue's totals.

use crate::db::status::{FilmStatus, LeaseHolder};

/// `hh:mm:ss.mmm`, or `-` without a time.
pub fn timestamp(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".into(), crate::report::clock)
}

/// `s` cut to `max` display columns (a CJK character or an emoji takes
/// two), ending in `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};
    if s.width() <= max {
        return s.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > max {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

/// `s` cut or padded with spaces to exactly `width` display columns.
pub fn fit(s: &str, width: usize) -> String {
    use unicode_width::UnicodeWidthStr;
    let mut out = truncate(s, width);
    let pad = width.saturating_sub(out.width());
    out.extend(std::iter::repeat_n(' ', pad));
    out
}

/// How a table is printed: fitted to the terminal stdout is (its width,
/// from the terminal itself), or as plain lines when stdout is a pipe or a
/// file: tab-separated, every value whole, one record a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Fitted { width: usize },
    Plain,
}

pub fn layout() -> Layout {
    // stdout's own size: with `| less`, stderr is still the terminal.
    match terminal_size::terminal_size_of(std::io::stdout()) {
        Some((terminal_size::Width(w), _)) => Layout::Fitted {
            width: usize::from(w).max(60),
        },
        None => Layout::Plain,
    }
}

/// Cells as one plain line: tab-separated, tabs and line breaks inside a
/// value made spaces.
pub fn plain_line(cells: &[&str]) -> String {
    let clean: Vec<String> = cells
        .iter()
        .map(|c| c.replace(['\t', '\n', '\r'], " "))
        .collect();
    clean.join("\t")
}

/// A duration in milliseconds as `12s`, `3m05s` or `2h07m`.
pub fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

pub fn percent(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// The sum of every film's counts.
pub fn totals(films: &[FilmStatus]) -> FilmStatus {
    films.iter().fold(
        FilmStatus {
            title: "TOTAL".into(),
            ..Default::default()
        },
        |mut t, f| {
            t.total += f.total;
            t.queued += f.queued;
            t.running += f.running;
            t.done += f.done;
            t.failed += f.failed;
            t.cancelled += f.cancelled;
            t
        },
    )
}

/// Who holds a lease, in one line.
pub fn describe_lease(l: &LeaseHolder) -> String {
    format!(
        "held by {} ({}, pid {}, host {}, epoch {})",
        l.holder,
        l.purpose.as_deref().unwrap_or("?"),
        l.holder_pid.map_or_else(|| "?".into(), |p| p.to_string()),
        l.host.as_deref().unwrap_or("?"),
        l.epoch
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_ages_read_as_clocks() {
        assert_eq!(timestamp(None), "-");
        assert_eq!(timestamp(Some(3_723_004)), "01:02:03.004");
        assert_eq!(ago(-5), "0s");
        assert_eq!(ago(59_999), "59s");
        assert_eq!(ago(185_000), "3m05s");
        assert_eq!(ago(7_620_000), "2h07m");
    }

    #[test]
    fn truncation_counts_display_columns() {
        use unicode_width::UnicodeWidthStr;
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("äöüß", 3), "äö…");
        // Wide characters take two columns each.
        assert_eq!(truncate("雨の夜の街", 6), "雨の…");
        assert_eq!(truncate("a 🌙 night", 5), "a 🌙…");
        for (s, w) in [("雨の夜の街", 7), ("a 🌙 night", 6), ("plain", 9), ("", 3)] {
            assert_eq!(fit(s, w).width(), w, "{s:?} in {w}");
        }
        assert_eq!(fit("雨の夜の街", 7), "雨の夜…");
        assert_eq!(
            plain_line(&["a\tb", "two\nlines", "雨"]),
            "a b\ttwo lines\t雨"
        );
        assert_eq!(
            fit("雨の夜の街", 8),
            "雨の夜… ",
            "a wide character never split"
        );
    }
}
