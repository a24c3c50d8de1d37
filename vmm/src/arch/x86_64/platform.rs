//! The plain description of a PC that the ACPI tables (`acpi/`) and the
//! firmware's fw_cfg contents (`fw_cfg/`) are built from: what the device
//! manager built (its PM block, reset register, PCI slots and their INTx
//! wiring) and where (ports, windows), as numbers. arch/ never looks at a
//! device; `device_manager::platform::describe` fills this from the
//! devices it made.

/// The ACPI fixed-hardware PM register block (PM1a event and control, PM
/// timer), at I/O port `base`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PmBlock {
    pub base: u16,
    /// Ports the block occupies from `base`.
    pub len: u8,
    /// Offsets from `base` and lengths (bytes) of each register block.
    pub evt_offset: u16,
    pub evt_len: u8,
    pub cnt_offset: u16,
    pub cnt_len: u8,
    pub tmr_offset: u16,
    pub tmr_len: u8,
    /// The PM timer counts 32 bits (else 24).
    pub tmr_32bit: bool,
    /// The power button is the fixed-hardware one (PM1 status bit 8).
    pub fixed_power_button: bool,
    /// SLP_TYP that powers the machine off (\_S5).
    pub s5_sleep_type: u8,
}

/// The reset register: writing `value` to I/O port `port` resets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetRegister {
    pub port: u16,
    pub value: u8,
}

/// One INTx wire: `slot`'s `pin` (0 = INTA#, as a _PRT counts) raises
/// `gsi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciIntx {
    pub slot: u8,
    pub pin: u8,
    pub gsi: u32,
}

/// An address range: `start` and `size` bytes (or ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: u64,
    pub size: u64,
}

impl Window {
    /// The last address in the window.
    pub fn last(&self) -> u64 {
        self.start + self.size - 1
    }
}

/// A TPM 2.0 with the CRB interface (the DSDT's MSFT0101 device and the
/// TPM2 table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TpmCrbInfo {
    /// The MMIO window (registers and buffer).
    pub window: Window,
    /// The control area's address (CTRL_REQ), the TPM2 table's.
    pub control_area: u64,
    /// Bytes of event log the firmware gets (0: no log, direct boot).
    pub log_size: u32,
}

/// A PC as its tables describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiPlatform {
    pub cpus: u8,
    /// Guest RAM in bytes.
    pub mem_size: u64,
    /// The ACPI SCI's ISA IRQ (= GSI).
    pub sci_irq: u32,
    pub pm: PmBlock,
    pub reset: ResetRegister,
    /// Every INTx pin of every slot of bus 0 that can hold a device, to
    /// the GSI the VMM raises for it (the DSDT's _PRT; the MADT's
    /// overrides are its GSIs).
    pub pci_intx: Vec<PciIntx>,
    /// The PCI mechanism-1 configuration ports (0xCF8, 8 ports).
    pub pci_config_ports: Window,
    /// The ECAM (MMCONFIG) area of segment 0, 1 MiB per bus from bus 0.
    pub pci_ecam: Window,
    /// The 32-bit and 64-bit PCI MMIO windows.
    pub pci_mmio32: Window,
    pub pci_mmio64: Window,
    /// A TPM 2.0 (CRB), if the VM has one.
    pub tpm: Option<TpmCrbInfo>,
}

impl AcpiPlatform {
    /// The same machine with the PM block at `base` (where a firmware
    /// moved it through the PIIX4 PM function).
    pub fn with_pm_base(&self, base: u16) -> Self {
        let mut p = self.clone();
        p.pm.base = base;
        p
    }

    /// The last PCI bus the ECAM area covers.
    pub fn last_pci_bus(&self) -> u8 {
        const BUS_ECAM_SIZE: u64 = 1 << 20;
        (self.pci_ecam.size / BUS_ECAM_SIZE - 1) as u8
    }

    /// The GSIs PCI INTx arrives on, each once, ascending.
    pub fn pci_intx_gsis(&self) -> Vec<u32> {
        let mut gsis: Vec<u32> = self.pci_intx.iter().map(|e| e.gsi).collect();
        gsis.sort_unstable();
        gsis.dedup();
        gsis
    }
}
