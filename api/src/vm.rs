//! What a virtual machine is made of.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The whole description of one VM. `kiln-vmm --config FILE` reads this as
/// JSON; `kiln-vmm`'s flags build the same value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    pub cpus: CpusConfig,
    pub memory: MemoryConfig,
    /// Direct kernel boot. Exactly one of `kernel` and `firmware` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelConfig>,
    /// Firmware boot (SeaBIOS, OVMF), started at the reset vector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<FirmwareConfig>,
    #[serde(default)]
    pub serial: SerialConfig,
    /// Path of the control socket (HTTP/JSON, see [`crate::control`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_socket: Option<String>,
    /// Disks, in order: virtio-blk ones in PCI slot order, SATA ones
    /// ([`DiskConfig::bus`]) on the AHCI controller's ports in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskConfig>,
    /// ATAPI CD-ROMs on the AHCI controller, after its SATA disks: ISO
    /// 9660 images, always read-only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cdroms: Vec<CdromConfig>,
    /// virtio-net NICs, after the disks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<NetConfig>,
    /// A virtio-rng device fed by the host's getrandom.
    #[serde(default)]
    pub rng: bool,
    /// The entropy device is transitional (see [`NetConfig::transitional`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rng_transitional: bool,
    /// Windows guests: the Hyper-V enlightenments OpenStack Nova turns on
    /// for `os_type=windows` (relaxed, vapic, spinlocks=8191, vpindex,
    /// runtime, time, synic, stimer, frequencies, reset, tlbflush, ipi).
    /// The VM fails to start where the host's KVM cannot emulate them.
    #[serde(default)]
    pub hyperv: bool,
    /// Windows guests: the RTC keeps host local time instead of UTC.
    #[serde(default)]
    pub rtc_local_time: bool,
    /// Where kiln-vmm writes how the VM ended ([`crate::control::ExitRecord`]
    /// as JSON) just before it exits, so that a supervisor that is not its
    /// parent (kilnd after a restart) can still learn it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_file: Option<String>,
    /// What the SMBIOS tables (DMI) tell the guest about the machine;
    /// None: [`SmbiosConfig::default`] values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smbios: Option<SmbiosConfig>,
    /// A display the guest draws on (None: no display; the serial port is
    /// the only console).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<DisplayConfig>,
    /// A TPM 2.0 (CRB interface, as QEMU's `tpm-crb`) backed by a running
    /// swtpm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<TpmConfig>,
    /// The guest agent channel: a virtio-console port named
    /// `org.qemu.guest_agent.0` joined to a unix socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentConfig>,
}

/// The guest agent channel (QEMU's `-chardev socket,server=on,wait=off`
/// with `virtserialport name=org.qemu.guest_agent.0`): kiln-vmm listens on
/// `socket` (replacing a stale socket file there), one client at a time (a
/// second waits in the listen backlog until the first leaves); bytes pass
/// both ways between the client and the guest's port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub socket: String,
}

/// The guest's display.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisplayConfig {
    #[serde(default)]
    pub device: DisplayDevice,
    /// The VGA BIOS SeaBIOS runs for it (`vgabios-stdvga.bin`); None: the
    /// file of that name beside the firmware, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rom: Option<String>,
    /// Serve the screen over VNC (RFB 3.8, no authentication: the socket
    /// file's mode is the access control) on this unix socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vnc: Option<String>,
    /// An absolute pointer (a virtio-input tablet) beside the PS/2 mouse,
    /// so that a viewer's cursor and the guest's agree. On by default.
    #[serde(default = "default_true")]
    pub tablet: bool,
    /// Where to write the screen as a PNG when the VM ends on a fault (a
    /// triple fault, an emulation failure, a host error), not on a power
    /// off, a reboot or a kill: the picture a supervisor cannot ask for
    /// afterwards. Written to `PATH.tmp`, then renamed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_screenshot: Option<String>,
}

fn default_true() -> bool {
    true
}

impl Default for DisplayConfig {
    fn default() -> Self {
        DisplayConfig {
            device: DisplayDevice::default(),
            rom: None,
            vnc: None,
            tablet: true,
            last_screenshot: None,
        }
    }
}

/// The display devices kiln-vmm has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DisplayDevice {
    /// QEMU's standard VGA (PCI 1234:1111, Bochs VBE, linear framebuffer).
    #[default]
    Vga,
}

