//! Kernel images' files. A kernel (and its initramfs) is registered by a
//! host path under the import rules ([`crate::image_files::import_path`]), checked, and
//! copied into the image store as `ID.kernel` (and `ID.initramfs`); kiln-vmm
//! is given the copies, never the registered path. So what a guest boots is
//! what was checked, and no later change at that path (a symlink put there,
//! a file swapped, even between a guest's reboots, which re-read the files)
//! can make a kiln-vmm read another host file. The image keeps the path it
//! was registered from, for people to read.
//!
//! Kernel images registered before the copies existed are copied at
//! kilnd's start under the same rules ([`adopt`]); one that fails them
//! goes to `error`.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use kiln_api::compute::{Image, ImageKind};

use crate::image_files::import_path::{check_initramfs, check_kernel, ImportDirs};

/// The store copies of image `id`'s kernel and initramfs.
pub fn store_paths(store_dir: &Path, id: &str) -> (PathBuf, PathBuf) {
    (
        store_dir.join(format!("{id}.kernel")),
        store_dir.join(format!("{id}.initramfs")),
    )
}

/// Copies `src` (an open file) to `dst` through `dst.partial`, then checks
/// the copy with `check` (the source may have changed while it was read):
/// the checked copy appears whole or not at all.
fn copy_checked(
    src: &File,
    dst: &Path,
    check: impl Fn(&File) -> Result<(), String>,
) -> Result<(), String> {
    let partial = PathBuf::from(format!("{}{}", dst.display(), super::PARTIAL));
    let r = (|| {
        let mut out =
            File::create_new(&partial).map_err(|e| format!("cannot copy into the store: {e}"))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        loop {
            let n = src
                .read_at(&mut buf, off)
                .map_err(|e| format!("cannot read: {e}"))?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])
                .map_err(|e| format!("cannot copy into the store: {e}"))?;
            off += n as u64;
        }
        out.sync_all()
            .map_err(|e| format!("cannot copy into the store: {e}"))?;
        check(&File::open(&partial).map_err(|e| e.to_string())?)?;
        std::fs::rename(&partial, dst).map_err(|e| format!("cannot copy into the store: {e}"))
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    r
}

/// Opens `kernel` (and `initramfs`) under the import rules and copies them,
/// checked, into the store as image `id`'s. The error is a message for a
/// 400; nothing is left in the store on error.
pub fn copy_in(
    dirs: &ImportDirs,
    store_dir: &Path,
    id: &str,
    kernel: &str,
    initramfs: Option<&str>,
) -> Result<(), String> {
    let k = dirs.open("kernel", kernel)?;
    check_kernel(&k).map_err(|e| format!("kernel {kernel:?}: {e}"))?;
    let i = match initramfs {
        None => None,
        Some(p) => {
            let f = dirs.open("initramfs", p)?;
            check_initramfs(&f).map_err(|e| format!("initramfs {p:?}: {e}"))?;
            Some((f, p))
        }
    };
    std::fs::create_dir_all(store_dir).map_err(|e| format!("cannot make the store: {e}"))?;
    let (kdst, idst) = store_paths(store_dir, id);
    copy_checked(&k, &kdst, check_kernel).map_err(|e| format!("kernel {kernel:?}: {e}"))?;
    if let Some((f, p)) = i {
        if let Err(e) = copy_checked(&f, &idst, check_initramfs) {
            let _ = std::fs::remove_file(&kdst);
            return Err(format!("initramfs {p:?}: {e}"));
        }
    }
    Ok(())
}

/// The store copies kiln-vmm is given for a kernel image, checked: regular
/// files (not symlinks) in the store that still pass the kernel checks.
pub fn stored(img: &Image, store_dir: &Path) -> Result<(String, Option<String>), String> {
    let ImageKind::Kernel { initramfs, .. } = &img.kind else {
        return Err(format!("image {:?} is not a kernel image", img.name));
    };
    let (k, i) = store_paths(store_dir, &img.id);
    let open = |p: &Path| -> Result<File, String> {
        let md = std::fs::symlink_metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if !md.is_file() {
            return Err(format!("{} is not a regular file", p.display()));
        }
        File::open(p).map_err(|e| format!("{}: {e}", p.display()))
    };
    let why = |e: String| format!("kernel image {:?}: its store copy {e}", img.name);
    check_kernel(&open(&k).map_err(why)?).map_err(why)?;
    let initramfs = match initramfs {
        None => None,
        Some(_) => {
            check_initramfs(&open(&i).map_err(why)?).map_err(why)?;
            Some(i.display().to_string())
        }
    };
    Ok((k.display().to_string(), initramfs))
}

/// At start: a kernel image without its store copies (registered by an
/// older kilnd) gets them now, under the import rules; the error says why
/// it cannot, and the image then goes to `error`.
pub fn adopt(img: &Image, dirs: &ImportDirs, store_dir: &Path) -> Result<(), String> {
    let ImageKind::Kernel {
        kernel, initramfs, ..
    } = &img.kind
    else {
        return Ok(());
    };
    if store_paths(store_dir, &img.id).0.exists() {
        return stored(img, store_dir).map(drop);
    }
    copy_in(dirs, store_dir, &img.id, kernel, initramfs.as_deref())
        .map_err(|e| format!("kernel image {:?} is refused: {e}", img.name))
}

/// Removes image `id`'s copies (gone already is fine).
pub fn remove(store_dir: &Path, id: &str) {
    let (k, i) = store_paths(store_dir, id);
    let _ = std::fs::remove_file(k);
    let _ = std::fs::remove_file(i);
}
