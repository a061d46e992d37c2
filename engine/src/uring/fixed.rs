//! The ring's table of fixed buffers (`IORING_REGISTER_BUFFERS2` with
//! `IORING_RSRC_REGISTER_SPARSE`, filled with `IORING_REGISTER_BUFFERS_UPDATE`):
//! which slots of the kernel's sparse table hold which registered memory,
//! which are free, and the fixed buffer an I/O's data falls in. Plain
//! bookkeeping; the system calls are `ring.rs`'s.
//!
//! Each registered region is split into chunks of `1 << shift` bytes
//! (the last may be shorter), one table slot each, in consecutive slots. A
//! region keeps a [`RegionHold`] on its memory, so the memory stays mapped
//! while the kernel's table names it; a region whose hold is the last one
//! left (its pool and every buffer of it are gone) can be released.

#![forbid(unsafe_code)]

use crate::dma::RegionHold;

/// A registered region: slots `first..first + count`, chunks of
/// `1 << shift` bytes from `base`.
#[derive(Debug)]
pub(super) struct FixedRegion {
    pub(super) base: u64,
    pub(super) len: usize,
    pub(super) first: u32,
    pub(super) count: u32,
    pub(super) shift: u32,
    /// Keeps the memory mapped while registered (`None` in unit tests).
    pub(super) hold: Option<RegionHold>,
}

impl FixedRegion {
    /// Address and length of chunk `i` (`i < count`).
    pub(super) fn chunk(&self, i: u32) -> (u64, usize) {
        let size = 1usize << self.shift;
        let off = i as usize * size;
        (self.base + off as u64, size.min(self.len - off))
    }

    /// Whether nothing but this registration can reach the memory.
    fn unused(&self) -> bool {
        self.hold.as_ref().is_some_and(RegionHold::is_last)
    }
}

/// The slots of one ring's sparse buffer table and what they hold.
#[derive(Debug, Default)]
pub(super) struct FixedTable {
    /// Slots of the kernel's table (0: no table).
    slots: u32,
    /// Free slot extents `(first, count)`, sorted by `first`, never adjacent.
    free: Vec<(u32, u32)>,
    /// Registered regions, sorted by `base` (they never overlap).
    regions: Vec<FixedRegion>,
}

/// Why a region cannot be added to the table.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum NoRoom {
    /// The memory is already registered.
    Registered,
    /// It overlaps registered memory without being the same region.
    Overlaps,
    /// Not enough consecutive free slots.
    Full {
        /// Slots the region needs.
        needed: u32,
        /// Slots of the table.
        slots: u32,
    },
}

impl FixedTable {
    /// A table of `slots` empty slots.
    pub(super) fn new(slots: u32) -> Self {
        FixedTable {
            slots,
            free: if slots == 0 {
                Vec::new()
            } else {
                vec![(0, slots)]
            },
            regions: Vec::new(),
        }
    }

    /// Slots of the kernel's table.
    pub(super) fn slots(&self) -> u32 {
        self.slots
    }

    /// Whether any memory is registered.
    pub(super) fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// Regions registered.
    pub(super) fn regions(&self) -> usize {
        self.regions.len()
    }

    /// The fixed buffer holding all of `[addr, addr + len)`, if any: the
    /// region starting at or below `addr` (binary search), then the chunk.
    #[inline]
    pub(super) fn find(&self, addr: u64, len: u32) -> Option<u16> {
        if len == 0 {
            return None;
        }
        let last = addr.checked_add(len as u64 - 1)?;
        let i = self.regions.partition_point(|r| r.base <= addr);
        let r = self.regions.get(i.checked_sub(1)?)?;
        let off = addr - r.base;
        let end = last - r.base;
        (end < r.len as u64 && off >> r.shift == end >> r.shift)
            .then(|| (r.first + (off >> r.shift) as u32) as u16)
    }

    /// Reserve slots for `len` bytes at `base` in chunks of `1 << shift`
    /// (the caller then fills them and calls [`FixedTable::insert`], or
    /// gives them back with [`FixedTable::unreserve`]).
    pub(super) fn reserve(&mut self, base: u64, len: usize, shift: u32) -> Result<u32, NoRoom> {
        let end = base.saturating_add(len as u64);
        for r in &self.regions {
            if r.base == base && r.len == len {
                return Err(NoRoom::Registered);
            }
            if base < r.base + r.len as u64 && r.base < end {
                return Err(NoRoom::Overlaps);
            }
        }
        let needed = u32::try_from(len.div_ceil(1 << shift)).unwrap_or(u32::MAX);
        let full = NoRoom::Full {
            needed,
            slots: self.slots,
        };
        let i = self
            .free
            .iter()
            .position(|&(_, n)| n >= needed)
            .ok_or(full)?;
        let (first, n) = self.free[i];
        if n == needed {
            self.free.remove(i);
        } else {
            self.free[i] = (first + needed, n - needed);
        }
        Ok(first)
    }

