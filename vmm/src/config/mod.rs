//! From the command line (or a JSON file) to a validated
//! [`kiln_api::vm::VmConfig`].

mod ahci;
pub mod cli;

use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use clap::Parser;
use kiln_api::vm::{
    BootProtocol, CpusConfig, FirmwareConfig, KernelConfig, MemoryConfig, NetConfig, SerialConfig,
    SmbiosConfig, VmConfig,
};

use crate::arch::x86_64::{cpuid, smbios};
use crate::devices::virtio::net::MAX_QUEUE_PAIRS;
use crate::net::MacAddr;

/// kiln-vmm: run one KVM virtual machine.
///
/// Describe the VM with flags, or with `--config FILE` (the JSON form of the
/// same description, as kilnd writes it).
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Args {
    /// VM description as JSON (kiln_api::vm::VmConfig); excludes the VM flags.
    #[arg(long, conflicts_with_all = ["kernel", "firmware", "cpus", "memory"])]
    pub config: Option<PathBuf>,
    /// Kernel to boot directly: ELF vmlinux (PVH or 64-bit entry) or bzImage.
    #[arg(long, required_unless_present_any = ["config", "firmware"], conflicts_with = "firmware")]
    pub kernel: Option<String>,
    /// Boot through this firmware image instead (SeaBIOS bios.bin, OVMF_CODE.fd).
    #[arg(long)]
    pub firmware: Option<String>,
    /// The VM's own copy of OVMF's variable store (OVMF_VARS.fd); written by the guest.
    #[arg(long)]
    pub firmware_vars: Option<String>,
    #[arg(long)]
    pub initramfs: Option<String>,
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// Kernel entry point: auto (PVH if the kernel has one), linux, pvh.
    #[arg(long, default_value = "auto", value_parser = parse_protocol)]
    pub boot_protocol: BootProtocol,
    /// Number of vCPUs.
    #[arg(long)]
    pub cpus: Option<u8>,
    /// Guest RAM, e.g. 512M, 2G (a plain number is MiB).
    #[arg(long, value_parser = parse_size_mib)]
    pub memory: Option<u64>,
    /// Back guest RAM with a memfd (shareable) instead of anonymous memory.
    #[arg(long)]
    pub shared_memory: bool,
    /// Back guest RAM with huge pages.
    #[arg(long)]
    pub hugepages: bool,
    /// CPU template: host, x86-64-v2, kvm-nested.
    #[arg(long, default_value = "host")]
    pub cpu_template: String,
    /// Append the serial console's output to this file.
    #[arg(long)]
    pub serial_log: Option<String>,
    /// Serve the serial console on this unix socket.
    #[arg(long)]
    pub console_socket: Option<String>,
    /// Use stdin/stdout as the serial console.
    #[arg(long)]
    pub serial_stdout: bool,
    /// Control API socket (HTTP/JSON).
    #[arg(long)]
    pub api_socket: Option<String>,
    /// Write how the VM ended here (JSON) just before exiting.
    #[arg(long)]
    pub exit_file: Option<String>,
    /// A disk (repeatable): path=FILE[,format=raw|qcow2][,bus=virtio|sata][,readonly=on][,direct=on][,serial=ID][,bw=BYTES_PER_S][,iops=N]
    #[arg(long = "disk", value_name = "path=FILE,...", value_parser = cli::parse_disk)]
    pub disks: Vec<kiln_api::vm::DiskConfig>,
    /// An ATAPI CD-ROM on the AHCI controller (repeatable): an ISO 9660 image, read-only; after the SATA disks.
    #[arg(long = "cdrom", value_name = "PATH")]
    pub cdroms: Vec<String>,
    /// A virtio-net NIC (repeatable): tap=NAME[,queues=N], fd=N or fds=N:N:..., plus [,mac=MAC][,bw=BYTES_PER_S][,pps=N][,rx_bw=BYTES_PER_S][,rx_pps=N]
    #[arg(long = "net", value_name = "tap=NAME|fd=N|fds=N:N,...", value_parser = cli::parse_net)]
    pub nets: Vec<kiln_api::vm::NetConfig>,
    /// A virtio-rng entropy device: --rng, or --rng transitional=on
    #[arg(long, value_name = "transitional=on", num_args = 0..=1, default_missing_value = "", value_parser = cli::parse_rng)]
    pub rng: Option<cli::RngOptions>,
    /// SMBIOS (DMI) identity: manufacturer=S,product=S,version=S,serial=S,uuid=UUID,sku=S,family=S,asset_tag=S
    #[arg(long, value_name = "key=value,...", value_parser = cli::parse_smbios)]
    pub smbios: Option<kiln_api::vm::SmbiosConfig>,
    /// A TPM 2.0 (CRB) backed by swtpm: socket=PATH, swtpm's control socket.
    #[arg(long, value_name = "socket=PATH", value_parser = cli::parse_tpm)]
    pub tpm: Option<kiln_api::vm::TpmConfig>,
    /// The guest agent channel: a virtio-console port named org.qemu.guest_agent.0, served on this unix socket.
    #[arg(long, value_name = "PATH")]
    pub agent: Option<String>,
    /// Hyper-V enlightenments for a Windows guest (the set Nova uses for os_type=windows).
    #[arg(long)]
    pub hyperv: bool,
    /// Keep the RTC in host local time instead of UTC (as Windows expects).
    #[arg(long)]
    pub rtc_local_time: bool,
    /// A display device: vga (QEMU's standard VGA). Off by default.
    #[arg(long, value_parser = cli::parse_display)]
    pub display: Option<kiln_api::vm::DisplayDevice>,
    /// The VGA BIOS for SeaBIOS (vgabios-stdvga.bin); default: the file of that name beside --firmware.
    #[arg(long, requires = "display")]
    pub vga_rom: Option<String>,
    /// Serve the display over VNC (RFB 3.8, no authentication) on this unix socket.
    #[arg(long, requires = "display")]
    pub vnc: Option<String>,
    /// No virtio-input tablet beside the display (the PS/2 mouse stays).
    #[arg(long, requires = "display")]
    pub no_tablet: bool,
    /// Write the screen as a PNG to this file when the VM ends on a fault (triple fault, emulation failure, host error).
    #[arg(long, requires = "display", value_name = "PATH")]
    pub last_screenshot: Option<String>,
    /// Seccomp filters on every thread: kill (a forbidden system call kills the VMM), log, off.
    #[arg(long, default_value = "kill", value_parser = crate::seccomp::parse_mode)]
    pub seccomp: crate::seccomp::SeccompMode,
    /// Log level: error, warn, info, debug.
    #[arg(long, default_value = "info", value_parser = parse_level)]
    pub log_level: log::LevelFilter,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}", .0.display())]
    Read(PathBuf, #[source] std::io::Error),
    #[error("{} is not a valid VM description", .0.display())]
    Parse(PathBuf, #[source] serde_json::Error),
    #[error("{0}")]
    Invalid(String),
}

fn parse_level(s: &str) -> Result<log::LevelFilter, String> {
    s.parse()
        .map_err(|_| format!("unknown log level {s:?}: use error, warn, info, debug"))
}

fn parse_protocol(s: &str) -> Result<BootProtocol, String> {
    match s {
        "auto" => Ok(BootProtocol::Auto),
        "linux" => Ok(BootProtocol::Linux),
        "pvh" => Ok(BootProtocol::Pvh),
        _ => Err(format!(
            "unknown boot protocol {s:?}: use auto, linux or pvh"
        )),
    }
}

/// `512M`, `2G`, `1024` (MiB), `1T` → MiB.
pub fn parse_size_mib(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult = match c.to_ascii_uppercase() {
                'M' => 1,
                'G' => 1024,
                'T' => 1024 * 1024,
                _ => return Err(format!("unknown size suffix in {s:?}: use M, G or T")),
            };
            (&s[..i], mult)
        }
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{s:?} is not a size like 512M or 2G"))
}

