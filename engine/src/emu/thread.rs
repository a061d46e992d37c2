//! The device thread of threaded mode: polls doorbells like a controller's
//! front end, runs rounds of command processing, and backs off when idle
//! according to the configured [`IdlePolicy`].

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::thread::JoinHandle;

use super::config::IdlePolicy;
use super::controller::Shared;

/// Start the device thread. It exits when `shared.stop` is set.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    idle: IdlePolicy,
    batch: u32,
) -> std::io::Result<JoinHandle<()>> {
    let name = format!("{}-device", shared.name);
    let handle = std::thread::Builder::new()
        .name(name)
        .spawn(move || run(&shared, idle, batch))?;
    Ok(handle)
}

fn run(sh: &Shared, idle: IdlePolicy, batch: u32) {
    let _ = sh.poller.set(std::thread::current());
    let mut idle_rounds: u32 = 0;
    while !sh.stop.load(Ordering::Acquire) {
        if sh.poll_round(batch) > 0 {
            idle_rounds = 0;
            continue;
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
                    if sh.poll_round(batch) == 0 && !sh.stop.load(Ordering::Acquire) {
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
