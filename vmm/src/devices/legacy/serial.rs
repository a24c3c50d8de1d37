//! The COM1 UART (8250/16550A), on `vm-superio`'s register model.
//!
//! Output goes to a writer (the console log, a pty, stdout); a failing
//! writer never stops the guest: the first error is logged, the bytes that
//! could not be written are dropped and counted. Input is offered with
//! [`SerialDevice::enqueue_input`], which takes no more than the 64-byte
//! receive FIFO has room for, so the caller keeps the rest and retries once
//! the guest has read some (never an unbounded buffer here).

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use vm_superio::serial::{Error as SerialError, NoEvents};
use vm_superio::{Serial, Trigger};

use crate::devices::bus::BusDevice;
use crate::devices::Interrupt;

/// Registers at offsets 0..8 from the base port.
pub const SERIAL_PORT_LEN: u64 = 8;

/// Raises the UART's interrupt line when `vm-superio` says so.
struct IrqTrigger(Arc<dyn Interrupt>);

impl Trigger for IrqTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.trigger()
    }
}

/// The output side: never fails towards the UART model.
struct Output {
    inner: Box<dyn Write + Send>,
    dropped: Arc<AtomicU64>,
    logged: bool,
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Err(e) = self.inner.write_all(buf) {
            self.dropped.fetch_add(buf.len() as u64, Ordering::Relaxed);
            if !self.logged {
                log::warn!("serial output failed, dropping output: {e}");
                self.logged = true;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // A flush error means lost output as well; write() already reports
        // those.
        let _ = self.inner.flush();
        Ok(())
    }
}

/// COM1, ready to insert on the I/O bus at `layout::COM1_PORT`, length
/// [`SERIAL_PORT_LEN`].
pub struct SerialDevice {
    uart: Serial<IrqTrigger, NoEvents, Output>,
    dropped: Arc<AtomicU64>,
    irq_error_logged: bool,
}

impl SerialDevice {
    pub fn new(interrupt: Arc<dyn Interrupt>, out: Box<dyn Write + Send>) -> Self {
        let dropped = Arc::new(AtomicU64::new(0));
        let output = Output {
            inner: out,
            dropped: dropped.clone(),
            logged: false,
        };
        SerialDevice {
            uart: Serial::new(IrqTrigger(interrupt), output),
            dropped,
            irq_error_logged: false,
        }
    }

    /// Offer console input to the guest. Returns how many bytes of `data`
    /// were taken (0 when the FIFO is full or the UART is in loopback mode);
    /// the caller keeps the rest for later.
    pub fn enqueue_input(&mut self, data: &[u8]) -> usize {
        let room = self.uart.fifo_capacity();
        if data.is_empty() || room == 0 {
            return 0;
        }
        match self.uart.enqueue_raw_bytes(data) {
            Ok(n) => n,
            // The bytes are in the FIFO even though the interrupt failed.
            Err(SerialError::Trigger(e)) => {
                self.log_irq_error(&e);
                room.min(data.len())
            }
            Err(SerialError::FullFifo) => 0,
            Err(SerialError::IOError(e)) => {
                log::warn!("serial input: {e}");
                0
            }
        }
    }

    /// Free room in the receive FIFO.
    pub fn input_capacity(&self) -> usize {
        self.uart.fifo_capacity()
    }

