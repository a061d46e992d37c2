//! What the command processor sees of the controller around it: the BAR0
//! register file and doorbells, the emulated IOMMU, counters, fault rules,
//! and the flags that describe the device's condition (removed, fatal
//! status that survives a reset, shadow doorbells configured).
//!
//! None of it is behind the device lock: host threads read registers and
//! ring doorbells while the processor runs. The lock and everything that
//! only the host side needs (the device thread's wake-up, the test knobs)
//! live one layer up, in `shared.rs`.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::counters::Counters;
use crate::faults::FaultTable;
use crate::guest_memory::Iommu;
use crate::register_file::{DoorbellPair, Registers};

/// The device state outside the device lock.
pub(crate) struct DeviceState {
    pub(crate) name: String,
    pub(crate) iommu: Arc<Iommu>,
    pub(crate) regs: Registers,
    pub(crate) doorbells: Box<[DoorbellPair]>,
    pub(crate) counters: Counters,
    pub(crate) faults: FaultTable,
    /// One above the highest queue ID ever created: the device thread's idle
    /// check looks at the doorbells below it.
    queue_bound: AtomicUsize,
    vanished: AtomicBool,
    /// Shadow doorbells are configured: the device thread must look at
    /// them every poll (they change without an MMIO write).
    shadow_doorbells: AtomicBool,
    /// A controller with fatal status stays failed across resets.
    pub(crate) fatal_sticky: AtomicBool,
}

impl DeviceState {
    /// A powered-on controller named `name` with `io_queues` I/O queue
    /// pairs of up to `mqes_z + 1` entries.
    pub(crate) fn new(name: String, io_queues: u16, mqes_z: u16) -> Self {
        DeviceState {
            iommu: Iommu::new(name.clone()),
            name,
            regs: Registers::new(mqes_z),
            doorbells: (0..=io_queues).map(|_| DoorbellPair::new()).collect(),
            counters: Counters::new(),
            faults: FaultTable::new(),
            queue_bound: AtomicUsize::new(0),
            vanished: AtomicBool::new(false),
            shadow_doorbells: AtomicBool::new(false),
            fatal_sticky: AtomicBool::new(false),
        }
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
    pub(crate) fn reappear(&self) {
        self.vanished.store(false, Ordering::Release);
    }
}
