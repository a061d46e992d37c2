//! Physical Region Page walking (NVMe Base 2.0 §4.1.1): PRP1 with a
//! dword-aligned offset, PRP2 as second page or PRP list pointer, and
//! chained list pages whose last entry points at the next list page.
//! Every page and list is translated through the emulated IOMMU.

#![forbid(unsafe_code)]

use crate::guest_memory::{DmaGuard, TranslationCache};
use nvme_engine::dma::DmaView;

/// Memory page size (CC.MPS = 0).
pub(crate) const PAGE: u64 = 4096;
const PAGE_MASK: u64 = PAGE - 1;
const ENTRIES_PER_PAGE: usize = (PAGE / 8) as usize;

/// Why a transfer failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum XferError {
    /// A PRP entry or pointer has a bad offset (PRP Offset Invalid).
    Offset,
    /// An address lies outside registered memory (Data Transfer Error).
    Dma,
    /// A malformed SGL: the generic status code that names the problem.
    Sgl(u8),
}

/// Call `f(slice, offset_in_transfer)` for every piece of a `len`-byte
/// transfer described by `prp1`/`prp2`, in order. Pieces never cross a page.
/// Data pages are translated through `cache` (consecutive commands mostly
/// hit the same buffer pool); PRP lists are translated directly.
pub(crate) fn walk(
    g: &DmaGuard<'_>,
    cache: &mut TranslationCache,
    prp1: u64,
    prp2: u64,
    len: usize,
    mut f: impl FnMut(&DmaView<'_>, usize),
) -> Result<(), XferError> {
    if len == 0 {
        return Ok(());
    }
    let mut piece = |addr: u64, n: usize, at: usize| -> Result<(), XferError> {
        let s = g.translate_cached(cache, addr, n).ok_or(XferError::Dma)?;
        f(&s, at);
        Ok(())
    };
    let o1 = prp1 & PAGE_MASK;
    if o1 & 3 != 0 {
        return Err(XferError::Offset);
    }
    let first = len.min((PAGE - o1) as usize);
    piece(prp1, first, 0)?;
    let mut done = first;
    if done == len {
        return Ok(());
    }
    let rest = len - done;
    if rest as u64 <= PAGE {
        if prp2 & PAGE_MASK != 0 {
            return Err(XferError::Offset);
        }
        return piece(prp2, rest, done);
    }
    // PRP2 points at a list; entries are qwords.
    let mut list = prp2;
    let mut entries = [0u64; ENTRIES_PER_PAGE];
    loop {
        if list & 7 != 0 {
            return Err(XferError::Offset);
        }
        let pages_left = (len - done).div_ceil(PAGE as usize);
        let in_page = ((PAGE - (list & PAGE_MASK)) / 8) as usize;
        let chained = pages_left > in_page;
        let n = if chained { in_page } else { pages_left };
        let s = g.translate(list, n * 8).ok_or(XferError::Dma)?;
        for (i, e) in entries[..n].iter_mut().enumerate() {
            *e = s
                .read_obj::<u64>(i * 8)
                .map(u64::from_le)
                .ok_or(XferError::Dma)?;
        }
        let data = if chained { n - 1 } else { n };
        for &e in &entries[..data] {
            if e & PAGE_MASK != 0 {
                return Err(XferError::Offset);
            }
            let m = (len - done).min(PAGE as usize);
            piece(e, m, done)?;
            done += m;
        }
        if !chained {
            return Ok(());
        }
        list = entries[n - 1];
    }
}

/// Copy `data` to the host buffer described by the PRPs.
pub(crate) fn write_to_host(
    g: &DmaGuard<'_>,
    cache: &mut TranslationCache,
    prp1: u64,
    prp2: u64,
    data: &[u8],
) -> Result<(), XferError> {
    walk(g, cache, prp1, prp2, data.len(), |s, at| {
        s.write(0, &data[at..at + s.len()]);
    })
}

/// Fill `out` from the host buffer described by the PRPs.
pub(crate) fn read_from_host(
    g: &DmaGuard<'_>,
    cache: &mut TranslationCache,
    prp1: u64,
    prp2: u64,
    out: &mut [u8],
) -> Result<(), XferError> {
    walk(g, cache, prp1, prp2, out.len(), |s, at| {
        let n = s.len();
        s.read(0, &mut out[at..at + n]);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_memory::Iommu;
    use nvme_engine::dma::{DmaRegion, HostMemory};
    use std::sync::Arc;

    fn setup(pages: usize) -> (Arc<Iommu>, DmaRegion) {
        let iommu = Iommu::new("t".into());
        let r = iommu.map(HostMemory::plain(pages * 4096).unwrap()).unwrap();
        (iommu, r)
    }

    fn put_u64(g: &DmaGuard<'_>, iova: u64, v: u64) {
        g.translate(iova, 8).unwrap().write(0, &v.to_le_bytes());
    }

    #[test]
    fn single_and_two_page_transfers() {
        let (iommu, r) = setup(4);
        let base = r.iova(0).unwrap();
        let g = iommu.guard();
        let data: Vec<u8> = (0..6000u32).map(|i| i as u8).collect();
        write_to_host(
            &g,
            &mut TranslationCache::default(),
            base + 100 * 4,
            base + 2 * 4096,
            &data,
        )
        .unwrap();
        let mut back = vec![0; 6000];
        read_from_host(
            &g,
            &mut TranslationCache::default(),
            base + 400,
            base + 2 * 4096,
            &mut back,
        )
        .unwrap();
        assert_eq!(back, data);
        assert_eq!(
            write_to_host(
                &g,
                &mut TranslationCache::default(),
                base + 2,
                0,
                &data[..8]
            ),
            Err(XferError::Offset)
        );
        assert_eq!(
            write_to_host(
                &g,
                &mut TranslationCache::default(),
                base,
                base + 4096 + 8,
                &data
            ),
            Err(XferError::Offset)
        );
    }

    #[test]
    fn chained_list_pages_are_followed() {
        // List at page 0 with only 2 slots left before the page end, chained
        // to a second list at page 1; data pages 2..6.
        let (iommu, r) = setup(8);
        let b = r.iova(0).unwrap();
        let g = iommu.guard();
        let l0 = b + 4096 - 16;
        put_u64(&g, l0, b + 3 * 4096);
        put_u64(&g, l0 + 8, b + 4096); // -> next list
        put_u64(&g, b + 4096, b + 4 * 4096);
        put_u64(&g, b + 4096 + 8, b + 5 * 4096);
        let len = 4 * 4096;
        let data: Vec<u8> = (0..len).map(|i| (i / 4096) as u8 + 1).collect();
        write_to_host(
            &g,
            &mut TranslationCache::default(),
            b + 2 * 4096,
            l0,
            &data,
        )
        .unwrap();
        for page in 2..6u64 {
            let mut x = [0u8; 1];
            g.translate(b + page * 4096 + 17, 1)
                .unwrap()
                .read(0, &mut x);
            assert_eq!(x[0], (page - 1) as u8);
        }
    }

    #[test]
    fn outside_memory_is_a_dma_error() {
        let (iommu, r) = setup(1);
        let b = r.iova(0).unwrap();
        let g = iommu.guard();
        assert_eq!(
            write_to_host(&g, &mut TranslationCache::default(), b + 4096, 0, &[0; 16]),
            Err(XferError::Dma)
        );
        assert_eq!(
            write_to_host(
                &g,
                &mut TranslationCache::default(),
                b,
                0xdead_0000,
                &[0; 8192]
            ),
            Err(XferError::Dma)
        );
    }
}
