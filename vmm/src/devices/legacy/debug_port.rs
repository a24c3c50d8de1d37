//! The POST/debug port (I/O port 0x80).
//!
//! Firmware and some kernels write progress codes here. Each byte written is
//! recorded as a [`BootProgress`] with the time since the VMM process
//! started, so `GET /v1/vm` can show how far (and how fast) a boot went. The
//! log is bounded: the first [`MAX_RECORDS`] codes are kept, the rest only
//! counted. Reads return 0xff, as the port has nothing to read on a PC.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kiln_api::control::BootProgress;

use crate::devices::bus::BusDevice;

/// How many codes the log keeps.
pub const MAX_RECORDS: usize = 4096;

/// Port 0x80.
pub struct DebugPort {
    start: Instant,
    log: Arc<Mutex<Vec<BootProgress>>>,
    dropped: Arc<AtomicU64>,
}

impl DebugPort {
    /// `start` is the instant the VMM process started; times are relative to
    /// it.
    pub fn new(start: Instant) -> Self {
        DebugPort {
            start,
            log: Arc::new(Mutex::new(Vec::new())),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The recorded codes (shared: the API thread reads it while vCPUs
    /// write).
    pub fn log(&self) -> Arc<Mutex<Vec<BootProgress>>> {
        self.log.clone()
    }

    /// How many codes came after the log was full (and were not kept).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The same count, shared, for whoever holds only the log.
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }

    fn record(&self, code: u8) {
        let time_us = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        log::debug!("debug port: {code:#04x} at {time_us} us");
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() < MAX_RECORDS {
            log.push(BootProgress { code, time_us });
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl BusDevice for DebugPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // A wider access than one byte covers ports past 0x80 that are not
        // ours; only the byte at 0x80 itself is a code.
        if offset == 0 {
            if let Some(&code) = data.first() {
                self.record(code);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn records_codes_in_order_with_increasing_times() {
        let start = Instant::now();
        let mut port = DebugPort::new(start);
        let log = port.log();
        port.write(0, &[0x10]);
        std::thread::sleep(Duration::from_millis(2));
        port.write(0, &[0x20, 0x99]);
        let before = start.elapsed().as_micros() as u64;
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!((log[0].code, log[1].code), (0x10, 0x20));
        assert!(log[1].time_us >= log[0].time_us + 2000, "{log:?}");
        assert!(log[1].time_us <= before);
    }

    #[test]
    fn keeps_the_first_records_and_counts_the_rest() {
        let mut port = DebugPort::new(Instant::now());
        for i in 0..(MAX_RECORDS + 10) {
            port.write(0, &[i as u8]);
        }
        let log = port.log();
        let log = log.lock().unwrap();
        assert_eq!(log.len(), MAX_RECORDS);
        assert_eq!(log[MAX_RECORDS - 1].code, ((MAX_RECORDS - 1) % 256) as u8);
        assert_eq!(port.dropped(), 10);
        assert_eq!(port.dropped_counter().load(Ordering::Relaxed), 10);
    }

    #[test]
    fn reads_all_ones_and_ignores_empty_or_offset_writes() {
        let mut port = DebugPort::new(Instant::now());
        let mut b = [0u8; 4];
        port.read(0, &mut b);
        assert_eq!(b, [0xff; 4]);
        port.write(0, &[]);
        port.write(1, &[5]);
        assert!(port.log().lock().unwrap().is_empty());
    }
}
