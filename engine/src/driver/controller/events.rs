//! The controller's asynchronous events as the application sees them
//! (NVMe Base 2.0 §5.2): the queue of [`ControllerEvent`]s or a callback
//! taking each as it is handled, their counters,
//! and the namespaces active now, which attach and detach notices keep up
//! to date. The requests and the log page reads are in `shared/events.rs`.

#![forbid(unsafe_code)]

use crate::device::Device;

use crate::driver::controller::Controller;
use crate::driver::events::{ControllerEvent, EventStats};
use crate::driver::namespace::Namespace;

impl<D: Device> Controller<D> {
    /// Take the events the controller reported since the last call, oldest
    /// first (empty when there were none). The driver has already read the
    /// log page each event named, which re-enables that kind of event, and
    /// updated its namespace table. Cheap to call from a polling loop: a
    /// lock taken for a moment, no device access.
    pub fn events(&self) -> Vec<ControllerEvent> {
        self.inner.take_events()
    }

    /// Look for completed Asynchronous Event Requests now and act on them
    /// (the admin worker also does this every
    /// [`crate::ControllerOptions::admin_poll_interval`]); returns how many
    /// completed. Every event that had completed when this was called has
    /// been handled when it returns, by this call or by the worker — queued
    /// for [`Self::events`], or passed to the callback (this call waits for
    /// a delivery running on the worker). Called from inside the callback
    /// it does nothing and returns 0.
    pub fn process_events(&self) -> usize {
        self.inner.process_async_events()
    }

    /// Have every event passed to `callback` as it is handled, instead of
    /// queued for [`Self::events`] (events queued before stay there).
    /// Replaces an earlier callback.
    ///
    /// **Where it runs.** On the controller's admin worker thread, which
    /// polls for events every
    /// [`crate::ControllerOptions::admin_poll_interval`], or on the thread
    /// calling [`Self::process_events`]; one event at a time, in the order
    /// the controller reported them, never two calls at once. The driver
    /// has already read the event's log page and updated
    /// [`Self::active_namespaces`] when it runs, and holds no lock the
    /// rest of the controller needs.
    ///
    /// **It must not block**: the admin worker is also what sends aborts
    /// for timed-out commands, resets the controller and watches its
    /// health, and all of that waits while the callback runs. Post the
    /// event to the application's own thread (a channel, a ring, a flag)
    /// and return. Inside it, [`Self::process_events`] returns 0 and
    /// [`Self::set_event_callback`] / [`Self::clear_event_callback`] return
    /// `false`, doing nothing. A callback that panics is removed (counted
    /// in [`EventStats::callback_panics`]); later events are queued again.
    ///
    /// Returns `false`, changing nothing, when called from inside the
    /// callback.
    pub fn set_event_callback(
        &self,
        callback: impl FnMut(&ControllerEvent) + Send + 'static,
    ) -> bool {
        self.inner.set_event_callback(Some(Box::new(callback)))
    }

    /// Remove the callback: events are queued for [`Self::events`] again
    /// (including any handled but not yet passed to it). Returns `false`,
    /// changing nothing, when called from inside the callback.
    pub fn clear_event_callback(&self) -> bool {
        self.inner.set_event_callback(None)
    }

    /// Counters of the event machinery, with the requests outstanding now.
    pub fn event_stats(&self) -> EventStats {
        self.inner.event_stats()
    }

    /// The active namespaces the driver can use now, in NSID order: the
    /// ones found at bring-up, updated by Namespace Attribute Changed
    /// notices (attached ones added, detached ones removed, resized ones
    /// with their new size). [`Controller::namespaces`] stays what bring-up
    /// found.
    pub fn active_namespaces(&self) -> Vec<Namespace> {
        self.inner.active_namespaces()
    }

    /// The namespace `nsid` as it is now, if it is active and usable.
    pub fn active_namespace(&self, nsid: u32) -> Option<Namespace> {
        self.inner
            .active_namespaces()
            .into_iter()
            .find(|n| n.id() == nsid)
    }
}
