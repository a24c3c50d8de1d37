//! Tests of the PCI root through both configuration mechanisms, with a
//! device that has one BAR of each kind.

use super::*;
use crate::arch::x86_64::layout;
use crate::devices::bus::BusDevice;

const IO_BAR: PciBar = PciBar {
    index: 0,
    kind: PciBarKind::Io,
    prefetchable: false,
    addr: 0xc000,
    size: 0x40,
};
const MEM32_BAR: PciBar = PciBar {
    index: 1,
    kind: PciBarKind::Memory32,
    prefetchable: false,
    addr: layout::MMIO32_START,
    size: 0x1000,
};
const MEM64_BAR: PciBar = PciBar {
    index: 2,
    kind: PciBarKind::Memory64,
    prefetchable: true,
    addr: 0x100_0000_0000,
    size: 0x4000_0000,
};

struct TestDevice {
    config: PciConfiguration,
    last_bar_write: Option<(usize, u64, Vec<u8>)>,
}

impl TestDevice {
    fn new() -> Self {
        let mut config = PciConfiguration::new(&PciHeader {
            vendor_id: 0x1af4,
            device_id: 0x1041,
            class_code: 0x020000,
            revision_id: 1,
            subsystem_vendor_id: 0x1af4,
            subsystem_id: 1,
        });
        for bar in [IO_BAR, MEM32_BAR, MEM64_BAR] {
            config.add_bar(&bar).unwrap();
        }
        TestDevice {
            config,
            last_bar_write: None,
        }
    }
}

impl PciDevice for TestDevice {
    fn config_read(&mut self, reg_idx: usize) -> u32 {
        self.config.read_reg(reg_idx)
    }
    fn config_write(&mut self, reg_idx: usize, offset: u64, data: &[u8]) -> Option<BarMove> {
        self.config.write_reg(reg_idx, offset, data)
    }
    fn bars(&self) -> Vec<PciBar> {
        self.config.bars()
    }
    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        data.fill(bar as u8 + offset as u8);
    }
    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        self.last_bar_write = Some((bar, offset, data.to_vec()));
    }
}

#[derive(Default)]
struct RecordedMoves(Mutex<Vec<(u8, BarMove)>>);

impl BarMoveHandler for RecordedMoves {
    fn bar_moved(&self, slot: u8, mv: BarMove) {
        self.0.lock().unwrap().push((slot, mv));
    }
}

struct Setup {
    root: Arc<Mutex<PciRoot>>,
    io: PciConfigIo,
    mmio: PciConfigMmio,
    moves: Arc<RecordedMoves>,
    slot: u8,
    dev: Arc<Mutex<TestDevice>>,
}

fn setup() -> Setup {
    let root = Arc::new(Mutex::new(PciRoot::new()));
    let dev = Arc::new(Mutex::new(TestDevice::new()));
    let moves = Arc::new(RecordedMoves::default());
    let slot = {
        let mut r = root.lock().unwrap();
        r.set_bar_move_handler(moves.clone());
        r.add_device(dev.clone()).unwrap()
    };
    Setup {
        io: PciConfigIo::new(root.clone()),
        mmio: PciConfigMmio::new(root.clone()),
        root,
        moves,
        slot,
        dev,
    }
}

fn cf8(slot: u8, reg: usize) -> u32 {
    0x8000_0000 | (u32::from(slot) << 11) | ((reg as u32) << 2)
}

fn io_read32(io: &mut PciConfigIo, slot: u8, reg: usize) -> u32 {
    io.write(0, &cf8(slot, reg).to_le_bytes());
    let mut b = [0u8; 4];
    io.read(4, &mut b);
    u32::from_le_bytes(b)
}

fn io_write32(io: &mut PciConfigIo, slot: u8, reg: usize, v: u32) {
    io.write(0, &cf8(slot, reg).to_le_bytes());
    io.write(4, &v.to_le_bytes());
}

fn ecam(slot: u8, reg: usize) -> u64 {
    (u64::from(slot) << 15) | ((reg as u64) << 2)
}

fn mmio_read32(mmio: &mut PciConfigMmio, slot: u8, reg: usize) -> u32 {
    let mut b = [0u8; 4];
    mmio.read(ecam(slot, reg), &mut b);
    u32::from_le_bytes(b)
}

fn mmio_write32(mmio: &mut PciConfigMmio, slot: u8, reg: usize, v: u32) {
    mmio.write(ecam(slot, reg), &v.to_le_bytes());
}

