//! The PCIe transport of a queue pair (NVMe Base 2.0 §3.3.1 queues, §4.1
//! doorbells, §4.3 PRPs, §5.3–§5.7 queue creation and deletion): the SQ and
//! CQ rings in host memory, the doorbells (MMIO, or the shadow doorbells of
//! Doorbell Buffer Config), the per-slot PRP-list pages, and how the queue
//! follows its controller through resets and removal. Works over every
//! [`Device`]: VFIO, uio and the emulated controller.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use zerocopy::IntoBytes;

use crate::device::Device;
use crate::dma::{self, DmaBuf, DmaWindow};
use crate::spec::command::{AdminOpcode, Command};
use crate::spec::identify::SglSupport;
use crate::spec::registers::{ALL_ONES, Csts, cq_head_doorbell, offset, sq_tail_doorbell};
use crate::spec::status::generic;
use crate::spec::status::{Status, StatusCodeType};

use crate::driver::admin::AdminData;
use crate::driver::error::{DeviceGone, DriverError, IoError, SubmitErrorKind};
use crate::driver::namespace::LbaRange;
use crate::driver::prp::{self, PAGE_SIZE, WindowSink, pages};
use crate::driver::ring::{CQE_BYTES, CqRing, SQE_BYTES, SqRing};
use crate::driver::shared::dbbuf::ShadowPair;
use crate::driver::shared::fence::{Fence, UNPROVEN};
use crate::driver::shared::hold::UserHold;
use crate::driver::shared::recovery::{Health, generation_of, health_of, live_word};
use crate::driver::transport::DataPointer;
use crate::driver::transport::{
    CancelRequest, Closed, CommandOutcome, CommandTransport, DataDirection, DataRef, Reap,
    Recovery, SubmitRefusal, TransportCompletion,
};

use super::{MAX_IO_QUEUE_ENTRIES, QueuePairOptions};
use crate::driver::stats::QueuePairStats;

mod segments;

/// PRP1 and PRP2 of one command.
#[derive(Clone, Copy, Debug)]
pub struct Prps(u64, u64);

/// One I/O SQ/CQ pair of a PCIe controller, as a [`CommandTransport`].
pub struct PcieQueue<D: Device> {
    pub(super) ctrl: UserHold<D>,
    qid: u16,
    sq: SqRing,
    cq: CqRing,
    lists: DmaWindow,
    pages_per_slot: usize,
    /// Identify SGLS: whether data may go as an SGL.
    sgls: SglSupport,
    sq_doorbell: usize,
    cq_doorbell: usize,
    /// Shadow doorbell slots (SQ tail, CQ head) while the controller has the
    /// buffers configured in `generation`.
    shadow: Option<ShadowPair>,
    /// Reset generation the SQ/CQ exist in.
    generation: u64,
    /// The queues could not be re-created in `generation`.
    dead: bool,
    /// `live_word(generation)`: the state word while the queues exist
    /// (`u64::MAX` when `dead`).
    live_state: u64,
}

impl<D: Device> PcieQueue<D> {
    /// Take a queue id, allocate the rings and PRP-list pages, and create
    /// the I/O CQ and SQ on the controller.
    pub(crate) fn create(ctrl: UserHold<D>, opts: QueuePairOptions) -> Result<Self, DriverError> {
        if ctrl.is_shut_down() {
            return Err(DriverError::ShutDown);
        }
        let asked = opts.entries.unwrap_or(ctrl.opts().io_queue_entries);
        if asked < 2 {
            return Err(DriverError::InvalidOption {
                name: "entries",
                value: asked as u64,
                hint: "an I/O queue needs at least 2 entries",
            });
        }
        let limit = ctrl
            .cap()
            .max_queue_entries()
            .min(MAX_IO_QUEUE_ENTRIES as u32) as u16;
        let entries = asked.min(limit);
        let qid = ctrl.take_qid()?;
        match Self::build(&ctrl, qid, entries) {
            Ok(q) => Ok(q),
            Err(e) => {
                ctrl.return_qid(qid);
                Err(e)
            }
        }
    }

