//! The device manager's firmware part: the OVMF variable store's CFI
//! flash. `arch::x86_64::firmware` maps the store as a read-only KVM slot
//! ([`FlashStore`]); this makes the [`PflashDevice`] that answers its
//! writes (and, out of read-array mode, its reads) on the MMIO bus, with
//! [`KvmArrayMapping`] showing or hiding the slot.

use std::sync::{Arc, Mutex};

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_READONLY};
use kvm_ioctls::VmFd;

use super::interrupts::{dup_vm_fd, InterruptError};
use super::DeviceManager;
use crate::arch::x86_64::firmware::{Firmware, FlashStore};
use crate::devices::bus::BusError;
use crate::devices::legacy::pflash::{ArrayMapping, MmapStore, PflashDevice};

#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    #[error("duplicating the VM file descriptor for the flash device")]
    DupVm(#[source] InterruptError),
    #[error("placing the flash on the MMIO bus")]
    Bus(#[source] BusError),
}

/// The flash device type of the variable store.
pub type VarsFlash = PflashDevice<MmapStore, KvmArrayMapping>;

/// Shows or hides the variable store's read-only KVM slot.
pub struct KvmArrayMapping {
    vm: VmFd,
    slot: u32,
    guest_addr: u64,
    host_addr: u64,
    size: u64,
}

impl ArrayMapping for KvmArrayMapping {
    fn set_mapped(&mut self, mapped: bool) {
        let desc = kvm_userspace_memory_region {
            slot: self.slot,
            flags: KVM_MEM_READONLY,
            guest_phys_addr: self.guest_addr,
            // Size 0 deletes the slot.
            memory_size: if mapped { self.size } else { 0 },
            userspace_addr: self.host_addr,
        };
        // SAFETY: the host range is the store's mapping, owned by the
        // flash device that owns this mapping object, so it outlives the
        // slot; the guest range is the store's, clear of RAM.
        if let Err(e) = unsafe { self.vm.set_user_memory_region(desc) } {
            log::error!("pflash: cannot change the variable store slot (mapped {mapped}): {e}");
        }
    }
}

/// The flash device of a mapped variable store (taking it from `fw`), or
/// None when the store is plain memory or absent.
pub fn vars_flash(
    vm: &VmFd,
    fw: &mut Firmware,
) -> Result<Option<Arc<Mutex<VarsFlash>>>, FlashError> {
    let Some(FlashStore {
        slot,
        guest_addr,
        map,
    }) = fw.flash_store.take()
    else {
        return Ok(None);
    };
    let mapping = KvmArrayMapping {
        vm: dup_vm_fd(vm).map_err(FlashError::DupVm)?,
        slot,
        guest_addr,
        host_addr: map.as_ptr() as u64,
        size: map.size() as u64,
    };
    Ok(Some(Arc::new(Mutex::new(PflashDevice::new(
        MmapStore::new(map),
        mapping,
    )))))
}

impl DeviceManager {
    /// Firmware boot: put the variable store's flash (if `fw` mapped one)
    /// on the MMIO bus, before the vCPUs take their copies of the bus.
    pub fn attach_firmware(&mut self, vm: &VmFd, fw: &mut Firmware) -> Result<(), FlashError> {
        let Some((addr, size)) = fw.vars.as_ref().map(|v| (v.guest_addr, v.size)) else {
            return Ok(());
        };
        let Some(flash) = vars_flash(vm, fw)? else {
            return Ok(());
        };
        self.mmio
            .insert(flash.clone(), addr, size)
            .map_err(FlashError::Bus)?;
        self.flash = Some(flash);
        Ok(())
    }
}
