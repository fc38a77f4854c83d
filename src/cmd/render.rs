//! Small helpers for what commands print: times, ages, percentages,
//! truncated text, the queue's totals.

use crate::db::status::{FilmStatus, LeaseHolder};

/// `hh:mm:ss.mmm`, or `-` without a time.
pub fn timestamp(ms: Option<i64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) => format!(
            "{:02}:{:02}:{:02}.{:03}",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        ),
    }
}

/// `s` cut to `max` characters, ending in `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
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
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("äöüß", 3), "äö…");
    }
}
