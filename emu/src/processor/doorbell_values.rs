//! Where the processor reads doorbell values (NVMe Base 2.0 §3.1.3.3,
//! Doorbell Buffer Config §5.8): the MMIO doorbells, or the shadow
//! doorbell page of a shadowed I/O queue, and the EventIdx it writes back.

#![forbid(unsafe_code)]

use std::sync::atomic::Ordering;

use super::CommandProcessor;
use crate::device_state::DeviceState;
use crate::guest_memory::DmaGuard;
use crate::shadow_doorbells::ShadowDoorbells;

impl CommandProcessor {
    /// Forget the shadow doorbell buffers (controller reset).
    pub(crate) fn dbbuf_reset(&mut self, sh: &DeviceState) {
        self.dbbuf = None;
        sh.set_shadow_doorbells(false);
    }

    /// Whether SQ/CQ `qid` is shadowed now.
    #[inline]
    pub(crate) fn shadowed(&self, qid: u16) -> bool {
        self.dbbuf.is_some() && ShadowDoorbells::covers(qid)
    }

    /// The SQ tail the device acts on: the shadow slot of a shadowed I/O
    /// queue, otherwise (or when the page cannot be read) the MMIO doorbell.
    #[inline]
    pub(crate) fn sq_tail(&mut self, sh: &DeviceState, g: &DmaGuard<'_>, qid: u16) -> u32 {
        if let Some(b) = self.dbbuf.as_mut()
            && let Some(v) = b.sq_tail(sh, g, qid)
        {
            return v;
        }
        // Acquire: the SQEs the host wrote before ringing are visible.
        sh.doorbells[qid as usize].sq_tail.load(Ordering::Acquire)
    }

    /// The CQ head the device acts on (as [`CommandProcessor::sq_tail`]).
    #[inline]
    pub(crate) fn cq_head(&mut self, sh: &DeviceState, g: &DmaGuard<'_>, qid: u16) -> u32 {
        if let Some(b) = self.dbbuf.as_mut()
            && let Some(v) = b.cq_head(sh, g, qid)
        {
            return v;
        }
        // Acquire: pairs with the host's release of its doorbell write.
        sh.doorbells[qid as usize].cq_head.load(Ordering::Acquire)
    }

    /// After reading `seen` from shadowed SQ `qid`: write its EventIdx and,
    /// when armed, return the shadow tail read again.
    pub(crate) fn sq_event(
        &mut self,
        sh: &DeviceState,
        g: &DmaGuard<'_>,
        qid: u16,
        seen: u32,
        size: u32,
    ) -> Option<u32> {
        let armed = self.armed;
        self.dbbuf.as_mut()?.sq_event(sh, g, qid, seen, size, armed)
    }

    /// The CQ counterpart of [`CommandProcessor::sq_event`].
    pub(crate) fn cq_event(
        &mut self,
        sh: &DeviceState,
        g: &DmaGuard<'_>,
        qid: u16,
        seen: u32,
        size: u32,
    ) -> Option<u32> {
        let armed = self.armed;
        self.dbbuf.as_mut()?.cq_event(sh, g, qid, seen, size, armed)
    }
}
