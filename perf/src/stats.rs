//! What a worker measures: per-row (namespace on a core) counters and
//! latency histograms, failed-I/O counts by status, verification results,
//! and the busy/idle poll split. Everything is preallocated before the run;
//! recording allocates nothing.

#![forbid(unsafe_code)]

use hdrhistogram::Histogram;
use nvme_engine::QueuePairStats;
use nvme_engine::spec::status::generic;
use nvme_engine::spec::status::{Status, StatusCodeType};
use nvme_engine::{DeviceGone, IoError};

use crate::pattern::{BlockState, Mismatch};

/// Distinct statuses counted individually; later ones land in `other`.
const STATUS_SLOTS: usize = 16;

/// Failed-I/O counts by completion status, in a fixed array.
#[derive(Clone, Debug)]
pub struct StatusCounts {
    entries: [(u16, u64); STATUS_SLOTS],
    used: usize,
    other: u64,
}

impl Default for StatusCounts {
    fn default() -> Self {
        StatusCounts {
            entries: [(0, 0); STATUS_SLOTS],
            used: 0,
            other: 0,
        }
    }
}

impl StatusCounts {
    /// Count one failure with `status`.
    pub fn record(&mut self, status: Status) {
        self.add(status.field(), 1);
    }

    fn add(&mut self, field: u16, n: u64) {
        // Group by SCT and SC: CRD, M and DNR do not make a different status.
        let field = field & 0x7ff;
        for e in &mut self.entries[..self.used] {
            if e.0 == field {
                e.1 += n;
                return;
            }
        }
        if self.used < STATUS_SLOTS {
            self.entries[self.used] = (field, n);
            self.used += 1;
        } else {
            self.other += n;
        }
    }

    /// Add all of `other`'s counts.
    pub fn merge(&mut self, other: &StatusCounts) {
        for &(f, n) in &other.entries[..other.used] {
            self.add(f, n);
        }
        self.other += other.other;
    }

    /// Total failures.
    pub fn total(&self) -> u64 {
        self.entries[..self.used].iter().map(|e| e.1).sum::<u64>() + self.other
    }

    /// `(status, count)` pairs, most frequent first, then failures beyond
    /// the distinct statuses tracked.
    pub fn list(&self) -> (Vec<(Status, u64)>, u64) {
        let mut v: Vec<(Status, u64)> = self.entries[..self.used]
            .iter()
            .map(|&(f, n)| (Status::from_field(f), n))
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        (v, self.other)
    }
}

/// Failed I/Os by kind of failure.
#[derive(Clone, Debug, Default)]
pub struct FailureCounts {
    /// Completed with an NVMe error status (other than the abort statuses),
    /// by status.
    pub status: StatusCounts,
    /// Completed with Command Abort Requested or Command Aborted due to SQ
    /// Deletion without having timed out.
    pub aborted: u64,
    /// No completion within the I/O timeout: aborted, or the controller reset.
    pub timed_out: u64,
    /// In flight across a controller reset and not resubmitted.
    pub reset: u64,
    /// The controller failed and could not be reset.
    pub controller_failed: u64,
    /// In flight when the device was removed.
    pub removed: u64,
    /// Failed by the transport without an NVMe status (an errno from the
    /// kernel on io_uring passthrough).
    pub transport: u64,
    /// Refused at submission (the controller was resetting, failed or removed).
    pub refused: u64,
    /// Any failure kind this version of nvme-perf does not name.
    pub other: u64,
}

impl FailureCounts {
    /// Count one failed I/O.
    #[cold]
    pub fn record(&mut self, e: &IoError) {
        match e {
            IoError::Status(s) if is_abort(*s) => self.aborted += 1,
            IoError::Status(s) => self.status.record(*s),
            IoError::TimedOut(_) => self.timed_out += 1,
            IoError::ControllerReset => self.reset += 1,
            IoError::Gone(DeviceGone::Removed) => self.removed += 1,
            IoError::Gone(_) => self.controller_failed += 1,
            IoError::Transport { .. } => self.transport += 1,
            IoError::Rejected(_) | IoError::Busy(_) => self.refused += 1,
            _ => self.other += 1,
        }
    }

    /// Add `other`'s counts.
    pub fn merge(&mut self, other: &FailureCounts) {
        self.status.merge(&other.status);
        self.aborted += other.aborted;
        self.timed_out += other.timed_out;
        self.reset += other.reset;
        self.controller_failed += other.controller_failed;
        self.removed += other.removed;
        self.transport += other.transport;
        self.refused += other.refused;
        self.other += other.other;
    }

