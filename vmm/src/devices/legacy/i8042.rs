//! The i8042 keyboard controller, its PS/2 keyboard and the PS/2 mouse
//! on its AUX port.
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
//! The AUX port holds a PS/2 mouse ([`super::ps2_mouse`]): AUX disable /
//! enable (0xA7/0xA8), interface test (0xA9 -> 0x00), AUX loop (0xD3,
//! answered with the AUX flag) and write to AUX (0xD4). Its bytes carry
//! the status register's AUX flag (0x20) and raise IRQ 12 when the
//! command byte enables it (bit 1). Host motion comes from
//! [`I8042Device::mouse_event`]. The keyboard and the mouse share the
//! output buffer fairly: when both have a byte waiting they take turns.

use std::collections::VecDeque;
use std::sync::Arc;

use super::ps2_keys::{self, Translator};
use super::ps2_mouse::Ps2Mouse;
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
/// The output buffer holds a byte from the AUX device.
const SR_AUXDATA: u8 = 0x20;

// Controller command byte (CTR) bits.
const CTR_KBD_INT: u8 = 0x01;
const CTR_AUX_INT: u8 = 0x02;
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
const AUX_TEST_OK: u8 = 0x00;

// Output port bits.
const OUTPORT_RESET: u8 = 0x01;
const OUTPORT_A20: u8 = 0x02;
const OUTPORT_KBD_OBF: u8 = 0x10;
const OUTPORT_AUX_OBF: u8 = 0x20;

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
    aux_interrupt: Option<Arc<dyn Interrupt>>,
    ctr: u8,
    outport: u8,
    status_cmd: bool,
    pending: Pending,
    /// Bytes for the guest, each with whether it comes from the AUX port.
    output: VecDeque<(u8, bool)>,
    port_b: u8,
    scancode_set: u8,
    /// Whether the keyboard scans (0xF4 enable / 0xF5 disable).
    scanning: bool,
    /// The keyboard's buffer of key codes, not yet in the output buffer.
    keys: VecDeque<u8>,
    translator: Translator,
    mouse: Ps2Mouse,
    /// Whether the mouse had the last turn (both had bytes waiting).
    aux_turn_last: bool,
}

impl I8042Device {
    /// A controller whose reset pulse goes to `requests`.
    pub fn new(requests: Arc<dyn VmRequests>) -> Self {
        I8042Device {
            requests,
            interrupt: None,
            aux_interrupt: None,
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
            mouse: Ps2Mouse::default(),
            aux_turn_last: false,
        }
    }

