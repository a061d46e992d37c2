//! A user's hold on a controller: what [`crate::Controller`] handles and
//! queue pairs keep, counted apart from the admin worker's.
//!
//! The admin worker reaches the controller through a weak reference that it
//! upgrades for the length of one job (an Abort, a reset, an event's log
//! page). Without this count, the application dropping its last handle
//! during such a job would leave the worker holding the last strong
//! reference: the drop would return at once and the teardown (shutdown,
//! CC.EN = 0, releasing the queues) would run later on the worker, after
//! the process may have exited. The last user hold to go stops the worker
//! first — waiting for the job it is running — so the teardown runs on the
//! thread that dropped it, before that drop returns.

#![forbid(unsafe_code)]

use std::ops::Deref;
use std::sync::Arc;

use crate::device::Device;

use super::Inner;

/// A counted strong reference to a controller's shared state.
pub(crate) struct UserHold<D: Device> {
    inner: Arc<Inner<D>>,
}

impl<D: Device> UserHold<D> {
    /// Count a new user of `inner`.
    pub(crate) fn new(inner: Arc<Inner<D>>) -> Self {
        inner.user_arrived();
        UserHold { inner }
    }
}

impl<D: Device> Clone for UserHold<D> {
    fn clone(&self) -> Self {
        UserHold::new(Arc::clone(&self.inner))
    }
}

impl<D: Device> Deref for UserHold<D> {
    type Target = Inner<D>;

    fn deref(&self) -> &Inner<D> {
        &self.inner
    }
}

impl<D: Device> Drop for UserHold<D> {
    fn drop(&mut self) {
        if self.inner.user_left() {
            // The last user: the worker finishes its job and lets go, so
            // the `Arc` dropped right after this is the last one.
            self.inner.stop_admin_worker();
        }
    }
}
