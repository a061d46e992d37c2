//! Shadow doorbells: Doorbell Buffer Config (NVMe Base 2.0 §5.8, admin
//! opcode 7Ch; supported when Identify Controller OACS bit 8 is set).
//!
//! Per controller, one page of shadow doorbells and one page of EventIdx
//! values, both laid out like the doorbell registers (SQ y tail at
//! 2y·stride, CQ y head at (2y+1)·stride). An I/O queue pair stores each new
//! tail or head in its shadow slot and writes the MMIO doorbell only when the
//! device's EventIdx asks for it ([`crate::driver::ring::need_event`]); the admin
//! queue always uses MMIO.
//!
//! The device forgets the buffers on every controller reset, so they are
//! zeroed and configured again after each one. A queue pair takes its slots
//! only from the generation in which the configuration succeeded; in any
//! other generation (configuration refused, or not yet redone) it rings MMIO
//! doorbells as without the feature.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::device::Device;
use crate::dma::{self, DmaRegion};
use crate::spec::command::{AdminOpcode, Command};
use crate::spec::identify::OACS_DOORBELL_BUFFER_CONFIG;
use crate::spec::registers::{cq_head_doorbell, offset, sq_tail_doorbell};

use super::Inner;
use crate::dma::DmaWindow;
use crate::driver::admin::{AdminData, AdminQueue};
use crate::driver::error::DriverError;
use crate::driver::prp::PAGE_SIZE;
use crate::driver::ring::ShadowSlot;

/// `configured` value meaning "not configured in any generation".
const NOT_CONFIGURED: u64 = u64::MAX;

/// The shadow doorbell and EventIdx pages of one controller.
pub(crate) struct DoorbellBuffer {
    region: Arc<DmaRegion>,
    pages: DmaWindow,
    stride: usize,
    /// The reset generation in which the controller accepted the buffers,
    /// or `NOT_CONFIGURED`.
    configured: AtomicU64,
    /// Times the controller accepted the configuration (bring-up and resets).
    configurations: AtomicU64,
}

/// Byte offset of the shadow page in the region; the EventIdx page follows.
const SHADOW: usize = 0;
const EVENT: usize = PAGE_SIZE;

impl DoorbellBuffer {
    /// Keep both pages mapped and allocated for good: a controller that
    /// could not be stopped may still write EventIdx values into them.
    pub(crate) fn quarantine(&self) {
        self.region.quarantine();
    }

    /// Allocate the two pages when the controller supports the command
    /// (`oacs`) and the option asks for it. Allocation failure is an error:
    /// the caller asked for the feature and DMA memory is short.
    pub(crate) fn allocate<D: Device>(
        device: &D,
        oacs: u16,
        wanted: bool,
        stride: usize,
    ) -> Result<Option<Self>, DriverError> {
        if !wanted || oacs & OACS_DOORBELL_BUFFER_CONFIG == 0 {
            return Ok(None);
        }
        let region =
            Arc::new(
                dma::allocate(device, 2 * PAGE_SIZE).map_err(|source| DriverError::Dma {
                    what: "the shadow doorbell buffers",
                    source,
                })?,
            );
        let pages = DmaWindow::new(Arc::clone(&region), 0, 2 * PAGE_SIZE).ok_or(
            DriverError::QueueMemory {
                what: "shadow doorbell buffers",
                bytes: 2 * PAGE_SIZE,
            },
        )?;
        Ok(Some(DoorbellBuffer {
            region,
            pages,
            stride,
            configured: AtomicU64::new(NOT_CONFIGURED),
            configurations: AtomicU64::new(0),
        }))
    }

    /// Forget the configuration (a reset started: the device dropped it).
    pub(crate) fn invalidate(&self) {
        self.configured.store(NOT_CONFIGURED, Ordering::Relaxed);
    }

