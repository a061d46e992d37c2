//! What the journal prints about its commits: latency percentiles, where
//! a commit's time goes against direct mode, and one `journal-summary`
//! line for scripts (scripts/qemu/bench_json.py reads it from the QEMU
//! guest's console).

use hdrhistogram::Histogram;
use nvme_engine_examples::Setup;
use nvme_engine_examples::baseline::Baseline;

use crate::Mode;
use crate::ledger::{Commits, Params};

/// Microseconds at quantile `q`.
pub fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e3
}

/// Throughput, percentiles, the breakdown and the summary line.
pub fn print(c: &Commits, base: &Baseline, params: Params, mode: Mode, setup: &Setup) {
    let secs = c.elapsed.as_secs_f64().max(1e-9);
    let n = c.committed.len() as f64;
    println!(
        "committed {} records in {secs:.3} s ({:.0} records/s, {:.1} MiB/s); {} failed",
        c.committed.len(),
        n / secs,
        n * params.record_bytes as f64 / secs / (1 << 20) as f64,
        c.failures
    );
    let hist = &c.hist;
    if hist.is_empty() {
        return;
    }
    println!(
        "commit latency (µs, first {} commits left out as warm-up):",
        params.warmup
    );
    println!("  min    {:>10.2}", hist.min() as f64 / 1e3);
    println!("  p50    {:>10.2}", us(hist, 0.50));
    println!("  p99    {:>10.2}", us(hist, 0.99));
    println!("  p99.9  {:>10.2}", us(hist, 0.999));
    println!("  max    {:>10.2}", hist.max() as f64 / 1e3);
    breakdown(hist, base, params.depth, mode, setup);
    let s = &base.steps;
    println!(
        "journal-summary mode={} records={} record_bytes={} depth={} p50_us={:.2} p99_us={:.2} \
         p999_us={:.2} direct_p50_us={:.2} direct_p99_us={:.2} submit_us={:.2} \
         doorbell_us={:.2} device_us={:.2} reap_us={:.2}",
        mode.name(),
        c.committed.len(),
        params.record_bytes,
        params.depth,
        us(hist, 0.5),
        us(hist, 0.99),
        us(hist, 0.999),
        us(&base.total, 0.5),
        us(&base.total, 0.99),
        us(&s.submit, 0.5),
        us(&s.doorbell, 0.5),
        us(&s.device, 0.5),
        us(&s.reap, 0.5),
    );
}

fn row(what: &str, h: &Histogram<u64>) {
    println!(
        "  {what:<58} p50 {:>8.2}   p99 {:>8.2}",
        us(h, 0.5),
        us(h, 0.99)
    );
}

/// Where a commit's time goes: the journal's path against direct mode on
/// this thread, and a direct-mode I/O taken apart step by step.
fn breakdown(journal: &Histogram<u64>, base: &Baseline, depth: usize, mode: Mode, setup: &Setup) {
    println!(
        "where a commit's time goes (µs, {}this run):",
        if depth > 1 {
            "QD1 direct mode against this journal's depth, "
        } else {
            ""
        }
    );
    row(
        match mode {
            Mode::Ring => "through the reactor's rings (the journal above)",
            Mode::Local => "on the reactor's thread, a local poller (the journal above)",
        },
        journal,
    );
    row("direct mode on this thread (engine + device)", &base.total);
    let inline = setup.builtin.is_some_and(|d| d.is_inline());
    let s = &base.steps;
    println!("  direct mode taken apart (a separate pass; each clock read adds to it):");
    row("  engine: build the command, put it on the SQ", &s.submit);
    row(
        if inline {
            "  device: the doorbell write (the inline device runs here)"
        } else {
            "  the SQ Tail Doorbell write (MMIO)"
        },
        &s.doorbell,
    );
    row(
        if inline {
            "  doorbell → completion seen (already written: one poll)"
        } else {
            "  device: doorbell → completion seen (+ up to one poll)"
        },
        &s.device,
    );
    row("  engine: completion seen → response in hand", &s.reap);
    let (j, d) = (us(journal, 0.5), us(&base.total, 0.5));
    println!(
        "  {:<58} p50 {:>8.2}   ({:.2}x direct mode)",
        match mode {
            Mode::Ring => "reactor hop (ring → reactor → ring), by difference",
            Mode::Local => "reactor loop turn around the poller, by difference",
        },
        j - d,
        if d > 0.0 { j / d } else { 0.0 }
    );
    if setup.builtin.is_some() {
        let p99 = us(journal, 0.99);
        println!(
            "target on the built-in device: p50 ≤ 5 µs ({}), p99 ≤ 20 µs ({})",
            if j <= 5.0 { "met" } else { "not met" },
            if p99 <= 20.0 { "met" } else { "not met" }
        );
    }
}
