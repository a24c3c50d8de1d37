//! `kilnd`'s configuration: a TOML file whose every key has a default.
//!
//! [`DEFAULT_CONFIG`] is the embedded default file, with each key explained;
//! `kilnd --print-default-config` prints it. A file given by `--config` only
//! needs the keys it changes; unknown keys are refused.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

/// The embedded default configuration, documented.
pub const DEFAULT_CONFIG: &str = r#"# kilnd configuration. Every key is shown with its default value.

# Where the SQLite store, the image store and each server's files live.
# (`kilnd --state-dir DIR` overrides it.)
state_dir = "/var/lib/kiln"

# The REST API's unix socket (`kilnd --socket PATH` overrides it). It is made
# mode `socket_mode` and group `socket_group` (created if missing, as Incus
# does); members of that group may use the API.
socket = "/run/kiln/kiln.sock"
socket_group = "kiln"
socket_mode = 0o660

# Largest request body accepted, in bytes (larger ones answer 413).
max_body_bytes = 262144

[placement]
# capacity = (total - reserved) x allocation ratio, per resource.
# Defaults as Nova 2023.1.
cpu_allocation_ratio = 4.0
ram_allocation_ratio = 1.0
disk_allocation_ratio = 1.0
reserved_host_cpus = 0
reserved_host_memory_mb = 512
reserved_host_disk_gb = 0
# Totals are detected from the host (online CPUs, MemTotal of /proc/meminfo,
# the file system of state_dir, or with disks.backend = "lvm" the thin pool's
# data size) unless set here:
# total_vcpus = 2
# total_ram_mb = 4096
# total_disk_gb = 100

[vmm]
# The kiln-vmm binary; by default the `kiln-vmm` next to the kilnd binary.
# binary = "/usr/local/bin/kiln-vmm"
# CPU template given to every VM (`host`, `kvm-nested`, ...).
cpu_template = "host"
# Seconds a new VMM has to answer on its control socket before the server
# goes to ERROR.
boot_timeout_s = 30
# Seconds a graceful stop (ACPI power button) may take before the VMM is
# killed.
stop_timeout_s = 30
# Seconds a deleted server's console log is kept (under
# state_dir/console-archive).
console_retention_s = 86400

[disks]
# Where each server's root disk (the flavor's disk_gb) lives:
# "qcow2": a qcow2 overlay on the image, state_dir/servers/ID/root.qcow2.
# "lvm":   Nova's images_type=lvm: each disk image is copied once into a
#          thin LV `kiln-image-IMAGE_ID` of `thin_pool` in `volume_group`;
#          each root disk is a thin snapshot of it, `kiln-SERVER_ID-root`,
#          grown to the flavor's size and attached as a raw block device.
#          Disk capacity for placement is then the thin pool's data size.
#          Needs lvm2 and a kernel with device-mapper (dm-thin).
backend = "qcow2"
# For "lvm": the volume group and the thin pool in it (both must exist).
volume_group = "kiln"
thin_pool = "kiln-pool"

# Largest disk image accepted by upload (PUT /v1/images/ID/file), in bytes;
# a larger body answers 413. Uploads do not count against max_body_bytes.
[images]
max_upload_bytes = 68719476736
# An upload whose client sends no body bytes for this many seconds is
# abandoned as if the client had left: the image is `queued` again, its
# partial file removed, and a client still there gets 408. At least 1.
upload_idle_timeout_s = 60
# Directories from which disk images may be imported by path and kernels
# and initramfs files registered (absolute paths). kilnd runs as root, so
# any other host path is refused: a path must lie under one of these (or
# under state_dir/import, always allowed; kilnd creates it, root-only), be
# reached without following a symlink below the directory, and be a
# regular file. Put images there, or list the directories that hold them,
# e.g. ["/srv/images", "/home/ci/kiln/cache"]. Whoever may write in a
# listed directory may have kilnd read what they put there: list only
# directories whose writers may read what they hold (and keep the kernel's
# fs.protected_hardlinks = 1, so no one can hardlink a file they cannot
# read into one).
import_dirs = []

