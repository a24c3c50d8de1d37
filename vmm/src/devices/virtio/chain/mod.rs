//! One descriptor chain, walked with the checks a hostile driver calls for.
//!
//! [`walk`] follows a chain from its head through the descriptor table (and
//! at most one indirect table) and returns its buffers split into the
//! device-readable part and the device-writable part. It refuses, with a
//! [`ChainError`] naming the problem:
//! - a head or `next` index outside the table,
//! - a chain longer than the queue size (which catches every loop),
//! - an indirect table inside an indirect table, an indirect descriptor
//!   that also has NEXT, an empty or misaligned indirect table, or one not
//!   in guest memory,
//! - a readable buffer after a writable one,
//! - a buffer not entirely inside guest memory (ranges that cross from one
//!   memory region into an adjacent one are fine),
//! - more than 4 GiB in total.
//!
//! [`Buffers`] then copies bytes between those buffers and the device, by
//! offset in the readable or writable stream; the device never handles a
//! guest address itself.
//!
//! The common request costs no heap allocation: a [`Chain`] keeps its
//! segments inline (see [`Segments`]), and the walk looks a guest memory
//! region up once and reuses it for every descriptor and buffer that lies
//! inside it, taking the full multi-region path only for the rest. A
//! device that keeps one [`Chain`] and walks each request into it
//! ([`walk_into`], `queue::pop_chain_into`) also copies none: a `Chain`
//! is a few hundred bytes, and returning it by value cost several memcpys
//! per request. [`Buffers::read_array`] and [`Buffers::write_last`] are
//! the short paths for a request's header and status byte.

use vm_memory::{
    ByteValued, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, GuestRegionMmap,
    MemoryRegionAddress, VolatileMemory,
};

pub use super::segments::{pieces, total_len, Pieces, Segment, Segments, INLINE_SEGMENTS};
use crate::devices::GuestMemoryMmap;

const DESC_SIZE: u64 = 16;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("descriptor index {index} is outside a table of {size}")]
    IndexOutOfRange { index: u16, size: u16 },
    #[error("chain longer than {0} descriptors (a loop?)")]
    TooLong(u16),
    #[error("descriptor table at {0:#x} is not in guest memory")]
    TableOutOfMemory(u64),
    #[error("indirect descriptor inside an indirect table")]
    NestedIndirect,
    #[error("indirect descriptor with NEXT set")]
    IndirectWithNext,
    #[error("indirect table length {0} is empty or not a multiple of 16")]
    IndirectLength(u32),
    #[error("readable descriptor after a writable one")]
    ReadableAfterWritable,
    #[error("buffer {addr:#x}+{len:#x} is not in guest memory")]
    BufferOutOfMemory { addr: u64, len: u32 },
    #[error("chain carries more than 4 GiB")]
    TooManyBytes,
}

/// The buffers of one chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    pub head: u16,
    pub readable: Segments,
    pub writable: Segments,
}

#[derive(Clone, Copy)]
struct RawDesc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

/// Guest memory as one walk sees it: the region of the last lookup is
/// kept, so a chain whose table and buffers share a region (nearly always:
/// guest RAM below 3 GiB is one region) costs one region lookup instead of
/// two per descriptor. A range not wholly inside that region takes the
/// full check, which also accepts ranges across adjacent regions.
struct WalkMem<'m> {
    mem: &'m GuestMemoryMmap,
    region: Option<&'m GuestRegionMmap>,
}

impl<'m> WalkMem<'m> {
    fn new(mem: &'m GuestMemoryMmap) -> Self {
        WalkMem { mem, region: None }
    }

    /// The region holding all of `[addr, addr + len)` and the offset of
    /// `addr` in it, if one region holds it all.
    fn in_region(&mut self, addr: u64, len: u64) -> Option<(&'m GuestRegionMmap, u64)> {
        let region = match self.region {
            Some(r) if addr >= r.start_addr().0 && addr - r.start_addr().0 < r.len() => r,
            _ => {
                let r = self.mem.find_region(GuestAddress(addr))?;
                self.region = Some(r);
                r
            }
        };
        let off = addr - region.start_addr().0;
        (off.checked_add(len)? <= region.len()).then_some((region, off))
    }

    /// True if `[addr, addr + len)` is guest memory.
    fn contains(&mut self, addr: u64, len: u32) -> bool {
        self.in_region(addr, u64::from(len)).is_some()
            || self.mem.check_range(GuestAddress(addr), len as usize)
    }

