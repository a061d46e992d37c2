//! I/O queue pairs (NVMe Base 2.0 §3.3.1, §5.3–§5.6 queue creation and
//! deletion; NVM Command Set 1.0 §3 for the commands).
//!
//! One completion queue (physically contiguous, interrupts disabled) and one
//! submission queue, driven by a single thread: the type is `Send` but not
//! `Sync`. Submissions write the SQE and advance the tail; the SQ doorbell is
//! written once per batch. `process_completions` reaps a bounded number of
//! entries and writes the CQ head doorbell once. Nothing on this path
//! allocates, locks or makes a system call.
//!
//! The type lives here with its creation and accessors; its fields are
//! private to this folder. The path of one I/O: `submit.rs` (checks, slot,
//! PRPs, SQ entry) and `complete.rs` (doorbells, bounded reaping). Around
//! it: `timeouts.rs` scans deadlines, `requeue.rs` re-creates the queues
//! after a reset on the owning thread, `teardown.rs` deletes them, and
//! `sync.rs` holds the blocking helpers. The ring, CID and generation
//! invariants are written where they are enforced: `ring.rs`,
//! `tracker.rs` and `shared/recovery.rs`.

#![forbid(unsafe_code)]

mod complete;
mod requeue;
mod submit;
mod sync;
mod teardown;
pub(crate) mod timeouts;

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::device::Device;
use crate::dma::{self, DmaBuf};
use crate::spec::registers::{cq_head_doorbell, sq_tail_doorbell};

use crate::dma::DmaWindow;
use crate::driver::error::{DriverError, IoError};
use crate::driver::prp::pages;
use crate::driver::prp::{self, PAGE_SIZE};
use crate::driver::ring::{CQE_BYTES, CqRing, SQE_BYTES, SqRing};
use crate::driver::shared::Inner;
use crate::driver::shared::dbbuf::ShadowPair;
use crate::driver::shared::recovery::live_word;
use crate::driver::tracker::Tracker;

/// Largest I/O queue the driver creates: keeps at least four generation
/// bits in every CID.
pub const MAX_IO_QUEUE_ENTRIES: u16 = 4096;

/// Options for one I/O queue pair.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueuePairOptions {
    /// Queue entries (SQ and CQ); `None` uses [`crate::driver::ControllerOptions::io_queue_entries`].
    /// Clamped to CAP.MQES+1 and [`MAX_IO_QUEUE_ENTRIES`].
    pub entries: Option<u16>,
}

/// Counters of one queue pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueuePairStats {
    /// Commands submitted (SQ entries written).
    pub submitted: u64,
    /// Commands completed (with any status).
    pub completed: u64,
    /// Commands completed with an error status.
    pub failed: u64,
    /// Submissions refused because the queue was full.
    pub queue_full: u64,
    /// Completions whose CID generation was not the slot's current one.
    pub stale_completions: u64,
    /// Completions for a slot that was not in flight.
    pub duplicate_completions: u64,
    /// Completions whose CID names no slot.
    pub unknown_completions: u64,
    /// Completions whose SQHD was outside the ring or ahead of the tail.
    pub invalid_sqhd: u64,
    /// Completions naming another submission queue (SQID).
    pub wrong_sqid: u64,
    /// SQ tail doorbell MMIO writes.
    pub sq_doorbell_writes: u64,
    /// CQ head doorbell MMIO writes.
    pub cq_doorbell_writes: u64,
    /// SQ tail updates published in the shadow doorbell only (the device's
    /// EventIdx did not ask for an MMIO write).
    pub sq_shadow_updates: u64,
    /// CQ head updates published in the shadow doorbell only.
    pub cq_shadow_updates: u64,
    /// Commands resubmitted after an error status with DNR=0.
    pub retries: u64,
    /// Commands whose deadline passed.
    pub timeouts: u64,
    /// Abort commands sent for timed-out commands.
    pub aborts_sent: u64,
    /// Controller resets this queue pair requested (timeouts, fatal status,
    /// registers reading all ones).
    pub resets_requested: u64,
    /// Times this queue pair re-created its queues after a controller reset.
    pub recreated: u64,
    /// Commands resubmitted after a controller reset.
    pub resubmitted: u64,
}

impl std::ops::AddAssign<&QueuePairStats> for QueuePairStats {
    /// Sum counters, e.g. over the queue pairs of one thread. Destructuring
    /// makes a new counter a compile error here until it is summed too.
    fn add_assign(&mut self, other: &QueuePairStats) {
        let QueuePairStats {
            submitted,
            completed,
            failed,
            queue_full,
            stale_completions,
            duplicate_completions,
            unknown_completions,
            invalid_sqhd,
            wrong_sqid,
            sq_doorbell_writes,
            cq_doorbell_writes,
            sq_shadow_updates,
            cq_shadow_updates,
            retries,
            timeouts,
            aborts_sent,
            resets_requested,
            recreated,
            resubmitted,
        } = *other;
        self.submitted += submitted;
        self.completed += completed;
        self.failed += failed;
        self.queue_full += queue_full;
        self.stale_completions += stale_completions;
        self.duplicate_completions += duplicate_completions;
        self.unknown_completions += unknown_completions;
        self.invalid_sqhd += invalid_sqhd;
        self.wrong_sqid += wrong_sqid;
        self.sq_doorbell_writes += sq_doorbell_writes;
        self.cq_doorbell_writes += cq_doorbell_writes;
        self.sq_shadow_updates += sq_shadow_updates;
        self.cq_shadow_updates += cq_shadow_updates;
        self.retries += retries;
        self.timeouts += timeouts;
        self.aborts_sent += aborts_sent;
        self.resets_requested += resets_requested;
        self.recreated += recreated;
        self.resubmitted += resubmitted;
    }
}

