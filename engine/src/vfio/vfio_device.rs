//! A controller bound to vfio-pci: BAR0 mapped from the VFIO device, bus
//! mastering enabled through the config region, DMA through the IOMMU (or,
//! opted in, VFIO's no-IOMMU mode with physical addresses).

#![forbid(unsafe_code)]

use std::fs::File;
use std::os::fd::AsFd;
use std::sync::Arc;

use vfio_bindings::bindings::vfio::{
    VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX, VFIO_REGION_INFO_FLAG_MMAP,
};

use super::container::Container;
use super::error::VfioError;
use super::iova::IovaRange;
use super::options::{VfioOptions, warn_no_iommu};
use super::pci_config;
use super::sysfs::{self, Binding, PciProbe};
use crate::device::{Device, QuiesceError};
use crate::dma::{DmaError, DmaRegion, HostMemory};
use crate::sys;
use crate::sys::Bar;

/// The smallest BAR0 that holds the registers and the admin queue's
/// doorbells (NVMe 2.0 §3.1.4: doorbells start at 1000h).
pub(crate) const MIN_BAR0: usize = 0x1008;

/// An NVMe controller opened through VFIO.
pub struct VfioDevice {
    name: String,
    // Field order is drop order: unmap the BAR, close the device, then
    // release the container (kept alive longer by any DMA region).
    bar: Bar,
    // Keeps the device open (and therefore owned by this process).
    device: File,
    /// Offset of the PCI config region in the device fd.
    config_offset: u64,
    container: Arc<Container>,
}

impl VfioDevice {
    /// Open the controller at `pci_address` (`0000:bb:dd.f` or `bb:dd.f`),
    /// which must be bound to vfio-pci. Every failure names its fix.
    pub fn open(pci_address: &str, opts: VfioOptions) -> Result<VfioDevice, VfioError> {
        let probe = sysfs::probe(pci_address, &opts)?;
        match &probe.binding {
            Binding::Vfio => Self::open_probed(&probe, &opts),
            Binding::Uio => Err(VfioError::WrongDriver {
                address: probe.address.to_string(),
                driver: "driver `uio_pci_generic` (open it with `RealDevice::open` and \
                         `no_iommu: true`, or rebind)"
                    .to_string(),
            }),
            other => Err(wrong_driver(&probe, other)),
        }
    }

    pub(crate) fn open_probed(
        probe: &PciProbe,
        opts: &VfioOptions,
    ) -> Result<VfioDevice, VfioError> {
        let name = probe.address.to_string();
        let (container, device) = Container::open(probe, opts)?;
        let bar_err = |reason: String| VfioError::Bar {
            address: name.clone(),
            reason,
        };
        let ioctl_err = |source| VfioError::Ioctl {
            what: "VFIO_DEVICE_GET_REGION_INFO",
            path: format!("the device fd of {name}").into(),
            source,
        };
        let bar0 =
            sys::region_info(device.as_fd(), VFIO_PCI_BAR0_REGION_INDEX).map_err(ioctl_err)?;
        if bar0.flags & VFIO_REGION_INFO_FLAG_MMAP == 0 {
            return Err(bar_err(
                "VFIO does not allow mapping it (no MMAP flag)".into(),
            ));
        }
        let len = usize::try_from(bar0.size).unwrap_or(0);
        if len < MIN_BAR0 {
            return Err(bar_err(format!(
                "it is {:#x} bytes, smaller than the {MIN_BAR0:#x} bytes of NVMe registers",
                bar0.size
            )));
        }
        let bar = Bar::map(device.as_fd(), bar0.offset, len)
            .map_err(|e| bar_err(format!("mmap failed: {e}")))?;
        let config =
            sys::region_info(device.as_fd(), VFIO_PCI_CONFIG_REGION_INDEX).map_err(ioctl_err)?;
        pci_config::enable_bus_master(&device, config.offset).map_err(|source| VfioError::Io {
            path: format!("the PCI config region of {name}").into(),
            source,
        })?;
        if container.is_no_iommu() {
            warn_no_iommu(&name, "VFIO no-IOMMU mode");
        }
        Ok(VfioDevice {
            name,
            bar,
            device,
            config_offset: config.offset,
            container,
        })
    }

    /// The IOVA ranges DMA mappings are placed in (empty in no-IOMMU mode,
    /// where addresses are physical).
    pub fn iova_ranges(&self) -> Vec<IovaRange> {
        self.container.iova_ranges()
    }

    /// Whether this device runs in VFIO no-IOMMU mode.
    pub fn is_no_iommu(&self) -> bool {
        self.container.is_no_iommu()
    }

    /// Length of the mapped BAR0 in bytes.
    pub fn bar_len(&self) -> usize {
        self.bar.len()
    }
}

pub(crate) fn wrong_driver(probe: &PciProbe, binding: &Binding) -> VfioError {
    let driver = match binding {
        Binding::Unbound => "no driver".to_string(),
        Binding::Other(d) => format!("driver `{d}`"),
        Binding::Vfio => "vfio-pci".to_string(),
        Binding::Uio => "driver `uio_pci_generic`".to_string(),
        Binding::KernelNvme => "driver `nvme`".to_string(),
    };
    VfioError::WrongDriver {
        address: probe.address.to_string(),
        driver,
    }
}

impl Device for VfioDevice {
    #[inline]
    fn read32(&self, offset: usize) -> u32 {
        self.bar.read32(offset)
    }

    #[inline]
    fn write32(&self, offset: usize, value: u32) {
        self.bar.write32(offset, value)
    }

    fn map_dma(&self, memory: HostMemory) -> Result<DmaRegion, DmaError> {
        self.container.map(memory)
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    /// Bus mastering off through the VFIO config region (read back), then
    /// VFIO_DEVICE_RESET (a function-level or bus reset chosen by vfio-pci).
    /// Either one proves the device can no longer DMA.
    fn quiesce(&self) -> Result<(), QuiesceError> {
        let bus_master = pci_config::disable_bus_master(&self.device, self.config_offset);
        let reset = sys::device_reset(self.device.as_fd());
        match (bus_master, reset) {
            (Ok(()), _) | (_, Ok(_)) => Ok(()),
            (Err(bm), Err(rst)) => Err(QuiesceError {
                device: self.name.clone(),
                reason: format!(
                    "turning off bus mastering failed ({bm}) and VFIO_DEVICE_RESET failed ({rst})"
                ),
            }),
        }
    }
}

impl std::fmt::Debug for VfioDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfioDevice")
            .field("name", &self.name)
            .field("bar", &self.bar)
            .field("no_iommu", &self.is_no_iommu())
            .finish()
    }
}
