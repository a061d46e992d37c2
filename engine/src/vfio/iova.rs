//! I/O virtual address allocation inside the ranges the IOMMU accepts, and
//! the parser for `VFIO_IOMMU_GET_INFO`'s IOVA-range capability
//! (`linux/vfio.h`, `VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE`).
//!
//! IOMMUs translate a limited number of address bits (QEMU's emulated Intel
//! IOMMU: 39) and reserve holes (the x86 MSI window at 0xfee00000), so
//! process virtual addresses are never used as IOVAs; every mapping gets an
//! address from this allocator instead.

#![forbid(unsafe_code)]

/// An inclusive IOVA range `[start, end]`, as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IovaRange {
    /// First usable address.
    pub start: u64,
    /// Last usable address (inclusive).
    pub end: u64,
}

/// The ranges assumed when the kernel reports none (kernels before 5.4):
/// 39 bits, the narrowest width of current IOMMUs, minus the x86 MSI window.
pub(crate) const FALLBACK_RANGES: [IovaRange; 2] = [
    IovaRange {
        start: 0,
        end: 0xfedf_ffff,
    },
    IovaRange {
        start: 0xfef0_0000,
        end: (1 << 39) - 1,
    },
];

/// Lowest IOVA handed out: keeping address 0 unused makes a zeroed PRP field
/// fault instead of silently reaching the first buffer.
const LOWEST: u64 = 1 << 21;

/// First-fit allocator of aligned IOVA extents; freed extents are merged
/// back. Used at setup time only (one call per DMA region), never per I/O.
#[derive(Debug)]
pub(crate) struct IovaAllocator {
    /// Free extents `[start, end)`, sorted and non-adjacent.
    free: Vec<(u64, u64)>,
}

impl IovaAllocator {
    /// An allocator over `ranges` (inclusive ends).
    pub(crate) fn new(ranges: &[IovaRange]) -> Self {
        let mut free: Vec<(u64, u64)> = ranges
            .iter()
            .filter_map(|r| {
                let start = r.start.max(LOWEST);
                let end = r.end.saturating_add(1);
                (start < end).then_some((start, end))
            })
            .collect();
        free.sort_unstable();
        let mut alloc = IovaAllocator { free: Vec::new() };
        for (s, e) in free {
            alloc.release(s, e - s);
        }
        alloc
    }

    /// Reserve `len` bytes aligned to `align` (a power of two).
    pub(crate) fn allocate(&mut self, len: u64, align: u64) -> Option<u64> {
        if len == 0 || !align.is_power_of_two() {
            return None;
        }
        for i in 0..self.free.len() {
            let (start, end) = self.free[i];
            let Some(aligned) = start.checked_next_multiple_of(align) else {
                continue;
            };
            let Some(stop) = aligned.checked_add(len) else {
                continue;
            };
            if stop > end {
                continue;
            }
            // Split the extent around [aligned, stop).
            self.free.remove(i);
            let mut at = i;
            if start < aligned {
                self.free.insert(at, (start, aligned));
                at += 1;
            }
            if stop < end {
                self.free.insert(at, (stop, end));
            }
            return Some(aligned);
        }
        None
    }

    /// Return `[start, start + len)` to the free list.
    pub(crate) fn release(&mut self, start: u64, len: u64) {
        let end = start.saturating_add(len);
        if end <= start {
            return;
        }
        let at = self.free.partition_point(|&(s, _)| s < start);
        self.free.insert(at, (start, end));
        // Merge with the next, then the previous, extent when they touch.
        if at + 1 < self.free.len() && self.free[at].1 >= self.free[at + 1].0 {
            self.free[at].1 = self.free[at].1.max(self.free[at + 1].1);
            self.free.remove(at + 1);
        }
        if at > 0 && self.free[at - 1].1 >= self.free[at].0 {
            self.free[at - 1].1 = self.free[at - 1].1.max(self.free[at].1);
            self.free.remove(at);
        }
    }

    /// Total free bytes.
    #[cfg(test)]
    pub(crate) fn free_bytes(&self) -> u64 {
        self.free.iter().map(|(s, e)| e - s).sum()
    }
}

fn u32_at(buf: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(buf: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(buf.get(off..off + 8)?.try_into().ok()?))
}

