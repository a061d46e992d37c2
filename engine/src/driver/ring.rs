//! Submission and completion queue rings in DMA memory (NVMe Base 2.0 §4.1,
//! §4.2, §4.6) and the raw-pointer window type every other driver module uses
//! to touch device-visible memory.
//!
//! This is the driver's only `unsafe` module. No Rust reference ever points at
//! ring memory: entries are written with volatile stores, and a completion is
//! observed by first loading its DW3 (CID, phase tag, status) with `Acquire`
//! through [`AtomicU32::from_ptr`], then reading the other dwords.

use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering, fence};

use crate::dma::DmaRegion;
use crate::spec::{Command, Completion};

/// Size of one submission queue entry.
pub(crate) const SQE_BYTES: usize = 64;
/// Size of one completion queue entry.
pub(crate) const CQE_BYTES: usize = 16;

/// A bounds-checked window of a [`DmaRegion`] reached only through raw
/// pointers. It keeps the region alive.
pub(crate) struct DmaWindow {
    region: Arc<DmaRegion>,
    offset: usize,
    len: usize,
}

// SAFETY: the window is an address range inside a region kept alive by the
// Arc; every access is a raw-pointer operation that does not assume
// exclusivity, and the owner (a queue pair or the admin queue behind a Mutex)
// is the only code that writes through it.
unsafe impl Send for DmaWindow {}

impl DmaWindow {
    /// Never unmap or release the region behind this window (a device that
    /// could not be stopped may still write it).
    pub(crate) fn quarantine(&self) {
        self.region.quarantine();
    }

    /// The window `offset..offset + len` of `region`, or `None` when it does
    /// not fit or is not 8-byte aligned.
    pub(crate) fn new(region: Arc<DmaRegion>, offset: usize, len: usize) -> Option<Self> {
        let end = offset.checked_add(len)?;
        if end > region.len() || !offset.is_multiple_of(8) || len == 0 {
            return None;
        }
        Some(DmaWindow {
            region,
            offset,
            len,
        })
    }

    /// IOVA of byte `off` of the window.
    pub(crate) fn iova(&self, off: usize) -> Option<u64> {
        if off >= self.len {
            return None;
        }
        self.region.iova(self.offset + off)
    }

    /// Bytes from `off` that are IOVA-contiguous inside the window.
    pub(crate) fn contiguous_len(&self, off: usize) -> usize {
        if off >= self.len {
            return 0;
        }
        self.region
            .contiguous_len(self.offset + off)
            .min(self.len - off)
    }

    fn ptr(&self, off: usize, size: usize) -> Option<*mut u8> {
        let end = off.checked_add(size)?;
        if end > self.len {
            return None;
        }
        // SAFETY: offset + off + size <= offset + len <= region length
        // (checked here and in `new`), so the pointer stays inside the mapping.
        Some(unsafe { self.region.as_ptr().add(self.offset + off) })
    }

    /// Volatile store of a little-endian u64 at `off` (8-byte aligned).
    /// Returns false when out of bounds or misaligned.
    pub(crate) fn write_u64(&self, off: usize, value: u64) -> bool {
        if !off.is_multiple_of(8) {
            return false;
        }
        let Some(p) = self.ptr(off, 8) else {
            return false;
        };
        // SAFETY: `p` is in bounds (checked by `ptr`) and 8-byte aligned (the
        // region is page aligned, the window offset and `off` are multiples
        // of 8). Volatile because the device reads this memory.
        unsafe { ptr::write_volatile(p.cast::<u64>(), value.to_le()) };
        true
    }

    /// Volatile load of a little-endian u64 at `off`.
    #[cfg(test)]
    pub(crate) fn read_u64(&self, off: usize) -> Option<u64> {
        if !off.is_multiple_of(8) {
            return None;
        }
        let p = self.ptr(off, 8)?;
        // SAFETY: in bounds and aligned, as in `write_u64`.
        Some(u64::from_le(unsafe { ptr::read_volatile(p.cast::<u64>()) }))
    }

    /// Copy `data` to `off`. Returns false when it does not fit.
    pub(crate) fn write_bytes(&self, off: usize, data: &[u8]) -> bool {
        let Some(p) = self.ptr(off, data.len()) else {
            return false;
        };
        // SAFETY: destination in bounds (checked); `data` is ordinary memory,
        // so the ranges cannot overlap.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
        true
    }

