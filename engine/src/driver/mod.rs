//! The NVMe driver: controller bring-up, admin commands, I/O queue pairs,
//! PRPs and namespaces (NVMe Base Specification 2.0, NVM Command Set 1.0).
//!
//! - [`Controller`]: bring-up state machine, Identify, namespaces, Number of
//!   Queues, admin passthrough, log pages, features, shutdown.
//! - [`QueuePair`]: one polled I/O queue pair owned by one thread, generic
//!   over the [`transport`] that carries its commands; [`IoQueuePair`] is
//!   the one over PCIe ([`PcieQueue`]: SQ/CQ rings, doorbells, PRPs).
//! - [`Splitter`]: reads and writes above the maximum transfer or across
//!   the optimal I/O boundary, split into child commands over a queue
//!   pair's public calls, answered once.
//! - [`Namespace`]: block geometry and the checks run before submission;
//!   `request` ([`IoOptions`], [`IoData`]): metadata, protection
//!   information, SGLs and vectored buffers, checked against the format.
//! - `prp`: the PRP builder ([`PrpError`] when a buffer cannot be described).
//! - Shadow doorbells (Doorbell Buffer Config, opt-in): when the controller supports
//!   them, I/O queues publish tails and heads in host memory and write MMIO
//!   doorbells only when the device's EventIdx asks for one
//!   ([`ControllerOptions::shadow_doorbells`]; configured again after every
//!   reset; [`QueuePairStats`] counts MMIO writes and shadow-only updates).
//! - Asynchronous events: Asynchronous Event Requests kept outstanding and
//!   re-sent after every reset; namespaces attached, detached and resized
//!   at run time, SMART / Health warnings and error log entries reach the
//!   application through [`Controller::events`] ([`ControllerEvent`]).
//! - Reliability: per-command deadlines checked by
//!   [`IoQueuePair::check_timeouts`] (Abort, then controller reset),
//!   [`Controller::reset`] with each queue pair re-creating its queues on its
//!   own thread, retries of DNR=0 errors, and surprise removal
//!   ([`DeviceGone`]). `docs/GUARANTEES.md` states the contract.
//!
//! # Floor plan
//!
//! Layers, lowest first. A module imports only from layers below its own
//! (and its own folder); none imports upward, so there are no cycles.
//!
//! 1. Leaves, each importing only leaves named before it: `health`,
//!    `options` ([`ControllerOptions`]), `prp` (the PRP builder and its sink
//!    into list pages), `ring` (SQ/CQ rings and shadow doorbell slots: the
//!    ring invariants are written there), `tracker` (the CID slab: the CID
//!    and generation-bit invariants are written there), `stats`
//!    ([`QueuePairStats`]), `error` (every error type), `bounds` (limits on
//!    what a device reports), `namespace`, [`transport`] (the command-level
//!    seam), `events` ([`ControllerEvent`], [`EventStats`]), `request`
//!    (metadata, PI, SGL and vectored requests checked against the
//!    namespace's format). `engine/tests/driver_layers.rs` holds the order.
//! 2. `admin`: the admin queue, one synchronous command at a time.
//! 3. `shared/`: the state a controller and its queue pairs share — the
//!    device, the admin queue behind its mutex, queue ids and queue
//!    creation, bring-up, reset and the health/generation word (its
//!    invariant is written in `shared/recovery.rs`), the DMA fence, the
//!    doorbell buffer, the asynchronous event requests. Fields private to
//!    the folder.
//! 4. `qpair/`: [`IoQueuePair`] — submit, complete, timeouts, recovery
//!    after a reset, teardown, synchronous helpers. Fields private to the
//!    folder.
//! 5. `split` ([`Splitter`], over the queue pair's public calls) and
//!    `controller/` ([`Controller`], the public handle over `shared/`, its
//!    log-page, feature and event helpers); neither imports the other.
//!
//! The driver has no `unsafe` code: device-visible memory is reached only
//! through [`crate::dma::DmaView`] and its fixed-size entries.
//!
//! A complete program against the built-in emulated controller:
//!
//! ```
//! use nvme_emu::{EmuConfig, EmuController};
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
mod events;
mod health;
mod namespace;
mod options;
mod prp;
mod qpair;
mod request;
mod ring;
mod shared;
mod split;
mod stats;
mod tracker;
pub mod transport;

pub use admin::{AdminStats, MAX_ASYNC_EVENT_REQUESTS};
pub use bounds::{MAX_ACTIVE_NAMESPACES, NAMESPACE_LIST_ENTRIES};
pub use controller::Controller;
pub use error::{
    DeviceGone, DriverError, FusedSubmitError, FusedSyncError, IoError, SubmitError,
    SubmitErrorKind, SyncError,
};
pub use events::{ControllerEvent, EVENT_QUEUE_LIMIT, EventStats};
pub use health::Health;
pub use namespace::{LbaRange, MAX_BLOCKS_PER_COMMAND, Namespace, SkippedNamespace};
pub use options::ControllerOptions;
pub use prp::PrpError;
pub use qpair::timeouts::{MAX_ABORTS_PER_SCAN, STALL_CHECK};
pub use qpair::{
    IoCompletion, IoQueuePair, MAX_IO_QUEUE_ENTRIES, PcieQueue, Prps, QueuePair, QueuePairOptions,
};
pub use request::{IoData, IoOptions};
pub use split::{CHILD_TOKENS, SplitStats, Splitter};
pub use stats::QueuePairStats;
pub use tracker::IoExtra;
pub use transport::{DataPointer, MetadataPointer};
