//! Reactor counters and the shutdown summary.
//!
//! Counters are plain integers owned by the reactor thread (no atomics on
//! the I/O path); `ReactorSet::stats` asks each reactor for a snapshot over
//! its control channel.

#![forbid(unsafe_code)]

use std::fmt;

use crate::request::RequestError;

/// Counters of one reactor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
             queue-full {}, completion-ring-full {}, doorbells {}",
            self.reactor,
            self.core,
            self.submitted,
            self.completed,
            self.failed,
            self.iterations_busy,
            self.iterations_idle,
            self.queue_full,
            self.completion_ring_full,
            self.doorbells
        )
    }
}

/// How many failed requests each reactor remembers for its report.
pub const MAX_RECORDED_FAILURES: usize = 16;

/// One failed request, as remembered for the shutdown report.
#[derive(Debug, Clone, Copy)]
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

/// The summary `ReactorSet::shutdown` returns.
#[derive(Debug, Clone, Default)]
pub struct ShutdownReport {
    /// One report per reactor, in reactor order.
    pub reactors: Vec<ReactorReport>,
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
    /// Whether every reactor shut down cleanly and no I/O failed.
    pub fn is_clean(&self) -> bool {
        self.failed() == 0 && self.reactors.iter().all(|r| r.errors.is_empty())
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
