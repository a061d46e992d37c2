//! One worker thread: pinned to its core, it creates its own queue pairs
//! and DMA pool, preallocates `qd` buffers per queue pair and runs to
//! completion — submit up to QD, ring the doorbell once, reap a batch,
//! resubmit — like `spdk_nvme_perf`'s direct mode. The loop allocates
//! nothing and makes no system call; time comes from [`Clock`], offsets from
//! [`WyRand`], latency goes into per-namespace histograms.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nvme_engine::dma::{DmaBuf, DmaPool};
use nvme_engine::{
    Controller, IoCompletion, IoQueuePair, Namespace, QueuePairOptions, QueuePairStats,
    SubmitErrorKind,
};

use crate::clock::Clock;
use crate::device::PerfDevice;
use crate::pattern;
use crate::rng::{WyRand, below, worker_seed};
use crate::stats::{FailedIo, RowStats, WorkerResult};

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
const GEN_BUSY: u32 = 0x8000_0000;

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
    /// The verify pass may write (pre-fill) units it finds no generation in.
    pub verify_writes: bool,
    /// Measured I/Os per worker, if bounded by count.
    pub number_ios: Option<u64>,
    /// Run seed.
    pub seed: u64,
    /// Count failures and keep going.
    pub continue_on_error: bool,
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

pub(crate) struct Slot {
    pub(crate) buf: Option<DmaBuf>,
    start: u64,
    unit: u64,
    generation: u32,
    read: bool,
}

pub(crate) struct Job {
    pub(crate) qp: IoQueuePair<PerfDevice>,
    pub(crate) ns: Namespace,
    pub(crate) device: String,
    pub(crate) row: usize,
    pub(crate) start_lba: u64,
    pub(crate) units: u64,
    pub(crate) blocks: u64,
    seq: u64,
    pub(crate) slots: Vec<Slot>,
    pub(crate) free: Vec<u32>,
    /// Per-unit verify generation (empty without --verify).
    pub(crate) gens: Vec<u32>,
    /// The controller was removed or failed: nothing more is submitted here.
    pub(crate) dead: bool,
}

/// Per-worker mutable state the hot path touches besides the job.
pub(crate) struct Ctx<'a> {
    pub(crate) p: &'a RunParams,
    rng: WyRand,
    /// One I/O's worth of bytes: data read back, or a pattern to write.
    pub(crate) scratch: Vec<u8>,
    /// One I/O's worth of bytes: the pattern a read should return.
    pub(crate) expected: Vec<u8>,
    pub(crate) fatal: Option<FailedIo>,
    /// Completions counted toward `-d` (measure phase).
    measured: u64,
    /// All completions (progress).
    completed: u64,
    counting: bool,
    /// Submissions still allowed by `-d` (u64::MAX without it).
    budget: u64,
    /// Commands in flight on all jobs.
    inflight: u64,
    /// Failures that are not tied to one row (refused submissions).
    pub(crate) refused: u64,
}

fn setup(
    plan: &WorkerPlan,
    ctrls: &[Controller<PerfDevice>],
    p: &RunParams,
) -> Result<(Vec<Job>, Vec<Option<DmaPool>>)> {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: plan.core }) {
        bail!(
            "cannot pin the worker thread to core {}; check the core is online and allowed",
            plan.core
        );
    }
    let block_bytes = p.io_size.next_power_of_two().max(4096);
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
    let mut jobs = Vec::new();
    for jp in &plan.jobs {
        let ctrl = &ctrls[jp.target];
        let device = nvme_engine::Device::name(ctrl.device());
        let pool = pools[jp.target]
            .as_mut()
            .ok_or_else(|| anyhow!("no DMA pool for {device}"))?;
        for _ in 0..p.qpairs {
            let qp = ctrl
                .create_io_qpair(QueuePairOptions {
                    entries: Some(p.queue_entries),
                })
                .with_context(|| {
                    format!(
                        "core {}: cannot create an I/O queue pair on {device}",
                        plan.core
                    )
                })?;
            if qp.capacity() < p.queue_depth {
                bail!(
                    "{device}: the I/O queue holds {} commands, fewer than queue depth {}; lower -q or raise --io-queue-size",
                    qp.capacity(),
                    p.queue_depth
                );
            }
            let mut slots = Vec::with_capacity(p.queue_depth);
            for _ in 0..p.queue_depth {
                let buf = pool
                    .alloc(p.io_size)
                    .with_context(|| format!("core {}: DMA buffer for {device}", plan.core))?;
                slots.push(Slot {
                    buf: Some(buf),
                    start: 0,
                    unit: 0,
                    generation: GEN_NONE,
                    read: true,
                });
            }
            jobs.push(Job {
                qp,
                ns: jp.ns.clone(),
                device: device.clone(),
                row: jp.row,
                start_lba: jp.start_lba,
                units: jp.units,
                blocks: (p.io_size / jp.ns.block_size as usize) as u64,
                seq: 0,
                slots,
                free: (0..p.queue_depth as u32).rev().collect(),
                gens: Vec::new(),
                dead: false,
            });
        }
    }
    // With several queue pairs on one namespace, each takes its own slice of
    // the worker's share so verified units never race.
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
        }
        i += n as usize;
    }
    Ok((jobs, pools))
}

