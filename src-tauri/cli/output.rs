//! Everything the CLI prints to stdout goes through here (the crate denies `print_stdout`
//! elsewhere), so output stays one consistent, pipe-safe shape: `text` for people, `json` (the
//! `data` payload of the hub's answer) and `ndjson` (one compact object per line) for scripts.
//! Errors go to stderr from the dispatcher, never through here.

use std::io::{IsTerminal as _, Write};
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

/// Prints one line to stdout and flushes it (scripts and tests read it as it comes). A closed pipe
/// is not an error worth dying for.
pub fn line(text: &str) {
    write_all(&format!("{text}\n"));
}

/// Writes a whole block at once, so concurrent writers never interleave inside it.
fn write_all(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// How an operational command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned tables and sentences, for people.
    Text,
    /// The answer's data as one JSON document.
    Json,
    /// One compact JSON object per line (each element of a list on its own line).
    Ndjson,
}

impl Format {
    /// The format asked for, else `text` on a terminal and `json` in a pipe.
    pub fn resolve(chosen: Option<Format>) -> Format {
        chosen.unwrap_or_else(|| if std::io::stdout().is_terminal() { Format::Text } else { Format::Json })
    }
}

/// Prints results in one [`Format`].
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub format: Format,
}

impl Output {
    pub fn new(format: Format) -> Output {
        Output { format }
    }

    /// Prints one object: `text()` for people, the object itself for scripts.
    pub fn one<T: Serialize>(&self, data: &T, text: impl FnOnce() -> String) -> Result<(), serde_json::Error> {
        match self.format {
            Format::Text => write_all(&with_newline(text())),
            Format::Json => write_all(&format!("{}\n", serde_json::to_string_pretty(data)?)),
            Format::Ndjson => write_all(&format!("{}\n", serde_json::to_string(data)?)),
        }
        Ok(())
    }

    /// Prints a list: `text()` for people, a JSON array, or one line per element.
    pub fn list<T: Serialize>(&self, items: &[T], text: impl FnOnce() -> String) -> Result<(), serde_json::Error> {
        match self.format {
            Format::Text => write_all(&with_newline(text())),
            Format::Json => write_all(&format!("{}\n", serde_json::to_string_pretty(items)?)),
            Format::Ndjson => {
                let mut block = String::new();
                for item in items {
                    block.push_str(&serde_json::to_string(item)?);
                    block.push('\n');
                }
                write_all(&block);
            }
        }
        Ok(())
    }
}

fn with_newline(mut text: String) -> String {
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// Text from the network, made safe for a terminal: control characters (escape sequences, line
/// breaks, bidi overrides) could rewrite what the user sees, so each becomes `�`.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}') {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

/// Cuts `text` to `max` characters, marking the cut with `…`.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// An aligned table: a header row, then one row per entry, columns two spaces apart, no trailing
/// spaces. Cells are sanitized.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cells: Vec<Vec<String>> = std::iter::once(headers.iter().map(|h| h.to_string()).collect())
        .chain(rows.iter().map(|row| row.iter().map(|c| sanitize(c)).collect()))
        .collect();
    let mut widths = vec![0; headers.len()];
    for row in &cells {
        for (i, cell) in row.iter().enumerate().take(widths.len()) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &cells {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(widths.len()) {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', widths[i].saturating_sub(cell.chars().count())));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Aligned `label  value` lines, indented by two spaces. Values are sanitized.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(label, _)| label.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (label, value) in pairs {
        let pad = width - label.chars().count();
        out.push_str(&format!("  {label}{}  {}\n", " ".repeat(pad), sanitize(value)));
    }
    out
}

/// An epoch-milliseconds time as RFC 3339 in UTC, to the second.
pub fn iso_time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// How long before `now_ms` the time `ms` was, the way people say it: `just now`, `5m ago`.
pub fn ago(ms: u64, now_ms: u64) -> String {
    let secs = now_ms.saturating_sub(ms) / 1000;
    match secs {
        0..=9 => "just now".into(),
        10..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_trim() {
        let t = table(
            &["CODE", "NAME", "N"],
            &[
                vec!["ABC123".into(), "Café ☕".into(), "3".into()],
                vec!["X".into(), "A much longer name".into(), "12".into()],
            ],
        );
        assert_eq!(
            t,
            "CODE    NAME                N\nABC123  Café ☕              3\nX       A much longer name  12\n"
        );
    }

    #[test]
    fn hostile_text_cannot_drive_the_terminal() {
        assert_eq!(sanitize("a\u{1b}[2Jb\nc\u{202E}d"), "a\u{FFFD}[2Jb\u{FFFD}c\u{FFFD}d");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }

    #[test]
    fn fields_align() {
        assert_eq!(
            fields(&[("Code", "ABC123".into()), ("Host token", "t".into())]),
            "  Code        ABC123\n  Host token  t\n"
        );
    }

    #[test]
    fn times_read_well() {
        assert_eq!(iso_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(ago(1_000, 1_500), "just now");
        assert_eq!(ago(0, 42_000), "42s ago");
        assert_eq!(ago(0, 5 * 60_000), "5m ago");
        assert_eq!(ago(0, 3 * 3_600_000), "3h ago");
        assert_eq!(ago(0, 49 * 3_600_000), "2d ago");
        assert_eq!(ago(10_000, 0), "just now");
    }
}
