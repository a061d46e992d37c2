//! The controller state shared by the [`Device`](nvme_engine::Device)
//! implementation, the device thread and every handle: the device state, the
//! command processor behind the device lock, and BAR0 writes that change
//! state (CC transitions per NVMe Base 2.0 §3.5, doorbell validation, the
//! inline mode's processing on the writing thread).

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::{Mutex, OnceLock};

use crate::config::{EmuConfig, EmuMode, IdlePolicy};
use crate::counters::Padded;
use crate::device_state::DeviceState;
use crate::event_state::{
    EVENT_ERROR, INFO_INVALID_DOORBELL_REGISTER, INFO_INVALID_DOORBELL_VALUE, LOG_ERROR_INFORMATION,
};
use crate::processor::CommandProcessor;
use crate::register_file::doorbell_at;
use nvme_engine::spec::registers::Cc;

/// State shared by the controller, its device thread and its handles.
pub(crate) struct Shared {
    /// Registers, doorbells, IOMMU, counters and faults: what the processor
    /// sees.
    pub(crate) state: DeviceState,
    /// The device lock. On its own cache lines: the device thread writes the
    /// lock word every busy round, while host threads read the flags below on
    /// every register write.
    processor: Padded<Mutex<CommandProcessor>>,
    /// Bumped (with the lock held) by every host-side change of device state
    /// other than a doorbell, so the device thread runs a round for it.
    pokes: AtomicU64,
    inline: bool,
    /// The device thread may park (its idle policy sleeps): doorbell writes
    /// must check whether to wake it.
    may_sleep: bool,
    /// A vanished controller comes back when the host clears CC.EN.
    pub(crate) vanish_recovers: AtomicBool,
    /// Clearing CC.EN is ignored: CSTS.RDY stays 1 (a controller that
    /// cannot be reset).
    pub(crate) ignores_disable: AtomicBool,
    /// [`Device::quiesce`](nvme_engine::Device::quiesce) fails (a transport
    /// without config-space access).
    pub(crate) quiesce_fails: AtomicBool,
    /// Tells the device thread to exit.
    pub(crate) stop: AtomicBool,
    /// The device thread is (about to be) parked.
    pub(crate) sleeping: AtomicBool,
    /// The device thread, for unparking.
    pub(crate) poller: OnceLock<std::thread::Thread>,
}

impl Shared {
    /// A disabled controller named `name` for `config`, whose commands
    /// `processor` executes.
    pub(crate) fn new(name: String, config: &EmuConfig, processor: CommandProcessor) -> Self {
        Shared {
            state: DeviceState::new(
                name,
                config.io_queues,
                (config.max_queue_entries - 1) as u16,
            ),
            processor: Padded(Mutex::new(processor)),
            pokes: AtomicU64::new(0),
            inline: config.mode == EmuMode::Inline,
            may_sleep: matches!(
                config.mode,
                EmuMode::Threaded {
                    idle: IdlePolicy::Backoff { .. },
                    ..
                }
            ),
            vanish_recovers: AtomicBool::new(false),
            ignores_disable: AtomicBool::new(false),
            quiesce_fails: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            poller: OnceLock::new(),
        }
    }

    /// Run `f` with the device lock held.
    pub(crate) fn with_processor<R>(&self, f: impl FnOnce(&mut CommandProcessor) -> R) -> R {
        let mut e = self.processor.0.lock().unwrap_or_else(|p| p.into_inner());
        let r = f(&mut e);
        self.poke();
        r
    }

    /// Tell the device thread that device state changed (lock held).
    fn poke(&self) {
        // Release: a device thread that sees the new count takes the lock
        // after this change anyway; release keeps the signal explicit.
        self.pokes.fetch_add(1, Ordering::Release);
    }

    /// Host-side state changes so far (see [`Shared::with_processor`]).
    pub(crate) fn pokes(&self) -> u64 {
        // Acquire: pairs with the release increment after the change.
        self.pokes.load(Ordering::Acquire)
    }

    /// One device round (see [`CommandProcessor::poll_round`]). Returns the work done
    /// and whether the processor needs further rounds even without new
    /// doorbells (completions delayed by a fault rule).
    pub(crate) fn poll_round(&self, batch: u32, armed: bool) -> (usize, bool) {
        let mut e = self.processor.0.lock().unwrap_or_else(|p| p.into_inner());
        let g = self.state.iommu.guard();
        let work = e.poll_round(&self.state, &g, batch, armed);
        (work, e.needs_rounds())
    }

    pub(crate) fn write_cc(&self, value: u32) {
        let mut e = self.processor.0.lock().unwrap_or_else(|p| p.into_inner());
        let old = Cc::from(self.state.regs.cc.swap(value, Ordering::AcqRel));
        let new = Cc::from(value);
        if !old.en() && new.en() {
            e.enable(&self.state, new);
        } else if old.en() && !new.en() {
            if self.ignores_disable.load(Ordering::Acquire) {
                // Keep CC.EN = 1 as far as the device is concerned.
                self.state.regs.cc.store(u32::from(old), Ordering::Release);
            } else {
                e.reset(&self.state);
            }
        }
        if new.en() && new.shn() != 0 && old.shn() == 0 {
            e.shutdown(&self.state);
        }
        self.poke();
    }

    pub(crate) fn write_doorbell(&self, off: usize, value: u32) {
        let max_qid = (self.state.doorbells.len() - 1) as u16;
        let Some(db) = doorbell_at(off, max_qid) else {
            self.state.counters.doorbell();
            self.state.counters.invalid_doorbell();
            self.doorbell_error(INFO_INVALID_DOORBELL_REGISTER);
            return;
        };
        let pair = &self.state.doorbells[db.qid as usize];
        let (size, cell) = if db.is_cq {
            (&pair.cq_size, &pair.cq_head)
        } else {
            (&pair.sq_size, &pair.sq_tail)
        };
        let size = size.load(Ordering::Acquire);
        if size == 0 || value >= size {
            self.state.counters.doorbell();
            self.state.counters.invalid_doorbell();
            self.doorbell_error(if size == 0 {
                INFO_INVALID_DOORBELL_REGISTER
            } else {
                INFO_INVALID_DOORBELL_VALUE
            });
            return;
        }
        // Release: the queue entries the host wrote before this doorbell are
        // visible to the device side that loads it with acquire.
        cell.store(value, Ordering::Release);
        self.state.counters.doorbell();
        if self.inline {
            let mut e = self.processor.0.lock().unwrap_or_else(|p| p.into_inner());
            let g = self.state.iommu.guard();
            e.doorbell(&self.state, &g, db.qid, db.is_cq);
        } else if self.may_sleep {
            // SeqCst fence pairs with the device thread's fence after it
            // announces sleep: either it sees this doorbell or we see it asleep.
            fence(Ordering::SeqCst);
            if self.sleeping.load(Ordering::Relaxed)
                && let Some(t) = self.poller.get()
            {
                t.unpark();
            }
        }
    }

    /// An Error event for a bad doorbell write (reported when the host has
    /// an Asynchronous Event Request outstanding, like any event).
    #[cold]
    fn doorbell_error(&self, info: u8) {
        self.with_processor(|e| {
            let g = self.state.iommu.guard();
            e.raise_event(&self.state, &g, EVENT_ERROR, info, LOG_ERROR_INFORMATION);
        });
    }
}
