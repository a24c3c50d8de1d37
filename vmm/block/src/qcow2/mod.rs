//! qcow2 images (versions 2 and 3).
//!
//! A request is split by guest cluster. Under the metadata mutex each
//! cluster is looked up in the L1 table and the L2 cache ([`meta`]); the data
//! I/O itself runs outside the mutex, so many threads can share one disk.
//!
//! A write to an allocated, unshared cluster goes in place. Any other write
//! allocates a host cluster (refcount 1 in the refcount cache), marks the
//! guest cluster in flight (other writers to it wait), fills the cluster
//! outside the lock (copying up from the backing file, an old shared or
//! compressed cluster, or zeros), writes it, and only then points the L2
//! entry at it. References that a write or discard drops are applied only
//! after the next flush has made the new mapping durable.
//!
//! Write ordering (what makes a crash leave at worst leaked clusters):
//! 1. guest data and refcount increments are written, then `fdatasync`;
//! 2. L2 tables are written (an evicted dirty L2 table is preceded by step 1);
//! 3. if L1 entries changed: `fdatasync`, then the L1 entries;
//! 4. `fdatasync`; then dropped references are decremented in the cache.
//!
//! A refcount block is synced before the refcount table points to it, and a
//! new refcount table before the header does. Discard, write-zeroes and flush
//! take a gate that waits for in-flight I/O, so no data I/O can land in a
//! cluster after it was freed and reused.

pub mod compress;
pub mod create;
#[doc(hidden)]
pub mod fuzz;
#[doc(hidden)]
pub use fuzz::fuzz_one;
pub mod header;
mod meta;
mod refcount;

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, RwLock};

use self::header::{Compression, Header};
use self::meta::{Map, Meta, Source, WritePlan, OFLAG_COPIED, OFLAG_ZERO};
use crate::error::{Error, Result};
use crate::io::{AlignedBuf, HostFile};
use crate::{check_range, Disk, DiskFormat, OpenOptions};

/// An open qcow2 image.
pub struct Qcow2Disk {
    file: HostFile,
    meta: Mutex<Meta>,
    alloc_done: Condvar,
    gate: RwLock<()>,
    backing: Option<Box<dyn Disk>>,
    size: u64,
    cs: u64,
    cluster_bits: u32,
    read_only: bool,
    compression: Compression,
}

/// Reads the header of a qcow2 file.
pub(crate) fn read_header(file: &HostFile) -> Result<Header> {
    let file_len = file.len()?;
    if file_len < 72 {
        return Err(Error::Malformed(format!(
            "file of {file_len} bytes is too short for a qcow2 header"
        )));
    }
    let mut first = [0u8; 104];
    file.read_at(0, &mut first, "read qcow2 header")?;
    Header::parse(
        &first,
        |cs| {
            let mut c0 = vec![0u8; cs as usize];
            file.read_at(0, &mut c0, "read qcow2 header cluster")?;
            Ok(c0)
        },
        file_len,
    )
}

/// The backing format a header records (`recorded`) for its backing file
/// `name`; a backing file without one is refused (never probed from its
/// bytes).
pub(crate) fn recorded_backing_format(recorded: Option<&str>, name: &str) -> Result<DiskFormat> {
    Ok(recorded
        .ok_or_else(|| {
            Error::Unsupported(format!(
                "backing file {name:?} without a recorded backing format; record one with \
                 `qemu-img rebase -u -b {name} -F raw|qcow2`"
            ))
        })?
        .parse()?)
}

/// Resolves a backing file name as QEMU does: absolute names as they are,
/// relative names against the directory of the overlay's path.
pub fn resolve_backing(overlay: &Path, name: &str) -> Result<PathBuf> {
    if name.starts_with("json:") || name.contains("://") {
        return Err(Error::Unsupported(format!(
            "backing file name {name:?} is not a plain path"
        )));
    }
    let p = Path::new(name);
    if p.is_absolute() {
        return Ok(p.to_owned());
    }
    Ok(match overlay.parent() {
        Some(dir) => dir.join(p),
        None => p.to_owned(),
    })
}

impl Qcow2Disk {
    /// Opens a qcow2 image over exactly the backing chain `chain` (see
    /// [`crate::open_disk_chain`]).
    pub fn open(path: &Path, opts: OpenOptions, chain: &[crate::BackingFile]) -> Result<Qcow2Disk> {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(path).map_err(|source| Error::Open {
            path: path.to_owned(),
            source,
        })?;
        Self::open_in_chain(path, opts, Some(chain), &mut vec![(md.dev(), md.ino())])
    }

