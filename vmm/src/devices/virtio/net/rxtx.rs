//! Frames between the virtqueues and the host side.
//!
//! Transmit: each chain's readable bytes are one frame with its 12-byte
//! virtio-net header (10 bytes for a legacy driver: no VERSION_1 nor
//! MRG_RXBUF, so no `num_buffers`; the `_hdr` functions take the length), handed whole to the tap (which understands the
//! header, GSO included). Receive: a chain is taken first (without
//! buffers, frames stay in the tap), then one frame is read from the tap
//! with `readv` straight into that chain's writable buffers (one copy,
//! the kernel's), with `num_buffers` set to 1 (no mergeable buffers).
//! With a receive rate limiter, the frame is read into a host buffer
//! first, since its size decides whether it may go: a refused frame waits
//! there (the rest in the tap) until the limiter's timer fires. Frames
//! that do not fit are dropped with a log line, not truncated.

use std::io;

use virtio_queue::Queue;
use vm_memory::{GuestAddress, GuestMemoryBackend};

use super::NET_HDR_LEN;
use crate::devices::virtio::chain::{Buffers, Chain};
use crate::devices::virtio::queue::{self, QueueError};
use crate::devices::virtio::rate_limiter::RateLimiter;
use crate::devices::GuestMemoryMmap;

/// Largest frame with its header: a 64 KiB GSO super-frame (Linux's
/// GSO_MAX_SIZE counts the Ethernet header) with room for a VLAN tag.
pub const MAX_FRAME: usize = NET_HDR_LEN + 65536 + 18;

/// The host side of a NIC.
pub trait FrameIo {
    /// Send one frame (with header).
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;
    /// Receive one frame (with header) into `buf`; `WouldBlock` if none.
    /// A frame longer than `buf` is cut (its rest is lost).
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Receive one frame (with header) into the buffers `iov` describes;
    /// the same answers as [`FrameIo::recv`].
    ///
    /// # Safety
    /// Every iovec must describe memory writable for the whole call.
    unsafe fn recv_iov(&mut self, iov: &[libc::iovec]) -> io::Result<usize>;
}

/// Send every frame the guest queued. Returns whether to interrupt and
/// whether the limiter stopped it (true: throttled).
pub fn process_tx(
    mem: &GuestMemoryMmap,
    q: &mut Queue,
    io: &mut dyn FrameIo,
    buf: &mut Vec<u8>,
    limiter: Option<&mut RateLimiter>,
) -> Result<(bool, bool), QueueError> {
    process_tx_hdr(mem, q, io, buf, limiter, NET_HDR_LEN)
}

/// [`process_tx`] with a header of `hdr_len` bytes ([`super::LEGACY_HDR_LEN`]
/// for a legacy driver; the tap is set to the same size).
pub fn process_tx_hdr(
    mem: &GuestMemoryMmap,
    q: &mut Queue,
    io: &mut dyn FrameIo,
    buf: &mut Vec<u8>,
    mut limiter: Option<&mut RateLimiter>,
    hdr_len: usize,
) -> Result<(bool, bool), QueueError> {
    let mut throttled = false;
    let drained = queue::drain(mem, q, |q| {
        while let Some(chain) = queue::pop_chain(mem, q)? {
            let bufs = Buffers { mem, chain: &chain };
            let len = bufs.readable_len();
            let valid = len >= hdr_len as u64 && len <= MAX_FRAME as u64;
            if let Some(l) = limiter.as_deref_mut() {
                // Bytes sent: a frame that is dropped costs one operation
                // only (a chain can claim 4 GiB, which would otherwise put
                // the bucket in debt for a frame never sent).
                if !l.consume(if valid { len } else { 0 }) {
                    q.go_to_previous_position();
                    throttled = true;
                    return Ok(false);
                }
            }
            if !valid {
                log::warn!("virtio-net: dropped a {len}-byte transmit frame");
            } else {
                buf.resize(len as usize, 0);
                match bufs.read(0, buf) {
                    Ok(_) => {
                        if let Err(e) = io.send(buf) {
                            log::debug!("virtio-net: tap write failed: {e}");
                        }
                    }
                    Err(e) => log::warn!("virtio-net: reading a frame: {e}"),
                }
            }
            queue::complete(q, chain.head, 0)?;
        }
        Ok(true)
    })?;
    Ok((drained.notify, throttled))
}