/// A TPM 2.0 backed by swtpm (`swtpm socket --tpm2 --ctrl
/// type=unixio,path=SOCKET --tpmstate dir=...`, started and kept by the
/// caller, as libvirt does). kiln-vmm connects to its control socket,
/// hands it the data channel (`CMD_SET_DATAFD`) and initialises the TPM at
/// every start, including the restart a guest reset makes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmConfig {
    /// swtpm's control socket (`--ctrl type=unixio,path=...`).
    pub socket: String,
}

/// The SMBIOS strings and UUID a guest reads (dmidecode, /sys/class/dmi,
/// cloud-init's datasource detection). Unset strings take Kiln's
/// defaults ([`SmbiosConfig::DEFAULT_MANUFACTURER`], ...); an unset UUID
/// is all zeros ("not set" to SMBIOS).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmbiosConfig {
    /// System (type 1) and baseboard/chassis manufacturer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    /// System product name (type 1) and baseboard product (type 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// System serial number (type 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// System UUID (type 1), `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Chassis asset tag (type 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_tag: Option<String>,
}

impl SmbiosConfig {
    pub const DEFAULT_MANUFACTURER: &'static str = "Kiln";
    pub const DEFAULT_PRODUCT: &'static str = "kiln-vmm";
    /// Longest string kiln-vmm accepts for one field (bytes).
    pub const MAX_STRING_LEN: usize = 64;
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpusConfig {
    /// Number of vCPUs, 1 to 255.
    pub count: u8,
    /// CPU template: `host` or one of the named masks (`kvm-nested`, ...).
    #[serde(default = "default_cpu_template")]
    pub template: String,
}

fn default_cpu_template() -> String {
    "host".to_string()
}

impl Default for CpusConfig {
    fn default() -> Self {
        CpusConfig {
            count: 1,
            template: default_cpu_template(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Guest RAM in MiB.
    pub size_mib: u64,
    /// Back guest RAM with a memfd instead of anonymous memory (so it can be
    /// shared with another process later).
    #[serde(default)]
    pub shared: bool,
    /// Back guest RAM with huge pages (2 MiB, from the host's pool).
    #[serde(default)]
    pub hugepages: bool,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            size_mib: 512,
            shared: false,
            hugepages: false,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelConfig {
    /// ELF `vmlinux` (64-bit or PVH entry) or `bzImage`.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initramfs: Option<String>,
    #[serde(default)]
    pub cmdline: String,
    /// Which entry point of the kernel to use.
    #[serde(default)]
    pub protocol: BootProtocol,
}

/// Entry point of a directly booted kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootProtocol {
    /// PVH if the ELF kernel has a PVH note, else the 64-bit Linux entry.
    #[default]
    Auto,
    /// The 64-bit Linux boot protocol (ELF entry or bzImage + 0x200).
    Linux,
    /// PVH (32-bit entry named by the kernel's Xen ELF note).
    Pvh,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirmwareConfig {
    /// The firmware image (SeaBIOS bios.bin, OVMF_CODE.fd), mapped to end at 4 GiB.
    pub path: String,
    /// The VM's own copy of the UEFI variable store (OVMF_VARS.fd), mapped
    /// writable right below the code; what the guest writes lands in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vars: Option<String>,
}

/// Where the 8250 UART's output goes and where its input comes from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialConfig {
    /// Append everything the guest writes to this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// Listen on this unix socket; a client that connects sees the guest's
    /// output and types into its console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    /// Also use the VMM's own stdin/stdout as the console.
    #[serde(default)]
    pub stdio: bool,
}

/// Format of a disk image: always given, never guessed from its bytes.
/// The one format type of Kiln: `kilnd`'s REST API (`compute`), the VM
/// config and `kiln-block` all use it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// The file's bytes are the disk's bytes.
    #[default]
    Raw,
    /// QEMU copy-on-write v2 or v3.
    Qcow2,
}

impl DiskFormat {
    /// The name QEMU (and the JSON) uses for the format.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// A format name that is neither `raw` nor `qcow2`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownDiskFormat(pub String);

impl fmt::Display for UnknownDiskFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown disk format {:?}", self.0)
    }
}

impl std::error::Error for UnknownDiskFormat {}

impl FromStr for DiskFormat {
    type Err = UnknownDiskFormat;
    fn from_str(s: &str) -> Result<DiskFormat, UnknownDiskFormat> {
        match s {
            "raw" => Ok(DiskFormat::Raw),
            "qcow2" => Ok(DiskFormat::Qcow2),
            other => Err(UnknownDiskFormat(other.to_owned())),
        }
    }
}

impl fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The bus a disk is on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    /// A virtio-blk PCI device.
    #[default]
    Virtio,
    /// A SATA disk on the AHCI controller (guests without a virtio
    /// driver: Windows setup, older images).
    Sata,
}

impl DiskBus {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskBus::Virtio => "virtio",
            DiskBus::Sata => "sata",
        }
    }

    pub fn is_virtio(&self) -> bool {
        *self == DiskBus::Virtio
    }
}

