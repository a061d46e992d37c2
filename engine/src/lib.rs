//! nvme-engine: a polled-mode, run-to-completion userspace NVMe driver.
//!
//! - [`spec`]: NVMe specification types (registers, queue entries, identify
//!   data, status codes, log pages).
//! - [`device`]: the transport seam (register access and DMA mapping).
//! - [`dma`]: hugepage-backed DMA memory, regions and per-thread pools.
//! - [`driver`]: controller bring-up, admin commands, I/O queue pairs.
//! - [`emu`]: the built-in emulated NVMe controller (the default device).
//! - [`vfio`]: real controllers through VFIO (IOMMU or opt-in no-IOMMU).
//! - [`uring`]: NVMe passthrough over io_uring on the kernel's generic node (Linux).

pub mod device;
pub mod dma;
pub mod driver;
pub mod emu;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod spec;
#[cfg(target_os = "linux")]
pub mod uring;
pub mod vfio;

pub use device::{Device, QuiesceError};
pub use driver::{
    Controller, ControllerOptions, DriverError, Health, IoCompletion, IoError, IoQueuePair,
    LbaRange, Namespace, QueuePairOptions, QueuePairStats, SubmitError, SubmitErrorKind, SyncError,
};
