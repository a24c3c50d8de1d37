//! ACPI fixed-hardware power-management registers, on I/O ports at
//! the platform's PM base (`arch::x86_64::layout::PM_IO_BASE` for a direct
//! boot; the FADT points the guest there):
//!
//! ```text
//! +0  PM1a_STS  (16 bit, write 1 to clear)   PWRBTN_STS, WAK_STS
//! +2  PM1a_EN   (16 bit)                     PWRBTN_EN raises the SCI
//! +4  PM1a_CNT  (16 bit)                     SCI_EN, SLP_TYP, SLP_EN
//! +6  reserved  (reads 0)
//! +8  PM_TMR    (32 bit, read only)          3.579545 MHz free-running
//! ```
//!
//! Writing SLP_EN with SLP_TYP == [`S5_SLEEP_TYPE`] (the \_S5 of our
//! DSDT) asks the VM to power off. [`PmDevice::press_power_button`] is the
//! fixed-hardware power button: it sets PWRBTN_STS and raises the SCI if the
//! guest enabled it; Linux's ACPI button driver then starts a clean shutdown.
//!
//! There is no SMI_CMD port (the FADT says 0), so the machine is always in
//! ACPI mode and SCI_EN reads 1 from reset.

use std::sync::Arc;
use std::time::Instant;

use crate::devices::bus::BusDevice;
use crate::devices::{Interrupt, VmRequest, VmRequests};

/// Length of the register block.
pub const PM_IO_LEN: u64 = 12;
/// SLP_TYP value of the \_S5 (soft off) sleep state: the DSDT's `\_S5`
/// names it, and writing it with SLP_EN powers the VM off.
pub const S5_SLEEP_TYPE: u8 = 5;
/// FADT PM1_EVT_LEN: status and enable, two bytes each.
pub const PM1_EVT_LEN: u8 = 4;
/// FADT PM1_CNT_LEN.
pub const PM1_CNT_LEN: u8 = 2;
/// FADT PM_TMR_LEN.
pub const PM_TMR_LEN: u8 = 4;
/// Width of the PM timer; the FADT sets TMR_VAL_EXT when this is 32.
pub const PM_TMR_BITS: u32 = 32;
/// PM timer frequency fixed by the ACPI specification.
pub const PM_TMR_HZ: u64 = 3_579_545;
/// The power button is the fixed-hardware one (PWRBTN_STS/PWRBTN_EN), not a
/// control-method PNP0C0C device: the FADT leaves its PWR_BUTTON flag clear.
pub const FIXED_POWER_BUTTON: bool = true;

pub const PM1_STS: u64 = 0;
const PM1_EN: u64 = 2;
pub const PM1_CNT: u64 = 4;
pub const PM_TMR: u64 = 8;

/// PM1 status bits.
pub const TMR_STS: u16 = 1 << 0;
pub const PWRBTN_STS: u16 = 1 << 8;
pub const WAK_STS: u16 = 1 << 15;
/// PM1 enable bits.
pub const TMR_EN: u16 = 1 << 0;
pub const GBL_EN: u16 = 1 << 5;
pub const PWRBTN_EN: u16 = 1 << 8;
pub const SLPBTN_EN: u16 = 1 << 9;
pub const RTC_EN: u16 = 1 << 10;
pub const PCIEXP_WAKE_DIS: u16 = 1 << 14;
const PM1_EN_MASK: u16 = TMR_EN | GBL_EN | PWRBTN_EN | SLPBTN_EN | RTC_EN | PCIEXP_WAKE_DIS;
/// PM1 control bits.
pub const SCI_EN: u16 = 1 << 0;
pub const BM_RLD: u16 = 1 << 1;
pub const SLP_TYP_SHIFT: u32 = 10;
pub const SLP_TYP_MASK: u16 = 0x7 << SLP_TYP_SHIFT;
pub const SLP_EN: u16 = 1 << 13;
/// The control bits that are stored and read back (GBL_RLS and SLP_EN are
/// write-only).
const PM1_CNT_MASK: u16 = SCI_EN | BM_RLD | SLP_TYP_MASK;
/// Status bits that raise the SCI when their enable bit is set. Only the
/// power button is ever set by this model.
const SCI_EVENTS: u16 = PWRBTN_STS;

/// The PM1a event and control blocks and the PM timer.
pub struct PmDevice {
    sts: u16,
    en: u16,
    cnt: u16,
    start: Instant,
    sci: Arc<dyn Interrupt>,
    requests: Arc<dyn VmRequests>,
}

