//! The transport driven as a guest driver drives it: capability walk,
//! feature negotiation, queue setup, MSI-X, DRIVER_OK, a request served by
//! the real worker thread on a real file, reset, and NEEDS_RESET after a
//! protocol violation.

mod legacy;

use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::devices::virtio::block::T_OUT;
use crate::devices::virtio::testing::RecordingVectors;
use crate::devices::virtio::testing::{
    desc, mem_two_regions, temp_block_device, wait_for, GuestQueue, TestDriver,
};
use crate::devices::virtio::{
    F_VERSION_1, STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK,
    STATUS_NEEDS_RESET,
};

struct Driver {
    dev: VirtioPciDevice,
}

impl TestDriver for Driver {
    fn device(&mut self) -> &mut VirtioPciDevice {
        &mut self.dev
    }
}

impl Driver {
    /// (cfg_type -> offset in BAR), MSI-X capability offset.
    fn caps(&mut self) -> (Vec<(u8, u32)>, usize) {
        let mut out = Vec::new();
        let mut msix = 0;
        let mut ptr = (self.dev.config_read(13) & 0xff) as usize;
        let mut guard = 0;
        while ptr != 0 && guard < 48 {
            guard += 1;
            let r0 = self.dev.config_read(ptr / 4);
            let (id, next) = (r0 & 0xff, ((r0 >> 8) & 0xff) as usize);
            if id == 0x09 {
                let cfg_type = ((r0 >> 24) & 0xff) as u8;
                let bar = self.dev.config_read(ptr / 4 + 1) & 0xff;
                assert_eq!(bar, 0);
                out.push((cfg_type, self.dev.config_read(ptr / 4 + 2)));
            } else if id == 0x11 {
                msix = ptr;
            }
            ptr = next;
        }
        (out, msix)
    }

    fn pci_cfg_cap(&mut self) -> usize {
        self.find_cap(|r0| r0 & 0xff == 0x09 && (r0 >> 24) == 5)
            .expect("no PCI_CFG capability")
    }

    fn setup(&mut self, gq: &GuestQueue, features: u64) -> u8 {
        let st = self.negotiate(features);
        if st & STATUS_FEATURES_OK == 0 {
            return st;
        }
        // MSI-X vectors 0 (queue) and 1 (config), unmasked.
        self.program_msix(2);
        self.w16(0x10, 1);
        self.w16(0x16, 0);
        self.w16(0x18, gq.size);
        self.w16(0x1a, 0);
        self.w64(0x20, gq.desc_table);
        self.w32(0x28, gq.avail as u32);
        self.w32(0x2c, (gq.avail >> 32) as u32);
        self.w64(0x30, gq.used);
        self.w16(0x1c, 1);
        self.w8(
            0x14,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        self.r8(0x14)
    }
}

#[test]
fn a_driver_sets_up_the_device_and_it_serves_requests() {
    let mem = mem_two_regions();
    let (path, blk) = temp_block_device("kiln-virtio-transport", "vdt");
    let vectors = Arc::new(RecordingVectors::default());
    let dev =
        VirtioPciDevice::new(Box::new(blk), mem.clone(), vectors.clone(), 0xc000_0000).unwrap();
    let mut d = Driver { dev };

    // Identity and capabilities.
    assert_eq!(d.dev.config_read(0), 0x1042_1af4);
    assert_eq!(d.dev.config_read(2) >> 8, 0x010000);
    assert_eq!(d.dev.config_read(11), 0x1100_1af4);
    let (caps, msix) = d.caps();
    let mut types: Vec<u8> = caps.iter().map(|c| c.0).collect();
    types.sort();
    assert_eq!(types, vec![1, 2, 3, 4, 5]);
    assert!(caps.contains(&(2, NOTIFY_OFFSET as u32)));
    assert_ne!(msix, 0);
    let ctl = d.dev.config_read(msix / 4) >> 16;
    assert_eq!(ctl & 0x7ff, 1, "two vectors");
    // Enable MSI-X (message control is the upper half of the dword).
    d.dev.config_write(msix / 4, 3, &[0x80]);
    assert_eq!(d.dev.config_read(msix / 4) >> 16 & 0x8000, 0x8000);

    // BAR 0 through the PCI_CFG window: select device features word 1,
    // read it back (VERSION_1).
    let pci_cfg = d.pci_cfg_cap();
    d.dev.config_write(pci_cfg / 4 + 1, 0, &[0]);
    d.dev.config_write(pci_cfg / 4 + 2, 0, &0u32.to_le_bytes());
    d.dev.config_write(pci_cfg / 4 + 3, 0, &4u32.to_le_bytes());
    d.dev.config_write(pci_cfg / 4 + 4, 0, &1u32.to_le_bytes());
    d.dev.config_write(pci_cfg / 4 + 2, 0, &4u32.to_le_bytes());
    assert_eq!(
        d.dev.config_read(pci_cfg / 4 + 4),
        1,
        "VERSION_1 via PCI_CFG"
    );
    // An unaligned or oversized window does nothing.
    d.dev.config_write(pci_cfg / 4 + 2, 0, &3u32.to_le_bytes());
    d.dev
        .config_write(pci_cfg / 4 + 4, 0, &0xffu32.to_le_bytes());
    assert_eq!(d.r32(0), 1);
    d.dev.config_write(pci_cfg / 4 + 3, 0, &8u32.to_le_bytes());
    d.dev.config_write(pci_cfg / 4 + 2, 0, &0u32.to_le_bytes());
    d.dev.config_write(pci_cfg / 4 + 4, 0, &0u32.to_le_bytes());
    assert_eq!(d.r32(0), 1);

    // Features: VERSION_1 is offered and required.
    d.w32(0, 1);
    assert_eq!(d.r32(4) & 1, 1);
    let gq = GuestQueue::new(&mem, 0x1000, 16);
    let st = d.setup(&gq, 1 << 9);
    assert_eq!(st & STATUS_FEATURES_OK, 0, "refused without VERSION_1");
    let st = d.setup(&gq, F_VERSION_1 | 1 << 9);
    assert_eq!(
        st & (STATUS_FEATURES_OK | STATUS_DRIVER_OK),
        STATUS_FEATURES_OK | STATUS_DRIVER_OK
    );
    // Device config: capacity in sectors.
    assert_eq!(d.r32(DEVICE_CFG_OFFSET), 2048);

    // A write request, notified through the notify area.
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&T_OUT.to_le_bytes());
    h[8..16].copy_from_slice(&3u64.to_le_bytes());
    mem.write_slice(&h, GuestAddress(0x10000)).unwrap();
    mem.write_slice(&[0x77u8; 512], GuestAddress(0x11000))
        .unwrap();
    gq.set_desc(0, desc(0x10000, 16, 1, 1));
    gq.set_desc(1, desc(0x11000, 512, 1, 2));
    gq.set_desc(2, desc(0x12000, 1, 2, 0));
    gq.push_avail(0);
    d.w16(NOTIFY_OFFSET, 0);
    assert!(wait_for(|| gq.used_idx() == 1), "request served");
    assert!(
        wait_for(|| vectors.fired.lock().unwrap().contains(&0)),
        "MSI-X vector 0 fired"
    );
    assert_eq!(mem.read_obj::<u8>(GuestAddress(0x12000)).unwrap(), 0);
    let file = std::fs::read(&path).unwrap();
    assert!(file[1536..2048].iter().all(|&b| b == 0x77));
    assert_eq!(
        d.r8(ISR_OFFSET) & 1,
        1,
        "ISR queue bit, cleared by the read"
    );
    assert_eq!(d.r8(ISR_OFFSET), 0);

