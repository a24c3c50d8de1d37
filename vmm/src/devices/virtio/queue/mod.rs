//! Taking chains off a split virtqueue and giving them back.
//!
//! `virtio_queue::Queue` keeps the queue's configuration and ring indices;
//! the rings themselves are accessed here through a [`Batch`]: a view of
//! one queue's available and used rings made once per drain (each ring
//! must lie wholly inside one guest memory region, as the spec's
//! contiguous rings do), so that each request costs plain loads and
//! stores instead of a guest memory region lookup per ring access.
//!
//! Within a batch the available index is read only when the entries seen
//! so far are used up (each read refuses an index more than a queue's
//! worth ahead, which would otherwise make the device re-serve stale
//! entries), used elements are written as requests complete and the used
//! index is published once, before notifications are re-enabled and when
//! the batch ends. Whether the driver wants an interrupt is decided when
//! the batch ends, over everything it completed (EVENT_IDX honoured as
//! Linux's `vring_need_event`). Every failure is a [`QueueError`]: the
//! driver broke the ring protocol, so the device stops the queue and asks
//! for a reset (NEEDS_RESET).

use std::num::Wrapping;
use std::sync::atomic::{fence, Ordering};

use virtio_queue::{Queue, QueueT};
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, GuestRegionMmap,
    MemoryRegionAddress, VolatileSlice,
};

use super::chain::{self, Chain, ChainError};
use crate::devices::GuestMemoryMmap;

/// `VRING_USED_F_NO_NOTIFY`: the device asks the driver not to notify.
const USED_F_NO_NOTIFY: u16 = 1;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("available ring index is invalid (more than a queue's worth of new entries)")]
    AvailIndex,
    #[error("virtqueue ring access failed: {0}")]
    Ring(String),
    #[error("descriptor chain at head {head} is malformed")]
    Chain {
        head: u16,
        #[source]
        source: ChainError,
    },
}

fn ring_err(e: virtio_queue::Error) -> QueueError {
    match e {
        virtio_queue::Error::InvalidAvailRingIndex => QueueError::AvailIndex,
        other => QueueError::Ring(other.to_string()),
    }
}

fn mem_err(e: vm_memory::volatile_memory::Error) -> QueueError {
    QueueError::Ring(e.to_string())
}

/// `[addr, addr + len)` as one slice of `region`, if it lies wholly inside.
fn ring_slice(
    region: Option<&GuestRegionMmap>,
    addr: u64,
    len: usize,
) -> Option<VolatileSlice<'_>> {
    let region = region?;
    let off = addr.checked_sub(region.start_addr().0)?;
    if off.checked_add(len as u64)? > region.len() {
        return None;
    }
    region.get_slice(MemoryRegionAddress(off), len).ok()
}

/// One queue's rings, checked once, and the queue's indices, while a
/// device serves it. Dropping it publishes the used index.
pub struct Batch<'m, 'q> {
    queue: &'q mut Queue,
    /// flags, idx, ring[size], used_event.
    avail: VolatileSlice<'m>,
    /// flags, idx, ring[size] of (id, len), avail_event.
    used: VolatileSlice<'m>,
    size: u16,
    /// The available index as last read.
    avail_idx: Wrapping<u16>,
    /// `next_used` when the interrupt decision was last made.
    signalled: Wrapping<u16>,
    /// Used elements written whose index is not yet stored.
    unpublished: bool,
}

impl<'m, 'q> Batch<'m, 'q> {
    /// Check that the queue is ready and each ring lies inside one guest
    /// memory region.
    pub fn new(mem: &'m GuestMemoryMmap, queue: &'q mut Queue) -> Result<Self, QueueError> {
        let size = queue.size();
        if !queue.ready() || size == 0 {
            return Err(QueueError::Ring("the queue is not ready".into()));
        }
        let n = usize::from(size);
        let avail_at = queue.avail_ring();
        let region = mem.find_region(GuestAddress(avail_at));
        let avail = ring_slice(region, avail_at, 6 + 2 * n).ok_or_else(|| {
            QueueError::Ring("the available ring is not inside one guest memory region".into())
        })?;
        // Nearly always in the same region as the available ring.
        let used_at = queue.used_ring();
        let used = ring_slice(region, used_at, 6 + 8 * n)
            .or_else(|| ring_slice(mem.find_region(GuestAddress(used_at)), used_at, 6 + 8 * n))
            .ok_or_else(|| {
                QueueError::Ring("the used ring is not inside one guest memory region".into())
            })?;
        let start = Wrapping(queue.next_used());
        Ok(Batch {
            avail_idx: Wrapping(queue.next_avail()),
            queue,
            avail,
            used,
            size,
            signalled: start,
            unpublished: false,
        })
    }