    /// Every failed I/O.
    pub fn total(&self) -> u64 {
        self.status.total()
            + self.aborted
            + self.timed_out
            + self.reset
            + self.controller_failed
            + self.removed
            + self.transport
            + self.refused
            + self.other
    }

    /// `(kind, count)` for every kind but NVMe status, in report order.
    pub fn kinds(&self) -> [(&'static str, u64); 8] {
        [
            ("timed out", self.timed_out),
            ("aborted", self.aborted),
            ("reset", self.reset),
            ("controller failed", self.controller_failed),
            ("device removed", self.removed),
            ("transport", self.transport),
            ("refused", self.refused),
            ("other", self.other),
        ]
    }
}

/// Command Abort Requested (00/07h) or Command Aborted due to SQ Deletion (00/08h).
fn is_abort(s: Status) -> bool {
    s.sct() == StatusCodeType::GENERIC
        && (s.sc() == generic::ABORT_REQUESTED || s.sc() == generic::ABORTED_SQ_DELETION)
}

/// Verification counters of one row.
#[derive(Clone, Debug, Default)]
pub struct VerifyStats {
    /// Reads whose data was compared.
    pub checked: u64,
    /// Reads of blocks never written in this run (nothing to compare).
    pub unverified: u64,
    /// Reads whose data differed.
    pub mismatches: u64,
    /// The first mismatch seen.
    pub first: Option<Mismatch>,
    /// Blocks the pass before the run read and classified.
    pub pass_blocks: u64,
    /// Of which one whole generation written with this seed.
    pub pass_stamped: u64,
    /// Of which not written with this seed (contents from before).
    pub pass_unwritten: u64,
    /// Of which torn (sectors of different generations or owners).
    pub torn: u64,
    /// Of which stamped for another LBA.
    pub foreign: u64,
    /// Of which with a bad checksum or payload.
    pub corrupt: u64,
    /// I/O-sized units the pass wrote so that later reads can be checked.
    pub prefilled: u64,
    /// The first torn, foreign or corrupt block: (LBA, what it holds).
    pub first_bad: Option<(u64, BlockState)>,
}

impl VerifyStats {
    /// Blocks found torn, foreign or corrupt by the pass.
    pub fn bad_blocks(&self) -> u64 {
        self.torn + self.foreign + self.corrupt
    }

    /// Count one block the pass classified.
    pub fn record_block(&mut self, lba: u64, state: BlockState) {
        self.pass_blocks += 1;
        match state {
            BlockState::Stamped(_) => self.pass_stamped += 1,
            BlockState::Unwritten => self.pass_unwritten += 1,
            BlockState::Torn { .. } => self.torn += 1,
            BlockState::Foreign { .. } => self.foreign += 1,
            BlockState::Corrupt { .. } => self.corrupt += 1,
        }
        if !matches!(state, BlockState::Stamped(_) | BlockState::Unwritten) {
            self.first_bad.get_or_insert((lba, state));
        }
    }
}

impl VerifyStats {
    /// Add `other`'s counts (keeping the first mismatch already held).
    pub fn merge(&mut self, other: &VerifyStats) {
        self.checked += other.checked;
        self.unverified += other.unverified;
        self.mismatches += other.mismatches;
        if self.first.is_none() {
            self.first = other.first;
        }
        self.pass_blocks += other.pass_blocks;
        self.pass_stamped += other.pass_stamped;
        self.pass_unwritten += other.pass_unwritten;
        self.torn += other.torn;
        self.foreign += other.foreign;
        self.corrupt += other.corrupt;
        self.prefilled += other.prefilled;
        if self.first_bad.is_none() {
            self.first_bad = other.first_bad;
        }
    }
}

/// Counters of one namespace driven from one core.
#[derive(Clone, Debug)]
pub struct RowStats {
    /// Successful I/Os measured (the histogram's count, set by
    /// [`RowStats::flush`]).
    pub ios: u64,
    /// Of which reads (counted per I/O for mixed workloads only; see
    /// [`RowStats::set_reads`]).
    pub reads: u64,
    /// Bytes per I/O.
    pub io_size: u64,
    /// Latency of successful I/Os in clock ticks (call [`RowStats::flush`]
    /// before reading it).
    pub hist: Histogram<u64>,
    /// A run of equal latencies not yet in `hist`: (ticks, count). I/Os
    /// submitted in one batch and reaped in one call share both time stamps,
    /// so they are recorded with one `record_n`.
    pending: (u64, u64),
    /// Failed I/Os by kind (the whole run, warm-up included).
    pub errors: FailureCounts,
    /// Verification (the whole run, warm-up included).
    pub verify: VerifyStats,
}

impl RowStats {
    /// Empty counters for I/Os of `io_size` bytes; the histogram tracks
    /// 1 tick ..= `max_ticks` at 3 significant digits (values above are clamped).
    pub fn new(max_ticks: u64, io_size: u64) -> Result<Self, hdrhistogram::CreationError> {
        Ok(RowStats {
            ios: 0,
            reads: 0,
            io_size,
            hist: Histogram::new_with_bounds(1, max_ticks.max(2), 3)?,
            pending: (0, 0),
            errors: FailureCounts::default(),
            verify: VerifyStats::default(),
        })
    }