/// The IOVA ranges in a `VFIO_IOMMU_GET_INFO` answer (`struct
/// vfio_iommu_type1_info` followed by its capability chain), or `None` when
/// the answer carries no IOVA-range capability. A malformed chain (offsets
/// outside the buffer, loops) ends the walk instead of being trusted.
pub(crate) fn parse_iova_ranges(info: &[u8]) -> Option<Vec<IovaRange>> {
    use vfio_bindings::bindings::vfio::{
        VFIO_IOMMU_INFO_CAPS, VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
    };
    let flags = u32_at(info, 4)?;
    if flags & VFIO_IOMMU_INFO_CAPS == 0 {
        return None;
    }
    // struct vfio_iommu_type1_info: argsz 0, flags 4, iova_pgsizes 8, cap_offset 16.
    let mut off = u32_at(info, 16)? as usize;
    let mut hops = 0;
    while off != 0 && hops < 64 {
        hops += 1;
        // struct vfio_info_cap_header: id u16, version u16, next u32.
        let id = u32_at(info, off)? & 0xffff;
        let next = u32_at(info, off + 4)? as usize;
        if id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE {
            // header (8), nr_iovas u32, reserved u32, then {start, end} u64 pairs.
            let n = u32_at(info, off + 8)? as usize;
            let mut ranges = Vec::with_capacity(n.min(64));
            for i in 0..n {
                let at = off + 16 + i * 16;
                let start = u64_at(info, at)?;
                let end = u64_at(info, at + 8)?;
                if start <= end {
                    ranges.push(IovaRange { start, end });
                }
            }
            return Some(ranges);
        }
        if next <= off {
            // The kernel always chains forwards; anything else is garbage.
            return None;
        }
        off = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu_ranges() -> Vec<IovaRange> {
        vec![
            IovaRange {
                start: 0,
                end: 0xfedf_ffff,
            },
            IovaRange {
                start: 0xfef0_0000,
                end: 0x7f_ffff_ffff,
            },
        ]
    }

    #[test]
    fn allocations_stay_inside_the_ranges_and_aligned() {
        let ranges = qemu_ranges();
        let mut a = IovaAllocator::new(&ranges);
        let mut got = Vec::new();
        // 1 GiB pieces: the first range fits three (from 2 MiB up), the
        // fourth must skip the MSI hole into the second range.
        for _ in 0..6 {
            let iova = a.allocate(1 << 30, 1 << 21).unwrap();
            assert_eq!(iova % (1 << 21), 0);
            let end = iova + (1 << 30) - 1;
            assert!(
                ranges.iter().any(|r| r.start <= iova && end <= r.end),
                "{iova:#x} outside the ranges"
            );
            assert!(end < 1 << 39);
            got.push(iova);
        }
        got.sort();
        for w in got.windows(2) {
            assert!(w[0] + (1 << 30) <= w[1], "overlap {w:x?}");
        }
        assert!(got[0] >= LOWEST, "IOVA 0 stays unused");
    }

    #[test]
    fn freed_extents_merge_and_are_reused() {
        let mut a = IovaAllocator::new(&qemu_ranges());
        let before = a.free_bytes();
        let x = a.allocate(4 << 20, 1 << 21).unwrap();
        let y = a.allocate(2 << 20, 1 << 21).unwrap();
        let z = a.allocate(2 << 20, 1 << 30).unwrap();
        assert_eq!(z % (1 << 30), 0);
        a.release(y, 2 << 20);
        a.release(x, 4 << 20);
        a.release(z, 2 << 20);
        assert_eq!(a.free_bytes(), before);
        assert_eq!(a.free.len(), 2, "extents merged back: {:x?}", a.free);
        assert_eq!(a.allocate(4 << 20, 1 << 21), Some(x));
    }

    #[test]
    fn exhaustion_and_bad_requests_return_none() {
        let mut a = IovaAllocator::new(&[IovaRange {
            start: 0,
            end: (8 << 20) - 1,
        }]);
        assert_eq!(a.allocate(0, 4096), None);
        assert_eq!(a.allocate(4096, 3), None);
        assert_eq!(
            a.allocate(8 << 20, 4096),
            None,
            "the first 2 MiB are kept free"
        );
        assert_eq!(a.allocate(6 << 20, 4096), Some(2 << 20));
        assert_eq!(a.allocate(4096, 4096), None);
        let mut full = IovaAllocator::new(&[IovaRange {
            start: 0,
            end: u64::MAX,
        }]);
        assert!(full.allocate(u64::MAX / 2, 1 << 21).is_some());
        assert_eq!(full.allocate(u64::MAX / 2 + 1, 1 << 21), None);
    }

    fn info_with_caps(caps: &[u8], cap_offset: u32, flags: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((24 + caps.len()) as u32).to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&0x4020_1000u64.to_ne_bytes());
        v.extend_from_slice(&cap_offset.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(caps);
        v
    }

    fn cap(id: u16, next: u32, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&id.to_ne_bytes());
        v.extend_from_slice(&1u16.to_ne_bytes());
        v.extend_from_slice(&next.to_ne_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn iova_range_capability_is_found_after_other_capabilities() {
        // A migration capability (id 2, 24 bytes) first, then the ranges.
        let mut caps = cap(2, 24 + 24, &[0u8; 16]);
        let mut body = Vec::new();
        body.extend_from_slice(&2u32.to_ne_bytes());
        body.extend_from_slice(&0u32.to_ne_bytes());
        for r in qemu_ranges() {
            body.extend_from_slice(&r.start.to_ne_bytes());
            body.extend_from_slice(&r.end.to_ne_bytes());
        }
        caps.extend(cap(1, 0, &body));
        let info = info_with_caps(&caps, 24, 3);
        assert_eq!(parse_iova_ranges(&info), Some(qemu_ranges()));
    }

    #[test]
    fn malformed_capability_chains_are_not_trusted() {
        // No CAPS flag.
        assert_eq!(parse_iova_ranges(&info_with_caps(&[], 0, 1)), None);
        // Chain pointing backwards (a loop).
        let caps = cap(2, 24, &[0u8; 16]);
        assert_eq!(parse_iova_ranges(&info_with_caps(&caps, 24, 3)), None);
        // Range count larger than the buffer.
        let mut body = Vec::new();
        body.extend_from_slice(&1000u32.to_ne_bytes());
        body.extend_from_slice(&0u32.to_ne_bytes());
        let caps = cap(1, 0, &body);
        assert_eq!(parse_iova_ranges(&info_with_caps(&caps, 24, 3)), None);
        // Offset past the end, and a truncated header.
        assert_eq!(parse_iova_ranges(&info_with_caps(&[], 4000, 3)), None);
        assert_eq!(parse_iova_ranges(&[0u8; 6]), None);
    }
}