    /// Un-pop the last chain popped (it is served later).
    pub fn go_to_previous_position(&mut self) {
        let next = Wrapping(self.queue.next_avail()) - Wrapping(1);
        self.queue.set_next_avail(next.0);
    }

    /// Read the driver's available index, refusing one that runs more
    /// than a queue's worth ahead of what the device has taken.
    fn read_avail_idx(&mut self) -> Result<(), QueueError> {
        let idx = Wrapping(u16::from_le(
            self.avail.load(2, Ordering::Acquire).map_err(mem_err)?,
        ));
        if (idx - Wrapping(self.queue.next_avail())).0 > self.size {
            return Err(QueueError::AvailIndex);
        }
        self.avail_idx = idx;
        Ok(())
    }

    /// The next available head, or `None` if the driver offered nothing
    /// new. The available index is read again only once the entries seen
    /// at the last read are taken.
    fn pop_head(&mut self) -> Result<Option<u16>, QueueError> {
        let next = Wrapping(self.queue.next_avail());
        if next == self.avail_idx {
            self.read_avail_idx()?;
            if next == self.avail_idx {
                return Ok(None);
            }
        }
        let slot = usize::from(next.0 % self.size);
        let head = u16::from_le(
            self.avail
                .load(4 + 2 * slot, Ordering::Acquire)
                .map_err(mem_err)?,
        );
        self.queue.set_next_avail((next + Wrapping(1)).0);
        Ok(Some(head))
    }

    /// Write a used element for chain `head` with `len` bytes written.
    fn add_used(&mut self, head: u16, len: u32) -> Result<(), QueueError> {
        if head >= self.size {
            return Err(QueueError::Ring(format!(
                "used element for descriptor {head}, outside a table of {}",
                self.size
            )));
        }
        let next = Wrapping(self.queue.next_used());
        let off = 4 + 8 * usize::from(next.0 % self.size);
        self.used
            .store(u32::from(head).to_le(), off, Ordering::Relaxed)
            .map_err(mem_err)?;
        self.used
            .store(len.to_le(), off + 4, Ordering::Relaxed)
            .map_err(mem_err)?;
        self.queue.set_next_used((next + Wrapping(1)).0);
        self.unpublished = true;
        Ok(())
    }

    /// Store the used index if elements were written since the last
    /// store; the release orders the elements before it.
    fn publish(&mut self) -> Result<(), QueueError> {
        if self.unpublished {
            self.used
                .store(self.queue.next_used().to_le(), 2, Ordering::Release)
                .map_err(mem_err)?;
            self.unpublished = false;
        }
        Ok(())
    }

    /// Ask the driver not to notify (without EVENT_IDX; with it, the
    /// driver stops notifying by itself after one notification).
    pub fn disable_notification(&mut self) -> Result<(), QueueError> {
        if !self.queue.event_idx_enabled() {
            self.used
                .store(USED_F_NO_NOTIFY.to_le(), 0, Ordering::Relaxed)
                .map_err(mem_err)?;
        }
        Ok(())
    }

    /// Publish the used index and ask the driver to notify again; true
    /// if it offered chains meanwhile (serve them: it may not notify).
    pub fn enable_notification(&mut self) -> Result<bool, QueueError> {
        self.publish()?;
        if self.queue.event_idx_enabled() {
            // avail_event: notify once the driver adds the entry after
            // the last one taken (not the last one seen: those are
            // pending and must not be skipped).
            let off = 4 + 8 * usize::from(self.size);
            self.used
                .store(self.queue.next_avail().to_le(), off, Ordering::Relaxed)
                .map_err(mem_err)?;
        } else {
            self.used
                .store(0u16, 0, Ordering::Relaxed)
                .map_err(mem_err)?;
        }
        // The driver's idx store and our flag store above must not pass
        // each other: it re-reads the flag after storing idx, we re-read
        // idx after storing the flag.
        fence(Ordering::SeqCst);
        let idx = u16::from_le(self.avail.load(2, Ordering::Relaxed).map_err(mem_err)?);
        Ok(idx != self.queue.next_avail())
    }

