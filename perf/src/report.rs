//! The human-readable report, laid out like `spdk_nvme_perf`'s: a table of
//! IOPS, MiB/s and latency per namespace per core with a Total row, then
//! (with -L) percentiles, (with -LL) histogram buckets, the per-core poll
//! share, failures by status and verification results.

#![forbid(unsafe_code)]

use std::io::{self, Write};

use crate::pattern::BlockState;
use crate::stats::QpairReport;
use crate::summary::{RowSummary, Summary};

const RULE: &str = "========================================================";

fn row_line(out: &mut dyn Write, width: usize, r: &RowSummary) -> io::Result<()> {
    writeln!(
        out,
        "{:<width$}: {:>12.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
        r.label, r.iops, r.mib_s, r.avg_us, r.min_us, r.max_us
    )
}

fn percentiles(out: &mut dyn Write, r: &RowSummary) -> io::Result<()> {
    writeln!(out, "Summary latency data for {}:", r.label)?;
    writeln!(out, "{RULE}{RULE}")?;
    for (p, us) in &r.percentiles {
        writeln!(out, "{p:>10.5}% : {us:>12.3}us")?;
    }
    writeln!(out)
}

fn histogram(out: &mut dyn Write, r: &RowSummary) -> io::Result<()> {
    writeln!(out, "Latency histogram for {}:", r.label)?;
    writeln!(out, "{RULE}{RULE}")?;
    writeln!(out, "       Range in us     Cumulative    IO count")?;
    for b in &r.histogram {
        writeln!(
            out,
            "{:>10.3} - {:>10.3}: {:>9.4}%  ({:>10})",
            b.from_us, b.to_us, b.cumulative, b.count
        )?;
    }
    writeln!(out)
}

/// What a bad block holds, in words.
pub fn describe(state: BlockState) -> String {
    match state {
        BlockState::Torn { sector } => format!(
            "torn: sector {sector} (bytes {}..) does not match the rest of the block",
            sector * crate::pattern::SECTOR
        ),
        BlockState::Foreign { claims } => {
            format!("foreign: it holds the block written for LBA {claims}")
        }
        BlockState::Corrupt { offset } => {
            format!("corrupt: bad checksum or data at byte {offset} of the block")
        }
        BlockState::Stamped(g) => format!("generation {g}"),
        BlockState::Unwritten => "not written with this seed".into(),
    }
}

/// Print the report; `latency` is the -L count.
pub fn print(out: &mut dyn Write, s: &Summary, latency: u8) -> io::Result<()> {
    table(out, s)?;
    if latency >= 1 {
        for r in &s.rows {
            percentiles(out, r)?;
        }
    }
    if latency >= 2 {
        for r in &s.rows {
            histogram(out, r)?;
        }
    }
    cores(out, s)?;
    controllers(out, s)?;
    failed(out, s)?;
    verify_pass(out, s)?;
    verify_reads(out, s)?;
    if s.lost > 0 {
        writeln!(
            out,
            "\nWarning: {} commands never completed, not even through a timeout, abort or reset (the device may be hung)",
            s.lost
        )?;
    }
    Ok(())
}

/// The table: one row per namespace per core, then the total.
fn table(out: &mut dyn Write, s: &Summary) -> io::Result<()> {
    let width = s
        .rows
        .iter()
        .map(|r| r.label.len())
        .max()
        .unwrap_or(0)
        .max("Device Information".len());
    writeln!(out, "{RULE}")?;
    writeln!(
        out,
        "{:>w$}",
        "Latency(us)",
        w = width + 2 + 13 + 11 + 11 + 11
    )?;
    writeln!(
        out,
        "{:<width$}: {:>12} {:>10} {:>10} {:>10} {:>10}",
        "Device Information", "IOPS", "MiB/s", "Average", "min", "max"
    )?;
    for r in &s.rows {
        row_line(out, width, r)?;
    }
    writeln!(out, "{RULE}")?;
    row_line(out, width, &s.total)?;
    writeln!(out)?;
    Ok(())
}

/// Each worker core's loop share, failures and queue-pair counters.
fn cores(out: &mut dyn Write, s: &Summary) -> io::Result<()> {
    for c in &s.cores {
        writeln!(
            out,
            "Core {:>3}: busy {:>6.2}% of {} polls, idle {:>6.2}%; busy {:>6.2}% of the time",
            c.core,
            c.busy_percent,
            c.busy + c.idle,
            100.0 - c.busy_percent,
            c.busy_time_percent
        )?;
    }
    for c in &s.cores {
        let f = &c.failures;
        let (sq, cq) = c.doorbells_per_io();
        let q = &c.qpair;
        writeln!(
            out,
            "Core {:>3}: failed I/O: NVMe status {}, timed out {}, aborted {}, reset {}, controller failed {}, device removed {}, transport {}, refused {}; lost {}",
            c.core,
            f.status.total(),
            f.timed_out,
            f.aborted,
            f.reset,
            f.controller_failed,
            f.removed,
            f.transport,
            f.refused,
            c.lost
        )?;
        writeln!(
            out,
            "Core {:>3}: doorbell writes per I/O: SQ {sq:.3}, CQ {cq:.3}; discarded completions: duplicate {}, stale {}, unknown CID {}, bad SQ head {}, wrong SQ {}; timeouts {}, aborts sent {}, resets requested {}, retries {}, resubmitted {}",
            c.core,
            q.duplicate_completions,
            q.stale_completions,
            q.unknown_completions,
            q.invalid_sqhd,
            q.wrong_sqid,
            q.timeouts,
            q.aborts_sent,
            q.resets_requested,
            q.retries,
            q.resubmitted
        )?;
    }
    Ok(())
}

