//! Asynchronous events (NVMe Base 2.0 §5.2, §5.16.1.5, §5.27.1.7): the
//! outstanding Asynchronous Event Requests are completed as events occur —
//! Error (an error not tied to a command), SMART / Health (a critical
//! warning bit the host enabled with Asynchronous Event Configuration),
//! Notice (Namespace Attribute Changed, when enabled). Once an event of a
//! type is reported, further events of that type are masked until the host
//! reads the log page the completion named with Retain Asynchronous Event
//! cleared; the Changed Namespace List (log page 04h) empties on such a read.
//!
//! On a controller reset the outstanding requests end with the admin queue,
//! without completions (the host sends new ones after the reset); events not
//! yet reported are kept for them, and every mask is cleared.

#![forbid(unsafe_code)]

use zerocopy::little_endian::{U16, U32, U64};

use super::CommandProcessor;
use crate::device_state::DeviceState;
use crate::event_state::{
    AEC_NAMESPACE_ATTRIBUTE, CHANGED_LIST_MAX, EVENT_ERROR, EVENT_NOTICE, EVENT_SMART,
    LOG_CHANGED_NAMESPACES, dw0,
};
use crate::guest_memory::DmaGuard;
use crate::identify_data::ERROR_LOG_ENTRIES;
use nvme_engine::spec::log::ErrorInformation;
use nvme_engine::spec::status::generic;
use nvme_engine::spec::{
    command::Command,
    completion::Completion,
    status::{Status, StatusCodeType},
};

impl CommandProcessor {
    /// Record an event and report it if an AER is outstanding and its type is unmasked.
    pub(crate) fn raise_event(
        &mut self,
        sh: &DeviceState,
        g: &DmaGuard<'_>,
        kind: u8,
        info: u8,
        log: u8,
    ) {
        let e = dw0(kind, info, log);
        if !self.events.pending.contains(&e) {
            self.events.pending.push_back(e);
        }
        self.deliver_events(sh, g);
    }

    /// Complete outstanding AERs with pending, unmasked events.
    pub(crate) fn deliver_events(&mut self, sh: &DeviceState, g: &DmaGuard<'_>) {
        if !self.enabled || self.halted {
            return;
        }
        while !self.aers.is_empty() {
            let masked = self.events.masked;
            let Some(i) = (self.events.pending.iter()).position(|&e| masked & (1 << (e & 7)) == 0)
            else {
                return;
            };
            let Some(e) = self.events.pending.remove(i) else {
                return;
            };
            self.events.masked |= 1 << (e & 7);
            let cid = self.aers.remove(0);
            let sqhd = self.sqs[0].as_ref().map_or(0, |s| s.head as u16);
            let c = Completion::new(e, sqhd, 0, cid, Status::SUCCESS, false);
            self.post(sh, g, 0, c);
        }
    }

    /// Log page `lid` was read; `rae` clear acknowledges its events.
    pub(crate) fn log_page_read(&mut self, sh: &DeviceState, g: &DmaGuard<'_>, lid: u8, rae: bool) {
        if rae {
            return;
        }
        let kind = match lid {
            0x01 => EVENT_ERROR,
            0x02 => EVENT_SMART,
            LOG_CHANGED_NAMESPACES => {
                self.events.changed.clear();
                self.events.changed_overflow = false;
                EVENT_NOTICE
            }
            _ => return,
        };
        self.events.masked &= !(1 << kind);
        // The read covers events of its kind that waited behind the mask.
        (self.events.pending).retain(|&e| (e >> 16) as u8 != lid);
        self.deliver_events(sh, g);
    }

    /// The Changed Namespace List page (4096 bytes).
    pub(crate) fn changed_namespaces_page(&self) -> Vec<u8> {
        let mut v = vec![0u8; 4096];
        if self.events.changed_overflow {
            v[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        } else {
            for (slot, id) in v.chunks_exact_mut(4).zip(&self.events.changed) {
                slot.copy_from_slice(&id.to_le_bytes());
            }
        }
        v
    }

    /// Namespace `nsid` was attached, detached or resized.
    pub(crate) fn namespace_changed(&mut self, sh: &DeviceState, g: &DmaGuard<'_>, nsid: u32) {
        let ev = &mut self.events;
        if !ev.changed.contains(&nsid) {
            if ev.changed.len() == CHANGED_LIST_MAX {
                ev.changed_overflow = true;
            } else {
                ev.changed.push(nsid);
                ev.changed.sort_unstable();
            }
        }
        if self.features.async_config & AEC_NAMESPACE_ATTRIBUTE != 0 {
            self.raise_event(sh, g, EVENT_NOTICE, 0x00, LOG_CHANGED_NAMESPACES);
        }
    }

    /// Set the SMART critical warning bits; newly set bits the host enabled
    /// (Asynchronous Event Configuration bits 7:0) raise a SMART event.
    pub(crate) fn set_critical_warning(&mut self, sh: &DeviceState, g: &DmaGuard<'_>, bits: u8) {
        let new = bits & !self.events.critical_warning;
        self.events.critical_warning = bits;
        let enabled = new & self.features.async_config as u8;
        if enabled == 0 {
            return;
        }
        // Information: 02h spare below threshold, 01h temperature, else 00h reliability.
        let info = if enabled & 0x01 != 0 {
            0x02
        } else if enabled & 0x02 != 0 {
            0x01
        } else {
            0x00
        };
        self.raise_event(sh, g, EVENT_SMART, info, 0x02);
    }

    /// An error not tied to a command: an Error Information log entry and an
    /// Error event (Persistent or Transient Internal Error).
    pub(crate) fn report_internal_error(
        &mut self,
        sh: &DeviceState,
        g: &DmaGuard<'_>,
        persistent: bool,
    ) {
        self.error_count += 1;
        let mut e = ErrorInformation::zeroed();
        e.error_count = U64::new(self.error_count);
        e.sqid = U16::new(0xffff);
        e.cid = U16::new(0xffff);
        let st = Status::new(StatusCodeType::GENERIC, generic::INTERNAL_ERROR);
        e.status = U16::new(st.field() << 1);
        e.param_error_location = U16::new(0xffff);
        e.nsid = U32::new(0xffff_ffff);
        self.push_error(e);
        self.raise_event(
            sh,
            g,
            EVENT_ERROR,
            if persistent { 0x03 } else { 0x04 },
            0x01,
        );
    }

    /// Add an Error Information log entry for a failed command.
    pub(crate) fn log_error(&mut self, sqid: u16, cmd: &Command, status: Status) {
        self.error_count += 1;
        let mut e = ErrorInformation::zeroed();
        e.error_count = U64::new(self.error_count);
        e.sqid = U16::new(sqid);
        e.cid = U16::new(cmd.cid());
        e.status = U16::new(status.field() << 1);
        e.param_error_location = U16::new(0xffff);
        e.lba = U64::new(if sqid == 0 { 0 } else { cmd.slba() });
        e.nsid = U32::new(cmd.nsid);
        self.push_error(e);
    }

    /// Keep `e` in the Error Information log, dropping the oldest when full.
    pub(crate) fn push_error(&mut self, e: ErrorInformation) {
        if self.errors.len() == ERROR_LOG_ENTRIES {
            self.errors.remove(0);
        }
        self.errors.push(e);
    }
}