    fn read_desc(&mut self, table: u64, index: u16) -> Result<RawDesc, ChainError> {
        let addr = table
            .checked_add(u64::from(index) * DESC_SIZE)
            .ok_or(ChainError::TableOutOfMemory(table))?;
        // One copy of the descriptor, used from here on: the driver may
        // rewrite the table meanwhile. As two little-endian words: the
        // address, then length | flags << 32 | next << 48.
        let words = match self.in_region(addr, DESC_SIZE) {
            // Two 8-byte volatile loads.
            Some((region, off)) => region
                .get_slice(MemoryRegionAddress(off), DESC_SIZE as usize)
                .ok()
                .and_then(|s| {
                    let lo = s.get_ref::<u64>(0).ok()?.load();
                    let hi = s.get_ref::<u64>(8).ok()?.load();
                    Some([u64::from_le(lo), u64::from_le(hi)])
                }),
            None => {
                let mut raw = [0u8; DESC_SIZE as usize];
                self.mem
                    .read_slice(&mut raw, GuestAddress(addr))
                    .ok()
                    .map(|()| {
                        let (lo, hi) = raw.split_at(8);
                        [
                            u64::from_le_bytes(lo.try_into().expect("8 bytes")),
                            u64::from_le_bytes(hi.try_into().expect("8 bytes")),
                        ]
                    })
            }
        }
        .ok_or(ChainError::TableOutOfMemory(addr))?;
        let [lo, hi] = words;
        Ok(RawDesc {
            addr: lo,
            len: hi as u32,
            flags: (hi >> 32) as u16,
            next: (hi >> 48) as u16,
        })
    }
}

/// Walk the chain starting at `head` in the descriptor table at `table` of
/// a queue of `queue_size` entries.
pub fn walk(
    mem: &GuestMemoryMmap,
    table: u64,
    queue_size: u16,
    head: u16,
) -> Result<Chain, ChainError> {
    let mut chain = Chain {
        head,
        ..Default::default()
    };
    walk_into(mem, table, queue_size, head, &mut chain)?;
    Ok(chain)
}

/// [`walk`] into an existing `chain` (its lists are cleared first), so a
/// caller that keeps one can reuse a spilled list's heap buffer. On error
/// `chain` holds part of the walk; ignore it.
pub fn walk_into(
    mem: &GuestMemoryMmap,
    table: u64,
    queue_size: u16,
    head: u16,
    chain: &mut Chain,
) -> Result<(), ChainError> {
    chain.head = head;
    chain.readable.clear();
    chain.writable.clear();
    let mut mem = WalkMem::new(mem);
    // Budget across the main and indirect tables: a chain may not have
    // more descriptors than the queue has entries (virtio 1.2, 2.7.5.2),
    // and an indirect table at most as many as it holds.
    let mut budget = queue_size;
    let mut total: u64 = 0;
    let (mut table, mut size, mut index) = (table, queue_size, head);
    let mut indirect = false;
    loop {
        if index >= size {
            return Err(ChainError::IndexOutOfRange { index, size });
        }
        if budget == 0 {
            return Err(ChainError::TooLong(queue_size));
        }
        budget -= 1;
        let desc = mem.read_desc(table, index)?;
        if desc.flags & F_INDIRECT != 0 {
            if indirect {
                return Err(ChainError::NestedIndirect);
            }
            if desc.flags & F_NEXT != 0 {
                return Err(ChainError::IndirectWithNext);
            }
            if desc.len == 0 || !u64::from(desc.len).is_multiple_of(DESC_SIZE) {
                return Err(ChainError::IndirectLength(desc.len));
            }
            let entries = u64::from(desc.len) / DESC_SIZE;
            let entries =
                u16::try_from(entries).map_err(|_| ChainError::IndirectLength(desc.len))?;
            if !mem.contains(desc.addr, desc.len) {
                return Err(ChainError::TableOutOfMemory(desc.addr));
            }
            indirect = true;
            table = desc.addr;
            size = entries;
            index = 0;
            budget = entries;
            continue;
        }
        if desc.len > 0 {
            if !mem.contains(desc.addr, desc.len) {
                return Err(ChainError::BufferOutOfMemory {
                    addr: desc.addr,
                    len: desc.len,
                });
            }
            total += u64::from(desc.len);
            if total > u64::from(u32::MAX) {
                return Err(ChainError::TooManyBytes);
            }
            let seg = Segment {
                addr: desc.addr,
                len: desc.len,
            };
            if desc.flags & F_WRITE != 0 {
                chain.writable.push(seg);
            } else if chain.writable.is_empty() {
                chain.readable.push(seg);
            } else {
                return Err(ChainError::ReadableAfterWritable);
            }
        } else if desc.flags & F_WRITE == 0 && !chain.writable.is_empty() {
            return Err(ChainError::ReadableAfterWritable);
        }
        if desc.flags & F_NEXT == 0 {
            return Ok(());
        }
        index = desc.next;
    }
}

