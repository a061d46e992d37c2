//! fio filenames that name a controller and a namespace, in the style of
//! SPDK's fio plugin (fio splits filenames at ':', so none may appear):
//! whitespace-separated `key=value` pairs,
//!
//! - `trtype=PCIe traddr=0000.04.00.0 ns=1 [noiommu=1]`: a real controller
//!   bound to vfio-pci (or uio_pci_generic with `noiommu=1`); the PCI
//!   address uses '.' where lspci prints ':'.
//! - `trtype=emu [size=64M] [ns=1] [namespaces=1] [lba=512|4096] [null=1]
//!   [file=/path] [mode=threaded|inline] [idle=spin|backoff] [core=N]
//!   [fail=0.01]`: the built-in emulated controller, with the keys of
//!   nvme-perf's `-r trtype:emu` (its `ns:` count is `namespaces=` here, since
//!   `ns=` always selects the namespace, as for PCIe).
//!
//! nvme-perf parses the same keys in `perf/src/transport.rs`; this is a
//! separate, smaller parser because fio's separators and messages differ and
//! nvme-perf's CLI code is not a library.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use nvme_engine::vfio::PciAddress;

/// The accepted syntax, shown with every filename error.
pub const SYNTAX: &str = "valid filenames: 'trtype=PCIe traddr=0000.04.00.0 ns=1 [noiommu=1]' or \
'trtype=emu [size=64M] [ns=1] [namespaces=N] [lba=512|4096] [null=1] [file=/path] \
[mode=threaded|inline] [idle=spin|backoff] [core=N] [fail=0.01]'";

const PCIE_KEYS: &str = "trtype, traddr, ns, noiommu";
const EMU_KEYS: &str = "trtype, size, ns, namespaces, lba, null, file, mode, idle, core, fail";

/// Why a filename was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilenameError {
    /// A token that is not `key=value`.
    #[error("filename '{input}': '{token}' is not a key=value pair; {SYNTAX}")]
    NotAPair {
        /// The whole filename.
        input: String,
        /// The bad token.
        token: String,
    },
    /// A key given twice.
    #[error("filename '{input}': key '{key}' is given twice; {SYNTAX}")]
    Duplicate {
        /// The whole filename.
        input: String,
        /// The key.
        key: String,
    },
    /// No or an unknown trtype.
    #[error(
        "filename '{input}': trtype must be PCIe or emu (found {found}); {SYNTAX}. \
         A path or device name needs one of fio's own engines"
    )]
    BadType {
        /// The whole filename.
        input: String,
        /// What was given.
        found: String,
    },
    /// A key the transport type does not take.
    #[error(
        "filename '{input}': unknown key '{key}' for trtype {trtype} (keys: {valid}); {SYNTAX}"
    )]
    UnknownKey {
        /// The whole filename.
        input: String,
        /// The key.
        key: String,
        /// The transport type.
        trtype: &'static str,
        /// Accepted keys.
        valid: &'static str,
    },
    /// A value that does not fit its key.
    #[error("filename '{input}': bad value '{value}' for key '{key}': {hint}")]
    BadValue {
        /// The whole filename.
        input: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// What is expected.
        hint: String,
    },
}

/// How the emulated controller runs commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmuRun {
    /// On the thread that writes the doorbell.
    Inline,
    /// On a device thread that spins (`spin`) or backs off when idle.
    Threaded {
        /// Busy-poll when idle.
        spin: bool,
        /// Pin the device thread to this CPU.
        core: Option<usize>,
    },
}

/// The built-in emulated controller a filename describes.
#[derive(Clone, Debug, PartialEq)]
pub struct EmuSpec {
    /// Bytes per namespace.
    pub size: u64,
    /// Namespaces on the controller.
    pub namespaces: u32,
    /// LBA size: 512 or 4096.
    pub lba_size: u32,
    /// Null backing: nothing is stored.
    pub null: bool,
    /// File backing (namespace N>1 uses `path.N`).
    pub file: Option<PathBuf>,
    /// Execution mode.
    pub run: EmuRun,
    /// Share of reads that fail with Unrecovered Read Error (0..=1).
    pub fail: f64,
}

