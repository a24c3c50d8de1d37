//! The firmware debug console at I/O port 0x402 (QEMU's `isa-debugcon`):
//! SeaBIOS and OVMF debug builds write their log here, a byte at a time.
//!
//! Reading the port returns 0xe9, which is how SeaBIOS checks that the
//! console exists before using it. Written bytes are collected into lines;
//! each complete line (or each [`MAX_LINE`] bytes without a newline) goes to
//! the sink: the VMM log by default ([`DebugCon::to_log`]), or any writer.
//! Control characters other than tab are dropped, so a guest cannot put
//! escape sequences into the VMM log, and after [`MAX_LINES`] lines the
//! rest is dropped (and counted), so a guest cannot flood it.

use std::io::Write;

use crate::devices::bus::BusDevice;

/// The port SeaBIOS (Debian's build) and OVMF write to.
pub const DEBUGCON_PORT: u16 = 0x402;
/// What a read of the port returns.
pub const READBACK: u8 = 0xe9;
/// Longest line kept before it is flushed anyway.
pub const MAX_LINE: usize = 512;
/// Lines passed on before the rest is dropped (SeaBIOS prints about 70 per
/// boot).
pub const MAX_LINES: u64 = 10_000;

enum Sink {
    Log,
    Writer(Box<dyn Write + Send>),
}

/// The debug console.
pub struct DebugCon {
    line: Vec<u8>,
    sink: Sink,
    lines: u64,
    dropped: u64,
}

impl DebugCon {
    /// Lines go to the VMM log at info level, prefixed `firmware:`.
    pub fn to_log() -> Self {
        DebugCon {
            line: Vec::new(),
            sink: Sink::Log,
            lines: 0,
            dropped: 0,
        }
    }

    /// Lines (with their newline) go to `out`.
    pub fn to_writer(out: Box<dyn Write + Send>) -> Self {
        DebugCon {
            line: Vec::new(),
            sink: Sink::Writer(out),
            lines: 0,
            dropped: 0,
        }
    }

    /// How many lines were passed on.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// How many lines came after [`MAX_LINES`] and were dropped.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn flush_line(&mut self) {
        if self.lines >= MAX_LINES {
            self.line.clear();
            if self.dropped == 0 {
                log::warn!("firmware debug console: {MAX_LINES} lines, dropping the rest");
            }
            self.dropped += 1;
            return;
        }
        let text = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        self.lines += 1;
        match &mut self.sink {
            Sink::Log => log::info!("firmware: {text}"),
            Sink::Writer(w) => {
                // A failing sink loses firmware debug output, nothing more.
                let _ = writeln!(w, "{text}");
                let _ = w.flush();
            }
        }
    }

    fn push(&mut self, b: u8) {
        match b {
            b'\n' => self.flush_line(),
            b'\t' | 0x20..=0x7e | 0x80..=0xff => {
                self.line.push(b);
                if self.line.len() >= MAX_LINE {
                    self.flush_line();
                }
            }
            _ => {}
        }
    }
}

impl BusDevice for DebugCon {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset == 0 {
            if let Some(b) = data.first_mut() {
                *b = READBACK;
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // Only the byte at the port itself is output.
        if offset == 0 {
            if let Some(&b) = data.first() {
                self.push(b);
            }
        }
    }
}

impl Drop for DebugCon {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.flush_line();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn reads_back_0xe9_for_seabios_detection() {
        let mut con = DebugCon::to_log();
        let mut b = [0u8; 1];
        con.read(0, &mut b);
        assert_eq!(b, [READBACK]);
        let mut w = [0xffu8; 2];
        con.read(0, &mut w);
        assert_eq!(w, [READBACK, 0]);
    }

    #[test]
    fn collects_lines_and_strips_control_characters() {
        let out = Shared::default();
        let mut con = DebugCon::to_writer(Box::new(out.clone()));
        for &b in b"SeaBIOS (version 1.16)\r\n\x1b[2Jok\tgo\n" {
            con.write(0, &[b]);
        }
        // Wider writes output only their first byte; other offsets nothing.
        con.write(0, b"xy");
        con.write(1, b"z");
        assert_eq!(con.lines(), 2);
        drop(con);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text, "SeaBIOS (version 1.16)\n[2Jok\tgo\nx\n");
    }

    #[test]
    fn output_is_bounded() {
        let out = Shared::default();
        let mut con = DebugCon::to_writer(Box::new(out.clone()));
        for _ in 0..MAX_LINES + 5 {
            con.write(0, b"\n");
        }
        assert_eq!((con.lines(), con.dropped()), (MAX_LINES, 5));
        assert_eq!(out.0.lock().unwrap().len() as u64, MAX_LINES);
    }

    #[test]
    fn long_lines_are_split() {
        let out = Shared::default();
        let mut con = DebugCon::to_writer(Box::new(out.clone()));
        for _ in 0..(MAX_LINE * 2 + 3) {
            con.write(0, b"a");
        }
        assert_eq!(con.lines(), 2);
        drop(con);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lens: Vec<usize> = text.lines().map(str::len).collect();
        assert_eq!(lens, vec![MAX_LINE, MAX_LINE, 3]);
    }
}
