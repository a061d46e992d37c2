//! The emulated controller object: creation from an [`EmuConfig`] and the
//! [`Device`] implementation (BAR0 reads and writes, DMA mapping through the
//! emulated IOMMU, quiescing). The top of the crate's layers: it assembles
//! the shared state, the command processor and the device thread.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;

use crate::config::{Backing, EmuConfig, EmuError, EmuMode};
use crate::device_thread;
use crate::handle::EmuHandle;
use crate::processor::CommandProcessor;
use crate::shared::Shared;
use nvme_engine::dma::{DmaError, DmaRegion, HostMemory};
use nvme_engine::spec::registers::{ALL_ONES, Cc, offset};
use nvme_engine::{Device, QuiesceError};

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// An emulated NVMe controller; see the [crate documentation](crate).
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
            .filter(|n| matches!(n.backing, Backing::Ram))
            .map(|n| n.bytes())
            .fold(0u64, u64::saturating_add);
        nvme_engine::dma::check_memory(ram, "the emulated controller's RAM namespaces")
            .map_err(EmuError::Memory)?;
        let processor = CommandProcessor::new(&config)?;
        let name = format!("emu:{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let shared = Arc::new(Shared::new(name, &config, processor));
        let thread = match config.mode {
            EmuMode::Inline => None,
            EmuMode::Threaded { idle, batch, core } => {
                Some(device_thread::spawn(shared.clone(), idle, batch, core)?)
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
            .field("name", &self.shared.state.name)
            .field("threaded", &self.thread.is_some())
            .finish()
    }
}

impl Device for EmuController {
    fn read32(&self, off: usize) -> u32 {
        if self.shared.state.vanished() {
            return ALL_ONES;
        }
        self.shared.state.regs.read(off)
    }

    fn write32(&self, off: usize, value: u32) {
        let sh = &*self.shared;
        if sh.state.vanished() {
            // A device configured to recover comes back on a controller
            // reset (CC.EN cleared); everything else is lost.
            let recover = off == offset::CC
                && !Cc::from(value).en()
                && sh.vanish_recovers.load(Ordering::Acquire);
            if !recover {
                return;
            }
            sh.state.reappear();
        }
        // Release stores: the device side reads these after taking its lock
        // or on CC.EN, which orders them anyway; release keeps it explicit.
        match off {
            offset::CC => sh.write_cc(value),
            offset::AQA => sh.state.regs.aqa.store(value, Ordering::Release),
            0x28 => sh.state.regs.asq[0].store(value, Ordering::Release),
            0x2C => sh.state.regs.asq[1].store(value, Ordering::Release),
            0x30 => sh.state.regs.acq[0].store(value, Ordering::Release),
            0x34 => sh.state.regs.acq[1].store(value, Ordering::Release),
            o if o >= offset::DOORBELLS => sh.write_doorbell(o, value),
            _ => {} // read-only or unsupported (INTMS/INTMC without MSI-X, NSSR)
        }
    }

    fn map_dma(&self, memory: HostMemory) -> Result<DmaRegion, DmaError> {
        self.shared.state.iommu.map(memory)
    }

    fn allows_plain_memory(&self) -> bool {
        true
    }

    /// Bus mastering off: every later DMA access fails (and the device
    /// stops processing, as a real one can no longer fetch commands). Fails
    /// only when a test asked it to ([`EmuHandle::set_quiesce_fails`]).
    fn quiesce(&self) -> Result<(), QuiesceError> {
        let sh = &*self.shared;
        if sh.quiesce_fails.load(Ordering::Acquire) {
            return Err(QuiesceError {
                device: sh.state.name.clone(),
                reason: "the emulated transport was told to refuse".into(),
            });
        }
        sh.with_processor(|p| p.halted = true);
        sh.state.iommu.stop_mastering();
        Ok(())
    }

    fn name(&self) -> String {
        self.shared.state.name.clone()
    }
}