    /// Copy from `off` into `out`. Returns false when out of bounds.
    pub(crate) fn read_bytes(&self, off: usize, out: &mut [u8]) -> bool {
        let Some(p) = self.ptr(off, out.len()) else {
            return false;
        };
        // SAFETY: source in bounds (checked); `out` is ordinary memory.
        unsafe { ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len()) };
        true
    }

    /// Zero the whole window.
    pub(crate) fn zero(&self) {
        if let Some(p) = self.ptr(0, self.len) {
            // SAFETY: the whole window is in bounds.
            unsafe { ptr::write_bytes(p, 0, self.len) };
        }
    }
}

/// A submission queue ring: the host owns the tail, the device reports the
/// head through CQE.SQHD.
pub(crate) struct SqRing {
    mem: DmaWindow,
    /// First byte of the ring: `mem` holds `entries` whole SQEs from here
    /// (checked in `new`) and keeps the memory alive.
    base: *mut u8,
    entries: u16,
    tail: u16,
    head: u16,
    rung_tail: u16,
}

// SAFETY: `base` points into the region `mem` keeps alive; the ring is used
// by one owner at a time like the `DmaWindow` it wraps, which is `Send`.
unsafe impl Send for SqRing {}

impl SqRing {
    /// A ring of `entries` (2..=65536 in spec terms; 2..=u16::MAX here) over
    /// `mem`, which must hold `entries` SQEs.
    pub(crate) fn new(mem: DmaWindow, entries: u16) -> Option<Self> {
        let base = mem.ptr(0, entries as usize * SQE_BYTES)?;
        if entries < 2 {
            return None;
        }
        mem.zero();
        Some(SqRing {
            mem,
            base,
            entries,
            tail: 0,
            head: 0,
            rung_tail: 0,
        })
    }

    /// IOVA of the ring base.
    pub(crate) fn iova(&self) -> Option<u64> {
        self.mem.iova(0)
    }
    /// Empty the ring for a queue re-created after a controller reset. Only
    /// call it while the device does not use the queue (controller disabled
    /// or queue deleted).
    pub(crate) fn reset(&mut self) {
        self.mem.zero();
        self.tail = 0;
        self.head = 0;
        self.rung_tail = 0;
    }
    /// Whether the ring is IOVA-contiguous (required with CC/PC=1).
    pub(crate) fn is_contiguous(&self) -> bool {
        self.mem.contiguous_len(0) >= self.entries as usize * SQE_BYTES
    }
    /// Number of entries.
    pub(crate) fn entries(&self) -> u16 {
        self.entries
    }
    /// The host's tail.
    #[cfg(test)]
    pub(crate) fn tail(&self) -> u16 {
        self.tail
    }
    /// The last head the device reported.
    #[cfg(test)]
    pub(crate) fn head(&self) -> u16 {
        self.head
    }

    #[inline]
    fn next(&self, i: u16) -> u16 {
        if i + 1 == self.entries { 0 } else { i + 1 }
    }

    /// Full when advancing the tail would make it equal the head: one slot
    /// always stays empty.
    #[inline]
    pub(crate) fn is_full(&self) -> bool {
        self.next(self.tail) == self.head
    }

    /// Write `cmd` at the tail and advance it. Returns false when full.
    #[inline]
    pub(crate) fn push(&mut self, cmd: &Command) -> bool {
        if self.is_full() {
            return false;
        }
        self.push_checked(cmd);
        true
    }

    /// Write `cmd` at the tail and advance it, the caller having seen
    /// [`Self::is_full`] false with no push since (the submit path checks
    /// once, in `IoQueuePair::reserve`, not twice). Memory safety does not
    /// rest on that check: the tail stays inside the ring either way.
    #[inline]
    pub(crate) fn push_checked(&mut self, cmd: &Command) {
        debug_assert!(!self.is_full(), "push_checked on a full submission queue");
        // SAFETY: `tail < entries` always (it starts at 0 and `next` wraps
        // at `entries`), and `new` checked that the window holds `entries`
        // SQEs from `base`, so the entry is inside the mapping and 64-byte
        // aligned (the ring base is page aligned); `cmd` is a whole entry
        // elsewhere. The device only reads entries between head and tail,
        // and this one is past the tail until the doorbell says otherwise;
        // nothing else references it, so plain stores are race-free. They
        // reach the device before it can look: every doorbell (MMIO or
        // shadow) is written after `doorbell_value`'s release fence, which
        // orders these stores first, as a write barrier does before an
        // SQ doorbell. (A volatile store of the whole entry made the
        // compiler stage it on the stack first: twice the copies.)
        unsafe {
            let p = self.base.add(self.tail as usize * SQE_BYTES);
            ptr::copy_nonoverlapping(cmd, p.cast::<Command>(), 1);
        }
        self.tail = self.next(self.tail);
    }

