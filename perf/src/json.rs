//! The machine-readable report (`--json`): the same numbers as the table.

#![forbid(unsafe_code)]

use serde_json::{Value, json};

use crate::summary::{CoreSummary, RowSummary, Summary};

/// Run settings echoed in the report.
#[derive(Clone, Debug)]
pub struct RunInfo {
    /// Workload name.
    pub workload: &'static str,
    /// Bytes per I/O.
    pub io_size: usize,
    /// Queue depth.
    pub queue_depth: usize,
    /// Read percentage.
    pub read_percent: u8,
    /// Queue pairs per namespace per core.
    pub qpairs: usize,
    /// Entries per I/O queue.
    pub queue_entries: u16,
    /// Cores.
    pub cores: Vec<usize>,
    /// Seconds asked for.
    pub time: Option<u64>,
    /// Warm-up seconds.
    pub warmup: u64,
    /// I/Os per worker asked for.
    pub number_ios: Option<u64>,
    /// Seed.
    pub seed: u64,
    /// Verify on.
    pub verify: bool,
    /// Controllers: (name, model, serial, transport).
    pub controllers: Vec<Value>,
    /// The other options that shape the run (Zipf, FUA, -C, -A, timeouts, ...).
    pub options: Value,
}

fn row(r: &RowSummary) -> Value {
    json!({
        "label": r.label,
        "device": r.device,
        "nsid": r.nsid,
        "core": r.core,
        "ios": r.ios,
        "reads": r.reads,
        "writes": r.ios - r.reads,
        "seconds": r.seconds,
        "iops": r.iops,
        "mib_per_sec": r.mib_s,
        "latency_us": {
            "average": r.avg_us,
            "min": r.min_us,
            "max": r.max_us,
            "percentiles": r.percentiles.iter().map(|(p, us)| json!({"percentile": p, "us": us})).collect::<Vec<_>>(),
            "histogram": r.histogram.iter().map(|b| json!({
                "from_us": b.from_us, "to_us": b.to_us, "count": b.count, "cumulative_percent": b.cumulative
            })).collect::<Vec<_>>(),
        },
        "failed": r.failed,
        "errors": r.errors.iter().map(|(s, n)| json!({"status": s, "count": n})).collect::<Vec<_>>(),
        "failures": r.kinds.iter().map(|(k, n)| json!({"kind": k, "count": n})).collect::<Vec<_>>(),
        "verify": {
            "checked": r.verify.checked,
            "mismatches": r.verify.mismatches,
            "unverified": r.verify.unverified,
            "checked_percent": r.verify.checked as f64 * 100.0 / (r.verify.checked + r.verify.unverified).max(1) as f64,
            "pass": {
                "blocks": r.verify.pass_blocks,
                "stamped": r.verify.pass_stamped,
                "not_written_with_seed": r.verify.pass_unwritten,
                "prefilled_units": r.verify.prefilled,
                "torn": r.verify.torn,
                "foreign": r.verify.foreign,
                "corrupt": r.verify.corrupt,
                "first_bad": r.verify.first_bad.map(|(lba, st)| json!({
                    "lba": lba, "state": crate::report::describe(st)
                })),
            },
            "first_mismatch": r.verify.first.map(|m| json!({
                "lba": m.lba, "offset": m.offset, "expected": m.expected, "found": m.found
            })),
        },
    })
}

fn core(c: &CoreSummary) -> Value {
    let f = &c.failures;
    let q = &c.qpair;
    let (sq, cq) = c.doorbells_per_io();
    json!({
        "core": c.core,
        "busy_polls": c.busy,
        "idle_polls": c.idle,
        "busy_percent": c.busy_percent,
        "busy_time_percent": c.busy_time_percent,
        "failed": {
            "nvme_status": f.status.total(),
            "timed_out": f.timed_out,
            "aborted": f.aborted,
            "reset": f.reset,
            "controller_failed": f.controller_failed,
            "device_removed": f.removed,
            "transport": f.transport,
            "refused": f.refused,
            "lost": c.lost,
        },
        "doorbells": {
            "sq_writes": q.sq_doorbell_writes,
            "cq_writes": q.cq_doorbell_writes,
            "sq_per_io": sq,
            "cq_per_io": cq,
        },
        "qpair": {
            "submitted": q.submitted,
            "completed": q.completed,
            "duplicate_completions": q.duplicate_completions,
            "stale_completions": q.stale_completions,
            "unknown_completions": q.unknown_completions,
            "invalid_sqhd": q.invalid_sqhd,
            "wrong_sqid": q.wrong_sqid,
            "timeouts": q.timeouts,
            "aborts_sent": q.aborts_sent,
            "resets_requested": q.resets_requested,
            "retries": q.retries,
            "resubmitted": q.resubmitted,
        },
    })
}

/// The whole report as JSON.
pub fn report(info: &RunInfo, s: &Summary) -> Value {
    json!({
        "config": {
            "workload": info.workload,
            "io_size": info.io_size,
            "queue_depth": info.queue_depth,
            "read_percent": info.read_percent,
            "qpairs_per_namespace": info.qpairs,
            "io_queue_entries": info.queue_entries,
            "cores": info.cores,
            "time_seconds": info.time,
            "warmup_seconds": info.warmup,
            "number_ios": info.number_ios,
            "seed": info.seed,
            "verify": info.verify,
            "options": info.options,
        },
        "controllers": info.controllers,
        "rows": s.rows.iter().map(row).collect::<Vec<_>>(),
        "total": row(&s.total),
        "cores": s.cores.iter().map(core).collect::<Vec<_>>(),
        "controllers_after_run": s.controllers.iter().map(|c| json!({
            "name": c.name,
            "health": format!("{:?}", c.health),
            "resets": c.resets,
            "injected_faults": c.faults.iter().map(|(k, n)| json!({"key": k, "fired": n})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "fatal_error": s.fatal.as_ref().map(|f| json!({
            "device": f.device, "nsid": f.nsid, "op": f.op, "lba": f.lba, "blocks": f.blocks, "reason": f.reason
        })),
        "lost_commands": s.lost,
    })
}
