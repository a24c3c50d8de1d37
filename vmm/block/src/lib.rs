//! kiln-block: the disk engine behind kiln-vmm's virtio-blk and kilnd's
//! ephemeral disks. It opens raw and qcow2 (v2/v3) images by an EXPLICIT
//! format (never probed from the file's bytes), creates qcow2 images and
//! overlays without reading their base, and grows images.
//!
//! Code map:
//! - `lib.rs`: the public interface ([`Disk`], [`open_disk`], [`create_qcow2`], [`resize`]).
//! - `io.rs`: the host file (O_DIRECT bounce buffers, fallocate);
//!   `uring.rs`, `aio.rs`: O_DIRECT writes through io_uring or Linux AIO so
//!   threads' writes overlap ([`set_write_engine`] picks); once a file's
//!   writes have stopped overlapping, they are plain `pwrite`s.
//! - `raw.rs`: raw images.
//! - `qcow2/`: header parsing and validation, L1/L2 mapping with a bounded
//!   L2 cache, refcounts and cluster allocation, compressed clusters,
//!   creation and resize. See `qcow2/mod.rs` for the write ordering that
//!   keeps the image consistent across a crash.
//!
//! Concurrency: every [`Disk`] method takes `&self` and disks are `Sync`, so
//! one disk can serve many requests at once from several threads (this is
//! how queue depth is obtained; see `benches/src/bin/qcow2_bench.rs`).
//! qcow2 metadata is guarded by one mutex held only for mapping and
//! allocation; guest data I/O runs outside it.

mod aio;
pub mod error;
mod io;
pub mod qcow2;
mod raw;
mod uring;

use std::path::{Path, PathBuf};

pub use error::{Error, Result};
pub use io::{set_write_engine, AlignedBuf, WriteEngine};
/// The format of an image file, always given by the caller, never probed:
/// Kiln's one format type, from `kiln-api`.
pub use kiln_api::vm::DiskFormat;
pub use raw::RawDisk;

/// How to open a disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Refuse writes; the file is opened `O_RDONLY`.
    pub read_only: bool,
    /// Bypass the host page cache (`O_DIRECT`, like QEMU's `cache=none`).
    pub direct: bool,
}

/// How to create a qcow2 image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOptions {
    /// log2 of the cluster size, 9..=21 (QEMU's default is 16: 64 KiB).
    pub cluster_bits: u32,
    /// Backing file and its format, recorded in the header as given
    /// (a relative path is resolved against the new image's directory).
    pub backing: Option<(PathBuf, DiskFormat)>,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            cluster_bits: 16,
            backing: None,
        }
    }
}

/// A virtual disk. All methods take `&self` so that one disk can serve
/// concurrent requests from several threads.
pub trait Disk: Send + Sync {
    /// Virtual size in bytes.
    fn size(&self) -> u64;
    /// Reads `buf.len()` bytes at `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Writes `buf` at `offset`. Durable only after [`Disk::flush`].
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()>;
    /// Makes every completed write durable.
    fn flush(&self) -> Result<()>;
    /// Writes back everything the disk still holds in memory and makes it
    /// durable: what [`Disk::flush`] does, plus metadata a flush may leave
    /// cached (qcow2: the refcount decrements the flush released). What an
    /// orderly close does; the disk stays usable afterwards.
    fn write_back(&self) -> Result<()> {
        self.flush()
    }
    /// Tells the disk that a range is no longer needed. Afterwards the range
    /// reads as zeros or as its old contents (partial clusters are kept).
    fn discard(&self, offset: u64, len: u64) -> Result<()>;
    /// Makes a range read as zeros.
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()>;
    /// Whether writes are refused.
    fn read_only(&self) -> bool;
}

/// Longest backing chain accepted (the image itself plus its backing files).
pub const MAX_CHAIN_DEPTH: usize = 16;

/// A backing file of a chain, as the caller names it: the engine opens a
/// backing file only when it is named this way, never because an image's
/// header names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingFile {
    /// The file, as the image's header names it once resolved (a relative
    /// name against the image's directory, as QEMU resolves it).
    pub path: PathBuf,
    /// Its format, which must be the one the header records.
    pub format: DiskFormat,
}

/// Opens the image at `path` in the given format, which must be
/// self-contained: a qcow2 image whose header names a backing file is
/// refused (open it with [`open_disk_chain`], naming the chain).
pub fn open_disk(path: &Path, format: DiskFormat, opts: OpenOptions) -> Result<Box<dyn Disk>> {
    open_disk_chain(path, format, opts, &[])
}

/// Opens the image at `path` over exactly the backing chain `chain` (the
/// image's own backing file first, then that file's, and so on), each
/// backing file read-only. Every qcow2 header on the way must name the next
/// file of `chain`, by path and by format; a header that names a backing
/// file the caller did not give, names another one, or names none where
/// `chain` has one is refused, so that no file is ever opened because an
/// image (possibly written by a guest or a user) says so.
pub fn open_disk_chain(
    path: &Path,
    format: DiskFormat,
    opts: OpenOptions,
    chain: &[BackingFile],
) -> Result<Box<dyn Disk>> {
    open_chain(path, format, opts, Some(chain), &mut Vec::new())
}

