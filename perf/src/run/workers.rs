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
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};

use crate::stats::WorkerResult;
use crate::target::Link;
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
    ctrls: &[Link],
    params: Arc<RunParams>,
    timing: Timing,
    out: &mut dyn Write,
) -> Result<Vec<WorkerResult>> {
    let ctrls = ctrls.to_vec();
    let start: WorkerStart =
        Arc::new(move |plan, p, ctl, tx| worker::run(plan, ctrls.clone(), p, ctl, tx));
    run_workers(plans, start, params, timing, out)
}

/// What a worker thread runs: set up on its core, report readiness, drive
/// the run (any transport).
pub type WorkerStart = Arc<
    dyn Fn(
            WorkerPlan,
            Arc<RunParams>,
            Arc<Control>,
            mpsc::Sender<SetupResult>,
        ) -> Result<WorkerResult>
        + Send
        + Sync,
>;

/// Run all workers, each through `start`; returns their results in plan
/// order.
pub fn run_workers(
    plans: Vec<WorkerPlan>,
    start: WorkerStart,
    params: Arc<RunParams>,
    timing: Timing,
    out: &mut dyn Write,
) -> Result<Vec<WorkerResult>> {
    let ctl = Arc::new(Control::new(plans.len()));
    let (handles, setup_rx, done_rx) = spawn(plans, start, &params, &ctl)?;
    let wake = match timing.reporter_core {
        Some(c) if nvme_engine::cpu::pin_current_thread(c).is_ok() => WAKE_OWN_CPU,
        _ => WAKE_SHARED_CPU,
    };
    if let Some(e) = await_setup(&setup_rx, handles.len()) {
        ctl.advance(PHASE_STOP);
        for h in handles {
            let _ = h.join();
        }
        bail!("{e}");
    }
    Pacer::new(&timing, &ctl, params.io_size as f64, out).drive(&handles, &done_rx, wake);
    let mut results = Vec::new();
    for h in handles {
        match h.join() {
            Ok(r) => results.push(r?),
            Err(_) => bail!("a worker thread panicked"),
        }
    }
    Ok(results)
}

/// A worker thread.
type Worker = JoinHandle<Result<WorkerResult>>;
/// What a worker reports when its setup ends.
pub type SetupResult = std::result::Result<(), String>;

/// Start one thread per plan. Each reports the end of its setup on the
/// first channel, and its end on the second.
fn spawn(
    plans: Vec<WorkerPlan>,
    start: WorkerStart,
    params: &Arc<RunParams>,
    ctl: &Arc<Control>,
) -> Result<(Vec<Worker>, Receiver<SetupResult>, Receiver<()>)> {
    let (tx, rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut handles = Vec::new();
    for plan in plans {
        let (start, p, ctl, tx) = (start.clone(), params.clone(), ctl.clone(), tx.clone());
        let done = done_tx.clone();
        let name = format!("nvme-perf-c{}", plan.core);
        let h = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let r = start(plan, p, ctl, tx);
                // Wake the main thread; it may be gone already.
                let _ = done.send(());
                r
            })
            .map_err(|e| anyhow!("cannot start a worker thread: {e}"))?;
        handles.push(h);
    }
    Ok((handles, rx, done_rx))
}

/// Wait until `workers` workers finished their setup; the first failure.
fn await_setup(rx: &Receiver<SetupResult>, workers: usize) -> Option<String> {
    let mut setup_error = None;
    for _ in 0..workers {
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
    setup_error
}

/// The main thread's view of a running run: phases, progress lines, the
/// hung-device watch.
struct Pacer<'a> {
    timing: &'a Timing,
    ctl: &'a Control,
    io_bytes: f64,
    out: &'a mut dyn Write,
    start: Instant,
    warm_end: Instant,
    measuring: bool,
    measure_end: Option<Instant>,
    last_print: Instant,
    last_total: u64,
    cpu_before: Vec<crate::cpu::Times>,
    printed: bool,
    /// The last change of the completed count, and when.
    last_change: (u64, Instant),
}

