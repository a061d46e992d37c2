//! The end of a reactor: deleting its queue pairs and answering, exactly
//! once, every request it still holds (NVMe Base 2.0 §5.6 Delete I/O
//! Submission Queue: the controller aborts what the queue still held).

#![forbid(unsafe_code)]

use crate::attach::Attach;

use super::Reactor;
use crate::stats::ReactorStats;

impl<D: Attach> Reactor<D> {
    /// Delete every queue pair and answer, exactly once, every request the
    /// reactor still holds:
    /// - commands the device finishes while its queue drains, with their
    ///   own result; once the controller deleted the queue (which aborts
    ///   what it still held), the rest with `Command Aborted due to SQ
    ///   Deletion` — all with their buffers (`IoQueuePair::delete_with`);
    /// - commands on a queue the device would not delete: the driver resets
    ///   the controller and answers them the same way, or with quarantined
    ///   buffers when the device can be neither reset nor quiesced; a request
    ///   the driver left unanswered (never expected) gets
    ///   [`RequestError::QueueNotDeleted`](crate::RequestError::QueueNotDeleted) without its buffer;
    /// - requests still waiting for queue room, with
    ///   [`RequestError::ShutDown`](crate::RequestError::ShutDown) and their buffers.
    ///
    /// The answers take the dispatch's one answer path
    /// ([`Dispatch::delete_queue`](crate::dispatch::Dispatch::delete_queue),
    /// then
    /// [`Dispatch::answer_unanswered`](crate::dispatch::Dispatch::answer_unanswered)).
    /// Leaves the final counters (queue counters as of before deletion) in
    /// the dispatch; returns teardown notes.
    pub(super) fn teardown(&mut self) -> Vec<String> {
        let final_stats = self.snapshot();
        let mut errors = Vec::new();
        for (ci, q) in std::mem::take(&mut self.queues).into_iter().enumerate() {
            let qid = q.qp.qid();
            let device = D::name(&q.controller);
            if let Err(e) = self.dispatch.delete_queue(ci, q) {
                errors.push(format!(
                    "deleting I/O queue {qid} on {device}: {e}; every command on it was answered, \
                     and buffers the device may still write are quarantined (never reused) — \
                     re-create the controller or restart the process"
                ));
            }
        }
        // Whatever still holds a slot was never answered: parked in a
        // backlog, or on a queue the device did not delete.
        self.dispatch.answer_unanswered();
        let stats = self.dispatch.stats_mut();
        *stats = ReactorStats {
            queues: final_stats.queues,
            fixed_buffer_io: final_stats.fixed_buffer_io,
            unregistered_io: final_stats.unregistered_io,
            producers: final_stats.producers,
            pollers: final_stats.pollers,
            timers: final_stats.timers,
            ..*stats
        };
        errors
    }
}
