//! `kilnd`'s configuration: a TOML file whose every key has a default.
//!
//! [`DEFAULT_CONFIG`] is the embedded default file, with each key explained;
//! `kilnd --print-default-config` prints it. A file given by `--config` only
//! needs the keys it changes; unknown keys are refused.

use std::path::{Path, PathBuf};

use serde::Deserialize;

mod sections;
#[cfg(test)]
mod tests;

pub use sections::*;
use thiserror::Error;

/// The embedded default configuration, documented (`config/default.toml`).
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

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
    pub http: HttpConfig,
    pub tcp: TcpConfig,
    pub console: ConsoleConfig,
    pub disks: DisksConfig,
    pub images: ImagesConfig,
    pub networks: NetworksConfig,
    pub dhcp: DhcpConfig,
    pub openstack: OpenstackConfig,
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
        let h = &self.http;
        if h.max_connections == 0 || h.max_connections_per_peer == 0 {
            return Err(ConfigError::Invalid(
                "http.max_connections and http.max_connections_per_peer must be at least 1".into(),
            ));
        }
        if !(1..=3600).contains(&h.header_timeout_s) || !(1..=3600).contains(&h.body_idle_timeout_s)
        {
            return Err(ConfigError::Invalid(format!(
                "http.header_timeout_s and http.body_idle_timeout_s must be from 1 to 3600 \
                 seconds, not {} and {}",
                h.header_timeout_s, h.body_idle_timeout_s
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