impl PmDevice {
    /// A device in its power-on state (ACPI mode, no events enabled). `sci`
    /// is the SCI line (`SCI_IRQ` in the platform layout).
    pub fn new(sci: Arc<dyn Interrupt>, requests: Arc<dyn VmRequests>) -> Self {
        PmDevice {
            sts: 0,
            en: 0,
            cnt: SCI_EN,
            start: Instant::now(),
            sci,
            requests,
        }
    }

    /// Press the fixed-hardware power button: set PWRBTN_STS and raise the
    /// SCI if the guest enabled power button events.
    pub fn press_power_button(&mut self) {
        let before = self.sci_asserted();
        self.sts |= PWRBTN_STS;
        self.update_sci(before);
    }

    /// The PM timer value the guest reads now.
    fn timer(&self) -> u32 {
        let nanos = self.start.elapsed().as_nanos();
        let ticks = nanos * u128::from(PM_TMR_HZ) / 1_000_000_000;
        (ticks & ((1u128 << PM_TMR_BITS) - 1)) as u32
    }

    /// The level the SCI line would have on real hardware.
    fn sci_asserted(&self) -> bool {
        self.cnt & SCI_EN != 0 && self.sts & self.en & SCI_EVENTS != 0
    }

    /// Our SCI is an edge (an irqfd pulse) on a line the MADT calls level
    /// triggered; pulse it when the level would rise.
    fn update_sci(&self, before: bool) {
        if !before && self.sci_asserted() {
            if let Err(e) = self.sci.trigger() {
                log::error!("pm: cannot raise the SCI: {e}");
            }
        }
    }

    fn write_control(&mut self, value: u16) {
        self.cnt = value & PM1_CNT_MASK;
        if value & SLP_EN == 0 {
            return;
        }
        let slp_typ = ((value & SLP_TYP_MASK) >> SLP_TYP_SHIFT) as u8;
        if slp_typ == S5_SLEEP_TYPE {
            log::info!("pm: guest entered S5 (soft off)");
            self.requests.request(VmRequest::PowerOff);
        } else {
            // Only \_S5 is in our DSDT. Behave as if the guest woke at once,
            // so that an OS waiting for WAK_STS does not spin forever.
            log::warn!("pm: ignoring sleep request with SLP_TYP {slp_typ}");
            self.sts |= WAK_STS;
        }
    }
}

fn set_byte(value: u16, index: u64, byte: u8) -> u16 {
    let shift = 8 * index;
    (value & !(0xff << shift)) | (u16::from(byte) << shift)
}

