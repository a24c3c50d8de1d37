//! What a server's VMM is made of: the [`VmConfig`] kilnd writes to
//! `servers/ID/vm.json` from the server record, its image (kernel image:
//! direct boot; disk image: firmware, with UEFI's own `nvram.fd`), its root
//! disk (from the disk backend) and its NICs' taps and links; every virtio
//! device is transitional when the server's `virtio_model` says so, and
//! every disk and NIC gets the limits of the server's flavor extra specs
//! (`crate::qos`), and the root disk the flavor's polling window
//! (`kiln:disk_poll_us`). A config drive is the second disk, read-only
//! (`crate::config_drive` builds it before the VMM starts). A server with
//! a TPM gets its swtpm's control socket (`super::tpm`) and, with SeaBIOS,
//! the build that measures the boot (`firmware.bios_tpm`); one with
//! `display: vga` gets the VGA adapter, its BIOS and `vnc.sock`. ISO
//! images go on CD-ROMs (the one the server boots from first, then its
//! `cdroms`, then its answer file), and the root disk on the server's
//! `disk_bus`.

use std::os::fd::{AsRawFd, OwnedFd};

use std::path::Path;

use kiln_api::compute::{Display, Firmware, Image, ImageKind, OsType, Server};
use kiln_api::vm::{
    AgentConfig, BackingConfig, CdromConfig, CpusConfig, DiskConfig, DiskFormat, DisplayConfig,
    DisplayDevice, FirmwareConfig, KernelConfig, MemoryConfig, NetConfig, SerialConfig,
    SmbiosConfig, TpmConfig, VmConfig,
};

use super::{ConfigError, Supervisor, EXIT_FILE};

