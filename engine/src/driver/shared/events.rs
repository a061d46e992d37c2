//! Asynchronous Event Requests kept outstanding (NVMe Base 2.0 §5.2) and
//! what the driver does with each event: read the log page it names (with
//! RAE clear, which re-enables the event type, §5.16), act on it, queue a
//! [`ControllerEvent`] for the application, and send the request again.
//!
//! - Set-up ([`Inner::arm_async_events`]): Set Features Asynchronous Event
//!   Configuration (§5.27.1.7: every SMART / Health critical warning and
//!   Namespace Attribute Notices), then min(AERL+1, 16, admin entries − 2)
//!   requests. At bring-up and after every successful reset, since a reset
//!   drops both the configuration and the requests.
//! - Reaping ([`Inner::poll_async_events`]): the controller's admin worker
//!   calls it every [`ControllerOptions::admin_poll_interval`]
//!   (`crate::ControllerOptions`); [`crate::Controller::process_events`]
//!   calls it on demand. Completions reaped while a synchronous admin
//!   command waits were set aside by the admin queue and are handled here
//!   too. Everything runs under the admin lock, so an event is handled
//!   completely before another caller looks.
//! - Namespace Attribute Changed: the Changed Namespace List (04h), then the
//!   Active Namespace ID list and Identify Namespace of each NSID it names
//!   (all of them on overflow): attached, detached and changed namespaces
//!   are found by comparing with the driver's table of active namespaces.
//! - A request that completes with an error (Asynchronous Event Request
//!   Limit Exceeded, an abort) is counted and not sent again until the next
//!   reset, so a controller that refuses them cannot make the driver loop.
//!
//! - Delivery: events go to the application's queue, or, while a callback
//!   is registered ([`Inner::set_event_callback`]), into a hand-over queue
//!   that is drained into the callback once the admin lock is released —
//!   in the order they were handled, by one thread at a time (whoever
//!   holds the callback's lock drains everything queued, and looks again
//!   after letting go, so nothing is stranded). The callback may therefore
//!   issue admin commands without deadlocking; from inside it,
//!   [`Inner::poll_async_events`] on the same controller returns 0 instead
//!   of re-entering.
//!
//! The requests are the driver's own: no user waits on them, they are
//! never in a queue pair's tracker (so never timed out, lost or counted
//! against a deadline), and shutdown, reset and drop simply forget them —
//! a disabled or shut-down controller completes nothing more.

#![forbid(unsafe_code)]

use std::cell::Cell;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use crate::device::Device;
use crate::spec::command::{AdminOpcode, Command};
use crate::spec::completion::Completion;
use crate::spec::events::{AsyncEvent, AsyncEventType};
use crate::spec::features::FeatureId;
use crate::spec::identify::IdentifyController;
use crate::spec::log::SmartHealth;
use crate::spec::log::{ChangedNamespaceList, ChangedNamespaces, ErrorInformation, LogId};

use super::Inner;
use super::bringup::{active_namespace_ids, identify_namespace};
use super::recovery::Health;
use crate::driver::admin::{AdminData, AdminQueue, MAX_ASYNC_EVENT_REQUESTS};
use crate::driver::error::DriverError;
use crate::driver::events::{ControllerEvent, EVENT_QUEUE_LIMIT, EventStats};
use crate::driver::namespace::Namespace;

/// Asynchronous Event Configuration (Set Features 0Bh CDW11): every SMART /
/// Health critical warning bit (7:0) and Namespace Attribute Notices (8).
const AEC_ENABLED: u32 = 0xFF | 1 << 8;

/// Bytes read of a log page the driver does not decode (enough to clear
/// the event: the read itself re-enables it).
const OTHER_LOG_BYTES: usize = 64;

/// The application's event callback.
pub(crate) type EventCallback = Box<dyn FnMut(&ControllerEvent) + Send>;

thread_local! {
    /// The event state whose callback this thread is running (its address;
    /// 0: none), so a callback cannot re-enter its own controller's polling.
    static DELIVERING: Cell<usize> = const { Cell::new(0) };
}

