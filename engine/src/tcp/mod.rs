//! NVMe over TCP: the host side of the NVMe/TCP transport (NVMe/TCP
//! Transport Specification 1.0) and the Fabrics commands it needs (NVMe
//! Base 2.0 §6), for controllers that live on another machine — the Linux
//! kernel's `nvmet-tcp` target or SPDK's.
//!
//! - [`pdu`]: PDU headers, digests, a decoder that never panics and an
//!   encoder into a caller's buffer.
//! - [`fabrics`]: Connect, Property Get/Set, Keep Alive, SGL descriptors,
//!   Connect status decoding.
//! - [`discovery`]: the Discovery log page.
//! - [`rx`]: the receive state machine (bytes in any split → PDUs).
//! - `conn`: one non-blocking connection per queue, polled by its owner.
//! - `session`: blocking bring-up (admin queue, properties, CC.EN,
//!   Identify), I/O queue Connect, discovery, Keep Alive.
//! - `assoc`: the association shared by a device and its queues: Keep
//!   Alive and reconnection after a failure, on one thread per controller.
//! - `device`: [`TcpDevice`], the controller as users open it: its
//!   namespaces, I/O queues, pools and admin commands.
//! - `transport`: [`TcpTransport`], one I/O queue as the driver's command
//!   transport, so a [`TcpQueue`] is a [`crate::driver::QueuePair`].
//!
//! # How a connection maps onto the driver's command transport
//!
//! A queue pair owns one `Connection` the way it owns an SQ/CQ pair
//! on PCIe (see `transport.rs` for each call): `send` queues a command
//! capsule with CID = tag (writes up to the in-capsule size from IOCCSZ
//! inside it; larger writes and every read with a transport SGL, moved by
//! R2T/H2CData or C2HData); `flush` is one `write` of everything queued
//! (partial writes resume later); a reap sends pending H2CData and reads
//! what arrived without blocking (C2HData straight into the command's
//! buffer). A lost connection reports every command in flight failed, each
//! exactly once. A command past its deadline is aborted with the Abort
//! admin command on the admin queue (from the association's thread, as
//! PCIe aborts from its admin worker); when that fails or the command still
//! does not come back, the association is reset (this transport's reset)
//! and the queue reconnects with the same QID once it is back.
//!
//! The admin queue works the same way; [`FabricsController`] drives
//! it blocking for bring-up and answers Keep Alive on the clock.

#![forbid(unsafe_code)]

mod assoc;
mod buf;
mod conn;
mod device;
pub mod discovery;
mod error;
pub mod fabrics;
pub mod pdu;
pub mod rx;
mod session;
mod transport;

pub use assoc::{AssociationStats, RecoveryOptions};
pub use buf::{DataBuf, host_pool};
pub use conn::{
    Connection, ConnectionOptions, Direction, SubmitRefusal, TcpCompletion, TcpFailure, TcpOutcome,
};
pub use device::{TcpDevice, TcpDeviceOptions, TcpParams, TcpQueueOptions};
pub use error::TcpError;
pub use session::{FabricsController, SessionOptions, TcpTarget, discover, run_blocking};
pub use transport::{TcpQueue, TcpQueueStats, TcpTransport};
