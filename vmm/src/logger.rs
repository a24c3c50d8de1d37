//! A small stderr logger: `kiln-vmm[PID] LEVEL +SECONDS message`, with the
//! time since the VMM started, so a log reads next to debug-port timestamps.

use std::io::Write;
use std::time::Instant;

use log::{LevelFilter, Log, Metadata, Record};

struct Logger {
    start: Instant,
}

impl Log for Logger {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }

    fn log(&self, record: &Record) {
        if !record.target().starts_with("kiln") {
            return;
        }
        let t = self.start.elapsed();
        // A raw-mode terminal needs the carriage return spelled out.
        let end = if crate::terminal::is_raw() {
            "\r\n"
        } else {
            "\n"
        };
        let _ = write!(
            std::io::stderr().lock(),
            "kiln-vmm[{}] {:<5} +{}.{:06} {}{end}",
            std::process::id(),
            record.level(),
            t.as_secs(),
            t.subsec_micros(),
            record.args()
        );
    }

    fn flush(&self) {}
}

pub fn init(level: LevelFilter, start: Instant) {
    if log::set_boxed_logger(Box::new(Logger { start })).is_ok() {
        log::set_max_level(level);
    }
}