    /// Accept a head reported by the device (CQE.SQHD). It must lie inside
    /// the ring and between the current head and the tail (inclusive);
    /// anything else is a device error and is ignored (returns false).
    #[inline]
    pub(crate) fn update_head(&mut self, sqhd: u16) -> bool {
        // Completions of one fetch usually repeat the same head.
        if sqhd == self.head {
            return true;
        }
        // Positions in ring order from the head: sqhd must not be past the
        // tail. Indices below the head come after the wrap.
        let (n, head) = (self.entries as u32, self.head as u32);
        let order = |x: u16| {
            let x = x as u32;
            if x < head { x + n } else { x }
        };
        let ok = (sqhd as u32) < n && order(sqhd) <= order(self.tail);
        if ok {
            self.head = sqhd;
        }
        ok
    }

    /// The tail to write to the doorbell if it moved since the last ring,
    /// after a release fence so the device sees every entry written before.
    #[inline]
    pub(crate) fn doorbell_value(&mut self) -> Option<u16> {
        if self.tail == self.rung_tail {
            return None;
        }
        // Release: entry stores above must be visible before the doorbell
        // store the caller performs next.
        fence(Ordering::Release);
        self.rung_tail = self.tail;
        Some(self.tail)
    }
}

/// The phase tag in a completion's DW3.
const PHASE_BIT: u32 = 1 << 16;

/// A completion queue ring: the device owns the tail, the host the head and
/// the expected phase tag.
pub(crate) struct CqRing {
    mem: DmaWindow,
    /// First byte of the ring: `mem` holds `entries` whole CQEs from here
    /// (checked in `new`) and keeps the memory alive.
    base: *mut u8,
    entries: u16,
    head: u16,
    /// The phase tag a new entry carries, as its DW3 bit (bit 16).
    phase: u32,
}

// SAFETY: as for `SqRing`: `base` points into the region `mem` keeps alive,
// and the ring has one owner at a time.
unsafe impl Send for CqRing {}

impl CqRing {
    /// A ring of `entries` over `mem`, zeroed so that no entry carries the
    /// initial phase tag (1).
    pub(crate) fn new(mem: DmaWindow, entries: u16) -> Option<Self> {
        let base = mem.ptr(0, entries as usize * CQE_BYTES)?;
        if entries < 2 {
            return None;
        }
        mem.zero();
        Some(CqRing {
            mem,
            base,
            entries,
            head: 0,
            phase: PHASE_BIT,
        })
    }

    /// IOVA of the ring base.
    pub(crate) fn iova(&self) -> Option<u64> {
        self.mem.iova(0)
    }
    /// Empty the ring (no entry carries the initial phase tag) for a queue
    /// re-created after a controller reset; same precondition as
    /// [`SqRing::reset`].
    pub(crate) fn reset(&mut self) {
        self.mem.zero();
        self.head = 0;
        self.phase = PHASE_BIT;
    }
    /// Whether the ring is IOVA-contiguous.
    pub(crate) fn is_contiguous(&self) -> bool {
        self.mem.contiguous_len(0) >= self.entries as usize * CQE_BYTES
    }
    /// The host's head.
    #[inline]
    pub(crate) fn head(&self) -> u16 {
        self.head
    }
    /// The phase tag a new entry at the head carries.
    #[cfg(test)]
    pub(crate) fn phase(&self) -> bool {
        self.phase != 0
    }