    /// Bytes moved by the successful I/Os.
    pub fn bytes(&self) -> u64 {
        self.ios * self.io_size
    }

    /// Forget the measured performance (end of warm-up); failures and
    /// verification counts stay.
    pub fn reset_performance(&mut self) {
        self.ios = 0;
        self.reads = 0;
        self.pending = (0, 0);
        self.hist.reset();
    }

    /// Record one successful I/O that took `ticks`.
    #[inline]
    pub fn record(&mut self, ticks: u64) {
        if ticks == self.pending.0 {
            self.pending.1 += 1;
        } else {
            self.start_run(ticks);
        }
    }

    /// A latency unlike the pending run's: flush the run and start one.
    /// Out of line: the histogram's code stays out of the reap loop.
    #[cold]
    #[inline(never)]
    fn start_run(&mut self, ticks: u64) {
        self.flush();
        self.pending = (ticks, 1);
    }

    /// Move the pending run of equal latencies into the histogram and
    /// update `ios`.
    #[inline]
    pub fn flush(&mut self) {
        if self.pending.1 > 0 {
            self.hist
                .saturating_record_n(self.pending.0.max(1), self.pending.1);
            self.pending.1 = 0;
        }
        self.ios = self.hist.len();
    }

    /// Set the read count of a workload that only reads (`percent` 100) or
    /// only writes (0); mixed workloads count reads per I/O.
    pub fn set_reads(&mut self, percent: u8) {
        match percent {
            100 => self.reads = self.ios,
            0 => self.reads = 0,
            _ => {}
        }
    }

    /// Add `other` into this row (for totals); both must be flushed.
    pub fn merge(&mut self, other: &RowStats) {
        self.ios += other.ios;
        self.reads += other.reads;
        self.io_size = other.io_size;
        // Same bounds everywhere; an error here would only drop latency data.
        let _ = self.hist.add(&other.hist);
        self.errors.merge(&other.errors);
        self.verify.merge(&other.verify);
    }
}

/// A failed I/O that stopped the run.
#[derive(Clone, Debug)]
pub struct FailedIo {
    /// Device name.
    pub device: String,
    /// Namespace.
    pub nsid: u32,
    /// `read` or `write`.
    pub op: &'static str,
    /// Starting LBA.
    pub lba: u64,
    /// Blocks.
    pub blocks: u64,
    /// Why it failed.
    pub reason: String,
}

/// Everything one worker hands back.
#[derive(Debug)]
pub struct WorkerResult {
    /// The core it ran on.
    pub core: usize,
    /// One entry per namespace it drove (same order as the plan's rows).
    pub rows: Vec<RowStats>,
    /// Measured clock ticks.
    pub elapsed_ticks: u64,
    /// Loop turns that submitted or reaped something.
    pub busy_polls: u64,
    /// Loop turns that did nothing.
    pub idle_polls: u64,
    /// Clock ticks spent in busy loop turns (measured phase).
    pub busy_ticks: u64,
    /// The failure that stopped the run, if any.
    pub fatal: Option<FailedIo>,
    /// Commands still outstanding when the drain gave up (lost: the device
    /// never completed them, nor did a timeout, abort or reset end them).
    pub lost: u64,
    /// Submissions refused because the controller was removed or failed.
    pub refused: u64,
    /// Queue-pair counters summed over the worker's queue pairs.
    pub qpair: QueuePairStats,
    /// Each queue pair's counters (`--transport-stats`).
    pub qpairs: Vec<QpairReport>,
}

/// One queue pair's counters after the run.
#[derive(Clone, Debug)]
pub struct QpairReport {
    /// Device name.
    pub device: String,
    /// Namespace it drove.
    pub nsid: u32,
    /// Queue identifier.
    pub qid: u16,
    /// Its counters.
    pub stats: QueuePairStats,
}

impl WorkerResult {
    /// Share of the measured time spent in busy loop turns, 0..=1: near 1
    /// means the worker's core is the limit, far below 1 that it waits for
    /// the device.
    pub fn busy_time_share(&self) -> f64 {
        if self.elapsed_ticks == 0 {
            0.0
        } else {
            (self.busy_ticks as f64 / self.elapsed_ticks as f64).min(1.0)
        }
    }