[firmware]
# Firmware for servers whose image is a disk image (they boot through it
# from their root disk; kernel images boot directly). The defaults are where
# Debian's `seabios` and `ovmf` packages install them. A server whose
# firmware file is missing is refused at create (409) and goes to ERROR with
# a fault naming the file if it disappears later.
# SeaBIOS, for `firmware: bios`.
bios = "/usr/share/seabios/bios.bin"
# SeaBIOS with TPM support (measured boot), for `firmware: bios` servers
# with `tpm: true`: Debian's bios.bin has none, its bios-256k.bin has. By
# default `bios-256k.bin` in the directory of `bios`.
# bios_tpm = "/usr/share/seabios/bios-256k.bin"
# OVMF's code, for `firmware: uefi`, mapped read-only.
uefi_code = "/usr/share/OVMF/OVMF_CODE.fd"
# OVMF's empty variable store: each UEFI server gets its own copy of it
# (`nvram.fd` in its directory, made at create, kept across stop, start and
# reboot, deleted with the server). Code and variable store must come from
# the same OVMF build (Debian 13 ships only the 4 MiB pair,
# OVMF_CODE_4M.fd and OVMF_VARS_4M.fd: name those there).
uefi_vars_template = "/usr/share/OVMF/OVMF_VARS.fd"
# Servers with `secure_boot: true` (UEFI Secure Boot on from the first
# boot) run OVMF's 4 MiB build, which enforces Secure Boot without SMM
# (Kiln's i440FX machine has none; the `secboot` build needs it), with a
# copy of a variable store that has keys enrolled and Secure Boot on.
# Defaults: `OVMF_CODE_4M.fd` beside `uefi_code`, and Debian's
# `OVMF_VARS_4M.ms.fd` beside `uefi_vars_template` (Microsoft's 2011
# KEK and db certificates only); `scripts/setup.sh` makes
# `cache/guest/OVMF_VARS_4M.ms2023.fd` with the 2011 and 2023 ones
# (virt-fw-vars), which Windows media signed after 2026 need.
# uefi_code_secboot = "/usr/share/OVMF/OVMF_CODE_4M.fd"
# uefi_vars_secboot_template = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
# The VGA BIOS SeaBIOS runs for servers with `display: vga` (Debian's
# `seabios` ships it); default: `vgabios-stdvga.bin` beside `bios`.
# vga_rom = "/usr/share/seabios/vgabios-stdvga.bin"

[tpm]
# Servers with `tpm: true` get a TPM 2.0 backed by one `swtpm` each (Debian
# `swtpm` and `swtpm-tools`); its state is made once by `swtpm_setup`, with
# an endorsement key certificate, in the server's directory (`tpm/`). A
# create asking for a TPM where these are missing is refused (409).
swtpm = "/usr/bin/swtpm"
swtpm_setup = "/usr/bin/swtpm_setup"

[smbios]
# What each server's SMBIOS (DMI) tables say: its system UUID and serial
# number are the server id; manufacturer and product are what cloud-init's
# OpenStack datasource looks for on x86 (the values Nova's libvirt driver
# sets), so that it reads the metadata service. Up to 64 bytes each.
manufacturer = "OpenStack Foundation"
product = "OpenStack Nova"
family = "Virtual Machine"

[networks]
# The `default` network: a `nat` network (bridge `kilnbr0`), as libvirt's
# `default` (virbr0, 192.168.122.0/24), on a subnet that does not clash with
# libvirt's, Docker's (172.17.0.0/16) or the 10.0.0.0/16 of many clouds'
# networks. kilnd creates it at start, once: deleted, it stays deleted until
# `default_cidr` changes or `default` is turned off and on again. A CIDR that
# overlaps a host route is skipped with a warning. `false`: none.
default = true
default_cidr = "192.168.150.0/24"

