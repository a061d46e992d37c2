//! Closing a queue pair on `delete` and on drop: reap what is outstanding
//! for a bounded time, then close the transport (PCIe: delete the SQ, then
//! the CQ, NVMe Base 2.0 §5.6, §5.7; when the device will not let go, a
//! controller reset, then quiescing, then quarantine — see
//! [`crate::driver::shared::fence`]; io_uring: cancel everything and wait for
//! the kernel). Every command still held completes once, with its buffer.

#![forbid(unsafe_code)]

use std::time::Instant;

use crate::driver::error::DriverError;
use crate::driver::transport::CommandTransport;

use super::{IoCompletion, QueuePair};

impl<T: CommandTransport> QueuePair<T> {
    /// Reap what is outstanding (bounded by the admin timeout), then delete
    /// the queue. Completions reaped here, and buffers of commands that
    /// never completed, are dropped; use [`Self::delete_with`] to receive
    /// them. Also done, best effort, on drop.
    pub fn delete(mut self) -> Result<(), DriverError> {
        self.teardown(&mut |_| {})
    }

    /// Like [`Self::delete`], but every command still outstanding completes
    /// exactly once through `f`: those the device finishes while the queue
    /// drains with their own result, and, once the queue is gone (on PCIe
    /// the SQ deleted by the controller, which aborts whatever it still
    /// held, or already lost to a reset, shutdown or removal), the rest with
    /// `Command Aborted due to SQ Deletion` and their buffers. When the
    /// device may still own those buffers they come back quarantined (never
    /// reused).
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
        if self.outstanding() > 0 {
            self.t.close_begin();
        }
        let start = Instant::now();
        while self.outstanding() > 0
            && self
                .t
                .close_wait()
                .is_some_and(|limit| start.elapsed() < limit)
        {
            if self.process_completions(usize::MAX, &mut *sink) == 0 {
                self.t.close_idle();
            }
        }
        let closed = self.t.close();
        for mut req in self.tracker.drain() {
            if closed.quarantine {
                req.quarantine();
            }
            sink(IoCompletion::from_request(req, Err(closed.leftover)));
        }
        closed.result
    }
}
