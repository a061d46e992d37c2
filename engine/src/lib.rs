//! nvme-engine: a polled-mode, run-to-completion userspace NVMe driver.
//!
//! - [`spec`]: NVMe specification types (registers, queue entries, identify
//!   data, status codes, log pages).
//! - [`cpu`]: the CPUs the process may use, pinning, helper-thread CPUs.
//! - [`device`]: the transport seam (register access and DMA mapping).
//! - [`dma`]: hugepage-backed DMA memory, regions and per-thread pools.
//! - [`driver`]: controller bring-up, admin commands, I/O queue pairs.
//! - [`vfio`]: real controllers through VFIO (IOMMU or opt-in no-IOMMU).
//! - [`uring`]: NVMe passthrough over io_uring on the kernel's generic node (Linux).
//! - [`tcp`]: NVMe over TCP (NVMe/TCP PDUs, Fabrics commands, connections).
//!
//! The emulated NVMe controller every tool opens by default lives in its own
//! crate, `nvme-emu`.

pub mod cpu;
pub mod device;
pub mod dma;
pub mod driver;
pub mod spec;
pub mod tcp;
#[cfg(target_os = "linux")]
pub mod uring;
pub mod vfio;

pub use device::{Device, QuiesceError};
pub use driver::{
    Controller, ControllerOptions, DriverError, Health, IoCompletion, IoError, IoQueuePair,
    LbaRange, Namespace, QueuePairOptions, QueuePairStats, SubmitError, SubmitErrorKind, SyncError,
};
