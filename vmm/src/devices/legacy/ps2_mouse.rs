//! The PS/2 mouse on the i8042's AUX port: its command set (what Linux's
//! psmouse and Windows' i8042prt use) and its movement packets.
//!
//! Commands: reset (0xFF -> FA AA 00), resend (0xFE), set defaults
//! (0xF6), disable / enable data reporting (0xF5 / 0xF4), set sample rate
//! (0xF3 n), get device ID (0xF2), set remote / stream mode (0xF0 /
//! 0xEA), read data (0xEB), set / reset wrap mode (0xEE / 0xEC), status
//! request (0xE9), set resolution (0xE8 n), scaling 2:1 / 1:1 (0xE7 /
//! 0xE6). The IntelliMouse knock (sample rates 200, 100, 80 in a row)
//! turns the device ID to 3 and the packets to four bytes (the fourth a
//! wheel count -8..7).
//!
//! Host motion ([`Ps2Mouse::motion`]) is queued as packets whose deltas
//! fit the packet (-255..=255; a larger move becomes several packets),
//! merged into the last one while the buttons do not change, so a click
//! between two reads is never lost. At most [`MAX_PACKETS`] wait; past
//! that, motion merges into the last one (deltas saturate, the overflow
//! bits say so). The mouse's answer bytes are bounded as well
//! ([`MAX_BYTES`]); the controller takes them one at a time
//! ([`Ps2Mouse::next_byte`]).

use std::collections::VecDeque;

/// Packets the mouse holds at most.
pub const MAX_PACKETS: usize = 64;
/// Answer bytes the mouse holds at most (a packet, or a command's answer).
pub const MAX_BYTES: usize = 16;
/// The largest delta one packet carries.
pub const MAX_DELTA: i32 = 255;
/// Saturation of a packet's accumulated deltas (merged motion).
const MAX_ACCUMULATED: i32 = 1 << 16;

pub const ACK: u8 = 0xfa;
pub const RESEND: u8 = 0xfe;
pub const BAT_OK: u8 = 0xaa;
/// IntelliMouse device ID (wheel).
pub const ID_WHEEL: u8 = 3;

/// Buttons as the packet's low bits carry them.
pub const BUTTON_LEFT: u8 = 0x01;
pub const BUTTON_RIGHT: u8 = 0x02;
pub const BUTTON_MIDDLE: u8 = 0x04;

const VALID_RATES: [u8; 7] = [10, 20, 40, 60, 80, 100, 200];
const KNOCK: [u8; 3] = [200, 100, 80];

/// One movement report: deltas in mouse counts (y up, as PS/2 counts it;
/// z positive is the wheel turned towards the user) and the buttons.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Packet {
    pub dx: i32,
    pub dy: i32,
    pub dz: i32,
    pub buttons: u8,
}

/// Scaling 2:1 (stream mode only): the PS/2 table for small deltas.
fn scale_2_1(d: i32) -> i32 {
    let m = match d.abs() {
        0 => 0,
        1 | 2 => 1,
        3 => 3,
        4 => 6,
        5 => 9,
        a => 2 * a,
    };
    m * d.signum()
}

/// The packet's bytes: three, or four when `wheel` (device ID 3). Deltas
/// outside -256..=255 saturate and set the overflow bit of their axis.
pub fn encode(p: &Packet, wheel: bool) -> Vec<u8> {
    let mut b0 = 0x08 | (p.buttons & 0x07);
    let fit = |d: i32, sign: u8, ovf: u8, b0: &mut u8| -> u8 {
        if !(-256..=255).contains(&d) {
            *b0 |= ovf;
        }
        let d = d.clamp(-256, 255);
        if d < 0 {
            *b0 |= sign;
        }
        d as u8
    };
    let x = fit(p.dx, 0x10, 0x40, &mut b0);
    let y = fit(p.dy, 0x20, 0x80, &mut b0);
    let mut out = vec![b0, x, y];
    if wheel {
        out.push((p.dz.clamp(-8, 7) as u8) & 0x0f);
    }
    out
}

