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
//! - [`conn`]: one non-blocking connection per queue, polled by its owner.
//! - [`session`]: blocking bring-up (admin queue, properties, CC.EN,
//!   Identify), I/O queue Connect, discovery, Keep Alive.
//!
//! # How a connection maps onto the driver's command transport
//!
//! A queue pair owns one [`conn::Connection`] the way it owns an SQ/CQ pair
//! on PCIe, and the transport trait's calls map one to one:
//! - `submit(cmd, data, tag)` → [`conn::Connection::submit`] with CID =
//!   tag: the command capsule is encoded into the send buffer (writes up to
//!   the in-capsule size from IOCCSZ travel inside it; larger writes and
//!   every read get a transport SGL and move by R2T/H2CData or C2HData).
//!   `Full` comes from the queue depth and the SQ head the target reports.
//! - `flush()` → [`conn::Connection::flush`]: one `write` of everything
//!   queued (partial writes resume on the next flush or poll).
//! - `poll(max, f)` → [`conn::Connection::poll`]: sends pending H2CData,
//!   reads what arrived without blocking (C2HData straight into the
//!   command's buffer), and reports completions. A lost connection reports
//!   every command in flight as failed (`TcpFailure::ConnectionLost`), each
//!   exactly once.
//! - `cancel(tag)` → NVMe/TCP cannot withdraw a command it has sent; the
//!   queue pair's policy applies: an Abort on the admin queue, then a
//!   reconnect (this transport's reset: fail the connection, which completes
//!   everything in flight, and Connect a new one with the same QID).
//! - `max_transfer()` → the controller's MDTS; `capacity()` → the queue depth.
//!
//! The admin queue works the same way; [`session::FabricsController`] drives
//! it blocking for bring-up and answers Keep Alive on the clock.

#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod buf;
pub mod conn;
pub mod discovery;
pub mod error;
pub mod fabrics;
pub mod pdu;
pub mod rx;
pub mod session;

pub use buf::DataBuf;
pub use conn::{
    Connection, ConnectionOptions, Direction, SubmitRefusal, TcpCompletion, TcpFailure, TcpOutcome,
};
pub use error::TcpError;
pub use session::{FabricsController, SessionOptions, TcpTarget, discover, run_blocking};
