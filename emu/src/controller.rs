//! The emulated controller object: creation from an [`EmuConfig`], the
//! [`Device`] implementation (BAR0 reads and writes, CC state changes per
//! NVMe Base 2.0 §3.5, doorbell validation, DMA mapping through the emulated
//! IOMMU), and the state shared with the device thread and handles.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use super::config::{EmuConfig, EmuError, EmuMode, IdlePolicy};
use super::engine::Engine;
use super::faults::FaultTable;
use super::handle::{Counters, EmuHandle, Padded};
use super::memory::Iommu;
use super::registers::{DoorbellPair, Registers, doorbell_at};
use nvme_engine::device::{Device, QuiesceError};
use nvme_engine::dma::{DmaError, DmaRegion, HostMemory};
use nvme_engine::spec::registers::{ALL_ONES, Cc, offset};

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// State shared by the controller, its device thread and its handles.
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) iommu: Arc<Iommu>,
    pub(crate) regs: Registers,
    pub(crate) doorbells: Box<[DoorbellPair]>,
    pub(crate) counters: Counters,
    pub(crate) faults: FaultTable,
    /// The device lock. On its own cache lines: the device thread writes the
    /// lock word every busy round, while host threads read the flags below on
    /// every register write.
    engine: Padded<Mutex<Engine>>,
    /// Bumped (with the lock held) by every host-side change of device state
    /// other than a doorbell, so the device thread runs a round for it.
    pokes: AtomicU64,
    /// One above the highest queue ID ever created: the device thread's idle
    /// check looks at the doorbells below it.
    queue_bound: AtomicUsize,
    inline: bool,
    /// The device thread may park (its idle policy sleeps): doorbell writes
    /// must check whether to wake it.
    may_sleep: bool,
    vanished: AtomicBool,
    /// Shadow doorbells are configured: the device thread must look at
    /// them every poll (they change without an MMIO write).
    shadow_doorbells: AtomicBool,
    /// A vanished controller comes back when the host clears CC.EN.
    pub(crate) vanish_recovers: AtomicBool,
    /// A controller with fatal status stays failed across resets.
    pub(crate) fatal_sticky: AtomicBool,
    /// Clearing CC.EN is ignored: CSTS.RDY stays 1 (a controller that
    /// cannot be reset).
    pub(crate) ignores_disable: AtomicBool,
    /// [`Device::quiesce`] fails (a transport without config-space access).
    pub(crate) quiesce_fails: AtomicBool,
    /// Tells the device thread to exit.
    pub(crate) stop: AtomicBool,
    /// The device thread is (about to be) parked.
    pub(crate) sleeping: AtomicBool,
    /// The device thread, for unparking.
    pub(crate) poller: OnceLock<std::thread::Thread>,
}