/// One finished command.
#[derive(Debug)]
pub struct IoCompletion {
    /// The token given at submission.
    pub token: u64,
    /// Completion DW0 on success, or why the command failed.
    pub result: Result<u32, IoError>,
    /// The command's data buffer, handed back.
    pub buf: Option<DmaBuf>,
}

/// What `IoQueuePair::build` makes: rings, PRP-list pages, pages per slot,
/// the generation the queues were created in, and the shadow slots.
type Built = (SqRing, CqRing, DmaWindow, usize, u64, Option<ShadowPair>);

/// One I/O submission/completion queue pair, owned by one thread.
pub struct IoQueuePair<D: Device> {
    ctrl: Arc<Inner<D>>,
    qid: u16,
    sq: SqRing,
    cq: CqRing,
    tracker: Tracker,
    lists: DmaWindow,
    pages_per_slot: usize,
    sq_doorbell: usize,
    cq_doorbell: usize,
    /// Shadow doorbell slots (SQ tail, CQ head) while the controller has the
    /// buffers configured in `generation`.
    shadow: Option<ShadowPair>,
    stats: QueuePairStats,
    live: bool,
    /// Reset generation the SQ/CQ exist in.
    generation: u64,
    /// The queues could not be re-created in `generation`.
    dead: bool,
    /// `live_word(generation)`: the state word while the queues exist.
    live_state: u64,
    /// `live_state`, or a value no state word takes when `dead`: one
    /// compare tells a submission whether anything needs a closer look.
    submit_state: u64,
    /// Per-command deadline.
    timeout: Duration,
    retry_limit: u8,
    scan_interval: Duration,
    next_scan: Option<Instant>,
    /// Since when commands have waited with no completion (timeout scans).
    idle_since: Option<Instant>,
    _not_sync: PhantomData<Cell<()>>,
}

impl<D: Device> IoQueuePair<D> {
    pub(crate) fn create(ctrl: Arc<Inner<D>>, opts: QueuePairOptions) -> Result<Self, DriverError> {
        if ctrl.is_shut_down() {
            return Err(DriverError::ShutDown);
        }
        let asked = opts.entries.unwrap_or(ctrl.opts().io_queue_entries);
        if asked < 2 {
            return Err(DriverError::InvalidOption {
                name: "entries",
                value: asked as u64,
                hint: "an I/O queue needs at least 2 entries",
            });
        }
        let limit = ctrl
            .cap()
            .max_queue_entries()
            .min(MAX_IO_QUEUE_ENTRIES as u32) as u16;
        let entries = asked.min(limit);
        let qid = ctrl.take_qid()?;
        match Self::build(&ctrl, qid, entries) {
            Ok((sq, cq, lists, pages_per_slot, generation, shadow)) => {
                let stride = ctrl.stride();
                let (timeout, retry_limit, scan_interval) = (
                    ctrl.opts().io_timeout,
                    ctrl.opts().io_retry_limit,
                    ctrl.opts().timeout_scan_interval,
                );
                Ok(IoQueuePair {
                    ctrl,
                    qid,
                    sq,
                    cq,
                    tracker: Tracker::new(entries as usize - 1),
                    lists,
                    pages_per_slot,
                    sq_doorbell: sq_tail_doorbell(qid, stride),
                    cq_doorbell: cq_head_doorbell(qid, stride),
                    shadow,
                    stats: QueuePairStats::default(),
                    live: true,
                    generation,
                    dead: false,
                    live_state: live_word(generation),
                    submit_state: live_word(generation),
                    timeout,
                    retry_limit,
                    scan_interval,
                    next_scan: None,
                    idle_since: None,
                    _not_sync: PhantomData,
                })
            }
            Err(e) => {
                ctrl.return_qid(qid);
                Err(e)
            }
        }
    }

