//! I/O queue pairs (NVMe Base 2.0 §3.3.1, §5.3–§5.6 queue creation and
//! deletion; NVM Command Set 1.0 §3 for the commands).
//!
//! [`QueuePair`] is generic over a [`CommandTransport`]: the CID slab with
//! generations, namespace checks, deadlines and the abort/reset policy,
//! retries, resubmission after a reset, the synchronous helpers and the
//! exactly-once teardown are written once here. [`PcieQueue`] (`pcie.rs`:
//! SQ/CQ rings, doorbells, PRPs) is the PCIe transport, and
//! [`IoQueuePair`] names the queue pair over it; the io_uring passthrough
//! transport is [`crate::uring::UringTransport`].
//!
//! A queue pair is driven by a single thread: the type is `Send` but not
//! `Sync`. On PCIe, submissions write the SQE and advance the tail; the SQ
//! doorbell is written once per batch. `process_completions` reaps a
//! bounded number of entries and writes the CQ head doorbell once. Nothing
//! on this path allocates, locks or makes a system call.
//!
//! The type lives here with its creation and accessors; its fields are
//! private to this folder. The path of one I/O: `submit.rs` (checks, slot,
//! data, command) and `complete.rs` (bounded reaping); `extended.rs` submits
//! what carries metadata, protection information, several segments or a
//! fused pair. Around it:
//! `timeouts.rs` scans deadlines, `requeue.rs` follows the transport
//! through a reset, `teardown.rs` closes it, and `sync.rs` and
//! `sync_ext.rs` hold the blocking helpers. The ring, CID and generation
//! invariants are written where they are enforced: `ring.rs`,
//! `tracker.rs` and `shared/recovery.rs`.

#![forbid(unsafe_code)]

mod complete;
mod extended;
#[cfg(test)]
mod fake;
mod pcie;
mod requeue;
mod submit;
mod sync;
mod sync_ext;
mod teardown;
pub(crate) mod timeouts;

use std::cell::Cell;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use crate::device::Device;
use crate::dma::DmaBuf;

use crate::driver::error::{DriverError, IoError};
use crate::driver::shared::hold::UserHold;
use crate::driver::stats::QueuePairStats;
use crate::driver::tracker::{IoExtra, Request, Tracker};
use crate::driver::transport::CommandTransport;

pub use pcie::{PcieQueue, Prps};

/// Largest I/O queue the driver creates: keeps at least four generation
/// bits in every CID.
pub const MAX_IO_QUEUE_ENTRIES: u16 = 4096;

/// Options for one I/O queue pair.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct QueuePairOptions {
    /// Queue entries (SQ and CQ); `None` uses [`crate::driver::ControllerOptions::io_queue_entries`].
    /// Clamped to CAP.MQES+1 and [`MAX_IO_QUEUE_ENTRIES`].
    pub entries: Option<u16>,
}

impl QueuePairOptions {
    /// These options with [`entries`](Self::entries) set to `entries`.
    #[must_use]
    pub fn with_entries(mut self, entries: u16) -> Self {
        self.entries = Some(entries);
        self
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
    /// The separate metadata buffer (or metadata segments) and the data
    /// segments of a vectored request
    /// ([`IoData::with_metadata`](crate::IoData::with_metadata),
    /// [`IoData::with_metadata_segments`](crate::IoData::with_metadata_segments),
    /// [`IoData::vectored`](crate::IoData::vectored)), handed back in their
    /// box for reuse ([`IoData::with_extra`](crate::IoData::with_extra)).
    pub extra: Option<Box<IoExtra>>,
}

impl IoCompletion {
    /// The separate metadata buffer handed back, if any.
    pub fn meta(&self) -> Option<&DmaBuf> {
        self.extra.as_ref().and_then(|e| e.meta.as_ref())
    }
    /// The data segments handed back (empty unless vectored).
    pub fn segments(&self) -> &[DmaBuf] {
        self.extra.as_ref().map_or(&[], |e| &e.segments)
    }
    /// Take the separate metadata buffer.
    pub fn take_meta(&mut self) -> Option<DmaBuf> {
        self.extra.as_mut().and_then(|e| e.meta.take())
    }
    /// The metadata segments handed back (empty unless given with
    /// [`IoData::with_metadata_segments`](crate::IoData::with_metadata_segments)).
    pub fn meta_segments(&self) -> &[DmaBuf] {
        self.extra.as_ref().map_or(&[], |e| &e.meta_segments)
    }

    /// The completion of the command whose slot held `req`.
    pub(crate) fn from_request(req: Request, result: Result<u32, IoError>) -> Self {
        IoCompletion {
            token: req.token,
            result,
            buf: req.buf,
            extra: req.extra,
        }
    }
}

/// One I/O queue pair, owned by one thread, over transport `T`: the
/// command slab, deadlines, retries and teardown live here; how commands
/// reach the controller is `T`'s (see [`crate::driver::transport`]).
pub struct QueuePair<T: CommandTransport> {
    t: T,
    tracker: Tracker,
    stats: QueuePairStats,
    live: bool,
    /// Per-command deadline.
    timeout: Duration,
    retry_limit: u8,
    scan_interval: Duration,
    next_scan: Option<Instant>,
    /// Since when commands have waited with no completion (timeout scans).
    idle_since: Option<Instant>,
    _not_sync: PhantomData<Cell<()>>,
}

/// A queue pair on a PCIe controller (VFIO, uio, the emulated controller).
pub type IoQueuePair<D> = QueuePair<PcieQueue<D>>;

impl<D: Device> QueuePair<PcieQueue<D>> {
    pub(crate) fn create(ctrl: UserHold<D>, opts: QueuePairOptions) -> Result<Self, DriverError> {
        let o = ctrl.opts();
        let (timeout, retry_limit, scan_interval) =
            (o.io_timeout, o.io_retry_limit, o.timeout_scan_interval);
        let t = PcieQueue::create(ctrl, opts)?;
        Ok(QueuePair::new(t, timeout, retry_limit, scan_interval))
    }
}

impl<T: CommandTransport> QueuePair<T> {
    /// A queue pair over `t` with a per-command `timeout`, `retry_limit`
    /// resubmissions and deadline scans every `scan_interval`.
    pub(crate) fn new(t: T, timeout: Duration, retry_limit: u8, scan_interval: Duration) -> Self {
        let capacity = t.capacity();
        QueuePair {
            t,
            tracker: Tracker::new(capacity),
            stats: QueuePairStats::default(),
            live: true,
            timeout,
            retry_limit,
            scan_interval,
            next_scan: None,
            idle_since: None,
            _not_sync: PhantomData,
        }
    }

    /// The queue id (SQ and CQ share it on PCIe).
    pub fn qid(&self) -> u16 {
        self.t.queue_id()
    }
    /// The transport (its own modes and counters).
    pub fn transport(&self) -> &T {
        &self.t
    }
    /// The transport, mutably (set-up such as buffer registration).
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.t
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
        self.t.admin_timeout()
    }
    /// Most bytes one command may transfer.
    pub fn max_transfer_bytes(&self) -> usize {
        self.t.max_transfer()
    }
}

impl<T: CommandTransport> Drop for QueuePair<T> {
    fn drop(&mut self) {
        let _ = self.teardown(&mut |_| {});
    }
}

impl<T: CommandTransport> std::fmt::Debug for QueuePair<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoQueuePair")
            .field("qid", &self.qid())
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
