//! Reactor counters and the shutdown summary.
//!
//! Counters are plain integers owned by the reactor thread (no atomics on
//! the I/O path); `ReactorSet::stats` asks each reactor for a snapshot over
//! its control channel.

#![forbid(unsafe_code)]

use std::fmt;

use nvme_engine::{DeviceGone, Health, QueuePairStats};

use crate::request::RequestError;

/// Counters of one reactor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReactorStats {
    /// Reactor index.
    pub reactor: usize,
    /// Core the reactor was placed on.
    pub core: usize,
    /// Loop turns that moved I/O or had a busy poller.
    pub iterations_busy: u64,
    /// Loop turns that found nothing to do.
    pub iterations_idle: u64,
    /// Commands put on NVMe submission queues.
    pub submitted: u64,
    /// Responses produced (success or failure).
    pub completed: u64,
    /// Responses carrying an error.
    pub failed: u64,
    /// Times a response found its completion ring full and waited on the reactor.
    pub completion_ring_full: u64,
    /// Times a command found its NVMe queue full and waited in the backlog.
    pub queue_full: u64,
    /// SQ doorbell writes requested (one per batch that submitted).
    pub doorbells: u64,
    /// Timer callbacks run.
    pub timers_run: u64,
    /// Deadline checks run over the reactor's queue pairs.
    pub timeout_checks: u64,
    /// The longest loop turn measured: the time between the clock reads of
    /// two consecutive turns (the clock is read on turns with commands in
    /// flight or timers registered, so idle stretches are not counted).
    /// A turn that stalls every controller of the reactor shows up here.
    pub longest_turn: std::time::Duration,
    /// Responses that failed with [`RequestError::TimedOut`].
    pub timed_out: u64,
    /// Responses that failed with [`RequestError::Gone`] ([`DeviceGone::Removed`]).
    pub device_removed: u64,
    /// Responses that failed with [`RequestError::ControllerReset`].
    pub controller_reset: u64,
    /// Responses that failed with [`RequestError::Gone`] for any reason but
    /// removal ([`DeviceGone::Failed`]).
    pub controller_failed: u64,
    /// Commands whose data went in memory registered with the transport
    /// (io_uring fixed buffers: no page pinned per I/O), over this
    /// reactor's queues. 0 on PCIe, where every pool is mapped for the
    /// device when it is made.
    pub fixed_buffer_io: u64,
    /// Commands whose data went outside any registered memory (io_uring:
    /// the kernel pinned its pages for that I/O) — a buffer from a pool the
    /// ring does not know, or one its registration failed for (the ring's
    /// buffer mode says why). 0 when every pool reaching the reactor is
    /// registered, and always on PCIe.
    pub unregistered_io: u64,
    /// The driver's counters, summed over this reactor's queue pairs
    /// (retries, timeouts, aborts, re-creations after resets, stale,
    /// duplicate and unknown completions...).
    pub queues: QueuePairStats,
    /// Producers attached now.
    pub producers: usize,
    /// Pollers registered.
    pub pollers: usize,
    /// Timers registered.
    pub timers: usize,
}

impl fmt::Display for ReactorStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "reactor {} (core {}): submitted {}, completed {}, failed {}, loop busy/idle {}/{}, \
             queue-full {}, completion-ring-full {}, doorbells {}; timed out {}, removed {}, \
             reset {}, controller failed {}; driver retries {}, aborts {}, queue re-creations {}; \
             longest turn {:?}",
            self.reactor,
            self.core,
            self.submitted,
            self.completed,
            self.failed,
            self.iterations_busy,
            self.iterations_idle,
            self.queue_full,
            self.completion_ring_full,
            self.doorbells,
            self.timed_out,
            self.device_removed,
            self.controller_reset,
            self.controller_failed,
            self.queues.retries,
            self.queues.aborts_sent,
            self.queues.recreated,
            self.longest_turn
        )?;
        if self.fixed_buffer_io != 0 || self.unregistered_io != 0 {
            write!(
                f,
                "; fixed-buffer I/O {}, unregistered I/O {}",
                self.fixed_buffer_io, self.unregistered_io
            )?;
        }
        Ok(())
    }
}