impl Args {
    /// The VM description these arguments give.
    pub fn vm_config(&self) -> Result<VmConfig, ConfigError> {
        if self.firmware_vars.is_some() && self.firmware.is_none() {
            return Err(ConfigError::Invalid(
                "--firmware-vars needs --firmware".into(),
            ));
        }
        let cfg = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::Read(path.clone(), e))?;
                serde_json::from_str(&text).map_err(|e| ConfigError::Parse(path.clone(), e))?
            }
            None => VmConfig {
                cpus: CpusConfig {
                    count: self.cpus.unwrap_or(1),
                    template: self.cpu_template.clone(),
                },
                memory: MemoryConfig {
                    size_mib: self.memory.unwrap_or(512),
                    shared: self.shared_memory,
                    hugepages: self.hugepages,
                },
                kernel: self.kernel.as_ref().map(|k| KernelConfig {
                    path: k.clone(),
                    initramfs: self.initramfs.clone(),
                    cmdline: self.cmdline.clone(),
                    protocol: self.boot_protocol,
                }),
                firmware: self.firmware.as_ref().map(|path| FirmwareConfig {
                    path: path.clone(),
                    vars: self.firmware_vars.clone(),
                }),
                serial: SerialConfig {
                    log: self.serial_log.clone(),
                    socket: self.console_socket.clone(),
                    stdio: self.serial_stdout,
                },
                api_socket: self.api_socket.clone(),
                exit_file: self.exit_file.clone(),
                disks: self.disks.clone(),
                cdroms: self
                    .cdroms
                    .iter()
                    .map(|path| kiln_api::vm::CdromConfig { path: path.clone() })
                    .collect(),
                nets: self.nets.clone(),
                rng: self.rng.is_some(),
                rng_transitional: self.rng.is_some_and(|o| o.transitional),
                hyperv: self.hyperv,
                rtc_local_time: self.rtc_local_time,
                smbios: self.smbios.clone(),
                display: self.display.map(|device| kiln_api::vm::DisplayConfig {
                    device,
                    rom: self.vga_rom.clone(),
                    vnc: self.vnc.clone(),
                    tablet: !self.no_tablet,
                    last_screenshot: self.last_screenshot.clone(),
                }),
                tpm: self.tpm.clone(),
                agent: self
                    .agent
                    .clone()
                    .map(|socket| kiln_api::vm::AgentConfig { socket }),
            },
        };
        validate(&cfg)?;
        Ok(cfg)
    }
}

