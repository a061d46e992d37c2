//! The pass a `--verify` run makes over its working set before it starts:
//! every I/O-sized unit is read and each block classified by its stamp
//! (see [`crate::pattern`]). A block must hold either contents not written
//! with this seed or one whole generation written with it for its own LBA —
//! never a torn, misplaced (foreign) or corrupt block; that is how a run
//! killed with SIGKILL (or a power cut) is checked afterwards. Units whose
//! generation is then known are checked by every later read; when the
//! workload writes, units without one are written now (pre-filled), so that
//! every read of the run is checked, not only reads of units the run happens
//! to have written.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use nvme_engine::IoCompletion;
use nvme_engine::dma::DmaBuf;

use crate::hot::{Ctx, Job};
use crate::pattern::{self, BlockState};
use crate::stats::{FailedIo, RowStats};
use crate::worker::{GEN_NONE, GEN_UNKNOWN};
use nvme_engine::transport::CommandTransport;

/// How often the pass checks command deadlines.
const SCAN_EVERY: Duration = Duration::from_millis(10);

#[derive(Clone, Copy)]
enum Step {
    Idle,
    Read(u64),
    Write(u64, u32),
}

/// Run the pass over `job`'s units, counting into its row.
pub fn run<T: CommandTransport>(job: &mut Job<T>, rows: &mut [RowStats], cx: &mut Ctx<'_>) {
    let row = &mut rows[job.row];
    let bs = job.ns.block_size() as usize;
    let mut steps = vec![Step::Idle; job.slots.len()];
    // The pass keeps buffers by slot; they go back to the free list after.
    let mut bufs: Vec<Option<DmaBuf>> = (0..job.slots.len()).map(|_| None).collect();
    let mut free: Vec<u32> = Vec::with_capacity(job.slots.len());
    while let Some((slot, buf)) = job.free.pop() {
        bufs[slot as usize] = Some(buf);
        free.push(slot);
    }
    let mut next = 0u64;
    let mut inflight = 0usize;
    let mut last_scan = Instant::now();
    let mut done: Vec<IoCompletion> = Vec::with_capacity(job.slots.len());
    loop {
        while next < job.units && !job.dead {
            let Some(slot) = free.pop() else { break };
            if !submit(job, &mut bufs, slot, Step::Read(next), &mut steps, cx) {
                free.push(slot);
                break;
            }
            next += 1;
            inflight += 1;
        }
        job.qp.ring_doorbell();
        if inflight == 0 && (next >= job.units || job.dead) {
            break;
        }
        job.qp
            .process_completions(job.slots.len(), |c| done.push(c));
        for c in done.drain(..) {
            let slot = c.token as u32;
            bufs[slot as usize] = c.buf;
            inflight -= 1;
            let step = std::mem::replace(&mut steps[slot as usize], Step::Idle);
            let follow = match (step, c.result) {
                (Step::Read(unit), Ok(_)) => {
                    after_read(job, bufs[slot as usize].as_ref(), unit, row, cx, bs)
                }
                (Step::Write(unit, g), Ok(_)) => {
                    job.gens[unit as usize] = g;
                    row.verify.prefilled += 1;
                    None
                }
                (Step::Read(unit) | Step::Write(unit, _), Err(e)) => {
                    job.gens[unit as usize] = GEN_UNKNOWN;
                    row.errors.record(&e);
                    if !cx.p.continue_on_error && cx.fatal.is_none() {
                        cx.fatal = Some(FailedIo {
                            device: job.device.clone(),
                            nsid: job.ns.id(),
                            op: "verify pass",
                            lba: job.start_lba + unit * job.blocks,
                            blocks: job.blocks,
                            reason: e.to_string(),
                        });
                    }
                    None
                }
                (Step::Idle, _) => None,
            };
            match follow {
                Some(step) if submit(job, &mut bufs, slot, step, &mut steps, cx) => inflight += 1,
                _ => free.push(slot),
            }
        }
        if cx.fatal.is_some() {
            next = job.units;
        }
        if last_scan.elapsed() >= SCAN_EVERY {
            last_scan = Instant::now();
            job.qp.check_timeouts(last_scan);
        }
    }
    // Back to the free list, lowest slot on top.
    for slot in (0..bufs.len()).rev() {
        if let Some(buf) = bufs[slot].take() {
            job.free.push((slot as u32, buf));
        }
    }
}

/// Classify the blocks of a unit just read; the write to pre-fill it, if
/// one is due.
fn after_read<T: CommandTransport>(
    job: &mut Job<T>,
    buf: Option<&DmaBuf>,
    unit: u64,
    row: &mut RowStats,
    cx: &mut Ctx<'_>,
    bs: usize,
) -> Option<Step> {
    let lba = job.start_lba + unit * job.blocks;
    if !buf?.read_at(0, &mut cx.scratch) {
        job.gens[unit as usize] = GEN_NONE;
        return None;
    }
    let mut uniform: Option<u32> = None;
    let mut whole = true;
    let mut newest = 0u32;
    for (b, block) in cx.scratch.chunks_exact(bs).enumerate() {
        let state = pattern::classify(block, lba + b as u64, cx.p.seed);
        row.verify.record_block(lba + b as u64, state);
        match state {
            BlockState::Stamped(g) if g != GEN_NONE && g < GEN_UNKNOWN => {
                newest = newest.max(g);
                if uniform.is_some_and(|u| u != g) {
                    whole = false;
                }
                uniform.get_or_insert(g);
            }
            _ => whole = false,
        }
    }
    if whole && let Some(g) = uniform {
        job.gens[unit as usize] = g;
        return None;
    }
    job.gens[unit as usize] = GEN_NONE;
    if !cx.p.verify_writes {
        return None;
    }
    let g = if newest + 1 >= GEN_UNKNOWN {
        1
    } else {
        newest + 1
    };
    Some(Step::Write(unit, g))
}

/// Submit `step` on `slot`; false when the controller refused (it is then
/// marked dead and the slot stays free).
fn submit<T: CommandTransport>(
    job: &mut Job<T>,
    bufs: &mut [Option<DmaBuf>],
    slot: u32,
    step: Step,
    steps: &mut [Step],
    cx: &mut Ctx<'_>,
) -> bool {
    let Some(mut buf) = bufs[slot as usize].take() else {
        return false;
    };
    let bs = job.ns.block_size() as usize;
    let r = match step {
        Step::Read(unit) => {
            job.qp
                .read(&job.ns, job.start_lba + unit * job.blocks, buf, slot as u64)
        }
        Step::Write(unit, g) => {
            let lba = job.start_lba + unit * job.blocks;
            pattern::fill(&mut cx.scratch, lba, bs, cx.p.seed, g);
            buf.write_at(0, &cx.scratch);
            job.qp.write(&job.ns, lba, buf, false, slot as u64)
        }
        Step::Idle => {
            bufs[slot as usize] = Some(buf);
            return false;
        }
    };
    match r {
        Ok(()) => {
            steps[slot as usize] = step;
            true
        }
        Err(e) => {
            bufs[slot as usize] = e.buf;
            job.dead = true;
            cx.refused += 1;
            false
        }
    }
}
