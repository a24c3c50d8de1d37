//! Where kilnd reads host files that a client names: disk images imported
//! by path, kernels and initramfs files. kilnd runs as root and any member
//! of the API socket's group may name a path, so a path is opened only if
//! it lies under a directory the admin allows (`images.import_dirs`, plus
//! `state_dir/import`), and only as a regular file:
//!
//! 1. The allowed directory itself is opened as the admin wrote it (the
//!    admin's own symlinks in it are trusted).
//! 2. The rest of the path is opened relative to it with `openat2` and
//!    `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`: the
//!    kernel refuses any `..` that leaves the directory and any symlink on
//!    the way, atomically with the open, so nothing swapped in between a
//!    check and the open can lead elsewhere (no canonicalize-then-open
//!    race).
//! 3. It is opened `O_NONBLOCK` (a FIFO does not block the open) and
//!    `O_NOCTTY`, and refused unless `fstat` says it is a regular file:
//!    devices, FIFOs, sockets and directories are refused.
//!
//! Callers then read the open file, never the path again (a disk import
//! copies from it; kernels are checked from it, see [`check_kernel`]).

use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

/// Largest kernel accepted (a distribution vmlinux is 30-60 MiB).
pub const MAX_KERNEL_BYTES: u64 = 256 << 20;
/// Largest initramfs accepted.
pub const MAX_INITRAMFS_BYTES: u64 = 1 << 30;
/// Guest-physical addresses a kernel's segments may use: below the 32-bit
/// PCI hole, where kiln-vmm's guests always have RAM layout room.
const KERNEL_LOAD_LIMIT: u64 = 3 << 30;

/// The directories path imports may come from.
#[derive(Clone, Debug)]
pub struct ImportDirs {
    dirs: Vec<PathBuf>,
}

impl ImportDirs {
    /// `configured` (`images.import_dirs`) and `state_dir/import`.
    pub fn new(state_dir: &Path, configured: &[PathBuf]) -> ImportDirs {
        let mut dirs = vec![state_dir.join("import")];
        dirs.extend(configured.iter().cloned());
        ImportDirs { dirs }
    }

    /// The allowed directories, as configured.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    fn rule(&self) -> String {
        let list: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
        format!(
            "host files are read only from the directories kilnd allows (images.import_dirs and state_dir/import: {})",
            list.join(", ")
        )
    }

    /// Opens `p`, a `what` (for messages), under the rules above. The
    /// error is a message for a 400.
    pub fn open(&self, what: &str, p: &str) -> Result<File, String> {
        let path = Path::new(p);
        if !path.is_absolute() || p.contains('\0') {
            return Err(format!("{what} path {p:?} must be absolute"));
        }
        if path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(format!("{what} path {p:?} must not contain '..'"));
        }
        // The longest allowed directory the path lies in.
        let Some((dir, rest)) = self
            .dirs
            .iter()
            .filter_map(|d| path.strip_prefix(d).ok().map(|r| (d, r)))
            .filter(|(_, r)| !r.as_os_str().is_empty())
            .max_by_key(|(d, _)| d.as_os_str().len())
        else {
            return Err(format!("{what} path {p:?} is refused: {}", self.rule()));
        };
        let dirfd = File::open(dir).map_err(|e| {
            format!(
                "{what} path {p:?}: cannot open the allowed directory {}: {e}",
                dir.display()
            )
        })?;
        let fd = openat2_beneath(&dirfd, rest).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => format!(
                "{what} path {p:?} goes through a symlink: refused (paths under {} are resolved without following symlinks)",
                dir.display()
            ),
            Some(libc::EXDEV) => format!(
                "{what} path {p:?} leads out of {}: refused",
                dir.display()
            ),
            Some(libc::ENOENT) => format!("{what} path {p:?} does not exist"),
            _ => format!("{what} path {p:?}: {e}"),
        })?;
        let file = File::from(fd);
        let md = file
            .metadata()
            .map_err(|e| format!("{what} path {p:?}: {e}"))?;
        if !md.is_file() {
            return Err(format!(
                "{what} path {p:?} is not a regular file (devices, FIFOs, sockets and directories are refused)"
            ));
        }
        Ok(file)
    }
}

