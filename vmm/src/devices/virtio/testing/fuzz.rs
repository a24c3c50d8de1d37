//! What the fuzz targets share (`vmm/fuzz`): a fixed guest layout over
//! memory with awkward regions, the input format of the queue targets, and
//! the invariants checked after a queue was served without an error. Each
//! target uses only part of it.

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::GuestQueue;
use crate::devices::GuestMemoryMmap;

/// Where the descriptor table and the rings are, for any queue size.
pub const DESC: u64 = 0x0;
pub const AVAIL: u64 = 0x1000;
pub const USED: u64 = 0x2000;

/// [0, 0x10000) and [0x10000, 0x20000) touch; [0x30000, 0x40000) is
/// after a hole. The first 0x20000 bytes of `image` are written at 0.
pub fn memory(image: &[u8]) -> GuestMemoryMmap {
    let mem = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x10000),
        (GuestAddress(0x10000), 0x10000),
        (GuestAddress(0x30000), 0x10000),
    ])
    .expect("fixed layout");
    let n = image.len().min(0x20000);
    mem.write_slice(&image[..n], GuestAddress(0)).expect("fits");
    mem
}

/// The queue of `size` entries (a power of two) at the fixed layout, as
/// memory holds it.
pub fn guest_queue(mem: &GuestMemoryMmap, size: u16) -> GuestQueue<'_> {
    GuestQueue::at(mem, size, DESC, AVAIL, USED)
}

/// The device-side queue of [`guest_queue`], ready.
pub fn queue(mem: &GuestMemoryMmap, size: u16) -> Queue {
    guest_queue(mem, size).queue()
}

/// The input of the queue targets: the queue size (a power of two up to
/// 256, from byte 0), the available index (bytes 1 and 2), `n` bytes of
/// the target's own parameters, and the guest memory image (the rest).
/// None if the input is shorter than that.
pub fn queue_input(data: &[u8], n: usize) -> Option<(u16, u16, &[u8], &[u8])> {
    if data.len() < 3 + n {
        return None;
    }
    let size = 1u16 << (data[0] % 9);
    let avail_idx = u16::from_le_bytes([data[1], data[2]]);
    Some((size, avail_idx, &data[3..3 + n], &data[3 + n..]))
}

/// [`memory`] from `image` with the rings' indices set: the available
/// index to `avail_idx`, the used index to 0.
pub fn ring_memory(image: &[u8], avail_idx: u16) -> GuestMemoryMmap {
    let mem = memory(image);
    mem.write_obj(avail_idx, GuestAddress(AVAIL + 2))
        .expect("fixed layout");
    mem.write_obj(0u16, GuestAddress(USED + 2))
        .expect("fixed layout");
    mem
}

/// After a queue of `size` entries was served without an error, no more
/// chains may be complete than were offered. Unless the available index
/// itself changed: a device-writable buffer may lie on the ring, and then
/// the device's own writes (random bytes from virtio-rng, disk data) offer
/// more; [`assert_used_were_taken`] still holds then.
pub fn assert_no_more_used_than_offered(mem: &GuestMemoryMmap, avail_idx: u16, size: u16) {
    let gq = guest_queue(mem, size);
    if gq.avail_idx_in_memory() != avail_idx {
        return;
    }
    let used = gq.used_idx();
    assert!(
        used <= avail_idx.min(size),
        "completed {used} of {avail_idx}"
    );
}

/// After serving without an error, the used index the driver sees is the
/// device's count of completions, and the device completed no chain it
/// did not take (both counts start at 0; a run takes far fewer than
/// 65536).
pub fn assert_used_were_taken(mem: &GuestMemoryMmap, q: &Queue) {
    let used = guest_queue(mem, q.size()).used_idx();
    assert_eq!(used, q.next_used(), "published used index");
    assert!(
        q.next_used() <= q.next_avail(),
        "completed {} of {} taken",
        q.next_used(),
        q.next_avail()
    );
}
