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
mod network;
pub use guest::*;
pub use image::*;
pub use network::*;
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

/// What an image is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum ImageKind {
    /// A kernel for direct boot (Nova's AKI/ARI): paths on the host.
    Kernel {
        kernel: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        initramfs: Option<String>,
        #[serde(default)]
        cmdline: String,
    },
    /// A disk image copied into the image store.
    Disk {
        format: ImageFormat,
        /// Where the copy lives in the image store.
        path: String,
        size_bytes: u64,
        /// Hex sha256 of the image's bytes; empty until imported.
        sha256: String,
        /// The firmware a server booting from it uses unless the server
        /// names another.
        #[serde(default)]
        firmware: Firmware,
        #[serde(default)]
        os_type: OsType,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub id: String,
    pub name: String,
    #[serde(flatten)]
    pub kind: ImageKind,
    pub created_at: String,
    #[serde(default)]
    pub status: ImageStatus,
    /// While a disk image is importing: how far it got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ImportProgress>,
    /// Why an import failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// The virtio devices of servers made from it.
    #[serde(default)]
    pub virtio_model: VirtioModel,
    /// Servers made from it get a TPM 2.0 (backed by swtpm) unless the
    /// server says otherwise; on by default for `os_type: windows`.
    #[serde(default)]
    pub tpm: bool,
    /// The display of servers made from it unless the server names one
    /// (disk images: `vga` by default for `os_type: windows`; kernel
    /// images: `none`).
    #[serde(default, skip_serializing_if = "Display::is_none")]
    pub display: Display,
    /// The bus of root disks of servers made from it (Nova's
    /// `hw_disk_bus`): `virtio`, or `sata` by default for a Windows ISO
    /// (Windows setup has no virtio driver).
    #[serde(default, skip_serializing_if = "DiskBus::is_virtio")]
    pub disk_bus: DiskBus,
    /// Servers made from it boot with UEFI Secure Boot on (firmware
    /// `uefi` only); on by default for `os_type: windows` with `uefi`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secure_boot: bool,
    /// Servers made from it get a guest agent channel (Nova's
    /// `hw_qemu_guest_agent`) unless the server says otherwise; on by
    /// default for `os_type: windows`.
    #[serde(default)]
    pub agent: bool,
}

/// Where an image is in its life. A disk image is `importing` from its
/// `POST` (202) until copied and hashed; only `active` images can be used.
/// One created with `source: upload` is `queued` until its data is sent
/// with `PUT /v1/images/{id}/file` (then `importing` while it streams).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageStatus {
    #[default]
    Active,
    Importing,
    Error,
    Queued,
}

