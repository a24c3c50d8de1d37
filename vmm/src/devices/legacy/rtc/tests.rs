//! RTC register and interrupt tests on a fake clock.

use super::*;
use crate::arch::x86_64::layout;
use crate::devices::bus::BusDevice;
use crate::devices::CountingInterrupt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    assert_eq!(bad.weekday(), 0);
    let last = DateTime::from_secs(i64::MAX);
    assert_eq!((last.year, last.month, last.day), (9999, 12, 31));
    assert_eq!((last.hour, last.minute, last.second), (23, 59, 59));
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
    // No update-ended flag while the divider is stopped.
    assert_eq!(read(&mut rtc, REG_C), 0);
    now.lock().unwrap().0 += 1;
    assert_eq!(read(&mut rtc, REG_C), 0);
    write(&mut rtc, REG_A, 0x20);
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
    rtc.set_memory_size(512 * MIB, layout::MMIO32_START);
    assert_eq!(word(&rtc, 0x15), 640);
    assert_eq!(word(&rtc, 0x30), 0xffff);
    assert_eq!(word(&rtc, 0x17), 0xffff);
    assert_eq!(word(&rtc, 0x34), ((512 - 16) * 16) as u32);
    assert_eq!(word(&rtc, 0x5b), 0);
    // What SeaBIOS computes from them.
    let ram_size = (u64::from(word(&rtc, 0x34)) << 16) + 16 * MIB;
    assert_eq!(ram_size, 512 * MIB);
    rtc.set_memory_size(8 << 30, layout::MMIO32_START);
    let ram_size = (u64::from(word(&rtc, 0x34)) << 16) + 16 * MIB;
    assert_eq!(ram_size, layout::MMIO32_START);
    let high = u64::from(word(&rtc, 0x5b)) << 16 | u64::from(rtc.cmos_byte(0x5d).unwrap()) << 32;
    assert_eq!(high, (8 << 30) - layout::MMIO32_START);
    rtc.set_memory_size(12 * MIB, layout::MMIO32_START);
    assert_eq!(word(&rtc, 0x34), 0);
    assert_eq!(u64::from(word(&rtc, 0x30)) * 1024 + MIB, 12 * MIB);
    rtc.set_cpu_count(4);
    assert_eq!(read(&mut rtc, 0x5f), 3);
}

/// An RTC on a fake clock that counts the IRQ 8 pulses it raises.
/// A fake clock's (seconds, nanoseconds).
type FakeClock = Arc<Mutex<(i64, u32)>>;

fn with_irq(secs: i64, nanos: u32) -> (Rtc, FakeClock, Arc<CountingInterrupt>) {
    let (rtc, now) = fixed(secs, nanos);
    let irq = Arc::new(CountingInterrupt::default());
    (rtc.with_interrupt(irq.clone()), now, irq)
}

fn pulses(irq: &CountingInterrupt) -> usize {
    irq.0.load(Ordering::SeqCst)
}

fn advance(now: &Mutex<(i64, u32)>, nanos: u64) {
    let mut n = now.lock().unwrap();
    let total = i128::from(n.0) * 1_000_000_000 + i128::from(n.1) + i128::from(nanos);
    *n = (
        (total / 1_000_000_000) as i64,
        (total % 1_000_000_000) as u32,
    );
}

#[test]
fn update_ended_interrupt_once_per_second_until_c_is_read() {
    let (mut rtc, now, irq) = with_irq(THU, 100);
    // Rate 0: no periodic flag (the power-on rate 6 would set PF too).
    write(&mut rtc, REG_A, A_DIVIDER_NORMAL);
    assert_eq!(rtc.next_event(), None, "nothing enabled");
    write(&mut rtc, REG_B, B_24H | B_UIE);
    assert_eq!(
        rtc.next_event(),
        Some(Duration::from_nanos(1_000_000_000 - 100))
    );
    rtc.catch_up();
    assert_eq!(pulses(&irq), 0, "no second has ended yet");
    advance(&now, 1_000_000_000);
    rtc.catch_up();
    assert_eq!(pulses(&irq), 1);
    // IRQF stays set: more seconds raise no new edge, and the timer need
    // not wake.
    assert_eq!(rtc.next_event(), None);
    advance(&now, 2_000_000_000);
    rtc.catch_up();
    assert_eq!(pulses(&irq), 1);
    assert_eq!(read(&mut rtc, REG_C), C_IRQF | C_UF);
    assert_eq!(read(&mut rtc, REG_C), 0, "read to clear");
    advance(&now, 1_000_000_000);
    rtc.catch_up();
    assert_eq!(pulses(&irq), 2);
    assert_eq!(read(&mut rtc, REG_C), C_IRQF | C_UF);
    // Disabled: the flag still shows, no interrupt.
    write(&mut rtc, REG_B, B_24H);
    advance(&now, 1_000_000_000);
    rtc.catch_up();
    assert_eq!(pulses(&irq), 2);
    assert_eq!(read(&mut rtc, REG_C), C_UF);
}

#[test]
fn enabling_with_a_flag_pending_raises_at_once() {
    let (mut rtc, now, irq) = with_irq(THU, 0);
    // Rate 0: no periodic flag (the power-on rate 6 would set PF too).
    write(&mut rtc, REG_A, A_DIVIDER_NORMAL);
    advance(&now, 1_000_000_000);
    write(&mut rtc, REG_B, B_24H | B_UIE);
    assert_eq!(pulses(&irq), 1);
    assert_eq!(read(&mut rtc, REG_C), C_IRQF | C_UF);
}

