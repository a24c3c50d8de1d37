//! Serving a virtio-blk queue: [`process_queue`] takes each chain the
//! driver offered, checks it as a request (header, lengths, sector range,
//! read-only), does the I/O on the disk in bounded chunks through a
//! reusable buffer, writes the status byte and returns the chain. Each
//! chain is walked into the one [`Chain`] the backend keeps (no copy of
//! the chain per request).
//!
//! A request that is wrong but well-framed gets `IOERR` or `UNSUPP` and a
//! log line; a chain that breaks the ring protocol is a
//! [`QueueError`](crate::devices::virtio::queue::QueueError) and the
//! device asks for a reset.

use std::sync::Arc;

use kiln_block::Disk;
use virtio_queue::Queue;
use vm_memory::{GuestAddress, GuestMemoryBackend, VolatileSlice};

use super::*;
use crate::devices::virtio::chain::{Buffers, Chain, CopyError};
use crate::devices::virtio::queue::{self, QueueError};
use crate::devices::virtio::rate_limiter::RateLimiter;
use crate::devices::GuestMemoryMmap;

/// Bytes moved per disk call: bounds the buffer whatever the guest asks.
const CHUNK: usize = 1 << 20;
/// Heap a kept chain may hold between drains (its segment lists grow with
/// the longest request seen: up to 2 MiB for a full indirect table).
const KEPT_CHAIN_HEAP: usize = 64 << 10;
/// Pieces at least this long (on average) go straight between the disk and
/// guest memory; smaller ones are gathered through the buffer, where one
/// copy costs less than a disk call per piece.
const DIRECT_MIN_PIECE: usize = 16 << 10;
const HEADER_LEN: u64 = 16;
const SEGMENT_LEN: u64 = 16;

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("request shorter than its 16-byte header")]
    ShortHeader,
    #[error("request type {0} is not supported")]
    Unsupported(u32),
    #[error("data length {0} is not a whole number of sectors")]
    BadLength(u64),
    #[error("sectors {sector}+{bytes} bytes lie outside the disk")]
    OutOfRange { sector: u64, bytes: u64 },
    #[error("the disk is read-only")]
    ReadOnly,
    #[error("{0} discard/write-zeroes segments (at most {MAX_DISCARD_SEGS})")]
    TooManySegments(u64),
    #[error("segment flags {0:#x} are not supported")]
    BadFlags(u32),
    #[error("disk I/O failed")]
    Io(#[source] kiln_block::Error),
    #[error("copying to or from the guest failed")]
    Copy(#[source] CopyError),
}

impl RequestError {
    fn status(&self) -> u8 {
        match self {
            RequestError::Unsupported(_) | RequestError::BadFlags(_) => S_UNSUPP,
            _ => S_IOERR,
        }
    }
}

/// What a block queue serves requests from.
pub struct BlockBackend {
    pub disk: Arc<dyn Disk>,
    /// GET_ID answer, zero padded.
    pub serial: [u8; ID_BYTES],
    pub read_only: bool,
    pub limiter: Option<RateLimiter>,
    buf: Vec<u8>,
    /// The chain being served, walked in place request after request
    /// (boxed so that serving moves a pointer, not the chain's lists).
    chain: Option<Box<Chain>>,
}

impl BlockBackend {
    pub fn new(disk: Arc<dyn Disk>, serial: &str, read_only: bool) -> Self {
        let mut id = [0u8; ID_BYTES];
        let n = serial.len().min(ID_BYTES);
        id[..n].copy_from_slice(&serial.as_bytes()[..n]);
        BlockBackend {
            read_only: read_only || disk.read_only(),
            disk,
            serial: id,
            limiter: None,
            buf: Vec::new(),
            chain: None,
        }
    }

    fn buffer(&mut self, len: usize) -> &mut [u8] {
        let n = len.min(CHUNK);
        if self.buf.len() < n {
            self.buf.resize(n, 0);
        }
        &mut self.buf[..n]
    }

    fn range(&self, sector: u64, bytes: u64) -> Result<u64, RequestError> {
        let err = RequestError::OutOfRange { sector, bytes };
        let offset = sector.checked_mul(SECTOR_SIZE).ok_or(err)?;
        let capacity = self.disk.size() / SECTOR_SIZE * SECTOR_SIZE;
        match offset.checked_add(bytes) {
            Some(end) if end <= capacity => Ok(offset),
            _ => Err(RequestError::OutOfRange { sector, bytes }),
        }
    }
}

#[cfg(test)]
impl BlockBackend {
    /// Heap bytes of the chain kept between drains; `None` if none is kept.
    pub(super) fn kept_chain_heap(&self) -> Option<usize> {
        self.chain
            .as_ref()
            .map(|c| c.readable.heap_bytes() + c.writable.heap_bytes())
    }
}

/// How far [`process_queue`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// Nothing left in the queue.
    All,
    /// The rate limiter stopped it; call again when its timer fires.
    Throttled,
}