/// Where a disk image's data comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskSource {
    /// Copied from `path` on the host.
    #[default]
    Path,
    /// Sent later as the body of `PUT /v1/images/{id}/file` (no `path`).
    Upload,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportProgress {
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// `POST /v1/images`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", deny_unknown_fields)]
pub enum ImageCreate {
    /// Register a kernel (absolute host paths; the files are not copied).
    Kernel {
        name: String,
        kernel: String,
        #[serde(default)]
        initramfs: Option<String>,
        #[serde(default)]
        cmdline: Option<String>,
        /// The virtio devices of servers made from it (`modern` when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        virtio_model: Option<VirtioModel>,
        /// Servers made from it get a TPM 2.0 (off when absent; on for
        /// `os_type: windows`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tpm: Option<bool>,
        /// Servers made from it get a guest agent channel (off when
        /// absent; on for `os_type: windows`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<bool>,
    },
    /// Import a disk image into the image store: from an absolute host
    /// path (`source: path`, the default), or by upload (`source: upload`).
    Disk {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        format: ImageFormat,
        #[serde(default)]
        source: DiskSource,
        /// How servers booting from it start (`bios` when absent).
        #[serde(default)]
        firmware: Option<Firmware>,
        /// Its operating system (`linux` when absent).
        #[serde(default)]
        os_type: Option<OsType>,
        /// The virtio devices of servers made from it (`modern` when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        virtio_model: Option<VirtioModel>,
        /// Servers made from it get a TPM 2.0 (off when absent; on for
        /// `os_type: windows`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tpm: Option<bool>,
        /// Servers made from it get a guest agent channel (off when
        /// absent; on for `os_type: windows`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<bool>,
        /// Its servers' display (`vga` when absent for `os_type: windows`,
        /// else `none`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        display: Option<Display>,
        /// Its servers' root disk bus (`virtio` when absent; `sata` for a
        /// Windows ISO).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disk_bus: Option<DiskBus>,
        /// Its servers boot with Secure Boot on (needs `firmware: uefi`;
        /// when absent: on for `os_type: windows` with `uefi`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secure_boot: Option<bool>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageList {
    pub images: Vec<Image>,
}

/// Nova's server statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerStatus {
    Build,
    Active,
    Shutoff,
    Paused,
    Reboot,
    Error,
    Deleted,
}

impl ServerStatus {
    pub const ALL: [ServerStatus; 7] = [
        ServerStatus::Build,
        ServerStatus::Active,
        ServerStatus::Shutoff,
        ServerStatus::Paused,
        ServerStatus::Reboot,
        ServerStatus::Error,
        ServerStatus::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServerStatus::Build => "BUILD",
            ServerStatus::Active => "ACTIVE",
            ServerStatus::Shutoff => "SHUTOFF",
            ServerStatus::Paused => "PAUSED",
            ServerStatus::Reboot => "REBOOT",
            ServerStatus::Error => "ERROR",
            ServerStatus::Deleted => "DELETED",
        }
    }

    /// Parses the upper-case name (`ACTIVE`); case-insensitive.
    pub fn parse(s: &str) -> Option<ServerStatus> {
        ServerStatus::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }
}

/// What is being done to a server right now (Nova's task states, the
/// strings they have on the wire and in kilnd's store).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskState {
    #[serde(rename = "spawning")]
    Spawning,
    #[serde(rename = "powering-on")]
    PoweringOn,
    #[serde(rename = "powering-off")]
    PoweringOff,
    #[serde(rename = "rebooting")]
    Rebooting,
    #[serde(rename = "rebooting_hard")]
    RebootingHard,
    #[serde(rename = "pausing")]
    Pausing,
    #[serde(rename = "unpausing")]
    Unpausing,
    #[serde(rename = "deleting")]
    Deleting,
}

impl TaskState {
    pub const ALL: [TaskState; 8] = [
        TaskState::Spawning,
        TaskState::PoweringOn,
        TaskState::PoweringOff,
        TaskState::Rebooting,
        TaskState::RebootingHard,
        TaskState::Pausing,
        TaskState::Unpausing,
        TaskState::Deleting,
    ];

