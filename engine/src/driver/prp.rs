//! Physical Region Page (PRP) construction (NVMe Base 2.0 §4.1.1).
//!
//! PRP1 points at the first byte of the transfer and may carry a
//! dword-aligned offset into its 4 KiB page. If the transfer ends inside that
//! page PRP2 is unused; if it ends in the next page PRP2 is that page;
//! otherwise PRP2 points at a PRP list whose entries are the remaining page
//! addresses. When a list page is full and more entries follow, its last
//! entry points at the next list page instead.
//!
//! The builder is a pure function: it asks a closure for the IOVA of a byte
//! offset of the buffer (so it works for any region, contiguous or not) and
//! writes list entries through a [`PrpListSink`]; the driver's sink writes
//! them into preallocated list pages of DMA memory.

#![forbid(unsafe_code)]

use crate::dma::DmaWindow;

/// Memory page size the driver configures (CC.MPS = 0).
pub const PAGE_SIZE: usize = 4096;
/// PRP entries in one list page.
pub const ENTRIES_PER_LIST_PAGE: usize = PAGE_SIZE / 8;
/// The value written into an unused PRP field: every page-address bit set and
/// no offset, an address no IOMMU mapping or physical memory ever holds, so a
/// device that reads more than the command's length fails loudly instead of
/// touching real memory.
pub const PRP_UNUSED: u64 = !(PAGE_SIZE as u64 - 1);

/// Why PRPs could not be built for a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrpError {
    /// The buffer starts at an address that is not a multiple of 4.
    #[error(
        "buffer IOVA {iova:#x} is not dword aligned; PRP1 must be a multiple of 4: \
         allocate the buffer from a DmaPool or move its window to a 4-byte boundary"
    )]
    Misaligned {
        /// The buffer's IOVA.
        iova: u64,
    },
    /// A page after the first does not start on a 4 KiB IOVA boundary, so
    /// the buffer cannot be described with PRPs.
    #[error(
        "byte {offset} of the buffer (IOVA {iova:#x}) should start a 4 KiB page for the device \
         but does not; the buffer's IOVA range is not page-contiguous — use a DmaPool buffer"
    )]
    Discontiguous {
        /// Byte offset in the buffer.
        offset: usize,
        /// Its IOVA.
        iova: u64,
    },
    /// Part of the buffer has no IOVA.
    #[error("byte {offset} of the buffer has no IOVA: the buffer is not mapped for this device")]
    Unmapped {
        /// Byte offset in the buffer.
        offset: usize,
    },
    /// The transfer needs more list entries than the preallocated list pages hold.
    #[error(
        "a {len} byte transfer needs {needed} PRP list pages but only {available} are \
         preallocated; split the I/O below the controller's max transfer size"
    )]
    ListTooSmall {
        /// Transfer length.
        len: usize,
        /// List pages needed.
        needed: usize,
        /// List pages available.
        available: usize,
    },
    /// A zero-length transfer has no PRPs.
    #[error("a PRP transfer of zero bytes was requested")]
    ZeroLength,
}

/// Where a PRP list is written: one or more 4 KiB pages.
pub trait PrpListSink {
    /// Number of list pages available.
    fn pages(&self) -> usize;
    /// IOVA of list page `page` (4 KiB aligned).
    fn page_iova(&self, page: usize) -> u64;
    /// Store `value` as entry `entry` (0..512) of list page `page`.
    fn write_entry(&mut self, page: usize, entry: usize, value: u64);
}

/// List pages needed for `entries` page addresses after PRP1 (one fits in
/// PRP2 itself).
pub const fn list_pages_for_entries(entries: usize) -> usize {
    if entries <= 1 {
        0
    } else if entries <= ENTRIES_PER_LIST_PAGE {
        1
    } else {
        // Every page but the last gives up one entry for the chain pointer.
        (entries - ENTRIES_PER_LIST_PAGE).div_ceil(ENTRIES_PER_LIST_PAGE - 1) + 1
    }
}