#[test]
fn enumerate_through_cf8_cfc() {
    let mut s = setup();
    assert_eq!(s.slot, 1);
    let mut found = Vec::new();
    for slot in 0..32u8 {
        let id = io_read32(&mut s.io, slot, 0);
        if id != u32::MAX {
            found.push((slot, id, io_read32(&mut s.io, slot, 2) >> 8));
        }
    }
    assert_eq!(
        found,
        vec![(0, 0x29c0_8086, 0x060000), (1, 0x1041_1af4, 0x020000)]
    );
    // The address register reads back (reserved bits clear).
    s.io.write(0, &0xffff_ffffu32.to_le_bytes());
    let mut b = [0u8; 4];
    s.io.read(0, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0x80ff_fffc);
    // Byte and word reads of the data window: device ID at 0xCFE.
    s.io.write(0, &cf8(0, 0).to_le_bytes());
    let mut w = [0u8; 2];
    s.io.read(6, &mut w);
    assert_eq!(u16::from_le_bytes(w), 0x29c0);
    let mut one = [0u8];
    s.io.read(5, &mut one);
    assert_eq!(one[0], 0x80);
    // Function 1, other buses, and a disabled address read all ones.
    s.io.write(0, &(cf8(1, 0) | 0x100).to_le_bytes());
    s.io.read(4, &mut b);
    assert_eq!(b, [0xff; 4]);
    s.io.write(0, &(cf8(0, 0) | 0x1_0000).to_le_bytes());
    s.io.read(4, &mut b);
    assert_eq!(b, [0xff; 4]);
    s.io.write(0, &(cf8(0, 0) & !0x8000_0000).to_le_bytes());
    s.io.read(4, &mut b);
    assert_eq!(b, [0xff; 4]);
}

/// Linux's pci_check_type1 and pci_sanity_check, in order.
#[test]
fn linux_type1_probe() {
    let mut s = setup();
    s.io.write(3, &[0x01]);
    let mut b = [0u8; 4];
    s.io.read(0, &mut b);
    s.io.write(0, &0x8000_0000u32.to_le_bytes());
    s.io.read(0, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0x8000_0000);
    // Class word at 0x0a of 00:00.0, read as a word at 0xCFE.
    s.io.write(0, &cf8(0, 2).to_le_bytes());
    let mut w = [0u8; 2];
    s.io.read(6, &mut w);
    assert_eq!(u16::from_le_bytes(w), 0x0600);
}

#[test]
fn enumerate_through_ecam() {
    let mut s = setup();
    assert_eq!(mmio_read32(&mut s.mmio, 0, 0), 0x29c0_8086);
    assert_eq!(mmio_read32(&mut s.mmio, 0, 2) >> 8, 0x060000);
    assert_eq!(mmio_read32(&mut s.mmio, 1, 0), 0x1041_1af4);
    for slot in 2..32 {
        assert_eq!(mmio_read32(&mut s.mmio, slot, 0), u32::MAX, "slot {slot}");
    }
    // Function 3 of slot 0; a bus past 0 (if the window were larger).
    let mut b = [0u8; 4];
    s.mmio.read(3 << 12, &mut b);
    assert_eq!(b, [0xff; 4]);
    s.mmio.read(layout::PCI_ECAM_SIZE, &mut b);
    assert_eq!(b, [0xff; 4]);
    // Extended space of a present device reads 0 (no extended caps).
    assert_eq!(mmio_read32(&mut s.mmio, 1, 0x100 / 4), 0);
    // Sub-dword reads and an aligned 8-byte read.
    let mut w = [0u8; 2];
    s.mmio.read(ecam(1, 2) + 2, &mut w);
    assert_eq!(u16::from_le_bytes(w), 0x0200);
    let mut q = [0u8; 8];
    s.mmio.read(0, &mut q);
    assert_eq!(u64::from_le_bytes(q), 0x0000_0000_29c0_8086);
    // Both mechanisms see the same root.
    assert_eq!(
        s.root.lock().unwrap().host_bridge(),
        HostBridgeIdentity::Q35
    );
}

