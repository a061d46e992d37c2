//! The worker's I/O loop: submit up to the queue depth, ring the doorbell
//! once, reap a bounded batch, resubmit. The loop is compiled once per
//! combination of verify on/off, random/sequential offsets and read mix
//! (all reads, all writes, mixed), so none of those choices costs a branch
//! per I/O; the submission and reaping of a job on a namespace formatted
//! with metadata (`-e`, [`JobProtection`]) are compiled apart too, chosen
//! once per job and loop turn. Per I/O it does one random draw (two when mixed), moves the
//! buffer in and out of its slot, and records the latency; per loop turn it
//! reads the TSC once for the submissions, once for the completions, and
//! compares it against the next deadline check (`check_timeouts`), and
//! publishes its completion count with one relaxed store.

#![forbid(unsafe_code)]

use std::sync::atomic::Ordering;
use std::time::Instant;

use nvme_engine::dma::DmaBuf;
use nvme_engine::transport::CommandTransport;
use nvme_engine::{
    IoCompletion, Namespace, PcieQueue, QueuePair, Splitter, SubmitError, SubmitErrorKind,
};

use crate::clock::Clock;
use crate::device::PerfDevice;
use crate::pattern;
use crate::protection::JobProtection;
use crate::rng::WyRand;
use crate::stats::{FailedIo, RowStats};
use crate::worker::{
    Control, GEN_BUSY, GEN_NONE, GEN_UNKNOWN, PHASE_MEASURE, PHASE_STOP, PHASE_WARMUP, RunParams,
    WorkerPlan, YIELD_AFTER_IDLE,
};
use crate::zipf::Zipf;

mod cold;
use cold::*;

/// Every I/O reads.
pub const MIX_READ: u8 = 0;
/// Every I/O writes.
pub const MIX_WRITE: u8 = 1;
/// Reads and writes mixed by `-M`.
pub const MIX_BOTH: u8 = 2;
/// Sequential offsets.
pub const OFF_SEQ: u8 = 0;
/// Uniformly random offsets.
pub const OFF_UNIFORM: u8 = 1;
/// Zipf-distributed offsets (`-F`).
pub const OFF_ZIPF: u8 = 2;

/// What a command slot has in flight (its buffer travels with the command
/// and waits in the free list in between).
pub(crate) struct Slot {
    pub(crate) start: u64,
    pub(crate) unit: u64,
    pub(crate) generation: u32,
    pub(crate) read: bool,
}

/// Free slots with their buffers, a stack preallocated to the queue depth:
/// a completion pushes, a submission pops, and the buffer moves only with
/// them.
pub(crate) type FreeList = Vec<(u32, DmaBuf)>;

/// The transport of a PCIe job (the emulated controller or a real one).
pub(crate) type Pcie = PcieQueue<PerfDevice>;

/// One queue pair on one namespace, driven by one worker. Generic over the
/// queue pair's command transport, so each transport gets its own compiled
/// loop and none pays for another's dispatch.
pub(crate) struct Job<T: CommandTransport = Pcie> {
    pub(crate) qp: QueuePair<T>,
    pub(crate) ns: Namespace,
    pub(crate) device: String,
    pub(crate) row: usize,
    pub(crate) start_lba: u64,
    pub(crate) units: u64,
    pub(crate) blocks: u64,
    pub(crate) seq: u64,
    pub(crate) slots: Vec<Slot>,
    pub(crate) free: FreeList,
    /// Per-unit verify generation (empty without --verify).
    pub(crate) gens: Vec<u32>,
    /// Zipf sampler over the units (`-F`).
    pub(crate) zipf: Option<Zipf>,
    /// The controller was removed or failed: nothing more is submitted here.
    pub(crate) dead: bool,
    /// `-o` above the maximum transfer: the I/Os the queue pair refuses as
    /// too large go through this and become several commands each.
    pub(crate) split: Option<Splitter>,
    /// On a namespace formatted with metadata: its buffers, PRINFO and
    /// software protection information (`None`: plain reads and writes).
    pub(crate) pi: Option<Box<JobProtection>>,
}

