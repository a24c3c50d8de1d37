//! x86_64: guest physical layout, CPUID, registers, boot, ACPI and SMBIOS.

pub mod acpi;
pub mod boot;
pub mod cpuid;
pub mod firmware;
pub mod fw_cfg;
pub mod hyperv;
pub mod irq;
pub mod layout;
pub mod platform;
pub mod regs;
pub mod smbios;
