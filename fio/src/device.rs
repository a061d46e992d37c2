//! The device type the ioengine drives: the built-in emulated controller or
//! a real one, behind one [`Device`] so the I/O path is monomorphised once.

#![forbid(unsafe_code)]

use nvme_engine::Device;
use nvme_engine::dma::{DmaError, DmaRegion, HostMemory};
use nvme_engine::emu::EmuController;
use nvme_engine::vfio::RealDevice;

/// A controller behind a fio filename.
#[derive(Debug)]
pub enum FioDevice {
    /// The built-in emulated controller.
    Emu(EmuController),
    /// A real controller (vfio-pci or uio_pci_generic).
    Real(RealDevice),
}

impl Device for FioDevice {
    #[inline]
    fn read32(&self, offset: usize) -> u32 {
        match self {
            FioDevice::Emu(d) => d.read32(offset),
            FioDevice::Real(d) => d.read32(offset),
        }
    }

    #[inline]
    fn write32(&self, offset: usize, value: u32) {
        match self {
            FioDevice::Emu(d) => d.write32(offset, value),
            FioDevice::Real(d) => d.write32(offset, value),
        }
    }

    fn map_dma(&self, memory: HostMemory) -> Result<DmaRegion, DmaError> {
        match self {
            FioDevice::Emu(d) => d.map_dma(memory),
            FioDevice::Real(d) => d.map_dma(memory),
        }
    }

    fn allows_plain_memory(&self) -> bool {
        match self {
            FioDevice::Emu(d) => d.allows_plain_memory(),
            FioDevice::Real(d) => d.allows_plain_memory(),
        }
    }

    fn name(&self) -> String {
        match self {
            FioDevice::Emu(d) => d.name(),
            FioDevice::Real(d) => d.name(),
        }
    }
}
