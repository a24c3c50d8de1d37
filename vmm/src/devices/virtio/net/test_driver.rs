//! A test driver of a virtio-net NIC behind the virtio-pci transport: it
//! negotiates, programs MSI-X and the queues in guest memory, offers
//! receive buffers, transmits, and sends control commands, as a guest
//! driver would (used by `mq_tests.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};

use crate::devices::pci::PciDevice;
use crate::devices::virtio::msix::tests::RecordingVectors;
use crate::devices::virtio::test_utils::{desc, GuestQueue};
use crate::devices::virtio::transport::{VirtioPciDevice, DEVICE_CFG_OFFSET, MSIX_TABLE_OFFSET};
use crate::devices::virtio::{
    STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK,
};
use crate::memory::GuestMemoryMmap;

use super::NetDevice;

pub(super) const QSIZE: u16 = 16;
pub(super) const BUF: u64 = 0x800;

pub(super) fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// A driver of the NIC: the transport, its queues in guest memory.
pub(super) struct Driver<'a> {
    pub dev: VirtioPciDevice,
    mem: &'a GuestMemoryMmap,
    pub queues: Vec<GuestQueue<'a>>,
    pub vectors: Arc<RecordingVectors>,
    /// Next free byte of the control queue's command area.
    pub ctrl_next: u16,
}

impl<'a> Driver<'a> {
    pub(super) fn new(mem: &'a GuestMemoryMmap, net: NetDevice) -> Self {
        let vectors = Arc::new(RecordingVectors::default());
        let dev = VirtioPciDevice::new(Box::new(net), mem.clone(), vectors.clone(), 0).unwrap();
        Driver {
            dev,
            mem,
            queues: Vec::new(),
            vectors,
            ctrl_next: 0,
        }
    }
    pub(super) fn w8(&mut self, off: u64, v: u8) {
        self.dev.bar_write(0, off, &[v]);
    }
    pub(super) fn w16(&mut self, off: u64, v: u16) {
        self.dev.bar_write(0, off, &v.to_le_bytes());
    }
    pub(super) fn w32(&mut self, off: u64, v: u32) {
        self.dev.bar_write(0, off, &v.to_le_bytes());
    }
    pub(super) fn r8(&mut self, off: u64) -> u8 {
        let mut b = [0u8; 1];
        self.dev.bar_read(0, off, &mut b);
        b[0]
    }
    pub(super) fn r16(&mut self, off: u64) -> u16 {
        let mut b = [0u8; 2];
        self.dev.bar_read(0, off, &mut b);
        u16::from_le_bytes(b)
    }
    pub(super) fn features(&mut self) -> u64 {
        self.w32(0, 0);
        let mut b = [0u8; 4];
        self.dev.bar_read(0, 4, &mut b);
        let lo = u32::from_le_bytes(b);
        self.w32(0, 1);
        self.dev.bar_read(0, 4, &mut b);
        u64::from(lo) | u64::from(u32::from_le_bytes(b)) << 32
    }
    pub(super) fn generation(&mut self) -> u8 {
        self.r8(0x15)
    }
    /// Configuration space: (status, max_virtqueue_pairs).
    pub(super) fn config(&mut self) -> (u16, u16) {
        (
            self.r16(DEVICE_CFG_OFFSET + 6),
            self.r16(DEVICE_CFG_OFFSET + 8),
        )
    }

    pub(super) fn enable_msix(&mut self) {
        let mut ptr = (self.dev.config_read(13) & 0xff) as usize;
        while ptr != 0 {
            let r0 = self.dev.config_read(ptr / 4);
            if r0 & 0xff == 0x11 {
                self.dev.config_write(ptr / 4, 3, &[0x80]);
                return;
            }
            ptr = ((r0 >> 8) & 0xff) as usize;
        }
        panic!("no MSI-X capability");
    }