/// Run one worker: set up, report readiness through `ready`, wait for the
/// start, run, drain, delete the queue pairs.
pub fn run(
    plan: WorkerPlan,
    ctrls: Vec<Controller<PerfDevice>>,
    p: Arc<RunParams>,
    ctl: Arc<Control>,
    ready: std::sync::mpsc::Sender<std::result::Result<(), String>>,
) -> Result<WorkerResult> {
    let (mut jobs, _pools) = match setup(&plan, &ctrls, &p) {
        Ok(v) => v,
        Err(e) => {
            let _ = ready.send(Err(format!("{e:#}")));
            return Err(e);
        }
    };
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
        p: &p,
        rng: WyRand::new(worker_seed(p.seed, plan.index)),
        scratch: vec![0u8; if p.verify { p.io_size } else { 0 }],
        expected: vec![0u8; if p.verify { p.io_size } else { 0 }],
        fatal: None,
        measured: 0,
        completed: 0,
        counting: false,
        budget: u64::MAX,
        inflight: 0,
        refused: 0,
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
    let clock = p.clock;
    let mut measure_start = clock.now();
    let (mut busy, mut idle) = (0u64, 0u64);
    let mut idle_run = 0u32;
    // Time in busy turns: one clock read per turn, charged to the turn
    // before it when that turn did work.
    let (mut busy_ticks, mut turn_start, mut last_busy) = (0u64, clock.now(), false);
    let mut local_phase = PHASE_WARMUP;
    let limit = p.number_ios.unwrap_or(u64::MAX);
    let progress = &ctl.progress[plan.index].0;
    let mut next_scan = clock.now().saturating_add(p.scan_ticks);
    loop {
        let phase = ctl.phase.load(Ordering::Relaxed);
        if phase != local_phase {
            if phase >= PHASE_STOP {
                break;
            }
            if phase == PHASE_MEASURE {
                for r in &mut rows {
                    r.reset_performance();
                }
                busy = 0;
                idle = 0;
                busy_ticks = 0;
                last_busy = false;
                cx.measured = 0;
                cx.counting = true;
                // What is in flight now completes in the measured phase.
                cx.budget = limit.saturating_sub(cx.inflight);
                measure_start = clock.now();
            }
            local_phase = phase;
        }
        let t = clock.now();
        if last_busy {
            busy_ticks += t.saturating_sub(turn_start);
        }
        turn_start = t;
        let mut work = 0usize;
        for job in &mut jobs {
            if !job.free.is_empty() && !job.dead {
                let now = clock.now();
                while let Some(&slot) = job.free.last() {
                    if cx.budget == 0 {
                        break;
                    }
                    match submit(job, slot, now, &mut cx) {
                        Ok(()) => {}
                        Err(Refused::Gone) => break,
                        Err(Refused::Bug(e)) => {
                            cx.fatal.get_or_insert(e);
                            ctl.advance(PHASE_STOP);
                            break;
                        }
                    }
                    job.free.pop();
                    work += 1;
                }
                job.qp.ring_doorbell();
            }
            let before = cx.fatal.is_some();
            work += reap(job, &mut rows[job.row], &mut cx, clock);
            if !before && cx.fatal.is_some() {
                ctl.advance(PHASE_STOP);
            }
        }
        // Deadlines are judged after reaping, so a completion already in
        // the queue is never taken for a timeout.
        if t >= next_scan {
            next_scan = t.saturating_add(p.scan_ticks);
            if scan(&mut jobs) {
                // Every controller this worker drives is gone.
                break;
            }
        }
        last_busy = work > 0;
        if work > 0 {
            busy += 1;
            idle_run = 0;
        } else {
            idle += 1;
            if plan.yield_when_idle {
                idle_run += 1;
                if idle_run >= YIELD_AFTER_IDLE {
                    idle_run = 0;
                    std::thread::yield_now();
                }
            }
        }
        progress.store(cx.completed, Ordering::Relaxed);
        if cx.counting && cx.measured >= limit {
            break;
        }
    }
    let end = clock.now();
    cx.counting = false;
    // Drain: keep checking data, failures and deadlines; stop counting
    // performance.
    let start = Instant::now();
    let mut turns = 0u32;
    loop {
        if cx.inflight == 0 {
            break;
        }
        let mut n = 0;
        for job in &mut jobs {
            n += reap(job, &mut rows[job.row], &mut cx, clock);
        }
        turns = turns.wrapping_add(1);
        if turns.is_multiple_of(256) {
            if start.elapsed() > p.drain_timeout {
                break;
            }
            scan(&mut jobs);
        }
        if n == 0 {
            if plan.yield_when_idle {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
    progress.store(cx.completed, Ordering::Relaxed);
    for r in &mut rows {
        r.flush();
    }
    let mut qpair = QueuePairStats::default();
    for job in &jobs {
        qpair += job.qp.stats();
    }
    let lost = cx.inflight;
    for job in jobs {
        // Commands the device never completed come back here (Command
        // Aborted due to SQ Deletion); they are already counted as lost.
        let _ = job.qp.delete_with(|_| {});
    }
    Ok(WorkerResult {
        core: plan.core,
        rows,
        elapsed_ticks: end.saturating_sub(measure_start),
        busy_polls: busy,
        busy_ticks,
        idle_polls: idle,
        fatal: cx.fatal,
        lost,
        refused: cx.refused,
        qpair,
    })
}

/// Check the deadlines of every queue pair; true when every job's
/// controller is gone (removed or failed) and nothing is in flight on it.
#[cold]
#[inline(never)]
fn scan(jobs: &mut [Job]) -> bool {
    let now = Instant::now();
    let mut all_dead = true;
    for job in jobs.iter_mut() {
        job.qp.check_timeouts(now);
        all_dead &= job.dead && job.qp.outstanding() == 0;
    }
    all_dead
}

/// Why a submission did not happen.
enum Refused {
    /// The controller is removed or failed; the job is marked dead.
    Gone,
    /// Anything else: a bug in the plan (stops the run).
    Bug(FailedIo),
}

/// Pick an offset and direction for `slot` and submit it.
#[inline]
fn submit(
    job: &mut Job,
    slot: u32,
    now: u64,
    cx: &mut Ctx<'_>,
) -> std::result::Result<(), Refused> {
    let p = cx.p;
    let read = match p.read_percent {
        100 => true,
        0 => false,
        pct => below(cx.rng.next_u64(), 100) < pct as u64,
    };
    let mut unit = if p.random {
        cx.rng.below(job.units)
    } else {
        let u = job.seq;
        job.seq = if u + 1 == job.units { 0 } else { u + 1 };
        u
    };
    let lba_of = |unit: u64| job.start_lba + unit * job.blocks;
    let s = &mut job.slots[slot as usize];
    let Some(mut buf) = s.buf.take() else {
        return Err(Refused::Bug(failed(
            job,
            "submit",
            lba_of(unit),
            "slot has no buffer".into(),
        )));
    };
    let mut generation = GEN_NONE;
    let mut prev_generation = GEN_NONE;
    if p.verify {
        // Never two I/Os on one unit at once: the result would be undefined.
        while job.gens[unit as usize] & GEN_BUSY != 0 {
            unit = if unit + 1 == job.units { 0 } else { unit + 1 };
        }
        let g = &mut job.gens[unit as usize];
        prev_generation = *g;
        if read {
            generation = *g;
        } else {
            generation = if *g + 1 >= GEN_UNKNOWN { 1 } else { *g + 1 };
            *g = generation;
            pattern::fill(
                &mut cx.scratch,
                job.start_lba + unit * job.blocks,
                job.ns.block_size as usize,
                p.seed,
                generation,
            );
            buf.write_at(0, &cx.scratch);
        }
        *g |= GEN_BUSY;
    }
    let lba = job.start_lba + unit * job.blocks;
    let s = &mut job.slots[slot as usize];
    s.start = now;
    s.unit = unit;
    s.generation = generation;
    s.read = read;
    let r = if read {
        job.qp.read(&job.ns, lba, buf, slot as u64)
    } else {
        job.qp.write(&job.ns, lba, buf, false, slot as u64)
    };
    match r {
        Ok(()) => {
            cx.inflight += 1;
            cx.budget -= 1;
            Ok(())
        }
        Err(e) => {
            job.slots[slot as usize].buf = e.buf;
            if p.verify {
                // Nothing reached the device: the unit keeps its contents.
                job.gens[unit as usize] = prev_generation;
            }
            if matches!(
                e.kind,
                SubmitErrorKind::DeviceRemoved | SubmitErrorKind::ControllerFailed
            ) {
                job.dead = true;
                cx.refused += 1;
                return Err(Refused::Gone);
            }
            let op = if read { "read" } else { "write" };
            Err(Refused::Bug(failed(
                job,
                op,
                lba,
                format!("submission refused: {}", e.kind),
            )))
        }
    }
}

fn failed(job: &Job, op: &'static str, lba: u64, reason: String) -> FailedIo {
    FailedIo {
        device: job.device.clone(),
        nsid: job.ns.id,
        op,
        lba,
        blocks: job.blocks,
        reason,
    }
}

/// Reap up to a queue's worth of completions of `job`.
#[inline]
fn reap(job: &mut Job, row: &mut RowStats, cx: &mut Ctx<'_>, clock: Clock) -> usize {
    let Job {
        qp,
        ns,
        device,
        start_lba,
        blocks,
        slots,
        free,
        gens,
        ..
    } = job;
    let (start_lba, blocks, bs) = (*start_lba, *blocks, ns.block_size as usize);
    let mut now = 0u64;
    qp.process_completions(cx.p.queue_depth, |c: IoCompletion| {
        let slot = &mut slots[c.token as usize];
        slot.buf = c.buf;
        free.push(c.token as u32);
        cx.inflight -= 1;
        cx.completed += 1;
        if cx.counting {
            cx.measured += 1;
        }
        let lba = start_lba + slot.unit * blocks;
        match c.result {
            Ok(_) => {
                if cx.p.verify {
                    let g = &mut gens[slot.unit as usize];
                    *g &= !GEN_BUSY;
                    if slot.read {
                        check(slot, lba, bs, row, cx);
                    }
                }
                if cx.counting {
                    if now == 0 {
                        now = clock.now();
                    }
                    row.record(now.wrapping_sub(slot.start), slot.read);
                }
            }
            Err(e) => {
                if cx.p.verify {
                    let g = &mut gens[slot.unit as usize];
                    *g = if slot.read {
                        *g & !GEN_BUSY
                    } else {
                        GEN_UNKNOWN
                    };
                }
                row.errors.record(&e);
                if !cx.p.continue_on_error && cx.fatal.is_none() {
                    cx.fatal = Some(FailedIo {
                        device: device.clone(),
                        nsid: ns.id,
                        op: if slot.read { "read" } else { "write" },
                        lba,
                        blocks,
                        reason: e.to_string(),
                    });
                }
            }
        }
    })
}

/// Compare a completed read with the pattern last written there.
fn check(slot: &Slot, lba: u64, block_size: usize, row: &mut RowStats, cx: &mut Ctx<'_>) {
    if slot.generation == GEN_NONE || slot.generation == GEN_UNKNOWN {
        row.verify.unverified += 1;
        return;
    }
    let Some(buf) = &slot.buf else { return };
    if !buf.read_at(0, &mut cx.scratch) {
        row.verify.unverified += 1;
        return;
    }
    row.verify.checked += 1;
    if let Some(m) = pattern::check(
        &cx.scratch,
        &mut cx.expected,
        lba,
        block_size,
        cx.p.seed,
        slot.generation,
    ) {
        row.verify.mismatches += 1;
        row.verify.first.get_or_insert(m);
    }
}
