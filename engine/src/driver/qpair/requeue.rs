//! How an I/O queue pair follows its controller through a reset, a failed
//! reset or a surprise removal (NVMe Base 2.0 §3.7.2: a reset deletes every
//! I/O queue and stops all DMA), on the thread that owns it.
//!
//! After a reset the transport re-creates its queue (PCIe: the SQ and CQ,
//! same queue id, same memory) and the pair goes through what it had in
//! flight. Timed-out commands
//! complete with `TimedOut`. Idempotent commands with retries left are
//! resubmitted under a new CID. Everything else completes with
//! `ControllerReset`. After a removal or a failed reset, everything in
//! flight completes with `DeviceRemoved` or `ControllerFailed`. Buffers
//! always come back, because the device no longer uses them.

#![forbid(unsafe_code)]

use crate::spec::command::{Command, NvmOpcode};

use crate::driver::error::IoError;
use crate::driver::transport::{CommandTransport, DataDirection, DataRef, Recovery};

use super::submit::direction_of;
use super::{IoCompletion, QueuePair};

/// Commands that may be sent again with the same effect (block-level
/// idempotent): resubmitted after DNR=0 errors and controller resets. A
/// fused command never is: sent alone it is no longer fused.
pub(super) fn idempotent(cmd: &Command) -> bool {
    cmd.fuse() == 0
        && matches!(
            NvmOpcode(cmd.opcode()),
            NvmOpcode::READ
                | NvmOpcode::WRITE
                | NvmOpcode::WRITE_ZEROES
                | NvmOpcode::DATASET_MANAGEMENT
                | NvmOpcode::FLUSH
                | NvmOpcode::COMPARE
                | NvmOpcode::VERIFY
        )
}

impl<T: CommandTransport> QueuePair<T> {
    /// The data of the in-flight command in slot `index`, as held.
    pub(super) fn data_of(&self, index: usize) -> Option<DataRef> {
        let slot = self.tracker.slot(index);
        let dir = direction_of(slot.cmd.opcode()).unwrap_or(DataDirection::ToDevice);
        slot.buf().map(|b| DataRef::of(b, dir))
    }

    /// Follow a transport state change (see `process_completions`).
    /// Returns the completions delivered.
    #[cold]
    #[inline(never)]
    pub(super) fn recover<F: FnMut(IoCompletion)>(&mut self, state: u64, f: &mut F) -> usize {
        match self.t.recover(state, &mut self.stats) {
            Recovery::Wait => 0,
            Recovery::FailAll(error) => self.fail_all(error, f),
            Recovery::Recreated => {
                self.idle_since = None;
                let mut delivered = 0;
                for index in 0..self.tracker.capacity() {
                    let slot = self.tracker.slot(index);
                    if !slot.in_flight() {
                        continue;
                    }
                    let error = if slot.timed_out() {
                        IoError::TimedOut(self.timeout)
                    } else if slot.retries < self.retry_limit && idempotent(&slot.cmd) {
                        let data = self.data_of(index);
                        let cmd = self.tracker.reissue(index);
                        if self.t.resend(&cmd, data, &mut self.stats) {
                            self.stats.resubmitted += 1;
                            continue;
                        }
                        IoError::ControllerReset
                    } else {
                        IoError::ControllerReset
                    };
                    delivered += self.deliver_error(index, error, f);
                }
                self.t.flush(&mut self.stats);
                delivered
            }
        }
    }

    /// Complete every in-flight command with `error` (buffers returned;
    /// quarantined when the device could not be proven to have stopped).
    fn fail_all<F: FnMut(IoCompletion)>(&mut self, error: IoError, f: &mut F) -> usize {
        if self.t.dma_unproven() {
            self.t.quarantine();
        }
        let mut delivered = 0;
        for index in 0..self.tracker.capacity() {
            if self.tracker.slot(index).in_flight() {
                let e = if self.tracker.slot(index).timed_out() {
                    IoError::TimedOut(self.timeout)
                } else {
                    error
                };
                delivered += self.deliver_error(index, e, f);
            }
        }
        delivered
    }

    fn deliver_error<F: FnMut(IoCompletion)>(
        &mut self,
        index: usize,
        error: IoError,
        f: &mut F,
    ) -> usize {
        let mut req = self.tracker.complete(index);
        if self.t.dma_unproven() {
            req.quarantine();
        }
        self.stats.completed += 1;
        self.stats.failed += 1;
        f(IoCompletion::from_request(req, Err(error)));
        1
    }
}
