//! A server's installation media, checked at create: the bus of its root
//! disk, the ISO images on its CD-ROMs, and the answer-file ISO that
//! carries its user data as `autounattend.xml` for an unattended Windows
//! install (built at every start by `crate::config_drive::build_answer_file`).
//!
//! The CD-ROMs and SATA disks share one AHCI controller of
//! [`AHCI_PORTS`] ports, in this order: a SATA root disk, the ISO the
//! server boots from (when its image is an ISO), the `cdroms` asked for,
//! the answer file. The config drive stays a virtio disk.

use kiln_api::compute::{DiskBus, Image, ImageKind, ImageStatus, ServerCreate};

use super::ServerError;
use crate::disks::is_iso;
use crate::store::{Store, StoreError};

/// The ports of kiln-vmm's AHCI controller (ICH9's six).
pub const AHCI_PORTS: usize = 6;

/// What [`resolve`] decided.
#[derive(Debug, PartialEq, Eq)]
pub struct Media {
    pub disk_bus: DiskBus,
    /// ISO image ids, in the order asked.
    pub cdroms: Vec<String>,
    pub answer_file: bool,
}

/// Checks a create's media against `image` (the server's) and
/// `disk_image` (a kernel image's root disk image). Blocking (store reads).
pub fn resolve(
    store: &Store,
    req: &ServerCreate,
    image: &Image,
    disk_image: Option<&Image>,
) -> Result<Media, ServerError> {
    if disk_image.is_some_and(is_iso) {
        return Err(ServerError::Invalid(
            "disk_image is an ISO: give a raw or qcow2 disk image for the root disk, and the \
             ISO in cdroms"
                .into(),
        ));
    }
    let mut cdroms = Vec::with_capacity(req.cdroms.len());
    for key in &req.cdroms {
        let img = store.get_image(key).map_err(|e| match e {
            StoreError::NotFound { .. } => {
                ServerError::Invalid(format!("cdroms: unknown image {key:?}"))
            }
            e => e.into(),
        })?;
        if !is_iso(&img) {
            let what = match &img.kind {
                ImageKind::Kernel { .. } => "a kernel image".to_owned(),
                ImageKind::Disk { format, .. } => format!("a {format} disk image"),
            };
            return Err(ServerError::Invalid(format!(
                "cdroms: image {:?} is {what}, not an ISO (format iso)",
                img.name
            )));
        }
        if img.status != ImageStatus::Active {
            return Err(ServerError::Conflict(format!(
                "cdroms: image {:?} is not active (it is {:?})",
                img.name, img.status
            )));
        }
        cdroms.push(img.id);
    }
    if req.answer_file && req.user_data.is_none() {
        return Err(ServerError::Invalid(
            "answer_file needs user_data: its decoded bytes become autounattend.xml".into(),
        ));
    }
    let disk_bus = req.disk_bus.unwrap_or(match disk_image {
        Some(d) => d.disk_bus,
        None => image.disk_bus,
    });
    let has_root = disk_image.is_some() || matches!(image.kind, ImageKind::Disk { .. });
    let ports = usize::from(has_root && disk_bus == DiskBus::Sata)
        + usize::from(is_iso(image))
        + cdroms.len()
        + usize::from(req.answer_file);
    if ports > AHCI_PORTS {
        return Err(ServerError::Invalid(format!(
            "too many SATA disks and CD-ROMs: {ports} for the AHCI controller's {AHCI_PORTS} \
             ports (a SATA root disk, the ISO the server boots from, each of cdroms, the answer \
             file)"
        )));
    }
    Ok(Media {
        disk_bus,
        cdroms,
        answer_file: req.answer_file,
    })
}
