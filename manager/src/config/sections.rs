//! The config file's sections, each a struct serde fills from its table
//! (every key defaulted by `default.toml`).

use std::path::PathBuf;

use serde::Deserialize;

/// `[openstack]`: the OpenStack-compatible API.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenstackConfig {
    #[serde(default)]
    pub admin_password: Option<String>,
    pub token_ttl_s: u64,
    pub region: String,
    #[serde(default)]
    pub public_url: Option<String>,
}

/// `[networks]`: the `default` network.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworksConfig {
    pub default: bool,
    pub default_cidr: String,
}

/// `[dhcp]`: what kilnd's DHCP server puts in every lease.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpConfig {
    pub lease_secs: u32,
    #[serde(default)]
    pub domain: Option<String>,
}

impl Default for DhcpConfig {
    fn default() -> DhcpConfig {
        DhcpConfig {
            lease_secs: 86400,
            domain: None,
        }
    }
}

/// Which ephemeral-disk backend to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskBackendKind {
    Qcow2,
    Lvm,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisksConfig {
    pub backend: DiskBackendKind,
    pub volume_group: String,
    pub thin_pool: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesConfig {
    pub max_upload_bytes: u64,
    pub upload_idle_timeout_s: u64,
    pub import_dirs: Vec<PathBuf>,
}

/// `[smbios]`: the SMBIOS identity every server gets (plus its id as
/// UUID and serial).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmbiosConfig {
    pub manufacturer: String,
    pub product: String,
    pub family: String,
}

/// `[firmware]`: the host's firmware files.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirmwareConfig {
    pub bios: PathBuf,
    /// See [`FirmwareConfig::bios_tpm`].
    #[serde(default, rename = "bios_tpm")]
    pub bios_tpm_path: Option<PathBuf>,
    pub uefi_code: PathBuf,
    pub uefi_vars_template: PathBuf,
    /// See [`FirmwareConfig::uefi_code_secboot`].
    #[serde(default, rename = "uefi_code_secboot")]
    pub uefi_code_secboot_path: Option<PathBuf>,
    /// See [`FirmwareConfig::uefi_vars_secboot_template`].
    #[serde(default, rename = "uefi_vars_secboot_template")]
    pub uefi_vars_secboot_path: Option<PathBuf>,
    /// None: `vgabios-stdvga.bin` beside `bios`.
    #[serde(default)]
    pub vga_rom: Option<PathBuf>,
}

/// `[tpm]`: the swtpm programs behind servers' TPMs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmConfig {
    pub swtpm: PathBuf,
    pub swtpm_setup: PathBuf,
}

impl FirmwareConfig {
    /// SeaBIOS for servers with a TPM: as configured, else
    /// `bios-256k.bin` next to `bios`.
    pub fn bios_tpm(&self) -> PathBuf {
        self.bios_tpm_path
            .clone()
            .unwrap_or_else(|| self.bios.with_file_name("bios-256k.bin"))
    }

    /// OVMF for Secure Boot servers: as configured, else
    /// `OVMF_CODE_4M.fd` next to `uefi_code`.
    pub fn uefi_code_secboot(&self) -> PathBuf {
        self.uefi_code_secboot_path
            .clone()
            .unwrap_or_else(|| self.uefi_code.with_file_name("OVMF_CODE_4M.fd"))
    }

    /// Secure Boot servers' variable store template: as configured, else
    /// Debian's `OVMF_VARS_4M.ms.fd` next to `uefi_vars_template`.
    pub fn uefi_vars_secboot_template(&self) -> PathBuf {
        self.uefi_vars_secboot_path
            .clone()
            .unwrap_or_else(|| self.uefi_vars_template.with_file_name("OVMF_VARS_4M.ms.fd"))
    }
}

/// `[http]`: what one listener holds before it pushes out or refuses.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    pub header_timeout_s: u64,
    pub body_idle_timeout_s: u64,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpConfig {
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// `[console]`: the browser console on the TCP listener.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    pub token_ttl: u64,
    #[serde(default)]
    pub novnc_dir: Option<PathBuf>,
    #[serde(default)]
    pub base_url: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementConfig {
    pub cpu_allocation_ratio: f64,
    pub ram_allocation_ratio: f64,
    pub disk_allocation_ratio: f64,
    pub reserved_host_cpus: u64,
    pub reserved_host_memory_mb: u64,
    pub reserved_host_disk_gb: u64,
    #[serde(default)]
    pub total_vcpus: Option<u64>,
    #[serde(default)]
    pub total_ram_mb: Option<u64>,
    #[serde(default)]
    pub total_disk_gb: Option<u64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmmConfig {
    #[serde(default)]
    pub binary: Option<PathBuf>,
    pub cpu_template: String,
    pub boot_timeout_s: u64,
    pub stop_timeout_s: u64,
    pub console_retention_s: u64,
}