    // A hostile avail index: NEEDS_RESET and a configuration interrupt.
    gq.set_avail_idx(1 + 17);
    d.w16(NOTIFY_OFFSET, 0);
    assert!(
        wait_for(|| d.r8(0x14) & STATUS_NEEDS_RESET != 0),
        "NEEDS_RESET set"
    );
    assert!(
        wait_for(|| vectors.fired.lock().unwrap().contains(&1)),
        "config vector fired"
    );

    // Reset stops the worker and clears the status; setup works again.
    d.w8(0x14, 0);
    assert_eq!(d.r8(0x14), 0);
    let gq = GuestQueue::new(&mem, 0x1000, 16);
    let st = d.setup(&gq, F_VERSION_1);
    assert_eq!(st & STATUS_NEEDS_RESET, 0);
    assert_ne!(st & STATUS_DRIVER_OK, 0);
    gq.set_desc(0, desc(0x10000, 16, 1, 1));
    gq.set_desc(1, desc(0x11000, 512, 1, 2));
    gq.set_desc(2, desc(0x12000, 1, 2, 0));
    gq.push_avail(0);
    d.w16(NOTIFY_OFFSET, 0);
    assert!(wait_for(|| gq.used_idx() == 1), "served after reset");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn odd_accesses_are_harmless() {
    let mem = mem_two_regions();
    let rng = crate::devices::virtio::rng::RngDevice::new().unwrap();
    let vectors = Arc::new(RecordingVectors::default());
    let mut dev = VirtioPciDevice::new(Box::new(rng), mem, vectors, 0).unwrap();
    assert_eq!(dev.config_read(0), 0x1044_1af4);
    let mut b = [0u8; 8];
    for off in [
        0u64,
        3,
        0x13,
        0x1001,
        0x2fff,
        0x3ffe,
        0x4fff,
        0x5ff8,
        BAR_SIZE - 1,
        BAR_SIZE,
        u64::MAX,
    ] {
        for len in [1usize, 2, 4, 8] {
            dev.bar_read(0, off, &mut b[..len]);
            dev.bar_write(0, off, &b[..len]);
        }
    }
    dev.bar_read(3, 0, &mut b[..4]);
    assert_eq!(&b[..4], &[0xff; 4]);
    // DRIVER_OK without queues or features: not activated, no panic.
    dev.bar_write(0, 0x14, &[0x0f]);
    let mut s = [0u8; 1];
    dev.bar_read(0, 0x14, &mut s);
    assert_eq!(s[0] & STATUS_FEATURES_OK, 0);
}
