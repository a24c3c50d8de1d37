//! The i8042 keyboard controller and its PS/2 keyboard; no mouse (AUX)
//! port.
//!
//! Inserted at I/O port 0x60 with length 5: offset 0 is the data port
//! (0x60), offset 4 the status/command port (0x64). Offset 1 (port 0x61,
//! "system control port B" on a PC) reads back its low gate bits and never
//! reports NMI sources. What it implements is what Linux's i8042 and atkbd
//! drivers and `reboot=k` use: the status register, the controller command
//! byte (0x20/0x60), self test (0xAA -> 0x55), keyboard interface test (0xAB
//! -> 0x00), keyboard disable/enable (0xAD/0xAE), output port read/write
//! (0xD0/0xD1) and the reset pulse (0xF0..0xFE with bit 0 clear, or output
//! port bit 0 cleared), which sends [`VmRequest::Reset`].
//!
//! Keys come from [`I8042Device::key_event`] (VNC, the control API's
//! `keys`): the keyboard encodes them in its scan code set (2 unless the
//! guest chose another, [`super::ps2_keys`]) into its own buffer, which
//! the controller moves byte by byte into its output buffer while the
//! keyboard interface is enabled, translated to set 1 when the command
//! byte's translate bit is set, raising IRQ 1 for each byte when the
//! command byte enables it.
//!
//! The AUX port is reported absent quickly (the AUX loop answers without the
//! AUX flag and the AUX interface test fails) so Linux's probe does not sit
//! in timeouts.

use std::collections::VecDeque;
use std::sync::Arc;

use super::ps2_keys::{self, Translator};
use crate::devices::bus::ByteRegisters;
use crate::devices::{Interrupt, VmRequest, VmRequests};

/// Ports 0x60..=0x64.
pub const I8042_PORT_LEN: u64 = 5;

const DATA_OFFSET: u64 = 0;
const PORT_B_OFFSET: u64 = 1;
const COMMAND_OFFSET: u64 = 4;

// Status register bits.
const SR_OBF: u8 = 0x01;
const SR_SYS: u8 = 0x04;
const SR_CMD: u8 = 0x08;
/// "Keyboard not inhibited" (keylock switch off).
const SR_KEYLOCK: u8 = 0x10;

// Controller command byte (CTR) bits.
const CTR_KBD_INT: u8 = 0x01;
const CTR_SYS: u8 = 0x04;
const CTR_KBD_DISABLE: u8 = 0x10;
const CTR_AUX_DISABLE: u8 = 0x20;
const CTR_XLATE: u8 = 0x40;

// Controller commands.
const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_OUTPORT: u8 = 0xd0;
const CMD_WRITE_OUTPORT: u8 = 0xd1;
const CMD_WRITE_KBD_OUTBUF: u8 = 0xd2;
const CMD_WRITE_AUX_OUTBUF: u8 = 0xd3;
const CMD_WRITE_AUX: u8 = 0xd4;

const SELF_TEST_OK: u8 = 0x55;
/// AUX interface test result "clock line stuck high": nothing attached.
const AUX_TEST_ABSENT: u8 = 0x02;

// Output port bits.
const OUTPORT_RESET: u8 = 0x01;
const OUTPORT_A20: u8 = 0x02;
const OUTPORT_KBD_OBF: u8 = 0x10;

// Keyboard protocol.
const KBD_ACK: u8 = 0xfa;
const KBD_RESEND: u8 = 0xfe;
const KBD_BAT_OK: u8 = 0xaa;
const KBD_ECHO: u8 = 0xee;

/// Output bytes the controller holds at most (a real one holds one; a queue
/// lets multi-byte keyboard answers through without losing bytes).
const OUTPUT_QUEUE_MAX: usize = 16;
/// Bytes of key codes the keyboard buffers (a real one: 16 keys or so).
const KEY_QUEUE_MAX: usize = 64;

/// Where the next data-port byte goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    /// To the keyboard.
    None,
    /// A parameter of this controller command.
    Controller(u8),
    /// A parameter of this keyboard command.
    Keyboard(u8),
}