impl<T: CommandTransport> Job<T> {
    /// A read through the splitter when there is one (not the hot loop).
    pub(crate) fn read_any(
        &mut self,
        lba: u64,
        buf: DmaBuf,
        token: u64,
    ) -> Result<(), SubmitError> {
        match &mut self.split {
            Some(sp) => sp.read(&mut self.qp, &self.ns, lba, buf, token),
            None => self.qp.read(&self.ns, lba, buf, token),
        }
    }
    /// A write through the splitter when there is one (not the hot loop).
    pub(crate) fn write_any(
        &mut self,
        lba: u64,
        buf: DmaBuf,
        fua: bool,
        token: u64,
    ) -> Result<(), SubmitError> {
        match &mut self.split {
            Some(sp) => sp.write(&mut self.qp, &self.ns, lba, buf, fua, token),
            None => self.qp.write(&self.ns, lba, buf, fua, token),
        }
    }
    /// Reap through the splitter when there is one (not the hot loop).
    pub(crate) fn reap_any(&mut self, max: usize, f: impl FnMut(IoCompletion)) -> usize {
        match &mut self.split {
            Some(sp) => sp.process_completions(&mut self.qp, max, f),
            None => self.qp.process_completions(max, f),
        }
    }
}

/// A request the queue pair refused: if it was too large for one command
/// and the job splits, submit it split. Off the plain path: only runs after
/// a refusal.
#[cold]
#[inline(never)]
fn split_retry<T: CommandTransport>(
    job: &mut Job<T>,
    lba: u64,
    read: bool,
    fua: bool,
    token: u64,
    mut e: SubmitError,
) -> Result<(), SubmitError> {
    let Some(sp) = &mut job.split else {
        return Err(e);
    };
    if !matches!(e.kind, SubmitErrorKind::TooLarge { .. }) {
        return Err(e);
    }
    let Some(buf) = e.buf.take() else {
        return Err(e);
    };
    if read {
        sp.read(&mut job.qp, &job.ns, lba, buf, token)
    } else {
        sp.write(&mut job.qp, &job.ns, lba, buf, fua, token)
    }
}

/// Per-worker mutable state the loop touches besides the job.
pub(crate) struct Ctx<'a> {
    pub(crate) p: &'a RunParams,
    pub(crate) rng: WyRand,
    /// A mixed workload reads when a random value is below this.
    pub(crate) read_below: u64,
    /// One I/O's worth of bytes: data read back, or a pattern to write.
    pub(crate) scratch: Vec<u8>,
    /// One I/O's worth of bytes: the pattern a read should return.
    pub(crate) expected: Vec<u8>,
    pub(crate) fatal: Option<FailedIo>,
    /// All completions (progress, and `-d` through `stop_at`).
    pub(crate) completed: u64,
    /// Failures that are not tied to one row (refused submissions).
    pub(crate) refused: u64,
    /// Buffers the driver did not hand back (never expected).
    pub(crate) lost_buffers: u64,
    /// Failed I/Os so far (for `-Q N`).
    pub(crate) failures: u64,
}

fn ordinal(n: u64) -> String {
    match n {
        1 => "failure".into(),
        2 => "2nd".into(),
        3 => "3rd".into(),
        n => format!("{n}th"),
    }
}

/// What the measured loop hands back.
pub(crate) struct LoopOut {
    pub(crate) measure_start: u64,
    pub(crate) end: u64,
    pub(crate) busy: u64,
    pub(crate) idle: u64,
    pub(crate) busy_ticks: u64,
}