    /// The host moved the mouse (see [`Ps2Mouse::motion`]).
    pub fn mouse_event(&mut self, dx: i32, dy: i32, dz: i32, buttons: u8) {
        self.mouse.motion(dx, dy, dz, buttons);
        self.refill();
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

    /// Move the next byte of the keyboard or the mouse into an empty
    /// output buffer, from the interfaces that are enabled; turn about
    /// when both have one.
    fn refill(&mut self) {
        if !self.output.is_empty() {
            return;
        }
        let kbd = self.ctr & CTR_KBD_DISABLE == 0 && !self.keys.is_empty();
        let aux = self.ctr & CTR_AUX_DISABLE == 0 && self.mouse.has_byte();
        let take_aux = aux && (!kbd || !self.aux_turn_last);
        if take_aux {
            if let Some(b) = self.mouse.next_byte() {
                self.aux_turn_last = true;
                self.push_output(b, true);
            }
        } else if kbd {
            if let Some(b) = self.keys.pop_front() {
                self.aux_turn_last = false;
                self.push_output(b, false);
            }
        }
    }

    /// Connect the mouse interrupt (IRQ 12).
    pub fn with_aux_interrupt(mut self, interrupt: Arc<dyn Interrupt>) -> Self {
        self.aux_interrupt = Some(interrupt);
        self
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
        match self.output.front() {
            Some((_, true)) => s |= SR_OBF | SR_AUXDATA,
            Some(_) => s |= SR_OBF,
            None => {}
        }
        if self.ctr & CTR_SYS != 0 {
            s |= SR_SYS;
        }
        if self.status_cmd {
            s |= SR_CMD;
        }
        s
    }

    /// The interrupt of the byte at the head of the output buffer.
    fn raise_irq(&self) {
        let (enable, line) = match self.output.front() {
            Some((_, true)) => (CTR_AUX_INT, &self.aux_interrupt),
            Some(_) => (CTR_KBD_INT, &self.interrupt),
            None => return,
        };
        if self.ctr & enable == 0 {
            return;
        }
        if let Some(irq) = line {
            if let Err(e) = irq.trigger() {
                log::warn!("i8042 interrupt failed: {e}");
            }
        }
    }

    fn push_output(&mut self, byte: u8, aux: bool) {
        if self.output.len() >= OUTPUT_QUEUE_MAX {
            log::debug!("i8042 output queue full, dropping {byte:#04x}");
            return;
        }
        self.output.push_back((byte, aux));
        if self.output.len() == 1 {
            self.raise_irq();
        }
    }

    /// A controller answer replaces whatever the guest left unread.
    fn respond(&mut self, byte: u8) {
        self.output.clear();
        self.push_output(byte, false);
    }

    fn read_data(&mut self) -> u8 {
        let byte = self.output.pop_front().map_or(0, |(b, _)| b);
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
            CMD_AUX_ENABLE => {
                self.ctr &= !CTR_AUX_DISABLE;
                self.refill();
            }
            CMD_AUX_TEST => self.respond(AUX_TEST_OK),
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
                match self.output.front() {
                    Some((_, true)) => v |= OUTPORT_AUX_OBF,
                    Some(_) => v |= OUTPORT_KBD_OBF,
                    None => {}
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
            CMD_WRITE_KBD_OUTBUF => self.push_output(value, false),
            // Looped back as if the mouse sent it (Linux's AUX probe).
            CMD_WRITE_AUX_OUTBUF => {
                self.output.clear();
                self.push_output(value, true);
            }
            // Sending to the mouse enables its interface (as to the keyboard).
            CMD_WRITE_AUX => {
                self.ctr &= !CTR_AUX_DISABLE;
                self.mouse.write(value);
                self.refill();
            }
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
                    self.push_output(KBD_ACK, false);
                    self.push_output(self.scancode_set, false);
                    return;
                }
                0xf0 if (1..=3).contains(&value) => self.scancode_set = value,
                0xf0 => {
                    self.push_output(KBD_RESEND, false);
                    return;
                }
                // LEDs, typematic rate: accepted.
                _ => {}
            }
            self.push_output(KBD_ACK, false);
            return;
        }
        match value {
            // Set LEDs, scan code set, typematic: a parameter follows.
            0xed | 0xf0 | 0xf3 => {
                self.pending = Pending::Keyboard(value);
                self.push_output(KBD_ACK, false);
            }
            KBD_ECHO => self.push_output(KBD_ECHO, false),
            // Identify: an MF2 keyboard.
            0xf2 => {
                self.push_output(KBD_ACK, false);
                self.push_output(0xab, false);
                self.push_output(0x83, false);
            }
            // Reset and self test.
            0xff => {
                self.keyboard_defaults();
                self.scanning = true;
                self.push_output(KBD_ACK, false);
                self.push_output(KBD_BAT_OK, false);
            }
            0xf4 => {
                self.scanning = true;
                self.push_output(KBD_ACK, false);
            }
            // Disable (and set defaults), set defaults.
            0xf5 | 0xf6 => {
                self.keyboard_defaults();
                self.scanning = value == 0xf6;
                self.push_output(KBD_ACK, false);
            }
            // The set-3 key modes.
            0xf7..=0xfd => self.push_output(KBD_ACK, false),
            _ => self.push_output(KBD_RESEND, false),
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
#[path = "i8042_tests.rs"]
mod tests;
