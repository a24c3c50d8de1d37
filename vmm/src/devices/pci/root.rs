//! Bus 0 and its host bridge.
//!
//! [`PciRoot`] holds one device per slot (function 0) and, for a
//! multi-function device such as the PIIX3/PIIX4 south bridge, further
//! functions 1..7 ([`PciRoot::add_function`]); empty functions read all
//! ones, as nothing answers there. Slot 0 is the
//! host bridge, whose identity ([`HostBridgeIdentity`]) is chosen at
//! creation: Q35's MCH by default, i440FX's PMC as the alternative that
//! firmware may prefer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::configuration::{PciHeader, NUM_EXT_CONFIG_REGS};
use super::{BarMove, BarMoveHandler, HeaderOnlyFunction, PciError, SharedPciDevice};

/// Devices per bus.
pub const NUM_SLOTS: usize = 32;
/// Functions per device.
pub const NUM_FUNCTIONS: u8 = 8;

/// The IDs the host bridge shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostBridgeIdentity {
    pub vendor_id: u16,
    pub device_id: u16,
    pub class_code: u32,
    pub revision_id: u8,
}

impl HostBridgeIdentity {
    /// Intel 82G33/Q35 MCH, as QEMU's `q35` machine.
    pub const Q35: Self = HostBridgeIdentity {
        vendor_id: 0x8086,
        device_id: 0x29c0,
        class_code: 0x060000,
        revision_id: 0,
    };
    /// Intel 440FX PMC, as QEMU's `pc` machine.
    pub const I440FX: Self = HostBridgeIdentity {
        vendor_id: 0x8086,
        device_id: 0x1237,
        class_code: 0x060000,
        revision_id: 2,
    };
}

/// The host bridge at 00:00.0: a header, no BARs. Its device-specific
/// registers read back what firmware writes (PAM, SMRAM, PCIEXBAR on a
/// real chipset) but have no effect.
pub fn host_bridge(id: HostBridgeIdentity) -> HeaderOnlyFunction {
    HeaderOnlyFunction::new(
        &PciHeader {
            vendor_id: id.vendor_id,
            device_id: id.device_id,
            class_code: id.class_code,
            revision_id: id.revision_id,
            subsystem_vendor_id: 0,
            subsystem_id: 0,
        },
        false,
    )
}

/// PCI bus 0.
pub struct PciRoot {
    slots: [Option<SharedPciDevice>; NUM_SLOTS],
    /// Functions 1..7, by (slot, function).
    functions: BTreeMap<(u8, u8), SharedPciDevice>,
    host_bridge: HostBridgeIdentity,
    bar_handlers: Vec<Arc<dyn BarMoveHandler>>,
}

impl Default for PciRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl PciRoot {
    /// A bus with a Q35 host bridge.
    pub fn new() -> Self {
        Self::with_host_bridge(HostBridgeIdentity::Q35)
    }

    pub fn with_host_bridge(id: HostBridgeIdentity) -> Self {
        let mut slots: [Option<SharedPciDevice>; NUM_SLOTS] = std::array::from_fn(|_| None);
        slots[0] = Some(Arc::new(Mutex::new(host_bridge(id))));
        PciRoot {
            slots,
            functions: BTreeMap::new(),
            host_bridge: id,
            bar_handlers: Vec::new(),
        }
    }

    pub fn host_bridge(&self) -> HostBridgeIdentity {
        self.host_bridge
    }

    /// Put `device` in the first free slot; returns the slot (device
    /// number).
    pub fn add_device(&mut self, device: SharedPciDevice) -> Result<u8, PciError> {
        let slot = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(PciError::NoFreeSlot)?;
        self.slots[slot] = Some(device);
        Ok(slot as u8)
    }

    /// Put `device` in `slot`.
    pub fn add_device_at(&mut self, slot: u8, device: SharedPciDevice) -> Result<(), PciError> {
        match self.slots.get_mut(usize::from(slot)) {
            Some(s @ None) => {
                *s = Some(device);
                Ok(())
            }
            _ => Err(PciError::SlotUnavailable(slot)),
        }
    }

    /// Put `device` at function `function` of `slot` (function 0 is the
    /// slot itself, as [`Self::add_device_at`]). Function 0's header must
    /// say multi-function for the guest to look at the others.
    pub fn add_function(
        &mut self,
        slot: u8,
        function: u8,
        device: SharedPciDevice,
    ) -> Result<(), PciError> {
        if function == 0 {
            return self.add_device_at(slot, device);
        }
        if usize::from(slot) >= NUM_SLOTS
            || function >= NUM_FUNCTIONS
            || self.functions.contains_key(&(slot, function))
        {
            return Err(PciError::SlotUnavailable(slot));
        }
        self.functions.insert((slot, function), device);
        Ok(())
    }

    pub fn device(&self, slot: u8) -> Option<SharedPciDevice> {
        self.slots.get(usize::from(slot))?.clone()
    }

    /// Add one more handler told about BAR moves (each device family
    /// registers its own; a handler ignores slots it does not know).
    pub fn set_bar_move_handler(&mut self, handler: Arc<dyn BarMoveHandler>) {
        self.bar_handlers.push(handler);
    }

    pub(super) fn bar_move_handlers(&self) -> Vec<Arc<dyn BarMoveHandler>> {
        self.bar_handlers.clone()
    }

    fn function(&self, bus: u8, slot: u8, function: u8) -> Option<&SharedPciDevice> {
        if bus != 0 {
            return None;
        }
        if function != 0 {
            return self.functions.get(&(slot, function));
        }
        self.slots.get(usize::from(slot))?.as_ref()
    }

    /// Read register `reg_idx` of bus:slot.function; all ones if nothing is
    /// there.
    pub fn config_read(&self, bus: u8, slot: u8, function: u8, reg_idx: usize) -> u32 {
        if reg_idx >= NUM_EXT_CONFIG_REGS {
            return u32::MAX;
        }
        match self.function(bus, slot, function) {
            Some(dev) => dev
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .config_read(reg_idx),
            None => u32::MAX,
        }
    }

    /// Write to bus:slot.function; `offset + data.len()` must stay within
    /// the dword (else ignored). Returns the slot and BAR move, if the
    /// write moved a BAR; the caller tells the handler once the root is
    /// unlocked.
    pub fn config_write(
        &self,
        bus: u8,
        slot: u8,
        function: u8,
        reg_idx: usize,
        offset: u64,
        data: &[u8],
    ) -> Option<(u8, BarMove)> {
        if reg_idx >= NUM_EXT_CONFIG_REGS
            || !matches!(data.len(), 1 | 2 | 4)
            || offset.saturating_add(data.len() as u64) > 4
        {
            return None;
        }
        let dev = self.function(bus, slot, function)?;
        let mv = dev
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .config_write(reg_idx, offset, data)?;
        Some((slot, mv))
    }
}
