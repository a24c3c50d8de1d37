//! The image service: kernel images are registered by host path; disk
//! images are copied into the image store (`state_dir/images/ID.FORMAT`)
//! with their sha256 computed on the way, in the background, reporting
//! progress ([`prepare_image`] checks, [`ImportJob::run`] copies), or
//! uploaded as a request body (see [`crate::upload`]). A disk image's
//! format is always the one the request names; a file claimed to be qcow2
//! must start with the qcow2 magic, and nothing is ever probed.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use kiln_api::compute::{
    DiskFormat, DiskSource, Image, ImageCreate, ImageKind, ImageStatus, ImportProgress,
};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::util::{check_name, now_rfc3339};

#[derive(Debug, Error)]
pub enum ImageError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot copy the image into the image store")]
    Copy(#[source] std::io::Error),
}

/// Checks that `p` is an absolute path without `..` to a readable regular
/// file.
pub fn check_host_file(what: &str, p: &str) -> Result<PathBuf, ImageError> {
    let path = Path::new(p);
    if !path.is_absolute() || p.contains('\0') {
        return Err(ImageError::Invalid(format!(
            "{what} path {p:?} must be absolute"
        )));
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(ImageError::Invalid(format!(
            "{what} path {p:?} must not contain '..'"
        )));
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(path.to_owned()),
        Ok(_) => Err(ImageError::Invalid(format!(
            "{what} path {p:?} is not a regular file"
        ))),
        Err(e) => Err(ImageError::Invalid(format!("{what} path {p:?}: {e}"))),
    }
}

/// A disk image copy still to do: `src` into `dst`.
#[derive(Debug)]
pub struct ImportJob {
    pub src: PathBuf,
    pub dst: PathBuf,
    pub total: u64,
}

/// Checks a request and makes its image. A kernel image is complete; a
/// disk image comes back `importing`, with the copy to run
/// ([`ImportJob::run`]). Every check that can fail fast (name, path,
/// size, the qcow2 magic) is done here, so a bad request is refused at
/// once. Blocking: run it off the async threads.
pub fn prepare_image(
    req: &ImageCreate,
    store_dir: &Path,
) -> Result<(Image, Option<ImportJob>), ImageError> {
    let id = uuid::Uuid::new_v4().to_string();
    let mut job = None;
    let virtio_model = match req {
        ImageCreate::Kernel { virtio_model, .. } | ImageCreate::Disk { virtio_model, .. } => {
            virtio_model.unwrap_or_default()
        }
    };
    let (name, kind) = match req {
        ImageCreate::Kernel {
            name,
            kernel,
            initramfs,
            cmdline,
            ..
        } => {
            check_name("image", name).map_err(ImageError::Invalid)?;
            check_host_file("kernel", kernel)?;
            if let Some(i) = initramfs {
                check_host_file("initramfs", i)?;
            }
            let cmdline = cmdline.clone().unwrap_or_default();
            check_cmdline(&cmdline)?;
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
            check_name("image", name).map_err(ImageError::Invalid)?;
            let ext = match format {
                DiskFormat::Raw => "raw",
                DiskFormat::Qcow2 => "qcow2",
            };
            std::fs::create_dir_all(store_dir).map_err(ImageError::Copy)?;
            let dst = store_dir.join(format!("{id}.{ext}"));
            let total =
                match (source, path) {
                    (DiskSource::Path, Some(path)) => {
                        let src = check_host_file("disk image", path)?;
                        check_head(&src, *format)?;
                        let total = std::fs::metadata(&src).map_err(ImageError::Copy)?.len();
                        job = Some(ImportJob {
                            src,
                            dst: dst.clone(),
                            total,
                        });
                        total
                    }
                    (DiskSource::Path, None) => {
                        return Err(ImageError::Invalid(
                            "a disk image needs a path (or source: upload)".into(),
                        ))
                    }
                    (DiskSource::Upload, Some(_)) => return Err(ImageError::Invalid(
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
            status,
            progress,
            fault: None,
        },
        job,
    ))
}

/// Checks an image file against its declared format once its data is all
/// there: not empty; a qcow2 one must open as qcow2 in the kiln-block
/// engine and name no backing file (an uploaded image must not make kilnd
/// read host files).
pub fn check_complete(path: &Path, format: DiskFormat) -> Result<(), String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the upload: {e}"))?
        .len();
    if len == 0 {
        return Err("the image is empty".into());
    }
    if format == DiskFormat::Raw {
        return Ok(());
    }
    let mut head = [0u8; 16];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|_| "the data is not qcow2: shorter than a qcow2 header".to_string())?;
    if head[..4] != *b"QFI\xfb" {
        return Err("the data is not qcow2 (no QFI\\xfb magic); declare the format it has".into());
    }
    if u64::from_be_bytes(head[8..16].try_into().unwrap()) != 0 {
        return Err("the qcow2 image names a backing file; upload a self-contained image".into());
    }
    let opts = kiln_block::OpenOptions {
        read_only: true,
        direct: false,
    };
    kiln_block::open_disk(path, kiln_block::ImageFormat::Qcow2, opts)
        .map(drop)
        .map_err(|e| format!("the data is not a valid qcow2 image: {e}"))
}

