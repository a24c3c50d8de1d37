//! Ephemeral root disks, in one of two backends behind [`DiskBackend`]:
//!
//! - `qcow2`: a qcow2 overlay on a disk image from the image store,
//!   `servers/ID/root.qcow2`, made with the kiln-block engine in O(1)
//!   (only the header and tables are written; the image is never copied).
//! - `lvm`: a thin snapshot of the image's thin LV (see [`crate::lvm`]).
//!
//! A server whose image is an ISO (an installer on its CD-ROM) gets a
//! blank root disk of its flavor's size instead (Nova's behaviour): a
//! qcow2 file with no backing file, or a blank thin LV.
//!
//! Naming, sizing ([`root_size`]), capacity, removal and start-up
//! reconciliation ([`DiskBackend::reconcile`]) are shared. A root disk
//! lives as long as the server: stop, start and reboot keep it, delete
//! removes it.

use std::path::{Path, PathBuf};

use std::collections::HashSet;

use kiln_api::compute::{DiskFormat, Image, ImageFormat, ImageKind};
use kiln_block::{CreateOptions, OpenOptions};

use thiserror::Error;

use crate::config::{DiskBackendKind, DisksConfig};
use crate::lvm::{KilnLv, Lvm, LvmError};

/// Why a root disk could not be sized, made, found or removed.
#[derive(Debug, Error)]
pub enum DiskError {
    #[error("image {0:?} is not a disk image")]
    NotDiskImage(String),
    #[error(
        "image {0:?} is an ISO, so the server gets a blank root disk of its flavor's size: \
         the flavor needs a disk (disk_gb > 0)"
    )]
    IsoNeedsDisk(String),
    #[error("cannot open disk image {name:?}")]
    Open {
        name: String,
        #[source]
        source: kiln_block::Error,
    },
    #[error(
        "disk image {name:?} is {image_size} bytes, larger than the flavor's disk of {disk_gb} GiB"
    )]
    TooLarge {
        name: String,
        image_size: u64,
        disk_gb: u64,
    },
    #[error("cannot make the root disk")]
    Make(#[source] kiln_block::Error),
    #[error("cannot make the root disk")]
    Place(#[source] std::io::Error),
    #[error("cannot copy image {name:?} into LVM")]
    LvmCopy {
        name: String,
        #[source]
        source: LvmError,
    },
    #[error("cannot make the root disk")]
    LvmRoot(#[source] LvmError),
    #[error(transparent)]
    Lvm(#[from] LvmError),
    #[error("cannot remove {0}")]
    Remove(String, #[source] std::io::Error),
    #[error("cannot list {0}")]
    List(String, #[source] std::io::Error),
}

/// The name of the root disk in a server's directory.
pub const ROOT_DISK: &str = "root.qcow2";

const GIB: u64 = 1 << 30;

/// The virtual size of a disk image, read in its recorded format.
pub fn virtual_size(image: &Image) -> Result<u64, DiskError> {
    let ImageKind::Disk { path, format, .. } = &image.kind else {
        return Err(DiskError::NotDiskImage(image.name.clone()));
    };
    let opts = OpenOptions {
        read_only: true,
        direct: false,
    };
    kiln_block::open_disk(Path::new(path), format.disk(), opts)
        .map(|d| d.size())
        .map_err(|source| DiskError::Open {
            name: image.name.clone(),
            source,
        })
}

/// The root disk's size for a flavor's `disk_gb` (0: the image's size);
/// refuses an image larger than the flavor's disk.
pub fn root_size(image: &Image, disk_gb: u64) -> Result<u64, DiskError> {
    if is_iso(image) {
        return match disk_gb {
            0 => Err(DiskError::IsoNeedsDisk(image.name.clone())),
            n => Ok(n.saturating_mul(GIB)),
        };
    }
    let image_size = virtual_size(image)?;
    if disk_gb == 0 {
        return Ok(image_size);
    }
    let size = disk_gb.saturating_mul(GIB);
    if image_size > size {
        return Err(DiskError::TooLarge {
            name: image.name.clone(),
            image_size,
            disk_gb,
        });
    }
    Ok(size)
}

/// An installer ISO (its servers' root disks are blank).
pub fn is_iso(image: &Image) -> bool {
    matches!(
        image.kind,
        ImageKind::Disk {
            format: ImageFormat::Iso,
            ..
        }
    )
}

/// Where servers' root disks live.
#[derive(Clone, Debug)]
pub enum DiskBackend {
    /// `servers/ID/root.qcow2` overlays.
    Qcow2,
    /// Thin snapshots in an LVM thin pool.
    Lvm(Lvm),
}

/// A root disk or image copy a backend holds, as found on start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held {
    /// Server `id`'s root disk.
    Root(String),
    /// Image `id`'s copy (lvm only).
    Image(String),
    /// Something a crash left half made, named as the backend names it.
    Partial(String),
}

/// What [`DiskBackend::reconcile`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Removed: disks of servers that are gone, half-made things.
    pub removed: Vec<String>,
    /// Could not be removed (with why): left for the operator.
    pub leftovers: Vec<String>,
}

impl DiskBackend {
    pub fn from_config(c: &DisksConfig) -> Result<DiskBackend, DiskError> {
        Ok(match c.backend {
            DiskBackendKind::Qcow2 => DiskBackend::Qcow2,
            DiskBackendKind::Lvm => DiskBackend::Lvm(Lvm::new(&c.volume_group, &c.thin_pool)?),
        })
    }

    /// The root disk the VMM is given: its path and format.
    pub fn root_disk(&self, server_id: &str, dir: &Path) -> (PathBuf, DiskFormat) {
        match self {
            DiskBackend::Qcow2 => (dir.join(ROOT_DISK), DiskFormat::Qcow2),
            DiskBackend::Lvm(l) => (l.dev_path(&crate::lvm::root_lv(server_id)), DiskFormat::Raw),
        }
    }

    /// Makes server `server_id`'s root disk (in `dir` for qcow2) of the
    /// flavor's size unless it is there; answers its path. Blocking.
    pub fn ensure_root_disk(
        &self,
        server_id: &str,
        dir: &Path,
        image: &Image,
        disk_gb: u64,
    ) -> Result<PathBuf, DiskError> {
        match self {
            DiskBackend::Qcow2 => ensure_root_disk(dir, image, disk_gb),
            DiskBackend::Lvm(l) => {
                let size = root_size(image, disk_gb)?;
                if is_iso(image) {
                    return l
                        .ensure_blank_root(server_id, size)
                        .map_err(DiskError::LvmRoot);
                }
                let ImageKind::Disk { path, format, .. } = &image.kind else {
                    return Err(DiskError::NotDiskImage(image.name.clone()));
                };
                let opts = OpenOptions {
                    read_only: true,
                    direct: false,
                };
                let src = kiln_block::open_disk(Path::new(path), format.disk(), opts).map_err(
                    |source| DiskError::Open {
                        name: image.name.clone(),
                        source,
                    },
                )?;
                let read =
                    |off: u64, buf: &mut [u8]| src.read_at(off, buf).map_err(std::io::Error::other);
                l.ensure_image(&image.id, &read, src.size())
                    .map_err(|source| DiskError::LvmCopy {
                        name: image.name.clone(),
                        source,
                    })?;
                l.ensure_root(server_id, &image.id, size)
                    .map_err(DiskError::LvmRoot)
            }
        }
    }

    /// Removes server `server_id`'s root disk (gone already is fine).
    pub fn remove_root_disk(&self, server_id: &str, dir: &Path) -> Result<(), DiskError> {
        match self {
            DiskBackend::Qcow2 => {
                for f in [ROOT_DISK.to_owned(), format!("{ROOT_DISK}.partial")] {
                    match std::fs::remove_file(dir.join(&f)) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(DiskError::Remove(f, e))
                        }
                        _ => {}
                    }
                }
                Ok(())
            }
            DiskBackend::Lvm(l) => Ok(l.remove(&crate::lvm::root_lv(server_id))?),
        }
    }

    /// Removes a deleted image's copy (lvm); qcow2 keeps none.
    pub fn remove_image(&self, image_id: &str) -> Result<(), DiskError> {
        match self {
            DiskBackend::Qcow2 => Ok(()),
            DiskBackend::Lvm(l) => Ok(l.remove(&crate::lvm::image_lv(image_id))?),
        }
    }

    /// The disk capacity placement hands out, in GiB, when the backend has
    /// its own (the thin pool's data size); `None`: the file system of the
    /// state directory.
    pub fn capacity_gb(&self) -> Result<Option<u64>, DiskError> {
        match self {
            DiskBackend::Qcow2 => Ok(None),
            DiskBackend::Lvm(l) => Ok(Some(l.capacity_bytes()? / GIB)),
        }
    }

    /// Everything this backend holds.
    pub fn held(&self, servers_dir: &Path) -> Result<Vec<Held>, DiskError> {
        match self {
            DiskBackend::Qcow2 => {
                let mut out = Vec::new();
                let rd = match std::fs::read_dir(servers_dir) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                    Err(e) => return Err(DiskError::List(servers_dir.display().to_string(), e)),
                };
                for e in rd.flatten() {
                    let id = e.file_name().to_string_lossy().into_owned();
                    if e.path().join(ROOT_DISK).exists() {
                        out.push(Held::Root(id.clone()));
                    }
                    if e.path().join(format!("{ROOT_DISK}.partial")).exists() {
                        out.push(Held::Partial(format!("{id}/{ROOT_DISK}.partial")));
                    }
                }
                Ok(out)
            }
            DiskBackend::Lvm(l) => Ok(l
                .kiln_lvs()?
                .iter()
                .filter_map(|lv| {
                    Some(match crate::lvm::parse_lv_name(&lv.lv_name)? {
                        KilnLv::Root(id) => Held::Root(id.into()),
                        KilnLv::Image(id) => Held::Image(id.into()),
                        KilnLv::PartialImage(_) => Held::Partial(lv.lv_name.clone()),
                    })
                })
                .collect()),
        }
    }

    fn remove_held(&self, servers_dir: &Path, h: &Held) -> Result<(), DiskError> {
        match (self, h) {
            (_, Held::Root(id)) => self.remove_root_disk(id, &servers_dir.join(id)),
            (_, Held::Image(id)) => self.remove_image(id),
            (DiskBackend::Qcow2, Held::Partial(rel)) => std::fs::remove_file(servers_dir.join(rel))
                .map_err(|e| DiskError::Remove(rel.clone(), e)),
            (DiskBackend::Lvm(l), Held::Partial(name)) => Ok(l.remove(name)?),
        }
    }

    /// Start-up reconciliation: removes root disks of servers not in
    /// `servers`, image copies of images not in `images`, and anything half
    /// made; what cannot be removed is reported. Blocking.
    pub fn reconcile(
        &self,
        servers_dir: &Path,
        servers: &HashSet<String>,
        images: &HashSet<String>,
    ) -> Result<Reconciled, DiskError> {
        let mut r = Reconciled::default();
        for h in self.held(servers_dir)? {
            let (stale, name) = match &h {
                Held::Root(id) => (!servers.contains(id), format!("root disk of server {id}")),
                Held::Image(id) => (!images.contains(id), format!("copy of image {id}")),
                Held::Partial(n) => (true, format!("half-made {n}")),
            };
            if !stale {
                continue;
            }
            match self.remove_held(servers_dir, &h) {
                Ok(()) => r.removed.push(name),
                Err(e) => r
                    .leftovers
                    .push(format!("{name}: {}", crate::util::error_chain(&e))),
            }
        }
        Ok(r)
    }
}

