//! The buffers of a descriptor chain as lists of guest segments, kept
//! without a heap allocation in the common case.
//!
//! [`Segments`] holds up to [`INLINE_SEGMENTS`] segments inline and only
//! moves them to a `Vec` when a chain has more (a request with many
//! scattered pages); it dereferences to `&[Segment]`, so users read it as
//! a slice. [`pieces`] cuts a byte range of such a stream into per-segment
//! pieces, as an iterator (no list is built).

use std::ops::Deref;

/// A guest buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub addr: u64,
    pub len: u32,
}

/// Segments kept inline before a [`Segments`] spills to the heap. Linux's
/// virtio-blk sends a header, the data (one segment per run of guest
/// pages) and a status byte; virtio-net RX chains are one or two buffers.
pub const INLINE_SEGMENTS: usize = 8;

/// A list of segments: inline up to [`INLINE_SEGMENTS`], then on the heap.
#[derive(Clone, Debug, Default)]
pub struct Segments {
    /// Segments used in `inline` while `spill` is empty.
    len: usize,
    inline: [Segment; INLINE_SEGMENTS],
    /// Every segment, once there were more than fit inline.
    spill: Vec<Segment>,
}

impl Segments {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, seg: Segment) {
        if self.spill.is_empty() {
            if let Some(slot) = self.inline.get_mut(self.len) {
                *slot = seg;
                self.len += 1;
                return;
            }
            self.spill.reserve(2 * INLINE_SEGMENTS);
            self.spill.extend_from_slice(&self.inline);
        }
        self.spill.push(seg);
    }

    /// Empty the list (keeping a spill buffer's capacity).
    pub fn clear(&mut self) {
        self.len = 0;
        self.spill.clear();
    }

    pub fn as_slice(&self) -> &[Segment] {
        if self.spill.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spill
        }
    }

    /// True if the segments went to the heap.
    pub fn spilled(&self) -> bool {
        !self.spill.is_empty()
    }

    /// Heap bytes held (kept by [`Segments::clear`] for reuse).
    pub fn heap_bytes(&self) -> usize {
        self.spill.capacity() * std::mem::size_of::<Segment>()
    }
}

impl Deref for Segments {
    type Target = [Segment];

    fn deref(&self) -> &[Segment] {
        self.as_slice()
    }
}

impl<'a> IntoIterator for &'a Segments {
    type Item = &'a Segment;
    type IntoIter = std::slice::Iter<'a, Segment>;

    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl PartialEq for Segments {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Segments {}

impl FromIterator<Segment> for Segments {
    fn from_iter<I: IntoIterator<Item = Segment>>(iter: I) -> Self {
        let mut s = Self::new();
        for seg in iter {
            s.push(seg);
        }
        s
    }
}

/// Total length of `segs`.
pub fn total_len(segs: &[Segment]) -> u64 {
    segs.iter().map(|s| u64::from(s.len)).sum()
}

/// The pieces `(guest address, length)` of `[offset, offset + len)` of the
/// stream made of `segs`, in order (fewer bytes if the stream is shorter).
pub fn pieces(segs: &[Segment], offset: u64, len: usize) -> Pieces<'_> {
    Pieces {
        segs: segs.iter(),
        skip: offset,
        left: len,
    }
}

/// Iterator returned by [`pieces`].
#[derive(Clone, Debug)]
pub struct Pieces<'a> {
    segs: std::slice::Iter<'a, Segment>,
    /// Bytes still to skip before the range starts.
    skip: u64,
    /// Bytes of the range not yet returned.
    left: usize,
}

impl Iterator for Pieces<'_> {
    type Item = (u64, usize);

    fn next(&mut self) -> Option<(u64, usize)> {
        while self.left > 0 {
            let seg = self.segs.next()?;
            let seg_len = u64::from(seg.len);
            if self.skip >= seg_len {
                self.skip -= seg_len;
                continue;
            }
            // At most u32::MAX: fits usize on the 64-bit hosts KVM runs on.
            let n = ((seg_len - self.skip) as usize).min(self.left);
            // The walk checked `addr + len` is inside guest memory, so this
            // does not overflow.
            let addr = seg.addr + self.skip;
            self.skip = 0;
            self.left -= n;
            return Some((addr, n));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(addr: u64, len: u32) -> Segment {
        Segment { addr, len }
    }

    #[test]
    fn segments_stay_inline_then_spill_in_order() {
        let mut s = Segments::new();
        for i in 0..INLINE_SEGMENTS as u64 {
            s.push(seg(i * 0x1000, 1));
        }
        assert!(!s.spilled());
        assert_eq!(s.len(), INLINE_SEGMENTS);
        s.push(seg(0xdead000, 7));
        assert!(s.spilled());
        assert_eq!(s.len(), INLINE_SEGMENTS + 1);
        let addrs: Vec<u64> = s.iter().map(|g| g.addr).collect();
        let mut want: Vec<u64> = (0..INLINE_SEGMENTS as u64).map(|i| i * 0x1000).collect();
        want.push(0xdead000);
        assert_eq!(addrs, want);
        assert_eq!(total_len(&s), INLINE_SEGMENTS as u64 + 7);
        s.clear();
        assert!(s.is_empty());
        s.push(seg(5, 5));
        assert_eq!(&s[..], &[seg(5, 5)]);
        // Equality is by content, not by where the segments are kept.
        let inline: Segments = [seg(5, 5)].into_iter().collect();
        assert_eq!(s, inline);
    }

    #[test]
    fn pieces_cut_a_range_across_segments() {
        let segs = [seg(0x1000, 16), seg(0x2000, 512), seg(0x3000, 1)];
        let all: Vec<_> = pieces(&segs, 0, 529).collect();
        assert_eq!(all, vec![(0x1000, 16), (0x2000, 512), (0x3000, 1)]);
        let mid: Vec<_> = pieces(&segs, 10, 10).collect();
        assert_eq!(mid, vec![(0x100a, 6), (0x2000, 4)]);
        let tail: Vec<_> = pieces(&segs, 528, 100).collect();
        assert_eq!(tail, vec![(0x3000, 1)]);
        assert_eq!(pieces(&segs, 529, 1).count(), 0);
        assert_eq!(pieces(&segs, 0, 0).count(), 0);
        // Zero-length segments give no pieces.
        let holes = [seg(0x1000, 0), seg(0x2000, 4)];
        let p: Vec<_> = pieces(&holes, 0, 4).collect();
        assert_eq!(p, vec![(0x2000, 4)]);
    }
}