/// The controller (and its keyboard).
pub struct I8042Device {
    requests: Arc<dyn VmRequests>,
    interrupt: Option<Arc<dyn Interrupt>>,
    ctr: u8,
    outport: u8,
    status_cmd: bool,
    pending: Pending,
    output: VecDeque<u8>,
    port_b: u8,
    scancode_set: u8,
    /// Whether the keyboard scans (0xF4 enable / 0xF5 disable).
    scanning: bool,
    /// The keyboard's buffer of key codes, not yet in the output buffer.
    keys: VecDeque<u8>,
    translator: Translator,
}

impl I8042Device {
    /// A controller whose reset pulse goes to `requests`.
    pub fn new(requests: Arc<dyn VmRequests>) -> Self {
        I8042Device {
            requests,
            interrupt: None,
            ctr: CTR_KBD_INT | CTR_SYS | CTR_AUX_DISABLE | CTR_XLATE,
            outport: OUTPORT_RESET | OUTPORT_A20,
            status_cmd: false,
            pending: Pending::None,
            output: VecDeque::new(),
            port_b: 0,
            scancode_set: 2,
            scanning: true,
            keys: VecDeque::new(),
            translator: Translator::default(),
        }
    }

    /// Key number `key` ([`ps2_keys`]) went down or up. Dropped while the
    /// keyboard does not scan, or when its buffer has no room for all of
    /// the key's bytes.
    pub fn key_event(&mut self, key: u16, down: bool) {
        if !self.scanning {
            log::debug!("i8042: keyboard disabled, dropping key {key:#x}");
            return;
        }
        let mut bytes = ps2_keys::encode(key, down, self.scancode_set);
        if self.ctr & CTR_XLATE != 0 {
            bytes = bytes
                .into_iter()
                .filter_map(|b| self.translator.feed(b))
                .collect();
        }
        if self.keys.len() + bytes.len() > KEY_QUEUE_MAX {
            log::debug!("i8042: keyboard buffer full, dropping key {key:#x}");
            return;
        }
        self.keys.extend(bytes);
        self.refill();
    }

    /// Move the keyboard's next byte into an empty output buffer while the
    /// keyboard interface is enabled.
    fn refill(&mut self) {
        if !self.output.is_empty() || self.ctr & CTR_KBD_DISABLE != 0 {
            return;
        }
        if let Some(b) = self.keys.pop_front() {
            self.push_output(b);
        }
    }

    /// The keyboard's reset (0xFF, 0xF5, 0xF6): default set, buffer empty.
    fn keyboard_defaults(&mut self) {
        self.scancode_set = 2;
        self.keys.clear();
        self.translator = Translator::default();
    }

    /// Connect the keyboard interrupt (IRQ 1). Without it the keyboard's
    /// answers are only seen by polling.
    pub fn with_interrupt(mut self, interrupt: Arc<dyn Interrupt>) -> Self {
        self.interrupt = Some(interrupt);
        self
    }

    fn status(&self) -> u8 {
        let mut s = SR_KEYLOCK;
        if !self.output.is_empty() {
            s |= SR_OBF;
        }
        if self.ctr & CTR_SYS != 0 {
            s |= SR_SYS;
        }
        if self.status_cmd {
            s |= SR_CMD;
        }
        s
    }

    fn raise_irq(&self) {
        if self.ctr & CTR_KBD_INT == 0 {
            return;
        }
        if let Some(irq) = &self.interrupt {
            if let Err(e) = irq.trigger() {
                log::warn!("i8042 interrupt failed: {e}");
            }
        }
    }

    fn push_output(&mut self, byte: u8) {
        if self.output.len() >= OUTPUT_QUEUE_MAX {
            log::debug!("i8042 output queue full, dropping {byte:#04x}");
            return;
        }
        self.output.push_back(byte);
        if self.output.len() == 1 {
            self.raise_irq();
        }
    }

    /// A controller answer replaces whatever the guest left unread.
    fn respond(&mut self, byte: u8) {
        self.output.clear();
        self.push_output(byte);
    }

    fn read_data(&mut self) -> u8 {
        let byte = self.output.pop_front().unwrap_or(0);
        if !self.output.is_empty() {
            self.raise_irq();
        }
        self.refill();
        byte
    }

    fn reset(&mut self, why: &str) {
        log::info!("i8042: guest reset ({why})");
        self.requests.request(VmRequest::Reset);
    }

