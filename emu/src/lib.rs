//! The built-in emulated NVMe controller.
//!
//! [`EmuController`] implements [`nvme_engine::Device`] with the same protocol as
//! hardware, so the driver runs against it unchanged:
//!
//! - a BAR0 register file (CAP, VS, CC, CSTS, AQA, ASQ, ACQ, doorbells at
//!   0x1000 with a 4-byte stride) with the specification's enable, reset
//!   and shutdown semantics;
//! - queues in the host's DMA memory, reached only through an emulated
//!   IOMMU that hands out its own IOVAs and fails any access outside
//!   registered memory with Data Transfer Error (counted in `dma_faults`);
//! - PRP handling like hardware, admin and NVM I/O commands with the
//!   specification's error statuses, and a CQ that never overflows (the
//!   device holds completions back until the host frees slots);
//! - namespaces in RAM, in files, or in nothing at all (null);
//! - inline mode (a doorbell write processes its queue on the writing
//!   thread) or threaded mode (a device thread polls the doorbells);
//! - shadow doorbells (Doorbell Buffer Config) with QEMU's EventIdx rule;
//! - fault injection and counters through an [`EmuHandle`].
//!
//! ```
//! use nvme_emu::{EmuConfig, EmuController};
//! let ctrl = EmuController::new(EmuConfig::ram(16 << 20)).unwrap();
//! let handle = ctrl.handle();
//! // hand `ctrl` to the driver; keep `handle` for faults and counters
//! assert_eq!(handle.stats().dma_faults, 0);
//! ```

mod admin;
mod backend;
mod config;
mod controller;
mod dbbuf;
mod engine;
mod faults;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod handle;
mod io;
mod memory;
mod prp;
mod queues;
mod registers;
mod thread;

pub use config::{Backing, EmuConfig, EmuError, EmuMode, EmuNamespaceConfig, IdlePolicy};
pub use controller::EmuController;
pub use faults::{FaultAction, FaultId, FaultRule, QueueKind};
pub use handle::{EmuHandle, EmuStats};
