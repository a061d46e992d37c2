//! Local mode: the commit loop runs on the reactor's own thread, as a
//! local poller (SPDK's model of an application that lives on its
//! reactor). It writes records from the reactor's DMA pool straight onto
//! the reactor's queue pair and collects the answers on a later turn of
//! the same loop: no ring, no second thread, no scheduler between a
//! commit and its answer. The program's main thread only waits for the
//! outcome, blocked. What a one-CPU machine wants: one spinning thread.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use nvme_reactor::{
    Attach, ContextError, LocalPoller, PollStatus, ReactorContext, Request, Response,
};

use crate::ledger::{Commits, Ledger, Params, encode_into};

/// A poller that commits `params.records` records on its reactor, and
/// where its outcome arrives once every record was answered.
pub fn poller<D: Attach>(params: Params) -> Result<(LocalPoller<D>, Receiver<Result<Commits>>)> {
    let (tx, rx) = channel();
    let mut state = Some(Local {
        ledger: Ledger::new(params)?,
        params,
        done: Vec::with_capacity(params.depth),
        tx,
    });
    let poller: LocalPoller<D> = Box::new(move |ctx| {
        let Some(s) = state.as_mut() else {
            return PollStatus::Idle;
        };
        match s.turn(ctx) {
            Ok(busy) if !s.ledger.is_done() => busy,
            outcome => {
                // Finished, or failed: hand the outcome over once and stay
                // registered as an idle poller.
                if let Some(s) = state.take() {
                    let Local { ledger, tx, .. } = s;
                    let _ = tx.send(outcome.map(|_| ledger.into_commits()));
                }
                PollStatus::Busy
            }
        }
    });
    Ok((poller, rx))
}

struct Local {
    ledger: Ledger,
    params: Params,
    done: Vec<(Instant, Response)>,
    tx: Sender<Result<Commits>>,
}

impl Local {
    /// One reactor turn's worth: collect answers, then submit what the
    /// window allows (the reactor rings the doorbell after its pollers).
    fn turn<D: Attach>(&mut self, ctx: &mut ReactorContext<'_, D>) -> Result<PollStatus> {
        if ctx.poll_completions(|r| self.done.push((Instant::now(), r))) > 0 {
            // One clock read per turn, not one per answer.
            if let Some(&(now, _)) = self.done.last() {
                for (_, r) in self.done.drain(..) {
                    self.ledger.answered(now, r.token, &r.result)?;
                    if let Some(b) = r.buf {
                        ctx.free(b)?;
                    }
                }
            }
        }
        let mut busy = PollStatus::Idle;
        while let Some((seq, lba)) = self.ledger.next_record() {
            let mut buf = ctx
                .alloc(0, self.params.record_bytes)
                .context("allocating a record from the reactor's DMA pool")?;
            // Built in place in the DMA buffer.
            if !encode_into(seq, &mut buf) {
                ctx.free(buf)?;
                return Err(anyhow!(
                    "a {}-byte record has no room for its header",
                    self.params.record_bytes
                ));
            }
            let at = Instant::now();
            match ctx.submit(Request::write(0, self.params.nsid, lba, buf, true, seq)) {
                Ok(()) => {
                    self.ledger.submitted(seq, at);
                    busy = PollStatus::Busy;
                }
                Err(rejected) => {
                    if let Some(b) = rejected.request.buf {
                        ctx.free(b)?;
                    }
                    match rejected.reason {
                        ContextError::NoCredit | ContextError::QueueFull => break,
                        ContextError::Closing => {
                            self.ledger.stop();
                            break;
                        }
                        e => return Err(anyhow!(e).context(format!("submitting record {seq}"))),
                    }
                }
            }
        }
        Ok(busy)
    }
}
