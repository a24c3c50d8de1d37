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
//! firmware ([`Rtc::set_memory_size`]). No interrupts are raised (register
//! C's update flag can be polled).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::arch::x86_64::layout;
use crate::devices::bus::ByteRegisters;

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
const B_SET: u8 = 0x80;
const B_UIE: u8 = 0x10;
const B_IRQ_ENABLES: u8 = 0x70;
const B_BINARY: u8 = 0x04;
const B_24H: u8 = 0x02;
const C_IRQF: u8 = 0x80;
const C_UF: u8 = 0x10;
const D_VRT: u8 = 0x80;
/// The update cycle takes 244 µs before the second ends.
const UIP_NANOS: u32 = 244_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RtcError {
    #[error("CMOS index {0:#x} is a clock register or out of range")]
    NotRam(u8),
}

/// A calendar time; fields may hold nonsense a guest wrote while SET was
/// held, hence the wide types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DateTime {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl DateTime {
    fn from_secs(secs: i64) -> Self {
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let rem = secs.rem_euclid(86_400);
        DateTime {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
        }
    }

    /// Seconds since the epoch, or None if a field is out of range.
    fn to_secs(self) -> Option<i64> {
        let ok = (0..=9999).contains(&self.year)
            && (1..=12).contains(&self.month)
            && (1..=days_in_month(self.year, self.month)).contains(&self.day)
            && (0..24).contains(&self.hour)
            && (0..60).contains(&self.minute)
            && (0..60).contains(&self.second);
        ok.then(|| {
            days_from_civil(self.year, self.month, self.day) * 86_400
                + self.hour * 3600
                + self.minute * 60
                + self.second
        })
    }

    /// 1 = Sunday.
    fn weekday(self) -> i64 {
        // 1970-01-01 was a Thursday.
        (days_from_civil(self.year, self.month, self.day) + 4).rem_euclid(7) + 1
    }
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
    /// The guest second at the last read of register C.
    last_c_read: i64,
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
        let last = clock().0;
        Rtc {
            clock,
            index: 0,
            ram,
            offset: 0,
            setting: None,
            last_c_read: last,
        }
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
    /// 0x5b..0x5d memory above 4 GiB in 64 KiB units.
    pub fn set_memory_size(&mut self, mem_size: u64) {
        const KIB: u64 = 1 << 10;
        const MIB: u64 = 1 << 20;
        let below_4g = mem_size.min(layout::MMIO32_START);
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
                let now = self.guest_secs();
                let mut c = 0;
                if self.setting.is_none() && now != self.last_c_read {
                    c |= C_UF;
                }
                self.last_c_read = now;
                if c & self.reg_b() & B_IRQ_ENABLES != 0 {
                    c |= C_IRQF;
                }
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
            Some(secs) => self.offset = secs - (self.clock)().0,
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
            REG_A => self.ram[usize::from(REG_A)] = value & !A_UIP,
            REG_B => {
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
mod tests {
    use super::*;
    use crate::devices::bus::BusDevice;
    use std::sync::{Arc, Mutex};

    /// 2026-11-26 23:47:05 UTC, a Thursday.
    const THU: i64 = 1_795_736_825;

    fn fixed(secs: i64, nanos: u32) -> (Rtc, Arc<Mutex<(i64, u32)>>) {
        let now = Arc::new(Mutex::new((secs, nanos)));
        let n = now.clone();
        (Rtc::with_clock(Box::new(move || *n.lock().unwrap())), now)
    }

    fn read(rtc: &mut Rtc, index: u8) -> u8 {
        rtc.write(0, &[index]);
        let mut b = [0u8];
        rtc.read(1, &mut b);
        b[0]
    }

    fn write(rtc: &mut Rtc, index: u8, value: u8) {
        rtc.write(0, &[index, value]);
    }

    fn time_regs(rtc: &mut Rtc) -> [u8; 8] {
        [0x32, 9, 8, 7, 6, 4, 2, 0].map(|i| read(rtc, i))
    }

    #[test]
    fn calendar_conversions_round_trip() {
        for secs in [0, 946_684_799, 951_825_600, THU, 4_102_444_800, -86_400] {
            let t = DateTime::from_secs(secs);
            assert_eq!(t.to_secs(), Some(secs), "{t:?}");
        }
        let t = DateTime::from_secs(951_825_600);
        assert_eq!((t.year, t.month, t.day, t.hour), (2000, 2, 29, 12));
        assert_eq!(t.weekday(), 3);
        let bad = DateTime { day: 30, ..t };
        assert_eq!(bad.to_secs(), None);
    }

    #[test]
    fn bcd_24h_by_default_then_binary_and_12h() {
        let (mut rtc, _) = fixed(THU, 0);
        // century, year, month, day, weekday (Thursday = 5), h, m, s.
        assert_eq!(
            time_regs(&mut rtc),
            [0x20, 0x26, 0x11, 0x26, 5, 0x23, 0x47, 0x05]
        );
        write(&mut rtc, REG_B, B_24H | B_BINARY);
        assert_eq!(time_regs(&mut rtc), [20, 26, 11, 26, 5, 23, 47, 5]);
        write(&mut rtc, REG_B, B_BINARY);
        assert_eq!(read(&mut rtc, REG_HOURS), 0x80 | 11);
        write(&mut rtc, REG_B, 0);
        assert_eq!(read(&mut rtc, REG_HOURS), 0x91);
        // Midnight and noon in 12 hour mode.
        let (mut rtc, _) = fixed(THU - 23 * 3600 - 47 * 60, 0);
        write(&mut rtc, REG_B, 0);
        assert_eq!(read(&mut rtc, REG_HOURS), 0x12);
        let (mut rtc, _) = fixed(THU - 11 * 3600 - 47 * 60, 0);
        write(&mut rtc, REG_B, 0);
        assert_eq!(read(&mut rtc, REG_HOURS), 0x80 | 0x12);
    }

    #[test]
    fn follows_the_host_clock() {
        let mut rtc = Rtc::new(false);
        write(&mut rtc, REG_B, B_24H | B_BINARY);
        // Read until two readings agree, as Linux does, so a second that
        // ends mid-reading cannot mix two times.
        let mut r = time_regs(&mut rtc);
        loop {
            let again = time_regs(&mut rtc);
            if again == r {
                break;
            }
            r = again;
        }
        let t = DateTime {
            year: i64::from(r[0]) * 100 + i64::from(r[1]),
            month: i64::from(r[2]),
            day: i64::from(r[3]),
            hour: i64::from(r[5]),
            minute: i64::from(r[6]),
            second: i64::from(r[7]),
        };
        let host = host_utc().0;
        let secs = t.to_secs().unwrap();
        assert!((host - secs).abs() <= 2, "rtc {t:?} host {host}");
        // Local time differs from UTC by the host's offset.
        let mut local = Rtc::new(true);
        write(&mut local, REG_B, B_24H | B_BINARY);
        let diff = local.guest_secs() - rtc.guest_secs();
        assert!((diff - local_offset(host)).abs() <= 2, "{diff}");
    }

    #[test]
    fn guest_sets_the_time_with_set_held() {
        let (mut rtc, now) = fixed(THU, 0);
        write(&mut rtc, REG_B, B_24H | B_SET);
        for (i, v) in [
            (0x32, 0x19),
            (9, 0x99),
            (8, 0x12),
            (7, 0x31),
            (4, 0x23),
            (2, 0x59),
            (0, 0x59),
        ] {
            write(&mut rtc, i, v);
        }
        // Frozen while SET is held, even as the host clock moves.
        now.lock().unwrap().0 += 5;
        assert_eq!(read(&mut rtc, 0), 0x59);
        write(&mut rtc, REG_B, B_24H);
        now.lock().unwrap().0 += 2;
        assert_eq!(
            time_regs(&mut rtc),
            [0x20, 0x00, 0x01, 0x01, 7, 0x00, 0x00, 0x01]
        );
        // A direct write (SET clear) applies at once.
        write(&mut rtc, REG_MINUTES, 0x30);
        assert_eq!(read(&mut rtc, REG_MINUTES), 0x30);
        assert_eq!(read(&mut rtc, REG_SECONDS), 0x01);
        // Nonsense is ignored, not a panic.
        write(&mut rtc, REG_MONTH, 0xff);
        write(&mut rtc, REG_DAY, 0x00);
        assert_eq!(read(&mut rtc, REG_MONTH), 0x01);
        write(&mut rtc, REG_B, B_SET);
        write(&mut rtc, REG_MONTH, 0xff);
        write(&mut rtc, REG_YEAR, 0xff);
        let _ = time_regs(&mut rtc);
        write(&mut rtc, REG_B, B_24H);
        assert_eq!(read(&mut rtc, REG_MONTH), 0x01);
    }

    #[test]
    fn update_in_progress_and_status_registers() {
        let (mut rtc, now) = fixed(THU, 999_900_000);
        assert_eq!(read(&mut rtc, REG_A), 0xa6);
        now.lock().unwrap().1 = 999_700_000;
        assert_eq!(read(&mut rtc, REG_A), 0x26);
        now.lock().unwrap().1 = 999_900_000;
        // No update cycle while SET is held, or the divider is stopped.
        write(&mut rtc, REG_B, B_24H | B_SET);
        assert_eq!(read(&mut rtc, REG_A), 0x26);
        write(&mut rtc, REG_B, B_24H);
        write(&mut rtc, REG_A, 0x76);
        assert_eq!(read(&mut rtc, REG_A), 0x76);
        assert_eq!(read(&mut rtc, REG_D), 0x80);
        // Register C: an update flag once per second, cleared by reading.
        assert_eq!(read(&mut rtc, REG_C), 0);
        now.lock().unwrap().0 += 1;
        assert_eq!(read(&mut rtc, REG_C), C_UF);
        assert_eq!(read(&mut rtc, REG_C), 0);
        write(&mut rtc, REG_B, B_24H | B_UIE);
        now.lock().unwrap().0 += 1;
        assert_eq!(read(&mut rtc, REG_C), C_UF | C_IRQF);
        write(&mut rtc, REG_C, 0xff);
        write(&mut rtc, REG_D, 0);
        assert_eq!(read(&mut rtc, REG_D), 0x80);
    }

    #[test]
    fn cmos_ram_and_memory_size() {
        let (mut rtc, _) = fixed(THU, 0);
        // NMI mask bit in the index is ignored.
        write(&mut rtc, 0x80 | 0x40, 0x5a);
        assert_eq!(read(&mut rtc, 0x40), 0x5a);
        assert_eq!(rtc.cmos_byte(0x40), Some(0x5a));
        assert_eq!(rtc.set_cmos_byte(0x00, 1), Err(RtcError::NotRam(0)));
        assert_eq!(rtc.set_cmos_byte(0x32, 1), Err(RtcError::NotRam(0x32)));
        assert_eq!(rtc.set_cmos_byte(0x80, 1), Err(RtcError::NotRam(0x80)));
        rtc.set_cmos_byte(0x7f, 9).unwrap();
        assert_eq!(read(&mut rtc, 0x7f), 9);
        // The index port reads all ones; stray offsets are harmless.
        let mut b = [0u8; 4];
        rtc.read(0, &mut b);
        assert_eq!(b[0], 0xff);
        rtc.write(1, &[1, 2, 3]);
        rtc.read(u64::MAX, &mut b);

        let word = |rtc: &Rtc, i: u8| {
            u32::from(rtc.cmos_byte(i).unwrap()) | u32::from(rtc.cmos_byte(i + 1).unwrap()) << 8
        };
        const MIB: u64 = 1 << 20;
        rtc.set_memory_size(512 * MIB);
        assert_eq!(word(&rtc, 0x15), 640);
        assert_eq!(word(&rtc, 0x30), 0xffff);
        assert_eq!(word(&rtc, 0x17), 0xffff);
        assert_eq!(word(&rtc, 0x34), ((512 - 16) * 16) as u32);
        assert_eq!(word(&rtc, 0x5b), 0);
        // What SeaBIOS computes from them.
        let ram_size = (u64::from(word(&rtc, 0x34)) << 16) + 16 * MIB;
        assert_eq!(ram_size, 512 * MIB);
        rtc.set_memory_size(8 << 30);
        let ram_size = (u64::from(word(&rtc, 0x34)) << 16) + 16 * MIB;
        assert_eq!(ram_size, layout::MMIO32_START);
        let high =
            u64::from(word(&rtc, 0x5b)) << 16 | u64::from(rtc.cmos_byte(0x5d).unwrap()) << 32;
        assert_eq!(high, (8 << 30) - layout::MMIO32_START);
        rtc.set_memory_size(12 * MIB);
        assert_eq!(word(&rtc, 0x34), 0);
        assert_eq!(u64::from(word(&rtc, 0x30)) * 1024 + MIB, 12 * MIB);
        rtc.set_cpu_count(4);
        assert_eq!(read(&mut rtc, 0x5f), 3);
    }
}
