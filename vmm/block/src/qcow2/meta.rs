//! qcow2 metadata in memory: the L1 table, a bounded write-back cache of L2
//! tables, the refcounts, and the guest-cluster → host mapping built on them.
//! Everything here runs under the disk's metadata mutex.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::header::{Header, MAX_L1_BYTES, OFF_L1_SIZE};
use super::refcount::Refcounts;
use crate::error::{Error, Result};
use crate::io::HostFile;

pub const OFLAG_COPIED: u64 = 1 << 63;
pub const OFLAG_COMPRESSED: u64 = 1 << 62;
pub const OFLAG_ZERO: u64 = 1;
const L1_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L1_RESERVED: u64 = 0x7f00_0000_0000_01ff;
const L2_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Default L2 cache: 32 MiB of tables at most (QEMU's default cap on Linux).
const L2_CACHE_BYTES: u64 = 32 << 20;

/// Where a guest cluster's data is, for reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Map {
    /// Not allocated here: read the backing file (or zeros).
    Unallocated,
    /// Reads as zeros.
    Zero,
    /// Stored uncompressed at this host offset.
    Data(u64),
    /// Stored compressed: `len` bytes at host offset `off`.
    Compressed { off: u64, len: u64 },
}

/// Where the rest of a cluster comes from when a write allocates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Zero,
    Backing,
    Data(u64),
    Compressed { off: u64, len: u64 },
}

/// What a write to a guest cluster must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WritePlan {
    /// Write in place at this host cluster offset.
    InPlace(u64),
    /// Fill a (new or reused) host cluster from `src`, then map it;
    /// afterwards drop one reference on each cluster in `free`.
    Allocate {
        src: Source,
        reuse: Option<u64>,
        free: Vec<u64>,
    },
}

struct L2Table {
    e: Vec<u64>,
    dirty: bool,
    used: u64,
}

pub struct Meta {
    pub cluster_bits: u32,
    pub cs: u64,
    l2_bits: u32,
    pub version: u32,
    pub has_backing: bool,
    l1: Vec<u64>,
    l1_offset: u64,
    l1_dirty: BTreeSet<usize>,
    l2: HashMap<u64, L2Table>,
    l2_at: HashSet<u64>,
    l2_cap: usize,
    tick: u64,
    /// None when the image is open read-only.
    pub rc: Option<Refcounts>,
    pending_free: Vec<u64>,
    /// Guest clusters whose allocating write is in progress outside the lock.
    pub inflight: HashSet<u64>,
    /// Set once an inconsistency is found; writes are refused from then on.
    pub corrupt: Option<String>,
}

impl Meta {
    pub fn load(file: &HostFile, h: &Header, file_len: u64, writable: bool) -> Result<Meta> {
        let cs = h.cluster_size();
        let mut raw = vec![0u8; h.l1_size as usize * 8];
        file.read_at(h.l1_table_offset, &mut raw, "read L1 table")?;
        let mut l1 = Vec::with_capacity(h.l1_size as usize);
        let mut l2_at = HashSet::new();
        for (i, c) in raw.chunks_exact(8).enumerate() {
            let e = u64::from_be_bytes(c.try_into().expect("8"));
            let off = e & L1_OFFSET_MASK;
            if e & L1_RESERVED != 0 || !off.is_multiple_of(cs) {
                return Err(Error::Malformed(format!("L1 entry {i} is {e:#x}")));
            }
            if off != 0 {
                l2_at.insert(off / cs);
            }
            l1.push(e);
        }
        let rc = if writable {
            Some(Refcounts::load(file, h, file_len)?)
        } else {
            None
        };
        let m = Meta {
            cluster_bits: h.cluster_bits,
            cs,
            l2_bits: h.cluster_bits - 3,
            version: h.version,
            has_backing: h.backing_file.is_some(),
            l1,
            l1_offset: h.l1_table_offset,
            l1_dirty: BTreeSet::new(),
            l2: HashMap::new(),
            l2_at,
            l2_cap: (L2_CACHE_BYTES / cs).max(4) as usize,
            tick: 0,
            rc,
            pending_free: Vec::new(),
            inflight: HashSet::new(),
            corrupt: None,
        };
        if m.l2_at.contains(&0) {
            return Err(Error::Malformed("L2 table at offset 0".into()));
        }
        Ok(m)
    }