    /// The entry at the head if the device has posted it.
    #[inline]
    pub(crate) fn peek(&self) -> Option<Completion> {
        // SAFETY: `head < entries` always (it starts at 0 and `advance`
        // wraps at `entries`), and `new` checked that the window holds
        // `entries` CQEs from `base`, so `p` addresses a whole entry inside
        // the mapping.
        let p = unsafe { self.base.add(self.head as usize * CQE_BYTES) };
        // SAFETY: `p` addresses a whole, 16-byte aligned entry inside the
        // ring (base page aligned), so DW3 at +12 is an aligned u32 that
        // lives as long as `self.mem`. The device writes it concurrently,
        // which is why it is accessed atomically.
        let dw3 = unsafe { AtomicU32::from_ptr(p.add(12).cast::<u32>()) }
            // Acquire: the other dwords, written by the device before the
            // phase tag, must not be read before this load.
            .load(Ordering::Acquire);
        if dw3 & PHASE_BIT != self.phase {
            return None;
        }
        // SAFETY: same entry; these dwords are complete once the phase tag
        // matched (ordered by the Acquire load above) and the device will not
        // rewrite the slot until the head doorbell releases it, so nothing
        // writes them concurrently: plain reads, which lets the compiler drop
        // those the caller never uses (DW1 always, DW0 mostly).
        let (dw0, dw1, dw2) = unsafe {
            (
                ptr::read(p.cast::<u32>()),
                ptr::read(p.add(4).cast::<u32>()),
                ptr::read(p.add(8).cast::<u32>()),
            )
        };
        let (dw0, dw1, dw2, dw3) = (
            u32::from_le(dw0),
            u32::from_le(dw1),
            u32::from_le(dw2),
            u32::from_le(dw3),
        );
        Some(Completion {
            dw0,
            dw1,
            sqhd: dw2 as u16,
            sqid: (dw2 >> 16) as u16,
            cid: dw3 as u16,
            status_phase: (dw3 >> 16) as u16,
        })
    }

    /// Consume the entry at the head; the phase flips on wrap.
    #[inline]
    pub(crate) fn advance(&mut self) {
        self.head += 1;
        if self.head == self.entries {
            self.head = 0;
            self.phase ^= PHASE_BIT;
        }
    }
}

/// The virtio "need event" rule the shadow doorbell protocol uses: moving
/// a doorbell from `old` to `new` needs an MMIO write when the device's
/// EventIdx `event` lies in `old..new`. The u16 differences make the test
/// wrap-safe: ring indices wrap at the queue size, all three values are
/// below it, and at most size − 1 entries separate `old` from `new`.
#[inline]
pub(crate) fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// One doorbell's shadow slot and EventIdx slot (Doorbell Buffer Config,
/// admin opcode 7Ch): the host stores the new tail or head in the shadow
/// slot and rings the MMIO doorbell only when [`need_event`] says so.
pub(crate) struct ShadowSlot {
    /// Keeps the doorbell buffer pages alive.
    _region: Arc<DmaRegion>,
    /// The shadow doorbell (host writes, device reads).
    shadow: *mut u32,
    /// The EventIdx (device writes, host reads).
    event: *mut u32,
    /// The value last stored in the shadow slot.
    last: u16,
}

// SAFETY: the pointers address two u32 slots inside the region kept alive by
// `_region`; each slot belongs to one doorbell of one queue pair, and a queue
// pair has one owner thread at a time. Every access is atomic.
unsafe impl Send for ShadowSlot {}

impl ShadowSlot {
    /// The slots at byte `off` of the shadow pages `shadow` and `event`
    /// (each one page of `region`), zeroed. `None` when a slot is out of
    /// bounds or not 4-byte aligned.
    pub(crate) fn new(
        region: &Arc<DmaRegion>,
        shadow: usize,
        event: usize,
        off: usize,
    ) -> Option<Self> {
        let fits = |page: usize| {
            off.is_multiple_of(4)
                && off + 4 <= PAGE
                && page.is_multiple_of(PAGE)
                && page + PAGE <= region.len()
        };
        if !fits(shadow) || !fits(event) {
            return None;
        }
        // SAFETY: both offsets plus 4 bytes are inside the region (checked
        // just above), which is page aligned, so the words are aligned.
        let (shadow, event) = unsafe {
            (
                region.as_ptr().add(shadow + off).cast::<u32>(),
                region.as_ptr().add(event + off).cast::<u32>(),
            )
        };
        let slot = ShadowSlot {
            _region: Arc::clone(region),
            shadow,
            event,
            last: 0,
        };
        slot.clear();
        Some(slot)
    }

