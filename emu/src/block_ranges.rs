//! A set of logical block ranges, kept sorted and disjoint: the blocks a
//! namespace marked uncorrectable with Write Uncorrectable (NVM Command Set
//! 1.0 §3.3.7) until they are written again.

#![forbid(unsafe_code)]

/// Sorted, disjoint, non-adjacent half-open ranges `[start, end)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct BlockRanges {
    ranges: Vec<(u64, u64)>,
}

impl BlockRanges {
    /// Whether no block is in the set.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether any block of `[start, end)` is in the set.
    pub(crate) fn overlaps(&self, start: u64, end: u64) -> bool {
        // The first range ending after `start` is the only candidate.
        let i = self.ranges.partition_point(|&(_, e)| e <= start);
        self.ranges.get(i).is_some_and(|&(s, _)| s < end)
    }

    /// Add `[start, end)`, merging with neighbours it touches.
    pub(crate) fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let lo = self.ranges.partition_point(|&(_, e)| e < start);
        let hi = self.ranges.partition_point(|&(s, _)| s <= end);
        let (mut s, mut e) = (start, end);
        if lo < hi {
            s = s.min(self.ranges[lo].0);
            e = e.max(self.ranges[hi - 1].1);
        }
        self.ranges.splice(lo..hi, [(s, e)]);
    }

    /// Remove `[start, end)`, splitting a range that straddles it.
    pub(crate) fn remove(&mut self, start: u64, end: u64) {
        if start >= end || self.ranges.is_empty() {
            return;
        }
        let lo = self.ranges.partition_point(|&(_, e)| e <= start);
        let hi = self.ranges.partition_point(|&(s, _)| s < end);
        if lo >= hi {
            return;
        }
        let mut keep = Vec::with_capacity(2);
        let (first, last) = (self.ranges[lo], self.ranges[hi - 1]);
        if first.0 < start {
            keep.push((first.0, start));
        }
        if last.1 > end {
            keep.push((end, last.1));
        }
        self.ranges.splice(lo..hi, keep);
    }

    /// Drop every range at or past block `blocks` (a namespace shrank).
    pub(crate) fn truncate(&mut self, blocks: u64) {
        self.remove(blocks, u64::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_merges_and_remove_splits() {
        let mut r = BlockRanges::default();
        r.insert(10, 20);
        r.insert(30, 40);
        assert!(r.overlaps(19, 21) && !r.overlaps(20, 30) && r.overlaps(0, 100));
        r.insert(20, 30);
        assert_eq!(r.ranges, [(10, 40)]);
        r.remove(15, 25);
        assert_eq!(r.ranges, [(10, 15), (25, 40)]);
        assert!(!r.overlaps(15, 25));
        r.remove(0, 12);
        r.remove(39, 50);
        assert_eq!(r.ranges, [(12, 15), (25, 39)]);
        r.truncate(13);
        assert_eq!(r.ranges, [(12, 13)]);
        r.remove(0, u64::MAX);
        assert!(r.is_empty());
    }
}
