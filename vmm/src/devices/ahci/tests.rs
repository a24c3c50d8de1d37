//! The controller driven as a guest driver would, against `vm-memory`
//! guest memory: HBA and port registers, IDENTIFY, DMA and NCQ reads and
//! writes on a raw image, ATAPI on an ISO-like image, and hostile command
//! lists and PRDTs (a task-file error, never a panic).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kiln_block::Disk;
use vm_memory::{Bytes, GuestAddress};

use super::command::{CommandHeader, H2dFis, SgList};
use super::port::{IS_DHRS, IS_PSS, IS_SDBS, IS_TFES};
use super::*;
use crate::devices::virtio::testing::MemDisk;

const MEM: usize = 4 << 20;
const CLB: u64 = 0x1000;
const FB: u64 = 0x2000;
const CT: u64 = 0x3000;
const BUF: u64 = 0x10000;

#[derive(Default)]
struct Line(AtomicBool);

impl IrqLevel for Line {
    fn set_level(&self, high: bool) {
        self.0.store(high, Ordering::SeqCst);
    }
}

/// An image in memory, each byte `fill(offset)`.
fn image(len: usize, fill: impl Fn(usize) -> u8) -> Arc<dyn Disk> {
    let disk = MemDisk::new(len, false);
    for (i, b) in disk.data.lock().unwrap().iter_mut().enumerate() {
        *b = fill(i);
    }
    Arc::new(disk)
}

struct Hba {
    ahci: Ahci,
    mem: GuestMemoryMmap,
    line: Arc<Line>,
}

impl Hba {
    fn new() -> Self {
        let disk = image(1 << 20, |i| (i / 512) as u8);
        let iso = image(64 * 2048, |i| (i / 2048) as u8 ^ 0x5a);
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
        let drives = vec![
            Drive::new(DriveKind::Disk, disk, "D0".into()),
            Drive::new(DriveKind::Cdrom, iso, "C1".into()),
        ];
        let mut ahci = Ahci::new(drives, mem.clone(), 0xfebf_0000).unwrap();
        let line = Arc::new(Line::default());
        ahci.set_irq(line.clone(), 10);
        let mut h = Hba { ahci, mem, line };
        h.w(GHC, GHC_IE);
        for port in 0..2 {
            h.pw(port, 0x00, CLB as u32 + port as u32 * 0x400);
            h.pw(port, 0x08, FB as u32 + port as u32 * 0x100);
            h.pw(port, 0x14, 0xffff_ffff);
            h.pw(port, 0x18, 0x11);
        }
        h
    }

    fn r(&mut self, off: u64) -> u32 {
        let mut d = [0u8; 4];
        self.ahci.bar_read(ABAR, off, &mut d);
        u32::from_le_bytes(d)
    }

    fn w(&mut self, off: u64, v: u32) {
        self.ahci.bar_write(ABAR, off, &v.to_le_bytes());
    }

    fn pr(&mut self, port: u64, off: u64) -> u32 {
        self.r(0x100 + port * 0x80 + off)
    }

    fn pw(&mut self, port: u64, off: u64, v: u32) {
        self.w(0x100 + port * 0x80 + off, v)
    }

    /// Put a command in `slot` of `port`: FIS, ACMD, PRDT of (addr, len).
    fn command(
        &mut self,
        port: u64,
        slot: u32,
        fis: [u8; 20],
        acmd: &[u8],
        prdt: &[(u64, u32)],
        flags: u32,
    ) -> u64 {
        let ct = CT + port * 0x1000 + u64::from(slot) * 0x100;
        let header = CLB + port * 0x400 + u64::from(slot) * 32;
        let dw0 = 5 | flags | ((prdt.len() as u32) << 16);
        self.mem.write_obj(dw0, GuestAddress(header)).unwrap();
        self.mem.write_obj(0u32, GuestAddress(header + 4)).unwrap();
        self.mem.write_obj(ct, GuestAddress(header + 8)).unwrap();
        self.mem.write_slice(&fis, GuestAddress(ct)).unwrap();
        self.mem.write_slice(acmd, GuestAddress(ct + 0x40)).unwrap();
        for (i, &(addr, len)) in prdt.iter().enumerate() {
            let e = ct + 0x80 + 16 * i as u64;
            self.mem.write_obj(addr, GuestAddress(e)).unwrap();
            self.mem.write_obj(len - 1, GuestAddress(e + 12)).unwrap();
        }
        header
    }