#[test]
fn bar_sizing_for_each_kind() {
    let mut s = setup();
    let slot = s.slot;
    let size = |io: &mut PciConfigIo, reg| {
        let orig = io_read32(io, slot, reg);
        io_write32(io, slot, reg, u32::MAX);
        let mask = io_read32(io, slot, reg);
        io_write32(io, slot, reg, orig);
        assert_eq!(io_read32(io, slot, reg), orig);
        (orig, mask)
    };
    // I/O BAR: 0x40 ports.
    let (orig, mask) = size(&mut s.io, 4);
    assert_eq!(orig, 0xc001);
    assert_eq!(mask, 0xffff_ffc1);
    assert_eq!((!(mask & !0x3)).wrapping_add(1), 0x40);
    // 32-bit memory BAR: 4 KiB.
    let (orig, mask) = size(&mut s.io, 5);
    assert_eq!(orig, 0xc000_0000);
    assert_eq!(mask, 0xffff_f000);
    // 64-bit prefetchable BAR: 1 GiB, sized as Linux does (low, then high).
    let (lo, lo_mask) = size(&mut s.io, 6);
    let (hi, hi_mask) = size(&mut s.io, 7);
    assert_eq!((lo, hi), (0x0000_000c, 0x100));
    assert_eq!((lo_mask, hi_mask), (0xc000_000c, 0xffff_ffff));
    let size64 = !((u64::from(hi_mask) << 32) | u64::from(lo_mask & !0xf)) + 1;
    assert_eq!(size64, 0x4000_0000);
    // Sizing and restoring moved nothing.
    assert!(s.moves.0.lock().unwrap().is_empty());
    // Unused BARs and the expansion ROM size as zero (not implemented).
    io_write32(&mut s.io, slot, 9, u32::MAX);
    io_write32(&mut s.io, slot, 12, u32::MAX);
    assert_eq!(io_read32(&mut s.io, slot, 9), 0);
    assert_eq!(io_read32(&mut s.io, slot, 12), 0);
}

#[test]
fn reprogrammed_bars_are_reported() {
    let mut s = setup();
    let slot = s.slot;
    // Through ECAM this time: sizing via 64-bit BAR, then a new address.
    mmio_write32(&mut s.mmio, slot, 6, u32::MAX);
    mmio_write32(&mut s.mmio, slot, 7, u32::MAX);
    mmio_write32(&mut s.mmio, slot, 6, 0x8000_000c);
    assert!(s.moves.0.lock().unwrap().is_empty(), "low half alone");
    mmio_write32(&mut s.mmio, slot, 7, 0x2);
    io_write32(&mut s.io, slot, 5, 0xc010_0000);
    io_write32(&mut s.io, slot, 4, 0xd000);
    // Writing the same address again is not a move.
    io_write32(&mut s.io, slot, 4, 0xd000);
    let moves = s.moves.0.lock().unwrap().clone();
    assert_eq!(
        moves,
        vec![
            (
                slot,
                BarMove {
                    index: 2,
                    kind: PciBarKind::Memory64,
                    old_addr: MEM64_BAR.addr,
                    new_addr: 0x2_8000_0000,
                    size: 0x4000_0000
                }
            ),
            (
                slot,
                BarMove {
                    index: 1,
                    kind: PciBarKind::Memory32,
                    old_addr: MEM32_BAR.addr,
                    new_addr: 0xc010_0000,
                    size: 0x1000
                }
            ),
            (
                slot,
                BarMove {
                    index: 0,
                    kind: PciBarKind::Io,
                    old_addr: 0xc000,
                    new_addr: 0xd000,
                    size: 0x40
                }
            ),
        ]
    );
    let bars = s.dev.lock().unwrap().bars();
    assert_eq!(
        bars.iter().map(|b| b.addr).collect::<Vec<_>>(),
        vec![0xd000, 0xc010_0000, 0x2_8000_0000]
    );
    // Unaligned address bits are dropped.
    io_write32(&mut s.io, slot, 5, 0xc020_0abc);
    assert_eq!(io_read32(&mut s.io, slot, 5), 0xc020_0000);
    // Byte writes build up an address too.
    s.io.write(0, &cf8(slot, 5).to_le_bytes());
    s.io.write(7, &[0xc1]);
    assert_eq!(
        s.moves.0.lock().unwrap().last().unwrap().1.new_addr,
        0xc120_0000
    );
}

#[test]
fn bar_region_forwards_to_the_device() {
    let s = setup();
    let dev: SharedPciDevice = s.dev.clone();
    let mut region = PciBarRegion::new(dev, 1);
    let mut b = [0u8; 2];
    region.read(3, &mut b);
    assert_eq!(b, [4, 4]);
    region.write(8, &[1, 2, 3, 4]);
    assert_eq!(
        s.dev.lock().unwrap().last_bar_write,
        Some((1, 8, vec![1, 2, 3, 4]))
    );
}

