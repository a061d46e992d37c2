//! Turning worker results into report numbers: per-row and total IOPS,
//! bandwidth, latency (mean, min, max, percentiles, buckets) in
//! microseconds, failures by status, verification and per-core poll share.

#![forbid(unsafe_code)]

use crate::clock::Clock;
use crate::plan::RowInfo;
use nvme_engine::{Health, QueuePairStats};

use crate::stats::{FailedIo, FailureCounts, RowStats, VerifyStats, WorkerResult};
use crate::target::Target;

/// Percentiles reported (as `spdk_nvme_perf -L` does).
pub const PERCENTILES: [f64; 14] = [
    1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 98.0, 99.0, 99.5, 99.9, 99.99, 99.999, 99.9999,
];

/// One latency histogram bucket.
#[derive(Clone, Debug)]
pub struct Bucket {
    /// Lower bound, µs.
    pub from_us: f64,
    /// Upper bound, µs.
    pub to_us: f64,
    /// I/Os in the bucket.
    pub count: u64,
    /// Share of I/Os up to and including this bucket, percent.
    pub cumulative: f64,
}

/// The numbers of one row (or the total).
#[derive(Clone, Debug)]
pub struct RowSummary {
    /// `emu:0 NSID 1 from core 0`.
    pub label: String,
    /// Device name (empty for the total).
    pub device: String,
    /// Namespace (0 for the total).
    pub nsid: u32,
    /// Core (None for the total).
    pub core: Option<usize>,
    /// Successful I/Os measured.
    pub ios: u64,
    /// Of which reads.
    pub reads: u64,
    /// Measured seconds.
    pub seconds: f64,
    /// I/Os per second.
    pub iops: f64,
    /// MiB per second.
    pub mib_s: f64,
    /// Mean latency, µs.
    pub avg_us: f64,
    /// Smallest latency, µs.
    pub min_us: f64,
    /// Largest latency, µs.
    pub max_us: f64,
    /// (percentile, µs).
    pub percentiles: Vec<(f64, f64)>,
    /// Buckets (doubling widths), only non-empty ones.
    pub histogram: Vec<Bucket>,
    /// Failed I/Os with an NVMe status, by status text.
    pub errors: Vec<(String, u64)>,
    /// Failed I/Os of the other kinds (timed out, aborted, ...), non-zero only.
    pub kinds: Vec<(&'static str, u64)>,
    /// Failed I/Os in total.
    pub failed: u64,
    /// Verification counters.
    pub verify: VerifyStats,
}

/// Poll share of one core.
#[derive(Clone, Debug)]
pub struct CoreSummary {
    /// Core.
    pub core: usize,
    /// Busy loop turns.
    pub busy: u64,
    /// Idle loop turns.
    pub idle: u64,
    /// Busy share, percent.
    pub busy_percent: f64,
    /// Share of the measured time spent in busy turns, percent.
    pub busy_time_percent: f64,
    /// Failed I/Os of every row of this core, plus refused submissions.
    pub failures: FailureCounts,
    /// Commands that never completed.
    pub lost: u64,
    /// Queue-pair counters (whole run, warm-up included).
    pub qpair: QueuePairStats,
}

impl CoreSummary {
    /// MMIO doorbell writes (SQ tail, CQ head) per completed command.
    pub fn doorbells_per_io(&self) -> (f64, f64) {
        let n = self.qpair.completed.max(1) as f64;
        (
            self.qpair.sq_doorbell_writes as f64 / n,
            self.qpair.cq_doorbell_writes as f64 / n,
        )
    }
    /// Completions the driver had to discard: duplicate, stale or unknown
    /// CID, SQ head outside the ring, wrong SQ id.
    pub fn bogus_completions(&self) -> u64 {
        let q = &self.qpair;
        q.duplicate_completions
            + q.stale_completions
            + q.unknown_completions
            + q.invalid_sqhd
            + q.wrong_sqid
    }
}

/// What happened to one controller.
#[derive(Clone, Debug)]
pub struct ControllerSummary {
    /// Device name.
    pub name: String,
    /// Controller resets during the run.
    pub resets: u64,
    /// Health at the end of the run.
    pub health: Health,
    /// Injected faults: (transport-ID key, times fired).
    pub faults: Vec<(&'static str, u64)>,
}

/// Everything reported.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Per namespace per core.
    pub rows: Vec<RowSummary>,
    /// All rows together.
    pub total: RowSummary,
    /// Per core.
    pub cores: Vec<CoreSummary>,
    /// The failure that stopped the run.
    pub fatal: Option<FailedIo>,
    /// Commands that never completed.
    pub lost: u64,
    /// Per controller.
    pub controllers: Vec<ControllerSummary>,
}

impl Summary {
    /// Failed I/Os of every kind, all cores.
    pub fn failed(&self) -> u64 {
        self.cores.iter().map(|c| c.failures.total()).sum()
    }
    /// A controller was removed or failed for good.
    pub fn device_gone(&self) -> bool {
        self.controllers
            .iter()
            .any(|c| matches!(c.health, Health::Removed | Health::Failed))
    }
    /// The device misbehaved although no I/O failed: completions were
    /// discarded or a controller was reset.
    pub fn device_misbehaved(&self) -> bool {
        self.controllers.iter().any(|c| c.resets > 0)
            || self.cores.iter().any(|c| c.bogus_completions() > 0)
    }
}

fn summarize(
    label: String,
    device: String,
    nsid: u32,
    core: Option<usize>,
    s: &RowStats,
    secs: f64,
    clock: &Clock,
) -> RowSummary {
    let us = |ticks: f64| ticks / clock.ticks_per_ns() / 1000.0;
    let h = &s.hist;
    let empty = h.is_empty();
    let percentiles = PERCENTILES
        .iter()
        .map(|&p| {
            (
                p,
                if empty {
                    0.0
                } else {
                    us(h.value_at_quantile(p / 100.0) as f64)
                },
            )
        })
        .collect();
    let mut histogram = Vec::new();
    if !empty {
        let step = clock.ticks(std::time::Duration::from_nanos(250)).max(1);
        let mut seen = 0u64;
        let mut from = 0u64;
        for v in h.iter_log(step, 2.0) {
            let to = v.value_iterated_to();
            let count = v.count_since_last_iteration();
            if count > 0 {
                seen += count;
                histogram.push(Bucket {
                    from_us: us(from as f64),
                    to_us: us(to as f64),
                    count,
                    cumulative: seen as f64 * 100.0 / h.len() as f64,
                });
            }
            from = to;
        }
    }
    let (list, other) = s.errors.status.list();
    let mut errors: Vec<(String, u64)> = list
        .into_iter()
        .map(|(st, n)| (st.to_string(), n))
        .collect();
    if other > 0 {
        errors.push(("other statuses".into(), other));
    }
    let kinds = s.errors.kinds().into_iter().filter(|k| k.1 > 0).collect();
    let rate = |x: f64| if secs > 0.0 { x / secs } else { 0.0 };
    RowSummary {
        label,
        device,
        nsid,
        core,
        ios: s.ios,
        reads: s.reads,
        seconds: secs,
        iops: rate(s.ios as f64),
        mib_s: rate(s.bytes() as f64) / (1 << 20) as f64,
        avg_us: if empty { 0.0 } else { us(h.mean()) },
        min_us: if empty { 0.0 } else { us(h.min() as f64) },
        max_us: if empty { 0.0 } else { us(h.max() as f64) },
        percentiles,
        histogram,
        errors,
        kinds,
        failed: s.errors.total(),
        verify: s.verify.clone(),
    }
}

/// Build the summary.
pub fn build(
    targets: &[Target],
    rows: &[RowInfo],
    results: &[WorkerResult],
    clock: &Clock,
    max_ticks: u64,
) -> anyhow::Result<Summary> {
    let names: Vec<String> = targets.iter().map(Target::name).collect();
    let controllers = targets
        .iter()
        .map(|t| ControllerSummary {
            name: t.name(),
            resets: t.ctrl.resets(),
            health: t.ctrl.health(),
            faults: t
                .fault_hits()
                .into_iter()
                .map(|(k, n)| (k.key(), n))
                .collect(),
        })
        .collect();
    build_with(&names, controllers, rows, results, clock, max_ticks)
}

/// Build the summary of controllers named `names` (any transport).
pub fn build_with(
    names: &[String],
    controllers: Vec<ControllerSummary>,
    rows: &[RowInfo],
    results: &[WorkerResult],
    clock: &Clock,
    max_ticks: u64,
) -> anyhow::Result<Summary> {
    let mut out = Vec::new();
    let mut total = RowStats::new(max_ticks, 0)?;
    let mut total_iops = 0.0;
    let mut total_mib = 0.0;
    let mut longest = 0.0f64;
    for r in rows {
        let w = &results[r.worker];
        let s = &w.rows[r.local];
        let secs = clock.ticks_to_secs(w.elapsed_ticks);
        let device = names[r.target].clone();
        let label = format!("{device} NSID {} from core {}", r.nsid, r.core);
        let row = summarize(label, device, r.nsid, Some(r.core), s, secs, clock);
        total_iops += row.iops;
        total_mib += row.mib_s;
        longest = longest.max(secs);
        total.merge(s);
        out.push(row);
    }
    let mut t = summarize(
        "Total".into(),
        String::new(),
        0,
        None,
        &total,
        longest,
        clock,
    );
    // Rows run concurrently: the total rate is the sum of the row rates.
    t.iops = total_iops;
    t.mib_s = total_mib;
    let cores = results
        .iter()
        .map(|w| {
            let mut failures = FailureCounts::default();
            for r in &w.rows {
                failures.merge(&r.errors);
            }
            failures.refused += w.refused;
            CoreSummary {
                core: w.core,
                busy: w.busy_polls,
                idle: w.idle_polls,
                busy_percent: w.busy_share() * 100.0,
                busy_time_percent: w.busy_time_share() * 100.0,
                failures,
                lost: w.lost,
                qpair: w.qpair,
            }
        })
        .collect();
    Ok(Summary {
        rows: out,
        total: t,
        cores,
        fatal: results.iter().find_map(|w| w.fatal.clone()),
        lost: results.iter().map(|w| w.lost).sum(),
        controllers,
    })
}
