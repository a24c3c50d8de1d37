//! The image store's files (`state_dir/images`): kernel images are
//! registered by host path (their checked copies: [`kernels`]); disk
//! images are copied into the store (`ID.FORMAT`) with their sha256
//! computed on the way, in the background, reporting progress
//! ([`prepare_image`] checks, [`ImportJob::run`] copies), or uploaded as a
//! request body (the protocol: [`crate::images`]). A disk image's
//! format is always the one the request names; a file claimed to be qcow2
//! must start with the qcow2 magic, and nothing is ever probed.
//!
//! Host paths are read only under the directories the admin allows
//! ([`crate::image_files::import_path`]). Every disk image in the store is
//! self-contained: a qcow2 image that names a backing file or an external
//! data file is refused at import (path or upload), and an image found in
//! the store with such a header is refused at kilnd's start and at server
//! create ([`check_stored`]).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use kiln_api::compute::{
    DiskBus, DiskSource, Display, Image, ImageCreate, ImageFormat, ImageKind, ImageStatus,
    ImportProgress,
};
use sha2::{Digest, Sha256};
use thiserror::Error;

pub mod import_path;
pub mod kernels;

use crate::image_files::import_path::ImportDirs;
use crate::util::{check_name, now_rfc3339};

#[derive(Debug, Error)]
pub enum ImportError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot copy the image into the image store")]
    Copy(#[source] std::io::Error),
}

/// The suffix of a file still being written into the image store (an
/// upload, a kernel's copy).
pub const PARTIAL: &str = ".partial";

/// Removes leftovers (`*.partial`) from the image store; run at start,
/// when no upload can be running. Answers what it removed.
pub fn remove_partials(store_dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    if let Ok(rd) = std::fs::read_dir(store_dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.to_string_lossy().ends_with(PARTIAL) && std::fs::remove_file(&p).is_ok() {
                removed.push(p);
            }
        }
    }
    removed
}

/// A disk image copy still to do: `src` (opened under the import rules)
/// into `dst`, in `format`.
#[derive(Debug)]
pub struct ImportJob {
    pub src: File,
    pub dst: PathBuf,
    pub total: u64,
    pub format: ImageFormat,
}

/// `/proc/self/fd/N`: the file open as `f`, whatever its path now names.
fn fd_path(f: &File) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()))
}

