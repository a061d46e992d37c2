//! The controller's asynchronous events as the application sees them
//! (NVMe Base 2.0 §5.2): the queue of [`ControllerEvent`]s, their counters,
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
    /// been handled when it returns, by this call or by the worker.
    pub fn process_events(&self) -> usize {
        self.inner.poll_async_events()
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