[dhcp]
# kilnd's DHCPv4 server, on every network with a subnet and `dhcp` on: it
# gives each NIC its fixed address. Seconds a lease lasts (renewal at half,
# rebinding at 7/8 of it); Neutron's default. At least 120.
lease_secs = 86400
# The domain name (option 15) sent with every lease; none unless set.
# domain = "example.internal"

[tcp]
# An optional TCP listener for the same API, off unless `listen` is set.
# Every request on it must carry `Authorization: Bearer TOKEN`, TOKEN being
# the first line of `token_file` (kilnd refuses to start without one).
# listen = "127.0.0.1:8774"
# token_file = "/etc/kiln/api-token"

[openstack]
# The OpenStack-compatible API (Keystone, Nova, Glance and Neutron subsets,
# `manager/README.md`) under /identity, /compute, /image and /network, on the
# unix socket and on the TCP listener. Every route but the version documents
# and POST /identity/v3/auth/tokens needs a Keystone token (`X-Auth-Token`).
# One user and one project, both `admin`, in domain `default`.
# The admin user's password; when unset, the first line of
# STATE_DIR/openstack-admin-password, made (random, mode 0600) at first start.
# admin_password = "..."
# How long an issued token lives, in seconds.
token_ttl_s = 3600
# The region every catalog endpoint is in.
region = "RegionOne"
# The base URL of the catalog's endpoints and the discovery documents' links;
# when unset, `http://` and the request's Host header.
# public_url = "http://kiln.example:8774"
[console]
# The browser console (`POST /v1/servers/{id}/remote-consoles`), served on
# the `[tcp]` listener: seconds a console URL's one-time token lasts
# (Nova's default).
token_ttl = 600
# The unpacked npm package `@novnc/novnc` (its `core/` and `vendor/`) that
# the console page loads; unset: no page, only the websocket.
# novnc_dir = "/usr/share/kiln/novnc"
# The console URLs' start; unset: `http://` and `[tcp] listen`.
# base_url = "https://kiln.example:8774"
"#;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config")]
    Parse(#[from] toml::de::Error),
    #[error("invalid config: {0}")]
    Invalid(String),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub socket_group: String,
    pub socket_mode: u32,
    pub max_body_bytes: usize,
    pub placement: PlacementConfig,
    pub vmm: VmmConfig,
    pub firmware: FirmwareConfig,
    pub tpm: TpmConfig,
    pub smbios: SmbiosConfig,
    pub tcp: TcpConfig,
    pub console: ConsoleConfig,
    pub disks: DisksConfig,
    pub images: ImagesConfig,
    pub networks: NetworksConfig,
    pub dhcp: DhcpConfig,
    pub openstack: OpenstackConfig,
}

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

impl Config {
    /// The embedded defaults.
    pub fn default_config() -> Config {
        Config::parse(DEFAULT_CONFIG).expect("the embedded default config parses")
    }