/// Opens one element of a chain; `seen` holds the identities (device, inode)
/// of the files above it, to refuse loops and over-long chains. `chain`
/// `None` opens a qcow2 image without its backing file (metadata work only).
pub(crate) fn open_chain(
    path: &Path,
    format: DiskFormat,
    opts: OpenOptions,
    chain: Option<&[BackingFile]>,
    seen: &mut Vec<(u64, u64)>,
) -> Result<Box<dyn Disk>> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(path).map_err(|source| Error::Open {
        path: path.to_owned(),
        source,
    })?;
    let id = (md.dev(), md.ino());
    if seen.contains(&id) {
        return Err(Error::Malformed(format!(
            "backing chain loops back to {}",
            path.display()
        )));
    }
    if seen.len() >= MAX_CHAIN_DEPTH {
        return Err(Error::Unsupported(format!(
            "backing chain longer than {MAX_CHAIN_DEPTH} images"
        )));
    }
    seen.push(id);
    match format {
        DiskFormat::Raw => {
            if let Some([first, ..]) = chain {
                return Err(Error::Chain(format!(
                    "{} is raw and has no backing file, but the caller names {}",
                    path.display(),
                    first.path.display()
                )));
            }
            Ok(Box::new(RawDisk::open(path, opts)?))
        }
        DiskFormat::Qcow2 => Ok(Box::new(qcow2::Qcow2Disk::open_in_chain(
            path, opts, chain, seen,
        )?)),
    }
}

/// The backing file the header of the image at `path` names, if any (its
/// name resolved as QEMU resolves it, and its recorded format), read from
/// the header alone: nothing it names is opened. A raw image has none. A
/// qcow2 image that refers to anything outside itself in another way (an
/// external data file) is refused here, as when it is opened.
pub fn backing_of(path: &Path, format: DiskFormat) -> Result<Option<(String, BackingFile)>> {
    if format == DiskFormat::Raw {
        return Ok(None);
    }
    let file = io::HostFile::open(path, true, false)?;
    let h = qcow2::read_header(&file)?;
    let Some(name) = h.backing_file else {
        return Ok(None);
    };
    let fmt = qcow2::recorded_backing_format(h.backing_format.as_deref(), &name)?;
    let path = qcow2::resolve_backing(path, &name)?;
    Ok(Some((name, BackingFile { path, format: fmt })))
}

/// The whole backing chain of the image at `path` as its headers name it,
/// for callers that trust every file of it (tools, tests of chains made
/// with qemu-img); each name is opened to read the next header. A caller
/// that does not trust the images walks [`backing_of`] and checks each file
/// before going on (kilnd does). Refuses loops and over-long chains.
pub fn header_chain(path: &Path, format: DiskFormat) -> Result<Vec<BackingFile>> {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| (m.dev(), m.ino()))
            .map_err(|source| Error::Open {
                path: p.to_owned(),
                source,
            })
    };
    let mut seen = vec![id(path)?];
    let mut chain: Vec<BackingFile> = Vec::new();
    let (mut cur, mut fmt) = (path.to_owned(), format);
    while let Some((_, b)) = backing_of(&cur, fmt)? {
        if seen.contains(&id(&b.path)?) {
            return Err(Error::Malformed(format!(
                "backing chain loops back to {}",
                b.path.display()
            )));
        }
        if seen.len() >= MAX_CHAIN_DEPTH {
            return Err(Error::Unsupported(format!(
                "backing chain longer than {MAX_CHAIN_DEPTH} images"
            )));
        }
        seen.push(id(&b.path)?);
        (cur, fmt) = (b.path.clone(), b.format);
        chain.push(b);
    }
    Ok(chain)
}

/// The virtual size of the image at `path`, from its header alone (a
/// qcow2 image's backing file is not opened).
pub fn virtual_size(path: &Path, format: DiskFormat) -> Result<u64> {
    let opts = OpenOptions {
        read_only: true,
        direct: false,
    };
    Ok(open_chain(path, format, opts, None, &mut Vec::new())?.size())
}

/// Creates a qcow2 image of `size` bytes (with a backing file and `size` 0,
/// the backing file's size). Takes the same time whatever the base's size:
/// only the base's header is read, and only when `size` is 0.
pub fn create_qcow2(path: &Path, size: u64, opts: CreateOptions) -> Result<()> {
    qcow2::create::create(path, size, &opts)
}

/// Grows the image at `path` to `new_size` bytes. Shrinking is refused.
pub fn resize(path: &Path, format: DiskFormat, new_size: u64) -> Result<()> {
    match format {
        DiskFormat::Raw => raw::resize(path, new_size),
        DiskFormat::Qcow2 => qcow2::create::resize(path, new_size),
    }
}

/// Checks that `[offset, offset+len)` lies inside a disk of `size` bytes.
pub(crate) fn check_range(offset: u64, len: u64, size: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::OutOfRange { offset, len, size }),
    }
}
