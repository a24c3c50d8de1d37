//! Ephemeral root disks: a qcow2 overlay on a disk image from the image
//! store, `servers/ID/root.qcow2`, made with the kiln-block engine in O(1)
//! (only the header and tables are written; the image is never copied).
//! It lives as long as the server: stop, start and reboot keep it, delete
//! removes it with the server's directory.

use std::path::{Path, PathBuf};

use kiln_api::compute::{DiskFormat, Image, ImageKind};
use kiln_block::{CreateOptions, ImageFormat, OpenOptions};

/// The name of the root disk in a server's directory.
pub const ROOT_DISK: &str = "root.qcow2";

const GIB: u64 = 1 << 30;

fn block_format(f: DiskFormat) -> ImageFormat {
    match f {
        DiskFormat::Raw => ImageFormat::Raw,
        DiskFormat::Qcow2 => ImageFormat::Qcow2,
    }
}

/// The virtual size of a disk image, read in its recorded format.
pub fn virtual_size(image: &Image) -> Result<u64, String> {
    let ImageKind::Disk { path, format, .. } = &image.kind else {
        return Err(format!("image {:?} is not a disk image", image.name));
    };
    let opts = OpenOptions {
        read_only: true,
        direct: false,
    };
    kiln_block::open_disk(Path::new(path), block_format(*format), opts)
        .map(|d| d.size())
        .map_err(|e| format!("cannot open disk image {:?}: {e}", image.name))
}

/// The root disk's size for a flavor's `disk_gb` (0: the image's size);
/// refuses an image larger than the flavor's disk.
pub fn root_size(image: &Image, disk_gb: u64) -> Result<u64, String> {
    let image_size = virtual_size(image)?;
    if disk_gb == 0 {
        return Ok(image_size);
    }
    let size = disk_gb.saturating_mul(GIB);
    if image_size > size {
        return Err(format!(
            "disk image {:?} is {image_size} bytes, larger than the flavor's disk of {disk_gb} GiB",
            image.name
        ));
    }
    Ok(size)
}

/// Makes the root disk in `dir` unless it is there already; answers its
/// path.
pub fn ensure_root_disk(dir: &Path, image: &Image, disk_gb: u64) -> Result<PathBuf, String> {
    let path = dir.join(ROOT_DISK);
    if path.exists() {
        return Ok(path);
    }
    let ImageKind::Disk {
        path: base, format, ..
    } = &image.kind
    else {
        return Err(format!("image {:?} is not a disk image", image.name));
    };
    let size = root_size(image, disk_gb)?;
    let partial = dir.join(format!("{ROOT_DISK}.partial"));
    let _ = std::fs::remove_file(&partial);
    let opts = CreateOptions {
        backing: Some((PathBuf::from(base), block_format(*format))),
        ..CreateOptions::default()
    };
    kiln_block::create_qcow2(&partial, size, opts)
        .map_err(|e| format!("cannot make the root disk: {e}"))?;
    // Appears whole or not at all (a crash leaves only the .partial).
    std::fs::rename(&partial, &path).map_err(|e| format!("cannot make the root disk: {e}"))?;
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
                format,
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
        }
    }

    #[test]
    fn overlay_has_the_flavor_size_and_the_image_as_backing() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        std::fs::write(&base, vec![0xabu8; 1 << 20]).unwrap();
        let img = disk_image(&base, DiskFormat::Raw);
        let root = ensure_root_disk(dir.path(), &img, 2).unwrap();
        let d = kiln_block::open_disk(&root, ImageFormat::Qcow2, OpenOptions::default()).unwrap();
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
        let d = kiln_block::open_disk(&root, ImageFormat::Qcow2, OpenOptions::default()).unwrap();
        d.read_at(4096, &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 4]);
        // Disk 0: the image's own size.
        assert_eq!(root_size(&img, 0).unwrap(), 1 << 20);
    }

    #[test]
    fn image_larger_than_the_flavor_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("big.raw");
        let f = std::fs::File::create(&base).unwrap();
        f.set_len(3 << 30).unwrap();
        let img = disk_image(&base, DiskFormat::Raw);
        let e = root_size(&img, 2).unwrap_err();
        assert!(e.contains("larger than the flavor's disk of 2 GiB"), "{e}");
        // A raw file claimed to be qcow2 does not open.
        let e = virtual_size(&disk_image(&base, DiskFormat::Qcow2)).unwrap_err();
        assert!(e.contains("cannot open"), "{e}");
    }
}
