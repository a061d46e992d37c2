//! Completion: doorbells (MMIO or shadow), the bounded reaping loop
//! [`IoQueuePair::process_completions`], and the handling of completions a
//! device should not post (unknown or stale CIDs, counted and skipped).

use crate::device::Device;

use crate::spec::status::Status;

use super::requeue::idempotent;
use crate::driver::error::IoError;
use crate::driver::tracker::CidError;

use super::{IoCompletion, IoQueuePair};

impl<D: Device> IoQueuePair<D> {
    /// Write the SQ tail doorbell if the tail moved since the last write.
    #[inline]
    pub fn ring_doorbell(&mut self) {
        // Not while the controller resets or after it: the queue does not
        // exist on the device; recovery re-sends what is in flight.
        if self.ctrl.state() != self.live_state {
            return;
        }
        self.ring_doorbell_live();
    }

    #[inline]
    pub(super) fn ring_doorbell_live(&mut self) {
        if let Some(tail) = self.sq.doorbell_value() {
            let mmio = match &mut self.shadow {
                Some((sq, _)) => sq.update(tail),
                None => true,
            };
            if mmio {
                self.ctrl.device().write32(self.sq_doorbell, tail as u32);
                self.stats.sq_doorbell_writes += 1;
            } else {
                self.stats.sq_shadow_updates += 1;
            }
        }
    }

    /// Publish the CQ head (after consuming entries).
    #[inline]
    fn ring_cq_doorbell(&mut self) {
        let head = self.cq.head();
        let mmio = match &mut self.shadow {
            Some((_, cq)) => cq.update(head),
            None => true,
        };
        if mmio {
            self.ctrl.device().write32(self.cq_doorbell, head as u32);
            self.stats.cq_doorbell_writes += 1;
        } else {
            self.stats.cq_shadow_updates += 1;
        }
    }

    /// Ring the SQ doorbell, then reap up to `max` completions (looking at no
    /// more than one ring's worth of entries), calling `f` for each. Writes
    /// the CQ head doorbell once if anything was consumed. Completions with
    /// unknown, stale or duplicate CIDs are counted and skipped.
    ///
    /// This is also where the queue pair follows the controller: after a
    /// reset it re-creates its queues and resubmits or fails what it had in
    /// flight; after a removal everything in flight completes with
    /// [`IoError::Gone`]. A command that timed out completes with
    /// [`IoError::TimedOut`] once the device is done with it. A command that
    /// fails with DNR=0 is resubmitted up to the retry limit instead of
    /// being delivered.
    pub fn process_completions<F: FnMut(IoCompletion)>(&mut self, max: usize, mut f: F) -> usize {
        // The one load of the controller's state word per call.
        let state = self.ctrl.state();
        let mut delivered = 0;
        if state != self.live_state {
            delivered = self.recover(state, &mut f);
            if self.ctrl.state() != self.live_state || self.dead {
                return delivered;
            }
        }
        self.ring_doorbell_live();
        let ring = self.sq.entries() as usize;
        let mut consumed = 0usize;
        let mut retried = false;
        while delivered < max && consumed < ring {
            let Some(c) = self.cq.peek() else { break };
            self.cq.advance();
            consumed += 1;
            if c.sqid != self.qid {
                self.stats.wrong_sqid += 1;
            }
            if !self.sq.update_head(c.sqhd) {
                self.stats.invalid_sqhd += 1;
            }
            let index = match self.tracker.lookup(c.cid) {
                Ok(index) => index,
                Err(e) => {
                    self.count_rejected(e);
                    continue;
                }
            };
            let status = c.status();
            if !status.is_success() || self.tracker.slot(index).timed_out() {
                match self.complete_unusual(index, status) {
                    Some(done) => {
                        delivered += 1;
                        f(done);
                    }
                    None => retried = true,
                }
                continue;
            }
            let req = self.tracker.complete(index);
            self.stats.completed += 1;
            delivered += 1;
            f(IoCompletion {
                token: req.token,
                result: Ok(c.dw0),
                buf: req.buf,
            });
        }
        if consumed > 0 {
            self.ring_cq_doorbell();
            self.idle_since = None;
        }
        if retried {
            self.ring_doorbell_live();
        }
        delivered
    }

    /// Count a completion whose CID was not accepted.
    #[cold]
    fn count_rejected(&mut self, e: CidError) {
        match e {
            CidError::Stale => self.stats.stale_completions += 1,
            CidError::Duplicate => self.stats.duplicate_completions += 1,
            CidError::Unknown => self.stats.unknown_completions += 1,
        }
    }

    /// The in-flight command in slot `index` completed with an error status
    /// or after its deadline: resubmit it (returns `None`) or complete it.
    #[cold]
    #[inline(never)]
    fn complete_unusual(&mut self, index: usize, status: Status) -> Option<IoCompletion> {
        let slot = self.tracker.slot(index);
        if !slot.timed_out()
            && !status.dnr()
            && slot.retries < self.retry_limit
            && idempotent(slot.cmd.opcode())
            && !self.sq.is_full()
        {
            let cmd = self.tracker.reissue(index);
            if self.sq.push(&cmd) {
                self.stats.retries += 1;
                return None;
            }
        }
        let req = self.tracker.complete(index);
        self.stats.completed += 1;
        self.stats.failed += 1;
        let result = if req.timed_out {
            Err(IoError::TimedOut(self.timeout))
        } else {
            Err(IoError::Status(status))
        };
        Some(IoCompletion {
            token: req.token,
            result,
            buf: req.buf,
        })
    }
}
