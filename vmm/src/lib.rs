//! kiln-vmm: one KVM virtual machine per process. See ARCHITECTURE.md for
//! the map of this crate.

pub mod arch;
pub mod devices;
