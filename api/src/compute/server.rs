//! Servers: their record, create body, status and task state, actions and
//! console output (`/v1/servers`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;

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
