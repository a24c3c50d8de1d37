//! `kiln image ...`: kernel images, disk images imported from a path or
//! uploaded (with a progress bar), and their firmware, OS and virtio
//! properties.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use kiln_api::client;
use kiln_api::compute::{
    DiskBus, DiskSource, Firmware, Image, ImageCreate, ImageFormat, ImageKind, ImageList,
    ImageStatus, OsType, VirtioModel,
};

use crate::tables::images;
use crate::{abs, enc, show, Api, TIMEOUT};

/// `--format`: `raw`, `qcow2` or `iso`, parsed into kiln-api's
/// [`ImageFormat`].
fn format_parser() -> impl clap::builder::TypedValueParser<Value = ImageFormat> {
    use clap::builder::{PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(["raw", "qcow2", "iso"])
        .map(|s| s.parse::<ImageFormat>().expect("one of the listed formats"))
}

/// `--disk-bus`: `virtio` or `sata`.
pub fn bus_parser() -> impl clap::builder::TypedValueParser<Value = DiskBus> {
    use clap::builder::{PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(["virtio", "sata"]).map(|s| {
        if s == "sata" {
            DiskBus::Sata
        } else {
            DiskBus::Virtio
        }
    })
}

/// How a disk image boots (Nova's `hw_firmware_type`).
#[derive(Clone, Copy, ValueEnum)]
pub enum Fw {
    /// SeaBIOS.
    Bios,
    /// OVMF, with an NVRAM of each server's own.
    Uefi,
}

/// The operating system on a disk image (Nova's `os_type`).
#[derive(Clone, Copy, ValueEnum)]
pub enum Os {
    Linux,
    /// Servers get the Hyper-V enlightenments and an RTC in local time.
    Windows,
}

/// Which virtio devices servers get (the API's `virtio_model`).
#[derive(Clone, Copy, ValueEnum)]
pub enum Virtio {
    /// virtio 1.x devices only.
    Modern,
    /// Also the legacy IDs and I/O BARs, for old guest drivers (old
    /// virtio-win, Linux before 4.0).
    Transitional,
}

impl From<Virtio> for VirtioModel {
    fn from(v: Virtio) -> VirtioModel {
        match v {
            Virtio::Modern => VirtioModel::Modern,
            Virtio::Transitional => VirtioModel::Transitional,
        }
    }
}

impl From<Os> for OsType {
    fn from(o: Os) -> OsType {
        match o {
            Os::Linux => OsType::Linux,
            Os::Windows => OsType::Windows,
        }
    }
}

impl From<Fw> for Firmware {
    fn from(f: Fw) -> Firmware {
        match f {
            Fw::Bios => Firmware::Bios,
            Fw::Uefi => Firmware::Uefi,
        }
    }
}

#[derive(Subcommand)]
pub enum ImageCmd {
    List,
    Show {
        id: String,
    },
    /// Register a kernel (host paths) for direct boot.
    Kernel {
        name: String,
        #[arg(long)]
        kernel: PathBuf,
        #[arg(long)]
        initramfs: Option<PathBuf>,
        #[arg(long)]
        cmdline: Option<String>,
        /// Virtio devices of servers made from it [default: modern].
        #[arg(long, value_enum)]
        virtio_model: Option<Virtio>,
        /// Servers made from it get a TPM 2.0 [default: on for windows].
        #[arg(long)]
        tpm: Option<bool>,
        /// Servers made from it get a guest agent channel [default: on for
        /// windows].
        #[arg(long)]
        agent: Option<bool>,
    },
    /// Import a disk image of the given format into the image store.
    /// Servers made from it boot it through firmware.
    Import {
        name: String,
        #[arg(long)]
        path: PathBuf,
        #[arg(long, value_parser = format_parser())]
        format: ImageFormat,
        /// Firmware of servers made from it [default: bios].
        #[arg(long, value_enum)]
        firmware: Option<Fw>,
        /// Its operating system [default: linux].
        #[arg(long, value_enum)]
        os_type: Option<Os>,
        /// Virtio devices of servers made from it [default: modern].
        #[arg(long, value_enum)]
        virtio_model: Option<Virtio>,
        /// Servers made from it get a TPM 2.0 [default: on for windows].
        #[arg(long)]
        tpm: Option<bool>,
        /// Servers made from it get a guest agent channel [default: on for
        /// windows].
        #[arg(long)]
        agent: Option<bool>,
        /// Its servers' display, `vga` or `none` [default: vga for windows].
        #[arg(long, value_parser = crate::console::parse_display)]
        display: Option<kiln_api::compute::Display>,
        /// Its servers' root disk bus [default: sata for a windows ISO,
        /// else virtio].
        #[arg(long, value_parser = bus_parser())]
        disk_bus: Option<DiskBus>,
        /// Its servers boot with UEFI Secure Boot on (true/false; needs
        /// --firmware uefi) [default: on for windows with uefi].
        #[arg(long)]
        secure_boot: Option<bool>,
    },
    /// Make a disk image from a local file: uploaded through the API with
    /// `--upload` (the file may be anywhere the CLI can read), else
    /// imported by kilnd from the file's path.
    Create {
        name: String,
        #[arg(long, visible_alias = "path")]
        file: PathBuf,
        #[arg(long, value_parser = format_parser())]
        format: ImageFormat,
        #[arg(long)]
        upload: bool,
        /// Firmware of servers made from it [default: bios].
        #[arg(long, value_enum)]
        firmware: Option<Fw>,
        /// Its operating system [default: linux].
        #[arg(long, value_enum)]
        os_type: Option<Os>,
        /// Virtio devices of servers made from it [default: modern].
        #[arg(long, value_enum)]
        virtio_model: Option<Virtio>,
        /// Servers made from it get a TPM 2.0 [default: on for windows].
        #[arg(long)]
        tpm: Option<bool>,
        /// Servers made from it get a guest agent channel [default: on for
        /// windows].
        #[arg(long)]
        agent: Option<bool>,
        /// Its servers' display, `vga` or `none` [default: vga for windows].
        #[arg(long, value_parser = crate::console::parse_display)]
        display: Option<kiln_api::compute::Display>,
        /// Its servers' root disk bus [default: sata for a windows ISO,
        /// else virtio].
        #[arg(long, value_parser = bus_parser())]
        disk_bus: Option<DiskBus>,
        /// Its servers boot with UEFI Secure Boot on (true/false; needs
        /// --firmware uefi) [default: on for windows with uefi].
        #[arg(long)]
        secure_boot: Option<bool>,
    },
    Delete {
        id: String,
    },
}

pub fn run(
    api: &Api<'_>,
    socket: &Path,
    json: bool,
    c: &ImageCmd,
) -> Result<(), Box<dyn std::error::Error>> {
    match c {
        ImageCmd::List => api.show(json, "/v1/images", |l: &ImageList| images(&l.images))?,
        ImageCmd::Show { id } => api.show_one(json, "images", id, images)?,
        ImageCmd::Kernel {
            name,
            kernel,
            initramfs,
            cmdline,
            virtio_model,
            tpm,
            agent,
        } => {
            let req = ImageCreate::Kernel {
                name: name.clone(),
                kernel: abs(kernel)?,
                initramfs: initramfs.as_deref().map(abs).transpose()?,
                cmdline: cmdline.clone(),
                virtio_model: virtio_model.map(VirtioModel::from),
                tpm: *tpm,
                agent: *agent,
            };
            show(json, &api.send::<Image>("POST", "/v1/images", &req)?, |i| {
                images(std::slice::from_ref(i))
            })?
        }
        ImageCmd::Create {
            name,
            file,
            format,
            upload: true,
            firmware,
            os_type,
            virtio_model,
            tpm,
            display,
            disk_bus,
            secure_boot,
            agent,
        } => {
            let req = ImageCreate::Disk {
                name: name.clone(),
                path: None,
                format: *format,
                source: DiskSource::Upload,
                firmware: firmware.map(Firmware::from),
                os_type: os_type.map(OsType::from),
                virtio_model: virtio_model.map(VirtioModel::from),
                tpm: *tpm,
                agent: *agent,
                display: *display,
                disk_bus: *disk_bus,
                secure_boot: *secure_boot,
            };
            let img: Image = api.send("POST", "/v1/images", &req)?;
            let r = client::upload(
                socket,
                &format!("/v1/images/{}/file", img.id),
                file,
                TIMEOUT,
                |done, total| {
                    if !json {
                        eprint!("\r{}", progress_bar(done, total));
                    }
                },
            );
            if !json {
                eprintln!();
            }
            let img: Image = match r.and_then(|r| r.json()) {
                Ok(img) => img,
                Err(e) => {
                    // Leave no queued or failed record behind.
                    let _ = api.call("DELETE", &format!("/v1/images/{}", img.id), None);
                    return Err(format!("upload of {name} failed: {e}").into());
                }
            };
            show(json, &img, |i| images(std::slice::from_ref(i)))?
        }
        ImageCmd::Import {
            name,
            path,
            format,
            firmware,
            os_type,
            virtio_model,
            tpm,
            display,
            disk_bus,
            secure_boot,
            agent,
        }
        | ImageCmd::Create {
            name,
            file: path,
            format,
            upload: false,
            firmware,
            os_type,
            virtio_model,
            tpm,
            display,
            disk_bus,
            secure_boot,
            agent,
        } => {
            let req = ImageCreate::Disk {
                name: name.clone(),
                path: Some(abs(path)?),
                format: *format,
                source: DiskSource::Path,
                firmware: firmware.map(Firmware::from),
                os_type: os_type.map(OsType::from),
                virtio_model: virtio_model.map(VirtioModel::from),
                tpm: *tpm,
                agent: *agent,
                display: *display,
                disk_bus: *disk_bus,
                secure_boot: *secure_boot,
            };
            let mut img: Image = api.send("POST", "/v1/images", &req)?;
            while img.status == ImageStatus::Importing {
                if let (false, Some(p)) = (json, img.progress) {
                    eprint!("\r{}", progress_bar(p.bytes_done, p.bytes_total));
                }
                std::thread::sleep(Duration::from_millis(100));
                img = api.get(&format!("/v1/images/{}", img.id))?;
            }
            if let (false, ImageKind::Disk { size_bytes, .. }) = (json, &img.kind) {
                if img.status == ImageStatus::Active {
                    eprint!("\r{}", progress_bar(*size_bytes, *size_bytes));
                }
                eprintln!();
            }
            if img.status == ImageStatus::Error {
                let why = img.fault.unwrap_or_default();
                return Err(format!("import of {name} failed: {why}").into());
            }
            show(json, &img, |i| images(std::slice::from_ref(i)))?
        }
        ImageCmd::Delete { id } => api.call("DELETE", &format!("/v1/images/{}", enc(id)), None)?,
    }
    Ok(())
}

/// `[#########           ]  45%  58/128 MiB`
fn progress_bar(done: u64, total: u64) -> String {
    let frac = if total == 0 {
        1.0
    } else {
        done as f64 / total as f64
    };
    let filled = (frac * 30.0).round() as usize;
    format!(
        "[{}{}] {:3.0}% {}/{} MiB",
        "#".repeat(filled.min(30)),
        " ".repeat(30 - filled.min(30)),
        frac * 100.0,
        done >> 20,
        total >> 20
    )
}
