//! `kiln-manager`: `kilnd`, the compute service, and the `kiln` CLI.
//!
//! kilnd is built in layers; arrows point down only (`tests/layers.rs`
//! checks it):
//!
//! - [`http`]: the REST API (axum): router, state, the one map from domain
//!   errors to status codes, and one small file of handlers per resource.
//! - The domain, which holds the rules and the multi-step protocols, used
//!   by the handlers and by start-up reconcile alike: [`servers`] (create
//!   rules), [`networks`] (create, the delete protocol, reconcile, a
//!   server's NICs), [`images`] (register, import, upload, delete),
//!   [`flavors`], [`keypairs`] (OpenSSH key import and generation).
//! - [`metadata`]: what a guest learns about itself (Nova's OpenStack and
//!   EC2 trees, the metadata service's rules, the config drive's files).
//! - [`supervisor`]: one `kiln-vmm` per server, watched through a pidfd.
//! - [`store`]: SQLite state (flavors, images, servers, networks, key
//!   pairs), SQL only.
//! - [`net`]: Linux plumbing for networks (bridges, taps, netlink).
//! - Below them: [`config`], [`placement`] (capacity with overcommit,
//!   checked atomically on create), [`image_files`] (the image store's
//!   files, host import paths, kernels' copies), [`disks`] and [`lvm`]
//!   (root disks), [`config_drive`] (the config drive ISO), [`firmware`], [`qos`] (Nova's `quota:*` extra specs as
//!   kiln-vmm's token buckets), [`client`] (`kiln_api::client` re-exported: the one blocking
//!   HTTP/1.1 client; the supervisor talks to each VMM with it),
//!   [`util`].
//! - [`daemon`]: wiring it all together for the `kilnd` binary.

pub mod agent;
pub mod client;
pub mod config;
pub mod config_drive;
pub mod daemon;
pub mod dhcp;
pub mod disks;
pub mod firmware;
pub mod flavors;
pub mod http;
pub mod image_files;
pub mod images;
pub mod ipam;
pub mod keypairs;
pub mod lvm;
pub mod metadata;
pub mod net;
pub mod networks;
pub mod openstack;
pub mod placement;
pub mod qos;
pub mod servers;
pub mod store;
pub mod supervisor;
pub mod util;