    /// Publish the used index and decide whether the driver wants an
    /// interrupt for the elements completed since the last decision
    /// (with EVENT_IDX: whether its `used_event` lies among them).
    pub fn finish(&mut self) -> Result<bool, QueueError> {
        self.publish()?;
        let new = Wrapping(self.queue.next_used());
        let old = std::mem::replace(&mut self.signalled, new);
        if new == old {
            return Ok(false);
        }
        if !self.queue.event_idx_enabled() {
            return Ok(true);
        }
        // The used index store must be visible before used_event is read
        // (the driver stores used_event, then re-reads the used index).
        fence(Ordering::SeqCst);
        let off = 4 + 2 * usize::from(self.size);
        let event = Wrapping(u16::from_le(
            self.avail.load(off, Ordering::Relaxed).map_err(mem_err)?,
        ));
        Ok(new - event - Wrapping(1) < new - old)
    }
}

impl Drop for Batch<'_, '_> {
    fn drop(&mut self) {
        // Cannot fail: the used ring was checked when the batch was made.
        let _ = self.publish();
    }
}

/// The next available chain, or `None` if the driver offered nothing new.
/// Returns the chain by value; a device that serves many requests keeps
/// one [`Chain`] and uses [`pop_chain_into`] instead.
pub fn pop_chain(mem: &GuestMemoryMmap, b: &mut Batch) -> Result<Option<Chain>, QueueError> {
    let mut chain = Chain::default();
    Ok(pop_chain_into(mem, b, &mut chain)?.then_some(chain))
}

/// Walk the next available chain into `chain`, the caller's slot (its
/// lists are reused: no copy of the chain and no zeroing per request).
/// False if the driver offered nothing new; then `chain` is unchanged.
/// On an error `chain` holds part of the walk and must not be served.
pub fn pop_chain_into(
    mem: &GuestMemoryMmap,
    b: &mut Batch,
    chain: &mut Chain,
) -> Result<bool, QueueError> {
    let Some(head) = b.pop_head()? else {
        return Ok(false);
    };
    chain::walk_into(mem, b.queue.desc_table(), b.size, head, chain)
        .map(|()| true)
        .map_err(|source| QueueError::Chain { head, source })
}

/// Suppress driver notifications while polling. Without EVENT_IDX,
/// `disable_notification` sets VIRTQ_USED_F_NO_NOTIFY; with it (where
/// `virtio_queue` leaves the ring alone), the used ring's avail_event is
/// set one behind the next index, which the driver's next index never
/// crosses (virtio 1.2, 2.7.10), until `enable_notification` sets it back.
pub fn suppress_notifications(mem: &GuestMemoryMmap, queue: &mut Queue) {
    let _ = queue.disable_notification(mem);
    if queue.event_idx_enabled() {
        let at = queue
            .used_ring()
            .checked_add(4 + 8 * u64::from(queue.size()))
            .map(GuestAddress);
        if let Some(at) = at {
            let v = queue.next_avail().wrapping_sub(1);
            let _ = mem.store(v.to_le(), at, Ordering::Release);
        }
    }
}

/// True if the driver offered chains not yet popped.
pub fn has_pending(mem: &GuestMemoryMmap, queue: &Queue) -> Result<bool, QueueError> {
    let avail = queue.avail_idx(mem, Ordering::Acquire).map_err(ring_err)?;
    Ok(avail.0 != queue.next_avail())
}

/// Return chain `head` with `len` bytes written. The driver sees it once
/// the batch publishes the used index.
pub fn complete(b: &mut Batch, head: u16, len: u32) -> Result<(), QueueError> {
    b.add_used(head, len)
}

/// What [`drain`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// The queue was emptied (false: `serve` stopped early).
    pub all: bool,
    /// The driver wants an interrupt for what was completed.
    pub notify: bool,
}

/// Serve `queue` until it is empty, with driver notifications suppressed
/// while serving: `serve` handles what is there (returning false if it
/// stopped early, e.g. rate-limited); then notifications are re-enabled
/// and the queue re-checked, closing the race with a driver adding more.
pub fn drain<'m, F>(
    mem: &'m GuestMemoryMmap,
    queue: &mut Queue,
    mut serve: F,
) -> Result<Drained, QueueError>
where
    F: FnMut(&mut Batch<'m, '_>) -> Result<bool, QueueError>,
{
    let mut b = Batch::new(mem, queue)?;
    let all = loop {
        b.disable_notification()?;
        if !serve(&mut b)? {
            break false;
        }
        if !b.enable_notification()? {
            break true;
        }
    };
    let notify = b.finish()?;
    Ok(Drained { all, notify })
}

#[cfg(test)]
mod tests;
