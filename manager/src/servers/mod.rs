//! Servers: the rules of a server create, checked in this order before
//! anything is recorded (each refusal says which rule):
//!
//! 1. the name, then the flavor and the image exist (a 400 otherwise);
//! 2. a **kernel image** boots directly: its checked store copies are
//!    there (409), no `firmware`; an optional `disk_image` is an active,
//!    self-contained disk image that fits the flavor's disk; the command
//!    line is checked;
//! 3. a **disk image** becomes the root disk and boots through firmware:
//!    no `disk_image` and no `cmdline`; the image is active,
//!    self-contained and fits; the firmware files of the chosen firmware
//!    are on the host (409; with a TPM, SeaBIOS's `bios_tpm`);
//! 4. `display` ([`display_for`]; `vga` needs the VGA BIOS on the host,
//!    409), `user_data` (base64, 64 KiB once decoded), `metadata`, `ready`,
//!    `ttl_s` and `admin_pass` (255 bytes) are in bounds; a `config_drive`
//!    needs a root disk (a disk image, or a kernel image with a
//!    `disk_image`: the drive is the second disk) and the host's ISO tool
//!    ([`crate::config_drive::check_host`], 409); `tpm` (the server's,
//!    else its image's) needs swtpm and swtpm_setup on the host
//!    ([`crate::supervisor::tpm::check_host`], 409);
//!    the media ([`media::resolve`]): `cdroms` are active ISO images,
//!    `answer_file` has `user_data`, and the SATA disks and CD-ROMs fit
//!    the AHCI controller (400); an ISO image boots from its CD-ROM with
//!    a blank root disk, so its flavor needs a disk;
//!    ([`crate::supervisor::tpm::check_host`], 409); `ready: {"agent":
//!    true}` needs `agent` (the server's, else its image's);
//! 5. the NICs' networks and the `key_name` key pair exist
//!    ([`crate::networks::resolve_nics`], a 400 otherwise);
//! 6. placement and the record: the store checks capacity in the insert's
//!    transaction ([`crate::placement`]), then the supervisor builds it.
//!
//! Also a server's actions ([`action`]: checked against its status and
//! its action lock, then run in the background by the supervisor), its
//! delete ([`delete`]: waits until its VMM, files and allocation are
//! gone), and the console log of a server, or of a deleted one
//! ([`console`]).

pub mod guest;
pub mod keys;
pub mod media;
pub mod remote_console;
pub mod screenshot;

use std::path::Path;
use std::sync::Arc;

use kiln_api::compute::{
    Display, Firmware, Image, ImageKind, ImageStatus, Server, ServerAction, ServerCreate,
};
use thiserror::Error;

use crate::config::Config;
use crate::networks::NetworkError;
use crate::placement::Placement;
use crate::store::{NewServer, Store, StoreError};
use crate::supervisor::actions::ActionError;
use crate::supervisor::Supervisor;
use crate::util::check_name;

#[derive(Debug, Error)]
pub enum ServerError {
    /// The request breaks a rule (a 400).
    #[error("{0}")]
    Invalid(String),
    /// The host or an image's state says no (a 409).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An action or a delete refused (busy, being deleted, wrong status).
    #[error(transparent)]
    Action(#[from] ActionError),
    /// The server's guest agent did not answer in time (a 504).
    #[error("{0}")]
    GuestTimeout(String),
    /// The server's guest agent answered, but not as the protocol says
    /// (a 502).
    #[error("{0}")]
    GuestBad(String),
    /// kilnd failed (a 500).
    #[error("{0}")]
    Internal(String),
}

/// What a create needs of kilnd.
pub struct Kilnd<'a> {
    pub store: &'a Arc<Store>,
    pub sup: &'a Arc<Supervisor>,
    pub placement: &'a Placement,
    pub config: &'a Config,
}

/// Runs `f` off the async executor (file checks).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ServerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))
}

