//! The emulated IOMMU: host memory registered by `map_dma`, the I/O virtual
//! addresses handed out for it, and every DMA access the controller makes
//! (queue entries, PRP lists, data), translated and bounds-checked.
//!
//! This is the only file of the emulator with `unsafe`: handing the IOVAs
//! it chose to a [`DmaRegion`] (`map`), and making a [`DmaView`] — the
//! engine's one volatile, bounds-checked view of DMA memory — over a
//! translated range (`slice_of`, the one place host memory is reached).
//! The rules that make the view sound:
//! - the controller reaches host memory only through a [`DmaView`] that
//!   exists only inside a [`DmaGuard`] (its lifetime is the guard's borrow)
//!   and only for a range that lies inside a live registration (a
//!   [`TranslationCache`] remembers such a range only as long as no
//!   registration has been removed since it was filled: every
//!   unregistration bumps a generation before waiting for guards);
//! - unregistering waits until no guard is held, so memory is never freed
//!   under an access in progress;
//! - no Rust reference into host memory is ever made: the host may write it
//!   at any time, so every access is one of the view's raw copies, volatile
//!   or atomic accesses; a completion's last dword is published with a
//!   release store ([`publish_completion`]).
//!
//! IOVAs start at 4 GiB and are never equal to virtual addresses. Hugepage
//! memory gets one IOVA range per 2 MiB chunk with an unmapped 2 MiB gap
//! after each, so a driver that assumes contiguity across chunks faults
//! instead of silently working.

#![allow(unsafe_code)]

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use nvme_engine::dma::{DmaError, DmaRegion, DmaView, HostMemory};
use nvme_engine::spec::completion::Completion;

/// Lowest IOVA handed out.
pub(crate) const IOVA_BASE: u64 = 0x1_0000_0000;
/// IOVA chunk of hugepage memory (2 MiB), as log2.
const CHUNK_SHIFT: u32 = 21;
/// Most live registrations.
const MAX_MAPPINGS: usize = 1024;

const FREE: u32 = 0;
const LIVE: u32 = 1;

/// One registration. Fields are written only while `state` is FREE and no
/// guard can still be looking at the slot; readers load `state` first.
struct Slot {
    state: AtomicU32,
    iova: AtomicU64,
    /// IOVA span, gaps included.
    span: AtomicU64,
    host: AtomicUsize,
    len: AtomicUsize,
    /// 0: one contiguous range; otherwise chunks of 2^shift bytes, each
    /// followed by a gap of the same size.
    shift: AtomicU32,
}

/// The emulated IOMMU shared by the controller and the unmap guards.
pub(crate) struct Iommu {
    slots: Box<[Slot]>,
    /// Slots in use are all below this index.
    high_water: AtomicUsize,
    /// Guards currently held.
    active: AtomicUsize,
    /// Serialises registration and unregistration; holds the next free IOVA.
    alloc: Mutex<u64>,
    /// Bumped by every unregistration before it waits for guards; a
    /// [`TranslationCache`] filled under an older value is stale.
    generation: AtomicU64,
    /// Bus mastering: once off (a quiesced device), no translation succeeds.
    mastering: AtomicBool,
    name: String,
}

impl Iommu {
    pub(crate) fn new(name: String) -> Arc<Self> {
        let slots = (0..MAX_MAPPINGS)
            .map(|_| Slot {
                state: AtomicU32::new(FREE),
                iova: AtomicU64::new(0),
                span: AtomicU64::new(0),
                host: AtomicUsize::new(0),
                len: AtomicUsize::new(0),
                shift: AtomicU32::new(0),
            })
            .collect();
        Arc::new(Iommu {
            slots,
            high_water: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            alloc: Mutex::new(IOVA_BASE),
            // Starts at 1 so an empty cache (generation 0) never matches.
            generation: AtomicU64::new(1),
            mastering: AtomicBool::new(true),
            name,
        })
    }

