//! The admin worker: where Abort (NVMe Base 2.0 §5.1) and controller reset
//! (§3.7.2) run, off the threads that poll I/O queues.
//!
//! Queue pairs find timed-out commands and failing controllers in their
//! deadline scans (`qpair/timeouts.rs`) and *post* what they want done:
//! "abort CID x on SQ y, seen in generation g" or "reset the controller I
//! saw in generation g". Posting is a few atomic operations on a fixed
//! mailbox and a wake-up: no allocation, and no lock that an admin command
//! holds. The same request posted twice collapses into one; an abort that
//! finds the mailbox full asks for a reset instead (a device with that many
//! stuck commands is hung). The queue pair keeps polling; the outcome
//! reaches it the usual way — the aborted command's completion, or the new
//! generation of a reset (`shared/recovery.rs`).
//!
//! The work runs on one thread per controller, started at bring-up and
//! parked while there is nothing to do. A thread rather than a poller the
//! owner drives: a reset waits on CSTS for up to CAP.TO and an admin
//! command for up to the admin timeout, and the bounded synchronous code
//! that does this (`bringup.rs`, `admin.rs`) is used as it is, so the
//! policy cannot drift between two implementations; the work goes on
//! whether or not the owner polls (a synchronous helper waiting on one
//! command, a reactor busy with other controllers); and a controller that
//! recovers stalls no thread but its own. The thread is placed with
//! [`crate::cpu`]: it inherits the affinity of the thread that brought the
//! controller up, and moves to a CPU outside those named busy
//! ([`Inner::keep_admin_work_off`], which a reactor set calls with its
//! cores) when one is free.
//!
//! The same thread looks for Asynchronous Event Request completions on the
//! admin queue every `ControllerOptions::admin_poll_interval` while idle
//! (`events.rs` acts on them); without outstanding requests it parks until
//! woken.
//!
//! Where the thread cannot be started, posting runs the work on the
//! posting thread instead, as the driver did before there was a worker.
//!
//! Order of work in one round: a pending reset first (it makes every older
//! abort moot), then the aborts of the current generation. An abort that
//! fails is followed by a reset of that generation, which drops the aborts
//! still waiting. Shutdown and drop stop the thread after the job it is
//! running; requests still waiting are dropped, as a shut-down controller
//! would refuse them: the commands they name stay with their queue pairs,
//! which complete them on teardown.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use crate::cpu;
use crate::device::Device;

use super::Inner;
use super::recovery::{generation_of, live_word};

/// Abort requests the mailbox holds at once (controller-wide). More
/// waiting aborts than this turn into a reset.
pub(crate) const ABORT_SLOTS: usize = 32;

/// The shortest admin poll interval honoured (a zero would spin).
const MIN_POLL_INTERVAL: Duration = Duration::from_micros(100);

/// Marks a used abort slot (an empty slot is 0).
const VALID: u64 = 1 << 63;

/// An abort request as one word: generation (low 31 bits), SQ id, CID.
fn abort_key(generation: u64, qid: u16, cid: u16) -> u64 {
    VALID | (generation & 0x7fff_ffff) << 32 | (qid as u64) << 16 | cid as u64
}

/// The mailbox and the thread behind it.
pub(crate) struct AdminWork {
    aborts: [AtomicU64; ABORT_SLOTS],
    /// A reset wanted for generation `g`, stored as `g + 1` (0: none).
    reset: AtomicU64,
    /// Requests accepted (duplicates not counted).
    posted: AtomicU64,
    /// `posted` as of the start of the last round that found nothing left.
    finished: AtomicU64,
    /// The worker is told to exit (shutdown, drop).
    stop: AtomicBool,
    /// The worker, for wake-ups without a lock.
    thread: OnceLock<Thread>,
    handle: Mutex<Option<JoinHandle<()>>>,
    /// CPUs the worker should not run on, and a version bumped on change.
    avoid: Mutex<Vec<usize>>,
    avoid_version: AtomicU64,
    /// User holds (`hold.rs`): controller handles and queue pairs.
    users: AtomicUsize,
}

impl AdminWork {
    pub(crate) fn new() -> Self {
        AdminWork {
            aborts: std::array::from_fn(|_| AtomicU64::new(0)),
            reset: AtomicU64::new(0),
            posted: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            thread: OnceLock::new(),
            handle: Mutex::new(None),
            avoid: Mutex::new(Vec::new()),
            avoid_version: AtomicU64::new(0),
            users: AtomicUsize::new(0),
        }
    }

    /// A thread runs the work (started and not stopped).
    fn running(&self) -> bool {
        self.thread.get().is_some() && !self.stop.load(Ordering::Acquire)
    }

    fn wake(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    fn accepted(&self) {
        // Release: the worker that reads the new count sees the request.
        self.posted.fetch_add(1, Ordering::AcqRel);
    }
}

impl<D: Device> Inner<D> {
    /// Start the admin worker (at bring-up). A failure to start leaves the
    /// work to the posting threads.
    pub(crate) fn start_admin_worker(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        let allowed = cpu::allowed_cpus().unwrap_or_default();
        let spawned = std::thread::Builder::new()
            .name(format!("nvme-admin {}", self.name()))
            .spawn(move || worker_loop(weak, allowed));
        if let Ok(handle) = spawned {
            let _ = self.work.thread.set(handle.thread().clone());
            *self.work.handle.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        }
    }

    /// A user hold was taken (`hold.rs`).
    pub(crate) fn user_arrived(&self) {
        self.work.users.fetch_add(1, Ordering::AcqRel);
    }

