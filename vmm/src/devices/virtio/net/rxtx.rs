//! Frames between the virtqueues and the host side.
//!
//! Transmit: each chain's readable bytes are one frame with its 12-byte
//! virtio-net header, handed whole to the tap (which understands the
//! header, GSO included). Receive: each frame read from the tap (header
//! included) fills one chain's writable buffers, with `num_buffers` set to
//! 1 (no mergeable buffers). Frames that do not fit are dropped with a log
//! line, not truncated.

use std::io;

use virtio_queue::{Queue, QueueOwnedT, QueueT};

use super::NET_HDR_LEN;
use crate::devices::virtio::chain::Buffers;
use crate::devices::virtio::queue::{self, QueueError};
use crate::devices::virtio::rate_limiter::RateLimiter;
use crate::memory::GuestMemoryMmap;

/// Largest frame with its header: a 64 KiB GSO super-frame (Linux's
/// GSO_MAX_SIZE counts the Ethernet header) with room for a VLAN tag.
pub const MAX_FRAME: usize = NET_HDR_LEN + 65536 + 18;

/// The host side of a NIC.
pub trait FrameIo {
    /// Send one frame (with header).
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;
    /// Receive one frame (with header) into `buf`; `WouldBlock` if none.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
}

impl FrameIo for crate::net::tap::Tap {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.write(frame).map(drop)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read(buf)
    }
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
    queue::drain(mem, q, |q| {
        while let Some(chain) = queue::pop_chain(mem, q)? {
            let bufs = Buffers { mem, chain: &chain };
            let len = bufs.readable_len();
            if let Some(l) = limiter.as_deref_mut() {
                if !l.consume(len) {
                    q.go_to_previous_position();
                    throttled = true;
                    return Ok(false);
                }
            }
            if len < hdr_len as u64 || len > MAX_FRAME as u64 {
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
            queue::complete(mem, q, chain.head, 0)?;
        }
        Ok(true)
    })?;
    let notify = queue::needs_interrupt(mem, q)?;
    Ok((notify, throttled))
}

/// Why [`process_rx`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxState {
    /// The host has no more frames.
    Drained,
    /// The guest has no more buffers; a frame waits in `pending`, and the
    /// guest will notify the receive queue when it adds buffers.
    NoBuffers,
}

/// Deliver frames from `io` until it or the guest's buffers run out.
/// `pending` holds a frame read but not yet delivered.
pub fn process_rx(
    mem: &GuestMemoryMmap,
    q: &mut Queue,
    io: &mut dyn FrameIo,
    pending: &mut Option<Vec<u8>>,
) -> Result<(bool, RxState), QueueError> {
    process_rx_hdr(mem, q, io, pending, NET_HDR_LEN)
}

/// [`process_rx`] with a header of `hdr_len` bytes: a legacy driver's
/// 10-byte header has no `num_buffers`.
pub fn process_rx_hdr(
    mem: &GuestMemoryMmap,
    q: &mut Queue,
    io: &mut dyn FrameIo,
    pending: &mut Option<Vec<u8>>,
    hdr_len: usize,
) -> Result<(bool, RxState), QueueError> {
    let mut used = false;
    // One receive buffer per call, not per frame: zeroing 64 KiB for every
    // frame dominated the receive path's profile.
    let mut scratch: Vec<u8> = Vec::new();
    let state = loop {
        let mut frame = match pending.take() {
            Some(f) => f,
            None => {
                if scratch.is_empty() {
                    scratch = vec![0u8; MAX_FRAME];
                }
                match io.recv(&mut scratch) {
                    Ok(n) => scratch[..n.min(MAX_FRAME)].to_vec(),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break RxState::Drained,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        log::warn!("virtio-net: tap read failed: {e}");
                        break RxState::Drained;
                    }
                }
            }
        };
        if frame.len() < hdr_len {
            log::warn!(
                "virtio-net: dropped a {}-byte frame from the tap",
                frame.len()
            );
            continue;
        }
        let chain = match queue::pop_chain(mem, q)? {
            Some(c) => c,
            None => {
                *pending = Some(frame);
                // Ask for a notification; buffers may have come meanwhile.
                if q.enable_notification(mem)
                    .map_err(|e| QueueError::Ring(e.to_string()))?
                {
                    continue;
                }
                break RxState::NoBuffers;
            }
        };
        let bufs = Buffers { mem, chain: &chain };
        if bufs.writable_len() < frame.len() as u64 {
            log::warn!(
                "virtio-net: dropped a {}-byte frame: receive buffer of {} bytes",
                frame.len(),
                bufs.writable_len()
            );
            q.go_to_previous_position();
            continue;
        }
        // num_buffers: one buffer per frame without VIRTIO_NET_F_MRG_RXBUF.
        if hdr_len >= NET_HDR_LEN {
            frame[10..12].copy_from_slice(&1u16.to_le_bytes());
        }
        let n = bufs.write(0, &frame).unwrap_or(0);
        queue::complete(mem, q, chain.head, n as u32)?;
        used = true;
    };
    let notify = used && queue::needs_interrupt(mem, q)?;
    Ok((notify, state))
}
