//! Parsing a transport ID: the keys of `trtype:PCIe` (a real controller
//! through vfio-pci or uio_pci_generic) and of `trtype:emu` (the built-in
//! emulated controller, with its backing, execution mode and injected
//! faults), of `trtype:nvme-io_uring` and of `trtype:TCP`, their checks and their messages, for every [`Syntax`].

#![forbid(unsafe_code)]

mod emu;
mod tcp;

pub use emu::EmuFeatures;
pub use tcp::{DISCOVERY_NQN, TcpSpec};

use std::path::PathBuf;

use nvme_engine::vfio::PciAddress;

use crate::error::TransportIdError;
use crate::inject::{DEFAULT_DELAY_ROUNDS, Injection};
use crate::syntax::Syntax;

const PCIE_KEYS: &str = "trtype, traddr, ns, noiommu, shadow";
const EMU_KEYS: &str = "trtype, size, ns, namespaces, lba, null, file, mode, idle, core, shadow, rounds, recover, sticky, ms, mset, pi, pil, noiob, mdts, sgl, msgl, aerl, fail, status, lose, delay, dup, unknowncid, stale, sqhd, fatal, vanish";
const URING_KEYS: &str = "trtype, path, poll, fixed";

/// Largest namespace count of an emulated controller.
const MAX_EMU_NAMESPACES: u32 = 1024;

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

/// The built-in emulated controller a transport ID describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmuSpec {
    /// Bytes per namespace.
    pub size: u64,
    /// `size` was given (a tool may then extend an existing backing file to
    /// it; without it, it may take the file's own size).
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
    /// A vanished controller comes back when the host resets it (`recover`).
    pub vanish_recovers: bool,
    /// Fatal status survives a controller reset (`sticky`): the reset
    /// fails and the controller is failed for good.
    pub fatal_sticky: bool,
    /// The host uses shadow doorbells (`shadow:1`; default off, as in the
    /// engine; the emulated controller always offers Doorbell Buffer Config).
    pub shadow_doorbells: bool,
    /// CPU for the device thread (threaded mode); `None`: the tool decides
    /// (nvme-perf picks one no worker uses, fio leaves it to the scheduler).
    pub core: Option<usize>,
    /// Metadata, protection information and controller limits (`ms`,
    /// `mset`, `pi`, `pil`, `noiob`, `mdts`, `sgl`, `aerl`).
    pub features: EmuFeatures,
}

impl Default for EmuSpec {
    /// One 1 GiB RAM namespace of 512-byte blocks on a busy-polling device
    /// thread.
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
            shadow_doorbells: false,
            vanish_recovers: false,
            fatal_sticky: false,
            core: None,
            features: EmuFeatures::default(),
        }
    }
}

/// The controller a transport ID names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControllerId {
    /// A real controller through VFIO or uio_pci_generic.
    Pcie {
        /// PCI address.
        addr: PciAddress,
        /// Allow no-IOMMU access.
        no_iommu: bool,
        /// Use shadow doorbells when the controller offers them (`shadow:1`;
        /// default off: every doorbell is an MMIO write).
        shadow_doorbells: bool,
    },
    /// The built-in emulated controller.
    Emu(EmuSpec),
    /// A namespace left with the kernel's nvme driver, reached by NVMe
    /// passthrough over io_uring on its generic node (`trtype:nvme-io_uring
    /// path:/dev/ng0n1`); the controller node and NSID are found from it.
    UringPassthrough {
        /// The generic node (`/dev/ngXnY`) or a symlink to it.
        path: std::path::PathBuf,
        /// Poll completions (`IORING_SETUP_IOPOLL`) when the driver has poll
        /// queues (`poll:1`, the default); `poll:0` takes interrupts.
        polled: bool,
        /// Register DMA pools as fixed buffers (`fixed:1`, the default).
        fixed_buffers: bool,
    },
    /// A controller reached over NVMe/TCP (`trtype:TCP traddr:… trsvcid:…
    /// subnqn:…`).
    Tcp(TcpSpec),
}

/// One parsed transport ID: a controller and, optionally, one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportId {
    /// The controller.
    pub controller: ControllerId,
    /// The namespace `ns` selects (`None`: the tool's default, every active
    /// namespace for nvme-perf, namespace 1 for fio).
    pub nsid: Option<u32>,
}

impl TransportId {
    /// Parse `input` written in `syntax`.
    pub fn parse(input: &str, syntax: Syntax) -> Result<Self, TransportIdError> {
        Parser { input, syntax }.parse()
    }
}

impl std::str::FromStr for TransportId {
    type Err = TransportIdError;
    /// Parse a command-line transport ID ([`Syntax::Cli`]).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TransportId::parse(s, Syntax::Cli)
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Some(true),
        "0" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

/// A PCI address as lspci prints it (`0000:04:00.0`, `04:00.0`) or with
/// '.' in place of ':' (`0000.04.00.0`), as fio filenames must write it.
fn parse_traddr(v: &str) -> Option<PciAddress> {
    if v.contains(':') {
        return v.parse().ok();
    }
    // Every '.' but the last (before the function) separates fields.
    let last = v.rfind('.')?;
    format!("{}.{}", v[..last].replace('.', ":"), &v[last + 1..])
        .parse()
        .ok()
}

struct Parser<'a> {
    input: &'a str,
    syntax: Syntax,
}