/// List pages needed to describe any buffer of up to `max_bytes` at any
/// dword-aligned page offset.
pub const fn list_pages_for_transfer(max_bytes: usize) -> usize {
    // Worst case: the buffer starts 4 bytes before a page boundary.
    let pages = (max_bytes + PAGE_SIZE - 4).div_ceil(PAGE_SIZE);
    list_pages_for_entries(pages.saturating_sub(1))
}

/// Build PRP1/PRP2 for a `len` byte transfer whose byte `i` has IOVA
/// `iova_of(i)`, writing a list into `sink` when more than two pages are
/// touched. Unused PRP2 is [`PRP_UNUSED`].
pub fn build(
    len: usize,
    iova_of: impl Fn(usize) -> Option<u64>,
    sink: &mut impl PrpListSink,
) -> Result<(u64, u64), PrpError> {
    if len == 0 {
        return Err(PrpError::ZeroLength);
    }
    let prp1 = iova_of(0).ok_or(PrpError::Unmapped { offset: 0 })?;
    if prp1 & 3 != 0 {
        return Err(PrpError::Misaligned { iova: prp1 });
    }
    let first_len = PAGE_SIZE - (prp1 as usize & (PAGE_SIZE - 1));
    if len <= first_len {
        return Ok((prp1, PRP_UNUSED));
    }
    let rest = len - first_len;
    let entries = rest.div_ceil(PAGE_SIZE);
    // The last byte must be mapped too (the page entries only check starts).
    iova_of(len - 1).ok_or(PrpError::Unmapped { offset: len - 1 })?;
    let page_at = |k: usize| -> Result<u64, PrpError> {
        let offset = first_len + k * PAGE_SIZE;
        let iova = iova_of(offset).ok_or(PrpError::Unmapped { offset })?;
        if iova as usize & (PAGE_SIZE - 1) != 0 {
            return Err(PrpError::Discontiguous { offset, iova });
        }
        Ok(iova)
    };
    if entries == 1 {
        return Ok((prp1, page_at(0)?));
    }
    let needed = list_pages_for_entries(entries);
    if needed > sink.pages() {
        return Err(PrpError::ListTooSmall {
            len,
            needed,
            available: sink.pages(),
        });
    }
    let (mut page, mut slot) = (0usize, 0usize);
    for k in 0..entries {
        if slot == ENTRIES_PER_LIST_PAGE - 1 && entries - k > 1 {
            sink.write_entry(page, slot, sink.page_iova(page + 1));
            page += 1;
            slot = 0;
        }
        sink.write_entry(page, slot, page_at(k)?);
        slot += 1;
    }
    Ok((prp1, sink.page_iova(0)))
}

/// Round up to whole pages.
pub(crate) const fn pages(bytes: usize) -> usize {
    bytes.div_ceil(PAGE_SIZE)
}

/// A PRP list in a window of list pages.
pub(crate) struct WindowSink<'a> {
    pub(crate) mem: &'a DmaWindow,
    pub(crate) first_page: usize,
    pub(crate) pages: usize,
}

