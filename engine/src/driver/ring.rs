//! Submission and completion queue rings in DMA memory (NVMe Base 2.0 §4.1,
//! §4.2, §4.6) and the shadow doorbell slots (§5.8, Doorbell Buffer Config).
//!
//! The ring invariants live here and nowhere else:
//! - `head` and `tail` are always `< entries`; they advance by one and wrap
//!   to 0 at `entries`, so an entry offset `index * entry size` is always
//!   inside the ring's window (checked once, in `new`).
//! - An SQ is full when advancing the tail would make it equal the head:
//!   one slot always stays empty. The head only moves to a value the device
//!   reports (CQE.SQHD) that lies between the current head and the tail.
//! - A CQ entry is new when its phase tag equals the expected phase, which
//!   starts at 1 over a zeroed ring and flips each time the head wraps.
//!
//! Memory is reached only through [`crate::dma::DmaView`]: entries are
//! copied in with bounded stores, a completion is observed by first loading
//! its DW3 (CID, phase tag, status) with `Acquire`, then reading the other
//! dwords with volatile loads.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};

use crate::dma::{DmaArray, DmaRegion, DmaWindow};
use crate::spec::{command::Command, completion::Completion};

/// Size of one submission queue entry.
pub(crate) const SQE_BYTES: usize = 64;
/// Size of one completion queue entry.
pub(crate) const CQE_BYTES: usize = 16;

/// A submission queue ring: the host owns the tail, the device reports the
/// head through CQE.SQHD.
pub(crate) struct SqRing {
    /// The ring's `entries` SQEs.
    mem: DmaArray<SQE_BYTES>,
    entries: u16,
    tail: u16,
    /// `next(tail)`, kept with it: the full test is then one compare, and
    /// the push after it does not compute the wrap again.
    next_tail: u16,
    head: u16,
    rung_tail: u16,
}

impl SqRing {
    /// A ring of `entries` (2..=65536 in spec terms; 2..=u16::MAX here) over
    /// `mem`, which must hold `entries` SQEs.
    pub(crate) fn new(mem: DmaWindow, entries: u16) -> Option<Self> {
        if entries < 2 {
            return None;
        }
        let mem = DmaArray::from_window(mem, entries as usize)?;
        mem.window().view().zero();
        Some(SqRing {
            mem,
            entries,
            tail: 0,
            next_tail: 1,
            head: 0,
            rung_tail: 0,
        })
    }

