//! nvme-engine: a polled-mode, run-to-completion userspace NVMe driver.
//!
//! # One path per item
//!
//! What every program uses — the driver ([`Controller`], [`IoQueuePair`],
//! [`Namespace`], their options, statistics and errors) and the device seam
//! ([`Device`]) — sits at the crate root; the modules that hold it are
//! private. The lower layers a program reaches into on purpose are public
//! modules, and their items are named only through them:
//!
//! - [`spec`]: NVMe specification types (registers, queue entries, identify
//!   data, status codes, log pages).
//! - [`cpu`]: the CPUs the process may use, pinning, helper-thread CPUs.
//! - [`dma`]: hugepage-backed DMA memory, regions and per-thread pools.
//! - [`pi`]: protection information in software (T10-DIF guard, tuples
//!   generated and checked per block).
//! - [`vfio`]: real controllers through VFIO (IOMMU or opt-in no-IOMMU).
//! - [`uring`]: NVMe passthrough over io_uring on the kernel's generic node (Linux).
//! - [`tcp`]: NVMe over TCP (NVMe/TCP PDUs, Fabrics commands, connections).
//!
//! The driver (`driver/`: controller bring-up, admin commands, I/O queue
//! pairs) and the device seam (`device.rs`: register access and DMA mapping)
//! document their own floor plan. The emulated NVMe controller every tool
//! opens by default lives in its own crate, `nvme-emu`. `docs/ARCHITECTURE.md`
//! draws the layers and follows one I/O through them.

// Unsafe code lives in `sys.rs` (system calls, BAR and TSC accesses),
// `dma/view.rs` (DMA memory accesses) and the io_uring and NVMe/TCP
// modules' own fenced files; every other module may not use it.
#![deny(unsafe_code)]

pub mod cpu;
mod device;
pub mod dma;
mod driver;
pub mod pi;
pub mod spec;
mod sys;
pub mod tcp;
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // io_uring system calls and shared rings: uring/ring.rs only (uring/mod.rs).
pub mod uring;
pub mod vfio;

pub use device::{Device, QuiesceError};
pub use driver::{
    AdminStats, Controller, ControllerOptions, DeviceGone, DriverError, Health, IoCompletion,
    IoError, IoQueuePair, LbaRange, MAX_ABORTS_PER_SCAN, MAX_ACTIVE_NAMESPACES,
    MAX_BLOCKS_PER_COMMAND, MAX_IO_QUEUE_ENTRIES, NAMESPACE_LIST_ENTRIES, Namespace, PrpError,
    QueuePairOptions, QueuePairStats, STALL_CHECK, SkippedNamespace, SubmitError, SubmitErrorKind,
    SyncError,
};
pub use driver::{CHILD_TOKENS, SplitStats, Splitter};
pub use driver::{ControllerEvent, EVENT_QUEUE_LIMIT, EventStats, MAX_ASYNC_EVENT_REQUESTS};
pub use driver::{
    DataPointer, FusedSubmitError, FusedSyncError, IoData, IoExtra, IoOptions, MetadataPointer,
};
pub use driver::{PcieQueue, Prps, QueuePair, transport};
