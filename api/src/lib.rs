//! Types shared by Kiln's programs.
//!
//! - [`vm`]: what a VM is made of ([`vm::VmConfig`]), as `kilnd` writes it for
//!   `kiln-vmm --config FILE` and as `kiln-vmm`'s flags build it.
//! - [`control`]: the VMM control protocol, HTTP/JSON on each VM's
//!   `--api-socket`.
//!
//! Plain serde data only: validation and use live with the code that needs
//! them (`vmm/src/config.rs`).

pub mod compute;
pub mod control;
pub mod vm;