impl BusDevice for PmDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut regs = [0u8; PM_IO_LEN as usize];
        regs[PM1_STS as usize..][..2].copy_from_slice(&self.sts.to_le_bytes());
        regs[PM1_EN as usize..][..2].copy_from_slice(&self.en.to_le_bytes());
        regs[PM1_CNT as usize..][..2].copy_from_slice(&self.cnt.to_le_bytes());
        let end = offset.saturating_add(data.len() as u64);
        if offset < PM_TMR + u64::from(PM_TMR_LEN) && end > PM_TMR {
            regs[PM_TMR as usize..][..4].copy_from_slice(&self.timer().to_le_bytes());
        }
        for (i, byte) in data.iter_mut().enumerate() {
            let addr = offset.saturating_add(i as u64);
            *byte = usize::try_from(addr)
                .ok()
                .and_then(|a| regs.get(a))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let before = self.sci_asserted();
        let mut clear = 0u16;
        let mut en = self.en;
        let mut cnt = None;
        for (i, &byte) in data.iter().enumerate() {
            let Some(addr) = offset.checked_add(i as u64) else {
                break;
            };
            match addr {
                0 | 1 => clear |= u16::from(byte) << (8 * (addr - PM1_STS)),
                2 | 3 => en = set_byte(en, addr - PM1_EN, byte),
                4 | 5 => cnt = Some(set_byte(cnt.unwrap_or(self.cnt), addr - PM1_CNT, byte)),
                // Reserved bytes, and the read-only timer.
                _ => {}
            }
        }
        self.sts &= !clear;
        let en = en & PM1_EN_MASK;
        if en & TMR_EN != 0 && self.en & TMR_EN == 0 {
            log::warn!("pm: timer overflow events (TMR_EN) are not supported");
        }
        self.en = en;
        if let Some(cnt) = cnt {
            self.write_control(cnt);
        }
        self.update_sci(before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::{CountingInterrupt, RecordedRequests};
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    struct Fixture {
        pm: PmDevice,
        sci: Arc<CountingInterrupt>,
        requests: Arc<RecordedRequests>,
    }

    fn fixture() -> Fixture {
        let sci = Arc::new(CountingInterrupt::default());
        let requests = Arc::new(RecordedRequests::default());
        let pm = PmDevice::new(sci.clone(), requests.clone());
        Fixture { pm, sci, requests }
    }

    impl Fixture {
        fn sci_count(&self) -> usize {
            self.sci.0.load(Ordering::SeqCst)
        }
        fn requests(&self) -> Vec<VmRequest> {
            self.requests.0.lock().unwrap().clone()
        }
        fn read16(&mut self, offset: u64) -> u16 {
            let mut b = [0u8; 2];
            self.pm.read(offset, &mut b);
            u16::from_le_bytes(b)
        }
        fn write16(&mut self, offset: u64, v: u16) {
            self.pm.write(offset, &v.to_le_bytes());
        }
        fn timer(&mut self) -> u32 {
            let mut b = [0u8; 4];
            self.pm.read(PM_TMR, &mut b);
            u32::from_le_bytes(b)
        }
    }

    #[test]
    fn register_offsets_match_the_layout() {
        // The layout's ports: `arch::x86_64::acpi::tests::pm_ports_match_the_device`.
        assert_eq!(PM_TMR + u64::from(PM_TMR_LEN), PM_IO_LEN);
    }

    #[test]
    fn starts_in_acpi_mode_with_nothing_pending() {
        let mut f = fixture();
        assert_eq!(f.read16(PM1_STS), 0);
        assert_eq!(f.read16(PM1_EN), 0);
        assert_eq!(f.read16(PM1_CNT), SCI_EN);
        assert_eq!(f.read16(6), 0);
    }

    #[test]
    fn power_button_raises_sci_only_when_enabled() {
        let mut f = fixture();
        f.pm.press_power_button();
        assert_eq!(f.read16(PM1_STS) & PWRBTN_STS, PWRBTN_STS);
        assert_eq!(f.sci_count(), 0, "PWRBTN_EN is clear");
        // Enabling with the status already set raises the SCI then.
        f.write16(PM1_EN, PWRBTN_EN);
        assert_eq!(f.sci_count(), 1);
        assert_eq!(f.read16(PM1_EN), PWRBTN_EN);
        // Write 1 to clear; writing 0 bits clears nothing.
        f.write16(PM1_STS, 0);
        assert_eq!(f.read16(PM1_STS), PWRBTN_STS);
        f.write16(PM1_STS, PWRBTN_STS);
        assert_eq!(f.read16(PM1_STS), 0);
        f.pm.press_power_button();
        assert_eq!(f.sci_count(), 2);
        // Pressed again before the guest cleared it: the line is still
        // asserted, no new edge.
        f.pm.press_power_button();
        assert_eq!(f.sci_count(), 2);
        f.write16(PM1_STS, PWRBTN_STS);
        f.pm.press_power_button();
        assert_eq!(f.sci_count(), 3);
        assert!(f.requests().is_empty());
    }

    #[test]
    fn no_sci_while_sci_en_is_clear() {
        let mut f = fixture();
        f.write16(PM1_CNT, 0);
        f.write16(PM1_EN, PWRBTN_EN);
        f.pm.press_power_button();
        assert_eq!(f.sci_count(), 0);
        f.write16(PM1_CNT, SCI_EN);
        assert_eq!(f.sci_count(), 1);
    }

    #[test]
    fn byte_accesses_to_status_and_enable() {
        let mut f = fixture();
        f.pm.write(PM1_EN + 1, &[(PWRBTN_EN >> 8) as u8]);
        assert_eq!(f.read16(PM1_EN), PWRBTN_EN);
        f.pm.press_power_button();
        assert_eq!(f.sci_count(), 1);
        let mut b = [0u8; 1];
        f.pm.read(PM1_STS + 1, &mut b);
        assert_eq!(b[0], (PWRBTN_STS >> 8) as u8);
        // Clearing the low byte does not touch PWRBTN_STS.
        f.pm.write(PM1_STS, &[0xff]);
        assert_eq!(f.read16(PM1_STS), PWRBTN_STS);
        f.pm.write(PM1_STS + 1, &[0xff]);
        assert_eq!(f.read16(PM1_STS), 0);
        // A 32-bit access covers status and enable at once.
        f.pm.press_power_button();
        let mut d = [0u8; 4];
        f.pm.read(PM1_STS, &mut d);
        assert_eq!(d, [0, 1, 0, 1]);
        f.pm.write(PM1_STS, &[0, 1, 0, 0]);
        f.pm.read(PM1_STS, &mut d);
        assert_eq!(d, [0, 0, 0, 0]);
        // Reserved enable bits are not stored.
        f.write16(PM1_EN, 0xffff);
        assert_eq!(f.read16(PM1_EN), PM1_EN_MASK);
    }

    #[test]
    fn s5_powers_off() {
        let mut f = fixture();
        let typ = u16::from(S5_SLEEP_TYPE) << SLP_TYP_SHIFT;
        // ACPICA writes SLP_TYP first, then SLP_TYP | SLP_EN.
        f.write16(PM1_CNT, SCI_EN | typ);
        assert!(f.requests().is_empty());
        assert_eq!(f.read16(PM1_CNT), SCI_EN | typ);
        f.write16(PM1_CNT, SCI_EN | typ | SLP_EN);
        assert_eq!(f.requests(), vec![VmRequest::PowerOff]);
        // SLP_EN is write-only.
        assert_eq!(f.read16(PM1_CNT) & SLP_EN, 0);
    }

    #[test]
    fn s5_by_a_high_byte_write() {
        let mut f = fixture();
        let v = (u16::from(S5_SLEEP_TYPE) << SLP_TYP_SHIFT) | SLP_EN;
        f.pm.write(PM1_CNT + 1, &[(v >> 8) as u8]);
        assert_eq!(f.requests(), vec![VmRequest::PowerOff]);
        assert_eq!(f.read16(PM1_CNT) & SCI_EN, SCI_EN, "low byte kept");
    }

    #[test]
    fn other_sleep_types_are_ignored_and_wake_at_once() {
        let mut f = fixture();
        for typ in 0..8u16 {
            if typ == u16::from(S5_SLEEP_TYPE) {
                continue;
            }
            f.write16(PM1_STS, 0xffff);
            f.write16(PM1_CNT, SCI_EN | (typ << SLP_TYP_SHIFT) | SLP_EN);
            assert_eq!(f.read16(PM1_STS) & WAK_STS, WAK_STS, "type {typ}");
        }
        assert!(f.requests().is_empty());
        assert_eq!(f.sci_count(), 0);
    }

    #[test]
    fn timer_counts_at_3_58_mhz() {
        let mut f = fixture();
        let t0 = f.timer();
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(50));
        let t1 = f.timer();
        let elapsed = start.elapsed();
        let ticks = u64::from(t1.wrapping_sub(t0));
        // At least the time slept, at most the time measured around it
        // (plus one tick of rounding).
        let min = 50 * PM_TMR_HZ / 1000;
        let max = elapsed.as_nanos() as u64 * PM_TMR_HZ / 1_000_000_000 + 1;
        assert!(ticks >= min && ticks <= max, "{ticks} not in {min}..={max}");
        // Writes are ignored.
        f.pm.write(PM_TMR, &[0, 0, 0, 0]);
        assert!(f.timer().wrapping_sub(t1) < 0x8000_0000);
    }

    #[test]
    fn timer_wraps_at_its_width() {
        let mut f = fixture();
        // Pretend the device was created long ago: 2^32 ticks is 20 min.
        let wrap = Duration::from_nanos((1u64 << PM_TMR_BITS) * 1_000_000_000 / PM_TMR_HZ);
        match Instant::now().checked_sub(wrap + Duration::from_secs(1)) {
            Some(start) => f.pm.start = start,
            None => return, // a clock this young cannot go back 20 minutes
        }
        let t = u64::from(f.timer());
        // About one second past the wrap.
        assert!(
            (PM_TMR_HZ - PM_TMR_HZ / 10..2 * PM_TMR_HZ).contains(&t),
            "{t}"
        );
    }

    #[test]
    fn timer_byte_reads() {
        let mut f = fixture();
        let mut b = [0u8; 1];
        f.pm.read(PM_TMR + 3, &mut b);
        // Within the first seconds the top byte is 0.
        assert_eq!(b[0], 0);
        let mut w = [0u8; 2];
        std::thread::sleep(Duration::from_millis(1));
        f.pm.read(PM_TMR, &mut w);
        assert_ne!(u16::from_le_bytes(w), 0);
    }

    #[test]
    fn any_offset_and_size_is_safe() {
        let mut f = fixture();
        for offset in 0..PM_IO_LEN + 2 {
            for size in [1usize, 2, 4, 8] {
                let mut d = vec![0xaa; size];
                f.pm.read(offset, &mut d);
                if offset >= PM_IO_LEN {
                    assert!(d.iter().all(|&b| b == 0));
                }
                // Writing zeros changes nothing that is stored.
                f.pm.write(offset, &vec![0; size][..]);
            }
        }
        f.pm.read(u64::MAX, &mut [0u8; 8]);
        f.pm.write(u64::MAX, &[0xff; 8]);
        f.pm.write(u64::MAX - 4, &[0xff; 8]);
        assert!(f.requests().is_empty());
    }
}