/// The event state of one controller.
pub(crate) struct EventState {
    /// Requests to keep outstanding (fixed at bring-up).
    wanted: u16,
    /// Requests to keep outstanding now: `wanted` less those that failed
    /// since the last reset.
    target: AtomicU16,
    queue: Mutex<VecDeque<ControllerEvent>>,
    /// Events handled for the callback, not yet passed to it.
    handover: Mutex<VecDeque<ControllerEvent>>,
    /// The callback, if registered; its lock is held while it runs.
    callback: Mutex<Option<EventCallback>>,
    /// Whether a callback is registered (read under the admin lock, so
    /// events go to the hand-over queue instead of the application's).
    has_callback: AtomicBool,
    stats: Mutex<EventStats>,
    /// The active namespaces the driver can use, as last identified.
    namespaces: Mutex<Vec<Namespace>>,
}

impl EventState {
    /// The state for a controller with `admin_entries` admin queue entries
    /// whose bring-up found `namespaces`; `enabled` false keeps no requests.
    pub(crate) fn new(
        identify: &IdentifyController,
        admin_entries: u16,
        enabled: bool,
        namespaces: Vec<Namespace>,
    ) -> Self {
        // The admin completion queue must hold one completion per
        // outstanding request plus the synchronous command's: entries − 1.
        let room = (admin_entries as usize).saturating_sub(2);
        let wanted = if enabled {
            (identify.async_event_limit() as usize)
                .min(MAX_ASYNC_EVENT_REQUESTS)
                .min(room) as u16
        } else {
            0
        };
        EventState {
            wanted,
            target: AtomicU16::new(wanted),
            queue: Mutex::new(VecDeque::new()),
            handover: Mutex::new(VecDeque::new()),
            callback: Mutex::new(None),
            has_callback: AtomicBool::new(false),
            stats: Mutex::new(EventStats {
                requests_wanted: wanted,
                ..EventStats::default()
            }),
            namespaces: Mutex::new(namespaces),
        }
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, EventStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hand `event` to the application: to the callback (through the
    /// hand-over queue) while one is registered, else to the queue.
    fn emit(&self, event: ControllerEvent) {
        if self.has_callback.load(Ordering::Acquire) {
            self.handover
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_back(event);
        } else {
            self.push(event);
        }
    }

    /// This state's identity for [`DELIVERING`].
    fn key(&self) -> usize {
        self as *const Self as usize
    }

    /// Whether this thread is inside this controller's callback.
    fn in_callback(&self) -> bool {
        DELIVERING.with(|d| d.get() == self.key())
    }

    fn lock_callback(&self, wait: bool) -> Option<MutexGuard<'_, Option<EventCallback>>> {
        if wait {
            return Some(self.callback.lock().unwrap_or_else(|p| p.into_inner()));
        }
        match self.callback.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Pass the hand-over queue to the callback, in order. With `wait`,
    /// wait for a delivery running on another thread and drain after it,
    /// so every event handled before the call has been delivered on
    /// return; without, leave the events to that thread.
    fn deliver(&self, wait: bool) {
        loop {
            let empty = self
                .handover
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty();
            if empty {
                return;
            }
            let Some(mut cb) = self.lock_callback(wait) else {
                // The thread holding the lock looks again after letting go.
                return;
            };
            let outer = DELIVERING.with(|d| d.replace(self.key()));
            loop {
                let next = self
                    .handover
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pop_front();
                let Some(event) = next else { break };
                match cb.as_mut() {
                    Some(f) => {
                        self.stats().callback_events += 1;
                        if catch_unwind(AssertUnwindSafe(|| f(&event))).is_err() {
                            // A panicking callback is dropped; later events
                            // are queued for Controller::events instead.
                            *cb = None;
                            self.has_callback.store(false, Ordering::Release);
                            self.stats().callback_panics += 1;
                        }
                    }
                    // Cleared meanwhile: to the queue.
                    None => self.push(event),
                }
            }
            DELIVERING.with(|d| d.set(outer));
            drop(cb);
        }
    }

    fn push(&self, event: ControllerEvent) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= EVENT_QUEUE_LIMIT {
            q.pop_front();
            self.stats().dropped += 1;
        }
        q.push_back(event);
    }

    /// Whether requests are kept at all (the worker then polls).
    pub(crate) fn enabled(&self) -> bool {
        self.wanted > 0
    }
}

impl<D: Device> Inner<D> {
    /// Whether requests are kept (the admin worker then polls for them).
    pub(crate) fn events_enabled(&self) -> bool {
        self.events.enabled()
    }