    fn command(&mut self, cmd: u8) {
        self.status_cmd = true;
        self.pending = Pending::None;
        match cmd {
            CMD_READ_CTR => self.respond(self.ctr),
            CMD_WRITE_CTR | CMD_WRITE_OUTPORT | CMD_WRITE_KBD_OUTBUF | CMD_WRITE_AUX_OUTBUF
            | CMD_WRITE_AUX => self.pending = Pending::Controller(cmd),
            CMD_AUX_DISABLE => self.ctr |= CTR_AUX_DISABLE,
            CMD_AUX_ENABLE => self.ctr &= !CTR_AUX_DISABLE,
            CMD_AUX_TEST => self.respond(AUX_TEST_ABSENT),
            CMD_SELF_TEST => {
                self.ctr |= CTR_SYS;
                self.respond(SELF_TEST_OK);
            }
            CMD_KBD_TEST => self.respond(0x00),
            CMD_KBD_DISABLE => self.ctr |= CTR_KBD_DISABLE,
            CMD_KBD_ENABLE => {
                self.ctr &= !CTR_KBD_DISABLE;
                self.refill();
            }
            CMD_READ_OUTPORT => {
                let mut v = self.outport;
                if !self.output.is_empty() {
                    v |= OUTPORT_KBD_OBF;
                }
                self.respond(v);
            }
            // Pulse output lines: bit 0 clear pulses the CPU reset line.
            0xf0..=0xff if cmd & 1 == 0 => self.reset("reset pulse"),
            0xf0..=0xff => {}
            _ => log::debug!("i8042: unhandled command {cmd:#04x}"),
        }
    }

    fn controller_param(&mut self, cmd: u8, value: u8) {
        match cmd {
            CMD_WRITE_CTR => {
                self.ctr = value;
                self.refill();
            }
            CMD_WRITE_OUTPORT => {
                self.outport = value;
                if value & OUTPORT_RESET == 0 {
                    self.reset("output port reset bit cleared");
                }
            }
            CMD_WRITE_KBD_OUTBUF => self.push_output(value),
            // Looped back, but not flagged as AUX data: Linux then knows at
            // once there is no AUX port instead of waiting for one.
            CMD_WRITE_AUX_OUTBUF => self.respond(value),
            // No AUX device to send to.
            _ => {}
        }
    }

    fn keyboard_byte(&mut self, value: u8) {
        // Sending to the keyboard enables its interface.
        self.ctr &= !CTR_KBD_DISABLE;
        if let Pending::Keyboard(cmd) = self.pending {
            self.pending = Pending::None;
            match cmd {
                // Scan code set: 0 asks for the current one.
                0xf0 if value == 0 => {
                    self.push_output(KBD_ACK);
                    self.push_output(self.scancode_set);
                    return;
                }
                0xf0 if (1..=3).contains(&value) => self.scancode_set = value,
                0xf0 => {
                    self.push_output(KBD_RESEND);
                    return;
                }
                // LEDs, typematic rate: accepted.
                _ => {}
            }
            self.push_output(KBD_ACK);
            return;
        }
        match value {
            // Set LEDs, scan code set, typematic: a parameter follows.
            0xed | 0xf0 | 0xf3 => {
                self.pending = Pending::Keyboard(value);
                self.push_output(KBD_ACK);
            }
            KBD_ECHO => self.push_output(KBD_ECHO),
            // Identify: an MF2 keyboard.
            0xf2 => {
                self.push_output(KBD_ACK);
                self.push_output(0xab);
                self.push_output(0x83);
            }
            // Reset and self test.
            0xff => {
                self.keyboard_defaults();
                self.scanning = true;
                self.push_output(KBD_ACK);
                self.push_output(KBD_BAT_OK);
            }
            0xf4 => {
                self.scanning = true;
                self.push_output(KBD_ACK);
            }
            // Disable (and set defaults), set defaults.
            0xf5 | 0xf6 => {
                self.keyboard_defaults();
                self.scanning = value == 0xf6;
                self.push_output(KBD_ACK);
            }
            // The set-3 key modes.
            0xf7..=0xfd => self.push_output(KBD_ACK),
            _ => self.push_output(KBD_RESEND),
        }
    }