/// Checks a request and makes its image. A kernel image is complete; a
/// disk image comes back `importing`, with the copy to run
/// ([`ImportJob::run`]). Every check that can fail fast (name, path,
/// size, the qcow2 magic) is done here, so a bad request is refused at
/// once. Blocking: run it off the async threads.
pub fn prepare_image(
    req: &ImageCreate,
    store_dir: &Path,
    dirs: &ImportDirs,
) -> Result<(Image, Option<ImportJob>), ImportError> {
    let id = uuid::Uuid::new_v4().to_string();
    let mut job = None;
    let virtio_model = match req {
        ImageCreate::Kernel { virtio_model, .. } | ImageCreate::Disk { virtio_model, .. } => {
            virtio_model.unwrap_or_default()
        }
    };
    // A TPM: as asked, else on for Windows (11 and Server 2025 want one).
    let tpm = match req {
        ImageCreate::Kernel { tpm, .. } => tpm.unwrap_or(false),
        ImageCreate::Disk { tpm, os_type, .. } => {
            tpm.unwrap_or(*os_type == Some(kiln_api::compute::OsType::Windows))
        }
    };
    // Secure Boot: as asked (UEFI only), else on for Windows on UEFI.
    let secure_boot = match req {
        ImageCreate::Kernel { .. } => false,
        ImageCreate::Disk {
            secure_boot,
            os_type,
            firmware,
            ..
        } => {
            let uefi = *firmware == Some(kiln_api::compute::Firmware::Uefi);
            if *secure_boot == Some(true) && !uefi {
                return Err(ImportError::Invalid(
                    "secure_boot needs firmware uefi (SeaBIOS has no Secure Boot)".into(),
                ));
            }
            secure_boot.unwrap_or(uefi && *os_type == Some(kiln_api::compute::OsType::Windows))
        }
    };
    // A guest agent channel: as asked, else on for Windows (as tpm).
    let agent = match req {
        ImageCreate::Kernel { agent, .. } => agent.unwrap_or(false),
        ImageCreate::Disk { agent, os_type, .. } => {
            agent.unwrap_or(*os_type == Some(kiln_api::compute::OsType::Windows))
        }
    };
    // Its servers' display: as asked, else vga for Windows (no serial
    // console there); kernel images boot without firmware and have none.
    let display = match req {
        ImageCreate::Kernel { .. } => Display::None,
        ImageCreate::Disk {
            display, os_type, ..
        } => display.unwrap_or(if *os_type == Some(kiln_api::compute::OsType::Windows) {
            Display::Vga
        } else {
            Display::None
        }),
    };
    // Its servers' root disk bus: as asked, else SATA for a Windows
    // installer ISO (Windows setup has no virtio driver), else virtio.
    let disk_bus = match req {
        ImageCreate::Kernel { .. } => DiskBus::Virtio,
        ImageCreate::Disk {
            disk_bus,
            os_type,
            format,
            ..
        } => disk_bus.unwrap_or(
            if format.is_iso() && *os_type == Some(kiln_api::compute::OsType::Windows) {
                DiskBus::Sata
            } else {
                DiskBus::Virtio
            },
        ),
    };
    let (name, kind) = match req {
        ImageCreate::Kernel {
            name,
            kernel,
            initramfs,
            cmdline,
            ..
        } => {
            check_name("image", name).map_err(|e| ImportError::Invalid(e.to_string()))?;
            let cmdline = cmdline.clone().unwrap_or_default();
            check_cmdline(&cmdline)?;
            // Checked and copied into the store: servers boot the copy.
            crate::image_files::kernels::copy_in(
                dirs,
                store_dir,
                &id,
                kernel,
                initramfs.as_deref(),
            )
            .map_err(ImportError::Invalid)?;
            (
                name.clone(),
                ImageKind::Kernel {
                    kernel: kernel.clone(),
                    initramfs: initramfs.clone(),
                    cmdline,
                },
            )
        }
        ImageCreate::Disk {
            name,
            path,
            format,
            source,
            firmware,
            os_type,
            ..
        } => {
            check_name("image", name).map_err(|e| ImportError::Invalid(e.to_string()))?;
            let ext = format.as_str();
            std::fs::create_dir_all(store_dir).map_err(ImportError::Copy)?;
            let dst = store_dir.join(format!("{id}.{ext}"));
            let total =
                match (source, path) {
                    (DiskSource::Path, Some(path)) => {
                        let src = dirs
                            .open("disk image", path)
                            .map_err(ImportError::Invalid)?;
                        check_head(&src, *format)?;
                        // What the copy will hold, checked as an upload is
                        // (the copy is checked again: the file may change).
                        check_complete(&fd_path(&src), *format).map_err(ImportError::Invalid)?;
                        let total = src.metadata().map_err(ImportError::Copy)?.len();
                        job = Some(ImportJob {
                            src,
                            dst: dst.clone(),
                            total,
                            format: *format,
                        });
                        total
                    }
                    (DiskSource::Path, None) => {
                        return Err(ImportError::Invalid(
                            "a disk image needs a path (or source: upload)".into(),
                        ))
                    }
                    (DiskSource::Upload, Some(_)) => return Err(ImportError::Invalid(
                        "source: upload takes no path; send the data with PUT /v1/images/{id}/file"
                            .into(),
                    )),
                    (DiskSource::Upload, None) => 0,
                };
            (
                name.clone(),
                ImageKind::Disk {
                    format: *format,
                    path: dst.display().to_string(),
                    size_bytes: total,
                    sha256: String::new(),
                    firmware: firmware.unwrap_or_default(),
                    os_type: os_type.unwrap_or_default(),
                },
            )
        }
    };
    let status = match (req, &job) {
        (_, Some(_)) => ImageStatus::Importing,
        (ImageCreate::Disk { .. }, None) => ImageStatus::Queued,
        (ImageCreate::Kernel { .. }, None) => ImageStatus::Active,
    };
    let progress = job.as_ref().map(|j| ImportProgress {
        bytes_done: 0,
        bytes_total: j.total,
    });
    Ok((
        Image {
            id,
            name,
            kind,
            created_at: now_rfc3339(),
            virtio_model,
            tpm,
            display,
            disk_bus,
            secure_boot,
            agent,
            status,
            progress,
            fault: None,
        },
        job,
    ))
}

