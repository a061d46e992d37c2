//! What a controller tells the application on its own (NVMe Base 2.0 §5.2,
//! Asynchronous Event Request): namespaces attached, detached or changed,
//! SMART / Health warnings and error log entries, each with the log page
//! the driver read for it, and the counters of the event machinery.
//!
//! The driver keeps the requests outstanding and reads the log pages
//! (`shared/events.rs`); the application takes the events with
//! [`crate::Controller::events`] whenever it likes. They are queued, up to
//! [`EVENT_QUEUE_LIMIT`]; beyond that the oldest are dropped and counted.
//! Or the application registers a callback
//! ([`crate::Controller::set_event_callback`]) and each event is passed to
//! it instead of being queued.

#![forbid(unsafe_code)]

use crate::spec::events::AsyncEvent;
use crate::spec::log::{ErrorInformation, SmartHealth};

use super::namespace::Namespace;

/// Most events kept for the application; older ones are dropped (and
/// counted in [`EventStats::dropped`]) when it does not take them.
pub const EVENT_QUEUE_LIMIT: usize = 1024;

/// One thing the controller reported, with what the driver learned from
/// the log page it read for it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ControllerEvent {
    /// A namespace became active (attached, created) and is usable:
    /// [`crate::Controller::active_namespace`] returns it from now on.
    NamespaceAttached(Namespace),
    /// A namespace became active but the driver cannot use it (the reason
    /// names the field, as for [`crate::SkippedNamespace`]).
    NamespaceUnusable {
        /// NSID.
        nsid: u32,
        /// Why the driver does not use it.
        reason: String,
    },
    /// A namespace is no longer active (detached, deleted). I/O queued to it
    /// fails with Invalid Namespace or Format; stop using the
    /// [`Namespace`] value.
    NamespaceDetached {
        /// NSID.
        nsid: u32,
    },
    /// A namespace's Identify data changed (resized, reformatted). The new
    /// value carries the new size; checks made with an older copy still use
    /// the old one, so replace it.
    NamespaceChanged {
        /// Size in blocks before.
        old_blocks: u64,
        /// The namespace as it is now.
        namespace: Namespace,
    },
    /// A SMART / Health event (critical warning bits, temperature, spare)
    /// with the SMART / Health log read for it.
    Health {
        /// The event as the controller reported it.
        event: AsyncEvent,
        /// The log page read to clear it: `critical_warning`,
        /// `composite_temperature` (K), `available_spare`.
        log: Box<SmartHealth>,
    },
    /// An Error event (internal errors, invalid doorbell writes) with the
    /// newest Error Information log entry, when the controller had one.
    Error {
        /// The event as the controller reported it.
        event: AsyncEvent,
        /// The newest log entry.
        entry: Option<ErrorInformation>,
    },
    /// Any other event (notices the driver does not act on, I/O command
    /// specific and vendor events); its log page was read to re-enable it.
    Other {
        /// The event as the controller reported it.
        event: AsyncEvent,
    },
}

impl std::fmt::Display for ControllerEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControllerEvent::NamespaceAttached(ns) => write!(
                f,
                "namespace {} attached: {} blocks of {} bytes",
                ns.id(),
                ns.blocks(),
                ns.block_size()
            ),
            ControllerEvent::NamespaceUnusable { nsid, reason } => {
                write!(f, "namespace {nsid} attached but not usable: {reason}")
            }
            ControllerEvent::NamespaceDetached { nsid } => {
                write!(f, "namespace {nsid} detached: I/O to it now fails")
            }
            ControllerEvent::NamespaceChanged {
                old_blocks,
                namespace,
            } => write!(
                f,
                "namespace {} changed: {old_blocks} -> {} blocks of {} bytes",
                namespace.id(),
                namespace.blocks(),
                namespace.block_size()
            ),
            ControllerEvent::Health { event, log } => write!(
                f,
                "{event}: critical warning {:#04x}, temperature {} K, spare {}%",
                log.critical_warning,
                log.composite_temperature.get(),
                log.available_spare
            ),
            ControllerEvent::Error { event, entry } => match entry {
                Some(e) => write!(
                    f,
                    "{event}: error log entry {} ({}, SQ {} CID {:#x})",
                    e.error_count.get(),
                    e.status(),
                    e.sqid.get(),
                    e.cid.get()
                ),
                None => write!(f, "{event}: error log empty"),
            },
            ControllerEvent::Other { event } => write!(f, "{event}"),
        }
    }
}

/// Counters of the asynchronous event machinery of one controller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventStats {
    /// Asynchronous Event Requests the driver keeps outstanding
    /// (min(AERL+1, 16, admin queue entries − 2); 0 when turned off).
    pub requests_wanted: u16,
    /// Requests outstanding now.
    pub requests_outstanding: u16,
    /// Events received (successful request completions).
    pub received: u64,
    /// Namespace Attribute Changed notices handled.
    pub namespace_notices: u64,
    /// Namespaces found attached, detached or changed by those notices.
    pub namespace_changes: u64,
    /// SMART / Health events.
    pub health: u64,
    /// Error events.
    pub errors: u64,
    /// Other events.
    pub other: u64,
    /// Requests that completed with an error status (Asynchronous Event
    /// Request Limit Exceeded, aborted); not re-sent until the next reset.
    pub failed_requests: u64,
    /// Log page reads or rescans that failed (the event is still reported).
    pub log_read_failures: u64,
    /// Times the requests were sent again after a controller reset.
    pub rearmed_after_reset: u64,
    /// Events dropped because the application did not take them
    /// ([`EVENT_QUEUE_LIMIT`]).
    pub dropped: u64,
    /// Events passed to the callback ([`crate::Controller::set_event_callback`]).
    pub callback_events: u64,
    /// Times the callback panicked (it is then removed, and later events
    /// are queued).
    pub callback_panics: u64,
}
