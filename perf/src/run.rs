//! Running the workers: spawn one thread per core, wait until every worker
//! has its queue pairs, then drive the phases (warm-up, measure, stop) from
//! the main thread and print a progress line every second from the
//! workers' relaxed counters.
//!
//! The main thread costs the workers nothing: it reads their counters
//! (relaxed loads of cache lines only their owner writes), runs pinned to a
//! CPU no worker or device thread uses when there is one, and otherwise
//! wakes once a second — never every few milliseconds on a worker's CPU. It
//! sleeps until the next event (progress line, end of warm-up, end of run)
//! and a worker that finishes wakes it at once.

#![forbid(unsafe_code)]

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use nvme_engine::Controller;

use crate::device::PerfDevice;
use crate::stats::WorkerResult;
use crate::worker::{
    self, Control, PHASE_MEASURE, PHASE_STOP, PHASE_WARMUP, RunParams, WorkerPlan,
};

/// How the main thread paces the run.
#[derive(Clone, Debug)]
pub struct Timing {
    /// Warm-up length.
    pub warmup: Duration,
    /// Measured length (None: until every worker finished its -d count).
    pub time: Option<Duration>,
    /// Rewrite the progress line in place (stdout is a terminal).
    pub terminal: bool,
    /// A run in which no I/O completes for this long is stopped (hung
    /// device): longer than a command needs to time out, abort and reset.
    pub stall_timeout: Duration,
    /// A CPU no worker or device thread uses, for the main thread.
    pub reporter_core: Option<usize>,
    /// `-m`: the worker cores whose CPU use each progress line shows.
    pub cpu_usage: Option<Vec<usize>>,
}

/// Longest sleep of the main thread when it has a CPU of its own (bounds
/// how late Ctrl-C is noticed).
const WAKE_OWN_CPU: Duration = Duration::from_millis(50);
/// Longest sleep when it shares a CPU with a worker or a device thread.
const WAKE_SHARED_CPU: Duration = Duration::from_secs(1);

/// Run all workers; returns their results in plan order.
pub fn run(
    plans: Vec<WorkerPlan>,
    ctrls: &[Controller<PerfDevice>],
    params: Arc<RunParams>,
    timing: Timing,
    out: &mut dyn Write,
) -> Result<Vec<WorkerResult>> {
    let ctl = Arc::new(Control::new(plans.len()));
    let (tx, rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut handles = Vec::new();
    for plan in plans {
        let (ctrls, p, ctl, tx) = (ctrls.to_vec(), params.clone(), ctl.clone(), tx.clone());
        let done = done_tx.clone();
        let name = format!("nvme-perf-c{}", plan.core);
        let h = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let r = worker::run(plan, ctrls, p, ctl, tx);
                // Wake the main thread; it may be gone already.
                let _ = done.send(());
                r
            })
            .map_err(|e| anyhow!("cannot start a worker thread: {e}"))?;
        handles.push(h);
    }
    drop(tx);
    drop(done_tx);
    let wake = match timing.reporter_core {
        Some(c) if core_affinity::set_for_current(core_affinity::CoreId { id: c }) => WAKE_OWN_CPU,
        _ => WAKE_SHARED_CPU,
    };
    let mut setup_error = None;
    for _ in 0..handles.len() {
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                setup_error.get_or_insert(e);
            }
            Err(_) => {
                setup_error.get_or_insert("a worker thread ended during setup".into());
                break;
            }
        }
    }
    if let Some(e) = setup_error {
        ctl.advance(PHASE_STOP);
        for h in handles {
            let _ = h.join();
        }
        bail!("{e}");
    }
    let io_bytes = params.io_size as f64;
    let start = Instant::now();
    // -t and -a are bounded to a year, so these sums cannot overflow.
    let warm_end = start + timing.warmup;
    let mut measuring = timing.warmup.is_zero();
    ctl.advance(if measuring {
        PHASE_MEASURE
    } else {
        PHASE_WARMUP
    });
    let mut measure_end = timing.time.map(|t| warm_end + t);
    let mut last_print = start;
    let mut cpu_before = timing
        .cpu_usage
        .as_deref()
        .map(crate::cpu::sample)
        .unwrap_or_default();
    let mut last_total = 0u64;
    let mut printed = false;
    let mut last_change = (0u64, start);
    loop {
        if handles.iter().all(|h| h.is_finished()) {
            break;
        }
        let now = Instant::now();
        let done: u64 = ctl
            .progress
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .sum();
        if done != last_change.0 {
            last_change = (done, now);
        } else if now.duration_since(last_change.1) >= timing.stall_timeout {
            let _ = writeln!(
                out,
                "\nNo I/O completed for {} s: the device may be hung; stopping the run",
                timing.stall_timeout.as_secs()
            );
            ctl.advance(PHASE_STOP);
            last_change = (done, now);
        }
        if now.duration_since(last_print) >= Duration::from_secs(1) {
            let total = done;
            let secs = now.duration_since(last_print).as_secs_f64();
            let iops = (total - last_total) as f64 / secs;
            let what = if measuring { "measuring" } else { "warming up" };
            let mut line = format!(
                "[{:>4}s] {what}: {:>12.0} IOPS {:>10.2} MiB/s",
                now.duration_since(start).as_secs(),
                iops,
                iops * io_bytes / (1 << 20) as f64
            );
            if let Some(cores) = &timing.cpu_usage {
                let after = crate::cpu::sample(cores);
                line.push_str(&format!(
                    "  CPU: {}",
                    crate::cpu::describe(cores, &cpu_before, &after)
                ));
                cpu_before = after;
            }
            if timing.terminal {
                let _ = write!(out, "\r{line}");
            } else {
                let _ = writeln!(out, "{line}");
            }
            let _ = out.flush();
            printed = true;
            last_print = now;
            last_total = total;
        }
        // Phase changes after the progress line, so the line names the
        // phase its interval ran in.
        if !measuring && now >= warm_end {
            measuring = true;
            ctl.advance(PHASE_MEASURE);
            measure_end = timing.time.map(|t| now + t);
        }
        if measure_end.is_some_and(|e| now >= e) || crate::signal::stop_requested() {
            ctl.advance(PHASE_STOP);
        }
        // Sleep until the next event, a finished worker, or `wake`.
        let mut next = last_print + Duration::from_secs(1);
        if !measuring {
            next = next.min(warm_end);
        }
        if let Some(e) = measure_end {
            next = next.min(e);
        }
        let nap = next
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), wake);
        match done_rx.recv_timeout(nap) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Every worker is gone: the loop ends at the top.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(1))
            }
        }
    }
    if printed && timing.terminal {
        let _ = writeln!(out);
    }
    let mut results = Vec::new();
    for h in handles {
        match h.join() {
            Ok(r) => results.push(r?),
            Err(_) => bail!("a worker thread panicked"),
        }
    }
    Ok(results)
}
