//! Transitional devices driven as a legacy (virtio 0.9.5) driver drives
//! them, through the I/O BAR: identity, the register block, a full
//! request on each device with the legacy ring layout and INTx, the
//! choice of interface, and hostile accesses.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress};

use super::super::*;
use crate::devices::virtio::block::{BlockDevice, T_IN, T_OUT};
use crate::devices::virtio::net::{NetDevice, LEGACY_HDR_LEN};
use crate::devices::virtio::rng::RngDevice;
use crate::devices::virtio::testing::RecordingVectors;
use crate::devices::virtio::testing::{
    arp_request, desc, mem_two_regions, temp_block_device, wait_for, GuestQueue, TestDriver,
    DESC_NEXT as NEXT, DESC_WRITE as WRITE, GUEST_MAC,
};
use crate::devices::virtio::{
    F_INDIRECT_DESC, STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK,
};
use crate::devices::Interrupt;
use crate::net::tap::Tap;
use crate::net::MacAddr;

const IO: u64 = 0xc000;
const MODERN: u64 = 0xc000_0000;

#[derive(Default)]
struct CountingLine(AtomicUsize);

impl Interrupt for CountingLine {
    fn trigger(&self) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

struct Legacy {
    dev: VirtioPciDevice,
}

impl TestDriver for Legacy {
    fn device(&mut self) -> &mut VirtioPciDevice {
        &mut self.dev
    }
    fn bar(&self) -> usize {
        LEGACY_BAR_INDEX
    }
}

impl Legacy {
    fn new(model: Box<dyn VirtioDevice>, mem: &GuestMemoryMmap) -> (Self, Arc<CountingLine>) {
        let vectors = Arc::new(RecordingVectors::default());
        let mut dev =
            VirtioPciDevice::new_transitional(model, mem.clone(), vectors, MODERN, IO).unwrap();
        let line = Arc::new(CountingLine::default());
        dev.interrupt().set_intx(line.clone());
        dev.set_interrupt_line(10);
        (Legacy { dev }, line)
    }