#[test]
fn alarm_interrupt_at_the_matching_second() {
    let (mut rtc, now, irq) = with_irq(THU, 0);
    // Rate 0: no periodic flag (the power-on rate 6 would set PF too).
    write(&mut rtc, REG_A, A_DIVIDER_NORMAL);
    write(&mut rtc, REG_B, B_24H | B_BINARY | B_AIE);
    // THU is 23:47:05; alarm at 23:47:07.
    write(&mut rtc, REG_HOURS_ALARM, 23);
    write(&mut rtc, REG_MINUTES_ALARM, 47);
    write(&mut rtc, REG_SECONDS_ALARM, 7);
    advance(&now, 1_000_000_000);
    rtc.catch_up();
    assert_eq!(pulses(&irq), 0);
    assert_eq!(read(&mut rtc, REG_C), C_UF, "update flag, no alarm yet");
    advance(&now, 1_000_000_000);
    rtc.catch_up();
    assert_eq!(pulses(&irq), 1);
    assert_eq!(read(&mut rtc, REG_C), C_IRQF | C_AF | C_UF);
    // A missed alarm second is still seen at the next catch-up.
    write(&mut rtc, REG_SECONDS_ALARM, 10);
    advance(&now, 5_000_000_000);
    assert_eq!(read(&mut rtc, REG_C), C_IRQF | C_AF | C_UF);
    // Don't-care values: every second matches.
    for reg in [REG_HOURS_ALARM, REG_MINUTES_ALARM, REG_SECONDS_ALARM] {
        write(&mut rtc, reg, 0xff);
    }
    for _ in 0..3 {
        advance(&now, 1_000_000_000);
        assert_eq!(read(&mut rtc, REG_C), C_IRQF | C_AF | C_UF);
    }
    assert_eq!(pulses(&irq), 5);
}

#[test]
fn periodic_interrupt_at_the_rate_of_register_a() {
    let (mut rtc, now, irq) = with_irq(THU, 0);
    // Rate 6: 1024 Hz.
    write(&mut rtc, REG_A, A_DIVIDER_NORMAL | 6);
    assert_eq!(rtc.period_nanos(), Some(976_562));
    write(&mut rtc, REG_B, B_24H | B_PIE);
    assert_eq!(rtc.next_event(), Some(Duration::from_nanos(976_562)));
    advance(&now, 900_000);
    rtc.catch_up();
    assert_eq!(pulses(&irq), 0);
    advance(&now, 100_000);
    rtc.catch_up();
    assert_eq!(pulses(&irq), 1);
    assert_eq!(read(&mut rtc, REG_C), C_IRQF | C_PF);
    assert_eq!(read(&mut rtc, REG_C), 0);
    // The next period ends at 2 x 976.562 µs from the start.
    let next = rtc.next_event().unwrap().as_nanos();
    assert_eq!(next, 2 * 976_562 - 1_000_000);
    advance(&now, 1_000_000);
    rtc.catch_up();
    assert_eq!(pulses(&irq), 2);
    // Other rates: 1 and 2 are 256 and 128 Hz, 15 is 2 Hz; 0 is off, and
    // so is a stopped divider.
    for (rate, period) in [
        (1u8, 3_906_250),
        (2, 7_812_500),
        (3, 122_070),
        (15, 500_000_000),
    ] {
        write(&mut rtc, REG_A, A_DIVIDER_NORMAL | rate);
        assert_eq!(rtc.period_nanos(), Some(period), "rate {rate}");
    }
    write(&mut rtc, REG_A, A_DIVIDER_NORMAL);
    assert_eq!(rtc.period_nanos(), None);
    write(&mut rtc, REG_A, 0x70 | 6);
    assert_eq!(rtc.period_nanos(), None);
    // A host clock that goes back restarts the count instead of stalling.
    write(&mut rtc, REG_A, A_DIVIDER_NORMAL | 6);
    advance(&now, 10_000_000);
    assert_eq!(read(&mut rtc, REG_C) & C_PF, C_PF);
    now.lock().unwrap().0 -= 60;
    rtc.catch_up();
    let next = rtc.next_event().unwrap();
    assert!(next <= Duration::from_nanos(976_562), "{next:?}");
}

#[test]
fn timer_thread_raises_the_update_interrupt_on_the_real_clock() {
    let irq = Arc::new(CountingInterrupt::default());
    let mut dev = RtcDevice::new(Rtc::new(false).with_interrupt(irq.clone())).unwrap();
    let reg = |dev: &mut RtcDevice, index: u8, value: Option<u8>| -> u8 {
        dev.write(0, &[index]);
        match value {
            Some(v) => {
                dev.write(1, &[v]);
                0
            }
            None => {
                let mut b = [0u8];
                dev.read(1, &mut b);
                b[0]
            }
        }
    };
    // Disabled: nothing arrives across a second boundary.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(pulses(&irq), 0);
    reg(&mut dev, REG_C, None);
    reg(&mut dev, REG_B, Some(B_24H | B_UIE));
    let wait = |want: usize| {
        let start = std::time::Instant::now();
        while pulses(&irq) < want && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        pulses(&irq)
    };
    assert_eq!(wait(1), 1, "an update-ended interrupt within 10 s");
    assert_eq!(reg(&mut dev, REG_C, None) & (C_IRQF | C_UF), C_IRQF | C_UF);
    assert!(wait(2) >= 2, "another after register C was read");
    drop(dev);
}