    /// Whether host cluster `c` holds metadata known to this engine.
    pub fn is_metadata(&self, c: u64) -> bool {
        let l1c = self.l1_offset / self.cs;
        let l1n = (self.l1.len() as u64 * 8).div_ceil(self.cs);
        c == 0
            || (c >= l1c && c < l1c + l1n)
            || self.l2_at.contains(&c)
            || self.rc.as_ref().is_some_and(|r| r.is_metadata(c))
    }

    fn corrupt(&mut self, msg: String) -> Error {
        self.corrupt = Some(msg.clone());
        Error::Corrupt(msg)
    }

    fn l2_table(&mut self, file: &HostFile, off: u64) -> Result<&mut L2Table> {
        self.tick += 1;
        let tick = self.tick;
        if !self.l2.contains_key(&off) {
            if self.l2.len() >= self.l2_cap {
                self.evict_l2(file)?;
            }
            let mut raw = vec![0u8; self.cs as usize];
            file.read_at(off, &mut raw, "read L2 table")?;
            let e = raw
                .chunks_exact(8)
                .map(|c| u64::from_be_bytes(c.try_into().expect("8")))
                .collect();
            self.l2.insert(
                off,
                L2Table {
                    e,
                    dirty: false,
                    used: tick,
                },
            );
        }
        let t = self.l2.get_mut(&off).expect("present");
        t.used = tick;
        Ok(t)
    }

    fn write_l2(file: &HostFile, off: u64, t: &L2Table) -> Result<()> {
        let mut raw = vec![0u8; t.e.len() * 8];
        for (i, e) in t.e.iter().enumerate() {
            raw[i * 8..i * 8 + 8].copy_from_slice(&e.to_be_bytes());
        }
        file.write_at(off, &raw, "write L2 table")
    }

    fn evict_l2(&mut self, file: &HostFile) -> Result<()> {
        let Some((&off, _)) = self.l2.iter().min_by_key(|(_, t)| t.used) else {
            return Ok(());
        };
        if self.l2[&off].dirty {
            // The refcounts of everything this table points to go first.
            if let Some(rc) = self.rc.as_mut() {
                rc.commit(file)?;
            }
            file.sync()?;
            Self::write_l2(file, off, &self.l2[&off])?;
        }
        self.l2.remove(&off);
        Ok(())
    }

    fn l2_offset(&self, gc: u64) -> Result<(u64, usize)> {
        let l1i = (gc >> self.l2_bits) as usize;
        let idx = (gc & ((1 << self.l2_bits) - 1)) as usize;
        let e = *self
            .l1
            .get(l1i)
            .ok_or_else(|| Error::Corrupt(format!("guest cluster {gc} beyond the L1 table")))?;
        Ok((e & L1_OFFSET_MASK, idx))
    }

    /// The raw L2 entry of guest cluster `gc` (0 when no L2 table).
    pub fn l2_entry(&mut self, file: &HostFile, gc: u64) -> Result<u64> {
        let (off, idx) = self.l2_offset(gc)?;
        if off == 0 {
            return Ok(0);
        }
        Ok(self.l2_table(file, off)?.e[idx])
    }

    fn compressed(&self, e: u64) -> (u64, u64) {
        let x = 62 - (self.cluster_bits - 8);
        let off = e & ((1u64 << x) - 1);
        let sectors = ((e >> x) & ((1u64 << (self.cluster_bits - 8)) - 1)) + 1;
        let end = (off & !511) + sectors * 512;
        (off, end - off)
    }

    /// Decodes an L2 entry for reading.
    pub fn map(&mut self, file: &HostFile, gc: u64) -> Result<Map> {
        let e = self.l2_entry(file, gc)?;
        if e & OFLAG_COMPRESSED != 0 {
            let (off, len) = self.compressed(e);
            return Ok(Map::Compressed { off, len });
        }
        if e & OFLAG_ZERO != 0 && self.version >= 3 {
            return Ok(Map::Zero);
        }
        let off = e & L2_OFFSET_MASK;
        if off == 0 {
            return Ok(Map::Unallocated);
        }
        if !off.is_multiple_of(self.cs) {
            return Err(Error::Malformed(format!(
                "data cluster offset {off:#x} of guest cluster {gc} is unaligned"
            )));
        }
        Ok(Map::Data(off))
    }

