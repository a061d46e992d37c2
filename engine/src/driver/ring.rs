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
        // SAFETY: `tail < entries` always (it starts at 0 and `next` wraps
        // at `entries`), and `new` checked that the window holds `entries`
        // SQEs from `base`, so the entry is inside the mapping and 64-byte
        // aligned (the ring base is page aligned). The device only reads
        // entries between head and tail, and this one is past the tail until
        // the doorbell says otherwise; nothing else references it.
        unsafe {
            let p = self.base.add(self.tail as usize * SQE_BYTES);
            ptr::write_volatile(p.cast::<Command>(), *cmd);
        }
        self.tail = self.next(self.tail);
        true
    }

    /// Accept a head reported by the device (CQE.SQHD). It must lie inside
    /// the ring and between the current head and the tail (inclusive);
    /// anything else is a device error and is ignored (returns false).
    #[inline]
    pub(crate) fn update_head(&mut self, sqhd: u16) -> bool {
        let (head, tail) = (self.head, self.tail);
        let ok = if head <= tail {
            // Not wrapped: head..=tail, all inside the ring.
            head <= sqhd && sqhd <= tail
        } else {
            // Wrapped: head..entries, then 0..=tail.
            sqhd < self.entries && (sqhd >= head || sqhd <= tail)
        };
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

/// A completion queue ring: the device owns the tail, the host the head and
/// the expected phase tag.
pub(crate) struct CqRing {
    mem: DmaWindow,
    /// First byte of the ring: `mem` holds `entries` whole CQEs from here
    /// (checked in `new`) and keeps the memory alive.
    base: *mut u8,
    entries: u16,
    head: u16,
    phase: bool,
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
            phase: true,
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
        self.phase = true;
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
        self.phase
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
        let phase = dw3 & (1 << 16) != 0;
        if phase != self.phase {
            return None;
        }
        // SAFETY: same entry; these dwords are complete once the phase tag
        // matched (ordered by the Acquire load above) and the device will not
        // rewrite the slot until the head doorbell releases it.
        let (dw0, dw1, dw2) = unsafe {
            (
                ptr::read_volatile(p.cast::<u32>()),
                ptr::read_volatile(p.add(4).cast::<u32>()),
                ptr::read_volatile(p.add(8).cast::<u32>()),
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
            self.phase = !self.phase;
        }
    }
}

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