impl Default for EmuSpec {
    /// nvme-perf's default: 1 GiB of RAM, 512-byte blocks, one namespace,
    /// a busy-polling device thread.
    fn default() -> Self {
        EmuSpec {
            size: 1 << 30,
            namespaces: 1,
            lba_size: 512,
            null: false,
            file: None,
            run: EmuRun::Threaded {
                spin: true,
                core: None,
            },
            fail: 0.0,
        }
    }
}

/// Which controller a filename names.
#[derive(Clone, Debug, PartialEq)]
pub enum ControllerSpec {
    /// A real controller.
    Pcie {
        /// PCI address.
        addr: PciAddress,
        /// Allow no-IOMMU access (uio_pci_generic).
        no_iommu: bool,
    },
    /// The built-in emulated controller.
    Emu(EmuSpec),
}

impl ControllerSpec {
    /// Filenames with equal keys share one controller in the process: the
    /// PCI address, or every emulated key.
    pub fn key(&self) -> String {
        match self {
            ControllerSpec::Pcie { addr, .. } => format!("pcie {addr}"),
            ControllerSpec::Emu(e) => format!(
                "emu size={} namespaces={} lba={} null={} file={:?} run={:?} fail={}",
                e.size, e.namespaces, e.lba_size, e.null, e.file, e.run, e.fail
            ),
        }
    }
}

/// One parsed filename: a controller and a namespace on it.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// The controller.
    pub controller: ControllerSpec,
    /// The namespace ID.
    pub nsid: u32,
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Some(true),
        "0" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

/// Bytes from `64M`, `1G`, `512k`, `4096` (powers of 1024, as fio reads
/// sizes; `KiB`/`KB`-style suffixes too).
pub fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, suffix) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

/// A PCI address with '.' in place of ':' (`0000.04.00.0`, `04.00.0`);
/// the lspci form with ':' is taken as well.
fn parse_traddr(v: &str) -> Option<PciAddress> {
    let text = if v.contains(':') {
        v.to_string()
    } else {
        // Every '.' but the last (before the function) separates fields.
        let last = v.rfind('.')?;
        format!("{}.{}", v[..last].replace('.', ":"), &v[last + 1..])
    };
    text.parse().ok()
}

/// Parse one fio filename.
pub fn parse(input: &str) -> Result<Target, FilenameError> {
    let mut pairs: Vec<(String, &str)> = Vec::new();
    for token in input.split_whitespace() {
        let (key, value) = match token.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => (k.to_ascii_lowercase(), v),
            _ => {
                return Err(FilenameError::NotAPair {
                    input: input.into(),
                    token: token.into(),
                });
            }
        };
        if pairs.iter().any(|(k, _)| *k == key) {
            return Err(FilenameError::Duplicate {
                input: input.into(),
                key,
            });
        }
        pairs.push((key, value));
    }
    let bad = |key: &str, value: &str, hint: &str| FilenameError::BadValue {
        input: input.into(),
        key: key.into(),
        value: value.into(),
        hint: hint.into(),
    };
    let trtype = pairs.iter().find(|(k, _)| k == "trtype").map(|(_, v)| *v);
    let nsid_of = |value: &str| {
        value
            .parse::<u32>()
            .ok()
            .filter(|&n| n != 0 && n != u32::MAX)
            .ok_or_else(|| bad("ns", value, "expected a namespace ID (1, 2, ...)"))
    };
    match trtype.map(str::to_ascii_lowercase).as_deref() {
        Some("pcie") => {
            let (mut addr, mut nsid, mut no_iommu) = (None, 1, false);
            for (key, value) in &pairs {
                match key.as_str() {
                    "trtype" => {}
                    "traddr" => {
                        addr = Some(parse_traddr(value).ok_or_else(|| {
                            bad(
                                key,
                                value,
                                "expected a PCI address with '.' for ':', e.g. 0000.04.00.0 (lspci -D prints 0000:04:00.0)",
                            )
                        })?)
                    }
                    "ns" => nsid = nsid_of(value)?,
                    "noiommu" => {
                        no_iommu =
                            parse_bool(value).ok_or_else(|| bad(key, value, "expected 0 or 1"))?
                    }
                    _ => {
                        return Err(FilenameError::UnknownKey {
                            input: input.into(),
                            key: key.clone(),
                            trtype: "PCIe",
                            valid: PCIE_KEYS,
                        });
                    }
                }
            }
            let addr = addr.ok_or_else(|| {
                bad(
                    "traddr",
                    "(missing)",
                    "trtype=PCIe needs traddr=<PCI address>, e.g. traddr=0000.04.00.0",
                )
            })?;
            Ok(Target {
                controller: ControllerSpec::Pcie { addr, no_iommu },
                nsid,
            })
        }
        Some("emu") => parse_emu(input, &pairs, &bad, &nsid_of),
        other => Err(FilenameError::BadType {
            input: input.into(),
            found: other.map_or("no trtype key".into(), |t| format!("'{t}'")),
        }),
    }
}

