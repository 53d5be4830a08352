//! Output helpers: tables, sizes, ages, and the per-layer progress display.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant, SystemTime};

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

pub fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serialisable"));
}

/// Prints rows as aligned columns (3 spaces between columns).
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}", width = w[i] + 3));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// Decimal sizes as Docker prints them: `4.27MB`, `1.2GB`, `512B`.
pub fn size(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < units.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{:.3}", v)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + units[u]
    }
}

/// `3 hours ago` from an RFC 3339 timestamp.
pub fn ago(ts: Option<&str>) -> String {
    let Some(t) = ts.and_then(|t| {
        humantime::parse_rfc3339_weak(t.trim_end_matches('Z').split('.').next().unwrap_or(t)).ok()
    }) else {
        return "N/A".into();
    };
    let Ok(d) = SystemTime::now().duration_since(t) else {
        return "Less than a second ago".into();
    };
    let s = d.as_secs();
    let (n, unit) = match s {
        0..=59 => {
            return if s <= 1 {
                "Less than a second ago".into()
            } else {
                format!("{s} seconds ago")
            };
        }
        60..=3599 => (s / 60, "minute"),
        3600..=86399 => (s / 3600, "hour"),
        86400..=604_799 => (s / 86400, "day"),
        604_800..=2_591_999 => (s / 604_800, "week"),
        2_592_000..=31_535_999 => (s / 2_592_000, "month"),
        _ => (s / 31_536_000, "year"),
    };
    if n == 1 {
        format!("{} {unit} ago", if unit == "hour" { "An" } else { "A" })
    } else {
        format!("{n} {unit}s ago")
    }
}

/// Per-layer progress: redrawn in place on a terminal, one line per state change otherwise.
pub struct LayerProgress {
    tty: bool,
    order: Vec<String>,
    layers: BTreeMap<String, (String, u64, u64)>,
    drawn: usize,
    last_draw: Instant,
}

impl Default for LayerProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerProgress {
    pub fn new() -> Self {
        LayerProgress {
            tty: std::io::stdout().is_terminal(),
            order: Vec::new(),
            layers: BTreeMap::new(),
            drawn: 0,
            last_draw: Instant::now() - Duration::from_secs(1),
        }
    }

    pub fn status(&mut self, text: &str) {
        if self.tty && self.drawn > 0 {
            self.redraw(true);
        }
        println!("{text}");
        self.drawn = 0;
    }

    pub fn layer(&mut self, digest: &str, state: &str, current: u64, total: u64) {
        let short = digest
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect::<String>();
        let changed = self.layers.get(&short).is_none_or(|(s, _, _)| s != state);
        if !self.layers.contains_key(&short) {
            self.order.push(short.clone());
        }
        self.layers
            .insert(short.clone(), (state.to_string(), current, total));
        if self.tty {
            let final_state = !matches!(state, "downloading" | "uploading" | "extracting");
            self.redraw(changed || final_state);
        } else if changed && state != "waiting" {
            println!("{short}: {}", capitalise(state));
        }
    }

    fn redraw(&mut self, force: bool) {
        if !force && self.last_draw.elapsed() < Duration::from_millis(100) {
            return;
        }
        self.last_draw = Instant::now();
        let mut out = std::io::stdout().lock();
        if self.drawn > 0 {
            let _ = write!(out, "\x1b[{}A", self.drawn);
        }
        for id in &self.order {
            let (state, cur, total) = &self.layers[id];
            let bar = if matches!(state.as_str(), "downloading" | "uploading") && *total > 0 {
                let w = 30;
                let filled = ((*cur as f64 / *total as f64) * w as f64) as usize;
                format!(
                    " [{}>{}] {}/{}",
                    "=".repeat(filled.min(w)),
                    " ".repeat(w - filled.min(w)),
                    size(*cur),
                    size(*total)
                )
            } else {
                String::new()
            };
            let _ = writeln!(out, "\x1b[2K{id}: {}{bar}", capitalise(state));
        }
        self.drawn = self.order.len();
        let _ = out.flush();
    }

    pub fn finish(&mut self) {
        if self.tty && !self.order.is_empty() {
            self.redraw(true);
        }
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size(512), "512B");
        assert_eq!(size(4_270_000), "4.27MB");
        assert_eq!(size(1_000_000_000), "1GB");
    }
}
