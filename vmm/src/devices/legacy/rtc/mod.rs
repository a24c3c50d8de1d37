//! The MC146818 CMOS real-time clock and its 128 bytes of CMOS RAM.
//!
//! Inserted at I/O port 0x70 with length 2: offset 0 selects a register
//! (bit 7 is the NMI mask, ignored), offset 1 reads or writes it. The clock
//! follows the host's real clock, in UTC or (for Windows guests) host local
//! time, plus an offset the guest sets by writing the time registers
//! (frozen while register B's SET bit is held, applied when it clears).
//! Register B selects BCD or binary and 12 or 24 hour format; register A's
//! update-in-progress bit is set in the last 244 µs before each second, as
//! on the chip; register D always reports valid RAM and time; the century is
//! at 0x32. The other registers are CMOS RAM, which the VMM fills for
//! firmware ([`Rtc::set_memory_size`]).
//!
//! Interrupts (IRQ 8): register C collects the update-ended (UF, each new
//! second), alarm (AF, a second matching the alarm registers 1/3/5, where
//! values 0xC0..0xFF match anything) and periodic (PF, at the rate of
//! register A's RS bits) flags whether or not they are enabled; reading C
//! returns and clears them. When a flag whose enable bit is set in register
//! B (UIE/AIE/PIE) rises while IRQF is clear, IRQF is set and IRQ 8 pulses
//! (the line stays "asserted" until C is read, so no second edge comes
//! before that). The flags are computed lazily from the clock
//! ([`Rtc::catch_up`]) whenever the guest reads C or changes A/B, and by
//! the timer thread of [`timer::RtcDevice`], which sleeps until the next
//! enabled event (or, with none enabled or IRQF already set, until the
//! guest changes something): no CPU is spent while interrupts are off.

mod calendar;
mod timer;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::devices::bus::ByteRegisters;
use crate::devices::Interrupt;

pub use timer::RtcDevice;

use calendar::DateTime;

/// Ports 0x70 (index) and 0x71 (data).
pub const RTC_PORT_LEN: u64 = 2;
pub const CMOS_SIZE: usize = 128;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;

const A_UIP: u8 = 0x80;
/// Divider bits for the normal 32.768 kHz time base.
const A_DIVIDER_MASK: u8 = 0x70;
const A_DIVIDER_NORMAL: u8 = 0x20;
/// Rate select: the periodic interrupt's rate.
const A_RATE_MASK: u8 = 0x0f;
const B_SET: u8 = 0x80;
const B_PIE: u8 = 0x40;
const B_AIE: u8 = 0x20;
const B_UIE: u8 = 0x10;
const B_IRQ_ENABLES: u8 = 0x70;
const B_BINARY: u8 = 0x04;
const B_24H: u8 = 0x02;
const C_IRQF: u8 = 0x80;
const C_PF: u8 = 0x40;
const C_AF: u8 = 0x20;
const C_UF: u8 = 0x10;
const REG_SECONDS_ALARM: u8 = 0x01;
const REG_MINUTES_ALARM: u8 = 0x03;
const REG_HOURS_ALARM: u8 = 0x05;
/// An alarm register value at or above this matches any value.
const ALARM_DONT_CARE: u8 = 0xc0;
const NANOS_PER_SEC: i128 = 1_000_000_000;
const D_VRT: u8 = 0x80;
/// The update cycle takes 244 µs before the second ends.
const UIP_NANOS: u32 = 244_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RtcError {
    #[error("CMOS index {0:#x} is a clock register or out of range")]
    NotRam(u8),
}

/// The host clock: (seconds since the epoch in the clock's zone, nanos).
type Clock = Box<dyn Fn() -> (i64, u32) + Send>;

fn host_utc() -> (i64, u32) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        d.subsec_nanos(),
    )
}

/// The host's offset from UTC at `secs`, in seconds.
fn local_offset(secs: i64) -> i64 {
    let t = secs as libc::time_t;
    // SAFETY: an all-zero `tm` is a valid value of this plain C struct.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals for the duration of the
    // call; localtime_r is the thread-safe variant and keeps neither.
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    if r.is_null() {
        0
    } else {
        tm.tm_gmtoff
    }
}

fn host_local() -> (i64, u32) {
    let (secs, nanos) = host_utc();
    (secs.saturating_add(local_offset(secs)), nanos)
}

