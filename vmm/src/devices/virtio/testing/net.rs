//! A driver of a whole virtio-net NIC behind the virtio-pci transport: it
//! negotiates, programs MSI-X and the queues in guest memory, offers
//! receive buffers, transmits, and sends control commands, as a guest
//! driver would (`net/tests/mq.rs`); and the frame those tests send.

use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress};

use super::{desc, wait_for, GuestQueue, RecordingVectors, TestDriver};
use crate::devices::pci::PciDevice;
use crate::devices::virtio::net::NetDevice;
use crate::devices::virtio::transport::{VirtioPciDevice, DEVICE_CFG_OFFSET};
use crate::devices::virtio::{
    STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK,
};
use crate::devices::GuestMemoryMmap;

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

/// The size of each of the driver's queues.
pub const NET_QSIZE: u16 = 16;
/// The size of each buffer: queue q's buffer i is at [`NetDriver::buf`].
pub const NET_BUF: u64 = 0x800;

/// A driver of the NIC: the transport, its queues in guest memory.
pub struct NetDriver<'a> {
    pub dev: VirtioPciDevice,
    mem: &'a GuestMemoryMmap,
    pub queues: Vec<GuestQueue<'a>>,
    pub vectors: Arc<RecordingVectors>,
    /// Next free byte of the control queue's command area.
    pub ctrl_next: u16,
}

impl TestDriver for NetDriver<'_> {
    fn device(&mut self) -> &mut VirtioPciDevice {
        &mut self.dev
    }
}

impl<'a> NetDriver<'a> {
    pub fn new(mem: &'a GuestMemoryMmap, net: NetDevice) -> Self {
        let vectors = Arc::new(RecordingVectors::default());
        let dev = VirtioPciDevice::new(Box::new(net), mem.clone(), vectors.clone(), 0).unwrap();
        NetDriver {
            dev,
            mem,
            queues: Vec::new(),
            vectors,
            ctrl_next: 0,
        }
    }

    pub fn features(&mut self) -> u64 {
        self.w32(0, 0);
        let lo = self.r32(4);
        self.w32(0, 1);
        u64::from(lo) | u64::from(self.r32(4)) << 32
    }
    pub fn generation(&mut self) -> u8 {
        self.r8(0x15)
    }
    /// Configuration space: (status, max_virtqueue_pairs).
    pub fn config(&mut self) -> (u16, u16) {
        (
            self.r16(DEVICE_CFG_OFFSET + 6),
            self.r16(DEVICE_CFG_OFFSET + 8),
        )
    }

    pub fn enable_msix(&mut self) {
        let msix = self
            .find_cap(|r0| r0 & 0xff == 0x11)
            .expect("no MSI-X capability");
        self.dev.config_write(msix / 4, 3, &[0x80]);
    }

    /// Negotiate `features`, set up `n` queues (queue q on vector q,
    /// configuration changes on vector `n`), DRIVER_OK.
    pub fn setup(&mut self, features: u64, n: usize) -> u8 {
        self.enable_msix();
        let st = self.negotiate(features);
        assert_ne!(st & STATUS_FEATURES_OK, 0, "features accepted");
        self.program_msix(n as u64 + 1);
        self.w16(0x10, n as u16);
        self.queues.clear();
        for q in 0..n {
            let gq = GuestQueue::new(self.mem, 0x1000 + 0x1000 * q as u64, NET_QSIZE);
            self.w16(0x16, q as u16);
            self.w16(0x18, NET_QSIZE);
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

    pub fn buf(q: usize, i: u16) -> u64 {
        0x200000 + 0x10000 * q as u64 + NET_BUF * u64::from(i)
    }

    pub fn notify(&self, q: usize) {
        self.dev.queue_evts()[q].write(1).unwrap();
    }

    /// Offer every receive buffer of receive queue `q`.
    pub fn offer_rx(&mut self, q: usize) {
        for i in 0..NET_QSIZE {
            self.queues[q].set_desc(i, desc(Self::buf(q, i), NET_BUF as u32, 2, 0));
            self.queues[q].push_avail(i);
        }
        self.notify(q);
    }

    /// Frames received on receive queue `q` so far.
    pub fn received(&self, q: usize) -> Vec<Vec<u8>> {
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
    pub fn send(&mut self, q: usize, slot: u16, frame: &[u8]) {
        let at = Self::buf(q, slot);
        self.mem.write_slice(frame, GuestAddress(at)).unwrap();
        self.queues[q].set_desc(slot, desc(at, frame.len() as u32, 0, 0));
        self.queues[q].push_avail(slot);
        self.notify(q);
    }

    /// Send control command `cmd` (readable) with `ack_len` writable bytes
    /// on queue `q`; the ack byte (None: used length 0) once it is used.
    pub fn command(&mut self, q: usize, cmd: &[u8], ack_len: u32) -> Option<u8> {
        let slot = self.ctrl_next % NET_QSIZE;
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