impl PrpListSink for WindowSink<'_> {
    fn pages(&self) -> usize {
        self.pages
    }
    fn page_iova(&self, page: usize) -> u64 {
        self.mem
            .iova((self.first_page + page) * PAGE_SIZE)
            .unwrap_or(PRP_UNUSED)
    }
    fn write_entry(&mut self, page: usize, entry: usize, value: u64) {
        self.mem
            .view()
            .write_u64((self.first_page + page) * PAGE_SIZE + entry * 8, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A list in ordinary memory at fake IOVAs.
    struct VecSink {
        base: u64,
        pages: Vec<[u64; ENTRIES_PER_LIST_PAGE]>,
    }

    impl VecSink {
        fn new(pages: usize) -> Self {
            VecSink {
                base: 0x7700_0000,
                pages: vec![[0; ENTRIES_PER_LIST_PAGE]; pages],
            }
        }
        fn read(&self, iova: u64) -> u64 {
            let off = (iova - self.base) as usize;
            self.pages[off / PAGE_SIZE][(off % PAGE_SIZE) / 8]
        }
    }

    impl PrpListSink for VecSink {
        fn pages(&self) -> usize {
            self.pages.len()
        }
        fn page_iova(&self, page: usize) -> u64 {
            self.base + (page * PAGE_SIZE) as u64
        }
        fn write_entry(&mut self, page: usize, entry: usize, value: u64) {
            self.pages[page][entry] = value;
        }
    }

    /// The device's view: walk PRP1, PRP2 and the list for `len` bytes and
    /// return the (iova, bytes) segments it would transfer.
    fn walk(len: usize, prp1: u64, prp2: u64, sink: &VecSink) -> Vec<(u64, usize)> {
        let first = (PAGE_SIZE - (prp1 as usize % PAGE_SIZE)).min(len);
        let mut segs = vec![(prp1, first)];
        let mut left = len - first;
        if left == 0 {
            assert_eq!(prp2, PRP_UNUSED);
            return segs;
        }
        if left <= PAGE_SIZE {
            segs.push((prp2, left));
            return segs;
        }
        let mut entry = prp2;
        while left > 0 {
            let e = sink.read(entry);
            let slot = (entry as usize % PAGE_SIZE) / 8;
            if slot == ENTRIES_PER_LIST_PAGE - 1 && left > PAGE_SIZE {
                entry = e; // chain pointer
                continue;
            }
            let n = left.min(PAGE_SIZE);
            segs.push((e, n));
            left -= n;
            entry += 8;
        }
        segs
    }

    /// The reference: the buffer's pages in order, as (iova, bytes).
    fn expected(len: usize, iova_of: &impl Fn(usize) -> Option<u64>) -> Vec<(u64, usize)> {
        let mut segs = Vec::new();
        let mut off = 0;
        while off < len {
            let iova = iova_of(off).unwrap();
            let n = (PAGE_SIZE - iova as usize % PAGE_SIZE).min(len - off);
            segs.push((iova, n));
            off += n;
        }
        segs
    }

    fn contiguous(base: u64) -> impl Fn(usize) -> Option<u64> {
        move |off| Some(base + off as u64)
    }

    #[test]
    fn single_page_leaves_prp2_unused() {
        let mut s = VecSink::new(1);
        assert_eq!(
            build(4096, contiguous(0x10_0000), &mut s),
            Ok((0x10_0000, PRP_UNUSED))
        );
        assert_eq!(
            build(8, contiguous(0x10_0ff8), &mut s),
            Ok((0x10_0ff8, PRP_UNUSED))
        );
    }

    #[test]
    fn two_pages_use_prp2_directly() {
        let mut s = VecSink::new(1);
        assert_eq!(
            build(8192, contiguous(0x10_0000), &mut s),
            Ok((0x10_0000, 0x10_1000))
        );
        // 12 bytes straddling a page boundary.
        assert_eq!(
            build(12, contiguous(0x10_0ffc), &mut s),
            Ok((0x10_0ffc, 0x10_1000))
        );
    }

    #[test]
    fn three_pages_use_a_list() {
        let mut s = VecSink::new(1);
        let (p1, p2) = build(3 * 4096, contiguous(0x10_0000), &mut s).unwrap();
        assert_eq!(p1, 0x10_0000);
        assert_eq!(p2, s.page_iova(0));
        assert_eq!(&s.pages[0][..2], &[0x10_1000, 0x10_2000]);
    }

    #[test]
    fn full_list_page_without_chain_when_it_is_the_last() {
        // 513 pages: PRP1 + exactly 512 list entries, no chain needed.
        let mut s = VecSink::new(1);
        let len = 513 * PAGE_SIZE;
        let (p1, p2) = build(len, contiguous(0x100_0000), &mut s).unwrap();
        assert_eq!(s.pages[0][511], 0x100_0000 + 512 * 4096);
        assert_eq!(
            walk(len, p1, p2, &s),
            expected(len, &contiguous(0x100_0000))
        );
    }

    #[test]
    fn chained_list_when_more_than_512_entries() {
        let mut s = VecSink::new(2);
        let len = 514 * PAGE_SIZE;
        let (p1, p2) = build(len, contiguous(0x100_0000), &mut s).unwrap();
        assert_eq!(s.pages[0][511], s.page_iova(1), "last entry chains");
        assert_eq!(
            &s.pages[1][..2],
            &[0x100_0000 + 512 * 4096, 0x100_0000 + 513 * 4096]
        );
        assert_eq!(
            walk(len, p1, p2, &s),
            expected(len, &contiguous(0x100_0000))
        );
        let mut one = VecSink::new(1);
        assert_eq!(
            build(len, contiguous(0x100_0000), &mut one),
            Err(PrpError::ListTooSmall {
                len,
                needed: 2,
                available: 1
            })
        );
    }

    #[test]
    fn misaligned_unmapped_and_discontiguous_buffers_are_errors() {
        let mut s = VecSink::new(1);
        assert_eq!(
            build(512, contiguous(0x10_0002), &mut s),
            Err(PrpError::Misaligned { iova: 0x10_0002 })
        );
        assert_eq!(
            build(0, contiguous(0x10_0000), &mut s),
            Err(PrpError::ZeroLength)
        );
        let short = |off: usize| (off < 4096).then_some(0x10_0000 + off as u64);
        assert_eq!(
            build(8192, short, &mut s),
            Err(PrpError::Unmapped { offset: 8191 })
        );
        // Second page starts mid-page in IOVA space.
        let skew = |off: usize| {
            Some(if off < 4096 {
                0x10_0000 + off as u64
            } else {
                0x20_0800 + (off - 4096) as u64
            })
        };
        assert_eq!(
            build(8192, skew, &mut s),
            Err(PrpError::Discontiguous {
                offset: 4096,
                iova: 0x20_0800
            })
        );
    }

    #[test]
    fn list_page_budget_covers_worst_case_offsets() {
        assert_eq!(list_pages_for_transfer(4096), 0);
        assert_eq!(
            list_pages_for_transfer(8192),
            1,
            "offset buffer spans 3 pages"
        );
        assert_eq!(list_pages_for_transfer(2 << 20), 1);
        assert_eq!(list_pages_for_transfer(4 << 20), 3);
        assert_eq!(list_pages_for_entries(1023), 2);
        assert_eq!(list_pages_for_entries(1024), 3);
    }

    proptest! {
        #[test]
        fn prps_cover_exactly_the_buffer_pages_in_order(
            page_off in 0usize..1024,
            len in 1usize..(2100 * 4096),
            scatter in proptest::collection::vec(0u64..1 << 20, 2200),
            scattered in any::<bool>(),
        ) {
            let off = page_off * 4;
            // Page k of the buffer lives at a pseudo-random page frame (or
            // contiguously), so the builder cannot assume contiguity.
            let iova_of = move |b: usize| -> Option<u64> {
                let pos = off + b;
                let frame = if scattered { scatter[pos / PAGE_SIZE] } else { 0x4000 + (pos / PAGE_SIZE) as u64 };
                Some(frame * PAGE_SIZE as u64 + (pos % PAGE_SIZE) as u64)
            };
            let mut s = VecSink::new(list_pages_for_transfer(len));
            let (p1, p2) = build(len, &iova_of, &mut s).unwrap();
            prop_assert_eq!(walk(len, p1, p2, &s), expected(len, &iova_of));
        }
    }
}