impl<'a> Parser<'a> {
    fn bad(&self, key: &str, value: &str, hint: &str) -> TransportIdError {
        TransportIdError::BadValue {
            input: self.input.into(),
            key: key.into(),
            value: value.into(),
            hint: hint.into(),
            syntax: self.syntax,
        }
    }

    fn unknown_key(
        &self,
        key: &str,
        trtype: &'static str,
        valid: &'static str,
    ) -> TransportIdError {
        TransportIdError::UnknownKey {
            input: self.input.into(),
            key: key.into(),
            trtype,
            valid,
            syntax: self.syntax,
        }
    }

    fn flag(&self, key: &str, value: &str) -> Result<bool, TransportIdError> {
        parse_bool(value).ok_or_else(|| self.bad(key, value, "expected 0 or 1"))
    }

    fn nsid(&self, value: &str) -> Result<u32, TransportIdError> {
        value
            .parse::<u32>()
            .ok()
            .filter(|&n| n != 0 && n != u32::MAX)
            .ok_or_else(|| self.bad("ns", value, "expected a namespace ID (1, 2, ...)"))
    }

    /// Lower-case keys with their values, in order; no key twice.
    fn pairs(&self) -> Result<Vec<(String, &'a str)>, TransportIdError> {
        let input = self.input;
        let comma = self.syntax.splits_on_comma();
        let mut pairs: Vec<(String, &str)> = Vec::new();
        for token in input
            .split(|c: char| c.is_whitespace() || (comma && c == ','))
            .filter(|t| !t.is_empty())
        {
            let not_a_pair = || TransportIdError::NotAPair {
                input: input.into(),
                token: token.into(),
                syntax: self.syntax,
            };
            let split = token.find([':', '=']).ok_or_else(not_a_pair)?;
            let (key, value) = (&token[..split], &token[split + 1..]);
            if key.is_empty() || value.is_empty() {
                return Err(not_a_pair());
            }
            let key = key.to_ascii_lowercase();
            if pairs.iter().any(|(k, _)| *k == key) {
                return Err(TransportIdError::Duplicate {
                    input: input.into(),
                    key,
                    syntax: self.syntax,
                });
            }
            pairs.push((key, value));
        }
        Ok(pairs)
    }

    fn parse(&self) -> Result<TransportId, TransportIdError> {
        let pairs = self.pairs()?;
        let trtype = pairs
            .iter()
            .find(|(k, _)| k == "trtype")
            .map(|(_, v)| *v)
            .ok_or_else(|| TransportIdError::MissingType {
                input: self.input.into(),
                syntax: self.syntax,
            })?;
        match trtype.to_ascii_lowercase().as_str() {
            "pcie" => self.pcie(&pairs),
            "emu" => self.emu(&pairs),
            "nvme-io_uring" | "io_uring" => self.uring(&pairs),
            "tcp" => self.tcp(&pairs),
            _ => Err(TransportIdError::UnknownType {
                input: self.input.into(),
                trtype: trtype.into(),
                syntax: self.syntax,
            }),
        }
    }

    fn uring(&self, pairs: &[(String, &str)]) -> Result<TransportId, TransportIdError> {
        let (mut path, mut polled, mut fixed_buffers) = (None, true, true);
        for (key, value) in pairs {
            match key.as_str() {
                "trtype" => {}
                "path" => {
                    if !value.starts_with('/') {
                        return Err(self.bad(
                            key,
                            value,
                            "expected the absolute path of a generic NVMe node, e.g. /dev/ng0n1",
                        ));
                    }
                    path = Some(std::path::PathBuf::from(value))
                }
                "poll" => polled = self.flag(key, value)?,
                "fixed" => fixed_buffers = self.flag(key, value)?,
                _ => return Err(self.unknown_key(key, "nvme-io_uring", URING_KEYS)),
            }
        }
        let path = path.ok_or_else(|| TransportIdError::MissingKey {
            input: self.input.into(),
            trtype: "nvme-io_uring",
            key: "path",
            example: self.syntax.kv("path", "/dev/ng0n1"),
            syntax: self.syntax,
        })?;
        Ok(TransportId {
            controller: ControllerId::UringPassthrough {
                path,
                polled,
                fixed_buffers,
            },
            // The node is one namespace; its NSID comes from the kernel.
            nsid: None,
        })
    }

    fn pcie(&self, pairs: &[(String, &str)]) -> Result<TransportId, TransportIdError> {
        let (mut addr, mut nsid, mut no_iommu, mut shadow_doorbells) = (None, None, false, false);
        for (key, value) in pairs {
            match key.as_str() {
                "trtype" => {}
                "traddr" => {
                    addr = Some(
                        parse_traddr(value)
                            .ok_or_else(|| self.bad(key, value, self.syntax.traddr_hint()))?,
                    )
                }
                "ns" => nsid = Some(self.nsid(value)?),
                "noiommu" => no_iommu = self.flag(key, value)?,
                "shadow" => shadow_doorbells = self.flag(key, value)?,
                _ => return Err(self.unknown_key(key, "PCIe", PCIE_KEYS)),
            }
        }
        let addr = addr.ok_or_else(|| TransportIdError::MissingKey {
            input: self.input.into(),
            trtype: "PCIe",
            key: "traddr",
            example: self.syntax.kv("traddr", self.syntax.pci_example()),
            syntax: self.syntax,
        })?;
        Ok(TransportId {
            controller: ControllerId::Pcie {
                addr,
                no_iommu,
                shadow_doorbells,
            },
            nsid,
        })
    }
}

#[cfg(test)]
mod tests;
