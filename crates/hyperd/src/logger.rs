//! A small stderr logger: `2026-11-27T12:00:00.123Z INFO  hyperd: message`.

use log::{LevelFilter, Metadata, Record};

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        // Our crates at the configured level; dependencies only when they warn.
        ["hyperd", "image_store", "libpod", "sandbox"].iter().any(|t| m.target().starts_with(t)) || m.level() <= log::Level::Warn
    }
    fn log(&self, r: &Record) {
        if self.enabled(r.metadata()) {
            let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
            eprintln!("{now} {:<5} {}: {}", r.level(), r.target(), r.args());
        }
    }
    fn flush(&self) {}
}

pub fn init(level: LevelFilter) {
    let _ = log::set_logger(&Logger);
    log::set_max_level(level);
}
