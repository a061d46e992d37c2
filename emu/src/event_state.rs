//! The controller's asynchronous event state (NVMe Base 2.0 §5.2): events
//! raised and not yet reported, the event types masked until their log page
//! is read, the Changed Namespace List (log page 04h) and the SMART critical
//! warning bits. Plain data; `processor/async_events.rs` acts on it.

#![forbid(unsafe_code)]

use std::collections::VecDeque;

/// Asynchronous event type: Error status.
pub(crate) const EVENT_ERROR: u8 = 0;
/// Asynchronous event type: SMART / Health status.
pub(crate) const EVENT_SMART: u8 = 1;
/// Asynchronous event type: Notice.
pub(crate) const EVENT_NOTICE: u8 = 2;
/// Error event information: Write to Invalid Doorbell Register.
pub(crate) const INFO_INVALID_DOORBELL_REGISTER: u8 = 0x00;
/// Error event information: Invalid Doorbell Write Value.
pub(crate) const INFO_INVALID_DOORBELL_VALUE: u8 = 0x01;
/// Log page: Error Information.
pub(crate) const LOG_ERROR_INFORMATION: u8 = 0x01;
/// Log page: Changed Namespace List.
pub(crate) const LOG_CHANGED_NAMESPACES: u8 = 0x04;
/// Asynchronous Event Configuration bit 8: Namespace Attribute Notices.
pub(crate) const AEC_NAMESPACE_ATTRIBUTE: u32 = 1 << 8;
/// Most NSIDs the Changed Namespace List names before it reads FFFFFFFFh.
pub(crate) const CHANGED_LIST_MAX: usize = 1024;

/// Event state kept by the controller.
#[derive(Default)]
pub(crate) struct EventState {
    /// Completion dword 0 of events not yet reported, oldest first.
    pub(crate) pending: VecDeque<u32>,
    /// Event types (bit per type) reported and not yet acknowledged by a log read.
    pub(crate) masked: u8,
    /// NSIDs whose attributes changed since the log page was last read.
    pub(crate) changed: Vec<u32>,
    pub(crate) changed_overflow: bool,
    /// SMART critical warning bits now set.
    pub(crate) critical_warning: u8,
}

impl EventState {
    /// Controller reset: masks cleared, unreported events kept.
    pub(crate) fn reset(&mut self) {
        self.masked = 0;
    }
}

pub(crate) fn dw0(kind: u8, info: u8, log: u8) -> u32 {
    kind as u32 | (info as u32) << 8 | (log as u32) << 16
}