    /// Register `memory` and wrap it in a region whose IOVAs this IOMMU chose.
    pub(crate) fn map(self: &Arc<Self>, memory: HostMemory) -> Result<DmaRegion, DmaError> {
        let len = memory.len();
        let host = memory.as_ptr() as usize;
        let chunked = memory.is_hugepage();
        let (span, shift) = if chunked {
            let chunks = len.div_ceil(1 << CHUNK_SHIFT) as u64;
            (chunks << (CHUNK_SHIFT + 1), CHUNK_SHIFT)
        } else {
            (len as u64, 0)
        };
        let err = |reason: &str| DmaError::DeviceMap {
            device: self.name.clone(),
            len,
            reason: reason.to_string(),
        };
        let mut next = self.alloc.lock().unwrap_or_else(|e| e.into_inner());
        let iova = *next;
        let Some(slot_idx) = self
            .slots
            .iter()
            .position(|s| s.state.load(Ordering::SeqCst) == FREE)
        else {
            return Err(err(
                "the emulated IOMMU has no free mapping slot (1024 live mappings); drop unused regions",
            ));
        };
        // Leave an unmapped gap of at least 2 MiB after every mapping and keep
        // mappings 2 MiB aligned.
        let gap = 1u64 << CHUNK_SHIFT;
        *next = (iova + span + gap).next_multiple_of(gap);
        let slot = &self.slots[slot_idx];
        slot.iova.store(iova, Ordering::Relaxed);
        slot.span.store(span, Ordering::Relaxed);
        slot.host.store(host, Ordering::Relaxed);
        slot.len.store(len, Ordering::Relaxed);
        slot.shift.store(shift, Ordering::Relaxed);
        // Release: a translator that sees LIVE sees the fields above.
        slot.state.store(LIVE, Ordering::SeqCst);
        self.high_water.fetch_max(slot_idx + 1, Ordering::SeqCst);
        drop(next);

        let guard: Box<dyn nvme_engine::dma::Unmap> = Box::new(UnmapGuard {
            iommu: Arc::downgrade(self),
            slot: slot_idx,
        });
        if chunked {
            let chunks = len.div_ceil(1 << CHUNK_SHIFT) as u64;
            let iovas = (0..chunks)
                .map(|i| iova + (i << (CHUNK_SHIFT + 1)))
                .collect();
            // On failure the guard is dropped inside `new`, unregistering.
            // SAFETY: this IOMMU just registered `memory` at these IOVAs
            // (one per 2 MiB chunk) and `guard` unregisters it on drop.
            unsafe { DmaRegion::new(memory, CHUNK_SHIFT, iovas, Some(guard)) }
                .ok_or_else(|| err("the region rejected the IOVA table"))
        } else {
            // SAFETY: registered at `iova` just above; `guard` unregisters.
            Ok(unsafe { DmaRegion::contiguous(memory, iova, Some(guard)) })
        }
    }

    fn unregister(&self, slot_idx: usize) {
        let _lock = self.alloc.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = self.slots.get(slot_idx) {
            // SeqCst store, then SeqCst loads of `active`: a guard taken after
            // this point sees FREE; one taken before is waited for.
            slot.state.store(FREE, Ordering::SeqCst);
            // SeqCst, between the state store and the `active` loads: a guard
            // whose `active` increment these loads miss reads the new
            // generation, so it cannot use a translation cached before.
            self.generation.fetch_add(1, Ordering::SeqCst);
            while self.active.load(Ordering::SeqCst) != 0 {
                std::thread::yield_now();
            }
        }
    }

    /// Turn bus mastering off for good: no DMA access succeeds afterwards.
    /// Returns once every access group already running has finished, so no
    /// write lands after this returns.
    pub(crate) fn stop_mastering(&self) {
        let _lock = self.alloc.lock().unwrap_or_else(|e| e.into_inner());
        // SeqCst, as in `unregister`: a guard taken after the generation
        // bump sees mastering off; one taken before is waited for.
        self.mastering.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
        while self.active.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
    }

    /// Whether the device may still master the bus.
    pub(crate) fn is_mastering(&self) -> bool {
        self.mastering.load(Ordering::SeqCst)
    }

