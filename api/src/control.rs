//! The VMM control protocol: HTTP/1.1 with JSON bodies on the unix socket
//! given by `--api-socket`. One request per connection or keep-alive.
//!
//! | method and path        | body in | answer |
//! |------------------------|---------|--------|
//! | `GET /v1/vm`           |         | [`VmInfo`] (with each NIC's MAC and link, [`NetInfo`]) |
//! | `PUT /v1/vm/pause`     |         | 204 |
//! | `PUT /v1/vm/resume`    |         | 204 |
//! | `PUT /v1/vm/power-button` |      | 204 (ACPI power button: the guest shuts down) |
//! | `PUT /v1/vm/reset`     |         | 204 (hard reset, as the reset line) |
//! | `PUT /v1/vm/kill`      |         | 204, then the VMM exits |
//! | `PUT /v1/vm/net/{index}` | [`NetUpdate`] | 204 (link up/down: config space, config-change interrupt) |
//!
//! Errors answer 4xx/5xx with an [`ErrorBody`].

use serde::{Deserialize, Serialize};

pub use crate::vm::LinkState;
use crate::vm::VmConfig;

/// The state of a VM as its VMM reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Being built, not yet running guest code.
    Created,
    Running,
    Paused,
    /// The guest has stopped; the VMM is about to exit.
    Shutdown,
}

/// How a VM ended. Also the VMM's exit status, see [`ExitReason::exit_code`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ExitReason {
    /// The guest powered off (ACPI S5 or the like).
    PowerOff,
    /// The guest asked for a reboot (i8042, port 0xCF9, ACPI reset).
    Reboot,
    /// A vCPU triple-faulted (KVM_EXIT_SHUTDOWN).
    TripleFault { vcpu: u8 },
    /// KVM could not emulate an instruction; the registers at that point.
    EmulationFailure { vcpu: u8, registers: String },
    /// Killed through the control API.
    Killed,
    /// A fault of the host or of the VMM itself.
    HostError { message: String },
}

impl ExitReason {
    /// The VMM's process exit status for this ending.
    pub fn exit_code(&self) -> i32 {
        match self {
            ExitReason::PowerOff => 0,
            ExitReason::Reboot => 10,
            ExitReason::TripleFault { .. } => 11,
            ExitReason::EmulationFailure { .. } => 12,
            ExitReason::Killed => 13,
            ExitReason::HostError { .. } => 1,
        }
    }
}

/// What `exit_file` (see [`crate::vm::VmConfig`]) holds after the VMM ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The VMM's exit status, as [`ExitReason::exit_code`] gives it.
    pub code: i32,
    pub reason: ExitReason,
}

/// One write to the debug port (I/O port 0x80): the code and when it came,
/// in microseconds since the VMM process started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootProgress {
    pub code: u8,
    pub time_us: u64,
}

/// `GET /v1/vm`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmInfo {
    pub state: VmState,
    pub pid: u32,
    pub config: VmConfig,
    /// Debug-port codes in the order written (the first 4096 are kept).
    pub boot_progress: Vec<BootProgress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_reason: Option<ExitReason>,
    /// Each NIC, in `VmConfig::nets` order. A link set down stays down
    /// across a reset (`PUT /v1/vm/reset`), and a MAC chosen at random
    /// stays the same, as a PC's NIC keeps both when the PC reboots.
    #[serde(default)]
    pub nets: Vec<NetInfo>,
}

/// A NIC as the VMM reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetInfo {
    /// Its index in `VmConfig::nets` (`PUT /v1/vm/net/{index}`).
    pub index: usize,
    /// The MAC address the guest sees, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    pub link: LinkState,
}

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// `PUT /v1/vm/net/{index}`: change NIC `index` (in `VmConfig::nets`
/// order) as the guest sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetUpdate {
    pub link: LinkState,
}
