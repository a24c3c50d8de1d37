//! A driver's view of a virtio-pci function: [`TestDriver`], register
//! access to one BAR and the modern transport's negotiation and MSI-X
//! table; [`RecordingVectors`], MSI-X vectors that record what the device
//! routes and fires instead of reaching KVM.

use std::io;
use std::sync::Mutex;

use crate::devices::pci::PciDevice;
use crate::devices::virtio::msix::{MsiMessage, MsiVectors};
use crate::devices::virtio::transport::{VirtioPciDevice, MSIX_TABLE_OFFSET};
use crate::devices::virtio::{STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_FEATURES_OK};

/// Records routes and triggers.
#[derive(Default)]
pub struct RecordingVectors {
    pub routes: Mutex<Vec<(u16, Option<MsiMessage>)>>,
    pub fired: Mutex<Vec<u16>>,
}

impl MsiVectors for RecordingVectors {
    fn route(&self, vector: u16, msg: Option<MsiMessage>) -> io::Result<()> {
        self.routes.lock().unwrap().push((vector, msg));
        Ok(())
    }
    fn trigger(&self, vector: u16) -> io::Result<()> {
        self.fired.lock().unwrap().push(vector);
        Ok(())
    }
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