/// An ATAPI CD-ROM holding an ISO 9660 image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdromConfig {
    pub path: String,
}

/// A disk (virtio-blk, or SATA with `bus: sata`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// Image file or block device.
    pub path: String,
    #[serde(default)]
    pub format: DiskFormat,
    #[serde(default, skip_serializing_if = "DiskBus::is_virtio")]
    pub bus: DiskBus,
    /// The image's backing chain, its own backing file first: the only
    /// backing files the VMM opens. Each qcow2 header in the chain must
    /// name the next file here (same path, relative names resolved against
    /// the image's directory, and same format); a header naming a file
    /// not listed is refused, never followed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backing: Vec<BackingConfig>,
    /// The guest may not write (VIRTIO_BLK_F_RO; the file is opened
    /// read-only).
    #[serde(default)]
    pub readonly: bool,
    /// Bypass the host page cache (`O_DIRECT`).
    #[serde(default)]
    pub direct: bool,
    /// What VIRTIO_BLK_T_GET_ID returns (at most 20 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitConfig>,
    /// Present a transitional virtio-pci device (see [`NetConfig::transitional`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transitional: bool,
    /// Adaptive polling: after serving, the device's worker spins on the
    /// queue for up to this many microseconds before it sleeps (0: off,
    /// at most 1000). Cuts the wake-up per request at queue depth 1, at
    /// the cost of a host CPU busy while polling.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub poll_us: u32,
}

/// One backing file of a disk's chain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackingConfig {
    pub path: String,
    pub format: DiskFormat,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// A virtio-net NIC on a tap device.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Open (or create) the tap of this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap: Option<String>,
    /// Use this already-open tap fd (inherited from the caller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    /// Use these already-open queues of one multi-queue tap (opened with
    /// IFF_MULTI_QUEUE | IFF_VNET_HDR), one per queue pair, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fds: Option<Vec<i32>>,
    /// Queue pairs for `tap` (opened that many times with
    /// IFF_MULTI_QUEUE); 1 if absent. With `fds`, the number of fds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues: Option<u16>,
    /// MAC address `aa:bb:cc:dd:ee:ff`; a random local one if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Limits on what the guest sends (transmit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitConfig>,
    /// Present a transitional virtio-pci device, as QEMU does on a
    /// conventional PCI slot (`disable-legacy=off`): the pre-1.0 device ID
    /// (0x1000 net, 0x1001 block, 0x1005 entropy) and,
    /// besides the modern capabilities, the legacy register block in an
    /// I/O BAR, for older virtio-win drivers that bind only to those IDs.
    /// Off by default: a modern-only device needs no I/O ports (a scarce
    /// 64 KiB space) and no legacy INTx, and has none of the legacy
    /// interface's guest-endian, fixed-size-queue quirks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transitional: bool,
    /// Limits on what the guest receives; frames wait in the tap while
    /// over budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limit: Option<RateLimitConfig>,
    /// The link when the device is created (`up` if absent): a NIC whose
    /// link was set down (`PUT /v1/vm/net/{index}`) comes back down in the
    /// next VMM its supervisor starts. The guest never sees it up.
    #[serde(default, skip_serializing_if = "LinkState::is_up")]
    pub link: LinkState,
}

/// Token-bucket limits of one device (Firecracker's model).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucketConfig>,
    /// Operations (requests or frames).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucketConfig>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucketConfig {
    /// Tokens the bucket holds. A request larger than the bucket passes
    /// once it is full and leaves it in debt for the excess, so the rate
    /// (size / refill time) holds for any request size.
    pub size: u64,
    /// Extra tokens available once, at start.
    #[serde(default)]
    pub one_time_burst: u64,
    /// Milliseconds to refill an empty bucket.
    pub refill_time_ms: u64,
}

/// A NIC's link, as the guest sees it (`VIRTIO_NET_S_LINK_UP`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    #[default]
    Up,
    Down,
}

impl LinkState {
    pub fn is_up(&self) -> bool {
        *self == LinkState::Up
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Up => "up",
            LinkState::Down => "down",
        }
    }
}
