//! Completion: the bounded reaping loop [`QueuePair::process_completions`],
//! the batch hand-over [`QueuePair::ring_doorbell`], and the handling of
//! completions a device should not post (unknown or stale CIDs, counted and
//! skipped), of errors worth a retry and of transport failures.

use crate::driver::error::IoError;
use crate::driver::tracker::CidError;
use crate::driver::transport::{CommandOutcome, CommandTransport, Reap, TransportFailure};

use super::requeue::idempotent;
use super::{IoCompletion, QueuePair};

impl<T: CommandTransport> QueuePair<T> {
    /// Hand the commands queued since the last call to the controller: on
    /// PCIe, write the SQ tail doorbell if the tail moved; on io_uring, one
    /// `io_uring_enter` if anything is queued.
    #[inline]
    pub fn ring_doorbell(&mut self) {
        self.t.flush(&mut self.stats);
    }

    /// Hand over what is queued, then reap up to `max` completions (looking
    /// at no more than one queue's worth), calling `f` for each. On PCIe the
    /// CQ head doorbell is written once if anything was consumed.
    /// Completions with unknown, stale or duplicate CIDs are counted and
    /// skipped.
    ///
    /// This is also where the queue pair follows the controller: after a
    /// reset it re-creates its queues and resubmits or fails what it had in
    /// flight; after a removal everything in flight completes with
    /// `IoError::Gone(DeviceGone::Removed)` ([`IoError::Gone`], [`DeviceGone::Removed`](crate::DeviceGone::Removed)). A command that timed out completes with
    /// [`IoError::TimedOut`] once the device is done with it. A command that
    /// fails with DNR=0 is resubmitted up to the retry limit instead of
    /// being delivered.
    pub fn process_completions<F: FnMut(IoCompletion)>(&mut self, max: usize, mut f: F) -> usize {
        let mut delivered = 0;
        if let Reap::Changed(state) = self.t.begin_reap(&mut self.stats) {
            delivered = self.recover(state, &mut f);
            if let Reap::Changed(_) = self.t.begin_reap(&mut self.stats) {
                return delivered;
            }
        }
        let ring = self.tracker.capacity() + 1;
        let mut consumed = 0usize;
        let mut retried = false;
        while delivered < max && consumed < ring {
            let Some(c) = self.t.next_completion(&mut self.stats) else {
                break;
            };
            consumed += 1;
            let index = match self.tracker.lookup(c.tag) {
                Ok(index) => index,
                // Classified again off the hot path: the hot loop then
                // carries no error value, only the branch.
                Err(_) => {
                    self.count_rejected(c.tag);
                    continue;
                }
            };
            match c.outcome {
                CommandOutcome::Completed { dw0, status }
                    if status.is_success() && self.tracker.slot(index).plain() =>
                {
                    let (token, buf) = self.tracker.complete_plain(index);
                    self.stats.completed += 1;
                    delivered += 1;
                    f(IoCompletion {
                        token,
                        result: Ok(dw0),
                        buf,
                        extra: None,
                    });
                }
                outcome => match self.complete_unusual(index, outcome) {
                    Some(done) => {
                        delivered += 1;
                        f(done);
                    }
                    None => retried = true,
                },
            }
        }
        if consumed > 0 {
            self.t.end_reap(consumed, &mut self.stats);
            self.idle_since = None;
        }
        if retried {
            self.t.flush(&mut self.stats);
        }
        delivered
    }

    /// Count a completion whose CID `tag` was not accepted, classifying it
    /// again here. Out of line and carrying no error value into the reaping
    /// loop: inlined, the three counters become a select of the field offset
    /// that the loop computes for every completion.
    #[cold]
    #[inline(never)]
    fn count_rejected(&mut self, tag: u16) {
        match self.tracker.lookup(tag) {
            Err(CidError::Stale) => self.stats.stale_completions += 1,
            Err(CidError::Duplicate) => self.stats.duplicate_completions += 1,
            Err(CidError::Unknown) => self.stats.unknown_completions += 1,
            // Not reached: called only after the same lookup failed.
            Ok(_) => {}
        }
    }

    /// The in-flight command in slot `index` completed with an error status,
    /// failed in the transport, completed after its deadline, or holds
    /// attached buffers: resubmit it (returns `None`) or complete it.
    #[cold]
    #[inline(never)]
    fn complete_unusual(&mut self, index: usize, outcome: CommandOutcome) -> Option<IoCompletion> {
        let slot = self.tracker.slot(index);
        let timed_out = slot.timed_out();
        if let CommandOutcome::Completed { status, .. } = outcome
            && !timed_out
            && !status.is_success()
            && !status.dnr()
            && slot.retries < self.retry_limit
            && idempotent(&slot.cmd)
        {
            let data = self.data_of(index);
            let cmd = self.tracker.reissue(index);
            if self.t.resend(&cmd, data, &mut self.stats) {
                self.stats.retries += 1;
                return None;
            }
        }
        let req = self.tracker.complete(index);
        self.stats.completed += 1;
        let result = if req.timed_out {
            Err(IoError::TimedOut(self.timeout))
        } else {
            match outcome {
                CommandOutcome::Completed { dw0, status } if status.is_success() => Ok(dw0),
                CommandOutcome::Completed { status, .. } => Err(IoError::Status(status)),
                CommandOutcome::Failed(TransportFailure::Cancelled) => {
                    Err(IoError::ControllerReset)
                }
                CommandOutcome::Failed(TransportFailure::Disconnected) => {
                    Err(IoError::ControllerReset)
                }
                CommandOutcome::Failed(TransportFailure::Errno(errno)) => {
                    Err(IoError::Transport { errno })
                }
            }
        };
        if result.is_err() {
            self.stats.failed += 1;
        }
        Some(IoCompletion::from_request(req, result))
    }
}