    /// Negotiate `features`, set up `n` queues (queue q on vector q,
    /// configuration changes on vector `n`), DRIVER_OK.
    pub(super) fn setup(&mut self, features: u64, n: usize) -> u8 {
        self.enable_msix();
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
        assert_ne!(self.r8(0x14) & STATUS_FEATURES_OK, 0, "features accepted");
        for v in 0..=n as u64 {
            let e = MSIX_TABLE_OFFSET + 16 * v;
            self.w32(e, 0xfee0_0000);
            self.w32(e + 4, 0);
            self.w32(e + 8, 0x40 + v as u32);
            self.w32(e + 12, 0);
        }
        self.w16(0x10, n as u16);
        self.queues.clear();
        for q in 0..n {
            let gq = GuestQueue::new(self.mem, 0x1000 + 0x1000 * q as u64, QSIZE);
            self.w16(0x16, q as u16);
            self.w16(0x18, QSIZE);
            self.w16(0x1a, q as u16);
            for (off, v) in [(0x20, gq.desc_table), (0x28, gq.avail), (0x30, gq.used)] {
                self.w32(off, v as u32);
                self.w32(off + 4, (v >> 32) as u32);
            }
            self.w16(0x1c, 1);
            self.queues.push(gq);
        }
        self.w8(
            0x14,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        self.r8(0x14)
    }

    pub(super) fn buf(q: usize, i: u16) -> u64 {
        0x200000 + 0x10000 * q as u64 + BUF * u64::from(i)
    }

    pub(super) fn notify(&self, q: usize) {
        self.dev.queue_evts()[q].write(1).unwrap();
    }

    /// Offer every receive buffer of receive queue `q`.
    pub(super) fn offer_rx(&mut self, q: usize) {
        for i in 0..QSIZE {
            self.queues[q].set_desc(i, desc(Self::buf(q, i), BUF as u32, 2, 0));
            self.queues[q].push_avail(i);
        }
        self.notify(q);
    }

    /// Frames received on receive queue `q` so far.
    pub(super) fn received(&self, q: usize) -> Vec<Vec<u8>> {
        let gq = &self.queues[q];
        (0..gq.used_idx())
            .map(|u| {
                let (id, len) = gq.used_elem(u);
                let mut f = vec![0u8; len as usize];
                self.mem
                    .read_slice(&mut f, GuestAddress(Self::buf(q, id as u16)))
                    .unwrap();
                f
            })
            .collect()
    }

    /// Transmit `frame` on transmit queue `q` (descriptor `slot`).
    pub(super) fn send(&mut self, q: usize, slot: u16, frame: &[u8]) {
        let at = Self::buf(q, slot);
        self.mem.write_slice(frame, GuestAddress(at)).unwrap();
        self.queues[q].set_desc(slot, desc(at, frame.len() as u32, 0, 0));
        self.queues[q].push_avail(slot);
        self.notify(q);
    }

    /// Send control command `cmd` (readable) with `ack_len` writable bytes
    /// on queue `q`; the ack byte (None: used length 0) once it is used.
    pub(super) fn command(&mut self, q: usize, cmd: &[u8], ack_len: u32) -> Option<u8> {
        let slot = self.ctrl_next % QSIZE;
        self.ctrl_next += 2;
        let at = Self::buf(q, slot);
        self.mem.write_slice(cmd, GuestAddress(at)).unwrap();
        self.mem
            .write_slice(&[0xaa; 8], GuestAddress(at + 0x400))
            .unwrap();
        let gq = &self.queues[q];
        let before = gq.used_idx();
        if ack_len == 0 {
            gq.set_desc(slot, desc(at, cmd.len() as u32, 0, 0));
        } else {
            gq.set_desc(slot, desc(at, cmd.len() as u32, 1, slot + 1));
            gq.set_desc(slot + 1, desc(at + 0x400, ack_len, 2, 0));
        }
        gq.push_avail(slot);
        self.notify(q);
        let gq = &self.queues[q];
        let ok = wait_for(|| gq.used_idx() != before);
        assert!(ok, "command {cmd:?} answered; status {:#x}", self.r8(0x14));
        let (id, len) = gq.used_elem(before);
        assert_eq!(id, u32::from(slot));
        if len == 0 {
            return None;
        }
        assert_eq!(len, 1);
        let ack: u8 = self
            .mem
            .read_obj(GuestAddress(at + 0x400 + u64::from(ack_len) - 1))
            .unwrap();
        Some(ack)
    }
}