/// Copies between a chain's buffers and the device. Offsets count from the
/// start of the readable (or writable) stream.
pub struct Buffers<'a> {
    pub mem: &'a GuestMemoryMmap,
    pub chain: &'a Chain,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("guest buffer access failed at stream offset {0}")]
pub struct CopyError(pub u64);

/// Apply `f(guest address, range of buf)` to each piece of
/// `[offset, offset + len)` of the stream made of `segs`. Returns the
/// bytes covered (less than `len` if the stream is shorter).
fn for_each_piece(
    segs: &[Segment],
    offset: u64,
    len: usize,
    mut f: impl FnMut(u64, std::ops::Range<usize>) -> Result<(), ()>,
) -> Result<usize, CopyError> {
    let mut done = 0usize;
    for (addr, n) in pieces(segs, offset, len) {
        f(addr, done..done + n).map_err(|_| CopyError(offset + done as u64))?;
        done += n;
    }
    Ok(done)
}

impl Buffers<'_> {
    pub fn readable_len(&self) -> u64 {
        total_len(&self.chain.readable)
    }

    pub fn writable_len(&self) -> u64 {
        total_len(&self.chain.writable)
    }

    /// The `N` bytes of the readable stream at `offset` if one segment
    /// holds them all (a request header, nearly always): one region lookup
    /// and one load instead of a copy loop. `None` if they span segments or
    /// the stream is shorter; [`Buffers::read`] handles every case.
    pub fn read_array<const N: usize>(&self, offset: u64) -> Option<[u8; N]>
    where
        [u8; N]: ByteValued,
    {
        let (addr, n) = pieces(&self.chain.readable, offset, N).next()?;
        if n != N {
            return None;
        }
        let vs = self.mem.get_slice(GuestAddress(addr), N).ok()?;
        Some(vs.get_ref::<[u8; N]>(0).ok()?.load())
    }

    /// Write `v` as the last byte of the writable stream (a virtio-blk
    /// status byte): one region lookup in the last segment. False if the
    /// stream is empty or the byte is not in guest memory.
    pub fn write_last(&self, v: u8) -> bool {
        let Some(seg) = self.chain.writable.last() else {
            return false;
        };
        // The walk keeps no empty segment, so the last byte is in the last
        // one, and `addr + len` does not overflow (it is in guest memory).
        match seg.len.checked_sub(1) {
            Some(at) => match self
                .mem
                .get_slice(GuestAddress(seg.addr + u64::from(at)), 1)
            {
                Ok(vs) => vs.get_ref::<u8>(0).map(|r| r.store(v)).is_ok(),
                Err(_) => false,
            },
            None => self.write(self.writable_len().saturating_sub(1), &[v]) == Ok(1),
        }
    }

    /// Read from the readable stream at `offset` into `buf`; returns the
    /// bytes read (short at the end of the stream).
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<usize, CopyError> {
        let mem = self.mem;
        for_each_piece(&self.chain.readable, offset, buf.len(), |addr, r| {
            let dst = &mut buf[r];
            // A piece inside one region (nearly always) is one slice; one
            // across two adjacent regions takes the general path.
            match mem.get_slice(GuestAddress(addr), dst.len()) {
                Ok(vs) if vs.copy_to(dst) == dst.len() => Ok(()),
                _ => mem.read_slice(dst, GuestAddress(addr)).map_err(|_| ()),
            }
        })
    }

    /// Write `buf` into the writable stream at `offset`; returns the bytes
    /// written (short at the end of the stream).
    pub fn write(&self, offset: u64, buf: &[u8]) -> Result<usize, CopyError> {
        let mem = self.mem;
        for_each_piece(&self.chain.writable, offset, buf.len(), |addr, r| {
            let src = &buf[r];
            match mem.get_slice(GuestAddress(addr), src.len()) {
                Ok(vs) if vs.len() == src.len() => {
                    vs.copy_from(src);
                    Ok(())
                }
                _ => mem.write_slice(src, GuestAddress(addr)).map_err(|_| ()),
            }
        })
    }
}

#[cfg(test)]
mod tests;
