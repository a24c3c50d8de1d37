//! The compute API of `kilnd`: JSON bodies of the REST resources under `/v1`
//! on its unix socket (see `api/openapi.json` for the routes).
//!
//! | resource | bodies |
//! |---|---|
//! | `GET /v1/host` | [`HostInfo`] |
//! | `/v1/flavors` | [`FlavorCreate`] in, [`Flavor`] / [`FlavorList`] out |
//! | `/v1/images` | [`ImageCreate`] in, [`Image`] / [`ImageList`] out |
//! | `/v1/servers` | [`ServerCreate`] in, [`Server`] / [`ServerList`] out |
//! | `POST /v1/servers/{id}/action` | [`ServerAction`] in, 202 |
//! | `/v1/servers/{id}/nics`, `/v1/servers/{id}/nics/{index}` | [`NicUpdate`] in (`PUT`), [`Nic`] / [`NicList`] out |
//! | `GET /v1/servers/{id}/console` | [`ConsoleOutput`] out |
//! | `/v1/networks` | [`NetworkCreate`] in, [`Network`] / [`NetworkList`] out |
//!
//! Every request body rejects unknown fields. Every error answers an
//! [`ErrorBody`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::vm::{DiskBus, DiskFormat, LinkState};

mod guest;
mod image;
mod image_record;
mod keypair;
mod network;
mod server;
pub use guest::*;
pub use image::*;
pub use image_record::*;
pub use keypair::*;
pub use network::*;
pub use server::*;
mod remote_console;
pub use remote_console::*;
/// The body of every error answer (4xx and 5xx).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// A size of server: what placement counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flavor {
    pub id: String,
    pub name: String,
    pub vcpus: u32,
    pub ram_mb: u64,
    pub disk_gb: u64,
    /// Nova's flavor extra specs: the `quota:*` disk and NIC limits kiln
    /// honours (`manager/README.md`, "Flavor QoS"). Empty: no limits.
    #[serde(default)]
    pub extra_specs: BTreeMap<String, String>,
}

/// `POST /v1/flavors`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlavorCreate {
    pub name: String,
    pub vcpus: u32,
    pub ram_mb: u64,
    pub disk_gb: u64,
    /// Nova's flavor extra specs, checked at create: a key kiln does not
    /// honour, or a bad value, is a 400 naming the key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_specs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlavorList {
    pub flavors: Vec<Flavor>,
}

/// How a server whose image is a disk image boots (Nova's
/// `hw_firmware_type` image property): SeaBIOS, or OVMF with a variable
/// store (NVRAM) of the server's own. Kernel images boot directly and have
/// none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Firmware {
    #[default]
    Bios,
    Uefi,
}

impl Firmware {
    pub fn as_str(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
        }
    }
}

/// The operating system on a disk image (Nova's `os_type` image
/// property). `windows` gives its servers what Windows expects, as Nova
/// does: the Hyper-V enlightenments and an RTC in host local time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OsType {
    #[default]
    Linux,
    Windows,
}

impl OsType {
    pub fn as_str(self) -> &'static str {
        match self {
            OsType::Linux => "linux",
            OsType::Windows => "windows",
        }
    }
}

/// A server's display (`vga`: QEMU's standard VGA, whose picture
/// `GET /v1/servers/{id}/screenshot` answers and a VNC client reaches on
/// the server's `vnc.sock`; `none`: the serial console only): the
/// server's, else its image's; a disk image's default is `vga` when its
/// `os_type` is `windows` (it has no serial console), else `none`; kernel
/// images boot directly and have none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Display {
    #[default]
    None,
    Vga,
}

impl Display {
    pub fn as_str(self) -> &'static str {
        match self {
            Display::None => "none",
            Display::Vga => "vga",
        }
    }

    /// `vga` or `none`; anything else is None.
    pub fn parse(s: &str) -> Option<Display> {
        match s {
            "none" => Some(Display::None),
            "vga" => Some(Display::Vga),
            _ => None,
        }
    }

    pub fn is_none(&self) -> bool {
        *self == Display::None
    }
}

/// Which virtio-pci devices a server's guest is shown (an image property
/// that servers inherit, and may override at create).
///
/// `modern` (the default) presents virtio 1.x devices only (IDs
/// 0x1041..): they need no I/O ports (a scarce 64 KiB space) and no
/// legacy INTx line, and have none of the legacy interface's quirks
/// (guest-endian fields, fixed-size queues). Every current guest driver
/// (Linux since 4.0, virtio-win since 2016) binds to them.
///
/// `transitional` presents every virtio device of the server as QEMU does
/// on a conventional PCI slot (what Nova gets from libvirt with
/// `hw_machine_type=pc`): the pre-1.0 device ID (0x1000 net, 0x1001
/// block, 0x1005 entropy) and a legacy I/O BAR besides the modern
/// interface, for old guests whose drivers bind only to those IDs (old
/// virtio-win drivers in Windows golden images, Linux before 4.0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VirtioModel {
    #[default]
    Modern,
    Transitional,
}

impl VirtioModel {
    pub fn as_str(self) -> &'static str {
        match self {
            VirtioModel::Modern => "modern",
            VirtioModel::Transitional => "transitional",
        }
    }

    pub fn is_modern(&self) -> bool {
        *self == VirtioModel::Modern
    }
}

/// One resource class as placement sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceUsage {
    pub total: u64,
    pub reserved: u64,
    pub allocation_ratio: f64,
    /// `(total - reserved) * allocation_ratio`, rounded down.
    pub capacity: u64,
    pub used: u64,
    pub free: u64,
}

/// `GET /v1/host`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    pub vcpus: ResourceUsage,
    pub ram_mb: ResourceUsage,
    pub disk_gb: ResourceUsage,
    /// Servers holding an allocation (every status but DELETED).
    pub servers: u64,
}
