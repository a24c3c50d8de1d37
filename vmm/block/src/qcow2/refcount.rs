//! Refcounts: the refcount table (kept in memory), refcount blocks (a
//! bounded write-back cache), and cluster allocation, including making new
//! refcount blocks and growing the refcount table.
//!
//! Ordering rules kept here (see `mod.rs` for the whole picture):
//! - a new refcount block is written and synced before the table points to it;
//! - a new refcount table is written and synced, with its own refcounts,
//!   before the header points to it;
//! - dirty blocks may be written back at any time: increments written early
//!   can only leak clusters, and decrements reach this cache only after the
//!   references they drop are durable.

use std::collections::{HashMap, HashSet};

use super::header::{self, MAX_HOST_OFFSET, MAX_REFTABLE_BYTES};
use crate::error::{Error, Result};
use crate::io::HostFile;

const REFT_OFFSET_MASK: u64 = 0xffff_ffff_ffff_fe00;
/// How far past the end of the file the allocator looks for a free run.
const MAX_SCAN_PAST_END: u64 = 1 << 22;

struct Block {
    data: Vec<u8>,
    dirty: bool,
    used: u64,
}

pub struct Refcounts {
    cs: u64,
    cluster_bits: u32,
    order: u32,
    /// log2 of refcount entries per block.
    eb: u32,
    table: Vec<u64>,
    pub table_offset: u64,
    pub table_clusters: u64,
    blocks_at: HashSet<u64>,
    /// Table entries of new blocks, written by `commit` after the blocks.
    pending_table: Vec<u64>,
    cache: HashMap<u64, Block>,
    cap: usize,
    tick: u64,
    free_hint: u64,
    /// One past the highest cluster the image uses (at least the file end).
    pub end_cluster: u64,
}

fn get_entry(d: &[u8], i: usize, order: u32) -> u64 {
    match order {
        0..=2 => {
            let bits = 1usize << order;
            let per = 8 / bits;
            u64::from(d[i / per] >> ((i % per) * bits)) & ((1 << bits) - 1)
        }
        3 => u64::from(d[i]),
        4 => u64::from(u16::from_be_bytes([d[2 * i], d[2 * i + 1]])),
        5 => u64::from(u32::from_be_bytes(
            d[4 * i..4 * i + 4].try_into().expect("4"),
        )),
        _ => u64::from_be_bytes(d[8 * i..8 * i + 8].try_into().expect("8")),
    }
}

fn set_entry(d: &mut [u8], i: usize, order: u32, v: u64) {
    match order {
        0..=2 => {
            let bits = 1usize << order;
            let per = 8 / bits;
            let shift = (i % per) * bits;
            let mask = (((1u16 << bits) - 1) as u8) << shift;
            d[i / per] = (d[i / per] & !mask) | (((v as u8) << shift) & mask);
        }
        3 => d[i] = v as u8,
        4 => d[2 * i..2 * i + 2].copy_from_slice(&(v as u16).to_be_bytes()),
        5 => d[4 * i..4 * i + 4].copy_from_slice(&(v as u32).to_be_bytes()),
        _ => d[8 * i..8 * i + 8].copy_from_slice(&v.to_be_bytes()),
    }
}

impl Refcounts {
    /// Loads and validates the refcount table.
    pub fn load(file: &HostFile, h: &header::Header, file_len: u64) -> Result<Refcounts> {
        let cs = h.cluster_size();
        let bytes = u64::from(h.refcount_table_clusters) * cs;
        let mut raw = vec![0u8; bytes as usize];
        file.read_at(h.refcount_table_offset, &mut raw, "read refcount table")?;
        let mut table = Vec::with_capacity(raw.len() / 8);
        let mut blocks_at = HashSet::new();
        for (i, c) in raw.chunks_exact(8).enumerate() {
            let e = u64::from_be_bytes(c.try_into().expect("8"));
            if e & !REFT_OFFSET_MASK != 0 || e % cs != 0 || e >= MAX_HOST_OFFSET {
                return Err(Error::Malformed(format!(
                    "refcount table entry {i} is {e:#x}"
                )));
            }
            if e != 0 {
                blocks_at.insert(e >> h.cluster_bits);
            }
            table.push(e);
        }
        if blocks_at.contains(&0) {
            return Err(Error::Malformed("refcount block at offset 0".into()));
        }
        let order = h.refcount_order;
        let eb = h.cluster_bits + 3 - order;
        Ok(Refcounts {
            cs,
            cluster_bits: h.cluster_bits,
            order,
            eb,
            table,
            table_offset: h.refcount_table_offset,
            table_clusters: u64::from(h.refcount_table_clusters),
            blocks_at,
            pending_table: Vec::new(),
            cache: HashMap::new(),
            cap: ((4u64 << 20) / cs).max(4) as usize,
            tick: 0,
            free_hint: 0,
            end_cluster: file_len.div_ceil(cs),
        })
    }