    fn build(ctrl: &UserHold<D>, qid: u16, entries: u16) -> Result<Self, DriverError> {
        let sq_pages = pages(entries as usize * SQE_BYTES);
        let cq_pages = pages(entries as usize * CQE_BYTES);
        // At least one page per slot: a Dataset Management range list needs it.
        let pages_per_slot = prp::list_pages_for_transfer(ctrl.max_transfer()).max(1);
        let list_pages = (entries as usize - 1) * pages_per_slot;
        let bytes = (sq_pages + cq_pages + list_pages) * PAGE_SIZE;
        let region =
            Arc::new(
                dma::allocate(ctrl.device(), bytes).map_err(|source| DriverError::Dma {
                    what: "an I/O queue pair",
                    source,
                })?,
            );
        let memory_error = |what| DriverError::QueueMemory { what, bytes };
        let win = |page: usize, n: usize| {
            DmaWindow::new(Arc::clone(&region), page * PAGE_SIZE, n * PAGE_SIZE)
        };
        let sq = win(0, sq_pages)
            .and_then(|m| SqRing::new(m, entries))
            .ok_or(memory_error("I/O submission queue"))?;
        let cq = win(sq_pages, cq_pages)
            .and_then(|m| CqRing::new(m, entries))
            .ok_or(memory_error("I/O completion queue"))?;
        let lists = win(sq_pages + cq_pages, list_pages).ok_or(memory_error("PRP lists"))?;
        if !sq.is_contiguous() {
            return Err(memory_error("I/O submission queue"));
        }
        if !cq.is_contiguous() {
            return Err(memory_error("I/O completion queue"));
        }
        let shadow = ctrl.shadow_slots(qid);
        let generation = ctrl
            .create_io_queues(qid, entries, sq.iova(), cq.iova(), None)
            .inspect_err(|e| {
                // The device may still hold the CQ in this memory.
                if matches!(e, DriverError::DmaQuarantined { .. }) {
                    lists.quarantine();
                }
            })?;
        let shadow = ctrl.keep_if_configured(shadow, generation);
        let stride = ctrl.stride();
        Ok(PcieQueue {
            ctrl: ctrl.clone(),
            qid,
            sq,
            cq,
            lists,
            pages_per_slot,
            sgls: ctrl.identify().sgl_support(),
            sq_doorbell: sq_tail_doorbell(qid, stride),
            cq_doorbell: cq_head_doorbell(qid, stride),
            shadow,
            generation,
            dead: false,
            live_state: live_word(generation),
        })
    }

    /// Record the generation the queues exist in (or, `dead`, could not be
    /// re-created in).
    fn set_generation(&mut self, generation: u64, dead: bool) {
        self.generation = generation;
        self.dead = dead;
        // The health byte of a real state word is 0..=3, never 0xff: a
        // dead queue matches no state, so every reap and submission looks
        // closer.
        self.live_state = if dead {
            u64::MAX
        } else {
            live_word(generation)
        };
    }

    /// SQ entries (capacity + 1).
    fn entries(&self) -> u16 {
        self.sq.entries()
    }

    /// Whether new work may be queued in controller state `state` (not
    /// live in this queue's generation, or the queue is dead).
    #[cold]
    fn check_health(&self, state: u64) -> Result<(), SubmitErrorKind> {
        match health_of(state) {
            Health::Removed => Err(SubmitErrorKind::Gone(DeviceGone::Removed)),
            Health::Failed => Err(SubmitErrorKind::Gone(DeviceGone::Failed)),
            _ if self.dead && generation_of(state) == self.generation => {
                Err(SubmitErrorKind::Gone(DeviceGone::Failed))
            }
            _ => Ok(()),
        }
    }

    #[cold]
    fn queue_full(&self, stats: &mut QueuePairStats) -> SubmitErrorKind {
        stats.queue_full += 1;
        SubmitErrorKind::QueueFull {
            capacity: self.capacity(),
        }
    }

    /// PRP2 for a buffer that does not fit in PRP1's page: the next page,
    /// or a list in slot `index`'s list pages.
    #[inline(never)]
    fn list_prps(&self, index: usize, base: u64, len: usize) -> Result<Prps, SubmitErrorKind> {
        let mut sink = WindowSink {
            mem: &self.lists,
            first_page: index * self.pages_per_slot,
            pages: self.pages_per_slot,
        };
        // A DmaBuf's window is IOVA-contiguous.
        match prp::build(len, |off| (off < len).then(|| base + off as u64), &mut sink) {
            Ok((p1, p2)) => Ok(Prps(p1, p2)),
            Err(prp::PrpError::ZeroLength) => Err(SubmitErrorKind::ZeroLength),
            Err(e) => Err(SubmitErrorKind::Buffer(e)),
        }
    }

