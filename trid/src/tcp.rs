//! Opening what a `trtype:TCP` ID names: the controller (a
//! [`TcpDevice`] with the digests and host NQN the ID asks for) or, for the
//! discovery subsystem, the Discovery log page's entries as transport IDs.

#![forbid(unsafe_code)]

use nvme_engine::tcp::discovery::DiscoveryLog;
use nvme_engine::tcp::{SessionOptions, TcpDevice, TcpDeviceOptions, TcpTarget};

use crate::open::OpenError;
use crate::parse::{ControllerId, TcpSpec};

/// The target an ID names: address, subsystem, and the host NQN it gives
/// (else one derived from a fresh host ID).
pub fn tcp_target(spec: &TcpSpec) -> TcpTarget {
    let mut t = TcpTarget::new(spec.addr, spec.subnqn.clone());
    if let Some(h) = &spec.hostnqn {
        t.hostnqn = h.clone();
    }
    t
}

/// Bring-up options with the digests the ID asks for.
pub fn tcp_session(spec: &TcpSpec) -> SessionOptions {
    let mut s = SessionOptions::default();
    s.conn.digests.header = spec.header_digest;
    s.conn.digests.data = spec.data_digest;
    s
}

/// Open the controller a `trtype:TCP` ID names, with `opts` for what the
/// ID does not say (the digests come from the ID); `None` when `id` names
/// another transport.
pub fn open_tcp(
    id: &ControllerId,
    mut opts: TcpDeviceOptions,
) -> Option<Result<TcpDevice, OpenError>> {
    let ControllerId::Tcp(spec) = id else {
        return None;
    };
    let s = tcp_session(spec);
    opts.session.conn.digests = s.conn.digests;
    Some(
        TcpDevice::open(tcp_target(spec), opts).map_err(|source| OpenError::OpenTcp {
            addr: spec.addr,
            subnqn: spec.subnqn.clone(),
            source: Box::new(source),
        }),
    )
}

/// Read the Discovery log page of the portal `spec` names.
pub fn discover_tcp(spec: &TcpSpec) -> Result<DiscoveryLog, OpenError> {
    let t = tcp_target(spec);
    let mut s = tcp_session(spec);
    s.kato = std::time::Duration::ZERO;
    let err = |source| OpenError::OpenTcp {
        addr: spec.addr,
        subnqn: spec.subnqn.clone(),
        source: Box::new(source),
    };
    let mut c = nvme_engine::tcp::FabricsController::connect(&t, &s).map_err(err)?;
    c.discovery_log(1024).map_err(err)
}
