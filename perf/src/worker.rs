//! One worker thread: pinned to its core, it creates its own queue pairs
//! and DMA pool, preallocates `qd` buffers per queue pair and runs to
//! completion — submit up to QD, ring the doorbell once, reap a batch,
//! resubmit — like `spdk_nvme_perf`'s direct mode (the loop itself is in
//! [`crate::hot`]). The loop allocates nothing and makes no system call;
//! time comes from the TSC, offsets from [`WyRand`], latency goes into
//! per-namespace histograms.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nvme_engine::dma::DmaPool;
use nvme_engine::transport::CommandTransport;
use nvme_engine::{Controller, Namespace, QueuePair, QueuePairOptions, QueuePairStats};

use crate::clock::Clock;
use crate::device::PerfDevice;
use crate::hot::{self, Ctx, FreeList, Job, Slot};
use crate::rng::{WyRand, worker_seed};
use crate::stats::{QpairReport, RowStats, WorkerResult};
use crate::target::Link;
use crate::zipf::Zipf;

/// Workers are creating their queue pairs.
pub const PHASE_SETUP: u8 = 0;
/// I/O runs but is not counted.
pub const PHASE_WARMUP: u8 = 1;
/// I/O is counted.
pub const PHASE_MEASURE: u8 = 2;
/// Stop submitting, drain, report.
pub const PHASE_STOP: u8 = 3;

/// Verify generation: contents not known (not written with this seed).
pub(crate) const GEN_NONE: u32 = 0;
/// Verify generation: a write failed, contents unknown.
pub(crate) const GEN_UNKNOWN: u32 = 0x7fff_ffff;
/// Verify flag: an I/O to this unit is in flight.
pub(crate) const GEN_BUSY: u32 = 0x8000_0000;

/// A progress counter on its own cache line (no false sharing between workers).
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct Progress(pub AtomicU64);

/// State shared between the main thread and the workers.
#[derive(Debug)]
pub struct Control {
    /// One of the `PHASE_*` values; only ever raised (`fetch_max`).
    pub phase: AtomicU8,
    /// Completed I/Os per worker (all phases), stored once per loop turn.
    pub progress: Vec<Progress>,
}

impl Control {
    /// Control for `workers` workers, in setup.
    pub fn new(workers: usize) -> Self {
        Control {
            phase: AtomicU8::new(PHASE_SETUP),
            progress: (0..workers).map(|_| Progress::default()).collect(),
        }
    }
    /// Raise the phase (never lowers it).
    pub fn advance(&self, phase: u8) {
        // Relaxed: the phase publishes no data, workers only compare it.
        self.phase.fetch_max(phase, Ordering::Relaxed);
    }
}

/// Parameters every worker shares.
#[derive(Clone, Debug)]
pub struct RunParams {
    /// Commands kept in flight per queue pair.
    pub queue_depth: usize,
    /// Bytes per I/O.
    pub io_size: usize,
    /// Percentage of reads.
    pub read_percent: u8,
    /// Random offsets.
    pub random: bool,
    /// Write patterns and check reads.
    pub verify: bool,
    /// Writes carry Force Unit Access.
    pub fua: bool,
    /// The verify pass may write (pre-fill) units it finds no generation in.
    pub verify_writes: bool,
    /// Measured I/Os per worker, if bounded by count.
    pub number_ios: Option<u64>,
    /// Run seed.
    pub seed: u64,
    /// Count failures and keep going.
    pub continue_on_error: bool,
    /// With `continue_on_error`: print every Nth failure.
    pub log_every: u64,
    /// Most completions reaped per poll (`-C`; at least 1).
    pub max_completions: usize,
    /// Buffer alignment (`-A`), a power of two.
    pub alignment: usize,
    /// Zipf exponent for random offsets (`-F`).
    pub zipf: Option<f64>,
    /// Entries per I/O queue.
    pub queue_entries: u16,
    /// Queue pairs per namespace.
    pub qpairs: usize,
    /// The clock.
    pub clock: Clock,
    /// Largest latency the histograms track, in ticks.
    pub max_ticks: u64,
    /// Ticks between two deadline checks of the queue pairs.
    pub scan_ticks: u64,
    /// How long the drain after the run waits for outstanding commands: long
    /// enough for a lost command to time out, be aborted and, failing that,
    /// for the controller to be reset.
    pub drain_timeout: Duration,
}

