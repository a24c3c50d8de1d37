//! Taking chains off a split virtqueue and giving them back.
//!
//! `virtio_queue::Queue` keeps the ring indices; [`pop_chain`] reads the
//! next available head through it (refusing an available index that runs
//! more than a queue's worth ahead, which would otherwise make the device
//! re-serve stale entries) and walks the chain with [`chain::walk`].
//! Every failure is a [`QueueError`]: the driver broke the ring protocol,
//! so the device stops the queue and asks for a reset (NEEDS_RESET).

use std::sync::atomic::Ordering;

use virtio_queue::{Queue, QueueOwnedT, QueueT};

use super::chain::{self, Chain, ChainError};
use crate::memory::GuestMemoryMmap;

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

/// The next available chain, or `None` if the driver offered nothing new.
pub fn pop_chain(mem: &GuestMemoryMmap, queue: &mut Queue) -> Result<Option<Chain>, QueueError> {
    let head = {
        let mut iter = queue.iter(mem).map_err(ring_err)?;
        match iter.next() {
            Some(c) => c.head_index(),
            None => return Ok(None),
        }
    };
    chain::walk(mem, queue.desc_table(), queue.size(), head)
        .map(Some)
        .map_err(|source| QueueError::Chain { head, source })
}

/// True if the driver offered chains not yet popped.
pub fn has_pending(mem: &GuestMemoryMmap, queue: &Queue) -> Result<bool, QueueError> {
    let avail = queue.avail_idx(mem, Ordering::Acquire).map_err(ring_err)?;
    Ok(avail.0 != queue.next_avail())
}

/// Return chain `head` with `len` bytes written.
pub fn complete(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    head: u16,
    len: u32,
) -> Result<(), QueueError> {
    queue.add_used(mem, head, len).map_err(ring_err)
}

/// Whether the driver wants an interrupt for what was completed since the
/// last call (honours EVENT_IDX).
pub fn needs_interrupt(mem: &GuestMemoryMmap, queue: &mut Queue) -> Result<bool, QueueError> {
    queue.needs_notification(mem).map_err(ring_err)
}

/// Serve `queue` until it is empty, with driver notifications suppressed
/// while serving: `serve` handles what is there (returning false if it
/// stopped early, e.g. rate-limited); then notifications are re-enabled
/// and the queue re-checked, closing the race with a driver adding more.
pub fn drain<F>(mem: &GuestMemoryMmap, queue: &mut Queue, mut serve: F) -> Result<bool, QueueError>
where
    F: FnMut(&mut Queue) -> Result<bool, QueueError>,
{
    loop {
        queue.disable_notification(mem).map_err(ring_err)?;
        if !serve(queue)? {
            return Ok(false);
        }
        if !queue.enable_notification(mem).map_err(ring_err)? {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_utils::{desc, mem_two_regions, GuestQueue};

    #[test]
    fn pops_in_order_and_reports_used() {
        let mem = mem_two_regions();
        let gq = GuestQueue::new(&mem, 0x1000, 4);
        gq.set_desc(0, desc(0x10000, 8, 0, 0));
        gq.set_desc(1, desc(0x10008, 8, 2, 0));
        gq.push_avail(1);
        gq.push_avail(0);
        let mut q = gq.queue();
        assert!(has_pending(&mem, &q).unwrap());
        let c = pop_chain(&mem, &mut q).unwrap().unwrap();
        assert_eq!(c.head, 1);
        complete(&mem, &mut q, c.head, 8).unwrap();
        let c = pop_chain(&mem, &mut q).unwrap().unwrap();
        assert_eq!(c.head, 0);
        assert!(pop_chain(&mem, &mut q).unwrap().is_none());
        assert_eq!(gq.used_idx(), 1);
        assert_eq!(gq.used_elem(0), (1, 8));
    }

    #[test]
    fn avail_index_beyond_queue_size_is_an_error() {
        let mem = mem_two_regions();
        let gq = GuestQueue::new(&mem, 0x1000, 4);
        gq.set_avail_idx(5);
        let mut q = gq.queue();
        assert!(matches!(
            pop_chain(&mem, &mut q),
            Err(QueueError::AvailIndex)
        ));
        // A head index outside the table.
        let gq = GuestQueue::new(&mem, 0x1000, 4);
        gq.push_avail(9);
        let mut q = gq.queue();
        assert!(matches!(
            pop_chain(&mem, &mut q),
            Err(QueueError::Chain { head: 9, .. })
        ));
        // Completing a head outside the table.
        assert!(complete(&mem, &mut q, 4, 0).is_err());
    }
}
