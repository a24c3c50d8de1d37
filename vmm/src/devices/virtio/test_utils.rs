//! Test helpers: guest memory with awkward regions, a split virtqueue
//! laid out in it that tests fill descriptor by descriptor, as a driver
//! (or a hostile one) would, and [`TestDriver`], a driver's register
//! access to a virtio-pci device.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_block::{open_disk, DiskFormat, OpenOptions};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use crate::devices::pci::PciDevice;
use crate::devices::virtio::block::{BlockDevice, BlockOptions};
use crate::devices::virtio::transport::{VirtioPciDevice, MSIX_TABLE_OFFSET};
use crate::devices::virtio::{STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_FEATURES_OK};
use crate::memory::GuestMemoryMmap;

/// Whether `cond` holds within 5 s (polled every 2 ms): for what a worker
/// thread does.
pub fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

/// A virtio-blk device named `id` on a fresh 1 MiB raw file in the
/// temporary directory, `name` and the process id; the caller removes it.
pub fn temp_block_device(name: &str, id: &str) -> (PathBuf, BlockDevice) {
    let path = std::env::temp_dir().join(format!("{name}-{}.raw", std::process::id()));
    std::fs::File::create(&path)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let disk = open_disk(&path, DiskFormat::Raw, OpenOptions::default()).unwrap();
    let blk = BlockDevice::new(Arc::from(disk), BlockOptions::default(), id.into());
    (path, blk)
}

/// The MAC address of the test drivers' NICs.
pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x57];

/// A virtio-net header (`hdr_len` zero bytes) and an ARP request for
/// 10.9.1.1 from [`GUEST_MAC`] at 10.9.1.2, padded to the Ethernet minimum.
pub fn arp_request(hdr_len: usize) -> Vec<u8> {
    let mut f = vec![0u8; hdr_len];
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[10, 9, 1, 2]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[10, 9, 1, 1]);
    f.resize(hdr_len + 60, 0);
    f
}

/// A test driver's access to a virtio-pci device's registers, as a guest
/// driver makes it: little-endian accesses to one BAR, the capability
/// list, and the modern transport's negotiation and MSI-X table.
pub trait TestDriver {
    /// The device driven.
    fn device(&mut self) -> &mut VirtioPciDevice;

    /// The BAR the registers are in.
    fn bar(&self) -> usize {
        0
    }

    fn w(&mut self, off: u64, data: &[u8]) {
        let bar = self.bar();
        self.device().bar_write(bar, off, data);
    }
    fn w8(&mut self, off: u64, v: u8) {
        self.w(off, &[v]);
    }
    fn w16(&mut self, off: u64, v: u16) {
        self.w(off, &v.to_le_bytes());
    }
    fn w32(&mut self, off: u64, v: u32) {
        self.w(off, &v.to_le_bytes());
    }
    fn w64(&mut self, off: u64, v: u64) {
        self.w(off, &v.to_le_bytes());
    }
    fn r<const N: usize>(&mut self, off: u64) -> [u8; N] {
        let bar = self.bar();
        let mut b = [0u8; N];
        self.device().bar_read(bar, off, &mut b);
        b
    }
    fn r8(&mut self, off: u64) -> u8 {
        self.r::<1>(off)[0]
    }
    fn r16(&mut self, off: u64) -> u16 {
        u16::from_le_bytes(self.r(off))
    }
    fn r32(&mut self, off: u64) -> u32 {
        u32::from_le_bytes(self.r(off))
    }

    /// The offset of the first capability whose first dword satisfies
    /// `is`, walking the list from the capabilities pointer.
    fn find_cap(&mut self, is: impl Fn(u32) -> bool) -> Option<usize> {
        let mut ptr = (self.device().config_read(13) & 0xff) as usize;
        while ptr != 0 {
            let r0 = self.device().config_read(ptr / 4);
            if is(r0) {
                return Some(ptr);
            }
            ptr = ((r0 >> 8) & 0xff) as usize;
        }
        None
    }