/// One namespace driven by a worker.
#[derive(Clone, Debug)]
pub struct JobPlan {
    /// Index into the controller list.
    pub target: usize,
    /// The namespace.
    pub ns: Namespace,
    /// Which of the worker's rows it reports into.
    pub row: usize,
    /// First LBA of this worker's share of the namespace.
    pub start_lba: u64,
    /// Size of the share in I/O-sized units.
    pub units: u64,
}

/// What one worker does.
#[derive(Clone, Debug)]
pub struct WorkerPlan {
    /// Worker number (index into [`Control::progress`]).
    pub index: usize,
    /// Core to pin to.
    pub core: usize,
    /// Namespaces (each gets `qpairs` queue pairs).
    pub jobs: Vec<JobPlan>,
    /// Rows (one per job).
    pub rows: usize,
    /// Yield the CPU after [`YIELD_AFTER_IDLE`] idle loop turns in a row:
    /// set when an emulated controller's device thread shares this core, so
    /// it gets to run (never for real devices).
    pub yield_when_idle: bool,
}

/// Idle loop turns in a row after which a worker sharing its core with a
/// device thread yields.
pub const YIELD_AFTER_IDLE: u32 = 32;

/// Pin the worker, allocate its DMA pools and create its queue pairs: one
/// job per queue pair.
fn setup(
    plan: &WorkerPlan,
    ctrls: &[Controller<PerfDevice>],
    p: &RunParams,
) -> Result<(Vec<Job>, Vec<Option<DmaPool>>)> {
    nvme_engine::cpu::pin_current_thread(plan.core)
        .with_context(|| format!("cannot pin the worker thread to core {}", plan.core))?;
    let mut pools = create_pools(plan, ctrls, p)?;
    let mut jobs = Vec::new();
    for jp in &plan.jobs {
        let ctrl = &ctrls[jp.target];
        let device = nvme_engine::Device::name(ctrl.device());
        let pool = pools[jp.target]
            .as_mut()
            .ok_or_else(|| anyhow!("no DMA pool for {device}"))?;
        for _ in 0..p.qpairs {
            jobs.push(new_job(plan, jp, ctrl, &device, pool, p)?);
        }
    }
    divide_among_qpairs(&mut jobs, p);
    Ok((jobs, pools))
}

/// One DMA pool per controller the worker drives, sized for its buffers.
fn create_pools(
    plan: &WorkerPlan,
    ctrls: &[Controller<PerfDevice>],
    p: &RunParams,
) -> Result<Vec<Option<DmaPool>>> {
    let block_bytes = buffer_block(p);
    let mut pools: Vec<Option<DmaPool>> = (0..ctrls.len()).map(|_| None).collect();
    for (t, pool) in pools.iter_mut().enumerate() {
        let n = plan.jobs.iter().filter(|j| j.target == t).count();
        if n > 0 {
            let bytes = n * p.qpairs * p.queue_depth * block_bytes;
            *pool = Some(ctrls[t].create_pool(bytes).with_context(|| {
                format!(
                    "core {}: cannot allocate {bytes} bytes of DMA buffers for {}",
                    plan.core,
                    nvme_engine::Device::name(ctrls[t].device())
                )
            })?);
        }
    }
    Ok(pools)
}

/// The pool block one I/O buffer takes.
pub(crate) fn buffer_block(p: &RunParams) -> usize {
    p.io_size.next_power_of_two().max(4096).max(p.alignment)
}