    /// Give slots `first..first + count` back to the free list.
    pub(super) fn unreserve(&mut self, first: u32, count: u32) {
        if count == 0 {
            return;
        }
        let i = self.free.partition_point(|&(f, _)| f < first);
        self.free.insert(i, (first, count));
        // Merge with the next extent, then with the previous one.
        if i + 1 < self.free.len() && first + count == self.free[i + 1].0 {
            self.free[i].1 += self.free[i + 1].1;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == first {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
    }

    /// Add a region whose slots were reserved and filled.
    pub(super) fn insert(&mut self, region: FixedRegion) {
        let i = self.regions.partition_point(|r| r.base < region.base);
        self.regions.insert(i, region);
    }

    /// Take out the regions nothing but their registration can reach any
    /// more (their slots stay reserved until [`FixedTable::unreserve`]).
    pub(super) fn take_unused(&mut self) -> Vec<FixedRegion> {
        if !self.regions.iter().any(FixedRegion::unused) {
            return Vec::new();
        }
        let (gone, kept) = std::mem::take(&mut self.regions)
            .into_iter()
            .partition(FixedRegion::unused);
        self.regions = kept;
        gone
    }

    /// Put back a region that could not be released (it stays registered).
    pub(super) fn restore(&mut self, region: FixedRegion) {
        self.insert(region);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(base: u64, len: usize, first: u32, shift: u32) -> FixedRegion {
        FixedRegion {
            base,
            len,
            first,
            count: len.div_ceil(1 << shift) as u32,
            shift,
            hold: None,
        }
    }

    #[test]
    fn an_io_maps_to_the_one_chunk_holding_it_or_to_none() {
        let mut t = FixedTable::new(64);
        assert_eq!(t.reserve(0x100_0000, 0x5000, 14), Ok(0));
        t.insert(region(0x100_0000, 0x5000, 0, 14));
        assert_eq!(t.reserve(0x10_0000, 0x10_0000, 18), Ok(2));
        t.insert(region(0x10_0000, 0x10_0000, 2, 18));
        assert_eq!(t.find(0x10_0000, 4096), Some(2));
        assert_eq!(t.find(0x14_0000, 0x4_0000), Some(3));
        assert_eq!(t.find(0x1f_f000, 4096), Some(5));
        // Straddles two chunks: goes unregistered rather than wrong.
        assert_eq!(t.find(0x13_f000, 8192), None);
        // Past the region, before it, between regions, empty.
        assert_eq!(t.find(0x20_0000, 4096), None);
        assert_eq!(t.find(0xf_f000, 4096), None);
        assert_eq!(t.find(0x10_0000, 0), None);
        assert_eq!(t.find(u64::MAX - 10, 4096), None);
        assert_eq!(t.find(0x100_4000, 4096), Some(1));
        assert_eq!(t.find(0x100_4000, 8192), None, "past the region's end");
        let r = region(0x100_0000, 0x5000, 0, 14);
        assert_eq!(
            r.chunk(1),
            (0x100_4000, 0x1000),
            "the last chunk is shorter"
        );
    }

    #[test]
    fn slots_are_reserved_first_fit_and_merge_when_given_back() {
        let mut t = FixedTable::new(16);
        assert_eq!(t.reserve(0x1000_0000, 4 << 20, 20), Ok(0)); // 4 slots
        assert_eq!(t.reserve(0x2000_0000, 8 << 20, 20), Ok(4)); // 8 slots
        assert_eq!(t.reserve(0x3000_0000, 4 << 20, 20), Ok(12)); // 4 slots
        assert_eq!(
            t.reserve(0x4000_0000, 1 << 20, 20),
            Err(NoRoom::Full {
                needed: 1,
                slots: 16
            })
        );
        t.unreserve(0, 4);
        t.unreserve(12, 4);
        // Two holes of 4: 5 slots do not fit, 4 do.
        assert!(matches!(
            t.reserve(0x4000_0000, 5 << 20, 20),
            Err(NoRoom::Full { needed: 5, .. })
        ));
        t.unreserve(4, 8);
        assert_eq!(t.free, vec![(0, 16)], "the three extents merged");
        assert_eq!(t.reserve(0x4000_0000, 16 << 20, 20), Ok(0));
    }

    #[test]
    fn memory_already_registered_or_overlapping_is_refused() {
        let mut t = FixedTable::new(16);
        let first = t.reserve(0x10_0000, 0x10_0000, 18).unwrap();
        t.insert(region(0x10_0000, 0x10_0000, first, 18));
        assert_eq!(t.reserve(0x10_0000, 0x10_0000, 18), Err(NoRoom::Registered));
        assert_eq!(t.reserve(0x18_0000, 0x10_0000, 18), Err(NoRoom::Overlaps));
        assert_eq!(t.reserve(0x20_0000, 0x1000, 18), Ok(4), "adjacent is fine");
    }

    #[test]
    fn only_regions_whose_memory_nothing_else_holds_are_taken_out() {
        use crate::dma::{DmaPool, HostMemory};
        let pool_of = || {
            let memory = HostMemory::plain(1 << 20).unwrap();
            DmaPool::new(super::super::ring::kernel_mapped_region(memory))
        };
        let mut kept_pool = pool_of();
        let dropped_pool = pool_of();
        let mut t = FixedTable::new(64);
        for (pool, first) in [(&kept_pool, 0), (&dropped_pool, 4)] {
            let hold = pool.hold();
            let (base, len) = (hold.addr(), hold.len());
            let mut r = region(base, len, first, 18);
            r.hold = Some(hold);
            t.insert(r);
        }
        let buf = kept_pool.alloc(4096).unwrap();
        drop(dropped_pool);
        let gone = t.take_unused();
        assert_eq!(gone.len(), 1, "the dropped pool's region is released");
        assert_eq!(gone[0].first, 4);
        assert_eq!(t.regions(), 1);
        // The kept pool's buffer outlives its pool: still in use.
        drop(kept_pool);
        assert!(t.take_unused().is_empty());
        drop(buf);
        assert_eq!(t.take_unused().len(), 1);
        assert!(t.is_empty());
    }
}