    /// `chain` `None`: the backing file, if any, is not opened (for
    /// metadata work such as resize, which reads no guest data).
    pub(crate) fn open_in_chain(
        path: &Path,
        opts: OpenOptions,
        chain: Option<&[crate::BackingFile]>,
        seen: &mut Vec<(u64, u64)>,
    ) -> Result<Qcow2Disk> {
        let file = HostFile::open(path, opts.read_only, opts.direct)?;
        let file_len = file.len()?;
        let h = read_header(&file)?;
        let writable = !opts.read_only;
        if writable {
            if h.nb_snapshots > 0 {
                return Err(Error::Unsupported(
                    "writing an image with internal snapshots (open it read-only)".into(),
                ));
            }
            if h.incompatible & header::INCOMPAT_DIRTY != 0 {
                return Err(Error::Unsupported(
                    "image has the dirty flag (lazy refcounts); repair it with `qemu-img check -r all`".into(),
                ));
            }
            if h.incompatible & header::INCOMPAT_CORRUPT != 0 {
                return Err(Error::Malformed(
                    "image is marked corrupt; open it read-only".into(),
                ));
            }
        }
        let backing =
            match (&h.backing_file, chain) {
                (_, None) | (None, Some([])) => None,
                (None, Some([first, ..])) => {
                    return Err(Error::Chain(format!(
                        "{} names no backing file, but the caller names {}",
                        path.display(),
                        first.path.display()
                    )))
                }
                (Some(name), Some([])) => {
                    return Err(Error::Chain(format!(
                        "{} names backing file {name:?}, which the caller did not give \
                     (a backing file is opened only when named explicitly)",
                        path.display()
                    )))
                }
                (Some(name), Some([first, rest @ ..])) => {
                    let fmt = recorded_backing_format(h.backing_format.as_deref(), name)?;
                    let bpath = resolve_backing(path, name)?;
                    if bpath != first.path || fmt != first.format {
                        return Err(Error::Chain(format!(
                        "{} names backing file {name:?} ({fmt}), not {} ({}) as the caller says",
                        path.display(),
                        first.path.display(),
                        first.format
                    )));
                    }
                    let bopts = OpenOptions {
                        read_only: true,
                        direct: opts.direct,
                    };
                    let disk = crate::open_chain(&first.path, fmt, bopts, Some(rest), seen)
                        .map_err(|e| Error::Backing {
                            path: first.path.clone(),
                            source: Box::new(e),
                        })?;
                    Some(disk)
                }
            };
        let meta = Meta::load(&file, &h, file_len, writable)?;
        if writable && h.version >= 3 && h.autoclear != 0 {
            // We do not maintain bitmaps: tell readers their data is stale.
            file.write_at(
                header::OFF_AUTOCLEAR,
                &0u64.to_be_bytes(),
                "clear autoclear features",
            )?;
            file.sync()?;
        }
        Ok(Qcow2Disk {
            file,
            meta: Mutex::new(meta),
            alloc_done: Condvar::new(),
            gate: RwLock::new(()),
            backing,
            size: h.size,
            cs: h.cluster_size(),
            cluster_bits: h.cluster_bits,
            read_only: opts.read_only,
            compression: h.compression,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Meta> {
        self.meta.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn writable(&self) -> Result<()> {
        if self.read_only {
            Err(Error::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// Reads guest bytes at `off` from the backing file (zeros past its end).
    fn read_backing(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let Some(b) = &self.backing else {
            buf.fill(0);
            return Ok(());
        };
        let bsize = b.size();
        let n = if off >= bsize {
            0
        } else {
            ((bsize - off) as usize).min(buf.len())
        };
        if n > 0 {
            b.read_at(off, &mut buf[..n])?;
        }
        buf[n..].fill(0);
        Ok(())
    }

    fn read_compressed(&self, off: u64, len: u64, out: &mut [u8]) -> Result<()> {
        let mut input = vec![0u8; len as usize];
        self.file
            .read_at(off, &mut input, "read compressed cluster")?;
        compress::decompress_cluster(self.compression, &input, out, off)
    }

    fn read_source(&self, src: Source, gc: u64, buf: &mut [u8]) -> Result<()> {
        match src {
            Source::Zero => {
                buf.fill(0);
                Ok(())
            }
            Source::Backing => self.read_backing(gc << self.cluster_bits, buf),
            Source::Data(o) => self.file.read_at(o, buf, "read cluster to copy"),
            Source::Compressed { off, len } => self.read_compressed(off, len, buf),
        }
    }

    /// Writes one cluster's worth of a request that needs allocation: the
    /// parts of the cluster the request does not cover come from `src`.
    fn fill_and_write(
        &self,
        gc: u64,
        host: u64,
        inoff: usize,
        data: &[u8],
        src: Source,
        fresh: bool,
    ) -> Result<()> {
        let cs = self.cs as usize;
        if (inoff == 0 && data.len() == cs) || (fresh && src == Source::Zero) {
            return self
                .file
                .write_at(host + inoff as u64, data, "write data cluster");
        }
        let mut buf = AlignedBuf::new(cs);
        let tail = inoff + data.len();
        match src {
            Source::Zero => {}
            Source::Compressed { .. } => self.read_source(src, gc, &mut buf)?,
            Source::Backing | Source::Data(_) => {
                // Copy only the head and the tail around the new data.
                if inoff > 0 {
                    self.read_source_part(src, gc, 0, &mut buf[..inoff])?;
                }
                if tail < cs {
                    self.read_source_part(src, gc, tail, &mut buf[tail..])?;
                }
            }
        }
        buf[inoff..tail].copy_from_slice(data);
        self.file.write_at(host, &buf, "write data cluster")
    }

    fn read_source_part(&self, src: Source, gc: u64, at: usize, buf: &mut [u8]) -> Result<()> {
        match src {
            Source::Backing => self.read_backing((gc << self.cluster_bits) + at as u64, buf),
            Source::Data(o) => self
                .file
                .read_at(o + at as u64, buf, "read cluster to copy"),
            _ => self.read_source(src, gc, buf),
        }
    }

    fn write_cluster(&self, gc: u64, inoff: usize, data: &[u8]) -> Result<()> {
        let mut m = self.lock();
        loop {
            if !m.inflight.contains(&gc) {
                break;
            }
            m = self.alloc_done.wait(m).unwrap_or_else(|p| p.into_inner());
        }
        match m.plan_write(&self.file, gc)? {
            WritePlan::InPlace(host) => {
                drop(m);
                self.file.write_at(host + inoff as u64, data, "write data")
            }
            WritePlan::Allocate { src, reuse, free } => {
                let (host, fresh) = match reuse {
                    Some(h) => (h, false),
                    None => m.alloc(&self.file, 1)?,
                };
                m.inflight.insert(gc);
                drop(m);
                let r = self.fill_and_write(gc, host, inoff, data, src, fresh);
                let mut m = self.lock();
                m.inflight.remove(&gc);
                self.alloc_done.notify_all();
                r?; // on error the new cluster is leaked, which is harmless
                m.set_l2_entry(&self.file, gc, host | OFLAG_COPIED)?;
                m.defer_free(&free);
                Ok(())
            }
        }
    }

    /// Iterates over the clusters of `[offset, offset+len)`:
    /// (guest cluster, offset in cluster, position in request, length).
    fn chunks(
        &self,
        offset: u64,
        len: usize,
    ) -> impl Iterator<Item = (u64, usize, usize, usize)> + '_ {
        let cs = self.cs;
        let mut pos = 0usize;
        std::iter::from_fn(move || {
            if pos >= len {
                return None;
            }
            let g = offset + pos as u64;
            let inoff = (g & (cs - 1)) as usize;
            let n = (cs as usize - inoff).min(len - pos);
            let item = (g >> self.cluster_bits, inoff, pos, n);
            pos += n;
            Some(item)
        })
    }

    /// Whole clusters inside `[offset, offset+len)`; a range reaching the end
    /// of the disk covers its last, partial cluster.
    fn whole_clusters(&self, offset: u64, len: u64) -> std::ops::Range<u64> {
        let first = offset.div_ceil(self.cs);
        let end = offset + len;
        let last = if end == self.size {
            end.div_ceil(self.cs)
        } else {
            end / self.cs
        };
        first..last.max(first)
    }

    /// Writes zeros through the normal write path (partial clusters, v2).
    fn write_zero_bytes(&self, offset: u64, len: u64) -> Result<()> {
        let zeros = AlignedBuf::new(self.cs as usize);
        let mut done = 0;
        while done < len {
            let n = (len - done).min(self.cs - ((offset + done) & (self.cs - 1)));
            self.write_at(offset + done, &zeros[..n as usize])?;
            done += n;
        }
        Ok(())
    }
}

enum Seg {
    Host(u64),
    Zero,
    Backing(u64),
    Compressed { off: u64, len: u64, inoff: usize },
}

impl Disk for Qcow2Disk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(offset, buf.len() as u64, self.size)?;
        let _g = self.gate.read().unwrap_or_else(|p| p.into_inner());
        // Map every cluster under one lock, merging contiguous runs.
        let mut segs: Vec<(usize, usize, Seg)> = Vec::new();
        {
            let mut m = self.lock();
            for (gc, inoff, pos, n) in self.chunks(offset, buf.len()) {
                let seg = match m.map(&self.file, gc)? {
                    Map::Data(h) => Seg::Host(h + inoff as u64),
                    Map::Zero => Seg::Zero,
                    Map::Unallocated if self.backing.is_some() => Seg::Backing(offset + pos as u64),
                    Map::Unallocated => Seg::Zero,
                    Map::Compressed { off, len } => Seg::Compressed { off, len, inoff },
                };
                if let Some((_, plen, prev)) = segs.last_mut() {
                    let merge = match (&*prev, &seg) {
                        (Seg::Host(a), Seg::Host(b)) => a + *plen as u64 == *b,
                        (Seg::Zero, Seg::Zero) => true,
                        (Seg::Backing(a), Seg::Backing(b)) => a + *plen as u64 == *b,
                        _ => false,
                    };
                    if merge {
                        *plen += n;
                        continue;
                    }
                }
                segs.push((pos, n, seg));
            }
        }
        for (pos, n, seg) in segs {
            let out = &mut buf[pos..pos + n];
            match seg {
                Seg::Host(h) => self.file.read_at(h, out, "read data")?,
                Seg::Zero => out.fill(0),
                Seg::Backing(g) => self.read_backing(g, out)?,
                Seg::Compressed { off, len, inoff } => {
                    let mut c = vec![0u8; self.cs as usize];
                    self.read_compressed(off, len, &mut c)?;
                    out.copy_from_slice(&c[inoff..inoff + n]);
                }
            }
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.writable()?;
        check_range(offset, buf.len() as u64, self.size)?;
        let _g = self.gate.read().unwrap_or_else(|p| p.into_inner());
        for (gc, inoff, pos, n) in self.chunks(offset, buf.len()) {
            self.write_cluster(gc, inoff, &buf[pos..pos + n])?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        let _g = self.gate.write().unwrap_or_else(|p| p.into_inner());
        self.lock().flush(&self.file)
    }

    fn write_back(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        let _g = self.gate.write().unwrap_or_else(|p| p.into_inner());
        self.lock().finish(&self.file)
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.writable()?;
        check_range(offset, len, self.size)?;
        let _g = self.gate.write().unwrap_or_else(|p| p.into_inner());
        let mut m = self.lock();
        for gc in self.whole_clusters(offset, len) {
            let e = m.l2_entry(&self.file, gc)?;
            if e == 0 {
                continue;
            }
            let new = if !m.has_backing {
                0
            } else if m.version >= 3 {
                OFLAG_ZERO
            } else {
                continue; // v2 over a backing file cannot hide the base: keep the data
            };
            if e == new {
                continue;
            }
            let refs = m.referenced(e);
            m.set_l2_entry(&self.file, gc, new)?;
            m.defer_free(&refs);
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        self.writable()?;
        check_range(offset, len, self.size)?;
        let whole = self.whole_clusters(offset, len);
        let (ws, we) = (whole.start * self.cs, (whole.end * self.cs).min(self.size));
        if whole.is_empty() {
            return self.write_zero_bytes(offset, len);
        }
        if offset < ws {
            self.write_zero_bytes(offset, ws - offset)?;
        }
        if we < offset + len {
            self.write_zero_bytes(we, offset + len - we)?;
        }
        let mut v2_clusters = Vec::new();
        {
            let _g = self.gate.write().unwrap_or_else(|p| p.into_inner());
            let mut m = self.lock();
            for gc in whole {
                let e = m.l2_entry(&self.file, gc)?;
                if e == 0 && !m.has_backing {
                    continue;
                }
                if m.version < 3 {
                    v2_clusters.push(gc);
                    continue;
                }
                if e & OFLAG_ZERO != 0 && e & meta::OFLAG_COMPRESSED == 0 {
                    continue;
                }
                let plain = e & meta::OFLAG_COMPRESSED == 0 && e & OFLAG_COPIED != 0;
                if plain {
                    // Keep the allocation, mark it as reading zeros.
                    m.set_l2_entry(&self.file, gc, e | OFLAG_ZERO)?;
                } else {
                    let refs = m.referenced(e);
                    m.set_l2_entry(&self.file, gc, OFLAG_ZERO)?;
                    m.defer_free(&refs);
                }
            }
        }
        for gc in v2_clusters {
            let start = gc * self.cs;
            self.write_zero_bytes(start, self.cs.min(self.size - start))?;
        }
        Ok(())
    }

    fn read_only(&self) -> bool {
        self.read_only
    }
}

impl Drop for Qcow2Disk {
    fn drop(&mut self) {
        if !self.read_only {
            let m = self.meta.get_mut().unwrap_or_else(|p| p.into_inner());
            let _ = m.finish(&self.file);
        }
    }
}