    /// The name on the wire and in the store, as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Spawning => "spawning",
            TaskState::PoweringOn => "powering-on",
            TaskState::PoweringOff => "powering-off",
            TaskState::Rebooting => "rebooting",
            TaskState::RebootingHard => "rebooting_hard",
            TaskState::Pausing => "pausing",
            TaskState::Unpausing => "unpausing",
            TaskState::Deleting => "deleting",
        }
    }

    /// The state of a stored name.
    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Why a server is in ERROR.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub message: String,
    pub created: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    pub id: String,
    pub name: String,
    pub status: ServerStatus,
    /// What is being done to it right now, as Nova's
    /// `OS-EXT-STS:task_state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_state: Option<TaskState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    pub flavor_id: String,
    pub image_id: String,
    /// The disk image under its root disk, a qcow2 overlay of the flavor's
    /// size in the server's directory (`root.qcow2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_image_id: Option<String>,
    /// Set when the server boots through firmware from its root disk (its
    /// image is a disk image); absent for a directly booted kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<Firmware>,
    /// `uefi`: the server's own UEFI variable store, a copy of the
    /// configured template made at create in its directory (`nvram.fd`),
    /// kept across stop, start and reboot, deleted with the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvram: Option<String>,
    /// The allocation it holds from create until delete.
    pub vcpus: u32,
    pub ram_mb: u64,
    pub disk_gb: u64,
    pub cmdline: String,
    pub metadata: BTreeMap<String, String>,
    /// Process id of its `kiln-vmm`, while one runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub created_at: String,
    pub updated_at: String,
    /// The readiness condition given at create, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_condition: Option<ReadyCondition>,
    /// ACTIVE, and the current boot met the readiness condition if there
    /// is one.
    #[serde(default)]
    pub ready: bool,
    /// Milliseconds from starting its kiln-vmm to ready, for the current
    /// boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_after_ms: Option<u64>,
    /// When the server is deleted automatically (from `ttl_s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Its virtio-net NICs, in PCI order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<Nic>,
    /// Its virtio devices: its image's `virtio_model` unless the create
    /// named another.
    #[serde(default)]
    pub virtio_model: VirtioModel,
    /// The key pair named at create (its public key is kept with the
    /// server for the guest's metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// The `admin_pass` given at create: in the create response only (as
    /// Nova's `adminPass`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_pass: Option<String>,
    /// It has a config drive: a read-only ISO 9660 disk labelled
    /// `config-2`, its second virtio-blk disk, rebuilt at every start.
    #[serde(default)]
    pub config_drive: bool,
    /// It has a TPM 2.0: a swtpm kilnd runs beside its VMM, whose state
    /// (`tpm/` in its directory, with an endorsement key certificate) is
    /// kept across stop, start and reboot and deleted with the server.
    #[serde(default)]
    pub tpm: bool,
    /// Its display: the create's, else its image's default (see
    /// [`Display`]).
    #[serde(default, skip_serializing_if = "Display::is_none")]
    pub display: Display,
    /// Its root disk's bus.
    #[serde(default, skip_serializing_if = "DiskBus::is_virtio")]
    pub disk_bus: DiskBus,
    /// ISO images on CD-ROMs, after the one it boots from when its image
    /// is an ISO (ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cdroms: Vec<String>,
    /// Its user data is also `autounattend.xml` on a CD-ROM of its own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub answer_file: bool,
    /// It boots with UEFI Secure Boot on: OVMF's 4 MiB build and an NVRAM
    /// with Microsoft's 2011 and 2023 keys enrolled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secure_boot: bool,
    /// It has a guest agent channel (`agent.sock` in its directory, the
    /// guest's `org.qemu.guest_agent.0` port): `GET .../guest` asks the
    /// agent, and stop asks it for a shutdown first.
    #[serde(default)]
    pub agent: bool,
}

/// When a server counts as ready. Exactly one of `console`, `debug_code`
/// and `agent` is set; `timeout_s` bounds the wait.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadyCondition {
    /// A regular expression matched against the serial console output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<String>,
    /// A code the guest writes to the debug port (I/O port 0x80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_code: Option<u8>,
    /// `true`: ready once the guest agent answers `guest-ping` (the
    /// server needs `agent`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub agent: bool,
    /// Seconds from each start of its VMM (1 to 86400): a server not ready
    /// by then goes to ERROR; kilnd keeps its last screenshot (with a
    /// display) and ends its VMM. None: no bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
}