/// Why [`process_rx`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxState {
    /// The host has no more frames.
    Drained,
    /// The guest has no more buffers; frames wait in the tap, and the
    /// guest will notify the receive queue when it adds buffers.
    NoBuffers,
    /// The receive rate limiter refused; its timer will fire.
    Throttled,
}

/// What a receive queue carries from one [`process_rx`] call to the next.
#[derive(Default)]
pub struct RxBacklog {
    /// A frame read from the host but refused by the rate limiter.
    pub frame: Option<Vec<u8>>,
    /// A chain taken from the ring (and walked) but not filled, because
    /// the host had no frame: the next call fills it first, instead of
    /// walking it again. The driver may not change a chain it made
    /// available, and a reset drops the queue with it.
    chain: Option<Chain>,
}

/// Most buffers of one receive chain used for the direct read; Linux
/// offers at most MAX_SKB_FRAGS + 2 (19) per chain.
const MAX_IOV: usize = 64;

/// Deliver frames from `io` until it or the guest's buffers run out.
/// `backlog` carries what one call leaves to the next.
pub fn process_rx(
    mem: &GuestMemoryMmap,
    q: &mut Queue,
    io: &mut dyn FrameIo,
    backlog: &mut RxBacklog,
) -> Result<(bool, RxState), QueueError> {
    process_rx_limited(mem, q, io, backlog, None)
}

/// One frame from `io` into a host buffer (`None`: no frame).
fn read_frame(io: &mut dyn FrameIo) -> Option<Vec<u8>> {
    // One byte more than the largest frame, to see a longer one.
    let mut buf = vec![0u8; MAX_FRAME + 1];
    loop {
        match io.recv(&mut buf) {
            Ok(n) if n <= MAX_FRAME => {
                buf.truncate(n);
                return Some(buf);
            }
            Ok(n) => log::warn!("virtio-net: dropped a {n}-byte frame from the tap"),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                if e.kind() != io::ErrorKind::WouldBlock {
                    log::warn!("virtio-net: tap read failed: {e}");
                }
                return None;
            }
        }
    }
}

/// Outcome of filling one chain.
enum Fill {
    /// `n` bytes of frame are in the chain's buffers; `num_buffers` too
    /// if the flag is set.
    Done(usize, bool),
    /// The frame was dropped; the chain stays available.
    Dropped,
    Stop(RxState),
}

/// Read one frame from `io` straight into `chain`'s writable buffers.
fn fill_direct(mem: &GuestMemoryMmap, chain: &Chain, io: &mut dyn FrameIo, hdr_len: usize) -> Fill {
    let empty = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut iov = [empty; MAX_IOV + 1];
    let mut cnt = 0;
    let mut cap = 0u64;
    'segs: for seg in &chain.writable {
        for slice in mem.get_slices(GuestAddress(seg.addr), seg.len as usize) {
            let Ok(slice) = slice else {
                // chain::walk checked every buffer is in guest memory.
                break 'segs;
            };
            if cnt == MAX_IOV {
                break 'segs;
            }
            iov[cnt] = libc::iovec {
                iov_base: slice.ptr_guard_mut().as_ptr().cast(),
                iov_len: slice.len(),
            };
            cap += slice.len() as u64;
            cnt += 1;
        }
    }
    // A byte past the guest's buffers: the tap returns what it copied, so
    // a frame that fills this one too did not fit.
    let mut past = [0u8; 1];
    iov[cnt] = libc::iovec {
        iov_base: past.as_mut_ptr().cast(),
        iov_len: past.len(),
    };
    loop {
        // SAFETY: each iovec but the last is a piece of guest memory
        // (checked by chain::walk and vm-memory), mapped for the VM's
        // lifetime, which outlives this call, and given by the driver to
        // the device to write; the last is `past`, alive until we return.
        match unsafe { io.recv_iov(&iov[..=cnt]) } {
            Ok(n) if n < hdr_len || n as u64 > cap => {
                log::warn!("virtio-net: dropped a {n}-byte frame: receive buffer of {cap} bytes");
                return Fill::Dropped;
            }
            Ok(n) => {
                // num_buffers (header bytes 10..12) straight into the
                // first buffer when it holds the header, as it always
                // does with Linux. A legacy header has none.
                if hdr_len < NET_HDR_LEN {
                    return Fill::Done(n, true);
                }
                if iov[0].iov_len >= NET_HDR_LEN {
                    let p = iov[0].iov_base.cast::<u8>();
                    // SAFETY: the first buffer is guest memory (see
                    // above) at least NET_HDR_LEN bytes long.
                    unsafe {
                        std::ptr::write_volatile(p.add(10), 1);
                        std::ptr::write_volatile(p.add(11), 0);
                    }
                    return Fill::Done(n, true);
                }
                return Fill::Done(n, false);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                if e.kind() != io::ErrorKind::WouldBlock {
                    log::warn!("virtio-net: tap read failed: {e}");
                }
                return Fill::Stop(RxState::Drained);
            }
        }
    }
}