/// `openat2(dirfd, rest, O_RDONLY|O_NONBLOCK|O_NOCTTY|O_CLOEXEC)` that
/// never leaves `dirfd` and follows no symlink.
fn openat2_beneath(dirfd: &File, rest: &Path) -> std::io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let mut name = rest.as_os_str().as_bytes().to_vec();
    name.push(0);
    // SAFETY: `open_how` is a plain C struct; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `name` is NUL-terminated and outlives the call; `how` is a
    // valid open_how whose size is passed; the kernel returns a new fd or
    // -1 and touches no other memory.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd.as_raw_fd(),
            name.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the syscall succeeded, so `fd` is a new descriptor that
    // nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Checks a kernel file as kiln-vmm will load it: not empty, at most
/// [`MAX_KERNEL_BYTES`], and either an x86-64 ELF whose loadable segments
/// lie in the file and load below 3 GiB, or a bzImage (boot protocol 2.06
/// or later, 64-bit entry) whose setup and payload lie in the file.
pub fn check_kernel(f: &File) -> Result<(), String> {
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    if len == 0 {
        return Err("the kernel file is empty".into());
    }
    if len > MAX_KERNEL_BYTES {
        return Err(format!(
            "the kernel file is {len} bytes, more than the {MAX_KERNEL_BYTES} accepted"
        ));
    }
    let mut head = vec![0u8; len.min(4096) as usize];
    f.read_exact_at(&mut head, 0)
        .map_err(|e| format!("cannot read the kernel: {e}"))?;
    if head.starts_with(b"\x7fELF") {
        return check_elf(f, &head, len);
    }
    if head.len() >= 0x240 && &head[0x202..0x206] == b"HdrS" {
        return check_bzimage(&head, len);
    }
    Err("the kernel is neither an ELF file nor a bzImage".into())
}