/// A queue pair on `ctrl` for job `jp`, with one buffer per slot.
fn new_job(
    plan: &WorkerPlan,
    jp: &JobPlan,
    ctrl: &Controller<PerfDevice>,
    device: &str,
    pool: &mut DmaPool,
    p: &RunParams,
) -> Result<Job> {
    let qp = ctrl
        .create_io_qpair(QueuePairOptions::default().with_entries(p.queue_entries))
        .with_context(|| {
            format!(
                "core {}: cannot create an I/O queue pair on {device}",
                plan.core
            )
        })?;
    job_on(plan, jp, qp, device, pool, p)
}

/// Job `jp` on queue pair `qp` (any transport), with one buffer per slot
/// from `pool`.
pub(crate) fn job_on<T: CommandTransport>(
    plan: &WorkerPlan,
    jp: &JobPlan,
    qp: QueuePair<T>,
    device: &str,
    pool: &mut DmaPool,
    p: &RunParams,
) -> Result<Job<T>> {
    if qp.capacity() < p.queue_depth {
        bail!(
            "{device}: the I/O queue holds {} commands, fewer than queue depth {}; lower -q or raise --io-queue-size",
            qp.capacity(),
            p.queue_depth
        );
    }
    let mut slots = Vec::with_capacity(p.queue_depth);
    let mut free: FreeList = Vec::with_capacity(p.queue_depth);
    for _ in 0..p.queue_depth {
        // A block of at least the alignment is aligned to it; the
        // window is the I/O.
        let mut buf = pool
            .alloc(p.io_size.max(p.alignment))
            .with_context(|| format!("core {}: DMA buffer for {device}", plan.core))?;
        if !buf.set_window(0, p.io_size) {
            bail!("core {}: DMA buffer smaller than the I/O size", plan.core);
        }
        // Written blocks differ from never-written (zero) ones.
        buf.fill(0xA5);
        free.push((slots.len() as u32, buf));
        slots.push(Slot {
            start: 0,
            unit: 0,
            generation: GEN_NONE,
            read: true,
        });
    }
    Ok(Job {
        qp,
        ns: jp.ns.clone(),
        device: device.to_string(),
        row: jp.row,
        start_lba: jp.start_lba,
        units: jp.units,
        blocks: (p.io_size / jp.ns.block_size() as usize) as u64,
        seq: 0,
        slots,
        // The lowest slot is taken first.
        free: free.into_iter().rev().collect::<Vec<_>>(),
        gens: Vec::new(),
        zipf: None,
        dead: false,
    })
}

/// With several queue pairs on one namespace, each takes its own slice of
/// the worker's share so verified units never race.
pub(crate) fn divide_among_qpairs<T: CommandTransport>(jobs: &mut [Job<T>], p: &RunParams) {
    let mut i = 0;
    while i < jobs.len() {
        let (row, start, units) = (jobs[i].row, jobs[i].start_lba, jobs[i].units);
        let n = jobs[i..].iter().take_while(|j| j.row == row).count() as u64;
        let per = (units / n).max(1);
        for k in 0..n {
            let j = &mut jobs[i + k as usize];
            j.start_lba = start + k * per * j.blocks;
            j.units = per;
            if p.verify {
                j.gens = vec![GEN_NONE; per as usize];
            }
            j.zipf = p.zipf.map(|theta| Zipf::new(per, theta));
        }
        i += n as usize;
    }
}

/// Run one worker: set up, report readiness through `ready`, wait for the
/// start, run, drain, delete the queue pairs.
pub fn run(
    plan: WorkerPlan,
    links: Vec<Link>,
    p: Arc<RunParams>,
    ctl: Arc<Control>,
    ready: std::sync::mpsc::Sender<std::result::Result<(), String>>,
) -> Result<WorkerResult> {
    // A run drives one kind of transport (plan::make refuses a mix).
    if links.iter().any(|l| matches!(l, Link::Uring(_))) {
        return crate::uring::worker::run(plan, &links, p, ctl, ready);
    }
    let ctrls: Vec<Controller<PerfDevice>> = links
        .into_iter()
        .filter_map(|l| match l {
            Link::Pcie(c) => Some(c),
            Link::Uring(_) => None,
        })
        .collect();
    let (jobs, _pools) = match setup(&plan, &ctrls, &p) {
        Ok(v) => v,
        Err(e) => {
            let _ = ready.send(Err(format!("{e:#}")));
            return Err(e);
        }
    };
    drive(plan, jobs, &p, &ctl, &ready)
}