    /// Modern transport: reset, acknowledge, offer `features`, set
    /// FEATURES_OK; the device status read back.
    fn negotiate(&mut self, features: u64) -> u8 {
        self.w8(0x14, 0);
        self.w8(0x14, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        self.w32(0x08, 0);
        self.w32(0x0c, features as u32);
        self.w32(0x08, 1);
        self.w32(0x0c, (features >> 32) as u32);
        self.w8(
            0x14,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        self.r8(0x14)
    }

    /// MSI-X table entries 0..`n`: vector v delivers 0x40 + v, unmasked.
    fn program_msix(&mut self, n: u64) {
        for v in 0..n {
            let e = MSIX_TABLE_OFFSET + 16 * v;
            self.w32(e, 0xfee0_0000);
            self.w32(e + 4, 0);
            self.w32(e + 8, 0x40 + v as u32);
            self.w32(e + 12, 0);
        }
    }
}

/// Guest memory: [0, 0x40000), a gap, then [0x100000, 0x140000) and
/// [0x140000, 0x600000), two regions that touch.
pub fn mem_two_regions() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x40000),
        (GuestAddress(0x100000), 0x40000),
        (GuestAddress(0x140000), 0x4c0000),
    ])
    .unwrap()
}

/// A descriptor as 16 raw bytes.
pub fn desc(addr: u64, len: u32, flags: u16, next: u16) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[0..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[12..14].copy_from_slice(&flags.to_le_bytes());
    d[14..16].copy_from_slice(&next.to_le_bytes());
    d
}

/// A split queue in guest memory: descriptor table at `base`, available
/// ring after it, used ring after that (4-aligned).
pub struct GuestQueue<'a> {
    pub mem: &'a GuestMemoryMmap,
    pub size: u16,
    pub desc_table: u64,
    pub avail: u64,
    pub used: u64,
    avail_idx: std::cell::Cell<u16>,
}

impl<'a> GuestQueue<'a> {
    pub fn new(mem: &'a GuestMemoryMmap, base: u64, size: u16) -> Self {
        Self::with_align(mem, base, size, 4)
    }

    /// A queue in the legacy (virtio 0.9.5) layout: the used ring at the
    /// next 4096-byte boundary, as a legacy driver places it at a PFN.
    pub fn legacy(mem: &'a GuestMemoryMmap, base: u64, size: u16) -> Self {
        Self::with_align(mem, base, size, 4096)
    }

    fn with_align(mem: &'a GuestMemoryMmap, base: u64, size: u16, align: u64) -> Self {
        let avail = base + 16 * u64::from(size);
        let used = (avail + 6 + 2 * u64::from(size)).next_multiple_of(align);
        let q = GuestQueue {
            mem,
            size,
            desc_table: base,
            avail,
            used,
            avail_idx: std::cell::Cell::new(0),
        };
        // Clear the rings.
        let end = used + 6 + 8 * u64::from(size);
        mem.write_slice(&vec![0u8; (end - base) as usize], GuestAddress(base))
            .unwrap();
        q
    }

    pub fn set_desc(&self, i: u16, d: [u8; 16]) {
        self.write_desc_at(self.desc_table, i, d);
    }

    pub fn write_desc_at(&self, table: u64, i: u16, d: [u8; 16]) {
        self.mem
            .write_slice(&d, GuestAddress(table + 16 * u64::from(i)))
            .unwrap();
    }

    /// Offer the chain at `head`.
    pub fn push_avail(&self, head: u16) {
        let idx = self.avail_idx.get();
        let slot = u64::from(idx % self.size);
        self.mem
            .write_obj(head, GuestAddress(self.avail + 4 + 2 * slot))
            .unwrap();
        self.set_avail_idx(idx.wrapping_add(1));
    }

    /// Write the available index directly (a hostile driver may lie).
    pub fn set_avail_idx(&self, idx: u16) {
        self.avail_idx.set(idx);
        self.mem
            .write_obj(idx, GuestAddress(self.avail + 2))
            .unwrap();
    }

    /// Chains offered and not yet used.
    pub fn free(&self) -> u16 {
        self.avail_idx.get().wrapping_sub(self.used_idx())
    }

    pub fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(self.used + 2)).unwrap()
    }

    /// (id, len) of used element `i`.
    pub fn used_elem(&self, i: u16) -> (u32, u32) {
        let at = self.used + 4 + 8 * u64::from(i % self.size);
        (
            self.mem.read_obj(GuestAddress(at)).unwrap(),
            self.mem.read_obj(GuestAddress(at + 4)).unwrap(),
        )
    }

    /// A device-side queue configured as a driver would.
    pub fn queue(&self) -> Queue {
        let mut q = Queue::new(self.size).unwrap();
        q.set_size(self.size);
        q.set_desc_table_address(
            Some(self.desc_table as u32),
            Some((self.desc_table >> 32) as u32),
        );
        q.set_avail_ring_address(Some(self.avail as u32), Some((self.avail >> 32) as u32));
        q.set_used_ring_address(Some(self.used as u32), Some((self.used >> 32) as u32));
        q.set_ready(true);
        assert!(q.is_valid(self.mem));
        q
    }
}