    /// Register `callback` (or, `None`, remove it). `false` from inside
    /// this controller's callback, where it would deadlock: nothing changes.
    pub(crate) fn set_event_callback(&self, callback: Option<EventCallback>) -> bool {
        if self.events.in_callback() {
            return false;
        }
        let mut cb = self
            .events
            .callback
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.events
            .has_callback
            .store(callback.is_some(), Ordering::Release);
        *cb = callback;
        drop(cb);
        // Events handed over for a callback just removed go to the queue.
        self.events.deliver(true);
        true
    }

    /// Take the events queued so far, oldest first.
    pub(crate) fn take_events(&self) -> Vec<ControllerEvent> {
        let mut q = self.events.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.drain(..).collect()
    }

    /// Event counters, with the requests outstanding now.
    pub(crate) fn event_stats(&self) -> EventStats {
        let outstanding = self.admin().async_requests_outstanding() as u16;
        let mut s = *self.events.stats();
        s.requests_outstanding = outstanding;
        s
    }

    /// The active, usable namespaces as last identified.
    pub(crate) fn active_namespaces(&self) -> Vec<Namespace> {
        self.events
            .namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Configure the events and send the requests (bring-up, and after a
    /// reset with `after_reset`). Failures leave fewer requests outstanding;
    /// the controller keeps working.
    pub(crate) fn arm_async_events(&self, admin: &mut AdminQueue, after_reset: bool) {
        if !self.events.enabled() {
            return;
        }
        self.events
            .target
            .store(self.events.wanted, Ordering::Release);
        let mut cmd = Command::new(AdminOpcode::SET_FEATURES.0, 0);
        cmd.cdw10 = FeatureId::ASYNC_EVENT_CONFIG.0 as u32;
        cmd.cdw11 = AEC_ENABLED;
        // A controller that refuses some bits still reports what it can
        // (Error events need no configuration).
        let _ = admin.execute(self.device(), cmd, AdminData::None);
        self.top_up(admin);
        if after_reset {
            self.events.stats().rearmed_after_reset += 1;
        }
    }

    /// Send requests until the target is outstanding.
    fn top_up(&self, admin: &mut AdminQueue) {
        let target = self.events.target.load(Ordering::Acquire) as usize;
        while admin.async_requests_outstanding() < target {
            if !admin.submit_async_request(self.device()) {
                break;
            }
        }
    }

    /// Reap and act on the events the controller reported; returns how
    /// many requests completed. Nothing happens on a controller that is
    /// shut down, failed, removed or resetting (its requests are gone).
    pub(crate) fn poll_async_events(&self) -> usize {
        self.poll_and_deliver(false)
    }

    /// [`Self::poll_async_events`], and wait until every event handled so
    /// far (here or on another thread) has reached the callback.
    pub(crate) fn process_async_events(&self) -> usize {
        self.poll_and_deliver(true)
    }

    fn poll_and_deliver(&self, wait: bool) -> usize {
        if !self.events.enabled() || self.events.in_callback() {
            return 0;
        }
        let n = self.poll_locked();
        self.events.deliver(wait);
        n
    }

    /// Reap and handle under the admin lock.
    fn poll_locked(&self) -> usize {
        let mut admin = self.admin();
        if self.is_shut_down() || self.health() != Health::Live {
            return 0;
        }
        if self.fence_state() == super::fence::QUIESCED {
            return 0;
        }
        admin.reap_idle(self.device());
        let done = admin.take_async_completions();
        for c in &done {
            self.handle_completion(&mut admin, c);
        }
        if !done.is_empty() {
            self.top_up(&mut admin);
        }
        done.len()
    }

    fn handle_completion(&self, admin: &mut AdminQueue, c: &Completion) {
        if !c.status().is_success() {
            // Limit Exceeded, or aborted: do not send this one again
            // until a reset, or a controller refusing them would loop.
            let _ = self
                .events
                .target
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                    Some(t.saturating_sub(1))
                });
            self.events.stats().failed_requests += 1;
            return;
        }
        let event = AsyncEvent::from_dw0(c.dw0);
        self.events.stats().received += 1;
        let outcome = if event.is_namespace_change() {
            self.events.stats().namespace_notices += 1;
            self.namespace_changed(admin)
        } else {
            match event.kind {
                AsyncEventType::SMART_HEALTH => {
                    self.events.stats().health += 1;
                    self.read_log::<SmartHealth>(admin, event.log_page)
                        .map(|log| {
                            vec![ControllerEvent::Health {
                                event,
                                log: Box::new(log),
                            }]
                        })
                }
                AsyncEventType::ERROR => {
                    self.events.stats().errors += 1;
                    self.read_log::<ErrorInformation>(admin, event.log_page)
                        .map(|e| {
                            let entry = (e.error_count.get() != 0).then_some(e);
                            vec![ControllerEvent::Error { event, entry }]
                        })
                }
                _ => {
                    self.events.stats().other += 1;
                    self.read_raw_log(admin, event.log_page, OTHER_LOG_BYTES)
                        .map(|()| vec![ControllerEvent::Other { event }])
                }
            }
        };
        match outcome {
            Ok(events) => events.into_iter().for_each(|e| self.events.emit(e)),
            Err(_) => {
                // Still tell the application what the controller said.
                self.events.stats().log_read_failures += 1;
                self.events.emit(ControllerEvent::Other { event });
            }
        }
    }