/// Check what serde cannot: ranges and combinations.
pub fn validate(cfg: &VmConfig) -> Result<(), ConfigError> {
    let bad = |m: String| Err(ConfigError::Invalid(m));
    if cfg.cpus.count == 0 || cfg.cpus.count > 254 {
        return bad(format!("cpus must be 1 to 254, not {}", cfg.cpus.count));
    }
    if let Err(e) = cpuid::template(&cfg.cpus.template) {
        return bad(e.to_string());
    }
    if cfg.memory.size_mib < 16 || cfg.memory.size_mib > (1 << 20) {
        return bad(format!(
            "memory must be 16 MiB to 1 TiB, not {} MiB",
            cfg.memory.size_mib
        ));
    }
    match (&cfg.kernel, &cfg.firmware) {
        (None, None) => return bad("nothing to boot: give a kernel or a firmware".into()),
        (Some(_), Some(_)) => return bad("give a kernel or a firmware, not both".into()),
        (None, Some(_)) | (Some(_), None) => {}
    }
    if cfg.display.is_some() && cfg.memory.hugepages {
        return bad(
            "a display needs guest RAM without huge pages (the VGA window splits low RAM)".into(),
        );
    }
    if cfg
        .display
        .as_ref()
        .and_then(|d| d.last_screenshot.as_deref())
        .is_some_and(str::is_empty)
    {
        return bad("display.last_screenshot is empty: give a file path".into());
    }
    if cfg.rng_transitional && !cfg.rng {
        return bad("rng_transitional needs rng".into());
    }
    ahci::validate(cfg)?;
    for (i, n) in cfg.nets.iter().enumerate() {
        validate_net(n).map_err(|m| ConfigError::Invalid(format!("NIC {i}: {m}")))?;
    }
    if let Some(s) = &cfg.smbios {
        validate_smbios(s).map_err(|m| ConfigError::Invalid(format!("smbios: {m}")))?;
    }
    if cfg.tpm.as_ref().is_some_and(|t| t.socket.is_empty()) {
        return bad("tpm: socket is empty: give swtpm's control socket".into());
    }
    if let Some(a) = &cfg.agent {
        if a.socket.is_empty() {
            return bad("agent: socket is empty: give a path for the agent socket".into());
        }
        let others = [
            ("api_socket", cfg.api_socket.as_deref()),
            ("serial.socket", cfg.serial.socket.as_deref()),
            (
                "display.vnc",
                cfg.display.as_ref().and_then(|d| d.vnc.as_deref()),
            ),
        ];
        if let Some((name, _)) = others.iter().find(|(_, p)| *p == Some(a.socket.as_str())) {
            return bad(format!(
                "agent: socket {} is also the {name}: give each socket its own path",
                a.socket
            ));
        }
    }
    Ok(())
}