    /// Start a group of DMA accesses. Registrations live when the guard is
    /// taken stay valid until it is dropped.
    pub(crate) fn guard(&self) -> DmaGuard<'_> {
        // SeqCst pairs with the SeqCst state store in `unregister`.
        self.active.fetch_add(1, Ordering::SeqCst);
        // SeqCst, after the increment: see `unregister`.
        let generation = self.generation.load(Ordering::SeqCst);
        DmaGuard {
            iommu: self,
            generation,
        }
    }

    /// Number of live registrations.
    #[cfg(test)]
    pub(crate) fn live(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.state.load(Ordering::SeqCst) == LIVE)
            .count()
    }
}

/// Unregisters a mapping when its region is dropped.
struct UnmapGuard {
    iommu: Weak<Iommu>,
    slot: usize,
}

impl Drop for UnmapGuard {
    fn drop(&mut self) {
        if let Some(iommu) = self.iommu.upgrade() {
            iommu.unregister(self.slot);
        }
    }
}

/// Proof that registrations cannot go away: held for the duration of one
/// group of DMA accesses (a polling round or a doorbell's processing).
pub(crate) struct DmaGuard<'a> {
    iommu: &'a Iommu,
    /// The IOMMU's generation when the guard was taken.
    generation: u64,
}

/// A remembered translation: one contiguous host range (a whole plain
/// registration or one hugepage chunk) and the IOVAs that map to it. Valid
/// while the IOMMU's generation is the one it was filled under: no
/// registration has been removed since, so the host range is still live.
/// Queues keep one for their ring; the I/O path keeps one for data pages.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TranslationCache {
    generation: u64,
    start: u64,
    end: u64,
    host: usize,
}

/// The contiguous piece of a live registration that holds an IOVA.
struct Piece {
    start: u64,
    len: usize,
    host: usize,
}

impl Drop for DmaGuard<'_> {
    fn drop(&mut self) {
        self.iommu.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<'a> DmaGuard<'a> {
    /// The host memory behind `len` bytes at `iova`, or `None` when any of
    /// it lies outside a live registration (or across a chunk gap).
    #[inline]
    pub(crate) fn translate(&self, iova: u64, len: usize) -> Option<DmaView<'_>> {
        let p = self.lookup(iova)?;
        self.slice_of(p.start, p.len, p.host, iova, len)
    }

    /// [`translate`](Self::translate) through `cache`: a hit costs a few
    /// compares; a miss translates and remembers the whole contiguous piece
    /// around `iova`.
    #[inline(always)]
    pub(crate) fn translate_cached(
        &self,
        cache: &mut TranslationCache,
        iova: u64,
        len: usize,
    ) -> Option<DmaView<'_>> {
        if cache.generation != self.generation || iova < cache.start || iova >= cache.end {
            self.refill(cache, iova)?;
        }
        self.slice_of(
            cache.start,
            (cache.end - cache.start) as usize,
            cache.host,
            iova,
            len,
        )
    }

    /// Fill `cache` with the piece holding `iova` (the slow path).
    #[cold]
    #[inline(never)]
    fn refill(&self, cache: &mut TranslationCache, iova: u64) -> Option<()> {
        let p = self.lookup(iova)?;
        *cache = TranslationCache {
            generation: self.generation,
            start: p.start,
            end: p.start + p.len as u64,
            host: p.host,
        };
        Some(())
    }

    /// `len` bytes at `iova` inside the piece (`start`, `piece_len`, `host`).
    #[inline(always)]
    fn slice_of(
        &self,
        start: u64,
        piece_len: usize,
        host: usize,
        iova: u64,
        len: usize,
    ) -> Option<DmaView<'_>> {
        let off = iova.checked_sub(start)? as usize;
        if off >= piece_len || len > piece_len - off {
            return None;
        }
        let ptr = NonNull::new((host + off) as *mut u8)?;
        // SAFETY: `ptr..ptr + len` lies inside the piece (checked above),
        // which `lookup` found inside a LIVE registration, or which a cache
        // filled under this guard's generation remembers (no registration
        // has been removed since). A registration is host memory the driver
        // mapped for DMA: mapped, readable and writable, and never reached
        // through a Rust reference (the engine's own rule for DMA memory).
        // `unregister` waits for every guard before the memory can go, and
        // the view borrows this guard, so it cannot outlive the
        // registration.
        Some(unsafe { DmaView::from_raw_parts(ptr, len) })
    }

    /// The contiguous piece of a live registration holding `iova`.
    fn lookup(&self, iova: u64) -> Option<Piece> {
        if !self.iommu.mastering.load(Ordering::SeqCst) {
            return None;
        }
        let hw = self.iommu.high_water.load(Ordering::SeqCst);
        for slot in &self.iommu.slots[..hw.min(MAX_MAPPINGS)] {
            if slot.state.load(Ordering::SeqCst) != LIVE {
                continue;
            }
            let start = slot.iova.load(Ordering::Relaxed);
            let span = slot.span.load(Ordering::Relaxed);
            let off = match iova.checked_sub(start) {
                Some(off) if off < span => off,
                _ => continue,
            };
            let host_len = slot.len.load(Ordering::Relaxed);
            let shift = slot.shift.load(Ordering::Relaxed);
            let host = slot.host.load(Ordering::Relaxed);
            if shift == 0 {
                return Some(Piece {
                    start,
                    len: host_len,
                    host,
                });
            }
            let within = off & ((1u64 << (shift + 1)) - 1);
            if within >= 1u64 << shift {
                return None; // in the gap after a chunk
            }
            let chunk_iova = iova - within;
            let host_off = ((off >> (shift + 1)) << shift) as usize;
            if host_off >= host_len {
                return None;
            }
            return Some(Piece {
                start: chunk_iova,
                len: (1usize << shift).min(host_len - host_off),
                host: host + host_off,
            });
        }
        None
    }
}

