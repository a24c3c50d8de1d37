//! The host file under an image: positioned reads and writes that work the
//! same with and without `O_DIRECT` (unaligned requests go through an aligned
//! bounce buffer), reads past end of file that return zeros, and the
//! `fallocate` helpers used by discard and write-zeroes.

use std::alloc::{self, Layout};
use std::fs::{File, OpenOptions as FsOpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering};

use crate::error::{Error, Result};

/// A heap buffer aligned for `O_DIRECT`, zero-initialised.
pub struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
    layout: Layout,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only give out &[u8], like a Vec<u8>.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes aligned to 4096 bytes.
    pub fn new(len: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(len.max(1), 4096).expect("buffer layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, len, layout }
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised bytes for the life of self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for len bytes and uniquely borrowed through &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: ptr was allocated with exactly this layout.
        unsafe { alloc::dealloc(self.ptr, self.layout) }
    }
}

/// How O_DIRECT writes reach the kernel (see `aio.rs`, `uring.rs`). Each
/// engine falls back to the next when unavailable (e.g. refused by seccomp
/// with an error; a filter that KILLs on unknown system calls must allow
/// `io_setup`/`io_submit`/`io_getevents`/`io_destroy`, or
/// `io_uring_setup`/`io_uring_enter`, or select [`WriteEngine::Sync`]).
///
/// Linux AIO is the default: a direct write into a hole (every newly
/// allocated cluster) makes io_uring hand the request to a kernel worker
/// thread, one more thread hop per write, while AIO submits it inline.
///
/// The engine only matters while writes overlap: once a file's writes have
/// found no other write of it in flight several times in a row, they go
/// out as a plain `pwrite` (one system call instead of AIO's two or
/// io_uring's ring round trip; measured 1.5-3x faster at depth 1 here),
/// until a write overlaps another again. A virtio-blk worker serves one
/// request at a time, so its O_DIRECT writes take that path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteEngine {
    /// Linux AIO, then `pwrite` (the default).
    LinuxAio,
    /// io_uring, then Linux AIO, then `pwrite`.
    IoUring,
    /// `pwrite` only (writes from several threads into holes serialise on
    /// ext4's inode lock).
    Sync,
}

static ENGINE: AtomicU8 = AtomicU8::new(0);

/// Selects the write engine for the whole process (call before opening disks).
pub fn set_write_engine(e: WriteEngine) {
    let v = match e {
        WriteEngine::LinuxAio => 0,
        WriteEngine::IoUring => 1,
        WriteEngine::Sync => 2,
    };
    ENGINE.store(v, Ordering::Relaxed);
}

fn write_engine() -> WriteEngine {
    match ENGINE.load(Ordering::Relaxed) {
        0 => WriteEngine::LinuxAio,
        1 => WriteEngine::IoUring,
        _ => WriteEngine::Sync,
    }
}

/// An open image file.
pub struct HostFile {
    file: File,
    direct: bool,
    /// Alignment of offset, length and memory for O_DIRECT (1 when buffered).
    align: u64,
    /// Use AIO for O_DIRECT reads too (KILN_BLOCK_AIO_READS=1). Off by
    /// default: measured slower than `pread` here (reads share the inode lock).
    aio_reads: bool,
    /// O_DIRECT writes of this file in flight (from any thread).
    writes_in_flight: AtomicUsize,
    /// O_DIRECT writes in a row that found no other in flight (capped at
    /// [`LONE_WRITES_FOR_PWRITE`]); reset by any overlapping write.
    lone_writes: AtomicU32,
}

/// Lone O_DIRECT writes in a row after which writes go out as `pwrite`.
/// Not 1: at depth N, writers fall into step (all wait for one write
/// holding the inode lock, all complete together), so the first of each
/// round finds no other in flight although N are about to follow; were it a
/// synchronous `pwrite` into a hole, it would hold the inode lock for its
/// whole I/O and serialise the round (measured: 64 KiB writes at depth 32
/// fell to 0.3 of QEMU's). A single-threaded writer (kiln-vmm's virtio-blk
/// worker) reaches the count after its first few writes and stays there.
const LONE_WRITES_FOR_PWRITE: u32 = 16;