/// SMBIOS strings: at most [`SmbiosConfig::MAX_STRING_LEN`] bytes, no NUL
/// (a table string ends at one); the UUID in its text form.
fn validate_smbios(s: &SmbiosConfig) -> Result<(), String> {
    let fields = [
        ("manufacturer", &s.manufacturer),
        ("product", &s.product),
        ("version", &s.version),
        ("serial", &s.serial),
        ("sku", &s.sku),
        ("family", &s.family),
        ("asset_tag", &s.asset_tag),
    ];
    for (name, value) in fields {
        let Some(v) = value else { continue };
        if v.len() > SmbiosConfig::MAX_STRING_LEN {
            return Err(format!(
                "{name} is {} bytes, more than {}",
                v.len(),
                SmbiosConfig::MAX_STRING_LEN
            ));
        }
        if v.contains('\0') {
            return Err(format!("{name} contains a NUL"));
        }
    }
    if let Some(u) = &s.uuid {
        if smbios::parse_uuid(u).is_none() {
            return Err(format!(
                "uuid {u:?} is not like 01234567-89ab-cdef-0123-456789abcdef"
            ));
        }
    }
    Ok(())
}

/// The SMBIOS contents for `cfg`: its `smbios` values over Kiln's defaults.
pub fn smbios_info(cfg: &VmConfig) -> smbios::SmbiosInfo {
    let s = cfg.smbios.clone().unwrap_or_default();
    let text = |v: Option<String>, default: &str| v.unwrap_or_else(|| default.to_owned());
    smbios::SmbiosInfo {
        manufacturer: text(s.manufacturer, SmbiosConfig::DEFAULT_MANUFACTURER),
        product: text(s.product, SmbiosConfig::DEFAULT_PRODUCT),
        version: text(s.version, env!("CARGO_PKG_VERSION")),
        serial: text(s.serial, ""),
        uuid: s
            .uuid
            .as_deref()
            .and_then(smbios::parse_uuid)
            .unwrap_or_default(),
        sku: text(s.sku, ""),
        family: text(s.family, ""),
        asset_tag: text(s.asset_tag, ""),
        cpus: cfg.cpus.count,
        mem_size: cfg.memory.size_mib << 20,
    }
}

/// One NIC: exactly one backend, a queue count that fits it, a MAC.
fn validate_net(n: &NetConfig) -> Result<(), String> {
    let max = MAX_QUEUE_PAIRS;
    let queues = |q: usize| (1..=max).contains(&q);
    let bad_queues =
        || format!("queues must be 1 to {max}, and match the number of fds (fd= is one queue)");
    match (&n.tap, n.fd, &n.fds) {
        (Some(_), None, None) if n.queues.is_none_or(|q| queues(q.into())) => {}
        (None, Some(_), None) if n.queues.is_none_or(|q| q == 1) => {}
        (None, None, Some(fds))
            if queues(fds.len()) && n.queues.is_none_or(|q| usize::from(q) == fds.len()) => {}
        (Some(_), None, None) | (None, Some(_), None) | (None, None, Some(_)) => {
            return Err(bad_queues())
        }
        _ => return Err("give exactly one of tap=, fd= and fds=".into()),
    }
    if let Some(mac) = &n.mac {
        mac.parse::<MacAddr>()
            .map_err(|_| format!("MAC address {mac:?} is invalid"))?;
    }
    Ok(())
}