    /// IOVA of the ring base.
    pub(crate) fn iova(&self) -> Option<u64> {
        self.mem.window().iova(0)
    }
    /// Empty the ring for a queue re-created after a controller reset. Only
    /// call it while the device does not use the queue (controller disabled
    /// or queue deleted).
    pub(crate) fn reset(&mut self) {
        self.mem.window().view().zero();
        self.tail = 0;
        self.next_tail = self.next(0);
        self.head = 0;
        self.rung_tail = 0;
    }
    /// Whether the ring is IOVA-contiguous (required with CC/PC=1).
    pub(crate) fn is_contiguous(&self) -> bool {
        self.mem.window().contiguous_len(0) >= self.entries as usize * SQE_BYTES
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

    /// Entries that can be pushed before the ring is full.
    pub(crate) fn free_entries(&self) -> u16 {
        let used = (self.tail + self.entries - self.head) % self.entries;
        self.entries - 1 - used
    }

    #[inline]
    fn next(&self, i: u16) -> u16 {
        if i + 1 == self.entries { 0 } else { i + 1 }
    }

    /// Full when advancing the tail would make it equal the head: one slot
    /// always stays empty.
    #[inline]
    pub(crate) fn is_full(&self) -> bool {
        self.next_tail == self.head
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
        // In bounds: `tail < entries` and the window holds `entries` SQEs.
        // The device only reads entries between head and tail, and this one
        // is past the tail until the doorbell says otherwise, so a plain
        // copy is race-free. It reaches the device before it can look:
        // every doorbell (MMIO or shadow) is written after
        // `doorbell_value`'s release fence, which orders these stores first,
        // as a write barrier does before an SQ doorbell. (A volatile store
        // of the whole entry made the compiler stage it on the stack first:
        // twice the copies.)
        let stored = self
            .mem
            .get(self.tail as usize)
            .is_some_and(|e| e.write_obj(cmd));
        debug_assert!(stored, "SQ tail outside its window");
        self.tail = self.next_tail;
        self.next_tail = self.next(self.next_tail);
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
    /// The ring's `entries` CQEs.
    mem: DmaArray<CQE_BYTES>,
    entries: u16,
    head: u16,
    /// The phase tag a new entry carries, as its DW3 bit (bit 16).
    phase: u32,
}

impl CqRing {
    /// A ring of `entries` over `mem`, zeroed so that no entry carries the
    /// initial phase tag (1).
    pub(crate) fn new(mem: DmaWindow, entries: u16) -> Option<Self> {
        if entries < 2 {
            return None;
        }
        let mem = DmaArray::from_window(mem, entries as usize)?;
        mem.window().view().zero();
        Some(CqRing {
            mem,
            entries,
            head: 0,
            phase: PHASE_BIT,
        })
    }

    /// IOVA of the ring base.
    pub(crate) fn iova(&self) -> Option<u64> {
        self.mem.window().iova(0)
    }
    /// Empty the ring (no entry carries the initial phase tag) for a queue
    /// re-created after a controller reset; same precondition as
    /// [`SqRing::reset`].
    pub(crate) fn reset(&mut self) {
        self.mem.window().view().zero();
        self.head = 0;
        self.phase = PHASE_BIT;
    }
    /// Whether the ring is IOVA-contiguous.
    pub(crate) fn is_contiguous(&self) -> bool {
        self.mem.window().contiguous_len(0) >= self.entries as usize * CQE_BYTES
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
        // In bounds: `head < entries` and the window holds `entries` CQEs;
        // a `None` from the view (impossible) reads as "nothing posted".
        let entry = self.mem.get(self.head as usize)?;
        // Acquire: the other dwords, written by the device before the
        // phase tag, must not be read before this load.
        let dw3 = entry.load_u32(3, Ordering::Acquire)?;
        if dw3 & PHASE_BIT != self.phase {
            return None;
        }
        // Volatile loads: the device wrote these before the phase tag
        // (ordered by the Acquire load above) and will not rewrite the slot
        // until the head doorbell releases it.
        let (dw0, dw1, dw2) = (entry.read_u32(0)?, entry.read_u32(1)?, entry.read_u32(2)?);
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
    /// The shadow doorbell (host writes, device reads).
    shadow: DmaArray<4>,
    /// The EventIdx (device writes, host reads).
    event: DmaArray<4>,
    /// The value last stored in the shadow slot.
    last: u16,
}

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
        let slot = ShadowSlot {
            shadow: DmaArray::new(Arc::clone(region), shadow + off, 1)?,
            event: DmaArray::new(Arc::clone(region), event + off, 1)?,
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
        for slot in [&self.shadow, &self.event] {
            if let Some(word) = slot.get(0) {
                word.store_u32(0, 0, Ordering::Relaxed);
            }
        }
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
        // (Both slots are in bounds and aligned: checked in `new`.)
        if let Some(word) = self.shadow.get(0) {
            word.store_u32(0, new as u32, Ordering::Relaxed);
        }
        // Full fence: the EventIdx load must not be satisfied before the
        // shadow store is visible, or a device going idle in between would
        // miss this update and never be woken.
        fence(Ordering::SeqCst);
        // Relaxed: the value only decides whether to ring; the fence above
        // already ordered it after the shadow store.
        let event = self
            .event
            .get(0)
            .and_then(|w| w.load_u32(0, Ordering::Relaxed));
        let event = event.unwrap_or(0) as u16;
        need_event(event, new, old)
    }

    /// The EventIdx the device last wrote (tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn event(&self) -> u32 {
        let word = self
            .event
            .get(0)
            .and_then(|w| w.load_u32(0, Ordering::Relaxed));
        word.unwrap_or(0)
    }

    /// The value last published.
    #[cfg(test)]
    pub(crate) fn shadow(&self) -> u32 {
        let word = self
            .shadow
            .get(0)
            .and_then(|w| w.load_u32(0, Ordering::Relaxed));
        word.unwrap_or(0)
    }
}

/// Host page size the doorbell buffer pages use.
const PAGE: usize = 4096;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::dma::HostMemory;
    use crate::spec::status::Status;

    pub(crate) fn window(len: usize) -> DmaWindow {
        let mem = HostMemory::plain(len).unwrap();
        let region = Arc::new(DmaRegion::unmapped_for_tests(mem, 0x8000_0000));
        DmaWindow::new(region, 0, len).unwrap()
    }

    /// What a device does: write a CQE at slot `i`.
    fn post(mem: &DmaArray<CQE_BYTES>, i: u16, c: Completion) {
        assert!(mem.get(i as usize).unwrap().write_obj(&c));
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
        assert!(sq.mem.window().view().read(64, &mut raw));
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
        let region = Arc::new(DmaRegion::unmapped_for_tests(mem, 0x8000_0000));
        let mut s = ShadowSlot::new(&region, 4096, 8192, 8).unwrap();
        assert_eq!((s.shadow(), s.event()), (0, 0));
        // EventIdx 0 lies in 0..1: the first update rings.
        assert!(s.update(1));
        assert_eq!(s.shadow(), 1);
        // The device says "tell me after 3": 1..3 does not contain it.
        assert!(s.event.get(0).unwrap().store_u32(0, 3, Ordering::Relaxed));
        assert!(!s.update(3));
        assert!(s.update(5));
        assert!(ShadowSlot::new(&region, 4096, 8192, 4094).is_none());
        assert!(ShadowSlot::new(&region, 4096, 12288, 0).is_none());
        assert!(ShadowSlot::new(&region, 100, 8192, 0).is_none());
    }
}