/// Checks an image file against its declared format once its data is all
/// there: not empty; a qcow2 one must open as qcow2 in the kiln-block
/// engine and refer to nothing outside itself (no backing file, no external
/// data file: an image must never make kilnd or kiln-vmm read host files);
/// an ISO one must be ISO 9660 (see [`check_iso`]).
pub fn check_complete(path: &Path, format: ImageFormat) -> Result<(), String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the image: {e}"))?
        .len();
    if len == 0 {
        return Err("the image is empty".into());
    }
    match format {
        ImageFormat::Raw => return Ok(()),
        ImageFormat::Iso => {
            let f = File::open(path).map_err(|e| format!("cannot read the image: {e}"))?;
            return check_iso(&f, len);
        }
        ImageFormat::Qcow2 => {}
    }
    let mut head = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|_| "the data is not qcow2: shorter than a qcow2 header".to_string())?;
    if head != *b"QFI\xfb" {
        return Err("the data is not qcow2 (no QFI\\xfb magic); declare the format it has".into());
    }
    self_contained(path)?;
    let opts = kiln_block::OpenOptions {
        read_only: true,
        direct: false,
    };
    kiln_block::open_disk(path, kiln_block::DiskFormat::Qcow2, opts)
        .map(drop)
        .map_err(|e| format!("the data is not a valid qcow2 image: {e}"))
}

/// Where ISO 9660's first volume descriptor starts: sector 16 of 2048.
const ISO_DESCRIPTOR: u64 = 16 * 2048;

/// An ISO image is ISO 9660: a volume descriptor with the `CD001`
/// identifier at sector 16, and a whole number of 2048-byte sectors.
pub fn check_iso(f: &File, len: u64) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let mut vd = [0u8; 6];
    let n = f
        .read_at(&mut vd, ISO_DESCRIPTOR)
        .map_err(|e| format!("cannot read the image: {e}"))?;
    if n < vd.len() || vd[1..6] != *b"CD001" {
        return Err(
            "the data is not an ISO 9660 image (no CD001 volume descriptor at \
                    sector 16); declare the format it has"
                .into(),
        );
    }
    if !len.is_multiple_of(2048) {
        return Err(format!(
            "the ISO image is {len} bytes, not a whole number of 2048-byte sectors"
        ));
    }
    Ok(())
}

/// Refuses a qcow2 image whose header names a backing file or an external
/// data file, naming it.
fn self_contained(path: &Path) -> Result<(), String> {
    match kiln_block::backing_of(path, kiln_block::DiskFormat::Qcow2) {
        Ok(None) => Ok(()),
        Ok(Some((name, _))) => Err(format!(
            "the qcow2 image names backing file {name:?}: only self-contained images are accepted"
        )),
        Err(e @ kiln_block::Error::Unsupported(_)) => {
            Err(format!("the qcow2 image is refused: {e}"))
        }
        Err(e) => Err(format!("the data is not a valid qcow2 image: {e}")),
    }
}

/// Checks a disk image of the store before a server is built on it (and at
/// kilnd's start): its file is a regular file (not a symlink) right in the
/// image store, and a qcow2 one names no backing file and no data file,
/// so no server's disk chain ever leaves the store.
pub fn check_stored(path: &Path, format: ImageFormat, store_dir: &Path) -> Result<(), String> {
    if path.parent() != Some(store_dir) {
        return Err(format!(
            "its file {} is not in the image store {}",
            path.display(),
            store_dir.display()
        ));
    }
    let md =
        std::fs::symlink_metadata(path).map_err(|e| format!("its file {}: {e}", path.display()))?;
    if !md.is_file() {
        return Err(format!("its file {} is not a regular file", path.display()));
    }
    if format == ImageFormat::Qcow2 {
        self_contained(path)?;
    }
    Ok(())
}

/// [`check_stored`] for a disk image record, the message naming it.
pub fn check_stored_image(img: &Image, store_dir: &Path) -> Result<(), String> {
    let ImageKind::Disk { path, format, .. } = &img.kind else {
        return Ok(());
    };
    check_stored(Path::new(path), *format, store_dir)
        .map_err(|e| format!("disk image {:?} is refused: {e}", img.name))
}