    /// Host clusters referenced by an L2 entry (to drop when it is replaced).
    pub fn referenced(&self, e: u64) -> Vec<u64> {
        if e & OFLAG_COMPRESSED != 0 {
            let (off, len) = self.compressed(e);
            let first = (off & !511) / self.cs;
            let last = (off + len - 1) / self.cs;
            return (first..=last).collect();
        }
        let off = e & L2_OFFSET_MASK;
        if off == 0 {
            Vec::new()
        } else {
            vec![off / self.cs]
        }
    }

    /// Decides how a write to guest cluster `gc` proceeds.
    pub fn plan_write(&mut self, file: &HostFile, gc: u64) -> Result<WritePlan> {
        if let Some(c) = &self.corrupt {
            return Err(Error::Corrupt(c.clone()));
        }
        let e = self.l2_entry(file, gc)?;
        let off = e & L2_OFFSET_MASK;
        if e & OFLAG_COMPRESSED != 0 {
            let (off, len) = self.compressed(e);
            return Ok(WritePlan::Allocate {
                src: Source::Compressed { off, len },
                reuse: None,
                free: self.referenced(e),
            });
        }
        if off != 0 && !off.is_multiple_of(self.cs) {
            return Err(Error::Malformed(format!(
                "data cluster offset {off:#x} of guest cluster {gc} is unaligned"
            )));
        }
        if off != 0 && self.is_metadata(off / self.cs) {
            return Err(self.corrupt(format!("guest cluster {gc} maps onto metadata at {off:#x}")));
        }
        let zero = e & OFLAG_ZERO != 0 && self.version >= 3;
        let copied = e & OFLAG_COPIED != 0;
        Ok(match (off, zero, copied) {
            (0, true, _) => WritePlan::Allocate {
                src: Source::Zero,
                reuse: None,
                free: vec![],
            },
            (0, false, _) => WritePlan::Allocate {
                src: if self.has_backing {
                    Source::Backing
                } else {
                    Source::Zero
                },
                reuse: None,
                free: vec![],
            },
            (o, false, true) => WritePlan::InPlace(o),
            (o, true, true) => WritePlan::Allocate {
                src: Source::Zero,
                reuse: Some(o),
                free: vec![],
            },
            (o, true, false) => WritePlan::Allocate {
                src: Source::Zero,
                reuse: None,
                free: vec![o / self.cs],
            },
            (o, false, false) => WritePlan::Allocate {
                src: Source::Data(o),
                reuse: None,
                free: vec![o / self.cs],
            },
        })
    }

    /// Allocates `n` contiguous host clusters; returns their offset and
    /// whether they lie past everything the file ever held (so read as zeros).
    pub fn alloc(&mut self, file: &HostFile, n: u64) -> Result<(u64, bool)> {
        let l1c = self.l1_offset / self.cs;
        let l1n = (self.l1.len() as u64 * 8).div_ceil(self.cs);
        let l2_at = &self.l2_at;
        let is_meta = |c: u64| (c >= l1c && c < l1c + l1n) || l2_at.contains(&c);
        let rc = self.rc.as_mut().ok_or(Error::ReadOnly)?;
        let end = rc.end_cluster;
        match rc.alloc(file, n, &is_meta) {
            Ok(c) => Ok((c * self.cs, c >= end)),
            Err(Error::Corrupt(msg)) => Err(self.corrupt(msg)),
            Err(e) => Err(e),
        }
    }

    /// Points guest cluster `gc` at `entry`, allocating its L2 table if needed.
    pub fn set_l2_entry(&mut self, file: &HostFile, gc: u64, entry: u64) -> Result<()> {
        let l1i = (gc >> self.l2_bits) as usize;
        let (mut off, idx) = self.l2_offset(gc)?;
        if off == 0 {
            let (new, _) = self.alloc(file, 1)?;
            off = new;
            self.tick += 1;
            if self.l2.len() >= self.l2_cap {
                self.evict_l2(file)?;
            }
            let entries = (self.cs / 8) as usize;
            self.l2.insert(
                off,
                L2Table {
                    e: vec![0; entries],
                    dirty: true,
                    used: self.tick,
                },
            );
            self.l2_at.insert(off / self.cs);
            self.l1[l1i] = off | OFLAG_COPIED;
            self.l1_dirty.insert(l1i);
        } else if self.l1[l1i] & OFLAG_COPIED == 0 {
            return Err(Error::Unsupported(
                "writing to an L2 table shared with a snapshot".into(),
            ));
        }
        let t = self.l2_table(file, off)?;
        t.e[idx] = entry;
        t.dirty = true;
        Ok(())
    }

