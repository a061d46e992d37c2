//! The emulated IOMMU: host memory registered by `map_dma`, the I/O virtual
//! addresses handed out for it, and every DMA access the controller makes
//! (queue entries, PRP lists, data), translated and bounds-checked.
//!
//! This is the only file of the emulator with `unsafe`. The rules it keeps:
//! - the controller reaches host memory only through a [`DmaSlice`], which
//!   exists only inside a [`DmaGuard`] and only for a range that lies inside a
//!   live registration (a [`TranslationCache`] remembers such a range only
//!   as long as no registration has been removed since it was filled: every
//!   unregistration bumps a generation before waiting for guards);
//! - unregistering waits until no guard is held, so memory is never freed
//!   under an access in progress;
//! - no Rust reference into host memory is ever made: the host may write it
//!   at any time, so all access is by raw-pointer copies, and a completion's
//!   last dword is published with a release store.
//!
//! IOVAs start at 4 GiB and are never equal to virtual addresses. Hugepage
//! memory gets one IOVA range per 2 MiB chunk with an unmapped 2 MiB gap
//! after each, so a driver that assumes contiguity across chunks faults
//! instead of silently working.

use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use nvme_engine::dma::{DmaError, DmaRegion, HostMemory};
use nvme_engine::spec::{Command, Completion};

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
    pub(crate) fn translate(&self, iova: u64, len: usize) -> Option<DmaSlice<'_>> {
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
    ) -> Option<DmaSlice<'_>> {
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
    ) -> Option<DmaSlice<'_>> {
        let off = iova.checked_sub(start)? as usize;
        if off >= piece_len || len > piece_len - off {
            return None;
        }
        Some(DmaSlice {
            ptr: (host + off) as *mut u8,
            len,
            _guard: std::marker::PhantomData,
        })
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

/// A translated, bounds-checked range of host DMA memory, valid while its
/// guard lives. Every accessor checks its offsets against the range.
pub(crate) struct DmaSlice<'g> {
    ptr: *mut u8,
    len: usize,
    _guard: std::marker::PhantomData<&'g DmaGuard<'g>>,
}

impl DmaSlice<'_> {
    #[inline]
    fn fits(&self, off: usize, n: usize) -> bool {
        off.checked_add(n).is_some_and(|end| end <= self.len)
    }

    /// Length of the range.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Copy host memory at `off` into `dst`. False when out of range.
    #[inline]
    pub(crate) fn read(&self, off: usize, dst: &mut [u8]) -> bool {
        if !self.fits(off, dst.len()) {
            return false;
        }
        // SAFETY: the source lies inside a live registration (checked by
        // `translate` and `fits`) that cannot be unregistered while the guard
        // lives; `dst` is ordinary memory owned by the caller, so the ranges
        // do not overlap. The host may write the source concurrently; a raw
        // byte copy never forms a reference to it.
        unsafe { ptr::copy_nonoverlapping(self.ptr.add(off), dst.as_mut_ptr(), dst.len()) };
        true
    }

    /// Copy `src` into host memory at `off`. False when out of range.
    #[inline]
    pub(crate) fn write(&self, off: usize, src: &[u8]) -> bool {
        if !self.fits(off, src.len()) {
            return false;
        }
        // SAFETY: as in `read`: the destination is inside a live registration
        // held by the guard; `src` is caller memory, disjoint from it.
        unsafe { ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(off), src.len()) };
        true
    }

    /// Read the little-endian u64 at `off` (a PRP list entry).
    #[inline]
    pub(crate) fn read_u64(&self, off: usize) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(off, &mut b).then(|| u64::from_le_bytes(b))
    }

    /// Load the little-endian u32 at `off` (a shadow doorbell the host
    /// updates concurrently). `None` when out of range or not 4-byte aligned.
    #[inline]
    pub(crate) fn load_u32(&self, off: usize) -> Option<u32> {
        if !self.fits(off, 4) || !(self.ptr as usize + off).is_multiple_of(4) {
            return None;
        }
        // SAFETY: 4 bytes inside the live registration, 4-byte aligned (both
        // checked). The host stores this word atomically; an atomic load
        // through the aligned pointer forms no reference to plain memory.
        let v = unsafe { AtomicU32::from_ptr(self.ptr.add(off).cast::<u32>()) }
            // Acquire: queue entries the host wrote before publishing the
            // new tail are visible once it is seen.
            .load(Ordering::Acquire);
        Some(u32::from_le(v))
    }

    /// Store `value` as a little-endian u32 at `off` (an EventIdx). False
    /// when out of range or not 4-byte aligned.
    #[inline]
    pub(crate) fn store_u32(&self, off: usize, value: u32) -> bool {
        if !self.fits(off, 4) || !(self.ptr as usize + off).is_multiple_of(4) {
            return false;
        }
        // SAFETY: as in `load_u32`; the host reads this word atomically.
        unsafe { AtomicU32::from_ptr(self.ptr.add(off).cast::<u32>()) }
            // Relaxed: callers that need ordering issue a full fence next.
            .store(value.to_le(), Ordering::Relaxed);
        true
    }

    /// Read the submission queue entry at `off`.
    #[inline]
    pub(crate) fn read_command(&self, off: usize) -> Option<Command> {
        if !self.fits(off, size_of::<Command>()) {
            return None;
        }
        // SAFETY: 64 bytes inside the live registration (checked); Command
        // is plain old data valid for any bit pattern, and read_unaligned
        // copies without forming a reference or requiring alignment.
        Some(unsafe { ptr::read_unaligned(self.ptr.add(off).cast::<Command>()) })
    }

    /// Publish the completion queue entry at `off`: DW0..DW2 first, then DW3
    /// (CID, phase, status) with a release store, so a host that loads DW3
    /// with acquire and sees the new phase also sees the rest.
    #[inline]
    pub(crate) fn write_completion(&self, off: usize, c: &Completion) -> bool {
        if !self.fits(off, 16) || !(self.ptr as usize + off).is_multiple_of(4) {
            return false;
        }
        let dw2 = c.sqhd as u32 | (c.sqid as u32) << 16;
        // SAFETY: 16 bytes inside the live registration, 4-byte aligned
        // (both checked above). Plain volatile stores for DW0..DW2 (the host
        // does not read them before DW3); DW3 through an atomic made from the
        // aligned pointer — the host accesses that dword only atomically.
        unsafe {
            let p = self.ptr.add(off).cast::<u32>();
            ptr::write_volatile(p, c.dw0);
            ptr::write_volatile(p.add(1), c.dw1);
            ptr::write_volatile(p.add(2), dw2);
            // Release: DW0..DW2 become visible no later than the phase flip.
            AtomicU32::from_ptr(p.add(3)).store(c.dw3(), Ordering::Release);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvme_engine::dma::PageSize;
    use nvme_engine::spec::Status;

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
            assert_eq!(hit.ptr, g.translate(ia + 8, 16).unwrap().ptr);
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
        assert!(s.write_completion(16, &c));
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