impl ReactorStats {
    /// Count one failed response by kind.
    pub(crate) fn count_error(&mut self, error: &RequestError) {
        match error {
            RequestError::TimedOut { .. } => self.timed_out += 1,
            RequestError::Gone { kind, .. } => match kind {
                DeviceGone::Removed => self.device_removed += 1,
                _ => self.controller_failed += 1,
            },
            RequestError::ControllerReset { .. } => self.controller_reset += 1,
            _ => {}
        }
    }
}

/// How many failed requests each reactor remembers for its report.
pub const MAX_RECORDED_FAILURES: usize = 16;

/// One failed request, as remembered for the shutdown report.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct FailedIo {
    /// Reactor that answered it.
    pub reactor: usize,
    /// The request's token.
    pub token: u64,
    /// Why it failed.
    pub error: RequestError,
}

/// What one reactor reports when it exits.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ReactorReport {
    /// Final counters.
    pub stats: ReactorStats,
    /// The first failed requests (up to [`MAX_RECORDED_FAILURES`]); the
    /// total is `stats.failed`.
    pub failures: Vec<FailedIo>,
    /// Problems met while tearing down (queue deletion failures), or a
    /// note that the reactor thread panicked.
    pub errors: Vec<String>,
}

/// The state of one controller when the reactor set shut down.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ControllerReport {
    /// Index in the list the set was started with.
    pub index: usize,
    /// Device name.
    pub name: String,
    /// Health at shutdown: anything but `Live` means the controller was
    /// removed or failed during the run, and requests to it failed.
    pub health: Health,
    /// Controller resets completed (driver-initiated and `Controller::reset`).
    pub resets: u64,
}

/// The summary `ReactorSet::shutdown` returns.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// One report per reactor, in reactor order.
    pub reactors: Vec<ReactorReport>,
    /// One report per controller, in index order.
    pub controllers: Vec<ControllerReport>,
}

impl ShutdownReport {
    /// Commands submitted by all reactors.
    pub fn submitted(&self) -> u64 {
        self.reactors.iter().map(|r| r.stats.submitted).sum()
    }
    /// Responses produced by all reactors.
    pub fn completed(&self) -> u64 {
        self.reactors.iter().map(|r| r.stats.completed).sum()
    }
    /// Responses that carried an error.
    pub fn failed(&self) -> u64 {
        self.reactors.iter().map(|r| r.stats.failed).sum()
    }
    /// Responses that failed with `TimedOut`, over all reactors.
    pub fn timed_out(&self) -> u64 {
        self.reactors.iter().map(|r| r.stats.timed_out).sum()
    }
    /// Responses that failed with `DeviceGone::Removed`, over all reactors.
    pub fn device_removed(&self) -> u64 {
        self.reactors.iter().map(|r| r.stats.device_removed).sum()
    }
    /// Controllers that were removed or failed during the run.
    pub fn lost_controllers(&self) -> impl Iterator<Item = &ControllerReport> {
        self.controllers.iter().filter(|c| c.health != Health::Live)
    }
    /// Whether every reactor shut down cleanly, no I/O failed and every
    /// controller is still live.
    pub fn is_clean(&self) -> bool {
        self.failed() == 0
            && self.reactors.iter().all(|r| r.errors.is_empty())
            && self.lost_controllers().next().is_none()
    }
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "shutdown: {} reactor(s), {} completed, {} failed",
            self.reactors.len(),
            self.completed(),
            self.failed()
        )?;
        for c in self.lost_controllers() {
            writeln!(
                f,
                "  controller {} ({}) is {:?} after {} reset(s); its requests failed",
                c.index, c.name, c.health, c.resets
            )?;
        }
        for r in &self.reactors {
            writeln!(f, "  {}", r.stats)?;
            for e in &r.errors {
                writeln!(f, "    error: {e}")?;
            }
            for x in &r.failures {
                writeln!(f, "    failed I/O token {}: {}", x.token, x.error)?;
            }
            if r.stats.failed > r.failures.len() as u64 {
                writeln!(
                    f,
                    "    ... and {} more failed I/O",
                    r.stats.failed - r.failures.len() as u64
                )?;
            }
        }
        Ok(())
    }
}
