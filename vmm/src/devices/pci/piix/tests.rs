//! The PIIX3/PIIX4 functions through PCI bus 0, and the PM block following
//! PMBA/PMREGMISC on a real I/O bus with the real PM device.

use std::sync::{Arc, Mutex};

use super::*;
use crate::arch::x86_64::layout;
use crate::devices::bus::Bus;
use crate::devices::legacy::pm::{PmDevice, PM_IO_LEN};
use crate::devices::pci::{HostBridgeIdentity, PciRoot};
use crate::devices::{CountingInterrupt, RecordedRequests, VmRequest};

struct Fixture {
    root: PciRoot,
    bus: Bus,
    requests: Arc<RecordedRequests>,
}

fn fixture() -> Fixture {
    let requests = Arc::new(RecordedRequests::default());
    let pm = Arc::new(Mutex::new(PmDevice::new(
        Arc::new(CountingInterrupt::default()),
        requests.clone(),
    )));
    let mut bus = Bus::new();
    let range = bus.insert_movable(pm, PM_IO_LEN).unwrap();
    let mut root = PciRoot::with_host_bridge(HostBridgeIdentity::I440FX);
    root.add_function(
        PIIX_SLOT,
        PIIX3_ISA_FUNCTION,
        Arc::new(Mutex::new(piix3_isa_bridge())),
    )
    .unwrap();
    root.add_function(
        PIIX_SLOT,
        PIIX4_PM_FUNCTION,
        Arc::new(Mutex::new(Piix4Pm::new(range))),
    )
    .unwrap();
    Fixture {
        root,
        bus: bus.clone(),
        requests,
    }
}

impl Fixture {
    fn cfg(&self, function: u8, offset: usize) -> u32 {
        self.root.config_read(0, PIIX_SLOT, function, offset / 4)
    }
    fn set(&self, function: u8, offset: usize, data: &[u8]) {
        self.root.config_write(
            0,
            PIIX_SLOT,
            function,
            offset / 4,
            (offset % 4) as u64,
            data,
        );
    }
    fn timer_answers_at(&self, port: u16) -> bool {
        let mut d = [0u8; 4];
        self.bus.read(u64::from(port) + 8, &mut d)
    }
}

#[test]
fn the_functions_show_the_piix_identities() {
    let f = fixture();
    // 00:01.0: 8086:7000, ISA bridge, multi-function header.
    assert_eq!(f.cfg(0, 0), 0x7000_8086);
    assert_eq!(f.cfg(0, 8) >> 8, 0x06_01_00);
    assert_eq!((f.cfg(0, 0x0c) >> 16) & 0xff, 0x80);
    // 00:01.3: 8086:7113 rev 3, "other bridge", single-function header.
    assert_eq!(f.cfg(3, 0), 0x7113_8086);
    assert_eq!(f.cfg(3, 8), 0x0680_0003);
    assert_eq!((f.cfg(3, 0x0c) >> 16) & 0xff, 0);
    // Functions 1, 2 and 4..7 are empty, and so is bus 1.
    for function in [1u8, 2, 4, 7] {
        assert_eq!(f.cfg(function, 0), u32::MAX, "function {function}");
    }
    assert_eq!(f.root.config_read(1, PIIX_SLOT, 0, 0), u32::MAX);
}

#[test]
fn isa_bridge_stores_pirq_routing() {
    let f = fixture();
    f.set(0, 0x60, &[10, 10, 11, 11]);
    assert_eq!(f.cfg(0, 0x60), u32::from_le_bytes([10, 10, 11, 11]));
    // The header stays read-only.
    f.set(0, 0, &[0, 0, 0, 0]);
    assert_eq!(f.cfg(0, 0), 0x7000_8086);
}

#[test]
fn pm_block_is_hidden_until_the_firmware_enables_it() {
    let f = fixture();
    assert_eq!(f.cfg(3, PMBA), PMBA_IO_SPACE, "power-on PMBA");
    assert_eq!(f.cfg(3, PMREGMISC) & PMIOSE, 0);
    assert!(!f.timer_answers_at(layout::PM_IO_BASE));
    assert!(!f.timer_answers_at(0xb000));
    // OVMF's order: PMBA, then PMREGMISC.
    f.set(3, PMBA, &0xb000u32.to_le_bytes());
    assert!(!f.timer_answers_at(0xb000), "not before PMIOSE");
    f.set(3, PMREGMISC, &[1]);
    assert!(f.timer_answers_at(0xb000));
    assert!(!f.timer_answers_at(layout::PM_IO_BASE));
    // Bit 0 always reads 1, bits below 6 are not stored.
    assert_eq!(f.cfg(3, PMBA), 0xb000 | PMBA_IO_SPACE);
    f.set(3, PMBA, &0xffff_ffffu32.to_le_bytes());
    assert_eq!(f.cfg(3, PMBA), PMBA_MASK | PMBA_IO_SPACE);
    assert!(f.timer_answers_at(0xffc0));
    assert!(!f.timer_answers_at(0xb000));
}

#[test]
fn pm_block_follows_seabios_programming_and_powers_off_there() {
    let f = fixture();
    // SeaBIOS's piix4_pm_config_setup with the table loader present.
    f.set(3, 0x3c, &[9]);
    f.set(3, PMBA, &(0x600u32 | 1).to_le_bytes());
    f.set(3, PMREGMISC, &[1]);
    f.set(3, SMBBA, &(0x700u32 | 1).to_le_bytes());
    f.set(3, SMBHSTCFG, &[9]);
    assert_eq!(f.cfg(3, SMBBA), 0x701);
    assert_eq!((f.cfg(3, 0xd0) >> 16) & 0xff, 9);
    assert!(f.timer_answers_at(0x600));
    // The MBR probe's power-off: SLP_TYP 5 | SLP_EN at PM1a_CNT.
    let slp = (u16::from(crate::devices::legacy::pm::S5_SLEEP_TYPE) << 10) | (1 << 13);
    assert!(f.bus.write(0x604, &slp.to_le_bytes()));
    assert_eq!(*f.requests.0.lock().unwrap(), vec![VmRequest::PowerOff]);
    // Disabled again: hidden, and a write there reaches nothing.
    f.set(3, PMREGMISC, &[0]);
    assert!(!f.timer_answers_at(0x600));
    assert!(!f.bus.write(0x604, &slp.to_le_bytes()));
    assert_eq!(f.requests.0.lock().unwrap().len(), 1);
    // PMBA 0 with PMIOSE set decodes nothing either.
    f.set(3, PMBA, &[1, 0, 0, 0]);
    f.set(3, PMREGMISC, &[1]);
    assert!(!f.timer_answers_at(0));
}

#[test]
fn malformed_config_accesses_are_ignored() {
    let f = fixture();
    for (offset, data) in [
        (PMBA + 3, &[1u8, 2][..]),
        (PMBA, &[1, 2, 3][..]),
        (PMBA, &[1, 2, 3, 4, 5, 6, 7, 8][..]),
    ] {
        f.root
            .config_write(0, PIIX_SLOT, 3, offset / 4, (offset % 4) as u64, data);
    }
    assert_eq!(f.cfg(3, PMBA), PMBA_IO_SPACE);
    assert_eq!(f.root.config_read(0, PIIX_SLOT, 3, 4096), u32::MAX);
    // A function number past 7 cannot be added.
    let mut root = PciRoot::new();
    assert!(root
        .add_function(1, 8, Arc::new(Mutex::new(piix3_isa_bridge())))
        .is_err());
    assert!(root
        .add_function(32, 1, Arc::new(Mutex::new(piix3_isa_bridge())))
        .is_err());
}