/// `POST /v1/servers`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerCreate {
    pub name: String,
    /// Flavor id or name.
    pub flavor: String,
    /// Image id or name: a kernel image boots directly; a disk image
    /// becomes the root disk (a qcow2 overlay on it) and boots through
    /// firmware.
    pub image: String,
    /// With a kernel image only: disk image id or name for the root disk;
    /// the server gets a qcow2 overlay on it of the flavor's `disk_gb` (the
    /// image's size if 0).
    #[serde(default)]
    pub disk_image: Option<String>,
    /// With a kernel image only: its command line; the image's default
    /// when absent.
    #[serde(default)]
    pub cmdline: Option<String>,
    /// Base64 (as Nova's), at most 65535 bytes once decoded; the guest
    /// gets the decoded bytes.
    #[serde(default)]
    pub user_data: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub ready: Option<ReadyCondition>,
    /// Seconds after which the server is deleted automatically.
    #[serde(default)]
    pub ttl_s: Option<u64>,
    /// One virtio-net NIC per entry, on the network's bridge (Nova's
    /// `networks`).
    #[serde(default)]
    pub networks: Vec<NicRequest>,
    /// Firmware for a server whose image is a disk image, instead of the
    /// image's own; refused for kernel images.
    #[serde(default)]
    pub firmware: Option<Firmware>,
    /// Its virtio devices, instead of the image's `virtio_model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtio_model: Option<VirtioModel>,
    /// A key pair's name (`/v1/keypairs`): its public key goes with the
    /// server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// The guest's administrator password, at most 255 bytes; stored with
    /// the server and answered only in the create response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_pass: Option<String>,
    /// Attach a config drive (Nova's `config_drive`): needs a root disk.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub config_drive: bool,
    /// A TPM 2.0, instead of the image's `tpm`; needs swtpm on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<bool>,
    /// `vga` or `none`, instead of the image's default ([`Display`]);
    /// `vga` needs a disk image (firmware draws on it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<Display>,
    /// The root disk's bus, instead of the image's `disk_bus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bus: Option<DiskBus>,
    /// ISO images (ids or names) attached as CD-ROMs, in order (after the
    /// server's own image when that is an ISO): drivers, answer files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cdroms: Vec<String>,
    /// Windows unattended installs: the decoded `user_data` becomes
    /// `autounattend.xml` at the root of a small ISO on a CD-ROM of its own,
    /// where Windows setup looks for it. Needs `user_data` and firmware boot.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub answer_file: bool,
    /// UEFI Secure Boot on from the first boot, instead of the image's
    /// `secure_boot`; needs firmware `uefi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<bool>,
    /// A guest agent channel, instead of the image's `agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<bool>,
}

/// A key pair's kind; only OpenSSH keys (Nova's `ssh`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeypairType {
    #[default]
    Ssh,
}

/// An SSH key pair (Nova's os-keypairs): kilnd keeps its public half.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keypair {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: KeypairType,
    /// One OpenSSH line: `ALGORITHM BASE64 [COMMENT]`.
    pub public_key: String,
    /// OpenSSH's SHA256 fingerprint, as `ssh-keygen -l` prints it
    /// (`SHA256:` and unpadded base64).
    pub fingerprint: String,
    /// The generated private key (OpenSSH format), in the create response
    /// only and only when kilnd generated the pair; kilnd keeps no copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    pub created_at: String,
}

/// `POST /v1/keypairs`: imports `public_key`, or without one generates an
/// ed25519 pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeypairCreate {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: KeypairType,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeypairList {
    pub keypairs: Vec<Keypair>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerList {
    pub servers: Vec<Server>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RebootType {
    /// The guest agent's `guest-shutdown` (a server with `agent` whose
    /// agent answers), else the ACPI power button, then a restart; forced
    /// after the stop timeout.
    #[default]
    Soft,
    /// Kill the VMM and start a new one.
    Hard,
}

/// `POST /v1/servers/{id}/action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action", deny_unknown_fields)]
pub enum ServerAction {
    Start,
    /// The guest agent's `guest-shutdown` (a server with `agent` whose
    /// agent answers), else the ACPI power button; forced after the stop
    /// timeout.
    Stop,
    Reboot {
        #[serde(default, rename = "type")]
        kind: RebootType,
    },
    Pause,
    Resume,
    /// A UEFI server's variable store (`nvram.fd`) made again from the
    /// configured template at its next start: boot entries and keys the
    /// guest wrote are gone (SHUTOFF or ERROR only; kilnd refuses to boot
    /// a Secure Boot server whose store has Secure Boot off).
    ResetNvram,
}

/// `GET /v1/servers/{id}/console?tail=N`: the serial log (the last `tail`
/// lines when given).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleOutput {
    pub output: String,
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