    /// Zero both slots (before the queue is created: a stale tail or
    /// EventIdx from an earlier queue with this id must not be used).
    pub(crate) fn clear(&self) {
        // Relaxed: the Create I/O queue command that follows is sent with
        // the admin queue's own release ordering.
        self.shadow_word().store(0, Ordering::Relaxed);
        self.event_word().store(0, Ordering::Relaxed);
    }

    fn shadow_word(&self) -> &AtomicU32 {
        // SAFETY: `shadow` is an aligned u32 inside the region `_region`
        // keeps alive (checked in `new`); the device accesses it only with
        // 32-bit reads, so treating it as an atomic is sound.
        unsafe { AtomicU32::from_ptr(self.shadow) }
    }

    fn event_word(&self) -> &AtomicU32 {
        // SAFETY: as for `shadow_word`; the device writes this word whole.
        unsafe { AtomicU32::from_ptr(self.event) }
    }

    /// Publish `new` in the shadow slot; true when the MMIO doorbell must
    /// be written too. The caller already issued the release fence that
    /// orders the queue entries before this store.
    #[inline]
    pub(crate) fn update(&mut self, new: u16) -> bool {
        let old = self.last;
        self.last = new;
        // Relaxed store: the caller's release fence orders the entries
        // before it, and the SeqCst fence below orders it before the load.
        self.shadow_word().store(new as u32, Ordering::Relaxed);
        // Full fence: the EventIdx load must not be satisfied before the
        // shadow store is visible, or a device going idle in between would
        // miss this update and never be woken.
        fence(Ordering::SeqCst);
        // Relaxed: the value only decides whether to ring; the fence above
        // already ordered it after the shadow store.
        let event = self.event_word().load(Ordering::Relaxed) as u16;
        need_event(event, new, old)
    }

    /// The EventIdx the device last wrote (tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn event(&self) -> u32 {
        self.event_word().load(Ordering::Relaxed)
    }

    /// The value last published.
    #[cfg(test)]
    pub(crate) fn shadow(&self) -> u32 {
        self.shadow_word().load(Ordering::Relaxed)
    }
}