    fn write_data(&mut self, value: u8) {
        self.status_cmd = false;
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::Controller(cmd) => self.controller_param(cmd, value),
            other => {
                self.pending = other;
                self.keyboard_byte(value);
            }
        }
    }
}

impl ByteRegisters for I8042Device {
    fn read_byte(&mut self, offset: u64) -> u8 {
        match offset {
            DATA_OFFSET => self.read_data(),
            PORT_B_OFFSET => self.port_b,
            COMMAND_OFFSET => self.status(),
            _ => 0xff,
        }
    }

    fn write_byte(&mut self, offset: u64, value: u8) {
        match offset {
            DATA_OFFSET => self.write_data(value),
            // Timer 2 gate and speaker bits; the rest are read-only.
            PORT_B_OFFSET => self.port_b = value & 0x0f,
            COMMAND_OFFSET => self.command(value),
            _ => {}
        }
    }
}

#[cfg(test)]
#[path = "i8042_keys_tests.rs"]
mod keys_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::bus::BusDevice;
    use crate::devices::{CountingInterrupt, RecordedRequests};
    use std::sync::atomic::Ordering;

    fn device() -> (I8042Device, Arc<RecordedRequests>) {
        let req = Arc::new(RecordedRequests::default());
        (I8042Device::new(req.clone()), req)
    }

    fn inb(dev: &mut I8042Device, off: u64) -> u8 {
        let mut b = [0u8];
        dev.read(off, &mut b);
        b[0]
    }

    /// Like Linux's i8042_command: write the command, the parameter if any,
    /// then read `answers` bytes, each after checking OBF.
    fn command(dev: &mut I8042Device, cmd: u8, param: Option<u8>, answers: usize) -> Vec<u8> {
        dev.write(COMMAND_OFFSET, &[cmd]);
        if let Some(p) = param {
            dev.write(DATA_OFFSET, &[p]);
        }
        (0..answers)
            .map(|_| {
                assert_ne!(
                    inb(dev, COMMAND_OFFSET) & SR_OBF,
                    0,
                    "no answer to {cmd:#x}"
                );
                inb(dev, DATA_OFFSET)
            })
            .collect()
    }

    #[test]
    fn linux_probe_sequence() {
        let (mut dev, req) = device();
        // Flush: nothing to read, status is not all ones, keylock off.
        let st = inb(&mut dev, COMMAND_OFFSET);
        assert_eq!(st & SR_OBF, 0);
        assert_ne!(st & SR_KEYLOCK, 0);
        assert_eq!(command(&mut dev, CMD_SELF_TEST, None, 1), [0x55]);
        let ctr = command(&mut dev, CMD_READ_CTR, None, 1)[0];
        assert_eq!(ctr & CTR_XLATE, CTR_XLATE);
        let new = (ctr | CTR_KBD_DISABLE) & !CTR_KBD_INT;
        command(&mut dev, CMD_WRITE_CTR, Some(new), 0);
        assert_eq!(command(&mut dev, CMD_READ_CTR, None, 1), [new]);
        assert_eq!(command(&mut dev, CMD_KBD_TEST, None, 1), [0x00]);
        command(&mut dev, CMD_KBD_ENABLE, None, 0);
        assert_eq!(
            command(&mut dev, CMD_READ_CTR, None, 1)[0] & CTR_KBD_DISABLE,
            0
        );
        command(&mut dev, CMD_KBD_DISABLE, None, 0);
        assert_ne!(
            command(&mut dev, CMD_READ_CTR, None, 1)[0] & CTR_KBD_DISABLE,
            0
        );
        // AUX probe: loop without the AUX flag, then a failed AUX test.
        dev.write(COMMAND_OFFSET, &[CMD_WRITE_AUX_OUTBUF]);
        dev.write(DATA_OFFSET, &[0x5a]);
        assert_eq!(inb(&mut dev, COMMAND_OFFSET) & (SR_OBF | 0x20), SR_OBF);
        assert_eq!(command(&mut dev, CMD_AUX_TEST, None, 1), [AUX_TEST_ABSENT]);
        assert_eq!(inb(&mut dev, COMMAND_OFFSET) & SR_OBF, 0);
        let out = command(&mut dev, CMD_READ_OUTPORT, None, 1)[0];
        assert_eq!(out & (OUTPORT_RESET | OUTPORT_A20), 0x03);
        assert!(req.0.lock().unwrap().is_empty());
    }

    #[test]
    fn reset_pulse_requests_a_reset() {
        let (mut dev, req) = device();
        // What Linux's reboot=k does: wait for IBF clear, write 0xFE.
        assert_eq!(inb(&mut dev, COMMAND_OFFSET) & 0x02, 0);
        dev.write(COMMAND_OFFSET, &[0xfe]);
        assert_eq!(*req.0.lock().unwrap(), vec![VmRequest::Reset]);
        // Pulsing other lines (bit 0 set) does not reset.
        dev.write(COMMAND_OFFSET, &[0xff]);
        assert_eq!(req.0.lock().unwrap().len(), 1);
        // Clearing the reset bit of the output port does.
        command(&mut dev, CMD_WRITE_OUTPORT, Some(0x02), 0);
        assert_eq!(req.0.lock().unwrap().len(), 2);
    }

    #[test]
    fn keyboard_answers_commands_with_interrupts() {
        let (dev, _) = device();
        let irq = Arc::new(CountingInterrupt::default());
        let mut dev = dev.with_interrupt(irq.clone());
        // Reset the keyboard: ACK, then BAT OK; an interrupt for each byte.
        dev.write(DATA_OFFSET, &[0xff]);
        assert_eq!(irq.0.load(Ordering::SeqCst), 1);
        assert_eq!(inb(&mut dev, DATA_OFFSET), KBD_ACK);
        assert_eq!(irq.0.load(Ordering::SeqCst), 2);
        assert_eq!(inb(&mut dev, DATA_OFFSET), KBD_BAT_OK);
        // Set LEDs takes a parameter: two ACKs.
        dev.write(DATA_OFFSET, &[0xed]);
        assert_eq!(inb(&mut dev, DATA_OFFSET), KBD_ACK);
        dev.write(DATA_OFFSET, &[0x07]);
        assert_eq!(inb(&mut dev, DATA_OFFSET), KBD_ACK);
        // Get scan code set.
        dev.write(DATA_OFFSET, &[0xf0]);
        dev.write(DATA_OFFSET, &[0x00]);
        assert_eq!(inb(&mut dev, DATA_OFFSET), KBD_ACK);
        assert_eq!(inb(&mut dev, DATA_OFFSET), KBD_ACK);
        assert_eq!(inb(&mut dev, DATA_OFFSET), 2);
        // With interrupts disabled in the CTR, none are raised.
        let before = irq.0.load(Ordering::SeqCst);
        dev.write(COMMAND_OFFSET, &[CMD_WRITE_CTR]);
        dev.write(DATA_OFFSET, &[CTR_SYS]);
        dev.write(DATA_OFFSET, &[0xf2]);
        assert_eq!(irq.0.load(Ordering::SeqCst), before);
        assert_eq!(inb(&mut dev, DATA_OFFSET), KBD_ACK);
    }

    #[test]
    fn output_queue_is_bounded_and_odd_accesses_are_harmless() {
        let (mut dev, req) = device();
        for _ in 0..1000 {
            dev.write(DATA_OFFSET, &[KBD_ECHO]);
        }
        let mut n = 0;
        while inb(&mut dev, COMMAND_OFFSET) & SR_OBF != 0 {
            assert_eq!(inb(&mut dev, DATA_OFFSET), KBD_ECHO);
            n += 1;
            assert!(n <= OUTPUT_QUEUE_MAX);
        }
        assert_eq!(n, OUTPUT_QUEUE_MAX);
        // Port 0x61 never reports NMI sources.
        dev.write(PORT_B_OFFSET, &[0xff]);
        assert_eq!(inb(&mut dev, PORT_B_OFFSET), 0x0f);
        let mut buf = [0u8; 8];
        dev.read(2, &mut buf);
        assert_eq!(buf[..2], [0xff, 0xff]);
        dev.read(u64::MAX, &mut buf);
        dev.write(u64::MAX - 1, &[0xfe, 0xfe, 0xfe]);
        dev.write(3, &[0, 0, 0, 0]);
        assert!(req.0.lock().unwrap().is_empty());
    }
}