impl Shared {
    /// Run `f` with the device lock held.
    pub(crate) fn with_engine<R>(&self, f: impl FnOnce(&mut Engine) -> R) -> R {
        let mut e = self.engine.0.lock().unwrap_or_else(|p| p.into_inner());
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

    /// Host-side state changes so far (see [`Shared::with_engine`]).
    pub(crate) fn pokes(&self) -> u64 {
        // Acquire: pairs with the release increment after the change.
        self.pokes.load(Ordering::Acquire)
    }

    /// Queue IDs below this may exist (lock held by the caller).
    pub(crate) fn note_queue(&self, qid: u16) {
        // Relaxed: a hint for the device thread's idle check, which takes
        // the lock (and sees everything) before acting on it.
        self.queue_bound
            .fetch_max(qid as usize + 1, Ordering::Relaxed);
    }

    /// Queue IDs below this may exist.
    pub(crate) fn queue_bound(&self) -> usize {
        self.queue_bound
            .load(Ordering::Relaxed)
            .min(self.doorbells.len())
    }

    /// One device round (see [`Engine::poll_round`]). Returns the work done
    /// and whether the engine needs further rounds even without new
    /// doorbells (completions delayed by a fault rule).
    pub(crate) fn poll_round(&self, batch: u32, armed: bool) -> (usize, bool) {
        let mut e = self.engine.0.lock().unwrap_or_else(|p| p.into_inner());
        let g = self.iommu.guard();
        let work = e.poll_round(self, &g, batch, armed);
        (work, e.needs_rounds())
    }

    /// Record whether shadow doorbells are configured (lock held).
    pub(crate) fn set_shadow_doorbells(&self, on: bool) {
        // Relaxed: a hint for the device thread's idle check, like
        // `queue_bound`.
        self.shadow_doorbells.store(on, Ordering::Relaxed);
    }

    /// Whether shadow doorbells are configured.
    pub(crate) fn shadow_doorbells(&self) -> bool {
        self.shadow_doorbells.load(Ordering::Relaxed)
    }

    pub(crate) fn vanished(&self) -> bool {
        self.vanished.load(Ordering::Acquire)
    }

    pub(crate) fn vanish(&self) {
        self.vanished.store(true, Ordering::Release);
    }

    /// Come back from a surprise removal (registers readable again).
    fn reappear(&self) {
        self.vanished.store(false, Ordering::Release);
    }

    fn write_cc(&self, value: u32) {
        let mut e = self.engine.0.lock().unwrap_or_else(|p| p.into_inner());
        let old = Cc::from(self.regs.cc.swap(value, Ordering::AcqRel));
        let new = Cc::from(value);
        if !old.en() && new.en() {
            e.enable(self, new);
        } else if old.en() && !new.en() {
            if self.ignores_disable.load(Ordering::Acquire) {
                // Keep CC.EN = 1 as far as the device is concerned.
                self.regs.cc.store(u32::from(old), Ordering::Release);
            } else {
                e.reset(self);
            }
        }
        if new.en() && new.shn() != 0 && old.shn() == 0 {
            e.shutdown(self);
        }
        self.poke();
    }

    fn write_doorbell(&self, off: usize, value: u32) {
        let max_qid = (self.doorbells.len() - 1) as u16;
        let Some(db) = doorbell_at(off, max_qid) else {
            self.counters.doorbell();
            self.counters.invalid_doorbell();
            return;
        };
        let pair = &self.doorbells[db.qid as usize];
        let (size, cell) = if db.is_cq {
            (&pair.cq_size, &pair.cq_head)
        } else {
            (&pair.sq_size, &pair.sq_tail)
        };
        let size = size.load(Ordering::Acquire);
        if size == 0 || value >= size {
            self.counters.doorbell();
            self.counters.invalid_doorbell();
            return;
        }
        // Release: the queue entries the host wrote before this doorbell are
        // visible to the device side that loads it with acquire.
        cell.store(value, Ordering::Release);
        self.counters.doorbell();
        if self.inline {
            let mut e = self.engine.0.lock().unwrap_or_else(|p| p.into_inner());
            let g = self.iommu.guard();
            e.doorbell(self, &g, db.qid, db.is_cq);
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
}

/// An emulated NVMe controller; see the [module documentation](super).
pub struct EmuController {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl EmuController {
    /// Create a controller (disabled, like one after power-on: the host
    /// enables it through CC). Opens or creates backing files and, in
    /// threaded mode, starts the device thread.
    pub fn new(config: EmuConfig) -> Result<Self, EmuError> {
        config.validate()?;
        // RAM namespaces are mapped lazily but a run that writes them all
        // would end in the OOM killer: refuse what cannot fit up front.
        let ram: u64 = config
            .namespaces
            .iter()
            .filter(|n| matches!(n.backing, super::config::Backing::Ram))
            .map(|n| n.bytes())
            .fold(0u64, u64::saturating_add);
        nvme_engine::dma::check_memory(ram, "the emulated controller's RAM namespaces")
            .map_err(EmuError::Memory)?;
        let engine = Engine::new(&config)?;
        let name = format!("emu:{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let shared = Arc::new(Shared {
            iommu: Iommu::new(name.clone()),
            name,
            regs: Registers::new((config.max_queue_entries - 1) as u16),
            doorbells: (0..=config.io_queues)
                .map(|_| DoorbellPair::new())
                .collect(),
            counters: Counters::new(),
            faults: FaultTable::new(),
            engine: Padded(Mutex::new(engine)),
            pokes: AtomicU64::new(0),
            queue_bound: AtomicUsize::new(0),
            inline: config.mode == EmuMode::Inline,
            may_sleep: matches!(
                config.mode,
                EmuMode::Threaded {
                    idle: IdlePolicy::Backoff { .. },
                    ..
                }
            ),
            vanished: AtomicBool::new(false),
            shadow_doorbells: AtomicBool::new(false),
            vanish_recovers: AtomicBool::new(false),
            fatal_sticky: AtomicBool::new(false),
            ignores_disable: AtomicBool::new(false),
            quiesce_fails: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            poller: OnceLock::new(),
        });
        let thread = match config.mode {
            EmuMode::Inline => None,
            EmuMode::Threaded { idle, batch, core } => {
                Some(super::thread::spawn(shared.clone(), idle, batch, core)?)
            }
        };
        Ok(EmuController { shared, thread })
    }

    /// A handle for fault injection and counters. Take it before moving the
    /// controller into a driver.
    pub fn handle(&self) -> EmuHandle {
        EmuHandle {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for EmuController {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            // A panicked device thread has nothing left to clean up.
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for EmuController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmuController")
            .field("name", &self.shared.name)
            .field("threaded", &self.thread.is_some())
            .finish()
    }
}

impl Device for EmuController {
    fn read32(&self, off: usize) -> u32 {
        if self.shared.vanished() {
            return ALL_ONES;
        }
        self.shared.regs.read(off)
    }

    fn write32(&self, off: usize, value: u32) {
        let sh = &*self.shared;
        if sh.vanished() {
            // A device configured to recover comes back on a controller
            // reset (CC.EN cleared); everything else is lost.
            let recover = off == offset::CC
                && !Cc::from(value).en()
                && sh.vanish_recovers.load(Ordering::Acquire);
            if !recover {
                return;
            }
            sh.reappear();
        }
        // Release stores: the device side reads these after taking its lock
        // or on CC.EN, which orders them anyway; release keeps it explicit.
        match off {
            offset::CC => sh.write_cc(value),
            offset::AQA => sh.regs.aqa.store(value, Ordering::Release),
            0x28 => sh.regs.asq[0].store(value, Ordering::Release),
            0x2C => sh.regs.asq[1].store(value, Ordering::Release),
            0x30 => sh.regs.acq[0].store(value, Ordering::Release),
            0x34 => sh.regs.acq[1].store(value, Ordering::Release),
            o if o >= offset::DOORBELLS => sh.write_doorbell(o, value),
            _ => {} // read-only or unsupported (INTMS/INTMC without MSI-X, NSSR)
        }
    }

    fn map_dma(&self, memory: HostMemory) -> Result<DmaRegion, DmaError> {
        self.shared.iommu.map(memory)
    }

    fn allows_plain_memory(&self) -> bool {
        true
    }

    /// Bus mastering off: every later DMA access fails (and the device
    /// stops processing, as a real one can no longer fetch commands). Fails
    /// only when a test asked it to ([`super::EmuHandle::set_quiesce_fails`]).
    fn quiesce(&self) -> Result<(), QuiesceError> {
        let sh = &*self.shared;
        if sh.quiesce_fails.load(Ordering::Acquire) {
            return Err(QuiesceError {
                device: sh.name.clone(),
                reason: "the emulated transport was told to refuse".into(),
            });
        }
        sh.with_engine(|e| e.halted = true);
        sh.iommu.stop_mastering();
        Ok(())
    }

    fn name(&self) -> String {
        self.shared.name.clone()
    }
}