/// Drive a worker's queue pairs once they exist, on any transport: the
/// verify pass, readiness through `ready`, the start signal, the compiled
/// loop, the drain and the teardown. The pools the jobs' buffers come from
/// must outlive this call.
pub(crate) fn drive<T: CommandTransport>(
    plan: WorkerPlan,
    mut jobs: Vec<Job<T>>,
    p: &Arc<RunParams>,
    ctl: &Arc<Control>,
    ready: &std::sync::mpsc::Sender<std::result::Result<(), String>>,
) -> Result<WorkerResult> {
    let mut rows = Vec::with_capacity(plan.rows);
    for _ in 0..plan.rows {
        match RowStats::new(p.max_ticks, p.io_size as u64) {
            Ok(r) => rows.push(r),
            Err(e) => {
                let _ = ready.send(Err(format!("latency histogram: {e}")));
                return Err(e.into());
            }
        }
    }
    let mut cx = Ctx {
        p,
        rng: WyRand::new(worker_seed(p.seed, plan.index)),
        read_below: (((p.read_percent as u128) << 64) / 100).min(u64::MAX as u128) as u64,
        scratch: vec![0u8; if p.verify { p.io_size } else { 0 }],
        expected: vec![0u8; if p.verify { p.io_size } else { 0 }],
        fatal: None,
        completed: 0,
        refused: 0,
        lost_buffers: 0,
        failures: 0,
    };
    if p.verify {
        for job in &mut jobs {
            crate::vpass::run(job, &mut rows, &mut cx);
        }
    }
    let _ = ready.send(Ok(()));
    // Wait for the start signal.
    let mut phase = ctl.phase.load(Ordering::Relaxed);
    while phase == PHASE_SETUP {
        std::thread::yield_now();
        phase = ctl.phase.load(Ordering::Relaxed);
    }
    let out = hot::compiled_loop::<T>(cx.p)(&mut jobs, &mut rows, &mut cx, ctl, &plan);
    hot::drain(
        &mut jobs,
        &mut rows,
        &mut cx,
        &plan,
        Instant::now() + p.drain_timeout,
    );
    let progress = &ctl.progress[plan.index].0;
    progress.store(cx.completed, Ordering::Relaxed);
    for r in &mut rows {
        r.flush();
        r.set_reads(p.read_percent);
    }
    let (qpair, qpairs, lost) = tear_down(jobs, cx.lost_buffers);
    Ok(WorkerResult {
        core: plan.core,
        rows,
        elapsed_ticks: out.end.saturating_sub(out.measure_start),
        busy_polls: out.busy,
        busy_ticks: out.busy_ticks,
        idle_polls: out.idle,
        fatal: cx.fatal,
        lost,
        refused: cx.refused,
        qpair,
        qpairs,
    })
}

/// Every queue pair's counters, their sum, and the commands (and, never
/// expected, buffers) lost; then delete the queue pairs.
fn tear_down<T: CommandTransport>(
    jobs: Vec<Job<T>>,
    lost_buffers: u64,
) -> (QueuePairStats, Vec<QpairReport>, u64) {
    let mut qpair = QueuePairStats::default();
    let mut qpairs = Vec::with_capacity(jobs.len());
    for job in &jobs {
        qpair += job.qp.stats();
        qpairs.push(QpairReport {
            device: job.device.clone(),
            nsid: job.ns.id(),
            qid: job.qp.qid(),
            stats: *job.qp.stats(),
        });
    }
    // Commands still outstanding, and (never expected) buffers the driver
    // did not hand back.
    let lost: u64 = jobs.iter().map(|j| j.qp.outstanding() as u64).sum::<u64>() + lost_buffers;
    for job in jobs {
        // Commands the device never completed come back here (Command
        // Aborted due to SQ Deletion); they are already counted as lost.
        let _ = job.qp.delete_with(|_| {});
    }
    (qpair, qpairs, lost)
}
