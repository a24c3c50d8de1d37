//! Types shared by Kiln's programs.
//!
//! - [`vm`]: what a VM is made of ([`vm::VmConfig`]), as `kilnd` writes it for
//!   `kiln-vmm --config FILE` and as `kiln-vmm`'s flags build it.
//! - [`control`]: the VMM control protocol, HTTP/JSON on each VM's
//!   `--api-socket`.
//!
//! - [`compute`]: `kilnd`'s REST API bodies.
//! - [`client`]: the one HTTP client (std only, blocking) that every
//!   program and test uses against `kilnd` and `kiln-vmm`.
//!
//! Serde data and that client only (no async runtime): validation and use
//! live with the code that needs them (`vmm/src/config.rs`). `vm` depends
//! on nothing here; `control` and `compute` use `vm`'s types.

pub mod client;
pub mod compute;
pub mod control;
pub mod vm;