/// Refuses an empty file, and a file claimed to be qcow2 without the
/// qcow2 magic.
fn check_head(src: &Path, format: DiskFormat) -> Result<(), ImageError> {
    let mut head = [0u8; 4];
    let n = File::open(src)
        .and_then(|mut f| f.read(&mut head))
        .map_err(ImageError::Copy)?;
    if n == 0 {
        return Err(ImageError::Invalid("the disk image is empty".into()));
    }
    if format == DiskFormat::Qcow2 && head[..n] != *b"QFI\xfb" {
        return Err(ImageError::Invalid(
            "the file is not qcow2 (no QFI\\xfb magic); give the format it has".into(),
        ));
    }
    Ok(())
}

impl ImportJob {
    /// Copies and hashes; `progress` is called with the bytes done so far
    /// after every chunk. Answers (size, hex sha256). On error the partial
    /// copy is removed.
    pub fn run(&self, progress: impl FnMut(u64)) -> Result<(u64, String), ImageError> {
        let r = copy_with_sha256(&self.src, &self.dst, progress);
        if r.is_err() {
            let _ = std::fs::remove_file(&self.dst);
        }
        r
    }
}

/// [`prepare_image`] and the import at once (for tests and tools).
pub fn build_image(req: &ImageCreate, store_dir: &Path) -> Result<Image, ImageError> {
    let (mut img, job) = prepare_image(req, store_dir)?;
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
pub fn check_cmdline(c: &str) -> Result<(), ImageError> {
    if c.len() > 2048 {
        return Err(ImageError::Invalid(
            "cmdline is longer than 2048 bytes".into(),
        ));
    }
    if c.bytes().any(|b| !(0x20..0x7f).contains(&b)) {
        return Err(ImageError::Invalid(
            "cmdline must be printable ASCII".into(),
        ));
    }
    Ok(())
}

fn copy_with_sha256(
    src: &Path,
    dst: &Path,
    mut progress: impl FnMut(u64),
) -> Result<(u64, String), ImageError> {
    let mut input = File::open(src).map_err(ImageError::Copy)?;
    let mut out = File::create_new(dst).map_err(ImageError::Copy)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(ImageError::Copy)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(ImageError::Copy)?;
        total += n as u64;
        progress(total);
    }
    out.sync_all().map_err(ImageError::Copy)?;
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
            format: DiskFormat::Raw,
            source: DiskSource::Path,
            firmware: Some(kiln_api::compute::Firmware::Uefi),
            os_type: Some(kiln_api::compute::OsType::Windows),
            virtio_model: Some(kiln_api::compute::VirtioModel::Transitional),
        };
        let img = build_image(&req, &dir.path().join("store")).unwrap();
        assert_eq!(
            img.virtio_model,
            kiln_api::compute::VirtioModel::Transitional
        );
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
        let disk = |name: &str, path: &str, format| ImageCreate::Disk {
            name: name.into(),
            path: Some(path.into()),
            format,
            source: DiskSource::Path,
            firmware: None,
            os_type: None,
            virtio_model: None,
        };
        let s = src.display().to_string();
        for req in [
            disk("q", &s, DiskFormat::Qcow2),
            disk("../x", &s, DiskFormat::Raw),
            disk("r", "relative/path", DiskFormat::Raw),
            disk(
                "r",
                &format!("{}/../disk.raw", dir.path().display()),
                DiskFormat::Raw,
            ),
            disk("r", "/nonexistent/file", DiskFormat::Raw),
            disk("r", "/tmp", DiskFormat::Raw),
            ImageCreate::Disk {
                name: "u".into(),
                path: Some(s.clone()),
                format: DiskFormat::Raw,
                source: DiskSource::Upload,
                firmware: None,
                os_type: None,
                virtio_model: None,
            },
            ImageCreate::Disk {
                name: "p".into(),
                path: None,
                format: DiskFormat::Raw,
                source: DiskSource::Path,
                firmware: None,
                os_type: None,
                virtio_model: None,
            },
            ImageCreate::Kernel {
                name: "k".into(),
                kernel: s.clone(),
                initramfs: None,
                cmdline: Some("a\nb".into()),
                virtio_model: None,
            },
        ] {
            assert!(
                matches!(build_image(&req, &store), Err(ImageError::Invalid(_))),
                "{req:?}"
            );
        }
        // An upload record waits for its data.
        let (img, job) = prepare_image(
            &ImageCreate::Disk {
                name: "u".into(),
                path: None,
                format: DiskFormat::Qcow2,
                source: DiskSource::Upload,
                firmware: None,
                os_type: None,
                virtio_model: None,
            },
            &store,
        )
        .unwrap();
        assert!(job.is_none());
        assert_eq!(img.status, ImageStatus::Queued);
        // A file that is not what it claims, or names a backing file.
        assert!(check_complete(&src, DiskFormat::Qcow2)
            .unwrap_err()
            .contains("not qcow2"));
        check_complete(&src, DiskFormat::Raw).unwrap();
        let mut backed = b"QFI\xfb\0\0\0\x03\0\0\0\0\0\0\x01\0".to_vec();
        backed.resize(512, 0);
        let b = dir.path().join("backed.qcow2");
        std::fs::write(&b, backed).unwrap();
        assert!(check_complete(&b, DiskFormat::Qcow2)
            .unwrap_err()
            .contains("backing file"));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(check_complete(&empty, DiskFormat::Raw).is_err());
        // A failed qcow2 import leaves nothing behind.
        assert_eq!(
            std::fs::read_dir(&store).map(|d| d.count()).unwrap_or(0),
            0,
            "{:?}",
            img.kind
        );
    }
}