    /// A user hold went; true for the last one.
    pub(crate) fn user_left(&self) -> bool {
        self.work.users.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Stop the admin worker after its current job and wait for it (unless
    /// called on the worker itself, which then exits on its own).
    pub(crate) fn stop_admin_worker(&self) {
        self.work.stop.store(true, Ordering::Release);
        self.work.wake();
        let handle = self
            .work
            .handle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle
            && h.thread().id() != std::thread::current().id()
        {
            let _ = h.join();
        }
    }

    /// Keep the admin worker off `cpus` (the cores of polling threads): it
    /// moves to the first allowed CPU not named busy so far, if there is one.
    pub(crate) fn keep_admin_work_off(&self, cpus: &[usize]) {
        let mut avoid = self.work.avoid.lock().unwrap_or_else(|p| p.into_inner());
        for &c in cpus {
            if !avoid.contains(&c) {
                avoid.push(c);
            }
        }
        self.work.avoid_version.fetch_add(1, Ordering::AcqRel);
        drop(avoid);
        self.work.wake();
    }

    /// Ask for command `cid` of SQ `qid`, timed out in `generation`, to be
    /// aborted. False when the mailbox is full: the caller resets instead.
    pub(crate) fn post_abort(&self, generation: u64, qid: u16, cid: u16) -> bool {
        let key = abort_key(generation, qid, cid);
        let slots = &self.work.aborts;
        // Acquire: a slot the worker emptied is seen empty, not stale.
        if slots.iter().any(|s| s.load(Ordering::Acquire) == key) {
            return true;
        }
        let Some(_) = slots.iter().find(|s| {
            s.compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        }) else {
            return false;
        };
        self.work.accepted();
        self.after_post();
        true
    }

    /// Ask for a reset of the controller observed in `generation`. Posting
    /// it again before it ran does nothing more.
    pub(crate) fn post_reset(&self, generation: u64) {
        let want = generation.saturating_add(1);
        if self.work.reset.fetch_max(want, Ordering::AcqRel) >= want {
            return;
        }
        self.work.accepted();
        self.after_post();
    }

    fn after_post(&self) {
        if self.work.running() {
            self.work.wake();
        } else {
            // No worker (it could not be started, or the controller shut
            // down): the posting thread does the work, as before.
            self.run_admin_work();
        }
    }

    /// Whether everything posted so far has been carried out.
    pub(crate) fn admin_work_settled(&self) -> bool {
        self.work.finished.load(Ordering::Acquire) >= self.work.posted.load(Ordering::Acquire)
    }

    /// Wait until everything posted so far has been carried out, at most
    /// `limit`. Returns whether it was.
    pub(crate) fn wait_admin_work(&self, limit: Duration) -> bool {
        let start = Instant::now();
        while !self.admin_work_settled() {
            if !self.work.running() {
                self.run_admin_work();
                continue;
            }
            if start.elapsed() > limit {
                return false;
            }
            std::thread::yield_now();
        }
        true
    }

    /// One round: the pending reset, then the aborts. Returns whether there
    /// was anything to do.
    pub(crate) fn run_admin_work(&self) -> bool {
        let target = self.work.posted.load(Ordering::Acquire);
        let mut did = false;
        let reset = self.work.reset.swap(0, Ordering::AcqRel);
        if reset != 0 {
            did = true;
            // The outcome is recorded in the controller's state.
            let _ = self.reset(Some(reset - 1));
        }
        for slot in &self.work.aborts {
            let key = slot.swap(0, Ordering::AcqRel);
            if key == 0 {
                continue;
            }
            did = true;
            let state = self.state();
            let generation = generation_of(state);
            if state != live_word(generation)
                || (key >> 32) & 0x7fff_ffff != generation & 0x7fff_ffff
            {
                // A reset since (or under way) dealt with the command.
                continue;
            }
            let (qid, cid) = ((key >> 16) as u16, key as u16);
            if self.abort(qid, cid).is_err() {
                let _ = self.reset(Some(generation));
            }
        }
        if !did {
            self.work.finished.fetch_max(target, Ordering::AcqRel);
        }
        did
    }
}

/// The worker thread's body.
fn worker_loop<D: Device>(weak: Weak<Inner<D>>, allowed: Vec<usize>) {
    let mut placed_for = 0u64;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if inner.work.stop.load(Ordering::Acquire) {
            return;
        }
        let version = inner.work.avoid_version.load(Ordering::Acquire);
        if version != placed_for {
            placed_for = version;
            let avoid = inner
                .work
                .avoid
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(c) = cpu::free_cpu(&allowed, &avoid) {
                let _ = cpu::pin_current_thread(c);
            }
        }
        let did = inner.run_admin_work();
        // Asynchronous events: the admin queue has no interrupt, so look
        // for completed requests at the poll interval while idle.
        let events = inner.events_enabled();
        let interval = inner.opts().admin_poll_interval.max(MIN_POLL_INTERVAL);
        if events {
            inner.poll_async_events();
        }
        // Dropping the last handle here runs the controller's drop on this
        // thread, which does not join itself; the next upgrade fails.
        drop(inner);
        if !did {
            if events {
                std::thread::park_timeout(interval);
            } else {
                std::thread::park();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abort_keys_separate_generation_queue_and_command() {
        let k = abort_key(5, 3, 0x1234);
        assert_ne!(k, 0);
        assert_eq!((k >> 32) & 0x7fff_ffff, 5);
        assert_eq!((k >> 16) as u16, 3);
        assert_eq!(k as u16, 0x1234);
        assert_ne!(k, abort_key(6, 3, 0x1234));
        assert_ne!(abort_key(0, 0, 0), 0, "an empty slot is never a request");
    }
}