/// The RTC and CMOS RAM.
pub struct Rtc {
    clock: Clock,
    index: u8,
    ram: [u8; CMOS_SIZE],
    /// Guest time minus host time, in seconds.
    offset: i64,
    /// The time being set while SET is held.
    setting: Option<DateTime>,
    /// The guest second at the last catch-up.
    last_secs: i64,
    /// Register C's PF/AF/UF flags gathered since it was last read.
    flags: u8,
    /// IRQF: an enabled flag is set and IRQ 8 was raised for it.
    irqf: bool,
    /// Host time (ns) the periodic count starts from, and the last period
    /// index that set PF.
    periodic_start: i128,
    periodic_last: i128,
    irq: Option<Arc<dyn Interrupt>>,
}

fn to_bcd(v: i64) -> u8 {
    let v = v.rem_euclid(100) as u8;
    ((v / 10) << 4) | (v % 10)
}

fn from_bcd(v: u8) -> i64 {
    i64::from(v >> 4) * 10 + i64::from(v & 0xf)
}

impl Rtc {
    /// An RTC on the host's clock, in UTC or (`local_time`) host local time.
    pub fn new(local_time: bool) -> Self {
        Self::with_clock(Box::new(if local_time { host_local } else { host_utc }))
    }

    fn with_clock(clock: Clock) -> Self {
        let mut ram = [0u8; CMOS_SIZE];
        ram[usize::from(REG_A)] = A_DIVIDER_NORMAL | 0x06;
        ram[usize::from(REG_B)] = B_24H;
        let (secs, nanos) = clock();
        Rtc {
            clock,
            index: 0,
            ram,
            offset: 0,
            setting: None,
            last_secs: secs,
            flags: 0,
            irqf: false,
            periodic_start: i128::from(secs) * NANOS_PER_SEC + i128::from(nanos),
            periodic_last: 0,
            irq: None,
        }
    }

    /// Raise IRQ 8 through `irq` for enabled events.
    pub fn with_interrupt(mut self, irq: Arc<dyn Interrupt>) -> Self {
        self.irq = Some(irq);
        self
    }

    fn now_nanos(&self) -> (i64, u32, i128) {
        let (secs, nanos) = (self.clock)();
        (
            secs,
            nanos,
            i128::from(secs) * NANOS_PER_SEC + i128::from(nanos),
        )
    }

    /// Whether the clock runs (divider normal, SET clear).
    fn running(&self) -> bool {
        self.setting.is_none() && self.ram[usize::from(REG_A)] & A_DIVIDER_MASK == A_DIVIDER_NORMAL
    }

    /// The periodic interrupt's period from register A, if any: rate 1
    /// and 2 are 3.90625 and 7.8125 ms, rate n >= 3 is 32768 >> (n - 1) Hz.
    fn period_nanos(&self) -> Option<i128> {
        let a = self.ram[usize::from(REG_A)];
        if a & A_DIVIDER_MASK != A_DIVIDER_NORMAL {
            return None;
        }
        let shift = match a & A_RATE_MASK {
            0 => return None,
            r @ (1 | 2) => r + 6,
            r => r - 1,
        };
        Some((NANOS_PER_SEC << shift) / 32_768)
    }

    /// Whether guest second `secs` matches the alarm registers.
    fn alarm_matches(&self, secs: i64) -> bool {
        let t = DateTime::from_secs(secs);
        let fields = [
            (REG_SECONDS_ALARM, self.encode(t.second)),
            (REG_MINUTES_ALARM, self.encode(t.minute)),
            (REG_HOURS_ALARM, self.encode_hour(t.hour)),
        ];
        fields.iter().all(|&(reg, now)| {
            let alarm = self.ram[usize::from(reg)];
            alarm >= ALARM_DONT_CARE || alarm == now
        })
    }

    /// Bring register C's flags up to now, and raise IRQ 8 if an enabled
    /// one is set while IRQF is clear.
    pub fn catch_up(&mut self) {
        let (host_secs, _, now) = self.now_nanos();
        let secs = host_secs.saturating_add(self.offset);
        if self.running() && secs > self.last_secs {
            self.flags |= C_UF;
            // After a long gap, only the last hour is checked for alarms.
            let from = (self.last_secs + 1).max(secs - 3600);
            if (from..=secs).any(|s| self.alarm_matches(s)) {
                self.flags |= C_AF;
            }
        }
        self.last_secs = secs;
        if let Some(period) = self.period_nanos() {
            let index = (now - self.periodic_start).div_euclid(period);
            if index < self.periodic_last {
                // The host clock went back: count from now.
                self.periodic_start = now;
                self.periodic_last = 0;
            } else if index > self.periodic_last {
                self.flags |= C_PF;
                self.periodic_last = index;
            }
        }
        self.update_irq();
    }

