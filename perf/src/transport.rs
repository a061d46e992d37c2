//! Transport IDs in SPDK's syntax: whitespace-separated `key:value` pairs
//! (`key=value` also works, and commas separate pairs too, for shells and
//! scripts that split arguments on spaces), e.g.
//! `trtype:PCIe traddr:0000:04:00.0 ns:1` or `trtype:PCIe,traddr:04:00.0`,
//! plus `trtype:emu` for the built-in emulated controller
//! (`trtype:emu size:1G ns:2 lba:4096 null:1 mode:threaded core:1 file:/path`).

#![forbid(unsafe_code)]

use std::path::PathBuf;

use nvme_engine::vfio::PciAddress;

use crate::inject::{DEFAULT_DELAY_ROUNDS, InjectKind, Injection};
use crate::units::parse_size;

/// The accepted syntax, shown with every transport ID error.
pub const SYNTAX: &str = "valid syntax: -r 'trtype:PCIe traddr:0000:04:00.0 [ns:1] [noiommu:1]' or \
-r 'trtype:emu [size:1G] [ns:<count>] [lba:512|4096] [null:1] [file:/path] [mode:threaded|inline] [idle:spin|backoff] [core:<cpu>] [<fault>:<fraction of I/O>] [rounds:<n>] [recover:1] [sticky:1]' \
(faults: fail status lose delay dup unknowncid stale sqhd fatal vanish)";

const PCIE_KEYS: &str = "trtype, traddr, ns, noiommu";
const EMU_KEYS: &str = "trtype, size, ns, lba, null, file, mode, idle, core, rounds, recover, sticky, fail, status, lose, delay, dup, unknowncid, stale, sqhd, fatal, vanish";

/// Why a transport ID was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// A token without a separator.
    #[error("transport ID '{input}': '{token}' is not a key:value pair; {SYNTAX}")]
    NotAPair {
        /// The whole ID.
        input: String,
        /// The bad token.
        token: String,
    },
    /// No trtype key.
    #[error("transport ID '{input}' has no trtype key; {SYNTAX}")]
    MissingType {
        /// The whole ID.
        input: String,
    },
    /// A trtype this tool does not know.
    #[error(
        "unknown transport type '{trtype}' in '{input}': supported types are PCIe and emu; {SYNTAX}"
    )]
    UnknownType {
        /// The whole ID.
        input: String,
        /// The trtype value.
        trtype: String,
    },
    /// A key the transport type does not take.
    #[error(
        "transport ID '{input}': unknown key '{key}' for trtype {trtype} (keys: {valid}); {SYNTAX}"
    )]
    UnknownKey {
        /// The whole ID.
        input: String,
        /// The key.
        key: String,
        /// The transport type.
        trtype: &'static str,
        /// Keys this type accepts.
        valid: &'static str,
    },
    /// A key given twice.
    #[error("transport ID '{input}': key '{key}' is given twice; {SYNTAX}")]
    Duplicate {
        /// The whole ID.
        input: String,
        /// The key.
        key: String,
    },
    /// A required key is missing.
    #[error("transport ID '{input}': trtype {trtype} needs the key '{key}'; {SYNTAX}")]
    MissingKey {
        /// The whole ID.
        input: String,
        /// The transport type.
        trtype: &'static str,
        /// The key.
        key: &'static str,
    },
    /// A value that does not fit its key.
    #[error("transport ID '{input}': bad value '{value}' for key '{key}': {hint}; {SYNTAX}")]
    BadValue {
        /// The whole ID.
        input: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// What is expected.
        hint: String,
    },
}

/// How the emulated controller runs its commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmuRunMode {
    /// On the thread that writes the doorbell.
    Inline,
    /// On a device thread; `spin` selects busy polling over back-off when idle.
    Threaded {
        /// Never sleep when idle (lowest latency, one core always busy).
        spin: bool,
    },
}

/// The built-in emulated controller, as asked for on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmuSpec {
    /// Bytes per namespace.
    pub size: u64,
    /// `size:` was given (an existing backing file is then extended to it
    /// if smaller; without it the file's own size is used).
    pub size_given: bool,
    /// Number of namespaces.
    pub namespaces: u32,
    /// LBA size, 512 or 4096.
    pub lba_size: u32,
    /// Null backing: no data moves.
    pub null: bool,
    /// File backing (namespace 1 uses the path, namespace N>1 `path.N`).
    pub file: Option<PathBuf>,
    /// Execution mode.
    pub mode: EmuRunMode,
    /// Fault injection: each kind with the share of I/O commands it hits.
    pub faults: Vec<Injection>,
    /// Rounds a `delay` fault holds a completion.
    pub delay_rounds: u32,
    /// A vanished controller comes back when the host resets it (`recover:1`).
    pub vanish_recovers: bool,
    /// Fatal status survives a controller reset (`sticky:1`): the reset
    /// fails and the controller is failed for good.
    pub fatal_sticky: bool,
    /// CPU for the device thread (threaded mode); `None`: nvme-perf picks
    /// one no worker uses.
    pub core: Option<usize>,
}