    /// Write the SQ tail doorbell if the tail moved since the last write.
    #[inline]
    fn ring_sq(&mut self, stats: &mut QueuePairStats) {
        if let Some(tail) = self.sq.doorbell_value() {
            let mmio = match &mut self.shadow {
                Some((sq, _)) => sq.update(tail),
                None => true,
            };
            if mmio {
                self.ctrl.device().write32(self.sq_doorbell, tail as u32);
                stats.sq_doorbell_writes += 1;
            } else {
                stats.sq_shadow_updates += 1;
            }
        }
    }

    /// Delete the SQ then the CQ (NVMe Base 2.0 §5.6, §5.7).
    fn delete_queues(&self) -> Result<(), DriverError> {
        let mut delete_sq = Command::new(AdminOpcode::DELETE_IO_SQ.0, 0);
        delete_sq.cdw10 = self.qid as u32;
        let mut delete_cq = Command::new(AdminOpcode::DELETE_IO_CQ.0, 0);
        delete_cq.cdw10 = self.qid as u32;
        self.ctrl
            .admin_execute(delete_sq, AdminData::None)
            .and_then(|_| self.ctrl.admin_execute(delete_cq, AdminData::None))
            .map(|_| ())
    }

    /// Deleting the queues failed (`error`): the device may still own the
    /// SQ, the CQ and every buffer in flight. A controller reset deletes
    /// them and stops all DMA; if it fails, the device is quiesced; if
    /// that fails too, the rings and buffers are quarantined.
    fn after_failed_delete(&mut self, error: DriverError) -> Closed {
        let reset = self.ctrl.reset(None);
        let unproven = match self.ctrl.fence_state() {
            UNPROVEN => Some(self.ctrl.fence_dma()),
            _ => None,
        };
        if unproven.is_some() {
            self.quarantine();
        }
        let leftover = if reset.is_ok() {
            // The reset deleted the queues: exactly as if the deletion had
            // worked.
            IoError::Status(Status::new(
                StatusCodeType::GENERIC,
                generic::ABORTED_SQ_DELETION,
            ))
        } else {
            IoError::Gone(DeviceGone::Failed)
        };
        let quarantine = unproven.is_some();
        let result = match (reset, unproven) {
            (Ok(()), _) => {
                self.ctrl.return_qid(self.qid);
                Ok(())
            }
            (Err(_), Some(Fence::Unproven(reason))) => Err(DriverError::DmaQuarantined {
                device: self.ctrl.name().to_string(),
                during: "deleting an I/O queue pair",
                reason,
                bytes: 0,
            }),
            (Err(_), _) => Err(error),
        };
        Closed {
            result,
            leftover,
            quarantine,
        }
    }
}

impl<D: Device> CommandTransport for PcieQueue<D> {
    type Data = Prps;

    #[inline]
    fn capacity(&self) -> usize {
        self.sq.entries() as usize - 1
    }
    fn queue_id(&self) -> u16 {
        self.qid
    }
    fn max_transfer(&self) -> usize {
        self.ctrl.max_transfer()
    }
    fn admin_timeout(&self) -> Duration {
        self.ctrl.opts().admin_timeout
    }

    #[inline(always)]
    fn admit(&mut self, stats: &mut QueuePairStats) -> Result<(), SubmitErrorKind> {
        // One atomic load: new work fails fast on a removed or failed
        // controller; during a reset it is held in the slot and sent once
        // the queues are re-created.
        let state = self.ctrl.state();
        if state != self.live_state {
            self.check_health(state)?;
        }
        if self.sq.is_full() {
            return Err(self.queue_full(stats));
        }
        Ok(())
    }

    #[inline(always)]
    fn map_data(
        &mut self,
        slot: usize,
        buf: &DmaBuf,
        _direction: DataDirection,
    ) -> Result<Prps, SubmitErrorKind> {
        let (iova, len) = (buf.iova(), buf.len());
        // Within PRP1's page: `len - 1 < PAGE_SIZE - offset`. A zero length
        // wraps, fails the test and goes to `list_prps`, which refuses it;
        // `len - 1` is the value the namespace check already computed.
        if len.wrapping_sub(1) < PAGE_SIZE - (iova as usize & (PAGE_SIZE - 1)) {
            Ok(Prps(iova, prp::PRP_UNUSED))
        } else {
            self.list_prps(slot, iova, len)
        }
    }