    /// Get Log Page `lid` (RAE clear) into the scratch page: `bytes` bytes.
    fn read_raw_log(
        &self,
        admin: &mut AdminQueue,
        lid: LogId,
        bytes: usize,
    ) -> Result<(), DriverError> {
        let numd_z = (bytes / 4 - 1) as u32;
        let mut cmd = Command::new(AdminOpcode::GET_LOG_PAGE.0, 0xffff_ffff);
        cmd.cdw10 = lid.0 as u32 | (numd_z & 0xffff) << 16;
        cmd.cdw11 = numd_z >> 16;
        admin.execute(self.device(), cmd, AdminData::Scratch)?;
        Ok(())
    }

    /// Read log page `lid` as one `T` (at most a page).
    fn read_log<T: zerocopy::FromBytes>(
        &self,
        admin: &mut AdminQueue,
        lid: LogId,
    ) -> Result<T, DriverError> {
        self.read_raw_log(admin, lid, size_of::<T>())?;
        admin
            .scratch::<T>()
            .ok_or_else(|| DriverError::BadDeviceData {
                device: self.name().to_string(),
                what: format!("log page {:02X}h unreadable", lid.0),
            })
    }

    /// A Namespace Attribute Changed notice: read the Changed Namespace
    /// List, re-identify what it names, and update the table.
    fn namespace_changed(
        &self,
        admin: &mut AdminQueue,
    ) -> Result<Vec<ControllerEvent>, DriverError> {
        let list: ChangedNamespaceList = self.read_log(admin, LogId::CHANGED_NAMESPACE_LIST)?;
        let nn = self.identify().nn.get();
        let active = active_namespace_ids(self.device(), admin, nn)?.ids;
        let mut table = self
            .events
            .namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let changed: Vec<u32> = match list.changes() {
            ChangedNamespaces::List(ids) => ids,
            ChangedNamespaces::Overflow => {
                let mut all: Vec<u32> = active.clone();
                all.extend(table.iter().map(|n| n.id()));
                all.sort_unstable();
                all.dedup();
                all
            }
        };
        let mut out = Vec::new();
        for nsid in changed {
            let known = table.iter().position(|n| n.id() == nsid);
            if active.binary_search(&nsid).is_err() {
                if let Some(i) = known {
                    table.remove(i);
                    out.push(ControllerEvent::NamespaceDetached { nsid });
                }
                continue;
            }
            let found = identify_namespace(
                self.device(),
                admin,
                nsid,
                self.identify(),
                self.max_transfer(),
            )?;
            match (found, known) {
                (Ok(ns), None) => {
                    table.push(ns.clone());
                    out.push(ControllerEvent::NamespaceAttached(ns));
                }
                (Ok(ns), Some(i)) => {
                    let old_blocks = table[i].blocks();
                    table[i] = ns.clone();
                    out.push(ControllerEvent::NamespaceChanged {
                        old_blocks,
                        namespace: ns,
                    });
                }
                (Err(reason), known) => {
                    if let Some(i) = known {
                        table.remove(i);
                    }
                    out.push(ControllerEvent::NamespaceUnusable { nsid, reason });
                }
            }
        }
        table.sort_by_key(|n| n.id());
        *self
            .events
            .namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = table;
        self.events.stats().namespace_changes += out.len() as u64;
        Ok(out)
    }
}