impl Supervisor {
    /// The VMM config for a server whose NICs' taps are `taps` (each NIC's
    /// open queue fds, which the VMM inherits: `fd` for one, `fds` for a
    /// multi-queue tap). Blocking: it reads the store and checks the
    /// image's files.
    pub(super) fn vm_config(
        &self,
        server: &Server,
        taps: &[Vec<OwnedFd>],
    ) -> Result<VmConfig, ConfigError> {
        let image =
            self.store
                .get_image(&server.image_id)
                .map_err(|source| ConfigError::Image {
                    id: server.image_id.clone(),
                    source,
                })?;
        let dir = self.server_dir(&server.id);
        let store_dir = self.config.state_dir.join("images");
        // The root disk's image: in the store and self-contained, so the
        // chain kiln-vmm is given (and opens) never leaves the store.
        let disk_image = match &server.disk_image_id {
            None => None,
            Some(id) => {
                let img = self
                    .store
                    .get_image(id)
                    .map_err(|source| ConfigError::DiskImage {
                        id: id.clone(),
                        source,
                    })?;
                crate::image_files::check_stored_image(&img, &store_dir)
                    .map_err(ConfigError::ImageFiles)?;
                Some(img)
            }
        };
        // Windows: what Nova gives os_type=windows.
        let windows = matches!(
            image.kind,
            ImageKind::Disk {
                os_type: OsType::Windows,
                ..
            }
        );
        // A kernel image boots directly; a disk image (its overlay is the
        // root disk, the first virtio-blk disk) through firmware.
        let (kernel, firmware) = match (&image.kind, server.firmware) {
            (ImageKind::Kernel { .. }, None) => {
                // The store copies made at registration, checked again:
                // never the path it was registered from.
                let (kernel, initramfs) = crate::image_files::kernels::stored(&image, &store_dir)
                    .map_err(ConfigError::ImageFiles)?;
                (
                    Some(KernelConfig {
                        path: kernel,
                        initramfs,
                        cmdline: server.cmdline.clone(),
                        ..Default::default()
                    }),
                    None,
                )
            }
            (ImageKind::Disk { .. }, Some(fw)) => {
                let needs = crate::firmware::Needs {
                    tpm: server.tpm,
                    secure_boot: server.secure_boot,
                };
                let code = crate::firmware::code(&self.config.firmware, fw, needs)?;
                let vars = match fw {
                    Firmware::Bios => None,
                    // In the server's directory, like its root disk (the
                    // path the store shows was made from the same place).
                    Firmware::Uefi => Some(dir.join(crate::firmware::NVRAM).display().to_string()),
                };
                (
                    None,
                    Some(FirmwareConfig {
                        path: code.display().to_string(),
                        vars,
                    }),
                )
            }
            _ => {
                return Err(ConfigError::Boot {
                    image: image.name.clone(),
                    firmware: server.firmware,
                })
            }
        };
        // Old guests' drivers bind only to transitional devices' legacy IDs.
        // Every virtio device a server has: its root disk and its NICs (it
        // gets no entropy device; one added later takes `rng_transitional`).
        let transitional = !server.virtio_model.is_modern();
        // The flavor's disk and NIC limits (`crate::qos`), kept with the
        // server since its create.
        let specs = self
            .store
            .server_extra_specs(&server.id)
            .map_err(ConfigError::ExtraSpecs)?;
        let qos = crate::qos::Qos::from_specs(&specs)?;
        Ok(VmConfig {
            cpus: CpusConfig {
                count: u8::try_from(server.vcpus).map_err(|_| ConfigError::Vcpus)?,
                template: self.config.vmm.cpu_template.clone(),
            },
            memory: MemoryConfig {
                size_mib: server.ram_mb,
                shared: false,
                hugepages: false,
            },
            kernel,
            firmware,
            hyperv: windows,
            rtc_local_time: windows,
            serial: SerialConfig {
                log: Some(dir.join("serial.log").display().to_string()),
                socket: Some(self.console_socket(&server.id).display().to_string()),
                stdio: false,
            },
            api_socket: Some(self.api_socket(&server.id).display().to_string()),
            // How a re-adopted VMM ended, since its exit status goes to init.
            exit_file: Some(dir.join(EXIT_FILE).display().to_string()),
            // What the guest (cloud-init) reads in DMI: kilnd's identity,
            // the server id as system UUID and serial.
            smbios: Some(SmbiosConfig {
                manufacturer: Some(self.config.smbios.manufacturer.clone()),
                product: Some(self.config.smbios.product.clone()),
                family: Some(self.config.smbios.family.clone()),
                serial: Some(server.id.clone()),
                uuid: Some(server.id.clone()),
                ..SmbiosConfig::default()
            }),
            // The root disk: a qcow2 overlay or a thin LV (raw).
            disks: disk_image
                .as_ref()
                .map(|img| (img, self.disks.root_disk(&server.id, &dir)))
                .map(|(img, (path, format))| DiskConfig {
                    path: path.display().to_string(),
                    format,
                    // A qcow2 overlay's one backing file: the image, named
                    // explicitly (kiln-vmm follows no header on its own).
                    bus: server.disk_bus,
                    // An ISO server's root disk is blank: no backing file.
                    backing: match (&img.kind, format) {
                        (
                            ImageKind::Disk {
                                path: base,
                                format: base_format,
                                ..
                            },
                            DiskFormat::Qcow2,
                        ) if !base_format.is_iso() => vec![BackingConfig {
                            path: base.clone(),
                            format: base_format.disk(),
                        }],
                        _ => Vec::new(),
                    },
                    serial: Some(format!("root-{}", &server.id[..server.id.len().min(15)])),
                    transitional,
                    rate_limit: qos.disk.clone(),
                    poll_us: qos.disk_poll_us,
                    ..Default::default()
                })
                .into_iter()
                .chain(server.config_drive.then(|| DiskConfig {
                    path: dir.join(crate::config_drive::FILE).display().to_string(),
                    format: DiskFormat::Raw,
                    readonly: true,
                    transitional,
                    rate_limit: qos.disk.clone(),
                    ..Default::default()
                }))
                .collect(),
            cdroms: self.cdroms(server, &image, &dir, &store_dir)?,
            nets: server
                .nics
                .iter()
                .zip(taps)
                .map(|(nic, fds)| {
                    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
                    NetConfig {
                        fd: (raw.len() == 1).then(|| raw[0]),
                        fds: (raw.len() > 1).then_some(raw),
                        mac: Some(nic.mac.clone()),
                        // As stored: a link set down stays down in every
                        // VMM the server gets.
                        link: nic.link,
                        transitional,
                        rate_limit: qos.net_tx.clone(),
                        rx_rate_limit: qos.net_rx.clone(),
                        ..Default::default()
                    }
                })
                .collect(),
            // The swtpm the supervisor starts before the VMM.
            tpm: server.tpm.then(|| TpmConfig {
                socket: super::tpm::ctrl_socket(&dir).display().to_string(),
            }),
            // The guest agent channel: kiln-vmm listens on `agent.sock`
            // (root's only, as the VNC socket); kilnd is its client.
            agent: server.agent.then(|| AgentConfig {
                socket: self.agent_socket(&server.id).display().to_string(),
            }),
            // VGA, its BIOS, and a VNC server on the server's `vnc.sock`
            // (root's only, as kiln-vmm runs under umask 077: the access control).
            display: match server.display {
                Display::None => None,
                Display::Vga => Some(DisplayConfig {
                    device: DisplayDevice::Vga,
                    rom: Some(
                        crate::firmware::vga_rom(&self.config.firmware)?
                            .display()
                            .to_string(),
                    ),
                    vnc: Some(dir.join(VNC_SOCKET).display().to_string()),
                    tablet: true,
                    // Written by kiln-vmm when it ends on a guest fault.
                    last_screenshot: Some(dir.join(super::LAST_SCREENSHOT).display().to_string()),
                }),
            },
            ..Default::default()
        })
    }
}

impl Supervisor {
    /// A server's CD-ROMs, in order: the ISO it boots from (its image, when
    /// that is an ISO), its `cdroms`, its answer file. Every ISO is checked
    /// to be in the image store, as root disks' images are.
    fn cdroms(
        &self,
        server: &Server,
        image: &Image,
        dir: &Path,
        store_dir: &Path,
    ) -> Result<Vec<CdromConfig>, ConfigError> {
        let mut isos = Vec::new();
        if crate::disks::is_iso(image) {
            isos.push(image.clone());
        }
        for id in &server.cdroms {
            isos.push(
                self.store
                    .get_image(id)
                    .map_err(|source| ConfigError::DiskImage {
                        id: id.clone(),
                        source,
                    })?,
            );
        }
        let mut out = Vec::new();
        for img in isos {
            crate::image_files::check_stored_image(&img, store_dir)
                .map_err(ConfigError::ImageFiles)?;
            if let ImageKind::Disk { path, .. } = img.kind {
                out.push(CdromConfig { path });
            }
        }
        if server.answer_file {
            out.push(CdromConfig {
                path: dir
                    .join(crate::config_drive::ANSWER_FILE)
                    .display()
                    .to_string(),
            });
        }
        Ok(out)
    }
}

/// The VNC server's socket in a server's directory.
pub const VNC_SOCKET: &str = "vnc.sock";