/// Counts one write in flight for as long as it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl HostFile {
    /// Opens an existing file.
    pub fn open(path: &Path, read_only: bool, direct: bool) -> Result<HostFile> {
        let mut o = FsOpenOptions::new();
        o.read(true).write(!read_only);
        if direct {
            o.custom_flags(libc::O_DIRECT);
        }
        let file = o.open(path).map_err(|source| Error::Open {
            path: path.to_owned(),
            source,
        })?;
        let mut hf = HostFile {
            file,
            direct,
            align: 1,
            aio_reads: std::env::var_os("KILN_BLOCK_AIO_READS").is_some_and(|v| v == "1"),
            writes_in_flight: AtomicUsize::new(0),
            lone_writes: AtomicU32::new(0),
        };
        if direct {
            hf.align = hf.probe_direct_alignment();
        }
        Ok(hf)
    }

    /// Finds the smallest alignment O_DIRECT accepts on this file (512 or 4096).
    fn probe_direct_alignment(&self) -> u64 {
        let mut buf = AlignedBuf::new(4096);
        match self.file.read_at(&mut buf[..512], 0) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => 4096,
            _ => 512,
        }
    }

    fn aligned(&self, off: u64, len: usize, ptr: *const u8) -> bool {
        let a = self.align;
        off.is_multiple_of(a) && (len as u64).is_multiple_of(a) && (ptr as u64).is_multiple_of(a)
    }

    /// Reads exactly `buf.len()` bytes at `off`; bytes past end of file read as zeros.
    pub fn read_at(&self, off: u64, buf: &mut [u8], op: &'static str) -> Result<()> {
        if !self.direct || self.aligned(off, buf.len(), buf.as_ptr()) {
            return self.read_raw(off, buf).map_err(Error::io(op));
        }
        let a = self.align;
        let start = off / a * a;
        let end = (off + buf.len() as u64).div_ceil(a) * a;
        let mut bounce = AlignedBuf::new((end - start) as usize);
        self.read_raw(start, &mut bounce).map_err(Error::io(op))?;
        let skip = (off - start) as usize;
        buf.copy_from_slice(&bounce[skip..skip + buf.len()]);
        Ok(())
    }

    fn read_raw(&self, mut off: u64, mut buf: &mut [u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let r = if self.direct && self.aio_reads {
                crate::aio::pread(self.file.as_raw_fd(), buf, off)
                    .unwrap_or_else(|| self.file.read_at(buf, off))
            } else {
                self.file.read_at(buf, off)
            };
            match r {
                Ok(0) => {
                    buf.fill(0);
                    return Ok(());
                }
                Ok(n) => {
                    buf = &mut buf[n..];
                    off += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes an aligned buffer: with O_DIRECT through the selected engine
    /// (see [`WriteEngine`]) unless this file's writes have been alone for
    /// a while ([`LONE_WRITES_FOR_PWRITE`]); buffered, or alone, with `pwrite`.
    fn write_raw(&self, off: u64, buf: &[u8]) -> io::Result<()> {
        if self.direct {
            let others = self.writes_in_flight.fetch_add(1, Ordering::AcqRel);
            let _counted = InFlight(&self.writes_in_flight);
            if others > 0 {
                if self.lone_writes.load(Ordering::Relaxed) != 0 {
                    self.lone_writes.store(0, Ordering::Relaxed);
                }
                return self.write_through(write_engine(), off, buf);
            }
            if self.lone_writes.load(Ordering::Relaxed) < LONE_WRITES_FOR_PWRITE {
                self.lone_writes.fetch_add(1, Ordering::Relaxed);
                return self.write_through(write_engine(), off, buf);
            }
        }
        self.file.write_all_at(buf, off)
    }

    /// Writes an aligned buffer through `engine` or the next one that is
    /// available (`uring.rs`, `aio.rs`, then `pwrite`).
    fn write_through(&self, engine: WriteEngine, off: u64, buf: &[u8]) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        if engine == WriteEngine::IoUring {
            if let Some(r) = crate::uring::pwrite(fd, buf, off) {
                return r;
            }
        }
        if engine != WriteEngine::Sync {
            if let Some(r) = crate::aio::pwrite(fd, buf, off) {
                return r;
            }
        }
        self.file.write_all_at(buf, off)
    }

    /// Writes all of `buf` at `off`.
    pub fn write_at(&self, off: u64, buf: &[u8], op: &'static str) -> Result<()> {
        if !self.direct || self.aligned(off, buf.len(), buf.as_ptr()) {
            return self.write_raw(off, buf).map_err(Error::io(op));
        }
        let a = self.align;
        let start = off / a * a;
        let end = (off + buf.len() as u64).div_ceil(a) * a;
        let mut bounce = AlignedBuf::new((end - start) as usize);
        let skip = (off - start) as usize;
        // Read-modify-write of the partial first and last blocks.
        if skip != 0 {
            self.read_raw(start, &mut bounce[..a as usize])
                .map_err(Error::io(op))?;
        }
        let tail = end - (off + buf.len() as u64);
        if tail != 0 {
            let n = bounce.len();
            self.read_raw(end - a, &mut bounce[n - a as usize..])
                .map_err(Error::io(op))?;
        }
        bounce[skip..skip + buf.len()].copy_from_slice(buf);
        self.write_raw(start, &bounce).map_err(Error::io(op))
    }

    /// Makes written data durable (fdatasync).
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(Error::io("fdatasync"))
    }

    /// Current file length; for a block device (an LVM volume as a raw
    /// disk), the device's size, which stat reports as 0.
    pub fn len(&self) -> Result<u64> {
        use std::os::unix::fs::FileTypeExt;
        let m = self.file.metadata().map_err(Error::io("stat image file"))?;
        if m.file_type().is_block_device() {
            // Positional I/O (pread/pwrite) ignores the file offset.
            return io::Seek::seek(&mut &self.file, io::SeekFrom::End(0))
                .map_err(Error::io("size of block device"));
        }
        Ok(m.len())
    }

    /// Sets the file length.
    pub fn set_len(&self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .map_err(Error::io("truncate image file"))
    }

    fn fallocate(&self, mode: libc::c_int, off: u64, len: u64) -> io::Result<()> {
        loop {
            // SAFETY: fallocate only acts on the file descriptor we own; no memory is passed.
            let r = unsafe {
                libc::fallocate(
                    self.file.as_raw_fd(),
                    mode,
                    off as libc::off_t,
                    len as libc::off_t,
                )
            };
            if r == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Deallocates a byte range (reads back as zeros); the file size stays.
    pub fn punch_hole(&self, off: u64, len: u64) -> io::Result<()> {
        self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            len,
        )
    }

    /// Zeroes a byte range, efficiently if the filesystem can; falls back to
    /// punching a hole, then to writing zeros.
    pub fn write_zeroes(&self, off: u64, len: u64) -> Result<()> {
        if self
            .fallocate(
                libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                off,
                len,
            )
            .is_ok()
        {
            return Ok(());
        }
        if self.punch_hole(off, len).is_ok() {
            return Ok(());
        }
        const CHUNK: u64 = 1 << 20;
        let zeros = AlignedBuf::new(CHUNK as usize);
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK);
            self.write_at(off + done, &zeros[..n as usize], "write zeroes")?;
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct_file(dir: &tempfile::TempDir, name: &str, len: usize) -> HostFile {
        let path = dir.path().join(name);
        std::fs::write(&path, vec![0u8; len]).expect("create file");
        HostFile::open(&path, false, true).expect("open O_DIRECT")
    }

    #[test]
    fn every_write_engine_writes_what_is_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (i, engine) in [
            WriteEngine::IoUring,
            WriteEngine::LinuxAio,
            WriteEngine::Sync,
        ]
        .into_iter()
        .enumerate()
        {
            let f = direct_file(&dir, &format!("e{i}"), 1 << 20);
            for k in 0..16u64 {
                let mut buf = AlignedBuf::new(8192);
                buf.fill(k as u8 + 1);
                f.write_through(engine, k * 65536 + 4096, &buf)
                    .expect("engine write");
            }
            let mut back = AlignedBuf::new(1 << 20);
            f.read_at(0, &mut back, "read back").expect("read");
            for k in 0..16usize {
                let at = k * 65536 + 4096;
                assert!(
                    back[at..at + 8192].iter().all(|&b| b == k as u8 + 1),
                    "{engine:?} block {k}"
                );
                assert!(
                    back[at - 4096..at].iter().all(|&b| b == 0),
                    "{engine:?} before {k}"
                );
            }
        }
    }

    #[test]
    fn a_lone_writer_moves_to_pwrite_after_a_few_writes_and_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = direct_file(&dir, "lone", 1 << 20);
        let mut buf = AlignedBuf::new(4096);
        for k in 0..(2 * LONE_WRITES_FOR_PWRITE as u64) {
            buf.fill(k as u8);
            f.write_at(k * 4096, &buf, "write").expect("write");
            let lone = f.lone_writes.load(Ordering::Relaxed);
            assert_eq!(
                lone,
                (k as u32 + 1).min(LONE_WRITES_FOR_PWRITE),
                "write {k}"
            );
        }
        let mut back = AlignedBuf::new(4096);
        f.read_at(5 * 4096, &mut back, "read").expect("read");
        assert!(back.iter().all(|&b| b == 5));
    }

    #[test]
    fn overlapping_writes_from_many_threads_all_land_and_the_count_returns_to_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = direct_file(&dir, "t", 64 * 16384);
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let f = &f;
                s.spawn(move || {
                    let mut buf = AlignedBuf::new(16384);
                    for k in 0..8u64 {
                        buf.fill((t * 8 + k) as u8 + 1);
                        f.write_at((t * 8 + k) * 16384, &buf, "write")
                            .expect("write");
                    }
                });
            }
        });
        assert_eq!(f.writes_in_flight.load(Ordering::Acquire), 0);
        let mut back = AlignedBuf::new(64 * 16384);
        f.read_at(0, &mut back, "read back").expect("read");
        for (i, block) in back.chunks(16384).enumerate() {
            assert!(block.iter().all(|&b| b == i as u8 + 1), "block {i}");
        }
    }
}