fn u16_at(b: &[u8], o: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[o], b[o + 1]]))
}
fn u32_at(b: &[u8], o: usize) -> u64 {
    u64::from(u32::from_le_bytes(b[o..o + 4].try_into().unwrap()))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

fn check_elf(f: &File, h: &[u8], len: u64) -> Result<(), String> {
    if h.len() < 64 || h[4] != 2 || h[5] != 1 {
        return Err("the kernel is not a 64-bit little-endian ELF file".into());
    }
    if u16_at(h, 18) != 62 {
        return Err("the kernel ELF file is not for x86-64".into());
    }
    let (phoff, phentsize, phnum) = (u64_at(h, 32), u16_at(h, 54), u16_at(h, 56));
    if phnum == 0 || phentsize < 56 {
        return Err("the kernel ELF file has no program headers".into());
    }
    let table = phentsize * phnum;
    if phoff.checked_add(table).is_none_or(|end| end > len) {
        return Err("the kernel ELF file's program headers lie outside it".into());
    }
    let mut ph = vec![0u8; table as usize];
    f.read_exact_at(&mut ph, phoff)
        .map_err(|e| format!("cannot read the kernel: {e}"))?;
    let mut loads = 0;
    for i in 0..phnum as usize {
        let e = &ph[i * phentsize as usize..];
        if u32_at(e, 0) != 1 {
            continue; // not PT_LOAD
        }
        loads += 1;
        let (off, paddr, filesz, memsz) =
            (u64_at(e, 8), u64_at(e, 24), u64_at(e, 32), u64_at(e, 40));
        if filesz > memsz || off.checked_add(filesz).is_none_or(|end| end > len) {
            return Err(format!(
                "the kernel ELF file's segment {i} lies outside the file"
            ));
        }
        if paddr
            .checked_add(memsz)
            .is_none_or(|end| end > KERNEL_LOAD_LIMIT)
        {
            return Err(format!(
                "the kernel ELF file's segment {i} loads at {paddr:#x}..+{memsz:#x}, beyond the {KERNEL_LOAD_LIMIT:#x} a guest has"
            ));
        }
    }
    if loads == 0 {
        return Err("the kernel ELF file has no loadable segment".into());
    }
    Ok(())
}

fn check_bzimage(h: &[u8], len: u64) -> Result<(), String> {
    let version = u16_at(h, 0x206);
    if version < 0x0206 {
        return Err(format!(
            "the bzImage's boot protocol {}.{:02} is older than 2.06",
            version >> 8,
            version & 0xff
        ));
    }
    let setup_sects = match h[0x1f1] {
        0 => 4,
        n => u64::from(n),
    };
    let setup = (setup_sects + 1) * 512;
    if setup >= len {
        return Err("the bzImage has no payload after its setup code".into());
    }
    if h[0x211] & 1 == 0 {
        return Err("the bzImage is not a protected-mode (bzImage) kernel".into());
    }
    if u16_at(h, 0x236) & 1 == 0 {
        return Err("the bzImage has no 64-bit entry point (XLF_KERNEL_64)".into());
    }
    Ok(())
}

/// Checks an initramfs file: not empty, at most [`MAX_INITRAMFS_BYTES`].
pub fn check_initramfs(f: &File) -> Result<(), String> {
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    if len == 0 {
        return Err("the initramfs file is empty".into());
    }
    if len > MAX_INITRAMFS_BYTES {
        return Err(format!(
            "the initramfs is {len} bytes, more than the {MAX_INITRAMFS_BYTES} accepted"
        ));
    }
    let mut b = [0u8; 1];
    (&*f).read_exact(&mut b).map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(d: &Path) -> ImportDirs {
        ImportDirs::new(&d.join("state"), &[d.join("ok")])
    }

    #[test]
    fn opens_only_regular_files_beneath_allowed_dirs() {
        let t = tempfile::tempdir().unwrap();
        let ok = t.path().join("ok");
        std::fs::create_dir_all(ok.join("sub")).unwrap();
        std::fs::write(ok.join("sub/disk.raw"), b"abc").unwrap();
        std::fs::write(t.path().join("outside"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", ok.join("link")).unwrap();
        std::os::unix::fs::symlink("sub", ok.join("dirlink")).unwrap();
        let d = dirs(t.path());
        let s = |p: &Path| p.display().to_string();
        assert!(d.open("disk", &s(&ok.join("sub/disk.raw"))).is_ok());
        let refused = |p: String, needle: &str| {
            let e = d.open("disk", &p).unwrap_err();
            assert!(e.contains(needle), "{p}: {e}");
        };
        refused(s(&t.path().join("outside")), "images.import_dirs");
        refused("/etc/passwd".into(), "images.import_dirs");
        refused(s(&ok.join("link")), "symlink");
        refused(s(&ok.join("dirlink/disk.raw")), "symlink");
        refused(s(&ok.join("sub")), "not a regular file");
        refused(s(&ok), "images.import_dirs");
        refused(s(&ok.join("nope")), "does not exist");
        refused(format!("{}/../outside", ok.display()), "'..'");
        refused("relative".into(), "absolute");
    }

    #[test]
    fn kernels_are_checked() {
        let t = tempfile::tempdir().unwrap();
        let check = |bytes: &[u8]| {
            let p = t.path().join("k");
            std::fs::write(&p, bytes).unwrap();
            check_kernel(&File::open(&p).unwrap())
        };
        assert!(check(b"").unwrap_err().contains("empty"));
        assert!(check(b"hello").unwrap_err().contains("neither"));
        assert!(check(b"\x7fELF not really").is_err());
        // A minimal x86-64 ELF with one PT_LOAD of 16 bytes at 1 MiB; its
        // program header at 64.
        let elf = kiln_tests::tiny_elf();
        let ph = 64;
        check(&elf).unwrap();
        let mut far = elf.clone();
        far[ph + 24..ph + 32].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(check(&far).unwrap_err().contains("beyond"));
        let mut past = elf.clone();
        past[ph + 32..ph + 40].copy_from_slice(&4096u64.to_le_bytes());
        past[ph + 40..ph + 48].copy_from_slice(&4096u64.to_le_bytes());
        assert!(check(&past).unwrap_err().contains("outside the file"));
    }
}
