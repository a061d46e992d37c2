//! One type for every way of reaching a real controller, chosen by the
//! driver the controller is bound to.

#![forbid(unsafe_code)]

use super::error::VfioError;
use super::options::VfioOptions;
use super::sysfs::{self, Binding};
use super::uio::UioDevice;
use super::vfio_device::{VfioDevice, wrong_driver};
use crate::device::Device;
use crate::dma::{DmaError, DmaRegion, HostMemory};

/// A real NVMe controller: through VFIO (IOMMU, or opted-in no-IOMMU), or
/// through `uio_pci_generic` (opted-in no-IOMMU).
#[derive(Debug)]
pub enum RealDevice {
    /// Bound to vfio-pci.
    Vfio(VfioDevice),
    /// Bound to uio_pci_generic.
    Uio(UioDevice),
}

impl RealDevice {
    /// Open the controller at `pci_address` through whatever it is bound to.
    /// No-IOMMU bindings are used only with `opts.no_iommu`.
    pub fn open(pci_address: &str, opts: VfioOptions) -> Result<RealDevice, VfioError> {
        let probe = sysfs::probe(pci_address, &opts)?;
        // A uio_pci_generic binding is already the no-IOMMU path: its own
        // refusal says how to opt in, without asking to bind it again.
        if probe.iommu_group.is_none() && !opts.no_iommu && probe.binding != Binding::Uio {
            return Err(VfioError::NoIommu {
                address: probe.address.to_string(),
                sysfs: opts.sysfs_root.display().to_string(),
            });
        }
        match &probe.binding {
            Binding::Vfio => VfioDevice::open_probed(&probe, &opts).map(RealDevice::Vfio),
            Binding::Uio => UioDevice::open_probed(&probe, &opts).map(RealDevice::Uio),
            other => Err(wrong_driver(&probe, other)),
        }
    }
}

impl Device for RealDevice {
    #[inline]
    fn read32(&self, offset: usize) -> u32 {
        match self {
            RealDevice::Vfio(d) => d.read32(offset),
            RealDevice::Uio(d) => d.read32(offset),
        }
    }

    #[inline]
    fn write32(&self, offset: usize, value: u32) {
        match self {
            RealDevice::Vfio(d) => d.write32(offset, value),
            RealDevice::Uio(d) => d.write32(offset, value),
        }
    }

    fn map_dma(&self, memory: HostMemory) -> Result<DmaRegion, DmaError> {
        match self {
            RealDevice::Vfio(d) => d.map_dma(memory),
            RealDevice::Uio(d) => d.map_dma(memory),
        }
    }

    fn name(&self) -> String {
        match self {
            RealDevice::Vfio(d) => d.name(),
            RealDevice::Uio(d) => d.name(),
        }
    }

    fn quiesce(&self) -> Result<(), crate::device::QuiesceError> {
        match self {
            RealDevice::Vfio(d) => d.quiesce(),
            RealDevice::Uio(d) => d.quiesce(),
        }
    }
}
