//! The device type every controller is driven through: the built-in
//! emulated controller or a real one, behind one [`Device`] so all workers
//! share one monomorphised I/O path.
//!
//! The emulator's register accesses go through `#[inline(never)]`
//! functions (`emu_read32`, `emu_write32`): every instruction the emulator
//! spends in inline mode is then inside those two symbols, which is how
//! `scripts/bench.sh` separates engine from emulator cost under callgrind.

#![forbid(unsafe_code)]

use nvme_emu::EmuController;
use nvme_engine::Device;
use nvme_engine::dma::{DmaError, DmaRegion, HostMemory};
use nvme_engine::vfio::RealDevice;

/// A controller nvme-perf can drive.
#[derive(Debug)]
pub enum PerfDevice {
    /// The built-in emulated controller.
    Emu(EmuController),
    /// A real controller (VFIO or uio_pci_generic).
    Real(RealDevice),
}

impl From<EmuController> for PerfDevice {
    fn from(d: EmuController) -> Self {
        PerfDevice::Emu(d)
    }
}

impl From<RealDevice> for PerfDevice {
    fn from(d: RealDevice) -> Self {
        PerfDevice::Real(d)
    }
}

#[inline(never)]
fn emu_read32(d: &EmuController, offset: usize) -> u32 {
    d.read32(offset)
}

#[inline(never)]
fn emu_write32(d: &EmuController, offset: usize, value: u32) {
    d.write32(offset, value)
}

impl Device for PerfDevice {
    #[inline]
    fn read32(&self, offset: usize) -> u32 {
        match self {
            PerfDevice::Emu(d) => emu_read32(d, offset),
            PerfDevice::Real(d) => d.read32(offset),
        }
    }

    #[inline]
    fn write32(&self, offset: usize, value: u32) {
        match self {
            PerfDevice::Emu(d) => emu_write32(d, offset, value),
            PerfDevice::Real(d) => d.write32(offset, value),
        }
    }

    fn map_dma(&self, memory: HostMemory) -> Result<DmaRegion, DmaError> {
        match self {
            PerfDevice::Emu(d) => d.map_dma(memory),
            PerfDevice::Real(d) => d.map_dma(memory),
        }
    }

    fn allows_plain_memory(&self) -> bool {
        match self {
            PerfDevice::Emu(d) => d.allows_plain_memory(),
            PerfDevice::Real(d) => d.allows_plain_memory(),
        }
    }

    fn name(&self) -> String {
        match self {
            PerfDevice::Emu(d) => d.name(),
            PerfDevice::Real(d) => d.name(),
        }
    }

    fn quiesce(&self) -> Result<(), nvme_engine::QuiesceError> {
        match self {
            PerfDevice::Emu(d) => d.quiesce(),
            PerfDevice::Real(d) => d.quiesce(),
        }
    }
}