    fn map_segments(
        &mut self,
        slot: usize,
        segments: &[DmaBuf],
        _direction: DataDirection,
        how: DataPointer,
    ) -> Result<(Prps, bool), SubmitErrorKind> {
        self.segment_data(slot, segments, how)
    }

    fn map_metadata(&mut self, _slot: usize, meta: &DmaBuf) -> Result<u64, SubmitErrorKind> {
        // A DmaBuf's window is IOVA-contiguous: MPTR names it whole
        // (checked dword aligned against the namespace).
        Ok(meta.iova())
    }

    fn metadata_sgl_support(&self) -> Result<(), SubmitErrorKind> {
        self.metadata_sgl_supported()
    }

    fn map_metadata_sgl(
        &mut self,
        slot: usize,
        meta: &[DmaBuf],
        data_segments: usize,
    ) -> Result<u64, SubmitErrorKind> {
        self.metadata_sgl(slot, meta, data_segments)
    }

    fn admit_pair(&mut self, stats: &mut QueuePairStats) -> Result<(), SubmitErrorKind> {
        self.admit(stats)?;
        if self.sq.free_entries() < 2 {
            return Err(self.queue_full(stats));
        }
        Ok(())
    }

    fn map_ranges(&mut self, slot: usize, ranges: &[LbaRange]) -> Result<Prps, SubmitErrorKind> {
        let base = slot * self.pages_per_slot * PAGE_SIZE;
        for (i, r) in ranges.iter().enumerate() {
            self.lists
                .view()
                .write(base + i * 16, r.to_dsm().as_bytes());
        }
        Ok(Prps(
            self.lists.iova(base).unwrap_or(prp::PRP_UNUSED),
            prp::PRP_UNUSED,
        ))
    }

    #[inline(always)]
    fn prps(data: &Prps) -> (u64, u64) {
        (data.0, data.1)
    }

    #[inline(always)]
    fn send(
        &mut self,
        cmd: &Command,
        _data: Option<Prps>,
        _stats: &mut QueuePairStats,
    ) -> Result<(), SubmitRefusal> {
        // `admit` saw room in the SQ and nothing pushed since.
        self.sq.push_checked(cmd);
        Ok(())
    }

    fn resend(
        &mut self,
        cmd: &Command,
        _data: Option<DataRef>,
        _stats: &mut QueuePairStats,
    ) -> bool {
        // The PRPs (and their list pages) are still those of this slot.
        !self.sq.is_full() && self.sq.push(cmd)
    }

    #[inline]
    fn flush(&mut self, stats: &mut QueuePairStats) {
        // Not while the controller resets or after it: the queue does not
        // exist on the device; recovery re-sends what is in flight.
        if self.ctrl.state() != self.live_state {
            return;
        }
        self.ring_sq(stats);
    }

    #[inline(always)]
    fn begin_reap(&mut self, stats: &mut QueuePairStats) -> Reap {
        // The one load of the controller's state word per reap.
        let state = self.ctrl.state();
        if state != self.live_state {
            return Reap::Changed(state);
        }
        self.ring_sq(stats);
        Reap::Ready
    }

    #[inline(always)]
    fn next_completion(&mut self, stats: &mut QueuePairStats) -> Option<TransportCompletion> {
        let c = self.cq.peek()?;
        self.cq.advance();
        if c.sqid != self.qid {
            stats.wrong_sqid += 1;
        }
        if !self.sq.update_head(c.sqhd) {
            stats.invalid_sqhd += 1;
        }
        Some(TransportCompletion {
            tag: c.cid,
            outcome: CommandOutcome::Completed {
                dw0: c.dw0,
                status: c.status(),
            },
        })
    }

    #[inline(always)]
    fn end_reap(&mut self, _consumed: usize, stats: &mut QueuePairStats) {
        let head = self.cq.head();
        let mmio = match &mut self.shadow {
            Some((_, cq)) => cq.update(head),
            None => true,
        };
        if mmio {
            self.ctrl.device().write32(self.cq_doorbell, head as u32);
            stats.cq_doorbell_writes += 1;
        } else {
            stats.cq_shadow_updates += 1;
        }
    }