/// The mouse's state.
pub struct Ps2Mouse {
    /// Answer bytes the controller has not taken yet.
    out: VecDeque<u8>,
    packets: VecDeque<Packet>,
    /// Remote mode's motion since the last read (0xEB).
    remote: Packet,
    /// The last packet sent (for 0xFE).
    last: Vec<u8>,
    /// The command whose parameter comes next.
    pending: Option<u8>,
    reporting: bool,
    remote_mode: bool,
    wrap: bool,
    scaling_2_1: bool,
    resolution: u8,
    rate: u8,
    /// The last three sample rates set (for the IntelliMouse knock).
    rates: [u8; 3],
    id: u8,
    buttons: u8,
}

impl Default for Ps2Mouse {
    fn default() -> Self {
        Ps2Mouse {
            out: VecDeque::new(),
            packets: VecDeque::new(),
            remote: Packet::default(),
            last: Vec::new(),
            pending: None,
            reporting: false,
            remote_mode: false,
            wrap: false,
            scaling_2_1: false,
            resolution: 2,
            rate: 100,
            rates: [0; 3],
            id: 0,
            buttons: 0,
        }
    }
}

impl Ps2Mouse {
    /// The device ID (0, or 3 after the IntelliMouse knock).
    pub fn id(&self) -> u8 {
        self.id
    }

    /// Whether the mouse sends movement packets (stream mode, enabled).
    pub fn streaming(&self) -> bool {
        self.reporting && !self.remote_mode && !self.wrap
    }

    fn answer(&mut self, bytes: &[u8]) {
        if self.out.len() + bytes.len() > MAX_BYTES {
            log::debug!("ps2 mouse: answer queue full, dropping {bytes:02x?}");
            return;
        }
        self.out.extend(bytes);
    }

    /// Set defaults (0xF6, part of reset): reporting off, stream mode.
    fn defaults(&mut self) {
        self.reporting = false;
        self.remote_mode = false;
        self.scaling_2_1 = false;
        self.resolution = 2;
        self.rate = 100;
        self.packets.clear();
        self.remote = Packet::default();
    }

    /// The next byte for the controller: an answer, else (streaming) the
    /// next packet's first byte.
    pub fn next_byte(&mut self) -> Option<u8> {
        if self.out.is_empty() && self.streaming() {
            if let Some(mut p) = self.packets.pop_front() {
                if self.scaling_2_1 {
                    p.dx = scale_2_1(p.dx);
                    p.dy = scale_2_1(p.dy);
                }
                let bytes = encode(&p, self.id == ID_WHEEL);
                self.out.extend(&bytes);
                self.last = bytes;
            }
        }
        self.out.pop_front()
    }

    /// Whether [`next_byte`](Self::next_byte) has something.
    pub fn has_byte(&self) -> bool {
        !self.out.is_empty() || (self.streaming() && !self.packets.is_empty())
    }

    /// The host moved the mouse by (dx, dy) counts (y up), turned the
    /// wheel by dz, and holds `buttons` ([`BUTTON_LEFT`]...).
    pub fn motion(&mut self, dx: i32, dy: i32, dz: i32, buttons: u8) {
        let buttons = buttons & 0x07;
        if dx == 0 && dy == 0 && dz == 0 && buttons == self.buttons {
            return;
        }
        if self.remote_mode {
            let r = &mut self.remote;
            r.dx = (r.dx + dx).clamp(-MAX_ACCUMULATED, MAX_ACCUMULATED);
            r.dy = (r.dy + dy).clamp(-MAX_ACCUMULATED, MAX_ACCUMULATED);
            r.dz = (r.dz + dz).clamp(-8, 7);
            r.buttons = buttons;
            self.buttons = buttons;
            return;
        }
        if !self.streaming() {
            self.buttons = buttons;
            return;
        }
        let wheel = self.id == ID_WHEEL;
        let (mut dx, mut dy, mut dz) = (dx, dy, if wheel { dz } else { 0 });
        let mut first = buttons != self.buttons;
        self.buttons = buttons;
        loop {
            let px = dx.clamp(-MAX_DELTA, MAX_DELTA);
            let py = dy.clamp(-MAX_DELTA, MAX_DELTA);
            let pz = dz.clamp(-8, 7);
            let merged = !first && self.merge(px, py, pz);
            if !merged {
                if self.packets.len() >= MAX_PACKETS {
                    // Full: the rest goes into the last packet, saturated.
                    if let Some(last) = self.packets.back_mut() {
                        last.dx = (last.dx + dx).clamp(-MAX_ACCUMULATED, MAX_ACCUMULATED);
                        last.dy = (last.dy + dy).clamp(-MAX_ACCUMULATED, MAX_ACCUMULATED);
                        last.dz = (last.dz + dz).clamp(-8, 7);
                        last.buttons = buttons;
                    }
                    return;
                }
                self.packets.push_back(Packet {
                    dx: px,
                    dy: py,
                    dz: pz,
                    buttons,
                });
            }
            first = false;
            dx -= px;
            dy -= py;
            dz -= pz;
            if dx == 0 && dy == 0 && dz == 0 {
                return;
            }
        }
    }

