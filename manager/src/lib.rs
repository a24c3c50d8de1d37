//! `kiln-manager`: `kilnd`, the compute service, and the `kiln` CLI.
//!
//! - [`config`]: the TOML configuration and its embedded defaults.
//! - [`store`]: SQLite state (flavors, images, servers) with migrations.
//! - [`placement`]: capacity with overcommit, checked atomically on create.
//! - [`images`]: registering kernel images and importing disk images.
//! - [`disks`]: ephemeral root disks, qcow2 overlays on disk images.
//! - [`net`]: networks (bridges) and servers' NICs (taps) on them.
//! - [`nics`]: `/v1/servers/{id}/nics`: a server's NICs and their links.
//! - [`firmware`]: firmware boot from a disk image: host firmware files and
//!   each UEFI server's own NVRAM.
//! - [`supervisor`]: one `kiln-vmm` per server, watched through a pidfd.
//! - [`qos`]: flavor QoS, Nova's `quota:*` extra specs as kiln-vmm's disk
//!   and NIC token buckets.
//! - [`server`]: the REST API (axum) on the unix socket.
//! - [`attach`]: the interactive console, an HTTP upgrade to the VMM's
//!   console socket.
//! - [`client`]: `kiln_api::client` re-exported (the one blocking HTTP/1.1
//!   client, which the supervisor uses to talk to each VMM).
//! - [`daemon`]: wiring it all together for the `kilnd` binary.

pub mod attach;
pub mod client;
pub mod config;
pub mod daemon;
pub mod disks;
pub mod firmware;
pub mod images;
pub mod import_path;
pub mod kernels;
pub mod lvm;
pub mod net;
pub mod nics;
pub mod placement;
pub mod qos;
pub mod server;
pub mod store;
pub mod supervisor;
pub mod upload;
pub mod util;