    /// Parses a file's text, filling what it leaves out from the defaults.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut merged: toml::Table = DEFAULT_CONFIG.parse()?;
        let user: toml::Table = text.parse()?;
        merge(&mut merged, user);
        let config: Config = toml::Value::Table(merged).try_into()?;
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.placement;
        for (name, ratio) in [
            ("cpu_allocation_ratio", p.cpu_allocation_ratio),
            ("ram_allocation_ratio", p.ram_allocation_ratio),
            ("disk_allocation_ratio", p.disk_allocation_ratio),
        ] {
            if !(ratio.is_finite() && ratio > 0.0 && ratio <= 1000.0) {
                return Err(ConfigError::Invalid(format!(
                    "placement.{name} must be in (0, 1000], not {ratio}"
                )));
            }
        }
        if self.socket_mode > 0o777 {
            return Err(ConfigError::Invalid(format!(
                "socket_mode {:o} is not a permission mode",
                self.socket_mode
            )));
        }
        let o = &self.openstack;
        if !(60..=7 * 86400).contains(&o.token_ttl_s) {
            return Err(ConfigError::Invalid(format!(
                "openstack.token_ttl_s must be from 60 to 604800 seconds, not {}",
                o.token_ttl_s
            )));
        }
        if o.admin_password.as_ref().is_some_and(|p| p.len() < 8) {
            return Err(ConfigError::Invalid(
                "openstack.admin_password must be at least 8 characters".into(),
            ));
        }
        if let Some(u) = &o.public_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) || u.ends_with('/') {
                return Err(ConfigError::Invalid(format!(
                    "openstack.public_url must start with http:// or https:// and not end with '/': {u:?}"
                )));
            }
        }
        if self.tcp.listen.is_some() && self.tcp.token_file.is_none() {
            return Err(ConfigError::Invalid(
                "tcp.listen needs tcp.token_file: the TCP API always requires a bearer token"
                    .into(),
            ));
        }
        let c = &self.console;
        if !(1..=86400).contains(&c.token_ttl) {
            return Err(ConfigError::Invalid(format!(
                "console.token_ttl must be 1 to 86400 seconds, not {}",
                c.token_ttl
            )));
        }
        if c.novnc_dir.as_ref().is_some_and(|d| !d.is_absolute()) {
            return Err(ConfigError::Invalid(
                "console.novnc_dir must be an absolute path".into(),
            ));
        }
        if let Some(u) = &c.base_url {
            if !(u.starts_with("http://") || u.starts_with("https://"))
                || u.contains(['?', '#', ' '])
            {
                return Err(ConfigError::Invalid(format!(
                    "console.base_url must be an http:// or https:// URL without query, not {u:?}"
                )));
            }
        }
        for (key, name) in [
            ("disks.volume_group", &self.disks.volume_group),
            ("disks.thin_pool", &self.disks.thin_pool),
        ] {
            crate::lvm::check_lvm_name(name)
                .map_err(|e| ConfigError::Invalid(format!("{key}: {e}")))?;
        }
        let f = &self.firmware;
        for (name, p) in [
            ("bios", &f.bios),
            ("bios_tpm", &f.bios_tpm()),
            ("uefi_code", &f.uefi_code),
            ("uefi_vars_template", &f.uefi_vars_template),
            ("uefi_code_secboot", &f.uefi_code_secboot()),
            (
                "uefi_vars_secboot_template",
                &f.uefi_vars_secboot_template(),
            ),
        ]
        .into_iter()
        .chain(f.vga_rom.as_ref().map(|p| ("vga_rom", p)))
        {
            if !p.is_absolute() {
                return Err(ConfigError::Invalid(format!(
                    "firmware.{name} must be an absolute path, not {}",
                    p.display()
                )));
            }
        }
        let s = &self.smbios;
        for (name, v) in [
            ("manufacturer", &s.manufacturer),
            ("product", &s.product),
            ("family", &s.family),
        ] {
            if v.len() > kiln_api::vm::SmbiosConfig::MAX_STRING_LEN || v.contains('\0') {
                return Err(ConfigError::Invalid(format!(
                    "smbios.{name} must be at most {} bytes, without NUL",
                    kiln_api::vm::SmbiosConfig::MAX_STRING_LEN
                )));
            }
        }
        for d in &self.images.import_dirs {
            if !d.is_absolute()
                || d.components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(ConfigError::Invalid(format!(
                    "images.import_dirs: {} must be an absolute path without '..'",
                    d.display()
                )));
            }
        }
        crate::ipam::check_subnet(Some(&self.networks.default_cidr), None, &[])
            .map_err(|e| ConfigError::Invalid(format!("networks.default_cidr: {e}")))?;
        if self.images.upload_idle_timeout_s == 0 {
            return Err(ConfigError::Invalid(
                "images.upload_idle_timeout_s must be at least 1".into(),
            ));
        }
        if self.dhcp.lease_secs < 120 {
            return Err(ConfigError::Invalid(
                "dhcp.lease_secs must be at least 120".into(),
            ));
        }
        if let Some(d) = &self.dhcp.domain {
            if !is_domain_name(d) {
                return Err(ConfigError::Invalid(format!(
                    "dhcp.domain {d:?} is not a domain name (labels of a-z, 0-9 and '-', \
                     dot-separated, at most 253 bytes)"
                )));
            }
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "max_body_bytes must be at least 1024".into(),
            ));
        }
        Ok(())
    }

    /// The kiln-vmm binary: as configured, else next to the running binary.
    pub fn vmm_binary(&self) -> PathBuf {
        if let Some(b) = &self.vmm.binary {
            return b.clone();
        }
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("kiln-vmm")))
            .unwrap_or_else(|| PathBuf::from("kiln-vmm"))
    }
}