    /// Reset, acknowledge, take `features` (low 32 bits) and place each
    /// queue at its base (4 KiB aligned); the caller sets DRIVER_OK.
    fn setup(&mut self, features: u32, queues: &[&GuestQueue]) {
        self.w8(0x12, 0);
        self.w8(0x12, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        self.w32(0x04, features);
        for (i, q) in queues.iter().enumerate() {
            self.w16(0x0e, i as u16);
            assert_eq!(self.r16(0x0c), q.size, "queue {i} size");
            self.w32(0x08, (q.desc_table / LEGACY_ALIGN) as u32);
        }
    }

    fn driver_ok(&mut self) {
        self.w8(0x12, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK);
    }
}

/// Vendor capabilities' BAR numbers.
fn cap_bars(dev: &mut VirtioPciDevice) -> Vec<u32> {
    let mut out = Vec::new();
    let mut ptr = (dev.config_read(13) & 0xff) as usize;
    while ptr != 0 && out.len() < 16 {
        let r0 = dev.config_read(ptr / 4);
        if r0 & 0xff == 0x09 && (r0 >> 24) != 5 {
            out.push(dev.config_read(ptr / 4 + 1) & 0xff);
        }
        ptr = ((r0 >> 8) & 0xff) as usize;
    }
    out
}

fn temp_disk(tag: &str) -> (std::path::PathBuf, BlockDevice) {
    temp_block_device(&format!("kiln-virtio-legacy-{tag}"), "vdl")
}

/// A transitional entropy device, reset.
fn legacy_rng(mem: &GuestMemoryMmap) -> (Legacy, Arc<CountingLine>) {
    let (mut d, line) = Legacy::new(Box::new(RngDevice::new().unwrap()), mem);
    d.w8(0x12, 0);
    (d, line)
}

#[test]
fn transitional_identity_and_bars() {
    let mem = mem_two_regions();
    let (_path, blk) = temp_disk("id");
    let (mut d, _) = Legacy::new(Box::new(blk), &mem);
    assert_eq!(d.dev.config_read(0), 0x1001_1af4, "transitional block ID");
    assert_eq!(d.dev.config_read(2) & 0xff, 0, "revision 0");
    assert_eq!(d.dev.config_read(11), 0x0002_1af4, "subsystem = type 2");
    assert_eq!(d.dev.config_read(4), IO as u32 | 1, "BAR 0 is I/O");
    assert_eq!(d.dev.config_read(6), MODERN as u32, "BAR 2: modern");
    assert_eq!(d.dev.config_read(15) & 0xffff, 0x010a, "INTA#, line 10");
    assert!(cap_bars(&mut d.dev).iter().all(|&b| b == 2));
    assert!(d.dev.is_transitional());
    assert_eq!(d.dev.io_addr(), IO);
    // Sizing the I/O BAR: 256 ports.
    d.dev.config_write(4, 0, &u32::MAX.to_le_bytes());
    assert_eq!(d.dev.config_read(4), 0xffff_ff01);
    // Net and entropy IDs.
    let rng = RngDevice::new().unwrap();
    let (mut r, _) = Legacy::new(Box::new(rng), &mem);
    assert_eq!(r.dev.config_read(0), 0x1005_1af4);
    assert_eq!(r.dev.config_read(11), 0x0004_1af4);
    // A modern-only device has no I/O BAR and no pin.
    let rng = RngDevice::new().unwrap();
    let mut m = VirtioPciDevice::new(
        Box::new(rng),
        mem.clone(),
        Arc::new(RecordingVectors::default()),
        MODERN,
    )
    .unwrap();
    assert_eq!(m.config_read(0), 0x1044_1af4);
    assert_eq!(m.config_read(15) & 0xff00, 0);
    let mut b = [0u8; 2];
    m.bar_read(LEGACY_BAR_INDEX, 0x12, &mut b);
    assert_eq!(b, [1, 0], "BAR 0 of a modern device: num_queues");
    _ = std::fs::remove_file(_path);
}

#[test]
fn a_legacy_driver_writes_and_reads_back_a_block() {
    let mem = mem_two_regions();
    let (path, blk) = temp_disk("blk");
    let (mut d, intx) = Legacy::new(Box::new(blk), &mem);
    // Host features: the low 32 bits (no VERSION_1 to see here).
    d.w8(0x12, 0);
    let host = d.r32(0x00);
    assert_ne!(host & F_INDIRECT_DESC as u32, 0);
    assert_ne!(host & F_ANY_LAYOUT as u32, 0, "ANY_LAYOUT for legacy");
    // Device configuration right after the registers (MSI-X off):
    // capacity in sectors.
    assert_eq!(u64::from_le_bytes(d.r(0x14)), 2048);
    let gq = GuestQueue::legacy(&mem, 0x2000, 256);
    assert_eq!((gq.avail, gq.used), (0x3000, 0x4000), "legacy ring layout");
    d.setup(host & F_INDIRECT_DESC as u32, &[&gq]);
    assert_eq!(d.r32(0x04), F_INDIRECT_DESC as u32, "guest features");
    assert_eq!(d.r32(0x08), 2, "PFN reads back");
    d.driver_ok();
    assert_eq!(d.dev.mode(), Mode::Legacy);
    assert_ne!(d.r8(0x12) & STATUS_DRIVER_OK, 0);
    // Live: the queue address and features are frozen.
    d.w32(0x08, 0x10);
    d.w32(0x04, 0);
    assert_eq!((d.r32(0x08), d.r32(0x04)), (2, F_INDIRECT_DESC as u32));

    // Write sector 3: header, data and status in separate descriptors.
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&T_OUT.to_le_bytes());
    h[8..16].copy_from_slice(&3u64.to_le_bytes());
    mem.write_slice(&h, GuestAddress(0x10000)).unwrap();
    let pattern: Vec<u8> = (0..512u32).map(|i| (i * 7 + 1) as u8).collect();
    mem.write_slice(&pattern, GuestAddress(0x11000)).unwrap();
    gq.set_desc(0, desc(0x10000, 16, NEXT, 1));
    gq.set_desc(1, desc(0x11000, 512, NEXT, 2));
    gq.set_desc(2, desc(0x12000, 1, WRITE, 0));
    gq.push_avail(0);
    d.w16(LEGACY_NOTIFY, 0);
    assert!(wait_for(|| gq.used_idx() == 1), "write served");
    assert_eq!(mem.read_obj::<u8>(GuestAddress(0x12000)).unwrap(), 0);
    assert!(
        wait_for(|| intx.0.load(Ordering::SeqCst) >= 1),
        "INTx raised (MSI-X is off)"
    );
    assert_eq!(d.r8(0x13) & 1, 1, "ISR queue bit");
    assert_eq!(d.r8(0x13), 0, "ISR cleared by the read");
    let file = std::fs::read(&path).unwrap();
    assert_eq!(&file[1536..2048], &pattern[..]);

