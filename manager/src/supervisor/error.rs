//! Why a kiln-vmm could not be started. Its whole chain
//! ([`crate::util::error_chain`]) becomes the server's fault.

use std::io;

use thiserror::Error;

use crate::disks::DiskError;
use crate::firmware::FirmwareError;
use crate::store::StoreError;

#[derive(Debug, Error)]
pub enum SpawnError {
    #[error("a kiln-vmm (pid {0}) already runs for this server")]
    Running(u32),
    /// The NICs' networks or taps (a fault message from [`crate::net`]).
    #[error("{0}")]
    Taps(String),
    /// The VM config (a fault message naming what is missing).
    #[error("{0}")]
    Config(String),
    #[error("disk image {id}")]
    DiskImage {
        id: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot make {0}")]
    Dir(String, #[source] io::Error),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(transparent)]
    Firmware(#[from] FirmwareError),
    #[error("cannot write the VM config")]
    Json(#[source] serde_json::Error),
    #[error("cannot write {0}")]
    Write(String, #[source] io::Error),
    #[error("cannot open vmm.log")]
    Log(#[source] io::Error),
    #[error("cannot start kiln-vmm {0}")]
    Start(String, #[source] io::Error),
    #[error("spawn task failed")]
    Join(#[source] tokio::task::JoinError),
    #[error("pidfd_open({0})")]
    Pidfd(u32, #[source] io::Error),
    #[error("cannot watch the kiln-vmm")]
    Watch(#[source] io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// It did not come up (a fault message naming what it recorded).
    #[error("{0}")]
    NotReady(String),
}