/// Refuses an empty file, a file claimed to be qcow2 without the qcow2
/// magic, and one claimed to be an ISO that is not ISO 9660.
fn check_head(src: &File, format: ImageFormat) -> Result<(), ImportError> {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; 4];
    let n = src.read_at(&mut head, 0).map_err(ImportError::Copy)?;
    if n == 0 {
        return Err(ImportError::Invalid("the disk image is empty".into()));
    }
    match format {
        ImageFormat::Qcow2 if head[..n] != *b"QFI\xfb" => Err(ImportError::Invalid(
            "the file is not qcow2 (no QFI\\xfb magic); give the format it has".into(),
        )),
        ImageFormat::Iso => {
            let len = src.metadata().map_err(ImportError::Copy)?.len();
            check_iso(src, len).map_err(ImportError::Invalid)
        }
        _ => Ok(()),
    }
}

impl ImportJob {
    /// Copies and hashes; `progress` is called with the bytes done so far
    /// after every chunk. Answers (size, hex sha256). On error the partial
    /// copy is removed.
    pub fn run(&self, progress: impl FnMut(u64)) -> Result<(u64, String), ImportError> {
        let r = copy_with_sha256(&self.src, &self.dst, progress).and_then(|done| {
            // The copy is what servers use: check it, not the source.
            check_complete(&self.dst, self.format).map_err(ImportError::Invalid)?;
            Ok(done)
        });
        if r.is_err() {
            let _ = std::fs::remove_file(&self.dst);
        }
        r
    }
}

/// [`prepare_image`] and the import at once (for tests and tools).
pub fn build_image(
    req: &ImageCreate,
    store_dir: &Path,
    dirs: &ImportDirs,
) -> Result<Image, ImportError> {
    let (mut img, job) = prepare_image(req, store_dir, dirs)?;
    if let Some(job) = job {
        let (size, sha) = job.run(|_| {})?;
        if let ImageKind::Disk {
            size_bytes, sha256, ..
        } = &mut img.kind
        {
            *size_bytes = size;
            *sha256 = sha;
        }
        img.status = ImageStatus::Active;
        img.progress = None;
    }
    Ok(img)
}

/// Kernel command lines: printable ASCII, at most 2048 bytes (the x86 boot
/// protocol's usual limit).
pub fn check_cmdline(c: &str) -> Result<(), ImportError> {
    if c.len() > 2048 {
        return Err(ImportError::Invalid(
            "cmdline is longer than 2048 bytes".into(),
        ));
    }
    if c.bytes().any(|b| !(0x20..0x7f).contains(&b)) {
        return Err(ImportError::Invalid(
            "cmdline must be printable ASCII".into(),
        ));
    }
    Ok(())
}

