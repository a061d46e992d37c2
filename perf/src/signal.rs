//! Ctrl-C (SIGINT) and SIGTERM end the run early but still print the
//! report, like `spdk_nvme_perf`: the handler (signal-hook's) only sets a
//! flag that the main thread's pacing loop reads. A second signal, once the
//! flag is set, takes the default action and ends the process at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;

static STOP_REQUESTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Install the handlers.
pub fn install() -> Result<()> {
    let stop = STOP_REQUESTED.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for sig in [SIGINT, SIGTERM] {
        // Registered first, so the first signal finds the flag still clear
        // and only the second one restores the default action.
        flag::register_conditional_default(sig, Arc::clone(stop))
            .and_then(|_| flag::register(sig, Arc::clone(stop)))
            .with_context(|| format!("installing the handler of signal {sig}"))?;
    }
    Ok(())
}

/// Whether a stop was requested by a signal.
pub fn stop_requested() -> bool {
    STOP_REQUESTED
        .get()
        .is_some_and(|s| s.load(Ordering::Relaxed))
}