/// Each controller's health, resets and injected faults.
fn controllers(out: &mut dyn Write, s: &Summary) -> io::Result<()> {
    for c in &s.controllers {
        let faults: Vec<String> = c
            .faults
            .iter()
            .map(|(k, n)| format!("{k} fired {n}"))
            .collect();
        writeln!(
            out,
            "Controller {}: {:?}, {} resets{}",
            c.name,
            c.health,
            c.resets,
            if faults.is_empty() {
                String::new()
            } else {
                format!("; injected faults: {}", faults.join(", "))
            }
        )?;
    }
    Ok(())
}

/// Failed I/O by status and kind, per row.
fn failed(out: &mut dyn Write, s: &Summary) -> io::Result<()> {
    if s.total.failed > 0 {
        writeln!(
            out,
            "\nFailed I/O: {} (not counted in IOPS)",
            s.total.failed
        )?;
        for r in s.rows.iter().filter(|r| r.failed > 0) {
            for (status, n) in &r.errors {
                writeln!(out, "  {}: {n} x {status}", r.label)?;
            }
            for (kind, n) in &r.kinds {
                writeln!(out, "  {}: {n} x {kind}", r.label)?;
            }
        }
    }
    Ok(())
}

/// The verify pass before the run (`--verify`).
fn verify_pass(out: &mut dyn Write, s: &Summary) -> io::Result<()> {
    let v = &s.total.verify;
    if v.pass_blocks > 0 {
        writeln!(
            out,
            "\nVerify pass: {} blocks read: {} hold one whole generation written with this seed, {} were not written with it ({} I/O units pre-filled); {} torn, {} foreign, {} corrupt",
            v.pass_blocks,
            v.pass_stamped,
            v.pass_unwritten,
            v.prefilled,
            v.torn,
            v.foreign,
            v.corrupt
        )?;
        for r in s.rows.iter() {
            if let Some((lba, state)) = r.verify.first_bad {
                writeln!(
                    out,
                    "  {}: first bad block at LBA {lba}: {}",
                    r.label,
                    describe(state)
                )?;
            }
        }
    }
    Ok(())
}

/// Reads checked during the run (`--verify`).
fn verify_reads(out: &mut dyn Write, s: &Summary) -> io::Result<()> {
    let v = &s.total.verify;
    if v.checked + v.unverified + v.mismatches > 0 {
        let reads = v.checked + v.unverified;
        writeln!(
            out,
            "\nVerify: {} of {} reads checked ({:.1}%), {} mismatches, {} reads of blocks with no known contents (not checked)",
            v.checked,
            reads,
            v.checked as f64 * 100.0 / reads.max(1) as f64,
            v.mismatches,
            v.unverified
        )?;
        for r in s.rows.iter().filter(|r| r.verify.mismatches > 0) {
            if let Some(m) = r.verify.first {
                writeln!(
                    out,
                    "  {}: {} mismatches; first at LBA {} byte {} of the I/O: expected {:#018x}, read {:#018x}",
                    r.label, r.verify.mismatches, m.lba, m.offset, m.expected, m.found
                )?;
            }
        }
    }
    Ok(())
}

/// `--transport-stats`: every queue pair's counters.
pub fn transport_stats(out: &mut dyn Write, qpairs: &[(usize, QpairReport)]) -> io::Result<()> {
    writeln!(
        out,
        "\nTransport statistics (per I/O queue pair, whole run):"
    )?;
    for (core, q) in qpairs {
        let s = &q.stats;
        writeln!(
            out,
            "  {} NSID {} qid {} (core {core}): submitted {}, completed {}, failed {}, retries {}, queue full {}, SQ doorbells {}, CQ doorbells {}, duplicate {}, stale {}, unknown CID {}, bad SQ head {}, wrong SQ {}, timeouts {}, aborts sent {}, resets requested {}, re-created {}, resubmitted {}",
            q.device,
            q.nsid,
            q.qid,
            s.submitted,
            s.completed,
            s.failed,
            s.retries,
            s.queue_full,
            s.sq_doorbell_writes,
            s.cq_doorbell_writes,
            s.duplicate_completions,
            s.stale_completions,
            s.unknown_completions,
            s.invalid_sqhd,
            s.wrong_sqid,
            s.timeouts,
            s.aborts_sent,
            s.resets_requested,
            s.recreated,
            s.resubmitted
        )?;
    }
    Ok(())
}