#[test]
fn slots_and_host_bridge_identity() {
    let mut root = PciRoot::with_host_bridge(HostBridgeIdentity::I440FX);
    assert_eq!(root.config_read(0, 0, 0, 0), 0x1237_8086);
    assert_eq!(root.config_read(0, 0, 0, 2) & 0xff, 2);
    let dev = || -> SharedPciDevice { Arc::new(Mutex::new(TestDevice::new())) };
    assert_eq!(
        root.add_device_at(0, dev()),
        Err(PciError::SlotUnavailable(0))
    );
    assert_eq!(
        root.add_device_at(32, dev()),
        Err(PciError::SlotUnavailable(32))
    );
    root.add_device_at(5, dev()).unwrap();
    assert_eq!(root.add_device(dev()), Ok(1));
    for _ in 0..29 {
        root.add_device(dev()).unwrap();
    }
    assert_eq!(root.add_device(dev()), Err(PciError::NoFreeSlot));
    assert!(root.device(5).is_some());
    assert!(root.device(40).is_none());
    // The host bridge's chipset registers read back what was written.
    root.config_write(0, 0, 0, 0x90 / 4, 0, &[0x30]);
    assert_eq!(root.config_read(0, 0, 0, 0x90 / 4) & 0xff, 0x30);
    // But its header stays read-only.
    root.config_write(0, 0, 0, 0, 0, &[0, 0, 0, 0]);
    assert_eq!(root.config_read(0, 0, 0, 0), 0x1237_8086);
}

#[derive(Default)]
struct PortRecorder(Vec<(u64, Vec<u8>)>);

impl BusDevice for PortRecorder {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0x40 | offset as u8);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.0.push((offset, data.to_vec()));
    }
}

#[test]
fn port_cf9_goes_to_its_device() {
    let root = Arc::new(Mutex::new(PciRoot::new()));
    let mut io = PciConfigIo::new(root.clone());
    let mut b = [0u8];
    io.read(1, &mut b);
    assert_eq!(b[0], 0xff);
    io.write(1, &[0x06]);
    let port = Arc::new(Mutex::new(PortRecorder::default()));
    let mut io = PciConfigIo::new(root).with_port_cf9(port.clone());
    // Linux reboot=pci: 0x02 then 0x06, byte writes to 0xCF9.
    io.write(1, &[0x02]);
    io.write(1, &[0x06]);
    io.read(1, &mut b);
    assert_eq!(b[0], 0x40);
    // A dword at 0xCF8 is the address register, not port 0xCF9.
    io.write(0, &cf8(0, 0).to_le_bytes());
    assert_eq!(
        port.lock().unwrap().0,
        vec![(0, vec![0x02]), (0, vec![0x06])]
    );
}

/// Every offset and size, aligned or not, on both mechanisms: never a
/// panic, and accesses that straddle a dword read all ones.
#[test]
fn odd_accesses_never_panic() {
    let mut s = setup();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..20_000 {
        let len = [1, 2, 3, 4, 5, 8][(next() % 6) as usize];
        let mut buf = vec![0u8; len];
        let off = next() % (PCI_CONFIG_IO_LEN + 4);
        if next() % 2 == 0 {
            s.io.read(off, &mut buf);
        } else {
            // Keep the reset port quiet; nothing is listening anyway.
            s.io.write(off, &buf);
        }
        let off = next() % (layout::PCI_ECAM_SIZE * 2);
        if next() % 2 == 0 {
            s.mmio.read(off, &mut buf);
        } else {
            s.mmio.write(off, &buf);
        }
    }
    s.mmio.read(u64::MAX - 3, &mut [0u8; 4]);
    s.mmio.write(u64::MAX, &[0]);
    let mut b = [0u8; 4];
    s.mmio.read(ecam(0, 0) + 2, &mut b);
    assert_eq!(b, [0xff; 4]);
    s.io.write(0, &cf8(0, 0).to_le_bytes());
    s.io.read(6, &mut b);
    assert_eq!(b, [0xff; 4]);
    // The host bridge still answers.
    assert_eq!(mmio_read32(&mut s.mmio, 0, 0), 0x29c0_8086);
}