    fn update_irq(&mut self) {
        if self.irqf || self.flags & self.reg_b() & B_IRQ_ENABLES == 0 {
            return;
        }
        self.irqf = true;
        if let Some(irq) = &self.irq {
            if let Err(e) = irq.trigger() {
                log::error!("rtc: cannot raise IRQ 8: {e}");
            }
        }
    }

    /// How long until the next enabled event can set a flag; None if no
    /// event is enabled or IRQF is already set (nothing to raise until the
    /// guest reads register C).
    pub fn next_event(&self) -> Option<Duration> {
        let enabled = self.reg_b() & B_IRQ_ENABLES;
        if self.irqf || enabled == 0 {
            return None;
        }
        let (_, nanos, now) = self.now_nanos();
        let mut next: Option<i128> = None;
        if enabled & (B_UIE | B_AIE) != 0 && self.running() {
            next = Some(NANOS_PER_SEC - i128::from(nanos));
        }
        if enabled & B_PIE != 0 {
            if let Some(period) = self.period_nanos() {
                let due = self.periodic_start + (self.periodic_last + 1) * period - now;
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        next.map(|n| Duration::from_nanos(n.clamp(0, i128::from(u64::MAX)) as u64))
    }

    /// Set a byte of CMOS RAM (not the clock registers 0x00..0x0e or the
    /// century at 0x32).
    pub fn set_cmos_byte(&mut self, index: u8, value: u8) -> Result<(), RtcError> {
        if !Self::is_ram(index) {
            return Err(RtcError::NotRam(index));
        }
        self.ram[usize::from(index)] = value;
        Ok(())
    }

    /// A byte of CMOS RAM as stored (None for the clock registers).
    pub fn cmos_byte(&self, index: u8) -> Option<u8> {
        Self::is_ram(index).then(|| self.ram[usize::from(index)])
    }

    fn is_ram(index: u8) -> bool {
        usize::from(index) < CMOS_SIZE && index > REG_D && index != REG_CENTURY
    }

    /// Fill the memory-size fields for `mem_size` bytes of guest RAM, as
    /// SeaBIOS reads them: 0x15/0x16 base memory in KiB, 0x17/0x18 and
    /// 0x30/0x31 memory above 1 MiB in KiB (at most 0xffff), 0x34/0x35
    /// memory between 16 MiB and the 32-bit PCI hole in 64 KiB units,
    /// 0x5b..0x5d memory above 4 GiB in 64 KiB units. RAM ends below 4 GiB
    /// at `hole_start`, where the 32-bit PCI hole begins; the rest is above
    /// 4 GiB.
    pub fn set_memory_size(&mut self, mem_size: u64, hole_start: u64) {
        const KIB: u64 = 1 << 10;
        const MIB: u64 = 1 << 20;
        let below_4g = mem_size.min(hole_start);
        let above_4g = mem_size - below_4g;
        let base = (below_4g / KIB).min(640);
        let ext = (below_4g.saturating_sub(MIB) / KIB).min(0xffff);
        let ext16 = (below_4g.saturating_sub(16 * MIB) / (64 * KIB)).min(0xffff);
        let high = (above_4g / (64 * KIB)).min(0xff_ffff);
        let fields: [(u8, u64, usize); 5] = [
            (0x15, base, 2),
            (0x17, ext, 2),
            (0x30, ext, 2),
            (0x34, ext16, 2),
            (0x5b, high, 3),
        ];
        for (start, value, len) in fields {
            for i in 0..len {
                self.ram[usize::from(start) + i] = (value >> (8 * i)) as u8;
            }
        }
    }

    /// Tell firmware how many CPUs there are (0x5f: count - 1), as SeaBIOS
    /// reads it when fw_cfg does not say.
    pub fn set_cpu_count(&mut self, cpus: u8) {
        self.ram[0x5f] = cpus.saturating_sub(1);
    }

    fn reg_b(&self) -> u8 {
        self.ram[usize::from(REG_B)]
    }

    fn guest_secs(&self) -> i64 {
        (self.clock)().0.saturating_add(self.offset)
    }

    fn current(&self) -> DateTime {
        self.setting
            .unwrap_or_else(|| DateTime::from_secs(self.guest_secs()))
    }

    fn encode(&self, v: i64) -> u8 {
        if self.reg_b() & B_BINARY != 0 {
            v.rem_euclid(256) as u8
        } else {
            to_bcd(v)
        }
    }

    fn decode(&self, v: u8) -> i64 {
        if self.reg_b() & B_BINARY != 0 {
            i64::from(v)
        } else {
            from_bcd(v)
        }
    }

    fn encode_hour(&self, hour: i64) -> u8 {
        if self.reg_b() & B_24H != 0 {
            return self.encode(hour);
        }
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        self.encode(h12) | if hour >= 12 { 0x80 } else { 0 }
    }

    fn decode_hour(&self, v: u8) -> i64 {
        if self.reg_b() & B_24H != 0 {
            return self.decode(v);
        }
        let h = self.decode(v & 0x7f) % 12;
        if v & 0x80 != 0 {
            h + 12
        } else {
            h
        }
    }

    fn read_register(&mut self, index: u8) -> u8 {
        match index {
            REG_SECONDS | REG_MINUTES | REG_HOURS | REG_WEEKDAY | REG_DAY | REG_MONTH
            | REG_YEAR | REG_CENTURY => {
                let t = self.current();
                match index {
                    REG_SECONDS => self.encode(t.second),
                    REG_MINUTES => self.encode(t.minute),
                    REG_HOURS => self.encode_hour(t.hour),
                    REG_WEEKDAY => self.encode(t.weekday()),
                    REG_DAY => self.encode(t.day),
                    REG_MONTH => self.encode(t.month),
                    REG_YEAR => self.encode(t.year.rem_euclid(100)),
                    _ => self.encode(t.year.div_euclid(100)),
                }
            }
            REG_A => {
                let a = self.ram[usize::from(REG_A)];
                let running = self.setting.is_none() && a & A_DIVIDER_MASK == A_DIVIDER_NORMAL;
                let uip = running && (self.clock)().1 >= 1_000_000_000 - UIP_NANOS;
                a | if uip { A_UIP } else { 0 }
            }
            REG_C => {
                self.catch_up();
                let c = self.flags | if self.irqf { C_IRQF } else { 0 };
                self.flags = 0;
                self.irqf = false;
                c
            }
            REG_D => D_VRT,
            _ => self.ram[usize::from(index) % CMOS_SIZE],
        }
    }

    /// Apply a new calendar time: at once, or when SET clears.
    fn set_time(&mut self, t: DateTime) {
        if self.setting.is_some() {
            self.setting = Some(t);
            return;
        }
        match t.to_secs() {
            Some(secs) => {
                self.offset = secs - (self.clock)().0;
                // The new time is no update of the old one.
                self.last_secs = secs;
            }
            None => log::debug!("rtc: guest wrote an invalid time {t:?}"),
        }
    }

    fn write_register(&mut self, index: u8, value: u8) {
        match index {
            REG_SECONDS | REG_MINUTES | REG_HOURS | REG_DAY | REG_MONTH | REG_YEAR
            | REG_CENTURY => {
                let mut t = self.current();
                let v = self.decode(value);
                match index {
                    REG_SECONDS => t.second = v,
                    REG_MINUTES => t.minute = v,
                    REG_HOURS => t.hour = self.decode_hour(value),
                    REG_DAY => t.day = v,
                    REG_MONTH => t.month = v,
                    REG_YEAR => t.year = t.year.div_euclid(100) * 100 + v,
                    _ => t.year = v * 100 + t.year.rem_euclid(100),
                }
                self.set_time(t);
            }
            // The weekday follows from the date.
            REG_WEEKDAY => {}
            REG_A => {
                self.catch_up();
                let old = self.ram[usize::from(REG_A)];
                self.ram[usize::from(REG_A)] = value & !A_UIP;
                if (old ^ value) & (A_DIVIDER_MASK | A_RATE_MASK) != 0 {
                    // A new rate (or a restarted divider) counts from now.
                    self.periodic_start = self.now_nanos().2;
                    self.periodic_last = 0;
                    self.last_secs = self.guest_secs();
                }
            }
            REG_B => {
                self.catch_up();
                let mut value = value;
                if value & B_SET != 0 {
                    // Setting SET stops updates and clears UIE.
                    value &= !B_UIE;
                    if self.setting.is_none() {
                        self.setting = Some(self.current());
                    }
                } else if let Some(t) = self.setting.take() {
                    self.set_time(t);
                }
                self.ram[usize::from(REG_B)] = value;
                // Enabling an event whose flag is already set raises IRQ 8.
                self.update_irq();
            }
            REG_C | REG_D => {}
            _ => self.ram[usize::from(index) % CMOS_SIZE] = value,
        }
    }
}

impl ByteRegisters for Rtc {
    fn read_byte(&mut self, offset: u64) -> u8 {
        match offset {
            // The index register is write-only.
            1 => self.read_register(self.index),
            _ => 0xff,
        }
    }

    fn write_byte(&mut self, offset: u64, value: u8) {
        match offset {
            0 => self.index = value & 0x7f,
            1 => self.write_register(self.index, value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