    #[cold]
    fn recover(&mut self, state: u64, stats: &mut QueuePairStats) -> Recovery {
        match health_of(state) {
            Health::Resetting => Recovery::Wait,
            Health::Removed => Recovery::FailAll(IoError::Gone(DeviceGone::Removed)),
            Health::Failed => Recovery::FailAll(IoError::Gone(DeviceGone::Failed)),
            // Could not be re-created in this generation: nothing to do
            // until the next reset.
            Health::Live if self.dead && generation_of(state) == self.generation => Recovery::Wait,
            Health::Live => {
                // The controller was reset: the device deleted our queues
                // and stopped all DMA, so every buffer we hold is ours again.
                self.sq.reset();
                self.cq.reset();
                let generation = generation_of(state);
                let entries = self.entries();
                // Buffers from before the reset are not used: fresh, zeroed
                // slots, kept only if the buffers were configured again.
                self.shadow = None;
                let shadow = self.ctrl.shadow_slots(self.qid);
                match self.ctrl.create_io_queues(
                    self.qid,
                    entries,
                    self.sq.iova(),
                    self.cq.iova(),
                    Some(generation),
                ) {
                    Ok(g) => {
                        self.set_generation(g, false);
                        self.shadow = self.ctrl.keep_if_configured(shadow, g);
                        stats.recreated += 1;
                        Recovery::Recreated
                    }
                    // Another reset started meanwhile: try again later.
                    Err(DriverError::NotLive { .. }) => Recovery::Wait,
                    Err(_) => {
                        self.set_generation(generation, true);
                        Recovery::FailAll(IoError::Gone(DeviceGone::Failed))
                    }
                }
            }
        }
    }

    fn live(&self) -> Option<u64> {
        let state = self.ctrl.state();
        (state == live_word(self.generation)).then(|| generation_of(state))
    }

    fn stalled(&mut self) -> bool {
        let csts = self.ctrl.device().read32(offset::CSTS);
        csts == ALL_ONES || Csts::from(csts).cfs()
    }

    /// Posts an Abort to the controller's admin worker and returns at once
    /// (the polling thread never waits for an admin command). `Failed` when
    /// more aborts are waiting controller-wide than the mailbox holds: the
    /// device is hung, and the caller resets it.
    fn cancel(&mut self, tag: u16) -> CancelRequest {
        if self.ctrl.post_abort(self.generation, self.qid, tag) {
            CancelRequest::Sent
        } else {
            CancelRequest::Failed
        }
    }

    /// Posts a reset of the controller observed at `generation` to the
    /// admin worker; the outcome is recorded in the controller's state word,
    /// which the queue pair follows.
    fn reset(&mut self, generation: u64) {
        self.ctrl.post_reset(generation);
    }

    fn dma_unproven(&self) -> bool {
        self.ctrl.fence_state() == UNPROVEN
    }

    fn quarantine(&self) {
        self.lists.quarantine();
    }

    fn close_begin(&mut self) {}

    fn close_wait(&self) -> Option<Duration> {
        (!self.ctrl.is_shut_down()).then(|| self.ctrl.opts().admin_timeout)
    }

    fn close_idle(&mut self) {
        std::thread::yield_now();
    }

    fn close(&mut self) -> Closed {
        let result = if self.ctrl.is_shut_down()
            || self.dead
            || self.ctrl.state() != live_word(self.generation)
        {
            // Nothing to delete: the controller is gone or was reset and
            // this queue was never re-created.
            Ok(())
        } else {
            self.delete_queues()
        };
        if let Err(e) = result {
            // The device may still own the queues and every buffer in them.
            return self.after_failed_delete(e);
        }
        // A device that could not be proven stopped may still use these
        // queues, whatever the deletion said.
        let unproven = self.dma_unproven();
        if unproven {
            self.quarantine();
        }
        self.ctrl.return_qid(self.qid);
        Closed {
            result,
            leftover: IoError::Status(Status::new(
                StatusCodeType::GENERIC,
                generic::ABORTED_SQ_DELETION,
            )),
            quarantine: unproven,
        }
    }
}
