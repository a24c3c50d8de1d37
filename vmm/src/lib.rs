//! kiln-vmm: one KVM virtual machine per process. See ARCHITECTURE.md for
//! the map of this crate.

pub mod arch;
pub mod config;
pub mod console;
pub mod control;
pub mod controller;
pub mod device_manager;
pub mod devices;
pub mod disks;
pub mod keyboard;
pub mod logger;
pub mod malloc;
pub mod memory;
pub mod net;
pub mod panic_hook;
pub mod pointer;
pub mod reset_state;
pub mod screen;
pub mod seccomp;
pub mod terminal;
pub mod tpm;
pub mod vcpu;
pub mod vm;
pub mod vnc;
