//! The NVMe driver: controller bring-up, admin commands, I/O queue pairs,
//! PRPs and namespaces (NVMe Base Specification 2.0, NVM Command Set 1.0).
//!
//! - [`Controller`]: bring-up state machine, Identify, namespaces, Number of
//!   Queues, admin passthrough, log pages, features, shutdown.
//! - [`IoQueuePair`]: one polled I/O SQ/CQ pair owned by one thread.
//! - [`Namespace`]: block geometry and the checks run before submission.
//! - [`prp`]: the PRP builder.
//! - Shadow doorbells (Doorbell Buffer Config): when the controller supports
//!   them, I/O queues publish tails and heads in host memory and write MMIO
//!   doorbells only when the device's EventIdx asks for one
//!   ([`ControllerOptions::shadow_doorbells`]; configured again after every
//!   reset; [`QueuePairStats`] counts MMIO writes and shadow-only updates).
//! - Reliability: per-command deadlines checked by
//!   [`IoQueuePair::check_timeouts`] (Abort, then controller reset),
//!   [`Controller::reset`] with each queue pair re-creating its queues on its
//!   own thread, retries of DNR=0 errors, and surprise removal
//!   ([`IoError::DeviceRemoved`]). `docs/GUARANTEES.md` states the contract.
//!
//! A complete program against the built-in emulated controller:
//!
//! ```
//! use nvme_engine::emu::{EmuConfig, EmuController};
//! use nvme_engine::{Controller, ControllerOptions, QueuePairOptions};
//!
//! let device = EmuController::new(EmuConfig::ram(16 << 20)).unwrap();
//! let ctrl = Controller::new(device, ControllerOptions::default()).unwrap();
//! let ns = ctrl.namespace(1).unwrap();
//! let mut qp = ctrl.create_io_qpair(QueuePairOptions::default()).unwrap();
//! let mut pool = ctrl.create_pool(1 << 20).unwrap();
//! let mut buf = pool.alloc(4096).unwrap();
//! buf.write_at(0, b"hello, nvme");
//! let buf = qp.write_sync(ns, 0, buf, false).unwrap();
//! let buf = qp.read_sync(ns, 0, buf).unwrap();
//! assert_eq!(&buf.to_vec()[..11], b"hello, nvme");
//! ```

#![forbid(unsafe_code)]

mod admin;
mod bounds;
mod controller;
mod error;
mod namespace;
mod options;
pub mod prp;
mod qpair;
mod ring;
mod shared;
mod tracker;

pub use admin::AdminStats;
pub use bounds::{MAX_ACTIVE_NAMESPACES, NAMESPACE_LIST_ENTRIES};
pub use controller::Controller;
pub use error::{DriverError, IoError, SubmitError, SubmitErrorKind, SyncError};
pub use namespace::{LbaRange, MAX_BLOCKS_PER_COMMAND, Namespace, SkippedNamespace};
pub use options::ControllerOptions;
pub use qpair::timeouts::{MAX_ABORTS_PER_SCAN, STALL_CHECK};
pub use qpair::{
    IoCompletion, IoQueuePair, MAX_IO_QUEUE_ENTRIES, QueuePairOptions, QueuePairStats,
};
pub use shared::recovery::Health;