fn parse_emu(
    input: &str,
    pairs: &[(String, &str)],
    bad: &dyn Fn(&str, &str, &str) -> FilenameError,
    nsid_of: &dyn Fn(&str) -> Result<u32, FilenameError>,
) -> Result<Target, FilenameError> {
    let mut spec = EmuSpec::default();
    let (mut nsid, mut threaded, mut spin, mut core) = (1, true, None, None);
    for (key, value) in pairs {
        let value = *value;
        match key.as_str() {
            "trtype" => {}
            "size" => {
                spec.size = parse_size(value)
                    .filter(|&s| s > 0)
                    .ok_or_else(|| bad(key, value, "expected a size such as 64M, 1G or 4096"))?
            }
            "ns" => nsid = nsid_of(value)?,
            "namespaces" => {
                spec.namespaces = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=1024).contains(n))
                    .ok_or_else(|| bad(key, value, "expected a namespace count 1..=1024"))?
            }
            "lba" => {
                spec.lba_size = match value {
                    "512" => 512,
                    "4096" | "4k" | "4K" => 4096,
                    _ => return Err(bad(key, value, "expected 512 or 4096")),
                }
            }
            "null" => {
                spec.null = parse_bool(value).ok_or_else(|| bad(key, value, "expected 0 or 1"))?
            }
            "file" => spec.file = Some(PathBuf::from(value)),
            "mode" => {
                threaded = match value.to_ascii_lowercase().as_str() {
                    "threaded" => true,
                    "inline" => false,
                    _ => return Err(bad(key, value, "expected threaded or inline")),
                }
            }
            "idle" => {
                spin = Some(match value.to_ascii_lowercase().as_str() {
                    "spin" => true,
                    "backoff" => false,
                    _ => return Err(bad(key, value, "expected spin or backoff")),
                })
            }
            "core" => {
                core = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| bad(key, value, "expected a CPU number (0, 1, ...)"))?,
                )
            }
            "fail" => {
                spec.fail = value
                    .parse::<f64>()
                    .ok()
                    .filter(|f| (0.0..=1.0).contains(f))
                    .ok_or_else(|| {
                        bad(key, value, "expected a fraction of reads 0..=1, e.g. 0.01")
                    })?
            }
            _ => {
                return Err(FilenameError::UnknownKey {
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
    if nsid > spec.namespaces {
        return Err(bad(
            "ns",
            &nsid.to_string(),
            &format!(
                "the emulated controller has {} namespace(s); add namespaces={nsid}",
                spec.namespaces
            ),
        ));
    }
    spec.run = if threaded {
        EmuRun::Threaded {
            spin: spin.unwrap_or(true),
            core,
        }
    } else if spin.is_some() || core.is_some() {
        return Err(bad(
            if spin.is_some() { "idle" } else { "core" },
            "set",
            "idle and core apply to mode=threaded only (inline mode has no device thread)",
        ));
    } else {
        EmuRun::Inline
    };
    Ok(Target {
        controller: ControllerSpec::Emu(spec),
        nsid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spdk_plugin_pcie_filename_parses_with_dots_for_colons() {
        let t = parse("trtype=PCIe traddr=0000.04.00.0 ns=2").unwrap();
        assert_eq!(t.nsid, 2);
        assert_eq!(
            t.controller,
            ControllerSpec::Pcie {
                addr: "0000:04:00.0".parse().unwrap(),
                no_iommu: false
            }
        );
        let t = parse("trtype=pcie traddr=04.00.0 noiommu=1").unwrap();
        assert_eq!(t.nsid, 1);
        assert!(matches!(
            t.controller,
            ControllerSpec::Pcie { no_iommu: true, .. }
        ));
        assert_eq!(
            t.controller.key(),
            "pcie 0000:04:00.0",
            "the short form names the same controller"
        );
    }

    #[test]
    fn emu_filename_sets_every_key() {
        let t = parse(
            "trtype=emu size=64M ns=2 namespaces=2 lba=4096 file=/tmp/x.img mode=threaded idle=backoff core=1 fail=0.5",
        )
        .unwrap();
        assert_eq!(t.nsid, 2);
        let ControllerSpec::Emu(e) = t.controller else {
            panic!("not emu")
        };
        assert_eq!(e.size, 64 << 20);
        assert_eq!(e.namespaces, 2);
        assert_eq!(e.lba_size, 4096);
        assert_eq!(e.file, Some(PathBuf::from("/tmp/x.img")));
        assert_eq!(
            e.run,
            EmuRun::Threaded {
                spin: false,
                core: Some(1)
            }
        );
        assert_eq!(e.fail, 0.5);
        let t = parse("trtype=emu").unwrap();
        assert_eq!(t.controller, ControllerSpec::Emu(EmuSpec::default()));
        let t = parse("trtype=EMU null=1 mode=inline").unwrap();
        assert!(
            matches!(&t.controller, ControllerSpec::Emu(e) if e.null && e.run == EmuRun::Inline)
        );
    }

    #[test]
    fn equal_emu_keys_share_a_controller_and_ns_does_not_matter() {
        let a = parse("trtype=emu size=64M namespaces=2 ns=1").unwrap();
        let b = parse("size=64M   trtype=emu ns=2 namespaces=2").unwrap();
        let c = parse("trtype=emu size=128M").unwrap();
        assert_eq!(a.controller.key(), b.controller.key());
        assert_ne!(a.controller.key(), c.controller.key());
    }

    #[test]
    fn errors_name_the_key_and_what_to_write() {
        let e = parse("/dev/nvme0n1").unwrap_err();
        assert!(matches!(e, FilenameError::NotAPair { .. }));
        let e = parse("trtype=rdma traddr=1.2.3.4").unwrap_err();
        assert!(e.to_string().contains("PCIe or emu"), "{e}");
        let e = parse("traddr=0000.04.00.0").unwrap_err();
        assert!(e.to_string().contains("no trtype"), "{e}");
        let e = parse("trtype=PCIe").unwrap_err();
        assert!(e.to_string().contains("traddr=0000.04.00.0"), "{e}");
        let e = parse("trtype=PCIe traddr=zz").unwrap_err();
        assert!(matches!(&e, FilenameError::BadValue { key, .. } if key == "traddr"));
        let e = parse("trtype=PCIe traddr=0000.04.00.0 nsid=1").unwrap_err();
        assert!(matches!(&e, FilenameError::UnknownKey { key, .. } if key == "nsid"));
        let e = parse("trtype=emu ns=2").unwrap_err();
        assert!(e.to_string().contains("namespaces=2"), "{e}");
        let e = parse("trtype=emu size=12q").unwrap_err();
        assert!(matches!(&e, FilenameError::BadValue { key, .. } if key == "size"));
        let e = parse("trtype=emu lba=1024").unwrap_err();
        assert!(matches!(&e, FilenameError::BadValue { key, .. } if key == "lba"));
        let e = parse("trtype=emu mode=inline idle=spin").unwrap_err();
        assert!(matches!(&e, FilenameError::BadValue { key, .. } if key == "idle"));
        let e = parse("trtype=emu null=1 file=/x").unwrap_err();
        assert!(matches!(e, FilenameError::BadValue { .. }));
        let e = parse("trtype=emu size=1M size=2M").unwrap_err();
        assert!(matches!(e, FilenameError::Duplicate { .. }));
    }

    #[test]
    fn sizes_take_fio_suffixes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("1x"), None);
        assert_eq!(parse_size("M"), None);
    }
}