    fn max_refcount(&self) -> u64 {
        if self.order == 6 {
            u64::MAX
        } else {
            (1u64 << (1u32 << self.order)) - 1
        }
    }

    /// Whether cluster `c` holds the refcount table or a refcount block.
    pub fn is_metadata(&self, c: u64) -> bool {
        let t0 = self.table_offset / self.cs;
        (c >= t0 && c < t0 + self.table_clusters) || self.blocks_at.contains(&c)
    }

    fn block(&mut self, file: &HostFile, b: u64) -> Result<&mut Block> {
        self.tick += 1;
        let tick = self.tick;
        if !self.cache.contains_key(&b) {
            if self.cache.len() >= self.cap {
                self.evict(file)?;
            }
            let off = self.table[b as usize];
            let mut data = vec![0u8; self.cs as usize];
            file.read_at(off, &mut data, "read refcount block")?;
            self.cache.insert(
                b,
                Block {
                    data,
                    dirty: false,
                    used: tick,
                },
            );
        }
        let blk = self.cache.get_mut(&b).expect("just inserted");
        blk.used = tick;
        Ok(blk)
    }

    fn evict(&mut self, file: &HostFile) -> Result<()> {
        let Some((&b, _)) = self.cache.iter().min_by_key(|(_, v)| v.used) else {
            return Ok(());
        };
        let blk = self.cache.remove(&b).expect("present");
        if blk.dirty {
            file.write_at(self.table[b as usize], &blk.data, "write refcount block")?;
        }
        Ok(())
    }

    /// Refcount of cluster `c` (0 where no block covers it).
    pub fn get(&mut self, file: &HostFile, c: u64) -> Result<u64> {
        let b = c >> self.eb;
        if b >= self.table.len() as u64 || self.table[b as usize] == 0 {
            return Ok(0);
        }
        let i = (c & ((1 << self.eb) - 1)) as usize;
        let order = self.order;
        Ok(get_entry(&self.block(file, b)?.data, i, order))
    }

    fn set(&mut self, file: &HostFile, c: u64, v: u64) -> Result<()> {
        let b = c >> self.eb;
        if b >= self.table.len() as u64 || self.table[b as usize] == 0 {
            return Err(Error::Corrupt(format!("no refcount block for cluster {c}")));
        }
        let i = (c & ((1 << self.eb) - 1)) as usize;
        let order = self.order;
        let blk = self.block(file, b)?;
        set_entry(&mut blk.data, i, order, v);
        blk.dirty = true;
        Ok(())
    }

    /// Adds `delta` (+1 or -1) to the refcount of cluster `c`.
    pub fn update(&mut self, file: &HostFile, c: u64, delta: i64) -> Result<()> {
        let v = self.get(file, c)?;
        let nv = if delta < 0 {
            v.checked_sub(delta.unsigned_abs()).ok_or_else(|| {
                Error::Corrupt(format!("refcount of cluster {c} would drop below zero"))
            })?
        } else {
            v.checked_add(delta as u64)
                .filter(|&n| n <= self.max_refcount())
                .ok_or_else(|| Error::Corrupt(format!("refcount of cluster {c} overflows")))?
        };
        self.set(file, c, nv)?;
        if nv == 0 && c < self.free_hint {
            self.free_hint = c;
        }
        Ok(())
    }

    /// Whether any block in the cache is dirty.
    pub fn is_dirty(&self) -> bool {
        self.cache.values().any(|b| b.dirty)
    }

    /// Writes every dirty block back (no sync).
    pub fn write_dirty(&mut self, file: &HostFile) -> Result<()> {
        let mut dirty: Vec<u64> = self
            .cache
            .iter()
            .filter(|(_, v)| v.dirty)
            .map(|(&k, _)| k)
            .collect();
        dirty.sort_unstable();
        for b in dirty {
            let off = self.table[b as usize];
            let blk = self.cache.get_mut(&b).expect("present");
            file.write_at(off, &blk.data, "write refcount block")?;
            blk.dirty = false;
        }
        Ok(())
    }