/// One compiled I/O loop: the worker's jobs and their stats rows, its
/// context, the run's control block and the worker's plan in, the loop's
/// times out.
pub(crate) type LoopFn<T = Pcie> =
    fn(&mut [Job<T>], &mut [RowStats], &mut Ctx<'_>, &Control, &WorkerPlan) -> LoopOut;

/// The loop compiled for this run's verify, offset and mix choices, and
/// whether its I/Os are split (`split`: `-o` above the maximum transfer;
/// a separate loop, so the plain one carries none of it).
pub(crate) fn compiled_loop<T: CommandTransport>(p: &RunParams, split: bool) -> LoopFn<T> {
    if split {
        compiled::<T, true>(p)
    } else {
        compiled::<T, false>(p)
    }
}

fn compiled<T: CommandTransport, const S: bool>(p: &RunParams) -> LoopFn<T> {
    let mix = match p.read_percent {
        100 => MIX_READ,
        0 => MIX_WRITE,
        _ => MIX_BOTH,
    };
    let off = match (p.random, p.zipf) {
        (false, _) => OFF_SEQ,
        (true, None) => OFF_UNIFORM,
        (true, Some(_)) => OFF_ZIPF,
    };
    macro_rules! pick {
        ($($v:literal, $o:ident, $m:ident);*) => {
            match (p.verify, off, mix) {
                $(($v, $o, $m) => run_loop::<T, $v, $o, $m, S>,)*
                _ => unreachable!("offset and mix modes are one of three values each"),
            }
        };
    }
    pick!(
        false, OFF_SEQ, MIX_READ; false, OFF_SEQ, MIX_WRITE; false, OFF_SEQ, MIX_BOTH;
        false, OFF_UNIFORM, MIX_READ; false, OFF_UNIFORM, MIX_WRITE; false, OFF_UNIFORM, MIX_BOTH;
        false, OFF_ZIPF, MIX_READ; false, OFF_ZIPF, MIX_WRITE; false, OFF_ZIPF, MIX_BOTH;
        true, OFF_SEQ, MIX_READ; true, OFF_SEQ, MIX_WRITE; true, OFF_SEQ, MIX_BOTH;
        true, OFF_UNIFORM, MIX_READ; true, OFF_UNIFORM, MIX_WRITE; true, OFF_UNIFORM, MIX_BOTH;
        true, OFF_ZIPF, MIX_READ; true, OFF_ZIPF, MIX_WRITE; true, OFF_ZIPF, MIX_BOTH
    )
}

fn run_loop<T: CommandTransport, const V: bool, const R: u8, const M: u8, const S: bool>(
    jobs: &mut [Job<T>],
    rows: &mut [RowStats],
    cx: &mut Ctx<'_>,
    ctl: &Control,
    plan: &WorkerPlan,
) -> LoopOut {
    let p = cx.p;
    let clock = p.clock;
    let mut out = LoopOut {
        measure_start: clock.now(),
        end: 0,
        busy: 0,
        idle: 0,
        busy_ticks: 0,
    };
    let mut idle_run = 0u32;
    // Time in busy turns: one clock read per turn, charged to the turn
    // before it when that turn did work.
    let (mut turn_start, mut last_busy) = (clock.now(), false);
    let mut local_phase = PHASE_WARMUP;
    let limit = p.number_ios.unwrap_or(u64::MAX);
    // Submissions `-d` still allows, and the completion count that ends it.
    let (mut budget, mut stop_at) = (u64::MAX, u64::MAX);
    let progress = &ctl.progress[plan.index].0;
    let mut next_scan = clock.now().saturating_add(p.scan_ticks);
    let mut stop_sent = false;
    loop {
        let phase = ctl.phase.load(Ordering::Relaxed);
        if phase != local_phase {
            if phase >= PHASE_STOP {
                break;
            }
            if phase == PHASE_MEASURE {
                // Latencies recorded in warm-up are dropped here.
                for r in rows.iter_mut() {
                    r.reset_performance();
                }
                out.busy = 0;
                out.idle = 0;
                out.busy_ticks = 0;
                last_busy = false;
                // What is in flight now completes in the measured phase.
                // I/Os, not commands: a split I/O is several.
                let inflight: u64 = jobs
                    .iter()
                    .map(|j| (j.slots.len() - j.free.len()) as u64)
                    .sum();
                budget = limit.saturating_sub(inflight);
                stop_at = cx.completed.saturating_add(limit);
                out.measure_start = clock.now();
            }
            local_phase = phase;
        }
        let t = clock.now();
        if last_busy {
            out.busy_ticks += t.saturating_sub(turn_start);
        }
        turn_start = t;
        let mut work = 0u64;
        for job in jobs.iter_mut() {
            if !job.free.is_empty() && !job.dead && budget > 0 {
                let now = clock.now();
                // Jobs on metadata namespaces have their own compiled
                // path: a branch per job and turn, not per I/O.
                let n = if job.pi.is_some() {
                    submit_batch::<T, V, R, M, S, true>(job, now, cx, budget)
                } else {
                    submit_batch::<T, V, R, M, S, false>(job, now, cx, budget)
                };
                budget -= n;
                work += n;
                job.qp.ring_doorbell();
            }
            let row = &mut rows[job.row];
            work += if job.pi.is_some() {
                reap::<T, V, M, true, S, true>(job, row, cx, clock)
            } else {
                reap::<T, V, M, true, S, false>(job, row, cx, clock)
            } as u64;
        }
        if cx.fatal.is_some() && !stop_sent {
            stop_sent = true;
            ctl.advance(PHASE_STOP);
        }
        // Deadlines are judged after reaping, so a completion already in
        // the queue is never taken for a timeout.
        if t >= next_scan {
            next_scan = t.saturating_add(p.scan_ticks);
            if scan(jobs) {
                // Every controller this worker drives is gone.
                break;
            }
        }
        last_busy = work > 0;
        if work > 0 {
            out.busy += 1;
            idle_run = 0;
        } else {
            out.idle += 1;
            if plan.yield_when_idle {
                idle_run += 1;
                if idle_run >= YIELD_AFTER_IDLE {
                    idle_run = 0;
                    std::thread::yield_now();
                }
            }
        }
        progress.store(cx.completed, Ordering::Relaxed);
        if cx.completed >= stop_at {
            break;
        }
    }
    out.end = clock.now();
    out
}

/// Reap until nothing is in flight (or `deadline` passes), checking data,
/// failures and deadlines; performance is no longer counted.
pub(crate) fn drain<T: CommandTransport>(
    jobs: &mut [Job<T>],
    rows: &mut [RowStats],
    cx: &mut Ctx<'_>,
    plan: &WorkerPlan,
    deadline: Instant,
) {
    let clock = cx.p.clock;
    let mut turns = 0u32;
    loop {
        if jobs.iter().all(|j| j.qp.outstanding() == 0) {
            break;
        }
        let mut n = 0;
        for job in jobs.iter_mut() {
            // No latency is recorded any more; failures and data still are
            // checked.
            let row = &mut rows[job.row];
            n += match (cx.p.verify, job.split.is_some(), job.pi.is_some()) {
                (true, true, _) => {
                    reap::<T, true, MIX_BOTH, false, true, false>(job, row, cx, clock)
                }
                (true, false, _) => {
                    reap::<T, true, MIX_BOTH, false, false, false>(job, row, cx, clock)
                }
                (false, true, _) => {
                    reap::<T, false, MIX_BOTH, false, true, false>(job, row, cx, clock)
                }
                (false, false, false) => {
                    reap::<T, false, MIX_BOTH, false, false, false>(job, row, cx, clock)
                }
                (false, false, true) => {
                    reap::<T, false, MIX_BOTH, false, false, true>(job, row, cx, clock)
                }
            };
        }
        turns = turns.wrapping_add(1);
        if turns.is_multiple_of(256) {
            if Instant::now() > deadline {
                break;
            }
            scan(jobs);
        }
        if n == 0 {
            if plan.yield_when_idle {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Check the deadlines of every queue pair; true when every job's
/// controller is gone (removed or failed) and nothing is in flight on it.
#[cold]
#[inline(never)]
pub(crate) fn scan<T: CommandTransport>(jobs: &mut [Job<T>]) -> bool {
    let now = Instant::now();
    let mut all_dead = true;
    for job in jobs.iter_mut() {
        job.qp.check_timeouts(now);
        all_dead &= job.dead && job.qp.outstanding() == 0;
    }
    all_dead
}

/// Submit on free slots until none is left or `budget` is used; how many
/// were submitted.
#[inline(always)]
fn submit_batch<
    T: CommandTransport,
    const V: bool,
    const R: u8,
    const M: u8,
    const S: bool,
    const PI: bool,
>(
    job: &mut Job<T>,
    now: u64,
    cx: &mut Ctx<'_>,
    budget: u64,
) -> u64 {
    let n = (job.free.len() as u64).min(budget);
    // A plain down-count: cheaper per I/O than a range iterator.
    let mut left = n;
    while left > 0 {
        if !submit::<T, V, R, M, S, PI>(job, now, cx) {
            break;
        }
        left -= 1;
    }
    n - left
}

/// Pick an offset and direction and submit them on a free slot with its
/// buffer; false when it was refused (the job is then dead, or the run has
/// a fatal error; the slot is free again).
#[inline(always)]
fn submit<
    T: CommandTransport,
    const V: bool,
    const R: u8,
    const M: u8,
    const S: bool,
    const PI: bool,
>(
    job: &mut Job<T>,
    now: u64,
    cx: &mut Ctx<'_>,
) -> bool {
    let read = match M {
        MIX_READ => true,
        MIX_WRITE => false,
        _ => cx.rng.next_u64() < cx.read_below,
    };
    let mut unit = match R {
        OFF_UNIFORM => cx.rng.below(job.units),
        OFF_ZIPF => match &job.zipf {
            Some(z) => z.sample(cx.rng.next_u64()),
            None => cx.rng.below(job.units),
        },
        _ => {
            let u = job.seq;
            job.seq = if u + 1 == job.units { 0 } else { u + 1 };
            u
        }
    };
    // Taken from the free list only now, right before the driver takes it:
    // popped earlier, the buffer was copied to the stack and again into the
    // call (`submit_batch` never asks for more than the list holds).
    let Some((slot, mut buf)) = job.free.pop() else {
        return false;
    };
    let mut generation = GEN_NONE;
    let mut prev = GEN_NONE;
    if V {
        (unit, generation, prev) = verify_submit(job, unit, read, &mut buf, cx);
    }
    let lba = job.start_lba + unit * job.blocks;
    let r = if PI && let Some(pi) = job.pi.as_deref_mut() {
        pi.submit(&mut job.qp, &job.ns, lba, buf, slot, read, cx.p.fua)
    } else if read {
        job.qp.read(&job.ns, lba, buf, slot as u64)
    } else {
        job.qp.write(&job.ns, lba, buf, cx.p.fua, slot as u64)
    };
    let r = match r {
        Err(e) if S => split_retry(job, lba, read, cx.p.fua, slot as u64, e),
        r => r,
    };
    match r {
        Ok(()) => {
            // Completions are reaped only after this returns: the slot is
            // filled in before anything reads it.
            let s = &mut job.slots[slot as usize];
            s.start = now;
            s.unit = unit;
            // What only verify or a mixed workload reads back is stored
            // only then.
            if V {
                s.generation = generation;
            }
            if V || M == MIX_BOTH {
                s.read = read;
            }
            true
        }
        Err(e) => refused(job, slot, unit, prev, read, e, cx),
    }
}

/// The verify side of a submission: never two I/Os on one unit, writes
/// carry the next generation. Returns (unit, generation, previous generation).
#[inline(never)]
fn verify_submit<T: CommandTransport>(
    job: &mut Job<T>,
    mut unit: u64,
    read: bool,
    buf: &mut DmaBuf,
    cx: &mut Ctx<'_>,
) -> (u64, u32, u32) {
    while job.gens[unit as usize] & GEN_BUSY != 0 {
        unit = if unit + 1 == job.units { 0 } else { unit + 1 };
    }
    let g = &mut job.gens[unit as usize];
    let prev = *g;
    let generation = if read {
        *g
    } else {
        let next = if *g + 1 >= GEN_UNKNOWN { 1 } else { *g + 1 };
        *g = next;
        pattern::fill(
            &mut cx.scratch,
            job.start_lba + unit * job.blocks,
            job.ns.block_size() as usize,
            cx.p.seed,
            next,
        );
        buf.write_at(0, &cx.scratch);
        next
    };
    *g |= GEN_BUSY;
    (unit, generation, prev)
}

#[cold]
#[inline(never)]
fn refused<T: CommandTransport>(
    job: &mut Job<T>,
    slot: u32,
    unit: u64,
    prev: u32,
    read: bool,
    mut e: nvme_engine::SubmitError,
    cx: &mut Ctx<'_>,
) -> bool {
    if let Some(pi) = job.pi.as_deref_mut() {
        pi.refused(slot, &mut e);
    }
    match e.buf {
        Some(buf) => job.free.push((slot, buf)),
        None => cx.lost_buffers += 1,
    }
    if cx.p.verify {
        // Nothing reached the device: the unit keeps its contents.
        job.gens[unit as usize] = prev;
    }
    if matches!(e.kind, SubmitErrorKind::Gone(_)) {
        job.dead = true;
        cx.refused += 1;
        return false;
    }
    let lba = job.start_lba + unit * job.blocks;
    let op = if read { "read" } else { "write" };
    let f = failed(job, op, lba, format!("submission refused: {}", e.kind));
    cx.fatal.get_or_insert(f);
    false
}

fn failed<T: CommandTransport>(
    job: &Job<T>,
    op: &'static str,
    lba: u64,
    reason: String,
) -> FailedIo {
    FailedIo {
        device: job.device.clone(),
        nsid: job.ns.id(),
        op,
        lba,
        blocks: job.blocks,
        reason,
    }
}

/// Reap up to a queue depth's worth of completions of `job`. The clock is
/// read once per call, before the completion queue is looked at: every
/// completion of the batch shares that time stamp.
#[inline(always)]
fn reap<
    T: CommandTransport,
    const V: bool,
    const M: u8,
    const REC: bool,
    const S: bool,
    const PI: bool,
>(
    job: &mut Job<T>,
    row: &mut RowStats,
    cx: &mut Ctx<'_>,
    clock: Clock,
) -> usize {
    let Job {
        qp,
        ns,
        device,
        start_lba,
        blocks,
        slots,
        free,
        gens,
        split,
        pi,
        ..
    } = job;
    let at = Where {
        device,
        ns,
        start_lba: *start_lba,
        blocks: *blocks,
    };
    let max = cx.p.max_completions;
    let now = clock.now();
    // Inlined into the driver's loop: no call and no copy of the
    // completion per I/O. A `move` closure holds the time stamp itself,
    // not a pointer to it that each completion loads first.
    let (at, ctx) = (&at, &mut *cx);
    // The slot table as a slice: the closure holds its address and length,
    // not a pointer to the vector that each completion loads them through.
    let slots: &[Slot] = slots;
    macro_rules! on_each {
        () => {
            #[inline(always)]
            move |c| complete::<V, M, REC, PI>(c, slots, free, gens, pi, row, ctx, at, now)
        };
    }
    // A job whose I/Os are split reaps through its splitter, which answers
    // each I/O once after its last command; `n` counts I/Os either way.
    let n = if !S {
        qp.process_completions(max, on_each!())
    } else if let Some(sp) = split {
        let mut ios = 0;
        let each = &mut |c| complete::<V, M, REC, PI>(c, slots, free, gens, pi, row, ctx, at, now);
        sp.process_completions(qp, max, |c| {
            ios += 1;
            each(c)
        });
        ios
    } else {
        qp.process_completions(max, on_each!())
    };
    cx.completed += n as u64;
    n
}

/// What a failure report needs to name the I/O.
struct Where<'a> {
    device: &'a String,
    ns: &'a Namespace,
    start_lba: u64,
    blocks: u64,
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn complete<const V: bool, const M: u8, const REC: bool, const PI: bool>(
    mut c: IoCompletion,
    slots: &[Slot],
    free: &mut FreeList,
    gens: &mut [u32],
    pi: &mut Option<Box<JobProtection>>,
    row: &mut RowStats,
    cx: &mut Ctx<'_>,
    at: &Where<'_>,
    now: u64,
) {
    let slot = &slots[c.token as usize];
    if PI && let Some(pi) = pi.as_deref_mut() {
        let read = if V || M == MIX_BOTH {
            slot.read
        } else {
            M == MIX_READ
        };
        if !protected_complete(pi, &mut c, slot, read, free, row, cx, at) {
            return;
        }
    }
    let Some(buf) = c.buf else {
        // Read and write always hand their buffer back; should one not,
        // the slot is retired rather than reused without a buffer.
        cx.lost_buffers += 1;
        return;
    };
    // The buffer goes back to the free list first (after a read is
    // checked), straight from the registers it was loaded into.
    if V && c.result.is_ok() {
        verify_complete(slot, &buf, gens, row, cx, at);
    }
    free.push((c.token as u32, buf));
    match c.result {
        Ok(_) => {
            // Latencies recorded in warm-up are dropped when measuring
            // starts; the drain after the run records none.
            if REC {
                row.record(now.wrapping_sub(slot.start));
                if M == MIX_BOTH {
                    row.reads += slot.read as u64;
                }
            }
        }
        Err(e) => {
            let read = if V || M == MIX_BOTH {
                slot.read
            } else {
                M == MIX_READ
            };
            failure(slot, read, gens, row, cx, at, e)
        }
    }
}