impl Default for EmuSpec {
    /// What runs when no `-r` is given: one 1 GiB RAM namespace of 512-byte
    /// blocks on a busy-polling device thread.
    fn default() -> Self {
        EmuSpec {
            size: 1 << 30,
            size_given: false,
            namespaces: 1,
            lba_size: 512,
            null: false,
            file: None,
            mode: EmuRunMode::Threaded { spin: true },
            faults: Vec::new(),
            delay_rounds: DEFAULT_DELAY_ROUNDS,
            vanish_recovers: false,
            fatal_sticky: false,
            core: None,
        }
    }
}

/// One parsed `-r` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportId {
    /// A real controller through VFIO or uio_pci_generic.
    Pcie {
        /// PCI address.
        addr: PciAddress,
        /// Only this namespace (all active ones when `None`).
        nsid: Option<u32>,
        /// Allow no-IOMMU access.
        no_iommu: bool,
    },
    /// The built-in emulated controller.
    Emu(EmuSpec),
}

impl std::str::FromStr for TransportId {
    type Err = TransportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_transport_id(s)
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Some(true),
        "0" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

/// Parse one transport ID.
pub fn parse_transport_id(input: &str) -> Result<TransportId, TransportError> {
    let mut pairs: Vec<(String, &str)> = Vec::new();
    for token in input
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
    {
        let Some(split) = token.find([':', '=']) else {
            return Err(TransportError::NotAPair {
                input: input.into(),
                token: token.into(),
            });
        };
        let (key, value) = (&token[..split], &token[split + 1..]);
        if key.is_empty() || value.is_empty() {
            return Err(TransportError::NotAPair {
                input: input.into(),
                token: token.into(),
            });
        }
        let key = key.to_ascii_lowercase();
        if pairs.iter().any(|(k, _)| *k == key) {
            return Err(TransportError::Duplicate {
                input: input.into(),
                key,
            });
        }
        pairs.push((key, value));
    }
    let trtype = pairs
        .iter()
        .find(|(k, _)| k == "trtype")
        .map(|(_, v)| *v)
        .ok_or_else(|| TransportError::MissingType {
            input: input.into(),
        })?;
    let bad = |key: &str, value: &str, hint: &str| TransportError::BadValue {
        input: input.into(),
        key: key.into(),
        value: value.into(),
        hint: hint.into(),
    };
    match trtype.to_ascii_lowercase().as_str() {
        "pcie" => {
            let (mut addr, mut nsid, mut no_iommu) = (None, None, false);
            for (key, value) in &pairs {
                match key.as_str() {
                    "trtype" => {}
                    "traddr" => {
                        addr = Some(value.parse::<PciAddress>().map_err(|_| {
                            bad(
                                key,
                                value,
                                "expected a PCI address like 0000:04:00.0 (lspci -D)",
                            )
                        })?)
                    }
                    "ns" => {
                        nsid = Some(
                            value
                                .parse::<u32>()
                                .ok()
                                .filter(|&n| n != 0 && n != u32::MAX)
                                .ok_or_else(|| {
                                    bad(key, value, "expected a namespace ID (1, 2, ...)")
                                })?,
                        )
                    }
                    "noiommu" => {
                        no_iommu =
                            parse_bool(value).ok_or_else(|| bad(key, value, "expected 0 or 1"))?
                    }
                    _ => {
                        return Err(TransportError::UnknownKey {
                            input: input.into(),
                            key: key.clone(),
                            trtype: "PCIe",
                            valid: PCIE_KEYS,
                        });
                    }
                }
            }
            let addr = addr.ok_or(TransportError::MissingKey {
                input: input.into(),
                trtype: "PCIe",
                key: "traddr",
            })?;
            Ok(TransportId::Pcie {
                addr,
                nsid,
                no_iommu,
            })
        }
        "emu" => {
            let mut spec = EmuSpec::default();
            let mut idle_spin = None;
            let mut threaded = true;
            for (key, value) in &pairs {
                match key.as_str() {
                    "trtype" => {}
                    "size" => {
                        spec.size =
                            parse_size(value).map_err(|e| bad(key, value, &e.to_string()))?;
                        spec.size_given = true;
                    }
                    "ns" => {
                        spec.namespaces = value
                            .parse::<u32>()
                            .ok()
                            .filter(|n| (1..=1024).contains(n))
                            .ok_or_else(|| bad(key, value, "expected a namespace count 1..=1024"))?
                    }
                    "lba" => {
                        spec.lba_size = match *value {
                            "512" => 512,
                            "4096" | "4k" | "4K" => 4096,
                            _ => return Err(bad(key, value, "expected 512 or 4096")),
                        }
                    }
                    "null" => {
                        spec.null =
                            parse_bool(value).ok_or_else(|| bad(key, value, "expected 0 or 1"))?
                    }
                    "file" => spec.file = Some(PathBuf::from(value)),
                    "mode" => {
                        threaded = match value.to_ascii_lowercase().as_str() {
                            "threaded" => true,
                            "inline" => false,
                            _ => return Err(bad(key, value, "expected threaded or inline")),
                        }
                    }
                    "recover" => {
                        spec.vanish_recovers =
                            parse_bool(value).ok_or_else(|| bad(key, value, "expected 0 or 1"))?
                    }
                    "sticky" => {
                        spec.fatal_sticky =
                            parse_bool(value).ok_or_else(|| bad(key, value, "expected 0 or 1"))?
                    }
                    "rounds" => {
                        spec.delay_rounds = value
                            .parse::<u32>()
                            .ok()
                            .filter(|&n| n > 0)
                            .ok_or_else(|| {
                                bad(key, value, "expected a number of device rounds, at least 1")
                            })?
                    }
                    "core" => {
                        spec.core =
                            Some(value.parse::<usize>().map_err(|_| {
                                bad(key, value, "expected a CPU number (0, 1, ...)")
                            })?)
                    }
                    "idle" => {
                        idle_spin = Some(match value.to_ascii_lowercase().as_str() {
                            "spin" => true,
                            "backoff" => false,
                            _ => return Err(bad(key, value, "expected spin or backoff")),
                        })
                    }
                    k if let Some(kind) = InjectKind::from_key(k) => {
                        let i = Injection::parse(kind, value).ok_or_else(|| {
                            bad(
                                key,
                                value,
                                &format!(
                                    "expected the share of I/O commands hit by '{}', a fraction 0..=1 such as 0.01",
                                    kind.describe()
                                ),
                            )
                        })?;
                        spec.faults.push(i);
                    }
                    _ => {
                        return Err(TransportError::UnknownKey {
                            input: input.into(),
                            key: key.clone(),
                            trtype: "emu",
                            valid: EMU_KEYS,
                        });
                    }
                }
            }
            if spec.null && spec.file.is_some() {
                return Err(bad(
                    "null",
                    "1",
                    "null and file backings exclude each other; drop one of them",
                ));
            }
            if spec.size < spec.lba_size as u64 {
                return Err(bad(
                    "size",
                    &spec.size.to_string(),
                    "a namespace needs at least one block",
                ));
            }
            spec.mode = if threaded {
                EmuRunMode::Threaded {
                    spin: idle_spin.unwrap_or(true),
                }
            } else {
                if idle_spin.is_some() {
                    return Err(bad("idle", "set", "idle applies to mode:threaded only"));
                }
                if let Some(c) = spec.core {
                    return Err(bad(
                        "core",
                        &c.to_string(),
                        "core applies to mode:threaded only (inline mode has no device thread)",
                    ));
                }
                EmuRunMode::Inline
            };
            Ok(TransportId::Emu(spec))
        }
        other => Err(TransportError::UnknownType {
            input: input.into(),
            trtype: other.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spdk_pcie_syntax_parses_with_either_separator() {
        let t = parse_transport_id("trtype:PCIe traddr:0000:04:00.0 ns:1").unwrap();
        assert_eq!(
            t,
            TransportId::Pcie {
                addr: "0000:04:00.0".parse().unwrap(),
                nsid: Some(1),
                no_iommu: false
            }
        );
        let t = parse_transport_id("trtype=pcie,traddr=04:00.0, noiommu=1").unwrap();
        assert!(matches!(
            t,
            TransportId::Pcie {
                nsid: None,
                no_iommu: true,
                ..
            }
        ));
    }

    #[test]
    fn emu_keys_set_every_field() {
        let t = parse_transport_id("trtype:emu size:1G ns:2 lba:4096 null:1 mode:inline").unwrap();
        assert_eq!(
            t,
            TransportId::Emu(EmuSpec {
                size: 1 << 30,
                size_given: true,
                namespaces: 2,
                lba_size: 4096,
                null: true,
                file: None,
                mode: EmuRunMode::Inline,
                faults: Vec::new(),
                delay_rounds: DEFAULT_DELAY_ROUNDS,
                vanish_recovers: false,
                fatal_sticky: false,
                core: None,
            })
        );
        let TransportId::Emu(s) =
            parse_transport_id("trtype:EMU file:/tmp/x.img mode:threaded idle:backoff").unwrap()
        else {
            panic!("not emu");
        };
        assert_eq!(s.file, Some(PathBuf::from("/tmp/x.img")));
        assert_eq!(s.mode, EmuRunMode::Threaded { spin: false });
        assert_eq!(s.size, 1 << 30);
        let TransportId::Emu(s) = parse_transport_id("trtype:emu fail:0.25").unwrap() else {
            panic!("not emu");
        };
        assert_eq!(
            s.faults,
            vec![Injection {
                kind: InjectKind::ReadError,
                rate_ppb: 250_000_000
            }]
        );
        let TransportId::Emu(s) =
            parse_transport_id("trtype:emu lose:0.001 vanish:1e-6 delay:0.5 rounds:7").unwrap()
        else {
            panic!("not emu");
        };
        let kinds: Vec<_> = s.faults.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [InjectKind::Lose, InjectKind::Vanish, InjectKind::Delay]
        );
        assert_eq!(s.delay_rounds, 7);
        assert!(parse_transport_id("trtype:emu dup:2").is_err());
        assert!(parse_transport_id("trtype:emu rounds:0").is_err());
        let TransportId::Emu(s) = parse_transport_id("trtype:emu,core:3").unwrap() else {
            panic!("not emu");
        };
        assert_eq!(s.core, Some(3));
        assert!(parse_transport_id("trtype:emu core:x").is_err());
        assert!(parse_transport_id("trtype:emu mode:inline core:1").is_err());
        assert!(parse_transport_id("trtype:emu fail:2").is_err());
    }

    #[test]
    fn errors_name_the_wrong_key_and_show_the_syntax() {
        let e = parse_transport_id("trtype:PCIe traddr:0000:04:00.0 nsid:1").unwrap_err();
        assert!(matches!(&e, TransportError::UnknownKey { key, .. } if key == "nsid"));
        let msg = e.to_string();
        assert!(
            msg.contains("'nsid'") && msg.contains("valid syntax"),
            "{msg}"
        );

        let e = parse_transport_id("trtype:PCIe traddr:zz").unwrap_err();
        assert!(matches!(&e, TransportError::BadValue { key, .. } if key == "traddr"));
        let e = parse_transport_id("trtype:PCIe").unwrap_err();
        assert!(matches!(
            e,
            TransportError::MissingKey { key: "traddr", .. }
        ));
        let e = parse_transport_id("trtype:rdma traddr:1.2.3.4").unwrap_err();
        assert!(matches!(&e, TransportError::UnknownType { trtype, .. } if trtype == "rdma"));
        let e = parse_transport_id("traddr:0000:04:00.0").unwrap_err();
        assert!(matches!(e, TransportError::MissingType { .. }));
        let e = parse_transport_id("trtype:emu bogus").unwrap_err();
        assert!(matches!(&e, TransportError::NotAPair { token, .. } if token == "bogus"));
        let e = parse_transport_id("trtype:emu lba:1024").unwrap_err();
        assert!(matches!(&e, TransportError::BadValue { key, .. } if key == "lba"));
        let e = parse_transport_id("trtype:emu size:12q").unwrap_err();
        assert!(matches!(&e, TransportError::BadValue { key, .. } if key == "size"));
        let e = parse_transport_id("trtype:emu ns:1 ns:2").unwrap_err();
        assert!(matches!(e, TransportError::Duplicate { .. }));
        let e = parse_transport_id("trtype:emu null:1 file:/x").unwrap_err();
        assert!(matches!(e, TransportError::BadValue { .. }));
        let e = parse_transport_id("trtype:emu mode:inline idle:spin").unwrap_err();
        assert!(matches!(&e, TransportError::BadValue { key, .. } if key == "idle"));
    }
}