impl<'a> Pacer<'a> {
    fn new(timing: &'a Timing, ctl: &'a Control, io_bytes: f64, out: &'a mut dyn Write) -> Self {
        let start = Instant::now();
        // -t and -a are bounded to a year, so these sums cannot overflow.
        let warm_end = start + timing.warmup;
        let measuring = timing.warmup.is_zero();
        ctl.advance(if measuring {
            PHASE_MEASURE
        } else {
            PHASE_WARMUP
        });
        Pacer {
            measure_end: timing.time.map(|t| warm_end + t),
            cpu_before: timing
                .cpu_usage
                .as_deref()
                .map(crate::cpu::sample)
                .unwrap_or_default(),
            timing,
            ctl,
            io_bytes,
            out,
            start,
            warm_end,
            measuring,
            last_print: start,
            last_total: 0,
            printed: false,
            last_change: (0, start),
        }
    }

    /// Pace the run until every worker has ended.
    fn drive(mut self, handles: &[Worker], done_rx: &Receiver<()>, wake: Duration) {
        while !handles.iter().all(|h| h.is_finished()) {
            let now = Instant::now();
            let done: u64 = self
                .ctl
                .progress
                .iter()
                .map(|c| c.0.load(Ordering::Relaxed))
                .sum();
            self.watch_stall(done, now);
            if now.duration_since(self.last_print) >= Duration::from_secs(1) {
                self.progress_line(done, now);
            }
            // Phase changes after the progress line, so the line names the
            // phase its interval ran in.
            if !self.measuring && now >= self.warm_end {
                self.measuring = true;
                self.ctl.advance(PHASE_MEASURE);
                self.measure_end = self.timing.time.map(|t| now + t);
            }
            if self.measure_end.is_some_and(|e| now >= e) || crate::signal::stop_requested() {
                self.ctl.advance(PHASE_STOP);
            }
            self.nap(done_rx, wake);
        }
        if self.printed && self.timing.terminal {
            let _ = writeln!(self.out);
        }
    }

    /// Stop a run in which no I/O completed for the stall timeout.
    fn watch_stall(&mut self, done: u64, now: Instant) {
        if done != self.last_change.0 {
            self.last_change = (done, now);
        } else if now.duration_since(self.last_change.1) >= self.timing.stall_timeout {
            let _ = writeln!(
                self.out,
                "\nNo I/O completed for {} s: the device may be hung; stopping the run",
                self.timing.stall_timeout.as_secs()
            );
            self.ctl.advance(PHASE_STOP);
            self.last_change = (done, now);
        }
    }

    /// Print the progress line for the interval since the last one.
    fn progress_line(&mut self, total: u64, now: Instant) {
        let secs = now.duration_since(self.last_print).as_secs_f64();
        let iops = (total - self.last_total) as f64 / secs;
        let what = if self.measuring {
            "measuring"
        } else {
            "warming up"
        };
        let mut line = format!(
            "[{:>4}s] {what}: {:>12.0} IOPS {:>10.2} MiB/s",
            now.duration_since(self.start).as_secs(),
            iops,
            iops * self.io_bytes / (1 << 20) as f64
        );
        if let Some(cores) = &self.timing.cpu_usage {
            let after = crate::cpu::sample(cores);
            line.push_str(&format!(
                "  CPU: {}",
                crate::cpu::describe(cores, &self.cpu_before, &after)
            ));
            self.cpu_before = after;
        }
        if self.timing.terminal {
            let _ = write!(self.out, "\r{line}");
        } else {
            let _ = writeln!(self.out, "{line}");
        }
        let _ = self.out.flush();
        self.printed = true;
        self.last_print = now;
        self.last_total = total;
    }

    /// Sleep until the next event, a finished worker, or `wake`.
    fn nap(&self, done_rx: &Receiver<()>, wake: Duration) {
        let mut next = self.last_print + Duration::from_secs(1);
        if !self.measuring {
            next = next.min(self.warm_end);
        }
        if let Some(e) = self.measure_end {
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
}
