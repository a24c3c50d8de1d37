//! Images: their record, create body (kernel, disk import or upload) and
//! import progress (`/v1/images`); formats are in `image.rs`.

use serde::{Deserialize, Serialize};

use super::*;

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