/// Publish `c` as the completion queue entry at `off` of `cq`: DW0..DW2
/// with volatile stores first, then DW3 (CID, phase, status) with a
/// release store, so a host that loads DW3 with acquire and sees the new
/// phase also sees the rest. False when the 16 bytes do not fit or are not
/// 8-byte aligned (a CQ is page aligned, so its entries always are).
#[inline]
pub(crate) fn publish_completion(cq: &DmaView<'_>, off: usize, c: &Completion) -> bool {
    let Some(e) = cq.entry::<16>(off) else {
        return false;
    };
    let dw2 = c.sqhd as u32 | (c.sqid as u32) << 16;
    // The host does not read DW0..DW2 before it sees DW3's new phase.
    e.write_u32(0, c.dw0)
        && e.write_u32(1, c.dw1)
        && e.write_u32(2, dw2)
        // Release: DW0..DW2 become visible no later than the phase flip.
        && e.store_u32(3, c.dw3(), Ordering::Release)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvme_engine::dma::PageSize;
    use nvme_engine::spec::status::Status;

    #[test]
    fn iovas_are_not_virtual_addresses_and_translate_back() {
        let iommu = Iommu::new("t".into());
        let region = iommu.map(HostMemory::plain(3 * 4096).unwrap()).unwrap();
        let iova = region.iova(0).unwrap();
        assert!(iova >= IOVA_BASE);
        assert_ne!(iova, region.as_ptr() as u64);
        let g = iommu.guard();
        let s = g.translate(iova + 4096, 8).unwrap();
        assert!(s.write(0, &[1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!(s.read_u64(0), Some(0x0807_0605_0403_0201));
        assert!(
            g.translate(iova + 3 * 4096 - 4, 8).is_none(),
            "crosses the end"
        );
        assert!(g.translate(iova - 1, 1).is_none());
        assert!(!s.write(4, &[0; 8]), "slice bounds enforced");
    }

    #[test]
    fn two_mappings_get_disjoint_ranges_with_a_gap() {
        let iommu = Iommu::new("t".into());
        let a = iommu.map(HostMemory::plain(4096).unwrap()).unwrap();
        let b = iommu.map(HostMemory::plain(4096).unwrap()).unwrap();
        let (ia, ib) = (a.iova(0).unwrap(), b.iova(0).unwrap());
        assert!(ib >= ia + 4096 + (2 << 20));
        let g = iommu.guard();
        assert!(g.translate(ia + 4096, 1).is_none());
        assert!(g.translate(ib, 4096).is_some());
    }

    #[test]
    fn dropping_the_region_unregisters_it() {
        let iommu = Iommu::new("t".into());
        let region = iommu.map(HostMemory::plain(4096).unwrap()).unwrap();
        let iova = region.iova(0).unwrap();
        assert_eq!(iommu.live(), 1);
        drop(region);
        assert_eq!(iommu.live(), 0);
        assert!(iommu.guard().translate(iova, 1).is_none());
    }

    #[test]
    fn hugepage_chunks_have_gaps_between_them() {
        let Ok(mem) = HostMemory::hugepages(4 << 20, PageSize::Huge2M) else {
            return; // no hugepages reserved on this machine
        };
        let iommu = Iommu::new("t".into());
        let region = iommu.map(mem).unwrap();
        let (c0, c1) = (region.iova(0).unwrap(), region.iova(2 << 20).unwrap());
        assert!(c1 > c0 + (2 << 20));
        let g = iommu.guard();
        assert!(g.translate(c0 + (2 << 20) - 8, 8).is_some());
        assert!(g.translate(c0 + (2 << 20) - 8, 16).is_none());
        assert!(g.translate(c0 + (2 << 20), 1).is_none(), "the gap");
        assert!(g.translate(c1, 4096).is_some());
    }

    #[test]
    fn cached_translations_match_and_die_with_the_mapping() {
        let iommu = Iommu::new("t".into());
        let a = iommu.map(HostMemory::plain(2 * 4096).unwrap()).unwrap();
        let b = iommu.map(HostMemory::plain(4096).unwrap()).unwrap();
        let (ia, ib) = (a.iova(0).unwrap(), b.iova(0).unwrap());
        let mut cache = TranslationCache::default();
        {
            let g = iommu.guard();
            let s = g.translate_cached(&mut cache, ia + 4096, 8).unwrap();
            assert!(s.write(0, &[9; 8]));
            let hit = g.translate_cached(&mut cache, ia + 8, 16).unwrap();
            assert_eq!(hit.as_ptr(), g.translate(ia + 8, 16).unwrap().as_ptr());
            assert!(
                g.translate_cached(&mut cache, ia + 2 * 4096 - 4, 8)
                    .is_none()
            );
            assert!(
                g.translate_cached(&mut cache, ib, 4096).is_some(),
                "refills"
            );
            assert!(g.translate_cached(&mut cache, ia, 8).is_some());
        }
        drop(b);
        let g = iommu.guard();
        assert!(
            g.translate_cached(&mut cache, ib, 8).is_none(),
            "an unregistration invalidates every cache"
        );
        assert_eq!(
            g.translate_cached(&mut cache, ia + 4096, 8)
                .unwrap()
                .read_u64(0),
            Some(0x0909_0909_0909_0909)
        );
    }

    #[test]
    fn completion_is_written_with_all_dwords() {
        let iommu = Iommu::new("t".into());
        let region = iommu.map(HostMemory::plain(4096).unwrap()).unwrap();
        let g = iommu.guard();
        let s = g.translate(region.iova(0).unwrap(), 4096).unwrap();
        let c = Completion::new(7, 3, 1, 0x42, Status::SUCCESS, true);
        assert!(publish_completion(&s, 16, &c));
        assert!(!publish_completion(&s, 4088, &c), "past the end");
        assert!(!publish_completion(&s, 4, &c), "misaligned");
        let mut raw = [0u8; 16];
        assert!(s.read(16, &mut raw));
        assert_eq!(u32::from_le_bytes(raw[0..4].try_into().unwrap()), 7);
        assert_eq!(
            u32::from_le_bytes(raw[8..12].try_into().unwrap()),
            3 | 1 << 16
        );
        assert_eq!(u32::from_le_bytes(raw[12..16].try_into().unwrap()), c.dw3());
    }
}
