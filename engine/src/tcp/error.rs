//! Errors of the NVMe/TCP transport: each names what went wrong, where, and
//! what to check.

use std::net::SocketAddr;
use std::time::Duration;

use super::discovery::DiscoveryError;
use super::fabrics::BadNqn;
use super::rx::RxError;
use crate::spec::status::Status;

/// Why a connection or a bring-up step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TcpError {
    /// Nothing listens at the address (TCP RST).
    #[error(
        "connection to {addr} refused: nothing listens there. Check the address and port \
         (trsvcid), that the target's port exists (on a Linux target: \
         `ls /sys/kernel/config/nvmet/ports/*/addr_trsvcid`, scripts/nvmf-target.sh status) \
         and that it is enabled (a subsystem linked under the port)"
    )]
    Refused {
        /// The address tried.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No route, or no answer in time.
    #[error(
        "{addr} is unreachable ({why}): check the address (traddr), the route to it \
         (`ip route get`), and firewalls between this host and the target"
    )]
    Unreachable {
        /// The address tried.
        addr: SocketAddr,
        /// "no route to host", "no answer within 2 s", ...
        why: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A socket call failed on an established connection.
    #[error("{what} on the connection to {addr} failed")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The peer.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The target closed the connection.
    #[error(
        "the target at {addr} closed the connection{}; {outstanding} command(s) in flight were \
         failed (reconnect to go on)",
        if *.during_setup { " during connection setup (is it an NVMe/TCP port?)" } else { "" }
    )]
    Closed {
        /// The peer.
        addr: SocketAddr,
        /// Commands failed because of it.
        outstanding: usize,
        /// Whether it happened before the connection was set up.
        during_setup: bool,
    },
    /// The connection failed while a blocking step waited on it; every
    /// command in flight on it completed with an error.
    #[error(
        "{what} failed: the connection to {addr} failed ({why}); every command in flight on it was failed, reconnect to go on"
    )]
    Lost {
        /// The step.
        what: &'static str,
        /// The peer.
        addr: SocketAddr,
        /// Why the connection failed.
        why: String,
    },
    /// The target sent something the protocol forbids, or terminated.
    #[error("connection to {addr}: {source}")]
    Protocol {
        /// The peer.
        addr: SocketAddr,
        /// What was wrong.
        #[source]
        source: RxError,
    },
    /// ICResp did not grant what the host needs.
    #[error("connection to {addr}: {what}")]
    Negotiation {
        /// The peer.
        addr: SocketAddr,
        /// What was refused.
        what: String,
    },
    /// The target rejected Connect; `detail` decodes its status.
    #[error("Connect of queue {qid} to {subnqn} at {addr}: {detail}")]
    ConnectRejected {
        /// The peer.
        addr: SocketAddr,
        /// Queue ID.
        qid: u16,
        /// Subsystem asked for.
        subnqn: String,
        /// The status.
        status: Status,
        /// The status explained (which field, what to do).
        detail: String,
    },
    /// An NQN that no target could accept.
    #[error(transparent)]
    BadNqn(#[from] BadNqn),
    /// A command completed with an error status.
    #[error("{what} failed: {status}")]
    Command {
        /// The command.
        what: &'static str,
        /// Its status.
        status: Status,
        /// Completion DW0 (command-specific detail of the failure).
        dw0: u32,
    },
    /// A command failed below the NVMe layer (see the connection's error).
    #[error("{what} failed: {failure}")]
    Transport {
        /// The command.
        what: &'static str,
        /// Why.
        failure: super::conn::TcpFailure,
    },
    /// A blocking step did not finish in time. The connection was closed
    /// (so no buffer can be written after this returns).
    #[error(
        "{what} did not complete within {waited:?} (the target at {addr} stalled); the connection was closed"
    )]
    Timeout {
        /// The step.
        what: &'static str,
        /// The peer.
        addr: SocketAddr,
        /// How long it waited.
        waited: Duration,
    },
    /// CSTS.RDY did not follow CC.EN within CAP.TO.
    #[error("the controller did not become ready within {waited_ms} ms (CAP.TO {cap_to_ms} ms){}", if *.fatal { "; CSTS.CFS is set (controller fatal status)" } else { "" })]
    NotReady {
        /// Time waited.
        waited_ms: u64,
        /// CAP.TO in ms.
        cap_to_ms: u64,
        /// CSTS.CFS seen.
        fatal: bool,
    },
    /// The Discovery log page could not be read.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The association failed and is being re-established.
    #[error(
        "the controller at {addr} is being reconnected after a failure ({last_error}); retry \
         once it is back"
    )]
    Recovering {
        /// Target address.
        addr: std::net::SocketAddr,
        /// Why it failed, or why the last attempt to reconnect failed.
        last_error: String,
    },
    /// The association failed for good (or the device was closed).
    #[error("the controller at {addr} is gone: {why}")]
    Failed {
        /// Target address.
        addr: std::net::SocketAddr,
        /// Why.
        why: String,
    },
    /// A request the connection cannot carry.
    #[error("{0}")]
    Invalid(&'static str),
    /// Host memory for I/O buffers could not be reserved.
    #[error("reserving {bytes} bytes of buffers for NVMe/TCP I/O failed; use a smaller pool")]
    Pool {
        /// The pool size asked for.
        bytes: usize,
        /// Why.
        #[source]
        source: crate::dma::DmaError,
    },
}
