//! The supervisor's errors: why a kiln-vmm could not be started (its whole
//! chain, [`crate::util::error_chain`], becomes the server's fault), why
//! its VM config could not be made, why a control request failed, and why
//! a server is busy.

use std::io;

use kiln_api::client::ClientError;
use kiln_api::compute::Firmware;

use thiserror::Error;

use crate::disks::DiskError;
use crate::firmware::FirmwareError;
use crate::qos::SpecError;
use crate::store::StoreError;

#[derive(Debug, Error)]
pub enum SpawnError {
    #[error("a kiln-vmm (pid {0}) already runs for this server")]
    Running(u32),
    #[error(transparent)]
    Nics(#[from] NicNetworkError),
    #[error(transparent)]
    Taps(#[from] crate::net::TapError),
    #[error(transparent)]
    Config(#[from] ConfigError),
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
    #[error("cannot start the server's TPM")]
    Tpm(#[from] super::tpm::TpmError),
    #[error("cannot build the config drive")]
    ConfigDrive(#[from] crate::config_drive::ConfigDriveError),
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
    #[error(transparent)]
    NotReady(#[from] NotReady),
}

/// The VMM did not answer on its control socket in time (it was killed).
#[derive(Debug, Error)]
#[error("kiln-vmm (pid {pid}) did not answer on its control socket within {secs} s")]
pub struct NotReady {
    pub pid: u32,
    pub secs: u64,
}

/// Why the networks of a server's NICs could not be read.
#[derive(Debug, Error)]
pub enum NicNetworkError {
    #[error("cannot read kilnd's instance id")]
    InstanceId(#[source] StoreError),
    #[error("NIC {tap}")]
    Network {
        tap: String,
        #[source]
        source: StoreError,
    },
}

/// Why a server's VM config (`vm.json`) could not be made.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("image {id}")]
    Image {
        id: String,
        #[source]
        source: StoreError,
    },
    #[error("disk image {id}")]
    DiskImage {
        id: String,
        #[source]
        source: StoreError,
    },
    /// The image's files in the store (a fault message from
    /// [`crate::image_files`]).
    #[error("{0}")]
    ImageFiles(String),
    #[error(transparent)]
    Firmware(#[from] FirmwareError),
    #[error("image {image} does not match how the server boots (firmware {firmware:?})")]
    Boot {
        image: String,
        firmware: Option<Firmware>,
    },
    #[error("extra specs")]
    ExtraSpecs(#[source] StoreError),
    #[error(transparent)]
    Qos(#[from] SpecError),
    #[error("more than 255 vCPUs")]
    Vcpus,
}

/// Why a request on a VMM's control socket failed.
#[derive(Debug, Error)]
pub enum ControlError {
    #[error(transparent)]
    Join(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The VMM answered with an error status.
    #[error("kiln-vmm control request")]
    Refused(#[source] ClientError),
    #[error("bad answer from kiln-vmm")]
    Answer(#[source] serde_json::Error),
}

/// A server's action lock is held: what is running on it.
#[derive(Debug, Error)]
#[error("server {server} is busy ({what})")]
pub struct Busy {
    pub server: String,
    pub what: &'static str,
}