/// Serve every request the driver offered. Returns whether the driver
/// should be interrupted, and how far it got.
pub fn process_queue(
    mem: &GuestMemoryMmap,
    q: &mut Queue,
    backend: &mut BlockBackend,
) -> Result<(bool, Served), QueueError> {
    let mut served = Served::All;
    // Every request of the drain is walked into this one chain.
    let mut chain = backend.chain.take().unwrap_or_default();
    let drained = queue::drain(mem, q, |q| {
        while queue::pop_chain_into(mem, q, &mut chain)? {
            if let Some(limiter) = &mut backend.limiter {
                let bytes = chain_payload(&chain);
                if !limiter.consume(bytes) {
                    q.go_to_previous_position();
                    served = Served::Throttled;
                    return Ok(false);
                }
            }
            let used = execute(mem, &chain, backend);
            queue::complete(q, chain.head, used)?;
        }
        Ok(true)
    });
    // Keep the chain for the next drain, unless a huge request grew it.
    if chain.readable.heap_bytes() + chain.writable.heap_bytes() <= KEPT_CHAIN_HEAP {
        backend.chain = Some(chain);
    }
    Ok((drained?.notify, served))
}

/// Bytes a request moves, for the bandwidth limit.
fn chain_payload(chain: &Chain) -> u64 {
    let r = crate::devices::virtio::chain::total_len(&chain.readable);
    let w = crate::devices::virtio::chain::total_len(&chain.writable);
    r.saturating_sub(HEADER_LEN) + w.saturating_sub(1)
}

/// Serve one request; returns the bytes written to the guest (data plus
/// the status byte).
pub fn execute(mem: &GuestMemoryMmap, chain: &Chain, backend: &mut BlockBackend) -> u32 {
    let bufs = Buffers { mem, chain };
    let wl = bufs.writable_len();
    if wl == 0 {
        log::warn!(
            "virtio-blk: request {} has no status byte; dropped",
            chain.head
        );
        return 0;
    }
    let (status, written) = match serve(&bufs, wl - 1, backend) {
        Ok(n) => (S_OK, n),
        Err(e) => {
            log::warn!("virtio-blk: request {} failed: {e}", chain.head);
            (e.status(), 0)
        }
    };
    if !bufs.write_last(status) {
        log::warn!(
            "virtio-blk: writing the status of request {} failed",
            chain.head
        );
    }
    // The chain is at most 4 GiB (checked by the walk).
    (written + 1).min(u64::from(u32::MAX)) as u32
}

