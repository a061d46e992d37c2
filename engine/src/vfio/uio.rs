//! A controller bound to `uio_pci_generic` (no-IOMMU, explicit opt-in only):
//! BAR0 mapped from sysfs `resource0`, bus mastering through the sysfs
//! `config` file, DMA at physical addresses from `/proc/self/pagemap`.

#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;

use super::container::physical_region;
use super::error::VfioError;
use super::options::{VfioOptions, warn_no_iommu};
use super::pci_config;
use super::sysfs::{self, Binding, PciProbe};
use super::vfio_device::{MIN_BAR0, wrong_driver};
use crate::device::{Device, QuiesceError};
use crate::dma::{DmaError, DmaRegion, HostMemory};
use crate::sys::Bar;

/// An NVMe controller driven through `uio_pci_generic` without an IOMMU.
pub struct UioDevice {
    name: String,
    bar: Bar,
    _resource: File,
    /// The sysfs `config` file (bus mastering).
    config: File,
    /// The sysfs `reset` file (function-level reset), when the device has one.
    reset: std::path::PathBuf,
}

impl UioDevice {
    /// Open the controller at `pci_address`, bound to `uio_pci_generic`.
    /// Needs `opts.no_iommu` (and root, for physical addresses).
    pub fn open(pci_address: &str, opts: VfioOptions) -> Result<UioDevice, VfioError> {
        let probe = sysfs::probe(pci_address, &opts)?;
        if probe.binding != Binding::Uio {
            return Err(wrong_driver(&probe, &probe.binding));
        }
        Self::open_probed(&probe, &opts)
    }

    pub(crate) fn open_probed(
        probe: &PciProbe,
        opts: &VfioOptions,
    ) -> Result<UioDevice, VfioError> {
        let name = probe.address.to_string();
        if !opts.no_iommu {
            return Err(VfioError::NoIommuNotAllowed {
                address: name,
                how: "bound to uio_pci_generic",
            });
        }
        let io = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| VfioError::Io { path, source }
        };
        let res_path = probe.dir.join("resource0");
        let resource = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_SYNC)
            .open(&res_path)
            .map_err(io(&res_path))?;
        let len = resource.metadata().map_err(io(&res_path))?.len();
        let len = usize::try_from(len).unwrap_or(0);
        let bar_err = |reason: String| VfioError::Bar {
            address: name.clone(),
            reason,
        };
        if len < MIN_BAR0 {
            return Err(bar_err(format!(
                "{} is {len:#x} bytes, smaller than the {MIN_BAR0:#x} bytes of NVMe registers",
                res_path.display()
            )));
        }
        let bar = Bar::map(resource.as_fd(), 0, len)
            .map_err(|e| bar_err(format!("mmap of {} failed: {e}", res_path.display())))?;
        let cfg_path = probe.dir.join("config");
        let config = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&cfg_path)
            .map_err(io(&cfg_path))?;
        pci_config::enable_bus_master(&config, 0).map_err(io(&cfg_path))?;
        warn_no_iommu(&name, "uio_pci_generic");
        Ok(UioDevice {
            name,
            bar,
            _resource: resource,
            config,
            reset: probe.dir.join("reset"),
        })
    }
}

impl Device for UioDevice {
    #[inline]
    fn read32(&self, offset: usize) -> u32 {
        self.bar.read32(offset)
    }

    #[inline]
    fn write32(&self, offset: usize, value: u32) {
        self.bar.write32(offset, value)
    }

    fn map_dma(&self, memory: HostMemory) -> Result<DmaRegion, DmaError> {
        physical_region(memory, &self.name)
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    /// Bus mastering off through the sysfs `config` file (read back), then
    /// a function-level reset through sysfs `reset` where the device has
    /// one. Either proves the device can no longer DMA.
    fn quiesce(&self) -> Result<(), QuiesceError> {
        let bus_master = pci_config::disable_bus_master(&self.config, 0);
        let reset = std::fs::write(&self.reset, b"1");
        match (bus_master, reset) {
            (Ok(()), _) | (_, Ok(())) => Ok(()),
            (Err(bm), Err(rst)) => Err(QuiesceError {
                device: self.name.clone(),
                reason: format!(
                    "turning off bus mastering through the sysfs config file failed ({bm}) and \
                     {} failed ({rst})",
                    self.reset.display()
                ),
            }),
        }
    }
}

impl std::fmt::Debug for UioDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UioDevice")
            .field("name", &self.name)
            .field("bar", &self.bar)
            .finish()
    }
}