    /// Output bytes lost because the writer failed.
    pub fn dropped_output(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn log_irq_error(&mut self, e: &io::Error) {
        if !self.irq_error_logged {
            log::warn!("serial interrupt failed: {e}");
            self.irq_error_logged = true;
        }
    }
}

impl BusDevice for SerialDevice {
    // The UART has byte registers; a wider access is split into byte
    // accesses at consecutive ports, as on the ISA bus.
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let off = offset.saturating_add(i as u64);
            *b = if off < SERIAL_PORT_LEN {
                self.uart.read(off as u8)
            } else {
                0xff
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            let off = offset.saturating_add(i as u64);
            if off >= SERIAL_PORT_LEN {
                break;
            }
            match self.uart.write(off as u8, b) {
                Ok(()) => {}
                Err(SerialError::Trigger(e)) => self.log_irq_error(&e),
                // Output never fails (see `Output`); FullFifo is loopback
                // overflow, where the byte is lost as on hardware.
                Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::CountingInterrupt;
    use std::sync::Mutex;

    const DATA: u64 = 0;
    const IER: u64 = 1;
    const IIR: u64 = 2;
    const LCR: u64 = 3;
    const LSR: u64 = 5;

    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The write end of a pipe whose read end is closed: writes fail with
    /// EPIPE (the Rust runtime ignores SIGPIPE).
    fn broken_pipe() -> std::fs::File {
        use std::os::fd::FromRawFd;
        let mut fds = [0i32; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe(2) to fill.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: fds[0] is a pipe fd we own and close exactly once here.
        unsafe { libc::close(fds[0]) };
        // SAFETY: fds[1] is a pipe fd we own; the File takes ownership.
        unsafe { std::fs::File::from_raw_fd(fds[1]) }
    }

    fn irq_count(irq: &CountingInterrupt) -> usize {
        irq.0.load(Ordering::SeqCst)
    }

    fn read_byte(dev: &mut SerialDevice, off: u64) -> u8 {
        let mut b = [0u8];
        dev.read(off, &mut b);
        b[0]
    }

    #[test]
    fn output_reaches_the_writer() {
        let buf = SharedBuf::default();
        let irq = Arc::new(CountingInterrupt::default());
        let mut dev = SerialDevice::new(irq, Box::new(buf.clone()));
        for &b in b"Linux version" {
            dev.write(DATA, &[b]);
        }
        assert_eq!(buf.0.lock().unwrap().as_slice(), b"Linux version");
        // Transmitter empty and holding register empty.
        assert_eq!(read_byte(&mut dev, LSR) & 0x60, 0x60);
    }

    #[test]
    fn input_respects_the_fifo_and_raises_the_interrupt() {
        let irq = Arc::new(CountingInterrupt::default());
        let mut dev = SerialDevice::new(irq.clone(), Box::new(io::sink()));
        // Enable the received-data interrupt.
        dev.write(IER, &[0x01]);
        let input: Vec<u8> = (0..100u8).collect();
        let taken = dev.enqueue_input(&input);
        assert_eq!(taken, 64);
        assert_eq!(dev.input_capacity(), 0);
        assert_eq!(dev.enqueue_input(&input[taken..]), 0);
        assert_eq!(irq_count(&irq), 1);
        // Data ready, and the IIR says "received data available".
        assert_eq!(read_byte(&mut dev, LSR) & 0x01, 0x01);
        assert_eq!(read_byte(&mut dev, IIR) & 0x0f, 0x04);
        for expect in 0..64u8 {
            assert_eq!(read_byte(&mut dev, DATA), expect);
        }
        assert_eq!(read_byte(&mut dev, LSR) & 0x01, 0);
        // Room again: the rest goes in, with a new interrupt.
        assert_eq!(dev.enqueue_input(&input[taken..]), 36);
        assert_eq!(irq_count(&irq), 2);
        assert_eq!(read_byte(&mut dev, DATA), 64);
    }

    #[test]
    fn no_interrupt_unless_enabled() {
        let irq = Arc::new(CountingInterrupt::default());
        let mut dev = SerialDevice::new(irq.clone(), Box::new(io::sink()));
        assert_eq!(dev.enqueue_input(b"abc"), 3);
        dev.write(DATA, b"x");
        assert_eq!(irq_count(&irq), 0);
        // Enabling THR-empty interrupts raises one at once (THR is empty).
        dev.write(IER, &[0x02]);
        assert_eq!(irq_count(&irq), 1);
    }

    #[test]
    fn broken_output_is_dropped_and_counted() {
        let irq = Arc::new(CountingInterrupt::default());
        let mut out = broken_pipe();
        assert_eq!(
            out.write(b"x").unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
        let mut dev = SerialDevice::new(irq, Box::new(out));
        for &b in b"hello" {
            dev.write(DATA, &[b]);
        }
        assert_eq!(dev.dropped_output(), 5);
        // Still alive: registers work.
        dev.write(LCR, &[0x03]);
        assert_eq!(read_byte(&mut dev, LCR), 0x03);
    }

    #[test]
    fn divisor_latch_and_odd_accesses() {
        let irq = Arc::new(CountingInterrupt::default());
        let buf = SharedBuf::default();
        let mut dev = SerialDevice::new(irq, Box::new(buf.clone()));
        dev.write(LCR, &[0x80]);
        dev.write(DATA, &[0x01]);
        dev.write(IER, &[0x00]);
        assert_eq!(read_byte(&mut dev, DATA), 0x01);
        dev.write(LCR, &[0x03]);
        // The divisor write produced no output.
        assert!(buf.0.lock().unwrap().is_empty());
        // A word read at offset 7 covers one port past the device.
        let mut w = [0u8; 2];
        dev.read(7, &mut w);
        assert_eq!(w[1], 0xff);
        dev.write(6, &[1, 2, 3, 4]);
        dev.read(100, &mut w);
        assert_eq!(w, [0xff, 0xff]);
        assert_eq!(dev.enqueue_input(&[]), 0);
    }
}