/// Makes the root disk in `dir` unless it is there already; answers its
/// path.
pub fn ensure_root_disk(dir: &Path, image: &Image, disk_gb: u64) -> Result<PathBuf, DiskError> {
    let path = dir.join(ROOT_DISK);
    if path.exists() {
        return Ok(path);
    }
    let ImageKind::Disk {
        path: base, format, ..
    } = &image.kind
    else {
        return Err(DiskError::NotDiskImage(image.name.clone()));
    };
    let size = root_size(image, disk_gb)?;
    let partial = dir.join(format!("{ROOT_DISK}.partial"));
    let _ = std::fs::remove_file(&partial);
    let opts = CreateOptions {
        // An ISO is no backing file: the server installs onto a blank disk.
        backing: (!format.is_iso()).then(|| (PathBuf::from(base), format.disk())),
        ..CreateOptions::default()
    };
    kiln_block::create_qcow2(&partial, size, opts).map_err(DiskError::Make)?;
    // Appears whole or not at all (a crash leaves only the .partial).
    std::fs::rename(&partial, &path).map_err(DiskError::Place)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk_image(path: &Path, format: DiskFormat) -> Image {
        Image {
            id: "i".into(),
            name: "img".into(),
            kind: ImageKind::Disk {
                format: format.into(),
                path: path.display().to_string(),
                size_bytes: 0,
                sha256: String::new(),
                firmware: Default::default(),
                os_type: Default::default(),
            },
            created_at: String::new(),
            status: Default::default(),
            progress: None,
            fault: None,
            virtio_model: Default::default(),
            tpm: false,
            display: Default::default(),
            disk_bus: Default::default(),
            secure_boot: false,
            agent: false,
        }
    }

    #[test]
    fn overlay_has_the_flavor_size_and_the_image_as_backing() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        std::fs::write(&base, vec![0xabu8; 1 << 20]).unwrap();
        let img = disk_image(&base, DiskFormat::Raw);
        let root = ensure_root_disk(dir.path(), &img, 2).unwrap();
        let chain = [kiln_block::BackingFile {
            path: base.clone(),
            format: DiskFormat::Raw,
        }];
        let open = || {
            kiln_block::open_disk_chain(&root, DiskFormat::Qcow2, OpenOptions::default(), &chain)
                .unwrap()
        };
        // The overlay's header names the image: opened only when named.
        assert!(kiln_block::open_disk(&root, DiskFormat::Qcow2, OpenOptions::default()).is_err());
        let d = open();
        assert_eq!(d.size(), 2 << 30);
        let mut buf = [0u8; 4];
        d.read_at(4096, &mut buf).unwrap();
        assert_eq!(buf, [0xab; 4], "reads come from the image");
        d.write_at(4096, &[1, 2, 3, 4]).unwrap();
        d.flush().unwrap();
        assert_eq!(
            std::fs::read(&base).unwrap()[4096],
            0xab,
            "the image is never written"
        );
        // Small: only metadata.
        assert!(std::fs::metadata(&root).unwrap().len() < 1 << 20);
        // Idempotent: a second call keeps the disk and its writes.
        ensure_root_disk(dir.path(), &img, 2).unwrap();
        let d = open();
        d.read_at(4096, &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 4]);
        // Disk 0: the image's own size.
        assert_eq!(root_size(&img, 0).unwrap(), 1 << 20);
    }

    #[test]
    fn reconcile_removes_disks_of_unknown_servers_and_partials() {
        let dir = tempfile::tempdir().unwrap();
        let servers = dir.path().join("servers");
        let base = dir.path().join("base.raw");
        std::fs::write(&base, vec![1u8; 4096]).unwrap();
        let img = disk_image(&base, DiskFormat::Raw);
        let b = DiskBackend::Qcow2;
        for id in ["keep", "gone"] {
            let d = servers.join(id);
            std::fs::create_dir_all(&d).unwrap();
            let p = b.ensure_root_disk(id, &d, &img, 1).unwrap();
            assert_eq!(b.root_disk(id, &d), (p, DiskFormat::Qcow2));
        }
        std::fs::write(servers.join("keep").join("root.qcow2.partial"), b"x").unwrap();
        let mut held = b.held(&servers).unwrap();
        held.sort_by_key(|h| format!("{h:?}"));
        assert_eq!(held.len(), 3, "{held:?}");
        let known: HashSet<String> = ["keep".to_string()].into();
        let r = b.reconcile(&servers, &known, &HashSet::new()).unwrap();
        assert_eq!(r.removed.len(), 2, "{r:?}");
        assert!(r.leftovers.is_empty(), "{r:?}");
        assert_eq!(b.held(&servers).unwrap(), vec![Held::Root("keep".into())]);
        assert!(servers.join("keep/root.qcow2").exists());
        assert!(!servers.join("gone/root.qcow2").exists());
        // A second pass has nothing to do; removing twice is fine.
        assert_eq!(
            b.reconcile(&servers, &known, &HashSet::new()).unwrap(),
            Reconciled::default()
        );
        b.remove_root_disk("gone", &servers.join("gone")).unwrap();
        assert_eq!(b.capacity_gb().unwrap(), None);
    }

    #[test]
    fn image_larger_than_the_flavor_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("big.raw");
        let f = std::fs::File::create(&base).unwrap();
        f.set_len(3 << 30).unwrap();
        let img = disk_image(&base, DiskFormat::Raw);
        let e = root_size(&img, 2).unwrap_err().to_string();
        assert!(e.contains("larger than the flavor's disk of 2 GiB"), "{e}");
        // A raw file claimed to be qcow2 does not open.
        let e = virtual_size(&disk_image(&base, DiskFormat::Qcow2))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot open"), "{e}");
    }
}