    /// Queues references to drop once the new mappings are durable.
    pub fn defer_free(&mut self, clusters: &[u64]) {
        self.pending_free.extend_from_slice(clusters);
    }

    /// Makes data and metadata durable, in the order that keeps the image
    /// consistent: data and refcounts, then L2 tables, then L1 entries; then
    /// drops the references released since the last flush.
    pub fn flush(&mut self, file: &HostFile) -> Result<()> {
        let Some(rc) = self.rc.as_mut() else {
            return Ok(());
        };
        let want = rc.end_cluster * self.cs;
        if file.len()? < want {
            file.set_len(want)?;
        }
        rc.commit(file)?;
        file.sync()?;
        let mut dirty: Vec<u64> = self
            .l2
            .iter()
            .filter(|(_, t)| t.dirty)
            .map(|(&k, _)| k)
            .collect();
        dirty.sort_unstable();
        for off in &dirty {
            let t = self.l2.get_mut(off).expect("present");
            Self::write_l2(file, *off, t)?;
            t.dirty = false;
        }
        let wrote_l1 = !self.l1_dirty.is_empty();
        if wrote_l1 {
            file.sync()?;
            for &i in &self.l1_dirty {
                let v = self.l1[i].to_be_bytes();
                file.write_at(self.l1_offset + i as u64 * 8, &v, "write L1 entry")?;
            }
            self.l1_dirty.clear();
        }
        if !dirty.is_empty() || wrote_l1 {
            file.sync()?;
        }
        let pending = std::mem::take(&mut self.pending_free);
        let rc = self.rc.as_mut().expect("writable");
        for c in pending {
            rc.update(file, c, -1)?;
        }
        Ok(())
    }

    /// Writes back what `flush` left dirty (the dropped references).
    pub fn finish(&mut self, file: &HostFile) -> Result<()> {
        self.flush(file)?;
        if let Some(rc) = self.rc.as_mut() {
            if rc.is_dirty() {
                rc.commit(file)?;
                file.sync()?;
            }
        }
        Ok(())
    }

    /// Replaces the L1 table by one of `entries` entries (resize).
    pub fn grow_l1(&mut self, file: &HostFile, entries: u64) -> Result<()> {
        if entries <= self.l1.len() as u64 {
            return Ok(());
        }
        if entries * 8 > MAX_L1_BYTES {
            return Err(Error::Unsupported(format!(
                "an L1 table of {entries} entries exceeds the cap"
            )));
        }
        self.flush(file)?;
        let n = (entries * 8).div_ceil(self.cs);
        let (off, _) = self.alloc(file, n)?;
        let mut l1 = self.l1.clone();
        l1.resize(entries as usize, 0);
        let mut raw = vec![0u8; (n * self.cs) as usize];
        for (i, e) in l1.iter().enumerate() {
            raw[i * 8..i * 8 + 8].copy_from_slice(&e.to_be_bytes());
        }
        file.write_at(off, &raw, "write new L1 table")?;
        let rc = self.rc.as_mut().ok_or(Error::ReadOnly)?;
        rc.commit(file)?;
        file.sync()?;
        let mut hdr = [0u8; 12];
        hdr[..4].copy_from_slice(&(entries as u32).to_be_bytes());
        hdr[4..].copy_from_slice(&off.to_be_bytes());
        file.write_at(OFF_L1_SIZE, &hdr, "write header L1 fields")?;
        file.sync()?;
        let old_first = self.l1_offset / self.cs;
        let old_n = (self.l1.len() as u64 * 8).div_ceil(self.cs);
        self.l1 = l1;
        self.l1_offset = off;
        for c in old_first..old_first + old_n {
            rc.update(file, c, -1)?;
        }
        Ok(())
    }
}