    // Read it back into another buffer.
    h[0..4].copy_from_slice(&T_IN.to_le_bytes());
    mem.write_slice(&h, GuestAddress(0x10000)).unwrap();
    gq.set_desc(3, desc(0x10000, 16, NEXT, 4));
    gq.set_desc(4, desc(0x13000, 512, NEXT | WRITE, 5));
    gq.set_desc(5, desc(0x12000, 1, WRITE, 0));
    gq.push_avail(3);
    d.w16(LEGACY_NOTIFY, 0);
    assert!(wait_for(|| gq.used_idx() == 2), "read served");
    let mut back = vec![0u8; 512];
    mem.read_slice(&mut back, GuestAddress(0x13000)).unwrap();
    assert_eq!(back, pattern);
    assert_eq!(gq.used_elem(1).0, 3);

    // The modern interface is ignored while the driver is legacy...
    let mut st = [0u8; 1];
    d.dev.bar_write(TRANSITIONAL_MODERN_BAR, 0x14, &[0x0f]);
    d.dev.bar_read(TRANSITIONAL_MODERN_BAR, 0x14, &mut st);
    assert_eq!(st[0], STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK);
    // ...except a reset, after which a modern driver may take over.
    d.dev.bar_write(TRANSITIONAL_MODERN_BAR, 0x14, &[0]);
    assert_eq!(d.dev.mode(), Mode::Unset);
    d.dev
        .bar_write(TRANSITIONAL_MODERN_BAR, 0x00, &1u32.to_le_bytes());
    let mut f = [0u8; 4];
    d.dev.bar_read(TRANSITIONAL_MODERN_BAR, 0x04, &mut f);
    assert_eq!(u32::from_le_bytes(f), 1, "VERSION_1 offered to modern");
    d.dev
        .bar_write(TRANSITIONAL_MODERN_BAR, 0x00, &0u32.to_le_bytes());
    d.dev.bar_read(TRANSITIONAL_MODERN_BAR, 0x04, &mut f);
    assert_eq!(
        u32::from_le_bytes(f) & F_ANY_LAYOUT as u32,
        0,
        "not for 1.x"
    );
    assert_eq!(d.dev.mode(), Mode::Modern);
    d.w8(0x12, STATUS_ACKNOWLEDGE);
    assert_eq!(d.r8(0x12), 0, "legacy ignored once modern");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn msix_moves_the_device_configuration() {
    let mem = mem_two_regions();
    let (path, blk) = temp_disk("msix");
    let (mut d, intx) = Legacy::new(Box::new(blk), &mem);
    // Find and enable MSI-X.
    let ptr = d.find_cap(|r0| r0 & 0xff == 0x11).expect("MSI-X");
    assert_eq!(d.r16(0x14), 2048, "capacity at 0x14 without MSI-X");
    d.dev.config_write(ptr / 4, 3, &[0x80]);
    assert_eq!(d.r16(0x18), 2048, "capacity at 0x18 with MSI-X");
    assert_eq!(d.r16(0x14), NO_VECTOR, "config vector");
    d.w16(0x14, 1);
    d.w16(0x0e, 0);
    d.w16(0x16, 0);
    assert_eq!((d.r16(0x14), d.r16(0x16)), (1, 0));
    d.w16(0x0e, 5);
    assert_eq!(d.r16(0x16), NO_VECTOR, "no such queue");
    // With MSI-X on, INTx stays quiet.
    d.dev.interrupt().signal_queue(0);
    assert_eq!(intx.0.load(Ordering::SeqCst), 0);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn hostile_legacy_accesses_are_refused() {
    let mem = mem_two_regions();
    let (mut d, _) = legacy_rng(&mem);
    d.w8(0x12, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    // Queue select out of range: size 0, a PFN is dropped.
    d.w16(0x0e, 9);
    assert_eq!(d.r16(0x0c), 0);
    d.w32(0x08, 0x10);
    assert_eq!(d.r32(0x08), 0);
    // PFNs whose rings are not (all) in guest memory.
    d.w16(0x0e, 0);
    for pfn in [u32::MAX, 0x40, 0x3f, 0x5ff, 0x10_0000] {
        d.w32(0x08, pfn);
        assert_eq!(d.r32(0x08), 0, "PFN {pfn:#x} refused");
    }
    // Wrong widths: all ones on read, no effect on write.
    assert_eq!(d.r32(0x12), u32::MAX);
    d.w32(0x12, 0xff);
    d.w16(0x04, 0xffff);
    assert_eq!(d.r8(0x12), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    assert_eq!(d.r32(0x04), 0);
    assert_eq!(d.r16(0x00), u16::MAX);
    // Everything else: no panic.
    let mut b = [0u8; 8];
    for off in [0u64, 1, 3, 0x11, 0x13, 0x14, 0x17, 0xff, 0x100, u64::MAX] {
        for len in [0usize, 1, 2, 3, 4, 8] {
            d.dev.bar_read(LEGACY_BAR_INDEX, off, &mut b[..len]);
            if off != 0x12 {
                d.dev.bar_write(LEGACY_BAR_INDEX, off, &b[..len]);
            }
        }
    }
    // A notify for a queue that does not exist; DRIVER_OK without a queue
    // (the entropy device cannot start): logged, no panic.
    d.w16(LEGACY_NOTIFY, 7);
    d.driver_ok();
    assert_ne!(d.r8(0x12) & STATUS_DRIVER_OK, 0);
    d.w8(0x12, 0);
    assert_eq!(d.r8(0x12), 0);
}

#[test]
fn a_legacy_driver_reads_entropy() {
    let mem = mem_two_regions();
    let (mut d, intx) = legacy_rng(&mem);
    let max = {
        d.w16(0x0e, 0);
        d.r16(0x0c)
    };
    let gq = GuestQueue::legacy(&mem, 0x5000, max);
    d.setup(0, &[&gq]);
    d.driver_ok();
    mem.write_slice(&[0u8; 64], GuestAddress(0x20000)).unwrap();
    gq.set_desc(0, desc(0x20000, 64, WRITE, 0));
    gq.push_avail(0);
    d.w16(LEGACY_NOTIFY, 0);
    assert!(wait_for(|| gq.used_idx() == 1), "entropy served");
    assert_eq!(gq.used_elem(0), (0, 64));
    let mut got = [0u8; 64];
    mem.read_slice(&mut got, GuestAddress(0x20000)).unwrap();
    assert!(got.iter().any(|&b| b != 0), "random bytes");
    assert!(wait_for(|| intx.0.load(Ordering::SeqCst) >= 1));
}

#[test]
fn a_legacy_driver_exchanges_frames_with_10_byte_headers() {
    // A real tap in a network namespace private to this thread.
    std::thread::spawn(|| {
        // SAFETY: unshare only changes this thread's namespaces.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "unshare: {}", std::io::Error::last_os_error());
        let tap = Tap::open_named("klt0", false).expect("tap in the test namespace");
        for args in [
            &["link", "set", "lo", "up"][..],
            &["addr", "add", "10.9.1.1/24", "dev", "klt0"],
            &["link", "set", "klt0", "up"],
        ] {
            assert!(Command::new("ip").args(args).status().unwrap().success());
        }
        let mem = mem_two_regions();
        let net = NetDevice::new(vec![tap], MacAddr(GUEST_MAC), None, None, "vnl".into()).unwrap();
        let (mut d, intx) = Legacy::new(Box::new(net), &mem);
        d.w8(0x12, 0);
        // MAC in the device configuration at 0x14 (MSI-X off).
        let mac: [u8; 6] = d.r(0x14);
        assert_eq!(mac, GUEST_MAC);
        let rx = GuestQueue::legacy(&mem, 0x2000, 256);
        let tx = GuestQueue::legacy(&mem, 0x5000, 256);
        // F_MAC only: no offloads, no VERSION_1.
        d.setup(1 << 5, &[&rx, &tx]);
        d.driver_ok();
        rx.set_desc(0, desc(0x30000, 2048, WRITE, 0));
        rx.push_avail(0);
        let req = arp_request(LEGACY_HDR_LEN);
        mem.write_slice(&req, GuestAddress(0x20000)).unwrap();
        tx.set_desc(0, desc(0x20000, LEGACY_HDR_LEN as u32, NEXT, 1));
        tx.set_desc(
            1,
            desc(
                0x20000 + LEGACY_HDR_LEN as u64,
                (req.len() - LEGACY_HDR_LEN) as u32,
                0,
                0,
            ),
        );
        tx.push_avail(0);
        d.w16(LEGACY_NOTIFY, 1);
        assert!(wait_for(|| tx.used_idx() == 1), "frame sent");
        // The kernel's ARP reply: the Ethernet frame right after 10 bytes.
        assert!(wait_for(|| rx.used_idx() >= 1), "reply received");
        let (_, len) = rx.used_elem(0);
        let mut frame = vec![0u8; len as usize];
        mem.read_slice(&mut frame, GuestAddress(0x30000)).unwrap();
        let eth = &frame[LEGACY_HDR_LEN..];
        assert_eq!(&eth[0..6], &GUEST_MAC, "to the guest");
        assert_eq!(&eth[12..14], &[0x08, 0x06], "ARP");
        assert_eq!(&eth[20..22], &[0, 2], "a reply");
        assert_eq!(&eth[28..32], &[10, 9, 1, 1], "from the host");
        assert!(intx.0.load(Ordering::SeqCst) >= 1);
        d.w8(0x12, 0);
    })
    .join()
    .unwrap();
}