/// A DNS domain name: dot-separated labels of 1 to 63 ASCII letters,
/// digits and `-` (not at either end), at most 253 bytes.
fn is_domain_name(d: &str) -> bool {
    d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Overlays `user` on `base`, table by table.
fn merge(base: &mut toml::Table, user: toml::Table) {
    for (k, v) in user {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(u)) => merge(b, u),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_match_nova() {
        let c = Config::default_config();
        assert_eq!(c.placement.cpu_allocation_ratio, 4.0);
        assert_eq!(c.placement.ram_allocation_ratio, 1.0);
        assert_eq!(c.placement.disk_allocation_ratio, 1.0);
        assert_eq!(c.placement.reserved_host_memory_mb, 512);
        assert_eq!(c.socket, PathBuf::from("/run/kiln/kiln.sock"));
        assert_eq!(c.socket_mode, 0o660);
        assert_eq!(c.placement.total_vcpus, None);
        assert_eq!(
            c.firmware.bios,
            PathBuf::from("/usr/share/seabios/bios.bin")
        );
        assert_eq!(
            c.firmware.uefi_code,
            PathBuf::from("/usr/share/OVMF/OVMF_CODE.fd")
        );
        assert_eq!(
            c.firmware.uefi_vars_template,
            PathBuf::from("/usr/share/OVMF/OVMF_VARS.fd")
        );
        assert_eq!(c.smbios.manufacturer, "OpenStack Foundation");
        assert_eq!(c.smbios.product, "OpenStack Nova");
    }

    #[test]
    fn smbios_strings_are_checked() {
        let c = Config::parse("[smbios]\nproduct = \"Other Cloud\"\n").unwrap();
        assert_eq!(c.smbios.product, "Other Cloud");
        assert_eq!(c.smbios.manufacturer, "OpenStack Foundation");
        let long = format!("[smbios]\nproduct = \"{}\"\n", "x".repeat(65));
        assert!(Config::parse(&long).is_err());
        assert!(Config::parse("[smbios]\nfamily = \"a\\u0000b\"\n").is_err());
    }

    #[test]
    fn partial_file_overrides_only_its_keys() {
        let c =
            Config::parse("[placement]\ncpu_allocation_ratio = 2.0\ntotal_vcpus = 3\n").unwrap();
        assert_eq!(c.placement.cpu_allocation_ratio, 2.0);
        assert_eq!(c.placement.total_vcpus, Some(3));
        assert_eq!(c.placement.ram_allocation_ratio, 1.0);
        assert_eq!(c.vmm.stop_timeout_s, 30);
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(Config::parse("nonsense = 1\n").is_err());
        assert!(Config::parse("[placement]\ncpu_allocation_ratio = -1.0\n").is_err());
        assert!(Config::parse("[placement]\nram_allocation_ratio = \"x\"\n").is_err());
        assert!(Config::parse("socket_mode = 0o7777\n").is_err());
        assert!(Config::parse("[vmm\n").is_err());
        assert!(Config::parse("[disks]\nbackend = \"zfs\"\n").is_err());
        assert!(Config::parse("[disks]\nvolume_group = \"a/b\"\n").is_err());
        let c = Config::parse("[disks]\nbackend = \"lvm\"\nvolume_group = \"vg0\"\n").unwrap();
        assert_eq!(c.disks.backend, DiskBackendKind::Lvm);
        assert_eq!(c.disks.thin_pool, "kiln-pool");
        assert_eq!(
            Config::default_config().disks.backend,
            DiskBackendKind::Qcow2
        );
        assert!(Config::parse("[firmware]\nbios = \"bios.bin\"\n").is_err());
        assert!(Config::parse("[firmware]\nseabios = \"/b\"\n").is_err());
        let c = Config::parse("[firmware]\nuefi_code = \"/x/CODE.fd\"\n").unwrap();
        assert_eq!(c.firmware.uefi_code, PathBuf::from("/x/CODE.fd"));
        assert_eq!(
            c.firmware.bios,
            PathBuf::from("/usr/share/seabios/bios.bin")
        );
        assert!(Config::parse("[tcp]\nlisten = \"127.0.0.1:1\"\n").is_err());
        assert!(Config::default_config().images.import_dirs.is_empty());
        assert!(Config::parse("[images]\nimport_dirs = [\"rel\"]\n").is_err());
        assert!(Config::parse("[images]\nimport_dirs = [\"/a/../etc\"]\n").is_err());
        let c = Config::parse("[images]\nimport_dirs = [\"/srv/img\"]\n").unwrap();
        assert_eq!(c.images.import_dirs, vec![PathBuf::from("/srv/img")]);
        assert!(Config::parse("[tcp]\nlisten = \"nonsense\"\ntoken_file = \"/t\"\n").is_err());
        let c = Config::parse("[tcp]\nlisten = \"127.0.0.1:1\"\ntoken_file = \"/t\"\n").unwrap();
        assert_eq!(c.tcp.listen.unwrap().port(), 1);
        assert_eq!(Config::default_config().console.token_ttl, 600);
        for bad in [
            "token_ttl = 0",
            "novnc_dir = \"rel\"",
            "base_url = \"ftp://x\"",
            "x = 1",
        ] {
            assert!(
                Config::parse(&format!("[console]\n{bad}\n")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_default_network_is_on_and_its_cidr_checked() {
        let c = Config::default_config();
        assert!(c.networks.default);
        assert_eq!(c.networks.default_cidr, "192.168.150.0/24");
        let c = Config::parse(
            "[networks]
default = false
",
        )
        .unwrap();
        assert!(!c.networks.default);
        for bad in ["10.0.0.1/24", "10.0.0.0", "10.0.0.0/31"] {
            let e = Config::parse(&format!(
                "[networks]
default_cidr = {bad:?}
"
            ));
            let e = e.unwrap_err().to_string();
            assert!(e.contains("networks.default_cidr"), "{bad}: {e}");
        }
    }

    #[test]
    fn dhcp_settings_are_checked() {
        let c = Config::default_config();
        assert_eq!((c.dhcp.lease_secs, c.dhcp.domain), (86400, None));
        let c = Config::parse("[dhcp]\nlease_secs = 600\ndomain = \"lab.example\"\n").unwrap();
        assert_eq!(c.dhcp.lease_secs, 600);
        assert_eq!(c.dhcp.domain.as_deref(), Some("lab.example"));
        for bad in [
            "lease_secs = 119",
            "lease_secs = -1",
            "domain = \"a..b\"",
            "domain = \"-a.b\"",
            "domain = \"a b\"",
            "expiry = 1",
        ] {
            assert!(Config::parse(&format!("[dhcp]\n{bad}\n")).is_err(), "{bad}");
        }
    }
}
