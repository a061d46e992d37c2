//! How an I/O queue pair follows its controller through a reset, a failed
//! reset or a surprise removal (NVMe Base 2.0 §3.7.2: a reset deletes every
//! I/O queue and stops all DMA), on the thread that owns it.
//!
//! After a reset the pair re-creates its SQ and CQ (same queue id, same
//! memory) and goes through what it had in flight. Timed-out commands
//! complete with `TimedOut`. Idempotent commands with retries left are
//! resubmitted under a new CID. Everything else completes with
//! `ControllerReset`. After a removal or a failed reset, everything in
//! flight completes with `IoError::Gone` (removed or failed). Buffers
//! always come back, because the device no longer uses them.

#![forbid(unsafe_code)]

use crate::device::Device;
use crate::spec::command::NvmOpcode;

use crate::driver::error::{DeviceGone, DriverError, IoError};
use crate::driver::qpair::{IoCompletion, IoQueuePair};
use crate::driver::shared::recovery::{Health, generation_of, health_of};

/// Commands that may be sent again with the same effect (block-level
/// idempotent): resubmitted after DNR=0 errors and controller resets.
pub(super) fn idempotent(opcode: u8) -> bool {
    matches!(
        NvmOpcode(opcode),
        NvmOpcode::READ
            | NvmOpcode::WRITE
            | NvmOpcode::WRITE_ZEROES
            | NvmOpcode::DATASET_MANAGEMENT
            | NvmOpcode::FLUSH
            | NvmOpcode::COMPARE
    )
}

impl<D: Device> IoQueuePair<D> {
    /// Follow a controller state change (see `process_completions`).
    /// Returns the completions delivered.
    #[cold]
    #[inline(never)]
    pub(super) fn recover<F: FnMut(IoCompletion)>(&mut self, state: u64, f: &mut F) -> usize {
        match health_of(state) {
            Health::Resetting => 0,
            Health::Removed => self.fail_all(IoError::Gone(DeviceGone::Removed), f),
            Health::Failed => self.fail_all(IoError::Gone(DeviceGone::Failed), f),
            Health::Live => {
                // The controller was reset: the device deleted our queues
                // and stopped all DMA, so every buffer we hold is ours again.
                self.sq.reset();
                self.cq.reset();
                let generation = generation_of(state);
                let entries = self.sq.entries();
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
                    }
                    // Another reset started meanwhile: try again later.
                    Err(DriverError::NotLive { .. }) => return 0,
                    Err(_) => {
                        self.set_generation(generation, true);
                        return self.fail_all(IoError::Gone(DeviceGone::Failed), f);
                    }
                }
                self.stats.recreated += 1;
                self.idle_since = None;
                let mut delivered = 0;
                for index in 0..self.tracker.capacity() {
                    let slot = self.tracker.slot(index);
                    if !slot.in_flight() {
                        continue;
                    }
                    let error = if slot.timed_out() {
                        IoError::TimedOut(self.timeout)
                    } else if slot.retries < self.retry_limit && idempotent(slot.cmd.opcode()) {
                        let cmd = self.tracker.reissue(index);
                        if self.sq.push(&cmd) {
                            self.stats.resubmitted += 1;
                            continue;
                        }
                        IoError::ControllerReset
                    } else {
                        IoError::ControllerReset
                    };
                    delivered += self.deliver_error(index, error, f);
                }
                self.ring_doorbell_live();
                delivered
            }
        }
    }

    /// Complete every in-flight command with `error` (buffers returned;
    /// quarantined when the device could not be proven to have stopped).
    fn fail_all<F: FnMut(IoCompletion)>(&mut self, error: IoError, f: &mut F) -> usize {
        let quarantine = self.ctrl.fence_state() == crate::driver::shared::fence::UNPROVEN;
        if quarantine {
            self.quarantine_rings();
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
        if self.ctrl.fence_state() == crate::driver::shared::fence::UNPROVEN
            && let Some(b) = req.buf.as_mut()
        {
            b.quarantine();
        }
        self.stats.completed += 1;
        self.stats.failed += 1;
        f(IoCompletion {
            token: req.token,
            result: Err(error),
            buf: req.buf,
        });
        1
    }
}
