//! Text for people: local times (`2026-12-04 14:03:11`), durations (`12.4 s`), counts
//! with their unit in the right number (`1 binding`, `2 bindings`) and aligned tables.
//! Only presentation lives here; what to show is each verb's business, and `--json`
//! output never passes through this module.

use serde_json::Value;

/// `1 binding`, `2 bindings`, `3 entries`, `0 matches`.
pub fn count(n: u64, singular: &str) -> String {
    format!("{n} {}", noun(n, singular))
}

/// The noun alone, in the number `n` asks for.
pub fn noun(n: u64, singular: &str) -> String {
    if n == 1 {
        return singular.to_owned();
    }
    let consonant_y = singular.ends_with('y')
        && !singular.ends_with("ay")
        && !singular.ends_with("ey")
        && !singular.ends_with("oy");
    if consonant_y {
        format!("{}ies", &singular[..singular.len() - 1])
    } else if ["s", "x", "sh", "ch"].iter().any(|e| singular.ends_with(e)) {
        format!("{singular}es")
    } else {
        format!("{singular}s")
    }
}

/// A count from a JSON field (0 when absent).
pub fn count_of(v: &Value, singular: &str) -> String {
    count(v.as_u64().unwrap_or(0), singular)
}

/// `850 ms`, `12.4 s`, `3 min 05 s`, `2 h 07 min`.
pub fn duration_ms(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{} min {:02} s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{} h {:02} min", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// `2 d 3 h` for an uptime in seconds.
pub fn uptime(seconds: u64) -> String {
    match seconds {
        0..=59 => format!("{seconds} s"),
        60..=3599 => format!("{} min", seconds / 60),
        3600..=86_399 => format!("{} h {} min", seconds / 3600, (seconds / 60) % 60),
        _ => format!("{} d {} h", seconds / 86_400, (seconds / 3600) % 24),
    }
}

/// A Unix time in milliseconds as local time, `2026-12-04 14:03:11` (the system's time
/// zone; UTC when it cannot be read).
pub fn local_time(ms: u64) -> String {
    let Ok(ms) = i64::try_from(ms) else {
        return ms.to_string();
    };
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t
            .to_zoned_datetime(jiff::tz::TimeZone::system())
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string(),
        Err(_) => ms.to_string(),
    }
}

/// A JSON time in milliseconds as local time, or `never` when null.
pub fn time_or(v: &Value, none: &str) -> String {
    v.as_u64().map_or_else(|| none.to_owned(), local_time)
}

/// `1.2 MB`-style sizes (decimal units, as `df -H`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "kB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        count(n, "byte")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// An I/O error as the end of a sentence: `no such file or directory`, without the
/// `(os error N)` tail.
pub fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or_default();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A JSON string field, or `fallback`.
pub fn text<'a>(v: &'a Value, fallback: &'a str) -> &'a str {
    v.as_str().unwrap_or(fallback)
}

/// Columns aligned on the widest cell; the last column is not padded.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table's lines.
    pub fn lines(&self) -> Vec<String> {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        self.rows
            .iter()
            .map(|row| {
                let mut line = String::new();
                for (c, cell) in row.iter().enumerate() {
                    if c + 1 < row.len() {
                        let pad = widths[c].saturating_sub(cell.chars().count());
                        line.push_str(cell);
                        line.push_str(&" ".repeat(pad + 2));
                    } else {
                        line.push_str(cell);
                    }
                }
                line.trim_end().to_owned()
            })
            .collect()
    }

    pub fn print(&self) {
        for line in self.lines() {
            crate::outln!("{line}");
        }
    }
}

/// `key   value` lines, keys aligned.
pub fn fields(pairs: &[(&str, String)]) {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in pairs {
        crate::outln!("{k:width$}  {v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_agree_with_their_number() {
        assert_eq!(count(1, "binding"), "1 binding");
        assert_eq!(count(2, "binding"), "2 bindings");
        assert_eq!(count(0, "entry"), "0 entries");
        assert_eq!(count(3, "match"), "3 matches");
        assert_eq!(count(2, "day"), "2 days");
    }

    #[test]
    fn durations_and_sizes_read_as_people_say_them() {
        assert_eq!(duration_ms(850), "850 ms");
        assert_eq!(duration_ms(12_400), "12.4 s");
        assert_eq!(duration_ms(185_000), "3 min 05 s");
        assert_eq!(duration_ms(7_620_000), "2 h 07 min");
        assert_eq!(bytes(1), "1 byte");
        assert_eq!(bytes(13_400_000), "13.4 MB");
        assert_eq!(uptime(90_000), "1 d 1 h");
    }

    #[test]
    fn times_are_local_and_to_the_second() {
        let t = local_time(1_796_392_991_000);
        assert_eq!(t.len(), "2026-12-04 14:03:11".len(), "{t}");
        assert!(t.starts_with("2026-12-0"), "{t}");
        assert!(!t.contains('T') && !t.contains("1796392991"));
    }

    #[test]
    fn tables_align_their_columns() {
        let mut t = Table::new(&["SOURCE", "STATE", "USERS"]);
        t.row(vec!["ldap".into(), "ok".into(), "12".into()]);
        t.row(vec!["file".into(), "never run".into(), "0".into()]);
        assert_eq!(
            t.lines(),
            [
                "SOURCE  STATE      USERS",
                "ldap    ok         12",
                "file    never run  0"
            ]
        );
    }
}