    /// Add to the last queued packet if the sums still fit one packet.
    fn merge(&mut self, dx: i32, dy: i32, dz: i32) -> bool {
        let Some(last) = self.packets.back_mut() else {
            return false;
        };
        let (x, y, z) = (last.dx + dx, last.dy + dy, last.dz + dz);
        if x.abs() > MAX_DELTA || y.abs() > MAX_DELTA || !(-8..=7).contains(&z) {
            return false;
        }
        (last.dx, last.dy, last.dz) = (x, y, z);
        true
    }

    /// A byte from the guest (through the controller's 0xD4).
    pub fn write(&mut self, value: u8) {
        if let Some(cmd) = self.pending.take() {
            return self.parameter(cmd, value);
        }
        if self.wrap && !matches!(value, 0xec | 0xff) {
            return self.answer(&[value]);
        }
        match value {
            0xff => {
                self.defaults();
                self.wrap = false;
                self.id = 0;
                self.rates = [0; 3];
                self.out.clear();
                self.answer(&[ACK, BAT_OK, 0x00]);
            }
            0xfe => {
                let last = self.last.clone();
                self.answer(&last);
            }
            0xf6 => {
                self.defaults();
                self.answer(&[ACK]);
            }
            0xf5 | 0xf4 => {
                self.reporting = value == 0xf4;
                self.packets.clear();
                self.answer(&[ACK]);
            }
            0xf3 | 0xe8 => {
                self.pending = Some(value);
                self.answer(&[ACK]);
            }
            0xf2 => {
                self.packets.clear();
                self.answer(&[ACK, self.id]);
            }
            0xf0 | 0xea => {
                self.remote_mode = value == 0xf0;
                self.packets.clear();
                self.remote = Packet::default();
                self.answer(&[ACK]);
            }
            0xeb => {
                let mut p = std::mem::take(&mut self.remote);
                p.buttons = self.buttons;
                let bytes = encode(&p, self.id == ID_WHEEL);
                self.answer(&[ACK]);
                self.answer(&bytes);
                self.last = bytes;
            }
            0xee | 0xec => {
                self.wrap = value == 0xee;
                self.packets.clear();
                self.answer(&[ACK]);
            }
            0xe9 => {
                let b = self.buttons;
                let status = (u8::from(self.remote_mode) << 6)
                    | (u8::from(self.reporting) << 5)
                    | (u8::from(self.scaling_2_1) << 4)
                    | ((b & BUTTON_LEFT) << 2)
                    | ((b & BUTTON_MIDDLE) >> 1)
                    | ((b & BUTTON_RIGHT) >> 1);
                self.answer(&[ACK, status, self.resolution, self.rate]);
            }
            0xe7 | 0xe6 => {
                self.scaling_2_1 = value == 0xe7;
                self.answer(&[ACK]);
            }
            _ => self.answer(&[RESEND]),
        }
    }

    fn parameter(&mut self, cmd: u8, value: u8) {
        match cmd {
            0xf3 if VALID_RATES.contains(&value) => {
                self.rate = value;
                self.rates = [self.rates[1], self.rates[2], value];
                if self.rates == KNOCK {
                    self.id = ID_WHEEL;
                }
                self.answer(&[ACK]);
            }
            0xe8 if value <= 3 => {
                self.resolution = value;
                self.answer(&[ACK]);
            }
            _ => self.answer(&[RESEND]),
        }
    }
}

#[cfg(test)]
#[path = "ps2_mouse_tests.rs"]
mod tests;
