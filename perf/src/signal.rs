//! Ctrl-C (SIGINT) and SIGTERM end the run early but still print the
//! report, like `spdk_nvme_perf`: the handler only stores a flag that the
//! main thread's pacing loop reads.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // An atomic store is async-signal-safe.
    STOP_REQUESTED.store(true, Ordering::Relaxed);
}

/// Install the handlers (a second signal kills the process as usual,
/// because `SA_RESETHAND` restores the default action after the first).
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `sa` is fully initialised (zeroed, then handler, flags and
        // an empty mask set) before sigaction reads it; the handler only
        // performs an atomic store, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESETHAND | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Whether a stop was requested by a signal.
pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::Relaxed)
}