/// Guest memory of `[start, start + len)` of the stream `segs`, as host
/// slices, if each piece lies in one mapping and the pieces are few or
/// large (else the caller goes through its buffer).
fn direct_pieces<'m>(
    mem: &'m GuestMemoryMmap,
    segs: &[crate::devices::virtio::chain::Segment],
    start: u64,
    len: u64,
) -> Option<Vec<VolatileSlice<'m, ()>>> {
    let len = usize::try_from(len).ok()?;
    let pieces = crate::devices::virtio::chain::pieces(segs, start, len);
    let count = pieces.clone().count();
    if count > 1 && len / count < DIRECT_MIN_PIECE {
        return None;
    }
    pieces
        .map(|(addr, n)| mem.get_slice(GuestAddress(addr), n).ok())
        .collect()
}

/// Guest memory of `[start, start + len)` of the stream `segs` as one host
/// slice, if it lies in a single segment (the usual layout: header, data,
/// status) inside one mapping. Saves [`direct_pieces`]' allocation.
fn single_piece<'m>(
    mem: &'m GuestMemoryMmap,
    segs: &[crate::devices::virtio::chain::Segment],
    start: u64,
    len: u64,
) -> Option<VolatileSlice<'m, ()>> {
    let mut skip = start;
    for seg in segs {
        let seg_len = u64::from(seg.len);
        if skip < seg_len {
            if seg_len - skip < len {
                return None;
            }
            let n = usize::try_from(len).ok()?;
            return mem.get_slice(GuestAddress(seg.addr + skip), n).ok();
        }
        skip -= seg_len;
    }
    None
}

/// Read `[offset, offset + len)` of the disk into the writable stream.
fn read_into_guest(
    bufs: &Buffers,
    b: &mut BlockBackend,
    offset: u64,
    len: u64,
) -> Result<(), RequestError> {
    if let Some(vs) = single_piece(bufs.mem, &bufs.chain.writable, 0, len) {
        let guard = vs.ptr_guard_mut();
        // SAFETY: as below: a live mapping of guest RAM of `vs.len()` bytes,
        // only written, only for this call.
        let dst = unsafe { std::slice::from_raw_parts_mut(guard.as_ptr(), vs.len()) };
        return b.disk.read_at(offset, dst).map_err(RequestError::Io);
    }
    if let Some(slices) = direct_pieces(bufs.mem, &bufs.chain.writable, 0, len) {
        let mut off = offset;
        for vs in slices {
            let guard = vs.ptr_guard_mut();
            // SAFETY: `vs` is a live mapping of guest RAM (the memory
            // outlives this request) of `vs.len()` bytes; the slice exists
            // only for this call, which only writes it. The guest may touch
            // the same bytes meanwhile (as with DMA on hardware), which can
            // only garble its own buffer.
            let dst = unsafe { std::slice::from_raw_parts_mut(guard.as_ptr(), vs.len()) };
            b.disk.read_at(off, dst).map_err(RequestError::Io)?;
            off += vs.len() as u64;
        }
        return Ok(());
    }
    let mut done = 0u64;
    while done < len {
        let disk = b.disk.clone();
        let buf = b.buffer((len - done) as usize);
        disk.read_at(offset + done, buf).map_err(RequestError::Io)?;
        bufs.write(done, buf).map_err(RequestError::Copy)?;
        done += buf.len() as u64;
    }
    Ok(())
}

/// Write the readable stream from `HEADER_LEN` on to the disk at `offset`.
fn write_from_guest(
    bufs: &Buffers,
    b: &mut BlockBackend,
    offset: u64,
    len: u64,
) -> Result<(), RequestError> {
    if let Some(vs) = single_piece(bufs.mem, &bufs.chain.readable, HEADER_LEN, len) {
        let guard = vs.ptr_guard();
        // SAFETY: as in `read_into_guest`; the slice is only read.
        let src = unsafe { std::slice::from_raw_parts(guard.as_ptr(), vs.len()) };
        return b.disk.write_at(offset, src).map_err(RequestError::Io);
    }
    if let Some(slices) = direct_pieces(bufs.mem, &bufs.chain.readable, HEADER_LEN, len) {
        let mut off = offset;
        for vs in slices {
            let guard = vs.ptr_guard();
            // SAFETY: as in `read_into_guest`; the slice is only read.
            let src = unsafe { std::slice::from_raw_parts(guard.as_ptr(), vs.len()) };
            b.disk.write_at(off, src).map_err(RequestError::Io)?;
            off += vs.len() as u64;
        }
        return Ok(());
    }
    let mut done = 0u64;
    while done < len {
        let disk = b.disk.clone();
        let buf = b.buffer((len - done) as usize);
        bufs.read(HEADER_LEN + done, buf)
            .map_err(RequestError::Copy)?;
        disk.write_at(offset + done, buf)
            .map_err(RequestError::Io)?;
        done += buf.len() as u64;
    }
    Ok(())
}

