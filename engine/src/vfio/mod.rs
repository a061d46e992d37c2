//! Real NVMe controllers through the kernel's user-space device interfaces.
//!
//! - [`VfioDevice`]: a controller bound to vfio-pci. BAR0 is mapped from the
//!   VFIO device; DMA memory is mapped through the IOMMU at IOVAs allocated
//!   inside the ranges `VFIO_IOMMU_GET_INFO` reports (never at process
//!   virtual addresses: QEMU's emulated Intel IOMMU has 39 address bits).
//! - [`UioDevice`]: a controller bound to `uio_pci_generic`, for machines
//!   without an IOMMU. DMA uses physical addresses.
//! - [`RealDevice`]: either one, chosen by the current driver binding.
//!
//! The no-IOMMU paths (VFIO no-IOMMU groups and `uio_pci_generic`) are used
//! only when [`VfioOptions::no_iommu`] is set, and print a one-time warning:
//! without an IOMMU the device can reach all memory.
//!
//! Every opened controller has its own VFIO container; controllers opened
//! in one process map their DMA memory independently.
//!
//! Interrupts are never enabled: the driver polls completion queues.
//! No `unsafe` here: the ioctls, mappings and volatile BAR accesses this
//! module needs are the typed wrappers of the crate's `sys` module.

#![forbid(unsafe_code)]

mod address;
mod container;
mod error;
mod iova;
mod options;
mod pci_config;
mod real;
mod sysfs;
mod uio;
mod vfio_device;

pub use crate::sys::physical_region;
pub use address::{PciAddress, PciAddressError};
pub use error::VfioError;
pub use iova::IovaRange;
pub use options::VfioOptions;
pub use real::RealDevice;
pub use uio::UioDevice;
pub use vfio_device::VfioDevice;
