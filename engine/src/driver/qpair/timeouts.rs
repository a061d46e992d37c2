//! Per-command deadlines of an I/O queue pair, without a clock read per I/O
//! (NVMe Base 2.0 §5.1 Abort, §3.7.2 controller reset as the last resort).
//!
//! The owner calls [`IoQueuePair::check_timeouts`] periodically with the
//! current time (a reactor calls it from a timer; the synchronous helpers
//! call it while they poll). A call does nothing until
//! `ControllerOptions::timeout_scan_interval` has passed since the last
//! scan. A scan stamps every command it sees in flight for the first time;
//! a command still in flight `timeout` after its stamp has timed out, so a
//! deadline is never early and at most one scan interval late.
//!
//! A timed-out command is aborted (at most [`MAX_ABORTS_PER_SCAN`] per
//! scan). Its slot — and its buffer —
//! stays reserved until the device is proven done with it: its completion
//! arrives (the aborted command, or its late completion) or the controller
//! is reset. Only then does it complete, exactly once, with
//! [`crate::driver::IoError::TimedOut`] and the buffer. If the abort fails, or the
//! command is still in flight a grace period later (the smaller of the
//! timeout and the admin timeout), or more commands time out in one scan
//! than may be aborted, the controller is reset.
//!
//! The same scan watches for surprise removal and fatal status: when
//! commands are outstanding and no completion arrived for
//! [`STALL_CHECK`], it reads CSTS once. All ones or CFS set triggers a
//! controller reset, which marks the controller removed if the registers
//! still read all ones.
//!
//! The scan only decides: aborts and resets are *posted* to the
//! controller's admin worker (`shared/worker.rs`) — a few atomic
//! operations, no allocation, no lock an admin command holds — and the scan
//! returns at once. The worker sends the Abort (a failed one is followed by
//! a reset) or resets the controller while this thread keeps polling; the
//! outcome arrives through `process_completions` like any other.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use crate::driver::qpair::QueuePair;
use crate::driver::transport::{CancelRequest, CommandTransport};

/// Most Abort commands one scan sends; more timeouts at once reset the
/// controller instead (a device with that many stuck commands is hung).
pub const MAX_ABORTS_PER_SCAN: usize = 4;

/// How long outstanding commands may see no completion before a scan
/// reads CSTS to look for removal or fatal status.
pub const STALL_CHECK: Duration = Duration::from_millis(100);

impl<T: CommandTransport> QueuePair<T> {
    /// Check deadlines as of `now`; cheap when called more often than the
    /// scan interval (one comparison). Asks the controller's admin worker
    /// for Aborts or a reset as described in the module
    /// documentation of `driver::qpair::timeouts` and returns without waiting for them; the
    /// affected commands complete through
    /// [`QueuePair::process_completions`](crate::QueuePair::process_completions). Returns how many commands
    /// timed out in this call.
    ///
    /// Pass a synthetic `now` to test timeouts without waiting.
    pub fn check_timeouts(&mut self, now: Instant) -> usize {
        if self.next_scan.is_some_and(|t| now < t) {
            return 0;
        }
        self.next_scan = now.checked_add(self.scan_interval);
        let Some(observed) = self.t.live().filter(|_| self.outstanding() != 0) else {
            // process_completions follows resets and removals.
            self.idle_since = None;
            return 0;
        };
        match self.idle_since {
            None => self.idle_since = Some(now),
            Some(t) if now.saturating_duration_since(t) >= STALL_CHECK => {
                self.idle_since = Some(now);
                if self.t.stalled() {
                    self.stats.resets_requested += 1;
                    self.t.reset(observed);
                    return 0;
                }
            }
            Some(_) => {}
        }
        let timeout = self.timeout;
        let grace = timeout.min(self.t.admin_timeout());
        let mut aborts = [0u16; MAX_ABORTS_PER_SCAN];
        let (mut n_aborts, mut newly, mut reset) = (0usize, 0usize, false);
        let tracker = &mut self.tracker;
        for index in 0..tracker.capacity() {
            let slot = tracker.slot_mut(index);
            if !slot.in_flight() {
                continue;
            }
            let Some(seen) = slot.seen() else {
                slot.set_seen(now);
                continue;
            };
            if !slot.timed_out() {
                if now.saturating_duration_since(seen) >= timeout {
                    slot.set_timed_out(now.checked_add(grace));
                    newly += 1;
                    if n_aborts < MAX_ABORTS_PER_SCAN {
                        aborts[n_aborts] = slot.cmd.cid();
                        n_aborts += 1;
                    } else {
                        reset = true;
                    }
                }
            } else if slot.abort_deadline().is_none_or(|d| now >= d) {
                reset = true;
            }
        }
        self.stats.timeouts += newly as u64;
        if !reset {
            for &cid in &aborts[..n_aborts] {
                self.stats.aborts_sent += 1;
                if self.t.cancel(cid) == CancelRequest::Failed {
                    reset = true;
                    break;
                }
            }
        }
        if reset {
            self.stats.resets_requested += 1;
            self.t.reset(observed);
        }
        newly
    }
}
