//! The device side of shadow doorbells: Doorbell Buffer Config (NVMe Base
//! 2.0 §5.8, admin opcode 7Ch, advertised by OACS bit 8).
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

use super::controller::Shared;
use super::engine::{Done, Engine, generic_err};
use super::memory::{DmaGuard, TranslationCache};
use nvme_engine::spec::Command;
use nvme_engine::spec::status::generic;

/// Bytes of each buffer page.
const PAGE: u64 = 4096;

/// The configured buffers.
pub(crate) struct DbBuf {
    pub(crate) shadow: u64,
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

impl DbBuf {
    fn load(&mut self, sh: &Shared, g: &DmaGuard<'_>, off: u64) -> Option<u32> {
        let v = g
            .translate_cached(&mut self.shadow_cache, self.shadow + off, 4)
            .and_then(|s| s.load_u32(0));
        if v.is_none() {
            sh.counters.dma_fault();
        }
        v
    }

    fn store(&mut self, sh: &Shared, g: &DmaGuard<'_>, page: u64, off: u64, value: u32) {
        let cache = if page == self.shadow {
            &mut self.shadow_cache
        } else {
            &mut self.event_cache
        };
        let ok = g
            .translate_cached(cache, page + off, 4)
            .is_some_and(|s| s.store_u32(0, value));
        if !ok {
            sh.counters.dma_fault();
        }
    }
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

impl Engine {
    /// Doorbell Buffer Config.
    pub(crate) fn dbbuf_config(&mut self, sh: &Shared, g: &DmaGuard<'_>, cmd: &Command) -> Done {
        let (shadow, event) = (cmd.prp1, cmd.prp2);
        if shadow & (PAGE - 1) != 0 || event & (PAGE - 1) != 0 {
            return Done::err(generic_err(generic::INVALID_FIELD));
        }
        if g.translate(shadow, PAGE as usize).is_none()
            || g.translate(event, PAGE as usize).is_none()
        {
            sh.counters.dma_fault();
            return Done::err(generic_err(generic::INVALID_FIELD));
        }
        let mut b = DbBuf {
            shadow,
            event,
            shadow_cache: TranslationCache::default(),
            event_cache: TranslationCache::default(),
        };
        // Existing I/O queues carry on from their current doorbell values.
        for &qid in &self.active_sqs {
            if let (Some(off), Some(sq)) = (sq_slot(qid), self.sqs[qid as usize].as_mut()) {
                let tail = sh.doorbells[qid as usize].sq_tail.load(Ordering::Acquire);
                b.store(sh, g, shadow, off, tail);
                b.store(sh, g, event, off, tail);
                sq.shadow_seen = tail;
            }
        }
        for &qid in &self.active_cqs {
            if let (Some(off), Some(cq)) = (cq_slot(qid), self.cqs[qid as usize].as_ref()) {
                b.store(sh, g, shadow, off, cq.head);
                b.store(sh, g, event, off, cq.head);
            }
        }
        self.dbbuf = Some(b);
        sh.set_shadow_doorbells(true);
        Done::ok(0)
    }

    /// Forget the buffers (controller reset).
    pub(crate) fn dbbuf_reset(&mut self, sh: &Shared) {
        self.dbbuf = None;
        sh.set_shadow_doorbells(false);
    }

    /// Whether SQ/CQ `qid` is shadowed now.
    #[inline]
    pub(crate) fn shadowed(&self, qid: u16) -> bool {
        self.dbbuf.is_some() && sq_slot(qid).is_some()
    }

    /// The SQ tail the device acts on: the shadow slot of a shadowed I/O
    /// queue, otherwise (or when the page cannot be read) the MMIO doorbell.
    #[inline]
    pub(crate) fn sq_tail(&mut self, sh: &Shared, g: &DmaGuard<'_>, qid: u16) -> u32 {
        if let (Some(b), Some(off)) = (self.dbbuf.as_mut(), sq_slot(qid))
            && let Some(v) = b.load(sh, g, off)
        {
            return v;
        }
        // Acquire: the SQEs the host wrote before ringing are visible.
        sh.doorbells[qid as usize].sq_tail.load(Ordering::Acquire)
    }

    /// The CQ head the device acts on (as [`Engine::sq_tail`]).
    #[inline]
    pub(crate) fn cq_head(&mut self, sh: &Shared, g: &DmaGuard<'_>, qid: u16) -> u32 {
        if let (Some(b), Some(off)) = (self.dbbuf.as_mut(), cq_slot(qid))
            && let Some(v) = b.load(sh, g, off)
        {
            return v;
        }
        // Acquire: pairs with the host's release of its doorbell write.
        sh.doorbells[qid as usize].cq_head.load(Ordering::Acquire)
    }

    /// After reading `seen` from SQ `qid`'s shadow slot: write its EventIdx
    /// and, when armed, fence and return the shadow tail read again.
    pub(crate) fn sq_event(
        &mut self,
        sh: &Shared,
        g: &DmaGuard<'_>,
        qid: u16,
        seen: u32,
        size: u32,
    ) -> Option<u32> {
        self.event_then_reread(sh, g, sq_slot(qid)?, seen, size)
    }

    /// The CQ counterpart of [`Engine::sq_event`].
    pub(crate) fn cq_event(
        &mut self,
        sh: &Shared,
        g: &DmaGuard<'_>,
        qid: u16,
        seen: u32,
        size: u32,
    ) -> Option<u32> {
        self.event_then_reread(sh, g, cq_slot(qid)?, seen, size)
    }

    /// Write the EventIdx of the slot at byte `off` for `seen`; when armed,
    /// fence and return the shadow value read again.
    #[inline]
    fn event_then_reread(
        &mut self,
        sh: &Shared,
        g: &DmaGuard<'_>,
        off: u64,
        seen: u32,
        size: u32,
    ) -> Option<u32> {
        let armed = self.armed;
        let b = self.dbbuf.as_mut()?;
        let page = b.event;
        b.store(sh, g, page, off, event_value(seen, size, armed));
        if !armed {
            return None;
        }
        // Full fence: the EventIdx store must be visible before the shadow
        // is read again, or a host that stored a new tail (or head) and then
        // loaded the old EventIdx would skip its doorbell while we go idle.
        fence(Ordering::SeqCst);
        b.load(sh, g, off)
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
