//! The end of a reactor: deleting its queue pairs and answering, exactly
//! once, every request it still holds (NVMe Base 2.0 §5.6 Delete I/O
//! Submission Queue: the controller aborts what the queue still held).

#![forbid(unsafe_code)]

use nvme_engine::Device;
use nvme_engine::driver::IoCompletion;

use super::{Queue, Reactor, Sinks};
use crate::request::{RequestError, Response};
use crate::stats::ReactorStats;

impl<D: Device> Reactor<D> {
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
    ///   [`RequestError::QueueNotDeleted`] without its buffer;
    /// - requests still waiting for queue room, with
    ///   [`RequestError::ShutDown`] and their buffers.
    ///
    /// Leaves the final counters (queue counters as of before deletion)
    /// in `self.stats`; returns teardown notes.
    pub(super) fn teardown(&mut self) -> Vec<String> {
        let final_stats = self.snapshot();
        let mut errors = Vec::new();
        let queues = std::mem::take(&mut self.queues);
        let Reactor {
            links,
            slots,
            free,
            stats,
            failures,
            local,
            ..
        } = self;
        for (ci, q) in queues.into_iter().enumerate() {
            let Queue { controller, qp, .. } = q;
            let qid = qp.qid();
            let deleted = qp.delete_with(|c: IoCompletion| {
                Sinks {
                    links,
                    local,
                    stats,
                    failures,
                }
                .complete(slots, free, ci, c)
            });
            if let Err(e) = deleted {
                errors.push(format!(
                    "deleting I/O queue {qid} on {}: {e}; every command on it was answered, and \
                     buffers the device may still write are quarantined (never reused) — \
                     re-create the controller or restart the process",
                    controller.device().name()
                ));
            }
        }
        // Whatever is not free now was never answered: parked in a backlog,
        // or on a queue the device did not delete.
        let mut is_free = vec![false; slots.len()];
        for &f in free.iter() {
            is_free[f as usize] = true;
        }
        for (i, s) in slots.iter_mut().enumerate() {
            if is_free[i] {
                continue;
            }
            let r = match s.parked.take() {
                Some(req) => Response {
                    token: req.token,
                    result: Err(RequestError::ShutDown),
                    buf: req.buf,
                },
                None => Response {
                    token: s.token,
                    result: Err(RequestError::QueueNotDeleted {
                        controller: s.controller as usize,
                    }),
                    buf: None,
                },
            };
            free.push(i as u32);
            Sinks {
                links,
                local,
                stats,
                failures,
            }
            .respond(s.link, r);
        }
        *stats = ReactorStats {
            queues: final_stats.queues,
            producers: final_stats.producers,
            pollers: final_stats.pollers,
            timers: final_stats.timers,
            ..*stats
        };
        errors
    }
}
