//! The NVMe driver: controller bring-up, admin commands, I/O queue pairs,
//! PRPs and namespaces (NVMe Base Specification 2.0, NVM Command Set 1.0).
//!
//! - [`Controller`]: bring-up state machine, Identify, namespaces, Number of
//!   Queues, admin passthrough, log pages, features, shutdown.
//! - [`IoQueuePair`]: one polled I/O SQ/CQ pair owned by one thread.
//! - [`Namespace`]: block geometry and the checks run before submission.
//! - [`prp`]: the PRP builder.

mod admin;
mod controller;
mod error;
mod namespace;
pub mod prp;
mod qpair;
mod ring;
mod tracker;

pub use admin::AdminStats;
pub use controller::{Controller, ControllerOptions};
pub use error::{DriverError, IoError, SubmitError, SubmitErrorKind, SyncError};
pub use namespace::{LbaRange, MAX_BLOCKS_PER_COMMAND, Namespace, SkippedNamespace};
pub use qpair::{
    IoCompletion, IoQueuePair, MAX_IO_QUEUE_ENTRIES, QueuePairOptions, QueuePairStats,
};
