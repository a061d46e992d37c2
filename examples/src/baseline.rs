//! The reference a reactor-path latency is read against: the same FUA
//! writes, one at a time, in direct mode on the calling thread (the
//! application owns the queue pair; no ring, no reactor thread).
//!
//! With the inline built-in device the doorbell write executes the
//! command, so timing it apart splits a direct-mode I/O into the device's
//! work and the engine's (building the command, reaping the completion).

use std::time::Instant;

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use nvme_engine::Device;
use nvme_engine::{Controller, QueuePairOptions};
use nvme_reactor::{DirectQueue, DirectSubmit, Request};

/// Latencies of direct-mode QD1 FUA writes, in nanoseconds.
pub struct Baseline {
    /// Submit to completion reaped, per write.
    pub total: Histogram<u64>,
    /// The doorbell write alone (the device's work with the inline
    /// device), from a separate pass; `None` unless asked for.
    pub doorbell: Option<Histogram<u64>>,
    /// The rest of each I/O of that pass (building and submitting the
    /// command, reaping its completion): the engine's part.
    pub engine: Option<Histogram<u64>>,
}

/// A histogram for latencies from 1 ns to 60 s.
pub fn histogram() -> Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000_000, 3)?)
}

/// Write `count` records of `record_bytes` (each `fill`ed first, outside
/// the timing) at LBAs `i * lba_step` of namespace `nsid`, one at a time,
/// after `warmup` untimed ones: an untimed pass over all of them first,
/// then a timed one. With `split_doorbell`, a further pass times the
/// doorbell write apart (its extra clock reads would otherwise inflate the
/// totals).
#[allow(clippy::too_many_arguments, reason = "one call site, all plain values")]
pub fn direct_qd1_writes<D: Device>(
    controller: &Controller<D>,
    nsid: u32,
    lba_step: u64,
    record_bytes: usize,
    warmup: u64,
    count: u64,
    split_doorbell: bool,
    mut fill: impl FnMut(u64, &mut [u8]),
) -> Result<Baseline> {
    let pool = record_bytes.next_power_of_two().max(2 << 20);
    let mut q = DirectQueue::new(controller, QueuePairOptions::default(), pool)
        .context("creating a direct-mode queue pair for the baseline")?;
    let mut buf = Some(q.alloc(record_bytes)?);
    let mut scratch = vec![0u8; record_bytes];
    let mut total = histogram()?;
    let (mut doorbell, mut engine) = if split_doorbell {
        (Some(histogram()?), Some(histogram()?))
    } else {
        (None, None)
    };
    // Pass 0 is untimed: it touches every block once, so that neither the
    // timed passes nor the journal after them pay for first-touch page
    // faults in the device's memory (the emulator's RAM namespace).
    let passes = if split_doorbell { 3 } else { 2 };
    for pass in 0..passes {
        for i in 0..warmup + count {
            fill(i, &mut scratch);
            let mut b = buf.take().context("buffer not returned")?;
            b.write_at(0, &scratch);
            let req = Request::write(0, nsid, i * lba_step, b, true, i);
            let t0 = Instant::now();
            if let Err(e) = q.submit(req) {
                match e {
                    DirectSubmit::QueueFull(_) => bail!("the baseline queue is full at depth 1"),
                    DirectSubmit::Failed(r) => bail!("baseline write {i} refused: {:?}", r.result),
                }
            }
            let rung = if pass == 2 {
                let t = Instant::now();
                q.queue_pair().ring_doorbell();
                Some((t, Instant::now()))
            } else {
                None
            };
            let mut done = None;
            while done.is_none() {
                q.poll(1, |r| done = Some(r));
            }
            let t3 = Instant::now();
            let r = done.context("no completion")?;
            r.result
                .with_context(|| format!("baseline write {i} failed"))?;
            buf = r.buf;
            if i < warmup || pass == 0 {
                continue;
            }
            match (rung, doorbell.as_mut(), engine.as_mut()) {
                (Some((t1, t2)), Some(d), Some(e)) => {
                    d.record((t2 - t1).as_nanos().max(1) as u64)?;
                    e.record(((t1 - t0) + (t3 - t2)).as_nanos().max(1) as u64)?;
                }
                _ => total.record((t3 - t0).as_nanos().max(1) as u64)?,
            }
        }
    }
    if let Some(b) = buf {
        q.free(b)?;
    }
    let left = q
        .delete()
        .map_err(|e| anyhow::anyhow!("deleting the baseline queue pair: {e}: {}", e.source))?;
    if !left.is_empty() {
        bail!("{} baseline writes were still outstanding", left.len());
    }
    Ok(Baseline {
        total,
        doorbell,
        engine,
    })
}