    fn issue(&mut self, port: u64, slot: u32) {
        self.pw(port, 0x10, u32::MAX);
        self.pw(port, 0x38, 1 << slot);
    }

    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

fn h2d(command: u8, lba: u64, count: u16, features: u16) -> [u8; 20] {
    let mut f = [0u8; 20];
    let l = lba.to_le_bytes();
    f[0] = 0x27;
    f[1] = 0x80;
    f[2] = command;
    f[3] = features as u8;
    f[4..7].copy_from_slice(&l[0..3]);
    f[7] = 0x40;
    f[8..11].copy_from_slice(&l[3..6]);
    f[11] = (features >> 8) as u8;
    f[12..14].copy_from_slice(&count.to_le_bytes());
    f
}

#[test]
fn hba_registers_and_signatures() {
    let mut h = Hba::new();
    assert_eq!(h.r(CAP) & 0x1f, 5, "six ports");
    assert_ne!(h.r(CAP) & (1 << 31), 0, "64-bit");
    assert_eq!(h.r(PI), 0x3f);
    assert_eq!(h.r(VS), 0x0001_0300);
    assert_eq!(h.r(GHC), GHC_AE | GHC_IE);
    assert_eq!(h.pr(0, 0x24), 0x101);
    assert_eq!(h.pr(1, 0x24), 0xeb14_0101);
    assert_eq!(h.pr(2, 0x28), 0, "empty port: no device");
    assert_eq!(h.pr(0, 0x28), 0x113);
    assert_eq!(h.pr(0, 0x18) & 0xc011, 0xc011, "ST/CR, FRE/FR");
    assert_eq!(h.pr(0, 0x20) & 0x88, 0, "not busy");
    // HBA reset stops the ports.
    h.w(GHC, GHC_HR);
    assert_eq!(h.r(GHC), GHC_AE);
    assert_eq!(h.pr(0, 0x18), 0);
    // Odd accesses read zero and change nothing.
    let mut b = [0xffu8; 2];
    h.ahci.bar_read(ABAR, 2, &mut b);
    assert_eq!(b, [0, 0]);
    h.ahci.bar_write(ABAR, 0x104, &[1]);
    assert_eq!(h.pr(0, 0x04), 0);
}

#[test]
fn identify_dma_and_ncq_on_a_disk() {
    let mut h = Hba::new();
    h.command(0, 0, h2d(0xec, 0, 0, 0), &[], &[(BUF, 512)], 0);
    h.issue(0, 0);
    let is = h.pr(0, 0x10);
    assert_eq!(is & (IS_DHRS | IS_PSS), IS_DHRS | IS_PSS);
    assert_eq!(h.r(IS), 1, "port 0 pending");
    assert!(h.line.0.load(Ordering::SeqCst), "INTx raised");
    let id = h.read(BUF, 512);
    assert_eq!(&id[54..58], b"IKNL", "model, byte-swapped");
    let lba48 = u64::from_le_bytes(id[200..208].try_into().unwrap());
    assert_eq!(lba48, 2048);
    assert_eq!(
        id.iter().fold(0u8, |a, &b| a.wrapping_add(b)),
        0,
        "checksum"
    );
    assert_eq!(h.read(FB + 0x40, 4)[0..3], [0x34, 0x40, 0x50]);
    // Clearing PxIS lowers the line.
    h.pw(0, 0x10, u32::MAX);
    assert!(!h.line.0.load(Ordering::SeqCst));
    // WRITE DMA EXT of 2 sectors in two PRD entries, then READ DMA back.
    h.mem.write_slice(&[0xab; 1024], GuestAddress(BUF)).unwrap();
    let hdr = h.command(
        0,
        1,
        h2d(0x35, 7, 2, 0),
        &[],
        &[(BUF, 512), (BUF + 512, 512)],
        1 << 6,
    );
    h.issue(0, 1);
    assert_eq!(h.pr(0, 0x10) & IS_TFES, 0);
    assert_eq!(h.read(hdr + 4, 4), 1024u32.to_le_bytes(), "PRDBC");
    h.command(0, 2, h2d(0xc8, 6, 3, 0), &[], &[(BUF + 0x1000, 1536)], 0);
    h.issue(0, 2);
    let back = h.read(BUF + 0x1000, 1536);
    assert!(back[..512].iter().all(|&b| b == 6), "sector 6 untouched");
    assert!(back[512..].iter().all(|&b| b == 0xab));
    assert_eq!(h.pr(0, 0x38), 0, "CI cleared");
    // NCQ: READ FPDMA QUEUED, tag 3 in slot 3.
    h.pw(0, 0x34, 1 << 3);
    h.command(
        0,
        3,
        h2d(0x60, 8, 3 << 3, 1),
        &[],
        &[(BUF + 0x2000, 512)],
        0,
    );
    h.issue(0, 3);
    assert_eq!(h.pr(0, 0x34), 0, "SACT cleared");
    assert_ne!(h.pr(0, 0x10) & IS_SDBS, 0);
    assert_eq!(h.read(FB + 0x58 + 4, 4), 8u32.to_le_bytes());
    assert!(h.read(BUF + 0x2000, 512).iter().all(|&b| b == 0xab));
    // Past the end: IDNF; IDENTIFY PACKET on a disk: aborted.
    h.command(0, 4, h2d(0x25, 2047, 2, 0), &[], &[(BUF, 1024)], 0);
    h.issue(0, 4);
    assert_eq!(h.pr(0, 0x20), 0x1041);
    h.command(0, 5, h2d(0xa1, 0, 0, 0), &[], &[(BUF, 512)], 0);
    h.issue(0, 5);
    assert_eq!(h.pr(0, 0x20), 0x0441);
    assert_ne!(h.pr(0, 0x10) & IS_TFES, 0);
}

fn packet(cdb: &[u8]) -> [u8; 20] {
    let mut f = h2d(0xa0, 0, 0, 1);
    f[5] = 0x00;
    f[6] = 0x08;
    let _ = cdb;
    f
}

#[test]
fn atapi_on_a_cdrom() {
    let mut h = Hba::new();
    let atapi = 1 << 5;
    h.command(1, 0, h2d(0xa1, 0, 0, 0), &[], &[(BUF, 512)], 0);
    h.issue(1, 0);
    assert_eq!(h.read(BUF, 2), [0xc0, 0x85]);
    // IDENTIFY DEVICE: aborted, with the signature.
    h.command(1, 0, h2d(0xec, 0, 0, 0), &[], &[(BUF, 512)], 0);
    h.issue(1, 0);
    assert_eq!(h.read(FB + 0x100 + 0x40 + 4, 3), [1, 0x14, 0xeb]);
    let inquiry = [0x12, 0, 0, 0, 36, 0];
    h.command(1, 0, packet(&inquiry), &inquiry, &[(BUF, 96)], atapi);
    h.issue(1, 0);
    let d = h.read(BUF, 36);
    assert_eq!((d[0], &d[8..12]), (5, &b"KILN"[..]));
    let cap = [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    h.command(1, 0, packet(&cap), &cap, &[(BUF, 8)], atapi);
    h.issue(1, 0);
    assert_eq!(h.read(BUF, 8), [0, 0, 0, 63, 0, 0, 8, 0]);
    let read10 = [0x28, 0, 0, 0, 0, 5, 0, 0, 2, 0];
    h.command(1, 0, packet(&read10), &read10, &[(BUF, 4096)], atapi);
    h.issue(1, 0);
    assert!(h.read(BUF, 2048).iter().all(|&b| b == 5 ^ 0x5a));
    assert!(h.read(BUF + 2048, 2048).iter().all(|&b| b == 6 ^ 0x5a));
    // Past the end, then REQUEST SENSE tells why.
    let past = [0x28, 0, 0, 0, 0, 63, 0, 0, 2, 0];
    h.command(1, 0, packet(&past), &past, &[(BUF, 4096)], atapi);
    h.issue(1, 0);
    assert_eq!(h.pr(1, 0x20), 0x5451);
    let sense = [0x03, 0, 0, 0, 18, 0];
    h.command(1, 0, packet(&sense), &sense, &[(BUF, 18)], atapi);
    h.issue(1, 0);
    let s = h.read(BUF, 18);
    assert_eq!((s[2], s[12]), (5, 0x21));
    // A write is refused as write-protected.
    let write = [0x2a, 0, 0, 0, 0, 1, 0, 0, 1, 0];
    h.command(
        1,
        0,
        packet(&write),
        &write,
        &[(BUF, 2048)],
        atapi | (1 << 6),
    );
    h.issue(1, 0);
    assert_eq!(h.pr(1, 0x20) >> 12, 7, "DATA PROTECT");
    // READ TOC format 0, GET CONFIGURATION, MODE SENSE, GESN.
    let toc = [0x43, 0, 0, 0, 0, 0, 0, 0, 100, 0];
    h.command(1, 0, packet(&toc), &toc, &[(BUF, 100)], atapi);
    h.issue(1, 0);
    assert_eq!(h.read(BUF, 4), [0, 18, 1, 1]);
    assert_eq!(h.read(BUF + 12 + 4, 4), 64u32.to_be_bytes(), "lead-out");
    for cdb in [
        [0x46, 0, 0, 0, 0, 0, 0, 0, 64, 0],
        [0x5a, 0, 0x2a, 0, 0, 0, 0, 0, 64, 0],
        [0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8, 0],
    ] {
        h.command(1, 0, packet(&cdb), &cdb, &[(BUF, 64)], atapi);
        h.issue(1, 0);
        assert_eq!(h.pr(1, 0x20) & 1, 0, "{:#x} succeeds", cdb[0]);
    }
}

#[test]
fn hostile_command_lists_and_prdts_give_a_task_file_error() {
    let mut h = Hba::new();
    let past = MEM as u64 + 0x1000;
    // A PRD entry whose data block is past memory.
    h.command(0, 0, h2d(0x25, 0, 1, 0), &[], &[(past, 512)], 0);
    h.issue(0, 0);
    assert_ne!(h.pr(0, 0x10) & IS_TFES, 0);
    assert_eq!(h.pr(0, 0x20) & 1, 1);
    // A huge PRDT count whose entries run past memory.
    let hdr = h.command(0, 1, h2d(0x25, 0, 0, 0), &[], &[(BUF, 512)], 0);
    h.mem
        .write_obj(5u32 | (0xffff << 16), GuestAddress(hdr))
        .unwrap();
    h.mem
        .write_obj(MEM as u64 - 0x100, GuestAddress(hdr + 8))
        .unwrap();
    h.issue(0, 1);
    assert_ne!(h.pr(0, 0x10) & IS_TFES, 0);
    // A command table outside memory; a command list outside memory.
    let hdr = h.command(0, 2, h2d(0xec, 0, 0, 0), &[], &[(BUF, 512)], 0);
    h.mem.write_obj(!0x7fu64, GuestAddress(hdr + 8)).unwrap();
    h.issue(0, 2);
    assert_ne!(h.pr(0, 0x10) & IS_TFES, 0);
    h.pw(0, 0x00, 0xffff_fc00);
    h.pw(0, 0x04, 0xffff_ffff);
    h.issue(0, 31);
    assert_ne!(h.pr(0, 0x10) & IS_TFES, 0);
    assert_eq!(h.pr(0, 0x38), 0);
    // A short PRDT for a read: refused, nothing written past it.
    h.pw(0, 0x00, CLB as u32);
    h.pw(0, 0x04, 0);
    h.command(0, 3, h2d(0x25, 0, 2, 0), &[], &[(BUF, 512)], 0);
    h.issue(0, 3);
    assert_eq!(h.pr(0, 0x20), 0x0441);
    // Not a H2D FIS.
    let mut f = h2d(0xec, 0, 0, 0);
    f[0] = 0x34;
    h.command(0, 4, f, &[], &[(BUF, 512)], 0);
    h.issue(0, 4);
    assert_ne!(h.pr(0, 0x10) & IS_TFES, 0);
    // A port with no drive.
    h.pw(3, 0x18, 0x11);
    h.pw(3, 0x38, 1);
    assert_ne!(h.pr(3, 0x10) & IS_TFES, 0);
}

#[test]
fn parsers() {
    let mut b = [0u8; 32];
    b[0..4].copy_from_slice(&(5u32 | (1 << 5) | (1 << 6) | (3 << 16)).to_le_bytes());
    b[8..12].copy_from_slice(&0x1234_50ffu32.to_le_bytes());
    b[12..16].copy_from_slice(&1u32.to_le_bytes());
    let hdr = CommandHeader::parse(&b);
    assert_eq!(
        (hdr.cfl, hdr.atapi, hdr.write, hdr.prdtl),
        (5, true, true, 3)
    );
    assert_eq!(hdr.ctba, 0x1_1234_5080, "128-byte aligned");
    let f = H2dFis::parse(&h2d(0x25, 0x0102_0304_0506, 9, 0x1234)).unwrap();
    assert_eq!(
        (f.command, f.lba, f.count, f.features),
        (0x25, 0x0102_0304_0506, 9, 0x1234)
    );
    let mut raw = h2d(0xc8, 0x123456, 1, 0);
    raw[7] = 0x4a;
    assert_eq!(H2dFis::parse(&raw).unwrap().lba28(), 0xa12_3456);
    raw[1] = 0;
    assert!(H2dFis::parse(&raw).is_err(), "C bit clear");
    let rw = ata::decode_rw(&H2dFis::parse(&h2d(0x60, 5, 0, 0)).unwrap()).unwrap();
    assert_eq!(rw.sectors, 65536, "NCQ count 0");
    let rw = ata::decode_rw(&H2dFis::parse(&h2d(0x20, 5, 0, 0)).unwrap()).unwrap();
    assert_eq!((rw.sectors, rw.pio), (256, true));
    // Scatter/gather copies split across blocks.
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
    let sg = SgList {
        ranges: vec![(0x100, 4), (0x200, 4)],
    };
    assert_eq!(sg.write_from(&mem, 2, &[1, 2, 3, 4, 5, 6, 7]), 6);
    let mut out = [0u8; 8];
    assert_eq!(sg.read_into(&mem, 0, &mut out), 8);
    assert_eq!(out, [0, 0, 1, 2, 3, 4, 5, 6]);
}
