//! The device thread of threaded mode: polls doorbells like a controller's
//! front end, runs rounds of command processing, and backs off when idle
//! according to the configured [`IdlePolicy`].
//!
//! An idle poll takes no lock and touches no line the host does not already
//! share with the device: the thread compares every existing queue's two
//! doorbells, and the host's state-change count, with a snapshot taken just
//! before its last round. Only when one moved, or the last round did work (a
//! queue may hold more than one round's batch), or completions wait for a
//! number of rounds, does it take the device lock and run a round. A doorbell
//! cannot return to its snapshot value without the device consuming entries
//! in between (a ring holds at most size - 1 new entries), so no change is
//! missed.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::thread::JoinHandle;

use crate::config::{EmuError, IdlePolicy};
use crate::shared::Shared;

/// Start the device thread, pinned to `core` when one is given. It exits
/// when `shared.stop` is set.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    idle: IdlePolicy,
    batch: u32,
    core: Option<usize>,
) -> Result<JoinHandle<()>, EmuError> {
    let name = format!("{}-device", shared.state.name);
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            // Only CPUs in the affinity set can be pinned to (checked there).
            let pinned = core.is_none_or(|id| nvme_engine::cpu::pin_current_thread(id).is_ok());
            let _ = tx.send(pinned);
            if pinned {
                run(&shared, idle, batch);
            }
        })
        .map_err(EmuError::Thread)?;
    // The thread always answers before it does anything else; a closed
    // channel means it died, which counts as not pinned.
    if rx.recv().unwrap_or(false) {
        Ok(handle)
    } else {
        let _ = handle.join();
        Err(EmuError::Pin {
            core: core.unwrap_or(usize::MAX),
        })
    }
}

/// The doorbell values and state-change count a round started from.
struct Snapshot {
    doorbells: Vec<(u32, u32)>,
    pokes: u64,
    /// No round has run yet.
    fresh: bool,
}

impl Snapshot {
    fn new(queues: usize) -> Self {
        Snapshot {
            doorbells: vec![(0, 0); queues],
            pokes: 0,
            fresh: true,
        }
    }

    /// Whether anything differs from the snapshot.
    fn changed(&self, sh: &Shared) -> bool {
        // Shadow doorbells change in host memory without an MMIO write:
        // only a round (which reads them) can tell.
        if self.fresh || sh.pokes() != self.pokes || sh.state.shadow_doorbells() {
            return true;
        }
        let n = sh.state.queue_bound();
        // Relaxed: only a hint; the round that follows a change loads the
        // doorbells with acquire under the lock.
        sh.state.doorbells[..n]
            .iter()
            .zip(&self.doorbells)
            .any(|(db, &(t, h))| {
                db.sq_tail.load(Ordering::Relaxed) != t || db.cq_head.load(Ordering::Relaxed) != h
            })
    }

    /// Record the current values, just before a round (which then sees
    /// these or newer ones).
    fn take(&mut self, sh: &Shared) {
        self.fresh = false;
        self.pokes = sh.pokes();
        let n = sh.state.queue_bound();
        for (db, s) in sh.state.doorbells[..n]
            .iter()
            .zip(self.doorbells.iter_mut())
        {
            *s = (
                db.sq_tail.load(Ordering::Relaxed),
                db.cq_head.load(Ordering::Relaxed),
            );
        }
    }
}

/// Take a snapshot and run a round: (work done, more rounds needed).
/// `armed`: the round before parking, which asks for MMIO doorbells.
fn round(sh: &Shared, snap: &mut Snapshot, batch: u32, armed: bool) -> (usize, bool) {
    snap.take(sh);
    let (work, pending) = sh.poll_round(batch, armed);
    (work, work > 0 || pending)
}

fn run(sh: &Shared, idle: IdlePolicy, batch: u32) {
    let _ = sh.poller.set(std::thread::current());
    let mut idle_rounds: u32 = 0;
    let mut snap = Snapshot::new(sh.state.doorbells.len());
    let mut again = true;
    while !sh.stop.load(Ordering::Acquire) {
        if again || snap.changed(sh) {
            let (work, more) = round(sh, &mut snap, batch, false);
            again = more;
            if work > 0 {
                idle_rounds = 0;
                continue;
            }
        }
        idle_rounds = idle_rounds.saturating_add(1);
        match idle {
            IdlePolicy::Spin => std::hint::spin_loop(),
            IdlePolicy::Backoff {
                spin_polls,
                yield_polls,
                sleep,
            } => {
                if idle_rounds <= spin_polls {
                    std::hint::spin_loop();
                } else if idle_rounds <= spin_polls.saturating_add(yield_polls) {
                    std::thread::yield_now();
                } else {
                    sh.sleeping.store(true, Ordering::Relaxed);
                    // Pairs with the fence in the doorbell write: a doorbell
                    // stored before this point is seen by the round below, one
                    // stored after sees `sleeping` and unparks us.
                    fence(Ordering::SeqCst);
                    // Armed: EventIdx values ask for MMIO doorbells, whose
                    // writes see `sleeping` and unpark this thread.
                    let (work, more) = round(sh, &mut snap, batch, true);
                    again = more;
                    if work == 0 && !sh.stop.load(Ordering::Acquire) {
                        std::thread::park_timeout(sleep);
                    } else {
                        idle_rounds = 0;
                    }
                    sh.sleeping.store(false, Ordering::Relaxed);
                }
            }
        }
    }
}
