//! Recovery: after the reactors are gone, reopen the journal in direct
//! mode (a queue pair of this thread's own, as a program does at start-up
//! before it serves) and check every committed record reads back as
//! written.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use nvme_reactor::{Attach, DirectQueue, DirectSubmit, Request};

use crate::ledger::{Params, encode};

/// Read back the records `committed` names, `window` at a time; returns
/// how many did not read back as committed.
pub fn read_back<A: Attach>(
    controller: &A::Handle,
    params: Params,
    committed: &[u64],
    window: usize,
) -> Result<u64> {
    let pool = (params.record_bytes.next_power_of_two() * (window + 1)).next_multiple_of(2 << 20);
    let mut q = DirectQueue::<A>::create(controller, None, pool)
        .context("creating a queue pair to read the journal back")?;
    let mut scratch = vec![0u8; params.record_bytes];
    let (mut next, mut checked, mut in_flight, mut bad) = (0usize, 0usize, 0usize, 0u64);
    let mut read = Vec::with_capacity(window);
    let mut idle = 0u32;
    while checked < committed.len() {
        while next < committed.len() && in_flight < window {
            let seq = committed[next];
            let buf = q.alloc(params.record_bytes)?;
            let req = Request::read(0, params.nsid, seq * params.blocks_per_record, buf, seq);
            match q.submit(req) {
                Ok(()) => {
                    next += 1;
                    in_flight += 1;
                }
                Err(DirectSubmit::QueueFull(r)) => {
                    if let Some(b) = r.buf {
                        q.free(b)?;
                    }
                    break;
                }
                Err(DirectSubmit::Failed(r)) => {
                    bail!("reading record {seq} back was refused: {:?}", r.result)
                }
            }
        }
        if q.poll(window, |r| read.push(r)) == 0 {
            idle = idle.wrapping_add(1);
            if idle.is_multiple_of(4096) {
                // A lost completion is timed out and answered.
                q.check_timeouts(Instant::now());
            }
        }
        for r in read.drain(..) {
            in_flight -= 1;
            checked += 1;
            let buf = r.buf.context("read buffer not returned")?;
            encode(r.token, &mut scratch);
            if r.result.is_err() || buf.to_vec() != scratch {
                bad += 1;
                if bad <= 5 {
                    eprintln!("record {} does not read back as committed", r.token);
                }
            }
            q.free(buf)?;
        }
    }
    let left = q
        .delete()
        .map_err(|e| anyhow::anyhow!("deleting the read-back queue pair: {e}: {}", e.source))?;
    if !left.is_empty() {
        bail!("{} read-back commands were still outstanding", left.len());
    }
    Ok(bad)
}