    /// Allocate the rings and PRP-list pages, then Create I/O CQ and SQ.
    fn build(ctrl: &Inner<D>, qid: u16, entries: u16) -> Result<Built, DriverError> {
        let sq_pages = pages(entries as usize * SQE_BYTES);
        let cq_pages = pages(entries as usize * CQE_BYTES);
        // At least one page per slot: a Dataset Management range list needs it.
        let pages_per_slot = prp::list_pages_for_transfer(ctrl.max_transfer()).max(1);
        let list_pages = (entries as usize - 1) * pages_per_slot;
        let bytes = (sq_pages + cq_pages + list_pages) * PAGE_SIZE;
        let region =
            Arc::new(
                dma::allocate(ctrl.device(), bytes).map_err(|source| DriverError::Dma {
                    what: "an I/O queue pair",
                    source,
                })?,
            );
        let memory_error = |what| DriverError::QueueMemory { what, bytes };
        let win = |page: usize, n: usize| {
            DmaWindow::new(Arc::clone(&region), page * PAGE_SIZE, n * PAGE_SIZE)
        };
        let sq = win(0, sq_pages)
            .and_then(|m| SqRing::new(m, entries))
            .ok_or(memory_error("I/O submission queue"))?;
        let cq = win(sq_pages, cq_pages)
            .and_then(|m| CqRing::new(m, entries))
            .ok_or(memory_error("I/O completion queue"))?;
        let lists = win(sq_pages + cq_pages, list_pages).ok_or(memory_error("PRP lists"))?;
        if !sq.is_contiguous() {
            return Err(memory_error("I/O submission queue"));
        }
        if !cq.is_contiguous() {
            return Err(memory_error("I/O completion queue"));
        }
        let shadow = ctrl.shadow_slots(qid);
        let generation = ctrl
            .create_io_queues(qid, entries, sq.iova(), cq.iova(), None)
            .inspect_err(|e| {
                // The device may still hold the CQ in this memory.
                if matches!(e, DriverError::DmaQuarantined { .. }) {
                    lists.quarantine();
                }
            })?;
        let shadow = ctrl.keep_if_configured(shadow, generation);
        Ok((sq, cq, lists, pages_per_slot, generation, shadow))
    }

    /// Record the generation the queues exist in (or, `dead`, could not be
    /// re-created in).
    pub(super) fn set_generation(&mut self, generation: u64, dead: bool) {
        self.generation = generation;
        self.dead = dead;
        self.live_state = live_word(generation);
        // The health byte of a real state word is 0..=3, never 0xff.
        self.submit_state = if dead { u64::MAX } else { self.live_state };
    }

    /// The queue id (SQ and CQ share it).
    pub fn qid(&self) -> u16 {
        self.qid
    }
    /// Most commands in flight at once (entries − 1).
    pub fn capacity(&self) -> usize {
        self.tracker.capacity()
    }
    /// Commands submitted and not yet completed.
    pub fn outstanding(&self) -> usize {
        self.tracker.in_flight()
    }
    /// The tokens of the commands submitted and not yet completed (not a
    /// hot-path call: for teardown and diagnostics).
    pub fn outstanding_tokens(&self) -> impl Iterator<Item = u64> + '_ {
        self.tracker.tokens_in_flight()
    }
    /// Counters.
    pub fn stats(&self) -> &QueuePairStats {
        &self.stats
    }
    /// The per-command deadline (default `ControllerOptions::io_timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
    /// Set the per-command deadline for commands checked from now on.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }
    /// Set how often a command is resubmitted (after DNR=0 errors and
    /// controller resets) before it fails.
    pub fn set_retry_limit(&mut self, limit: u8) {
        self.retry_limit = limit;
    }
    /// The controller's admin timeout (bounds for synchronous helpers).
    pub(crate) fn admin_timeout(&self) -> Duration {
        self.ctrl.opts().admin_timeout
    }
    /// Most bytes one command may transfer.
    pub fn max_transfer_bytes(&self) -> usize {
        self.ctrl.max_transfer()
    }
}

impl<D: Device> Drop for IoQueuePair<D> {
    fn drop(&mut self) {
        let _ = self.teardown(&mut |_| {});
    }
}

impl<D: Device> std::fmt::Debug for IoQueuePair<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoQueuePair")
            .field("qid", &self.qid)
            .field("capacity", &self.capacity())
            .field("outstanding", &self.outstanding())
            .field("stats", &self.stats)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dma::{DmaError, DmaRegion, HostMemory};
    use crate::driver::Controller;

    struct Nothing;
    impl Device for Nothing {
        fn read32(&self, _: usize) -> u32 {
            0
        }
        fn write32(&self, _: usize, _: u32) {}
        fn map_dma(&self, m: HostMemory) -> Result<DmaRegion, DmaError> {
            Ok(DmaRegion::unmapped_for_tests(m, 0))
        }
        fn name(&self) -> String {
            "nothing".into()
        }
    }

    /// Resolves only when `T` is not `Sync`: with a `Sync` type both impls
    /// apply and the call below is ambiguous, which fails to compile.
    trait AmbiguousIfSync<A> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfSync<()> for T {}
    impl<T: ?Sized + Sync> AmbiguousIfSync<u8> for T {}

    #[test]
    fn queue_pair_is_send_not_sync_and_controller_is_send_sync() {
        fn send<T: Send>() {}
        fn sync<T: Sync>() {}
        send::<IoQueuePair<Nothing>>();
        <IoQueuePair<Nothing> as AmbiguousIfSync<_>>::check();
        send::<Controller<Nothing>>();
        sync::<Controller<Nothing>>();
    }
}