    /// Allocates `n` contiguous clusters with refcount 1; returns the first
    /// cluster index.
    /// `is_meta` tells clusters that hold other metadata (L1, L2 tables):
    /// finding one free means the refcounts are wrong, and nothing is written.
    pub fn alloc(&mut self, file: &HostFile, n: u64, is_meta: &dyn Fn(u64) -> bool) -> Result<u64> {
        for _ in 0..4096 {
            let s = self.find_free(file, n)?;
            let e = s + n;
            if e > MAX_HOST_OFFSET >> self.cluster_bits {
                return Err(Error::Unsupported(
                    "image would exceed the largest host offset".into(),
                ));
            }
            if let Some(c) = (s..e).find(|&c| c == 0 || is_meta(c) || self.is_metadata(c)) {
                return Err(Error::Corrupt(format!(
                    "cluster {c} holds metadata but has refcount 0"
                )));
            }
            let last_b = (e - 1) >> self.eb;
            if last_b >= self.table.len() as u64 {
                self.grow_table(file, last_b + 1)?;
                continue;
            }
            if let Some(b) = ((s >> self.eb)..=last_b).find(|&b| self.table[b as usize] == 0) {
                let q = s.max(b << self.eb);
                self.create_block(file, b, q)?;
                continue;
            }
            for c in s..e {
                self.set(file, c, 1)?;
            }
            if s == self.free_hint {
                self.free_hint = e;
            }
            self.end_cluster = self.end_cluster.max(e);
            return Ok(s);
        }
        Err(Error::Corrupt(
            "cluster allocation makes no progress".into(),
        ))
    }

    fn find_free(&mut self, file: &HostFile, n: u64) -> Result<u64> {
        let limit = self.end_cluster + MAX_SCAN_PAST_END + n;
        let mut c = self.free_hint;
        let mut run_start = c;
        while c < limit {
            if c - run_start == n {
                return Ok(run_start);
            }
            let b = c >> self.eb;
            if b >= self.table.len() as u64 {
                return Ok(run_start); // nothing beyond the table is in use
            }
            if self.table[b as usize] == 0 {
                // A whole block range with no block: free. Jump ahead.
                let next = (b + 1) << self.eb;
                if next - run_start >= n {
                    return Ok(run_start);
                }
                c = next;
                continue;
            }
            if self.get(file, c)? != 0 {
                if c == self.free_hint {
                    self.free_hint = c + 1; // everything before is in use
                }
                run_start = c + 1;
            }
            c += 1;
        }
        Err(Error::Corrupt(
            "no free cluster found: refcounts beyond the end of the file".into(),
        ))
    }

    fn write_table_entry(&mut self, file: &HostFile, b: u64) -> Result<()> {
        let v = self.table[b as usize].to_be_bytes();
        file.write_at(self.table_offset + b * 8, &v, "write refcount table entry")
    }

    /// Makes refcount block `b` at cluster `q` (inside the range it covers,
    /// so it counts itself). The block is written by the next `commit`, and
    /// the table entry after it, with a sync in between.
    fn create_block(&mut self, file: &HostFile, b: u64, q: u64) -> Result<()> {
        if self.cache.len() >= self.cap {
            self.evict(file)?;
        }
        let mut data = vec![0u8; self.cs as usize];
        set_entry(&mut data, (q - (b << self.eb)) as usize, self.order, 1);
        self.table[b as usize] = q * self.cs;
        self.blocks_at.insert(q);
        self.pending_table.push(b);
        self.tick += 1;
        self.cache.insert(
            b,
            Block {
                data,
                dirty: true,
                used: self.tick,
            },
        );
        self.end_cluster = self.end_cluster.max(q + 1);
        Ok(())
    }

    /// Writes dirty blocks and then (after a sync) the table entries of new
    /// blocks. The caller syncs afterwards before writing anything that
    /// depends on these refcounts.
    pub fn commit(&mut self, file: &HostFile) -> Result<()> {
        self.write_dirty(file)?;
        if !self.pending_table.is_empty() {
            file.sync()?;
            let pending = std::mem::take(&mut self.pending_table);
            for b in pending {
                self.write_table_entry(file, b)?;
            }
        }
        Ok(())
    }