/// Checks `req` by the rules above, records the server (BUILD) and starts
/// its build.
pub async fn create(k: Kilnd<'_>, req: ServerCreate) -> Result<Server, ServerError> {
    check_name("server", &req.name).map_err(|e| ServerError::Invalid(e.to_string()))?;
    let (flavor_key, image_key) = (req.flavor.clone(), req.image.clone());
    let (flavor, image) = k
        .store
        .call(move |s| (s.get_flavor(&flavor_key), s.get_image(&image_key)))
        .await;
    let flavor = flavor.map_err(|e| match e {
        StoreError::NotFound { .. } => {
            ServerError::Invalid(format!("unknown flavor {:?}", req.flavor))
        }
        e => e.into(),
    })?;
    let image = image.map_err(|e| match e {
        StoreError::NotFound { .. } => {
            ServerError::Invalid(format!("unknown image {:?}", req.image))
        }
        e => e.into(),
    })?;
    let store_dir = k.config.state_dir.join("images");
    let tpm = req.tpm.unwrap_or(image.tpm);
    let agent = req.agent.unwrap_or(image.agent);
    let (firmware, disk_image_id, cmdline, secure_boot) = match &image.kind {
        ImageKind::Kernel {
            cmdline: default_cmdline,
            ..
        } => {
            // The kernel's store copies, checked again.
            let (check, dir) = (image.clone(), store_dir.clone());
            blocking(move || crate::image_files::kernels::stored(&check, &dir))
                .await?
                .map_err(ServerError::Conflict)?;
            if let Some(f) = req.firmware {
                return Err(ServerError::Invalid(format!(
                    "image {:?} is a kernel image, which boots directly: firmware {:?} applies only \
                     to servers whose image is a disk image",
                    image.name,
                    f.as_str()
                )));
            }
            let disk_image_id = match &req.disk_image {
                None => None,
                Some(key) => {
                    let k2 = key.clone();
                    let img =
                        k.store
                            .call(move |s| s.get_image(&k2))
                            .await
                            .map_err(|e| match e {
                                StoreError::NotFound { .. } => {
                                    ServerError::Invalid(format!("unknown disk image {key:?}"))
                                }
                                e => e.into(),
                            })?;
                    check_root_image(&img, flavor.disk_gb, &store_dir).await?;
                    Some(img.id)
                }
            };
            let cmdline = req
                .cmdline
                .clone()
                .unwrap_or_else(|| default_cmdline.clone());
            crate::image_files::check_cmdline(&cmdline)
                .map_err(|e| ServerError::Invalid(e.to_string()))?;
            (None, disk_image_id, cmdline, false)
        }
        ImageKind::Disk {
            firmware: image_firmware,
            ..
        } => {
            if req.disk_image.is_some() {
                return Err(ServerError::Invalid(format!(
                    "image {:?} is a disk image, which becomes the root disk: disk_image goes \
                     only with a kernel image",
                    image.name
                )));
            }
            if req.cmdline.is_some() {
                return Err(ServerError::Invalid(format!(
                    "image {:?} is a disk image, which boots through firmware and its own boot \
                     loader: cmdline goes only with a kernel image",
                    image.name
                )));
            }
            check_root_image(&image, flavor.disk_gb, &store_dir).await?;
            let fw = req.firmware.unwrap_or(*image_firmware);
            let secure_boot = req.secure_boot.unwrap_or(image.secure_boot);
            if secure_boot && fw != Firmware::Uefi {
                return Err(ServerError::Invalid(format!(
                    "secure_boot needs firmware uefi, and this server's firmware is {:?} \
                     (SeaBIOS has no Secure Boot)",
                    fw.as_str()
                )));
            }
            let needs = crate::firmware::Needs { tpm, secure_boot };
            crate::firmware::check_host_files(&k.config.firmware, fw, needs)
                .map_err(|e| ServerError::Conflict(crate::util::error_chain(&e)))?;
            (Some(fw), Some(image.id.clone()), String::new(), secure_boot)
        }
    };
    check_extras(&req)?;
    let media = {
        let (store, req, image) = (k.store.clone(), req.clone(), image.clone());
        let disk_image_id = disk_image_id.clone();
        blocking(move || {
            // A kernel image's root disk image (a disk image's own is itself).
            let disk_image = match disk_image_id {
                Some(id) if id != image.id => Some(store.get_image(&id)?),
                _ => None,
            };
            media::resolve(&store, &req, &image, disk_image.as_ref())
        })
        .await??
    };
    if req.ready.as_ref().is_some_and(|r| r.agent) && !agent {
        return Err(ServerError::Invalid(format!(
            "ready: {{\"agent\": true}} needs a guest agent channel, and the server has none \
             (image {:?} has agent false): give \"agent\": true",
            image.name
        )));
    }
    if tpm {
        crate::supervisor::tpm::check_host(&k.config.tpm)
            .map_err(|e| ServerError::Conflict(crate::util::error_chain(&e)))?;
    }
    let display = display_for(&image, req.display)?;
    if display == Display::Vga {
        crate::firmware::vga_rom(&k.config.firmware)
            .map_err(|e| ServerError::Conflict(crate::util::error_chain(&e)))?;
    }
    if req.config_drive {
        if disk_image_id.is_none() {
            return Err(ServerError::Invalid(format!(
                "config_drive needs a root disk, and image {:?} is a kernel image booted \
                 without one: give a disk_image, or use a disk image",
                image.name
            )));
        }
        crate::config_drive::check_host()
            .map_err(|e| ServerError::Conflict(crate::util::error_chain(&e)))?;
    }
    let expires_at = match req.ttl_s {
        None => None,
        Some(t @ 1..=31_536_000) => Some(crate::util::now_secs() + t),
        Some(_) => {
            return Err(ServerError::Invalid(
                "ttl_s must be 1 to 31536000 seconds".into(),
            ))
        }
    };
    let virtio_model = req.virtio_model.unwrap_or(image.virtio_model);
    let nvram_under = (firmware == Some(Firmware::Uefi)).then(|| k.sup.servers_dir().to_owned());
    let placement = k.placement.clone();
    let admin_pass = req.admin_pass.clone();
    let mut server = k
        .store
        .call(move |s| -> Result<Server, ServerError> {
            let nics = crate::networks::resolve_nics(s, &req.networks)?;
            let keypair = match &req.key_name {
                None => None,
                Some(name) => Some(s.get_keypair(name).map_err(|e| match e {
                    StoreError::NotFound { .. } => {
                        ServerError::Invalid(format!("unknown key_name {name:?}"))
                    }
                    e => e.into(),
                })?),
            };
            let new = NewServer {
                name: req.name,
                flavor,
                image_id: image.id,
                disk_image_id,
                cmdline,
                user_data: req.user_data,
                metadata: req.metadata,
                ready: req.ready,
                expires_at,
                nics,
                firmware,
                nvram_under,
                virtio_model,
                keypair,
                admin_pass: req.admin_pass,
                config_drive: req.config_drive,
                tpm,
                display,
                disk_bus: media.disk_bus,
                cdroms: media.cdroms,
                answer_file: media.answer_file,
                secure_boot,
                agent,
            };
            Ok(s.create_server(&placement, new)?)
        })
        .await?;
    // Its ports' rules, before its taps exist.
    crate::networks::firewall::sync_or_warn(k.store).await;
    k.sup.build(server.clone());
    // As Nova's adminPass: answered once, in the create response.
    server.admin_pass = admin_pass;
    Ok(server)
}

