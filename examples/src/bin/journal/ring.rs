//! Ring mode: the commit loop runs on the application's own thread and
//! reaches the reactor through its SPSC rings (request ring → reactor →
//! NVMe queue; completion → reactor → response ring). The model for a
//! program with a core of its own for the application and one for the
//! reactor; on a shared core every commit waits for the scheduler twice.

use std::time::Instant;

use anyhow::{Result, bail};
use nvme_reactor::{Producer, Request};

use crate::ledger::{Commits, Ledger, Params, encode_into};

/// Commit `params.records` records through `p`; `shared` when this thread
/// shares its core with the reactor (it then yields while it waits).
pub fn commit(p: &mut Producer, params: Params, shared: bool) -> Result<Commits> {
    let mut ledger = Ledger::new(params)?;
    let mut done = Vec::with_capacity(params.depth);
    while !ledger.is_done() {
        while let Some((seq, lba)) = ledger.next_record() {
            let mut buf = p.alloc(params.record_bytes)?;
            // Built in place in the DMA buffer.
            if !encode_into(seq, &mut buf) {
                bail!(
                    "a {}-byte record has no room for its header",
                    params.record_bytes
                );
            }
            let at = Instant::now();
            match p.try_submit(Request::write(0, params.nsid, lba, buf, true, seq)) {
                Ok(()) => ledger.submitted(seq, at),
                Err(rejected) => {
                    if let Some(b) = rejected.request.buf {
                        p.free(b)?;
                    }
                    if p.is_closing() {
                        ledger.stop();
                    }
                    break;
                }
            }
        }
        if p.poll_completions(|r| done.push((Instant::now(), r))) == 0 {
            if shared {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        for (now, r) in done.drain(..) {
            ledger.answered(now, r.token, &r.result)?;
            if let Some(b) = r.buf {
                p.free(b)?;
            }
        }
    }
    Ok(ledger.into_commits())
}