    /// Replaces the refcount table by a larger one with at least `min_len`
    /// entries, placed at the end of the image together with the new blocks
    /// that count it.
    fn grow_table(&mut self, file: &HostFile, min_len: u64) -> Result<()> {
        let cs = self.cs;
        let old_len = self.table.len() as u64;
        let start = self.end_cluster;
        let exists = |t: &Vec<u64>, b: u64| b < old_len && t[b as usize] != 0;
        let mut len = min_len.max(old_len + old_len / 2).max(old_len + 1);
        let (tc, nb) = loop {
            let tc = (len * 8).div_ceil(cs);
            let mut nb = 0u64;
            loop {
                let end = start + nb + tc;
                let needed = ((start >> self.eb)..=((end - 1) >> self.eb))
                    .filter(|&b| !exists(&self.table, b))
                    .count() as u64;
                if needed <= nb {
                    break;
                }
                nb = needed;
            }
            let last_b = (start + nb + tc - 1) >> self.eb;
            if last_b < len {
                break (tc, nb);
            }
            len = last_b + 1;
        };
        if tc * cs > MAX_REFTABLE_BYTES {
            return Err(Error::Unsupported(
                "refcount table would exceed its cap".into(),
            ));
        }
        let end = start + nb + tc;
        let mut new_table = self.table.clone();
        new_table.resize((tc * cs / 8) as usize, 0);
        // New blocks, in order, at [start, start+nb).
        let mut next_block = start;
        let mut new_blocks: Vec<(u64, Vec<u8>)> = Vec::new();
        for b in (start >> self.eb)..=((end - 1) >> self.eb) {
            if exists(&self.table, b) {
                // Count the new area's clusters in an existing block.
                let lo = start.max(b << self.eb);
                let hi = end.min((b + 1) << self.eb);
                for c in lo..hi {
                    self.set(file, c, 1)?;
                }
            } else {
                let mut data = vec![0u8; cs as usize];
                let lo = start.max(b << self.eb);
                let hi = end.min((b + 1) << self.eb);
                for c in lo..hi {
                    set_entry(&mut data, (c - (b << self.eb)) as usize, self.order, 1);
                }
                new_table[b as usize] = next_block * cs;
                new_blocks.push((next_block, data));
                next_block += 1;
            }
        }
        debug_assert_eq!(next_block, start + nb);
        // New-table entries of blocks made earlier are copied below; blocks first.
        self.write_dirty(file)?;
        self.pending_table.clear();
        for (q, data) in &new_blocks {
            file.write_at(q * cs, data, "write new refcount block")?;
        }
        let mut raw = vec![0u8; (tc * cs) as usize];
        for (i, e) in new_table.iter().enumerate() {
            raw[i * 8..i * 8 + 8].copy_from_slice(&e.to_be_bytes());
        }
        let new_off = (start + nb) * cs;
        file.write_at(new_off, &raw, "write new refcount table")?;
        file.sync()?;
        let mut hdr = [0u8; 12];
        hdr[..8].copy_from_slice(&new_off.to_be_bytes());
        hdr[8..].copy_from_slice(&(tc as u32).to_be_bytes());
        file.write_at(
            header::OFF_REFTABLE,
            &hdr,
            "write header refcount table fields",
        )?;
        file.sync()?;
        let old_off = self.table_offset;
        let old_clusters = self.table_clusters;
        self.table = new_table;
        self.table_offset = new_off;
        self.table_clusters = tc;
        for (q, data) in new_blocks {
            self.blocks_at.insert(q);
            let b = (self.table.iter().position(|&e| e == q * cs)).expect("block in table") as u64;
            self.tick += 1;
            if self.cache.len() >= self.cap {
                self.evict(file)?;
            }
            self.cache.insert(
                b,
                Block {
                    data,
                    dirty: false,
                    used: self.tick,
                },
            );
        }
        self.end_cluster = self.end_cluster.max(end);
        // The old table is no longer referenced by the (durable) header.
        for c in (old_off / cs)..(old_off / cs + old_clusters) {
            self.update(file, c, -1)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{get_entry, set_entry};

    #[test]
    fn entries_of_every_width_round_trip_without_touching_neighbours() {
        for order in 0..=6u32 {
            let bits = 1u32 << order;
            let max = if bits == 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            };
            let mut d = vec![0u8; 512];
            let n = 512 * 8 / bits as usize;
            for i in 0..n {
                set_entry(&mut d, i, order, (i as u64 * 7 + 1) & max);
            }
            for i in 0..n {
                assert_eq!(
                    get_entry(&d, i, order),
                    (i as u64 * 7 + 1) & max,
                    "order {order} entry {i}"
                );
            }
            set_entry(&mut d, 3, order, max);
            assert_eq!(get_entry(&d, 3, order), max);
            assert_eq!(get_entry(&d, 2, order), 15 & max);
            assert_eq!(get_entry(&d, 4, order), 29 & max);
        }
        // QEMU's layout for sub-byte refcounts: entry 0 in the low bits.
        let mut d = vec![0u8; 1];
        set_entry(&mut d, 0, 0, 1);
        assert_eq!(d[0], 1);
        set_entry(&mut d, 1, 1, 3);
        assert_eq!(d[0], 0b1101);
    }
}
