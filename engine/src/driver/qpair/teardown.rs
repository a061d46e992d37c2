//! Deleting a queue pair (NVMe Base 2.0 §5.6, §5.7: the SQ first, then the
//! CQ) on `delete` and on drop, and what happens when the device will not
//! let go: a controller reset, then quiescing, then quarantine
//! ([`crate::driver::shared::fence`]). Every command still held completes
//! once, with its buffer.

use crate::device::Device;
use std::time::Instant;

use crate::spec::status::generic;
use crate::spec::{
    command::{AdminOpcode, Command},
    status::{Status, StatusCodeType},
};

use crate::driver::admin::AdminData;
use crate::driver::error::{DeviceGone, DriverError, IoError};
use crate::driver::shared::recovery::live_word;

use super::{IoCompletion, IoQueuePair};
use crate::driver::shared::fence::{Fence, UNPROVEN};

impl<D: Device> IoQueuePair<D> {
    /// Reap what is outstanding (bounded by the admin timeout), then delete
    /// the SQ and the CQ. Completions reaped here, and buffers of commands
    /// that never completed, are dropped; use [`Self::delete_with`] to receive
    /// them. Also done, best effort, on drop.
    pub fn delete(mut self) -> Result<(), DriverError> {
        self.teardown(&mut |_| {})
    }

    /// Like [`Self::delete`], but every command still outstanding completes
    /// exactly once through `f`: those the device finishes while the queue
    /// drains with their own result, and, once the SQ is gone (deleted by
    /// the controller, which aborts whatever it still held, or already lost
    /// to a reset, shutdown or removal), the rest with `Command Aborted due
    /// to SQ Deletion` and their buffers. When the deletion fails the device
    /// may still own those buffers, so they are not handed back.
    pub fn delete_with<F: FnMut(IoCompletion)>(mut self, mut f: F) -> Result<(), DriverError> {
        self.teardown(&mut f)
    }

    pub(super) fn teardown(
        &mut self,
        sink: &mut dyn FnMut(IoCompletion),
    ) -> Result<(), DriverError> {
        if !self.live {
            return Ok(());
        }
        self.live = false;
        let start = Instant::now();
        while self.outstanding() > 0
            && !self.ctrl.is_shut_down()
            && start.elapsed() < self.ctrl.opts().admin_timeout
        {
            if self.process_completions(usize::MAX, &mut *sink) == 0 {
                std::thread::yield_now();
            }
        }
        let result = if self.ctrl.is_shut_down()
            || self.dead
            || self.ctrl.state() != live_word(self.generation)
        {
            // Nothing to delete: the controller is gone or was reset and
            // this queue was never re-created.
            Ok(())
        } else {
            let mut delete_sq = Command::new(AdminOpcode::DELETE_IO_SQ.0, 0);
            delete_sq.cdw10 = self.qid as u32;
            let mut delete_cq = Command::new(AdminOpcode::DELETE_IO_CQ.0, 0);
            delete_cq.cdw10 = self.qid as u32;
            self.ctrl
                .admin_execute(delete_sq, AdminData::None)
                .and_then(|_| self.ctrl.admin_execute(delete_cq, AdminData::None))
                .map(|_| ())
        };
        // A device that could not be proven stopped may still use these
        // queues, whatever the deletion said.
        let unproven = self.ctrl.fence_state() == crate::driver::shared::fence::UNPROVEN;
        if unproven {
            self.quarantine_rings();
        }
        if result.is_ok() {
            let aborted = Status::new(StatusCodeType::GENERIC, generic::ABORTED_SQ_DELETION);
            for mut req in self.tracker.drain() {
                if unproven && let Some(b) = req.buf.as_mut() {
                    b.quarantine();
                }
                sink(IoCompletion {
                    token: req.token,
                    result: Err(IoError::Status(aborted)),
                    buf: req.buf,
                });
            }
            self.ctrl.return_qid(self.qid);
        } else if let Err(e) = result {
            // The device may still own the queues and every buffer in them.
            return self.after_failed_delete(e, sink);
        }
        result
    }

    /// Keep this pair's rings and PRP-list pages mapped for good (the
    /// device could not be stopped, see `fence`).
    pub(super) fn quarantine_rings(&self) {
        self.lists.quarantine();
    }

    /// Deleting the queues failed (`error`): the device may still own the
    /// SQ, the CQ and every buffer in flight. A controller reset deletes
    /// them and stops all DMA; if it fails, the device is quiesced; if
    /// that fails too, the rings and buffers are quarantined. Every command
    /// still held completes once through `sink`, with its buffer.
    pub(crate) fn after_failed_delete(
        &mut self,
        error: DriverError,
        sink: &mut dyn FnMut(IoCompletion),
    ) -> Result<(), DriverError> {
        let reset = self.ctrl.reset(None);
        let unproven = match self.ctrl.fence_state() {
            UNPROVEN => Some(self.ctrl.fence_dma()),
            _ => None,
        };
        if unproven.is_some() {
            self.quarantine_rings();
        }
        let outcome = if reset.is_ok() {
            // The reset deleted the queues: exactly as if the deletion had
            // worked.
            Err(IoError::Status(Status::new(
                StatusCodeType::GENERIC,
                generic::ABORTED_SQ_DELETION,
            )))
        } else {
            Err(IoError::Gone(DeviceGone::Failed))
        };
        for mut req in self.tracker.drain() {
            if unproven.is_some()
                && let Some(b) = req.buf.as_mut()
            {
                b.quarantine();
            }
            sink(IoCompletion {
                token: req.token,
                result: outcome,
                buf: req.buf,
            });
        }
        match (reset, unproven) {
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
        }
    }
}
