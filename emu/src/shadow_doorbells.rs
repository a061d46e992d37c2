//! The device side of shadow doorbells (Doorbell Buffer Config, NVMe Base
//! 2.0 §5.8, admin opcode 7Ch, advertised by OACS bit 8): the two pages the
//! host configured, the slot of each queue, reading shadow values and
//! writing EventIdx values.
//!
//! PRP1 names the shadow doorbell page, PRP2 the EventIdx page, both page
//! aligned and laid out like the doorbell registers (stride 4: SQ y tail at
//! 8y, CQ y head at 8y + 4). Only I/O queues are shadowed; the admin queue
//! always uses its MMIO doorbells. A controller reset forgets the buffers.
//!
//! Behaviour follows QEMU's controller (hw/nvme, 7.1 and later): when the
//! device looks at an I/O queue it takes the tail or head from the shadow
//! slot, then writes the value it read as that queue's EventIdx (so the host
//! rings as soon as it moves past it), and after a full fence reads the
//! shadow again to catch an update that raced with the EventIdx store.
//! Existing queues start with their current doorbell values in both pages.
//!
//! One addition for a device thread that polls: while it is awake it reads
//! every shadow slot each round, so it writes an EventIdx one behind the
//! value it read, which no host update can cross (at most size − 1 entries
//! separate them): no MMIO doorbell is asked for. Before parking, the thread
//! runs an armed round with QEMU's values, fence and re-read; a host update
//! after that sees the armed EventIdx and rings, which wakes the thread.

#![forbid(unsafe_code)]

use std::sync::atomic::{Ordering, fence};

use crate::device_state::DeviceState;
use crate::guest_memory::{DmaGuard, TranslationCache};

/// Bytes of each buffer page.
const PAGE: u64 = 4096;

/// Why Doorbell Buffer Config was refused (both are Invalid Field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConfigError {
    /// A page address is not page aligned.
    Misaligned,
    /// A page is not mapped for the device (counted as a DMA fault).
    Unmapped,
}

/// The configured buffers.
pub(crate) struct ShadowDoorbells {
    /// IOVA of the shadow doorbell page (PRP1).
    pub(crate) shadow: u64,
    /// IOVA of the EventIdx page (PRP2).
    pub(crate) event: u64,
    shadow_cache: TranslationCache,
    event_cache: TranslationCache,
}

/// Byte offset of SQ `qid`'s tail slot, or `None` for the admin queue and
/// queues whose slots lie beyond the page.
#[inline]
fn sq_slot(qid: u16) -> Option<u64> {
    let off = qid as u64 * 8;
    (qid != 0 && off + 8 <= PAGE).then_some(off)
}

#[inline]
fn cq_slot(qid: u16) -> Option<u64> {
    sq_slot(qid).map(|off| off + 4)
}

/// The EventIdx to write after reading `seen` from a ring of `size`:
/// `seen` when armed (ring me once you pass it), else one behind it.
#[inline]
fn event_value(seen: u32, size: u32, armed: bool) -> u32 {
    if armed || size == 0 {
        seen
    } else if seen == 0 {
        size - 1
    } else {
        seen - 1
    }
}

impl ShadowDoorbells {
    /// Take the pages of a Doorbell Buffer Config command (PRP1 shadow,
    /// PRP2 EventIdx). Existing I/O queues carry on from their current
    /// values: `sq_tails` and `cq_heads` list (queue ID, value), written to
    /// both pages.
    pub(crate) fn configure(
        st: &DeviceState,
        g: &DmaGuard<'_>,
        shadow: u64,
        event: u64,
        sq_tails: impl IntoIterator<Item = (u16, u32)>,
        cq_heads: impl IntoIterator<Item = (u16, u32)>,
    ) -> Result<Self, ConfigError> {
        if shadow & (PAGE - 1) != 0 || event & (PAGE - 1) != 0 {
            return Err(ConfigError::Misaligned);
        }
        if g.translate(shadow, PAGE as usize).is_none()
            || g.translate(event, PAGE as usize).is_none()
        {
            st.counters.dma_fault();
            return Err(ConfigError::Unmapped);
        }
        let mut b = ShadowDoorbells {
            shadow,
            event,
            shadow_cache: TranslationCache::default(),
            event_cache: TranslationCache::default(),
        };
        for (qid, tail) in sq_tails {
            if let Some(off) = sq_slot(qid) {
                b.store(st, g, shadow, off, tail);
                b.store(st, g, event, off, tail);
            }
        }
        for (qid, head) in cq_heads {
            if let Some(off) = cq_slot(qid) {
                b.store(st, g, shadow, off, head);
                b.store(st, g, event, off, head);
            }
        }
        Ok(b)
    }