fn serve(bufs: &Buffers, data_in: u64, b: &mut BlockBackend) -> Result<u64, RequestError> {
    let header = match bufs.read_array::<{ HEADER_LEN as usize }>(0) {
        Some(h) => h,
        // Split across descriptors, or too short.
        None => {
            let mut h = [0u8; HEADER_LEN as usize];
            if bufs.read(0, &mut h).map_err(RequestError::Copy)? != h.len() {
                return Err(RequestError::ShortHeader);
            }
            h
        }
    };
    let kind = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let sector = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let data_out = bufs.readable_len() - HEADER_LEN;
    match kind {
        T_IN => {
            if !data_in.is_multiple_of(SECTOR_SIZE) {
                return Err(RequestError::BadLength(data_in));
            }
            let offset = b.range(sector, data_in)?;
            read_into_guest(bufs, b, offset, data_in)?;
            Ok(data_in)
        }
        T_OUT => {
            if !data_out.is_multiple_of(SECTOR_SIZE) {
                return Err(RequestError::BadLength(data_out));
            }
            if b.read_only {
                return Err(RequestError::ReadOnly);
            }
            let offset = b.range(sector, data_out)?;
            write_from_guest(bufs, b, offset, data_out)?;
            Ok(0)
        }
        T_FLUSH => {
            b.disk.flush().map_err(RequestError::Io)?;
            Ok(0)
        }
        T_GET_ID => {
            let n = data_in.min(ID_BYTES as u64) as usize;
            let serial = b.serial;
            bufs.write(0, &serial[..n]).map_err(RequestError::Copy)?;
            Ok(n as u64)
        }
        T_DISCARD | T_WRITE_ZEROES => {
            if !data_out.is_multiple_of(SEGMENT_LEN) || data_out == 0 {
                return Err(RequestError::BadLength(data_out));
            }
            let count = data_out / SEGMENT_LEN;
            if count > u64::from(MAX_DISCARD_SEGS) {
                return Err(RequestError::TooManySegments(count));
            }
            if b.read_only {
                return Err(RequestError::ReadOnly);
            }
            for i in 0..count {
                let mut seg = [0u8; SEGMENT_LEN as usize];
                bufs.read(HEADER_LEN + i * SEGMENT_LEN, &mut seg)
                    .map_err(RequestError::Copy)?;
                let start = u64::from_le_bytes(seg[0..8].try_into().expect("8 bytes"));
                let sectors = u32::from_le_bytes(seg[8..12].try_into().expect("4 bytes"));
                let flags = u32::from_le_bytes(seg[12..16].try_into().expect("4 bytes"));
                // Discard has no flags; write-zeroes may have UNMAP (bit 0).
                let allowed = if kind == T_DISCARD { 0 } else { 1 };
                if flags & !allowed != 0 {
                    return Err(RequestError::BadFlags(flags));
                }
                let len = u64::from(sectors) * SECTOR_SIZE;
                let offset = b.range(start, len)?;
                if kind == T_DISCARD {
                    b.disk.discard(offset, len)
                } else {
                    b.disk.write_zeroes(offset, len)
                }
                .map_err(RequestError::Io)?;
            }
            Ok(0)
        }
        other => Err(RequestError::Unsupported(other)),
    }
}