/// The most `user_data` a server takes, as Nova's 64 KiB.
pub const MAX_USER_DATA: usize = 65535;

/// Rule 4: user data, metadata and the ready condition in bounds.
fn check_extras(req: &ServerCreate) -> Result<(), ServerError> {
    if let Some(u) = &req.user_data {
        let bytes = crate::util::decode_user_data(u).map_err(|e| {
            ServerError::Invalid(format!("user_data is not base64 (as Nova's): {e}"))
        })?;
        if bytes.len() > MAX_USER_DATA {
            return Err(ServerError::Invalid(format!(
                "user_data is longer than {MAX_USER_DATA} bytes (64 KiB) once decoded ({} bytes)",
                bytes.len()
            )));
        }
    }
    if req.admin_pass.as_ref().is_some_and(|p| p.len() > 255) {
        return Err(ServerError::Invalid(
            "admin_pass is longer than 255 bytes".into(),
        ));
    }
    if req.metadata.len() > 128
        || req
            .metadata
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 255 || v.len() > 255)
    {
        return Err(ServerError::Invalid(
            "metadata: at most 128 items, keys 1 to 255 bytes, values at most 255 bytes".into(),
        ));
    }
    if let Some(r) = &req.ready {
        match (&r.console, r.debug_code, r.agent) {
            (Some(p), None, false) => {
                crate::util::console_regex(p)
                    .map_err(|e| ServerError::Invalid(crate::util::error_chain(&e)))?;
            }
            (None, Some(_), false) | (None, None, true) => {}
            _ => {
                return Err(ServerError::Invalid(
                    "ready: give exactly one of console, debug_code and agent (true)".into(),
                ))
            }
        }
        if r.timeout_s.is_some_and(|t| !(1..=86400).contains(&t)) {
            return Err(ServerError::Invalid(
                "ready.timeout_s must be 1 to 86400 seconds".into(),
            ));
        }
    }
    Ok(())
}

