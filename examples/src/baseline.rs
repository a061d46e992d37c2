//! The reference a reactor-path latency is read against: the same FUA
//! writes, one at a time, in direct mode on the calling thread (the
//! application owns the queue pair; no ring, no reactor thread).
//!
//! A further pass takes each direct-mode I/O apart with clock reads
//! between its steps: building and submitting the command, the SQ Tail
//! Doorbell write, the wait until its completion entry is seen, and
//! handing the completion back. With the inline built-in device the
//! doorbell write executes the command (it is the device's time); on a
//! real controller, or a device thread, the device's time is the wait
//! after it (plus at most one turn of the polling loop).

use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use hdrhistogram::Histogram;
use nvme_engine::dma::DmaBuf;
use nvme_reactor::{Attach, AttachError};

/// Latencies of direct-mode QD1 FUA writes, in nanoseconds.
pub struct Baseline {
    /// Submit to completion handed back, per write (a pass without the
    /// extra clock reads of `steps`).
    pub total: Histogram<u64>,
    /// The same writes taken apart, from a separate pass.
    pub steps: Steps,
}

/// One direct-mode I/O taken apart (nanoseconds per step).
pub struct Steps {
    /// Building the command and putting it on the submission queue.
    pub submit: Histogram<u64>,
    /// The SQ Tail Doorbell write.
    pub doorbell: Histogram<u64>,
    /// From the doorbell written to the completion entry seen: the
    /// device's time, plus at most one turn of the polling loop.
    pub device: Histogram<u64>,
    /// From the completion entry seen to the response in the
    /// application's hands.
    pub reap: Histogram<u64>,
}

/// A histogram for latencies from 1 ns to 60 s.
pub fn histogram() -> Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000_000, 3)?)
}

fn ns_of(d: std::time::Duration) -> u64 {
    d.as_nanos().max(1) as u64
}

/// Write `count` records of `record_bytes` at LBAs `i * lba_step` of
/// namespace `nsid`, one at a time, after `warmup` untimed ones: an untimed
/// pass over all of them first, then a timed one, then one timed step by
/// step. `fill` builds record `i` in place in the DMA buffer (outside the
/// timing). The queue pair is driven directly, as an application that owns
/// it would (the same path as nvme-perf's QD1 writes): no request or
/// response structure in between, the record's token is its index.
#[inline(never)]
pub fn direct_qd1_writes<A: Attach>(
    controller: &A::Handle,
    nsid: u32,
    lba_step: u64,
    record_bytes: usize,
    (warmup, count): (u64, u64),
    mut fill: impl FnMut(u64, &mut DmaBuf),
) -> Result<Baseline> {
    let ns = A::namespace(controller, nsid)
        .with_context(|| format!("namespace {nsid} is not active"))?;
    let pool_bytes = record_bytes.next_power_of_two().max(2 << 20);
    let mut pool = A::create_pool(controller, pool_bytes)
        .map_err(|e| anyhow!(Into::<AttachError>::into(e)))
        .context("creating a DMA pool for the direct-mode baseline")?;
    let mut qp = A::create_queue(controller, None, &mut pool)
        .map_err(|e| anyhow!(Into::<AttachError>::into(e)))
        .context("creating a direct-mode queue pair for the baseline")?;
    let mut buf = Some(pool.alloc(record_bytes)?);
    let mut total = histogram()?;
    let mut steps = Steps {
        submit: histogram()?,
        doorbell: histogram()?,
        device: histogram()?,
        reap: histogram()?,
    };
    // Pass 0 is untimed: it touches every block once, so that neither the
    // timed passes nor the journal after them pay for first-touch page
    // faults in the device's memory (the emulator's RAM namespace).
    for pass in 0..3 {
        for i in 0..warmup + count {
            let mut b = buf.take().context("buffer not returned")?;
            fill(i, &mut b);
            let t0 = Instant::now();
            if let Err(e) = qp.write(ns, i * lba_step, b, true, i) {
                bail!("baseline write {i} refused: {e}");
            }
            let rung = if pass == 2 {
                let t1 = Instant::now();
                qp.ring_doorbell();
                Some((t1, Instant::now()))
            } else {
                None
            };
            let mut done = None;
            let mut seen = None;
            let mut idle = 0u32;
            while done.is_none() {
                // Rings the doorbell first if it was not rung above.
                let n = qp.process_completions(1, |c| {
                    seen = rung.map(|_| Instant::now());
                    done = Some(c);
                });
                if n == 0 {
                    idle = idle.wrapping_add(1);
                    if idle.is_multiple_of(4096) {
                        // A lost completion is timed out and answered.
                        qp.check_timeouts(Instant::now());
                    }
                }
            }
            let t4 = Instant::now();
            let c = done.context("no completion")?;
            buf = c.buf;
            c.result
                .with_context(|| format!("baseline write {i} failed"))?;
            if i < warmup || pass == 0 {
                continue;
            }
            match (rung, seen) {
                (Some((t1, t2)), Some(t3)) => {
                    steps.submit.record(ns_of(t1 - t0))?;
                    steps.doorbell.record(ns_of(t2 - t1))?;
                    steps.device.record(ns_of(t3 - t2))?;
                    steps.reap.record(ns_of(t4 - t3))?;
                }
                _ => total.record(ns_of(t4 - t0))?,
            }
        }
    }
    if let Some(b) = buf {
        pool.free(b)?;
    }
    let left = qp.outstanding();
    qp.delete().context("deleting the baseline's queue pair")?;
    if left > 0 {
        bail!("{left} baseline writes were still outstanding");
    }
    Ok(Baseline { total, steps })
}