/// Deliver one frame through a host buffer (rate limited, or held back).
fn fill_copy(
    bufs: &Buffers<'_>,
    io: &mut dyn FrameIo,
    pending: &mut Option<Vec<u8>>,
    limiter: Option<&mut RateLimiter>,
    hdr_len: usize,
) -> Fill {
    let frame = match pending.take().or_else(|| read_frame(io)) {
        Some(f) => f,
        None => return Fill::Stop(RxState::Drained),
    };
    if let Some(l) = limiter {
        if !l.consume(frame.len() as u64) {
            *pending = Some(frame);
            return Fill::Stop(RxState::Throttled);
        }
    }
    if frame.len() < hdr_len || frame.len() as u64 > bufs.writable_len() {
        log::warn!(
            "virtio-net: dropped a {}-byte frame: receive buffer of {} bytes",
            frame.len(),
            bufs.writable_len()
        );
        return Fill::Dropped;
    }
    match bufs.write(0, &frame) {
        // A legacy header has no num_buffers to set.
        Ok(n) => Fill::Done(n, hdr_len < NET_HDR_LEN),
        Err(e) => {
            log::warn!("virtio-net: writing a received frame: {e}");
            Fill::Dropped
        }
    }
}

/// [`process_rx`] with an optional receive rate limiter.
pub fn process_rx_limited(
    mem: &GuestMemoryMmap,
    q: &mut Queue,
    io: &mut dyn FrameIo,
    backlog: &mut RxBacklog,
    limiter: Option<&mut RateLimiter>,
) -> Result<(bool, RxState), QueueError> {
    process_rx_hdr(mem, q, io, backlog, limiter, NET_HDR_LEN)
}

/// [`process_rx_limited`] with a header of `hdr_len` bytes: a legacy
/// driver's 10-byte header has no `num_buffers`.
pub fn process_rx_hdr(
    mem: &GuestMemoryMmap,
    q: &mut Queue,
    io: &mut dyn FrameIo,
    backlog: &mut RxBacklog,
    mut limiter: Option<&mut RateLimiter>,
    hdr_len: usize,
) -> Result<(bool, RxState), QueueError> {
    let mut b = queue::Batch::new(mem, q)?;
    let state = loop {
        if limiter.as_deref().is_some_and(RateLimiter::is_blocked) {
            break RxState::Throttled;
        }
        // A chain first: without one, frames stay in the tap.
        let chain = match backlog.chain.take() {
            Some(c) => c,
            None => match queue::pop_chain(mem, &mut b)? {
                Some(c) => c,
                None => {
                    // Ask for a notification; buffers may have come
                    // meanwhile.
                    if b.enable_notification()? {
                        continue;
                    }
                    break RxState::NoBuffers;
                }
            },
        };
        let bufs = Buffers { mem, chain: &chain };
        let fill = if backlog.frame.is_some() || limiter.is_some() {
            fill_copy(
                &bufs,
                io,
                &mut backlog.frame,
                limiter.as_deref_mut(),
                hdr_len,
            )
        } else {
            fill_direct(mem, &chain, io, hdr_len)
        };
        match fill {
            Fill::Done(n, header_done) => {
                // num_buffers: one buffer per frame without
                // VIRTIO_NET_F_MRG_RXBUF.
                if !header_done {
                    let _ = bufs.write(10, &1u16.to_le_bytes());
                }
                queue::complete(&mut b, chain.head, n as u32)?;
            }
            // The chain serves the next frame.
            Fill::Dropped => backlog.chain = Some(chain),
            Fill::Stop(state) => {
                backlog.chain = Some(chain);
                break state;
            }
        }
    };
    let notify = b.finish()?;
    Ok((notify, state))
}

/// Read and drop every frame the tap holds (the link is down).
pub(super) fn discard_rx(io: &mut dyn FrameIo) -> usize {
    let mut buf = [0u8; 2048];
    let mut n = 0;
    loop {
        match io.recv(&mut buf) {
            Ok(_) => n += 1,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return n,
        }
    }
}