fn copy_with_sha256(
    src: &File,
    dst: &Path,
    mut progress: impl FnMut(u64),
) -> Result<(u64, String), ImportError> {
    use std::os::unix::fs::FileExt;
    let mut offset = 0u64;
    let mut input = |buf: &mut [u8]| {
        let n = src.read_at(buf, offset)?;
        offset += n as u64;
        Ok::<usize, std::io::Error>(n)
    };
    let mut out = File::create_new(dst).map_err(ImportError::Copy)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = input(&mut buf).map_err(ImportError::Copy)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(ImportError::Copy)?;
        total += n as u64;
        progress(total);
    }
    out.sync_all().map_err(ImportError::Copy)?;
    let digest = hash.finalize();
    Ok((total, digest.iter().map(|b| format!("{b:02x}")).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_import_copies_and_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("disk.raw");
        std::fs::write(&src, b"abc").unwrap();
        let req = ImageCreate::Disk {
            name: "d".into(),
            path: Some(src.display().to_string()),
            format: ImageFormat::Raw,
            source: DiskSource::Path,
            firmware: Some(kiln_api::compute::Firmware::Uefi),
            os_type: Some(kiln_api::compute::OsType::Windows),
            virtio_model: Some(kiln_api::compute::VirtioModel::Transitional),
            tpm: None,
            agent: None,
            display: None,
            disk_bus: None,
            secure_boot: None,
        };
        let dirs = ImportDirs::new(&dir.path().join("state"), &[dir.path().to_owned()]);
        let img = build_image(&req, &dir.path().join("store"), &dirs).unwrap();
        assert_eq!(
            img.virtio_model,
            kiln_api::compute::VirtioModel::Transitional
        );
        assert_eq!(img.display, Display::Vga, "windows: vga by default");
        assert!(img.agent && img.tpm, "windows: agent and tpm by default");
        let ImageKind::Disk {
            path,
            size_bytes,
            sha256,
            firmware,
            os_type,
            ..
        } = img.kind
        else {
            panic!()
        };
        assert_eq!(firmware, kiln_api::compute::Firmware::Uefi);
        assert_eq!(os_type, kiln_api::compute::OsType::Windows);
        assert_eq!(size_bytes, 3);
        assert_eq!(
            sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(std::fs::read(path).unwrap(), b"abc");
    }

    #[test]
    fn bad_requests_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("disk.raw");
        std::fs::write(&src, b"not qcow2").unwrap();
        let store = dir.path().join("store");
        let dirs = ImportDirs::new(&dir.path().join("state"), &[dir.path().to_owned()]);
        let disk = |name: &str, path: &str, format| ImageCreate::Disk {
            name: name.into(),
            path: Some(path.into()),
            format,
            source: DiskSource::Path,
            firmware: None,
            os_type: None,
            virtio_model: None,
            tpm: None,
            agent: None,
            display: None,
            disk_bus: None,
            secure_boot: None,
        };
        let s = src.display().to_string();
        for req in [
            disk("q", &s, ImageFormat::Qcow2),
            disk("../x", &s, ImageFormat::Raw),
            disk("r", "relative/path", ImageFormat::Raw),
            disk(
                "r",
                &format!("{}/../disk.raw", dir.path().display()),
                ImageFormat::Raw,
            ),
            disk("r", "/nonexistent/file", ImageFormat::Raw),
            disk("r", "/tmp", ImageFormat::Raw),
            ImageCreate::Disk {
                name: "u".into(),
                path: Some(s.clone()),
                format: ImageFormat::Raw,
                source: DiskSource::Upload,
                firmware: None,
                os_type: None,
                virtio_model: None,
                tpm: None,
                agent: None,
                display: None,
                disk_bus: None,
                secure_boot: None,
            },
            ImageCreate::Disk {
                name: "p".into(),
                path: None,
                format: ImageFormat::Raw,
                source: DiskSource::Path,
                firmware: None,
                os_type: None,
                virtio_model: None,
                tpm: None,
                agent: None,
                display: None,
                disk_bus: None,
                secure_boot: None,
            },
            ImageCreate::Kernel {
                name: "k".into(),
                kernel: s.clone(),
                initramfs: None,
                cmdline: Some("a\nb".into()),
                virtio_model: None,
                tpm: None,
                agent: None,
            },
        ] {
            assert!(
                matches!(
                    build_image(&req, &store, &dirs),
                    Err(ImportError::Invalid(_))
                ),
                "{req:?}"
            );
        }
        // An upload record waits for its data.
        let (img, job) = prepare_image(
            &ImageCreate::Disk {
                name: "u".into(),
                path: None,
                format: ImageFormat::Qcow2,
                source: DiskSource::Upload,
                firmware: None,
                os_type: None,
                virtio_model: None,
                tpm: None,
                agent: None,
                display: None,
                disk_bus: None,
                secure_boot: None,
            },
            &store,
            &dirs,
        )
        .unwrap();
        assert!(job.is_none());
        assert_eq!(img.status, ImageStatus::Queued);
        // A file that is not what it claims, or names a backing file.
        assert!(check_complete(&src, ImageFormat::Qcow2)
            .unwrap_err()
            .contains("not qcow2"));
        check_complete(&src, ImageFormat::Raw).unwrap();
        let b = dir.path().join("backed.qcow2");
        let opts = kiln_block::CreateOptions {
            backing: Some((src.clone(), kiln_block::DiskFormat::Raw)),
            ..Default::default()
        };
        kiln_block::create_qcow2(&b, 1 << 20, opts).unwrap();
        let e = check_complete(&b, ImageFormat::Qcow2).unwrap_err();
        assert!(e.contains("backing file") && e.contains("disk.raw"), "{e}");
        let e = check_stored(&b, ImageFormat::Qcow2, dir.path()).unwrap_err();
        assert!(e.contains("backing file"), "{e}");
        let e = check_stored(&b, ImageFormat::Qcow2, &store).unwrap_err();
        assert!(e.contains("not in the image store"), "{e}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(check_complete(&empty, ImageFormat::Raw).is_err());
        // A failed qcow2 import leaves nothing behind.
        assert_eq!(
            std::fs::read_dir(&store).map(|d| d.count()).unwrap_or(0),
            0,
            "{:?}",
            img.kind
        );
    }
}