    /// Zero both pages and send Doorbell Buffer Config on the (idle, just
    /// enabled) admin queue. Records `generation` as configured on success;
    /// a refusal leaves the controller on MMIO doorbells.
    pub(crate) fn configure<D: Device>(
        &self,
        device: &D,
        admin: &mut AdminQueue,
        generation: u64,
    ) -> Result<(), DriverError> {
        self.invalidate();
        // No I/O queue exists yet in this controller life: nothing reads
        // the pages, and stale tails or EventIdx values must not survive.
        self.pages.view().zero();
        let (Some(shadow), Some(event)) = (self.pages.iova(SHADOW), self.pages.iova(EVENT)) else {
            return Err(DriverError::QueueMemory {
                what: "shadow doorbell buffers",
                bytes: 2 * PAGE_SIZE,
            });
        };
        let mut cmd = Command::new(AdminOpcode::DOORBELL_BUFFER_CONFIG.0, 0);
        cmd.prp1 = shadow;
        cmd.prp2 = event;
        admin.execute(device, cmd, AdminData::None)?;
        self.configurations.fetch_add(1, Ordering::Relaxed);
        // Relaxed: published to queue pairs by the release store of the
        // controller's state word that follows.
        self.configured.store(generation, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the buffers are configured in `generation`.
    pub(crate) fn configured_in(&self, generation: u64) -> bool {
        self.configured.load(Ordering::Relaxed) == generation
    }

    /// Times the controller accepted the configuration.
    pub(crate) fn configurations(&self) -> u64 {
        self.configurations.load(Ordering::Relaxed)
    }

    /// Byte offset of a doorbell inside the pages (its register offset
    /// minus the doorbell base).
    fn slot_offset(doorbell: usize) -> usize {
        doorbell - offset::DOORBELLS
    }

    /// The zeroed SQ tail and CQ head slots of queue `qid`, or `None` when
    /// they do not fit in the page (very high queue ids with a wide stride).
    pub(crate) fn slots(&self, qid: u16) -> Option<(ShadowSlot, ShadowSlot)> {
        let sq = Self::slot_offset(sq_tail_doorbell(qid, self.stride));
        let cq = Self::slot_offset(cq_head_doorbell(qid, self.stride));
        Some((
            ShadowSlot::new(&self.region, SHADOW, EVENT, sq)?,
            ShadowSlot::new(&self.region, SHADOW, EVENT, cq)?,
        ))
    }
}

/// A queue pair's SQ tail and CQ head shadow slots.
pub(crate) type ShadowPair = (ShadowSlot, ShadowSlot);

/// Zeroed shadow slots for queue `qid`, taken before its queues are
/// created (so the device never reads a tail left by an earlier queue
/// with this id), when the controller has a doorbell buffer.
impl<D: Device> Inner<D> {
    pub(crate) fn shadow_slots(&self, qid: u16) -> Option<ShadowPair> {
        self.dbbuf.as_ref()?.slots(qid)
    }

    /// Keep `slots` only when the buffers are configured in `generation`,
    /// the generation the queues were just created in.
    pub(crate) fn keep_if_configured(
        &self,
        slots: Option<ShadowPair>,
        generation: u64,
    ) -> Option<ShadowPair> {
        slots.filter(|_| self.shadow_configured_in(generation))
    }

    /// Whether the shadow doorbell buffers were accepted in `generation`.
    pub(crate) fn shadow_configured_in(&self, generation: u64) -> bool {
        self.dbbuf
            .as_ref()
            .is_some_and(|b| b.configured_in(generation))
    }

    /// Times the controller accepted the shadow doorbell buffers.
    pub(crate) fn shadow_configurations(&self) -> u64 {
        self.dbbuf.as_ref().map_or(0, |b| b.configurations())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dma::{DmaError, HostMemory};

    struct Plain;
    impl Device for Plain {
        fn read32(&self, _: usize) -> u32 {
            0
        }
        fn write32(&self, _: usize, _: u32) {}
        fn map_dma(&self, m: HostMemory) -> Result<DmaRegion, DmaError> {
            Ok(DmaRegion::unmapped_for_tests(m, 0x4000_0000))
        }
        fn allows_plain_memory(&self) -> bool {
            true
        }
        fn name(&self) -> String {
            "plain".into()
        }
    }

    #[test]
    fn not_allocated_without_oacs_bit_or_when_turned_off() {
        assert!(
            DoorbellBuffer::allocate(&Plain, 0, true, 4)
                .unwrap()
                .is_none()
        );
        assert!(
            DoorbellBuffer::allocate(&Plain, OACS_DOORBELL_BUFFER_CONFIG, false, 4)
                .unwrap()
                .is_none()
        );
        assert!(
            DoorbellBuffer::allocate(&Plain, OACS_DOORBELL_BUFFER_CONFIG, true, 4)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn slots_follow_the_doorbell_layout_and_stop_at_the_page_end() {
        let b = DoorbellBuffer::allocate(&Plain, OACS_DOORBELL_BUFFER_CONFIG, true, 4)
            .unwrap()
            .unwrap();
        assert!(b.slots(1).is_some());
        assert!(b.slots(511).is_some(), "SQ 511 at 4088, CQ 511 at 4092");
        assert!(b.slots(512).is_none());
        let wide = DoorbellBuffer::allocate(&Plain, OACS_DOORBELL_BUFFER_CONFIG, true, 16)
            .unwrap()
            .unwrap();
        assert!(wide.slots(127).is_some());
        assert!(wide.slots(128).is_none());
        assert!(!b.configured_in(0));
    }
}