/// Checks that a disk image can be a root disk of `disk_gb`: a disk
/// image, active, in the store and self-contained, and no larger than the
/// flavor's disk.
async fn check_root_image(img: &Image, disk_gb: u64, store_dir: &Path) -> Result<(), ServerError> {
    if !matches!(img.kind, ImageKind::Disk { .. }) {
        return Err(ServerError::Invalid(format!(
            "image {:?} is not a disk image",
            img.name
        )));
    }
    if img.status != ImageStatus::Active {
        return Err(ServerError::Conflict(format!(
            "disk image {:?} is not active (it is {:?})",
            img.name, img.status
        )));
    }
    // A server is never built on a chain that leaves the image store.
    let (check, store_dir) = (img.clone(), store_dir.to_owned());
    blocking(move || crate::image_files::check_stored_image(&check, &store_dir))
        .await?
        .map_err(ServerError::Conflict)?;
    let check = img.clone();
    blocking(move || crate::disks::root_size(&check, disk_gb))
        .await?
        .map_err(|e| ServerError::Invalid(crate::util::error_chain(&e)))?;
    Ok(())
}

/// Starts `action` on server `id` if its status allows it and no other
/// action runs (a 409 otherwise); the action itself runs in the
/// background.
pub async fn action(
    sup: &Arc<Supervisor>,
    id: &str,
    action: ServerAction,
) -> Result<(), ServerError> {
    Ok(sup.action(id, action).await?)
}

/// Deletes server `id`: its VMM (even while an action runs), its files
/// (the console log is archived) and its allocation. Returns when done.
pub async fn delete(sup: &Arc<Supervisor>, id: &str) -> Result<(), ServerError> {
    sup.delete(id).await?;
    crate::networks::firewall::sync_or_warn(&sup.store).await;
    Ok(())
}

/// The last `tail` lines of server `id`'s console log, or of a deleted
/// server's archived one (by id).
pub async fn console(
    store: &Arc<Store>,
    sup: &Supervisor,
    id: String,
    tail: Option<usize>,
) -> Result<String, ServerError> {
    let i = id.clone();
    let path = match store.call(move |s| s.get_server(&i)).await {
        Ok(_) => sup.server_dir(&id).join("serial.log"),
        Err(StoreError::NotFound { .. }) if uuid::Uuid::parse_str(&id).is_ok() => {
            let p = sup.archived_console(&id);
            if !p.exists() {
                return Err(ServerError::NotFound(format!("server {id:?} not found")));
            }
            p
        }
        Err(e) => return Err(e.into()),
    };
    blocking(move || crate::util::read_tail(&path, tail)).await
}

/// A new server's display: the create's, else its image's (for a disk
/// image `vga` by default when its `os_type` is `windows`: no serial
/// console there; see `crate::image_files`). A kernel image boots without
/// firmware, which would set up the VGA adapter: `vga` is refused for it.
pub fn display_for(image: &Image, asked: Option<Display>) -> Result<Display, ServerError> {
    match (&image.kind, asked) {
        (ImageKind::Kernel { .. }, Some(Display::Vga)) => Err(ServerError::Invalid(
            "display \"vga\" needs a disk image (firmware sets the adapter up); a kernel \
             image boots directly and has display \"none\""
                .into(),
        )),
        (_, Some(d)) => Ok(d),
        (ImageKind::Kernel { .. }, None) => Ok(Display::None),
        (ImageKind::Disk { .. }, None) => Ok(image.display),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_api::compute::OsType;

    #[test]
    fn display_defaults_and_refusals() {
        let image = |kind, display| Image {
            id: "i".into(),
            name: "i".into(),
            kind,
            created_at: String::new(),
            status: ImageStatus::Active,
            progress: None,
            fault: None,
            virtio_model: Default::default(),
            tpm: false,
            display,
            disk_bus: Default::default(),
            secure_boot: false,
            agent: false,
        };
        let kernel = image(
            ImageKind::Kernel {
                kernel: "/k".into(),
                initramfs: None,
                cmdline: String::new(),
            },
            Display::None,
        );
        let disk = |display| {
            image(
                ImageKind::Disk {
                    path: "/d".into(),
                    format: kiln_api::compute::ImageFormat::Raw,
                    size_bytes: 0,
                    sha256: String::new(),
                    firmware: Firmware::Bios,
                    os_type: OsType::Windows,
                },
                display,
            )
        };
        assert_eq!(display_for(&kernel, None).unwrap(), Display::None);
        let e = display_for(&kernel, Some(Display::Vga)).unwrap_err();
        assert!(e.to_string().contains("needs a disk image"), "{e}");
        assert_eq!(
            display_for(&disk(Display::Vga), None).unwrap(),
            Display::Vga
        );
        assert_eq!(
            display_for(&disk(Display::None), None).unwrap(),
            Display::None
        );
        assert_eq!(
            display_for(&disk(Display::Vga), Some(Display::None)).unwrap(),
            Display::None
        );
        assert_eq!(
            display_for(&disk(Display::None), Some(Display::Vga)).unwrap(),
            Display::Vga
        );
    }
}