    /// Whether SQ/CQ `qid` has slots (I/O queues within the page).
    #[inline]
    pub(crate) fn covers(qid: u16) -> bool {
        sq_slot(qid).is_some()
    }

    /// SQ `qid`'s shadow tail; `None` for a queue without a slot or when
    /// the page cannot be read (a DMA fault, counted).
    #[inline]
    pub(crate) fn sq_tail(&mut self, st: &DeviceState, g: &DmaGuard<'_>, qid: u16) -> Option<u32> {
        self.load(st, g, sq_slot(qid)?)
    }

    /// CQ `qid`'s shadow head (as [`ShadowDoorbells::sq_tail`]).
    #[inline]
    pub(crate) fn cq_head(&mut self, st: &DeviceState, g: &DmaGuard<'_>, qid: u16) -> Option<u32> {
        self.load(st, g, cq_slot(qid)?)
    }

    /// After reading `seen` from SQ `qid`'s shadow slot: write its EventIdx
    /// and, when `armed`, fence and return the shadow tail read again.
    pub(crate) fn sq_event(
        &mut self,
        st: &DeviceState,
        g: &DmaGuard<'_>,
        qid: u16,
        seen: u32,
        size: u32,
        armed: bool,
    ) -> Option<u32> {
        self.event_then_reread(st, g, sq_slot(qid)?, seen, size, armed)
    }

    /// The CQ counterpart of [`ShadowDoorbells::sq_event`].
    pub(crate) fn cq_event(
        &mut self,
        st: &DeviceState,
        g: &DmaGuard<'_>,
        qid: u16,
        seen: u32,
        size: u32,
        armed: bool,
    ) -> Option<u32> {
        self.event_then_reread(st, g, cq_slot(qid)?, seen, size, armed)
    }

    /// Write the EventIdx of the slot at byte `off` for `seen`; when armed,
    /// fence and return the shadow value read again.
    #[inline]
    fn event_then_reread(
        &mut self,
        st: &DeviceState,
        g: &DmaGuard<'_>,
        off: u64,
        seen: u32,
        size: u32,
        armed: bool,
    ) -> Option<u32> {
        let page = self.event;
        self.store(st, g, page, off, event_value(seen, size, armed));
        if !armed {
            return None;
        }
        // Full fence: the EventIdx store must be visible before the shadow
        // is read again, or a host that stored a new tail (or head) and then
        // loaded the old EventIdx would skip its doorbell while we go idle.
        fence(Ordering::SeqCst);
        self.load(st, g, off)
    }

    fn load(&mut self, st: &DeviceState, g: &DmaGuard<'_>, off: u64) -> Option<u32> {
        let v = g
            .translate_cached(&mut self.shadow_cache, self.shadow + off, 4)
            .and_then(|s| s.load_u32(0, Ordering::Acquire));
        if v.is_none() {
            st.counters.dma_fault();
        }
        v
    }

    fn store(&mut self, st: &DeviceState, g: &DmaGuard<'_>, page: u64, off: u64, value: u32) {
        let cache = if page == self.shadow {
            &mut self.shadow_cache
        } else {
            &mut self.event_cache
        };
        let ok = g
            .translate_cached(cache, page + off, 4)
            .is_some_and(|s| s.store_u32(0, value, Ordering::Relaxed));
        if !ok {
            st.counters.dma_fault();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_skip_the_admin_queue_and_stop_at_the_page_end() {
        assert_eq!(sq_slot(0), None);
        assert_eq!((sq_slot(1), cq_slot(1)), (Some(8), Some(12)));
        assert_eq!(cq_slot(511), Some(4092));
        assert_eq!(sq_slot(512), None);
    }

    #[test]
    fn polling_event_idx_is_one_behind_so_no_update_crosses_it() {
        assert_eq!(event_value(5, 8, true), 5);
        assert_eq!(event_value(5, 8, false), 4);
        assert_eq!(event_value(0, 8, false), 7);
    }
}