/// Host page size the doorbell buffer pages use.
const PAGE: usize = 4096;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::dma::HostMemory;
    use crate::spec::Status;

    pub(crate) fn window(len: usize) -> DmaWindow {
        let mem = HostMemory::plain(len).unwrap();
        let region = Arc::new(DmaRegion::contiguous(mem, 0x8000_0000, None));
        DmaWindow::new(region, 0, len).unwrap()
    }

    /// What a device does: write a CQE at slot `i`.
    fn post(mem: &DmaWindow, i: u16, c: Completion) {
        use zerocopy::IntoBytes;
        assert!(mem.write_bytes(i as usize * CQE_BYTES, c.as_bytes()));
    }

    #[test]
    fn sq_full_keeps_one_slot_empty_and_head_frees_space() {
        let mut sq = SqRing::new(window(4096), 4).unwrap();
        let c = Command::new(1, 1);
        assert!(sq.push(&c) && sq.push(&c) && sq.push(&c));
        assert!(sq.is_full());
        assert!(!sq.push(&c));
        assert!(sq.update_head(2));
        assert!(sq.push(&c) && sq.push(&c));
        assert_eq!(sq.tail(), 1);
        assert!(sq.is_full());
    }

    #[test]
    fn sq_head_outside_ring_or_past_tail_is_rejected() {
        let mut sq = SqRing::new(window(4096), 8).unwrap();
        let c = Command::new(1, 1);
        for _ in 0..3 {
            sq.push(&c);
        }
        assert!(!sq.update_head(8), "outside the ring");
        assert!(!sq.update_head(4), "ahead of the tail");
        assert!(sq.update_head(3));
        assert!(!sq.update_head(2), "moving backwards");
        assert_eq!(sq.head(), 3);
    }

    #[test]
    fn sq_head_is_checked_across_the_wrap() {
        let mut sq = SqRing::new(window(4096), 8).unwrap();
        let c = Command::new(1, 1);
        for _ in 0..6 {
            sq.push(&c);
        }
        assert!(sq.update_head(6));
        // Tail wraps: 6, 7, 0, 1 are in flight; the tail is 2.
        for _ in 0..4 {
            assert!(sq.push(&c));
        }
        assert_eq!(sq.tail(), 2);
        assert!(!sq.update_head(5), "behind the head");
        assert!(!sq.update_head(3), "ahead of the tail");
        assert!(!sq.update_head(9), "outside the ring");
        assert!(sq.update_head(7));
        assert!(sq.update_head(0), "across the wrap");
        assert!(!sq.update_head(7), "moving backwards across the wrap");
        assert!(sq.update_head(2), "up to the tail");
        assert_eq!(sq.head(), 2);
        assert!(!sq.update_head(1));
    }

    #[test]
    fn sq_doorbell_only_when_tail_moved() {
        let mut sq = SqRing::new(window(4096), 8).unwrap();
        assert_eq!(sq.doorbell_value(), None);
        let mut c = Command::new(2, 1);
        c.set_cid(0x77);
        sq.push(&c);
        sq.push(&c);
        assert_eq!(sq.doorbell_value(), Some(2));
        assert_eq!(sq.doorbell_value(), None);
        let mut raw = [0u8; 64];
        assert!(sq.mem.read_bytes(64, &mut raw));
        assert_eq!(u16::from_le_bytes([raw[2], raw[3]]), 0x77);
    }

    #[test]
    fn cq_phase_flips_on_every_wrap() {
        let mut cq = CqRing::new(window(4096), 3).unwrap();
        assert!(cq.peek().is_none());
        let mut phase = true;
        for n in 0..10u16 {
            let slot = cq.head();
            assert_eq!(cq.phase(), phase);
            // An entry with the old phase is not new.
            post(
                &cq.mem,
                slot,
                Completion::new(0, 0, 1, n, Status::SUCCESS, !phase),
            );
            assert!(cq.peek().is_none());
            post(
                &cq.mem,
                slot,
                Completion::new(n as u32, 5, 1, n, Status::SUCCESS, phase),
            );
            let got = cq.peek().unwrap();
            assert_eq!((got.cid, got.dw0, got.sqhd, got.sqid), (n, n as u32, 5, 1));
            cq.advance();
            if slot == 2 {
                phase = !phase;
            }
        }
        assert_eq!(cq.head(), 1);
        assert!(!cq.phase(), "three wraps flip the phase three times");
    }

    #[test]
    fn need_event_rings_only_when_event_idx_lies_between_old_and_new() {
        // Plain window 3..7.
        assert!(need_event(3, 7, 3));
        assert!(need_event(6, 7, 3));
        assert!(!need_event(7, 7, 3));
        assert!(!need_event(2, 7, 3));
        // The device caught up with the old value: ring.
        assert!(need_event(5, 6, 5));
        // Window across the ring wrap (size 8): 6, 7, 0.
        for (e, want) in [
            (6, true),
            (7, true),
            (0, true),
            (1, false),
            (5, false),
            (3, false),
        ] {
            assert_eq!(need_event(e, 1, 6), want, "event {e}");
        }
        // Nothing moved: never ring.
        assert!(!need_event(4, 4, 4));
    }

    #[test]
    fn shadow_slot_publishes_and_asks_event_idx() {
        let mem = HostMemory::plain(3 * 4096).unwrap();
        let region = Arc::new(DmaRegion::contiguous(mem, 0x8000_0000, None));
        let mut s = ShadowSlot::new(&region, 4096, 8192, 8).unwrap();
        assert_eq!((s.shadow(), s.event()), (0, 0));
        // EventIdx 0 lies in 0..1: the first update rings.
        assert!(s.update(1));
        assert_eq!(s.shadow(), 1);
        // The device says "tell me after 3": 1..3 does not contain it.
        s.event_word().store(3, Ordering::Relaxed);
        assert!(!s.update(3));
        assert!(s.update(5));
        assert!(ShadowSlot::new(&region, 4096, 8192, 4094).is_none());
        assert!(ShadowSlot::new(&region, 4096, 12288, 0).is_none());
        assert!(ShadowSlot::new(&region, 100, 8192, 0).is_none());
    }

    #[test]
    fn window_rejects_out_of_bounds_access() {
        let w = window(4096);
        assert!(w.write_u64(4088, 7));
        assert_eq!(w.read_u64(4088), Some(7));
        assert!(!w.write_u64(4096, 1));
        assert!(!w.write_u64(4, 1));
        assert!(!w.write_bytes(4095, &[1, 2]));
        assert_eq!(w.iova(8), Some(0x8000_0008));
        assert_eq!(w.iova(4096), None);
    }
}