    /// Busy share of loop turns, 0..=1.
    pub fn busy_share(&self) -> f64 {
        let all = self.busy_polls + self.idle_polls;
        if all == 0 {
            0.0
        } else {
            self.busy_polls as f64 / all as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvme_engine::spec::status::StatusCodeType;

    #[test]
    fn status_counts_group_by_status_and_overflow_into_other() {
        let mut c = StatusCounts::default();
        let lba = Status::new(StatusCodeType::GENERIC, 0x80);
        c.record(lba);
        c.record(lba.with_dnr(true));
        c.record(Status::new(StatusCodeType::GENERIC, 0x04));
        let (list, other) = c.list();
        assert_eq!(list[0], (lba, 2));
        assert_eq!(list.len(), 2);
        assert_eq!(other, 0);
        for sc in 0..20u8 {
            c.record(Status::new(StatusCodeType::MEDIA, sc));
        }
        assert_eq!(c.total(), 23);
        assert_eq!(c.list().1, 6);
        assert!(list[0].0.to_string().contains("LBA Out of Range"));
    }

    #[test]
    fn rows_merge_and_reset_keeps_failures() {
        let mut a = RowStats::new(1 << 40, 4096).unwrap();
        a.record(100);
        a.flush();
        a.set_reads(100);
        a.errors
            .record(&IoError::Status(Status::new(StatusCodeType::GENERIC, 0x80)));
        let mut b = RowStats::new(1 << 40, 4096).unwrap();
        b.record(300);
        b.flush();
        b.set_reads(0);
        b.merge(&a);
        assert_eq!((b.ios, b.reads, b.bytes()), (2, 1, 8192));
        assert_eq!(b.hist.len(), 2);
        assert_eq!(b.hist.min(), 100);
        a.reset_performance();
        assert_eq!((a.ios, a.hist.len(), a.errors.total()), (0, 0, 1));
    }

    #[test]
    fn failures_are_counted_by_kind() {
        let mut f = FailureCounts::default();
        f.record(&IoError::Status(Status::new(StatusCodeType::MEDIA, 0x81)));
        f.record(&IoError::Status(Status::new(
            StatusCodeType::GENERIC,
            generic::ABORT_REQUESTED,
        )));
        f.record(&IoError::TimedOut(std::time::Duration::from_secs(1)));
        f.record(&IoError::ControllerReset);
        f.record(&IoError::Gone(DeviceGone::Failed));
        f.record(&IoError::Gone(DeviceGone::Removed));
        f.record(&IoError::Gone(DeviceGone::Removed));
        f.record(&IoError::Transport { errno: 5 });
        assert_eq!(f.status.total(), 1);
        assert_eq!(
            f.kinds(),
            [
                ("timed out", 1),
                ("aborted", 1),
                ("reset", 1),
                ("controller failed", 1),
                ("device removed", 2),
                ("transport", 1),
                ("refused", 0),
                ("other", 0)
            ]
        );
        assert_eq!(f.total(), 8);
        let mut g = FailureCounts::default();
        g.merge(&f);
        assert_eq!(g.total(), 8);
    }

    #[test]
    fn runs_of_equal_latencies_are_recorded_exactly() {
        let mut r = RowStats::new(1 << 40, 512).unwrap();
        for t in [5, 5, 5, 9, 9, 5, 0] {
            r.record(t);
        }
        assert_eq!(r.hist.len(), 6, "the last run is still pending");
        r.flush();
        r.flush();
        assert_eq!(r.hist.len(), 7);
        assert_eq!(r.hist.count_at(5), 4);
        assert_eq!(r.hist.count_at(9), 2);
        assert_eq!(r.hist.count_at(1), 1, "zero ticks count as one");
        assert_eq!(r.bytes(), 7 * 512);
    }
}
