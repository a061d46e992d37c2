//! The keys of `trtype:TCP`, a controller reached over NVMe/TCP, spelled
//! as SPDK's transport IDs spell them: `adrfam:IPv4 traddr:127.0.0.1
//! trsvcid:4420 subnqn:<nqn>`, with `hostnqn:` and the digest keys
//! `hdgst:1` / `ddgst:1` (SPDK's RPC names) optional. A `subnqn` naming the
//! discovery subsystem (`nqn.2014-08.org.nvmexpress.discovery`) asks for
//! the discovery log instead of I/O.

#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};

use super::{ControllerId, Parser, TransportId};
use crate::error::TransportIdError;

const TCP_KEYS: &str = "trtype, adrfam, traddr, trsvcid, subnqn, hostnqn, hdgst, ddgst, ns";

/// The NQN of the discovery subsystem (NVMe Base 2.0 §4.5).
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// The NVMe/TCP port IANA assigned (4420), used when `trsvcid` is absent.
const DEFAULT_PORT: u16 = 4420;

/// A controller over NVMe/TCP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpSpec {
    /// Target address and port (`traddr`, `trsvcid`).
    pub addr: SocketAddr,
    /// Subsystem NQN (`subnqn`).
    pub subnqn: String,
    /// Host NQN (`hostnqn`); `None`: one derived from a host ID.
    pub hostnqn: Option<String>,
    /// Ask for header digests (`hdgst:1`).
    pub header_digest: bool,
    /// Ask for data digests (`ddgst:1`).
    pub data_digest: bool,
}

impl TcpSpec {
    /// Whether the ID names the discovery subsystem (list, no I/O).
    pub fn is_discovery(&self) -> bool {
        self.subnqn == DISCOVERY_NQN
    }
}

impl Parser<'_> {
    pub(super) fn tcp(&self, pairs: &[(String, &str)]) -> Result<TransportId, TransportIdError> {
        let (mut ip, mut port, mut family) = (None, DEFAULT_PORT, None);
        let (mut subnqn, mut hostnqn, mut nsid) = (None, None, None);
        let (mut header_digest, mut data_digest) = (false, false);
        for (key, value) in pairs {
            match key.as_str() {
                "trtype" => {}
                "adrfam" => {
                    family = Some(match value.to_ascii_lowercase().as_str() {
                        "ipv4" => 4,
                        "ipv6" => 6,
                        _ => return Err(self.bad(key, value, "expected IPv4 or IPv6")),
                    })
                }
                "traddr" => {
                    ip = Some(value.parse::<IpAddr>().map_err(|_| {
                        self.bad(
                            key,
                            value,
                            "expected an IP address like 127.0.0.1 or ::1 (no host names)",
                        )
                    })?)
                }
                "trsvcid" => {
                    port = value
                        .parse::<u16>()
                        .ok()
                        .filter(|&p| p != 0)
                        .ok_or_else(|| self.bad(key, value, "expected a TCP port, e.g. 4420"))?
                }
                "subnqn" => subnqn = Some(self.nqn(key, value)?),
                "hostnqn" => hostnqn = Some(self.nqn(key, value)?),
                "hdgst" => header_digest = self.flag(key, value)?,
                "ddgst" => data_digest = self.flag(key, value)?,
                "ns" => nsid = Some(self.nsid(value)?),
                _ => return Err(self.unknown_key(key, "TCP", TCP_KEYS)),
            }
        }
        let missing = |key: &'static str, example: &str| TransportIdError::MissingKey {
            input: self.input.into(),
            trtype: "TCP",
            key,
            example: self.syntax.kv(key, example),
            syntax: self.syntax,
        };
        let ip = ip.ok_or_else(|| missing("traddr", "127.0.0.1"))?;
        let subnqn = subnqn.ok_or_else(|| missing("subnqn", DISCOVERY_NQN))?;
        match (family, ip) {
            (Some(4), IpAddr::V6(_)) | (Some(6), IpAddr::V4(_)) => {
                return Err(self.bad(
                    "adrfam",
                    if family == Some(4) { "IPv4" } else { "IPv6" },
                    "adrfam does not match traddr: write adrfam:IPv4 for an IPv4 address and \
                     adrfam:IPv6 for an IPv6 one",
                ));
            }
            _ => {}
        }
        Ok(TransportId {
            controller: ControllerId::Tcp(TcpSpec {
                addr: SocketAddr::new(ip, port),
                subnqn,
                hostnqn,
                header_digest,
                data_digest,
            }),
            nsid,
        })
    }

    fn nqn(&self, key: &str, value: &str) -> Result<String, TransportIdError> {
        if value.len() > 223 || !value.starts_with("nqn.") {
            return Err(self.bad(
                key,
                value,
                "expected an NQN of at most 223 bytes starting with 'nqn.', e.g. \
                 nqn.2014-08.org.example:disk1",
            ));
        }
        Ok(value.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::Syntax;

    fn parse(s: &str) -> Result<TransportId, TransportIdError> {
        TransportId::parse(s, Syntax::Cli)
    }

    #[test]
    fn spdks_tcp_keys_name_address_port_subsystem_and_digests() {
        let id = parse(
            "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4421 subnqn:nqn.x:disk ns:2 hdgst:1",
        )
        .unwrap();
        let ControllerId::Tcp(t) = &id.controller else {
            panic!("{id:?}")
        };
        assert_eq!(t.addr, "127.0.0.1:4421".parse().unwrap());
        assert_eq!(t.subnqn, "nqn.x:disk");
        assert!(t.header_digest && !t.data_digest && !t.is_discovery());
        assert_eq!(id.nsid, Some(2));
        // The fio spelling, and the default port.
        let id = TransportId::parse(
            "trtype=tcp traddr=::1 subnqn=nqn.2014-08.org.nvmexpress.discovery",
            Syntax::FioFilename,
        )
        .unwrap();
        let ControllerId::Tcp(t) = &id.controller else {
            panic!()
        };
        assert_eq!(t.addr.port(), 4420);
        assert!(t.is_discovery());
    }

    #[test]
    fn a_tcp_id_without_address_or_nqn_or_with_a_wrong_family_says_what_to_write() {
        let e = parse("trtype:TCP subnqn:nqn.x").unwrap_err().to_string();
        assert!(e.contains("traddr:127.0.0.1"), "{e}");
        let e = parse("trtype:TCP traddr:10.0.0.1").unwrap_err().to_string();
        assert!(e.contains(DISCOVERY_NQN), "{e}");
        let e = parse("trtype:TCP adrfam:IPv6 traddr:10.0.0.1 subnqn:nqn.x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("adrfam does not match"), "{e}");
        let e = parse("trtype:TCP traddr:host.example subnqn:nqn.x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("IP address"), "{e}");
        let e = parse("trtype:TCP traddr:10.0.0.1 subnqn:disk1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("starting with 'nqn.'"), "{e}");
        let e = parse("trtype:TCP traddr:10.0.0.1 subnqn:nqn.x path:/x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("hdgst"), "{e}");
    }
}