/// What must hold on this host, checked before KVM is touched: every disk
/// image and each backing file it names exists and is a regular file or a
/// block device. (Opening them, and their headers, come next: the device
/// manager's `VirtioModels::open`, still before `/dev/kvm`.)
pub fn check_host(cfg: &VmConfig) -> Result<(), ConfigError> {
    for (i, d) in cfg.disks.iter().enumerate() {
        let files = std::iter::once(("image", &d.path))
            .chain(d.backing.iter().map(|b| ("backing file", &b.path)));
        for (what, path) in files {
            let bad = |why: String| ConfigError::Invalid(format!("disk {i}: {what} {path}: {why}"));
            let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
            let ty = meta.file_type();
            if !(ty.is_file() || ty.is_block_device()) {
                return Err(bad("not a file or block device".into()));
            }
        }
    }
    for (i, c) in cfg.cdroms.iter().enumerate() {
        ahci::check_iso(&c.path)
            .map_err(|why| ConfigError::Invalid(format!("CD-ROM {i}: {}: {why}", c.path)))?;
    }
    if let Some(rom) = cfg.display.as_ref().and_then(|d| d.rom.as_ref()) {
        let bad = |why: String| ConfigError::Invalid(format!("display: VGA BIOS {rom}: {why}"));
        let meta = std::fs::metadata(rom).map_err(|e| bad(e.to_string()))?;
        if !meta.is_file() {
            return Err(bad("not a file".into()));
        }
    }
    // Written only at a fault, long after start: its folder must be there
    // now, so a typo fails here rather than losing the picture then.
    if let Some(last) = cfg
        .display
        .as_ref()
        .and_then(|d| d.last_screenshot.as_ref())
    {
        let dir = std::path::Path::new(last)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if !dir.is_dir() {
            return Err(ConfigError::Invalid(format!(
                "display: last screenshot {last}: {} is not a directory",
                dir.display()
            )));
        }
    }
    if let Some(t) = &cfg.tpm {
        let bad = |why: String| {
            ConfigError::Invalid(format!("tpm: swtpm control socket {}: {why}", t.socket))
        };
        let meta = std::fs::metadata(&t.socket).map_err(|e| bad(e.to_string()))?;
        if !meta.file_type().is_socket() {
            return Err(bad("not a unix socket".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size_mib("512M"), Ok(512));
        assert_eq!(parse_size_mib("2G"), Ok(2048));
        assert_eq!(parse_size_mib("2g"), Ok(2048));
        assert_eq!(parse_size_mib("1024"), Ok(1024));
        assert_eq!(parse_size_mib("1T"), Ok(1 << 20));
        for bad in ["", "M", "0", "-1G", "12Q", "99999999999999999999G"] {
            assert!(parse_size_mib(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_and_json_give_the_same_config() {
        let args = Args::parse_from([
            "kiln-vmm",
            "--kernel",
            "/k",
            "--cmdline",
            "console=ttyS0",
            "--cpus",
            "2",
            "--memory",
            "1G",
            "--serial-log",
            "/tmp/s.log",
            "--api-socket",
            "/tmp/a.sock",
            "--cpu-template",
            "kvm-nested",
            "--hyperv",
            "--rtc-local-time",
        ]);
        let from_flags = args.vm_config().unwrap();
        assert_eq!(from_flags.cpus.count, 2);
        assert!(from_flags.hyperv && from_flags.rtc_local_time);
        assert_eq!(from_flags.memory.size_mib, 1024);
        assert_eq!(from_flags.kernel.as_ref().unwrap().cmdline, "console=ttyS0");
        let dir = std::env::temp_dir().join(format!("kiln-cfg-{}.json", std::process::id()));
        std::fs::write(&dir, serde_json::to_string(&from_flags).unwrap()).unwrap();
        let args = Args::parse_from(["kiln-vmm", "--config", dir.to_str().unwrap()]);
        assert_eq!(args.vm_config().unwrap(), from_flags);
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn rng_and_transitional_flags() {
        let cfg = |args: &[&str]| {
            let mut v = vec!["kiln-vmm", "--kernel", "/k"];
            v.extend_from_slice(args);
            Args::try_parse_from(v).map(|a| a.vm_config().unwrap())
        };
        let c = cfg(&[]).unwrap();
        assert!(!c.rng && !c.rng_transitional);
        let c = cfg(&["--rng"]).unwrap();
        assert!(c.rng && !c.rng_transitional);
        let c = cfg(&["--rng", "--disk", "path=/d,transitional=on"]).unwrap();
        assert!(c.rng && !c.rng_transitional && c.disks[0].transitional);
        let c = cfg(&["--rng", "transitional=on", "--net", "tap=t0"]).unwrap();
        assert!(c.rng && c.rng_transitional && !c.nets[0].transitional);
        assert!(cfg(&["--rng", "transitional=nope"]).is_err());
        // Off stays out of the JSON; on round-trips.
        let json = serde_json::to_string(&cfg(&["--disk", "path=/d"]).unwrap()).unwrap();
        assert!(!json.contains("transitional"), "{json}");
        let on = cfg(&["--rng=transitional=on", "--disk", "path=/d,transitional=on"]).unwrap();
        let back: VmConfig = serde_json::from_str(&serde_json::to_string(&on).unwrap()).unwrap();
        assert_eq!(back, on);
        let lone = VmConfig {
            rng: false,
            rng_transitional: true,
            ..on
        };
        assert!(validate(&lone)
            .unwrap_err()
            .to_string()
            .contains("needs rng"));
    }

    #[test]
    fn firmware_flags() {
        let args = Args::parse_from([
            "kiln-vmm",
            "--firmware",
            "/fw/OVMF_CODE.fd",
            "--firmware-vars",
            "/vm/vars.fd",
        ]);
        let cfg = args.vm_config().unwrap();
        assert_eq!(cfg.kernel, None);
        assert_eq!(
            cfg.firmware,
            Some(FirmwareConfig {
                path: "/fw/OVMF_CODE.fd".into(),
                vars: Some("/vm/vars.fd".into()),
            })
        );
        for bad in [
            &["kiln-vmm", "--kernel", "/k", "--firmware", "/fw"][..],
            &["kiln-vmm"][..],
        ] {
            assert!(Args::try_parse_from(bad).is_err(), "{bad:?}");
        }
        let vars_alone = Args::parse_from(["kiln-vmm", "--kernel", "/k", "--firmware-vars", "/v"]);
        assert!(vars_alone
            .vm_config()
            .unwrap_err()
            .to_string()
            .contains("--firmware-vars needs --firmware"));
    }

    #[test]
    fn smbios_flag_and_checks() {
        let args = |extra: &[&str]| {
            let mut v = vec!["kiln-vmm", "--kernel", "/k"];
            v.extend_from_slice(extra);
            Args::try_parse_from(v).map_err(|e| e.to_string())
        };
        let a = args(&[
            "--smbios",
            "manufacturer=OpenStack Foundation,product=OpenStack Nova,uuid=8A1C2E0E-3B4F-4D5E-9F60-718293A4B5C6,asset_tag=t1",
        ])
        .unwrap();
        let c = a.vm_config().unwrap();
        let info = smbios_info(&c);
        assert_eq!(info.manufacturer, "OpenStack Foundation");
        assert_eq!(info.product, "OpenStack Nova");
        assert_eq!(info.asset_tag, "t1");
        assert_eq!(info.uuid[0], 0x8a);
        assert_eq!(info.serial, "");
        let d = smbios_info(&VmConfig::default());
        assert_eq!(
            (d.manufacturer.as_str(), d.product.as_str()),
            ("Kiln", "kiln-vmm")
        );
        assert_eq!(d.uuid, [0; 16]);
        assert!(args(&["--smbios", "colour=red"]).is_err());
        for (flag, want) in [
            ("uuid=1234", "uuid"),
            (
                &*format!("product={}", "p".repeat(65)),
                "product is 65 bytes",
            ),
        ] {
            let err = args(&["--smbios", flag]).unwrap().vm_config().unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
        }
        let mut cfg = VmConfig {
            kernel: Some(KernelConfig::default()),
            smbios: Some(SmbiosConfig {
                serial: Some("a\0b".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(validate(&cfg).unwrap_err().to_string().contains("NUL"));
        cfg.smbios = None;
        validate(&cfg).unwrap();
    }

    #[test]
    fn invalid_configs_say_what_is_wrong() {
        let mut cfg = VmConfig {
            kernel: Some(KernelConfig::default()),
            ..Default::default()
        };
        validate(&cfg).unwrap();
        cfg.cpus.count = 0;
        assert!(validate(&cfg).unwrap_err().to_string().contains("cpus"));
        cfg.cpus.count = 1;
        cfg.cpus.template = "nope".into();
        assert!(validate(&cfg).unwrap_err().to_string().contains("nope"));
        cfg.cpus.template = "host".into();
        cfg.memory.size_mib = 1;
        assert!(validate(&cfg).unwrap_err().to_string().contains("memory"));
        cfg.memory.size_mib = 64;
        cfg.kernel = None;
        assert!(validate(&cfg)
            .unwrap_err()
            .to_string()
            .contains("nothing to boot"));
        let bad_json = r#"{"cpus":{"count":1},"memory":{"size_mib":64},"bogus":1}"#;
        assert!(serde_json::from_str::<VmConfig>(bad_json)
            .unwrap_err()
            .to_string()
            .contains("bogus"));
    }

    #[test]
    fn bad_nics_and_disks_fail_validation() {
        let cfg = |args: &[&str]| {
            let mut v = vec!["kiln-vmm", "--kernel", "/k"];
            v.extend_from_slice(args);
            Args::parse_from(v).vm_config()
        };
        // The flags are checked as they are parsed; a --config file's
        // JSON is checked here.
        let base = cfg(&["--net", "tap=t0"]).unwrap();
        let err = |f: &dyn Fn(&mut NetConfig)| {
            let mut c = base.clone();
            c.nets.push(c.nets[0].clone());
            f(&mut c.nets[1]);
            validate(&c).map_err(|e| e.to_string())
        };
        err(&|n| n.queues = Some(16)).unwrap();
        err(&|n| {
            n.tap = None;
            n.fds = Some(vec![3, 4]);
            n.mac = Some("52:54:00:12:34:56".into());
        })
        .unwrap();
        let e = err(&|n| n.queues = Some(17)).unwrap_err();
        assert!(e.contains("NIC 1: queues must be"), "{e}");
        let e = err(&|n| n.queues = Some(0)).unwrap_err();
        assert!(e.contains("queues must be"), "{e}");
        let e = err(&|n| {
            n.tap = None;
            n.fd = Some(3);
            n.queues = Some(2);
        })
        .unwrap_err();
        assert!(e.contains("queues must be"), "{e}");
        let e = err(&|n| {
            n.tap = None;
            n.fds = Some(vec![3, 4]);
            n.queues = Some(3);
        })
        .unwrap_err();
        assert!(e.contains("queues must be"), "{e}");
        let e = err(&|n| n.fds = Some(Vec::new())).unwrap_err();
        assert!(e.contains("exactly one of"), "{e}");
        let e = err(&|n| n.tap = None).unwrap_err();
        assert!(e.contains("exactly one of"), "{e}");
        let e = err(&|n| n.mac = Some("zz".into())).unwrap_err();
        assert!(e.contains("NIC 1: MAC address \"zz\" is invalid"), "{e}");

        let dir = std::env::temp_dir().join(format!("kiln-cfg-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("d.raw");
        std::fs::write(&img, [0u8; 512]).unwrap();
        let img = img.to_str().unwrap();
        let host = |args: &[&str]| check_host(&cfg(args).unwrap());
        host(&["--disk", &format!("path={img}")]).unwrap();
        let missing = dir.join("missing.raw");
        let missing = missing.to_str().unwrap();
        let e = host(&[
            "--disk",
            &format!("path={img}"),
            "--disk",
            &format!("path={missing}"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains(&format!("disk 1: image {missing}: ")), "{e}");
        let e = host(&[
            "--disk",
            &format!("path={img},format=qcow2,backing={missing},backing_format=raw"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&format!("disk 0: backing file {missing}")),
            "{e}"
        );
        let d = dir.to_str().unwrap();
        let e = host(&["--disk", &format!("path={d}")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a file or block device"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tpm_flag_json_and_host_checks() {
        let args = |extra: &[&str]| {
            let mut v = vec!["kiln-vmm", "--kernel", "/k"];
            v.extend_from_slice(extra);
            Args::try_parse_from(v).map_err(|e| e.to_string())
        };
        let c = args(&["--tpm", "socket=/run/s.sock"])
            .unwrap()
            .vm_config()
            .unwrap();
        assert_eq!(c.tpm.as_ref().unwrap().socket, "/run/s.sock");
        let json: VmConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(json, c);
        assert!(args(&[]).unwrap().vm_config().unwrap().tpm.is_none());
        for bad in ["socket=", "path=/x", "/x"] {
            assert!(args(&["--tpm", bad]).is_err(), "{bad}");
        }
        let empty: VmConfig =
            serde_json::from_str(r#"{"cpus":{"count":1},"memory":{"size_mib":64},"kernel":{"path":"/k"},"tpm":{"socket":""}}"#)
                .unwrap();
        assert!(validate(&empty).unwrap_err().to_string().contains("tpm"));
        assert!(serde_json::from_str::<VmConfig>(
            r#"{"cpus":{"count":1},"memory":{"size_mib":64},"tpm":{"socket":"/s","x":1}}"#
        )
        .is_err());
        // The host check: a regular file is not swtpm's socket.
        let file = std::env::temp_dir().join(format!("kiln-tpm-cfg-{}", std::process::id()));
        std::fs::write(&file, b"").unwrap();
        let mut c = c;
        c.tpm.as_mut().unwrap().socket = file.display().to_string();
        let e = check_host(&c).unwrap_err().to_string();
        assert!(e.contains("not a unix socket"), "{e}");
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn agent_flag_and_its_checks() {
        let parse = |extra: &[&str]| {
            let mut a = vec!["kiln-vmm", "--kernel", "/k", "--api-socket", "/run/api"];
            a.extend_from_slice(extra);
            Args::parse_from(a).vm_config().map_err(|e| e.to_string())
        };
        let c = parse(&["--agent", "/run/qga.sock"]).unwrap();
        assert_eq!(c.agent.as_ref().unwrap().socket, "/run/qga.sock");
        let json = serde_json::to_string(&c).unwrap();
        assert!(
            json.contains(r#""agent":{"socket":"/run/qga.sock"}"#),
            "{json}"
        );
        assert!(!serde_json::to_string(&parse(&[]).unwrap())
            .unwrap()
            .contains("agent"));
        let e = parse(&["--agent", ""]).unwrap_err();
        assert!(e.contains("agent: socket is empty"), "{e}");
        let e = parse(&["--agent", "/run/api"]).unwrap_err();
        assert!(e.contains("also the api_socket"), "{e}");
        let bad: Result<kiln_api::vm::AgentConfig, _> =
            serde_json::from_str(r#"{"socket":"/s","port":1}"#);
        assert!(bad.is_err(), "unknown fields are refused");
    }
}
