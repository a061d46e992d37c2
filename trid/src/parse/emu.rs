//! The keys of `trtype:emu`: the emulated controller's size, namespaces,
//! backing, execution mode, injected faults, metadata format and protection
//! information (QEMU's `nvme-ns` `ms`, `mset`, `pi`, `pil`), optimal I/O
//! boundary and controller limits (`mdts`, `sgl`, `aerl` as QEMU's
//! `nvme`; `msgl` for SGL-described metadata), one key at a time, then the checks that need them all.

use std::path::PathBuf;

use nvme_emu::ProtectionType;

use super::{EMU_KEYS, EmuRunMode, EmuSpec, MAX_EMU_NAMESPACES, Parser, TransportId};
use crate::error::TransportIdError;
use crate::inject::{InjectKind, Injection};
use crate::size::parse_size;

type Result<T> = std::result::Result<T, TransportIdError>;

/// Metadata, protection information and controller limits of an emulated
/// controller. The format applies to every namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmuFeatures {
    /// `ms`: metadata bytes per block, a multiple of 8 up to 256 (0: none;
    /// 8 when `pi` is set without it).
    pub metadata_size: u16,
    /// `mset:1`: metadata interleaved with each block (extended LBA);
    /// `mset:0` (default): in a separate buffer.
    pub extended_lba: bool,
    /// `pi`: protection information type 0 (none), 1, 2 or 3.
    pub protection: ProtectionType,
    /// `pil:1`: the tuple is in the first 8 bytes of the metadata;
    /// `pil:0` (default): the last 8 bytes.
    pub pi_first: bool,
    /// `noiob`: optimal I/O boundary in blocks (0: not reported).
    pub optimal_io_boundary: u16,
    /// `mdts`: largest transfer, 2^mdts pages of 4 KiB, 1..=12 (default 9).
    pub mdts: u8,
    /// `sgl`: the controller reports SGL support (default on).
    pub sgl: bool,
    /// `msgl`: with `sgl`, the controller also takes an SGL descriptor at
    /// MPTR for the metadata (Identify SGLS bit 19; default on).
    pub sgl_metadata: bool,
    /// `aerl`: Asynchronous Event Request limit, zero-based as in Identify
    /// (and QEMU's `aerl`), 0..=15 (default 3: four requests).
    pub aerl_z: u8,
}

impl Default for EmuFeatures {
    /// No metadata, MDTS 9 (2 MiB), SGLs on, four event requests.
    fn default() -> Self {
        EmuFeatures {
            metadata_size: 0,
            extended_lba: false,
            protection: ProtectionType::None,
            pi_first: false,
            optimal_io_boundary: 0,
            mdts: 9,
            sgl: true,
            sgl_metadata: true,
            aerl_z: 3,
        }
    }
}

impl Parser<'_> {
    /// A `trtype:emu` transport ID from its key-value pairs.
    pub(super) fn emu(&self, pairs: &[(String, &str)]) -> Result<TransportId> {
        let mut keys = EmuKeys {
            p: self,
            spec: EmuSpec::default(),
            nsid: None,
            count_key: None,
            idle_spin: None,
            threaded: true,
        };
        for (key, value) in pairs {
            keys.key(key, value)?;
        }
        let given: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        keys.check_features(&given)?;
        keys.finish()
    }
}

/// An emulated controller being described, key by key.
struct EmuKeys<'p, 'a> {
    p: &'p Parser<'a>,
    spec: EmuSpec,
    /// `ns` selecting one namespace (command-line spelling).
    nsid: Option<u32>,
    /// The key that set the namespace count (`ns` or `namespaces`).
    count_key: Option<String>,
    /// `idle`: spin (true) or back off (false).
    idle_spin: Option<bool>,
    /// `mode`: threaded (true, the default) or inline.
    threaded: bool,
}

impl EmuKeys<'_, '_> {
    /// Take one key.
    fn key(&mut self, key: &str, value: &str) -> Result<()> {
        let (p, spec) = (self.p, &mut self.spec);
        match key {
            "trtype" => {}
            "size" => {
                spec.size = parse_size(value).map_err(|e| p.bad(key, value, &e.to_string()))?;
                spec.size_given = true;
            }
            "ns" if !p.syntax.ns_counts_emu_namespaces() => self.nsid = Some(p.nsid(value)?),
            "ns" | "namespaces" => self.namespace_count(key, value)?,
            "lba" => {
                spec.lba_size = match value {
                    "512" => 512,
                    "4096" | "4k" | "4K" => 4096,
                    _ => return Err(p.bad(key, value, "expected 512 or 4096")),
                }
            }
            "null" => spec.null = p.flag(key, value)?,
            "file" => spec.file = Some(PathBuf::from(value)),
            "mode" => {
                self.threaded = match value.to_ascii_lowercase().as_str() {
                    "threaded" => true,
                    "inline" => false,
                    _ => return Err(p.bad(key, value, "expected threaded or inline")),
                }
            }
            "recover" => spec.vanish_recovers = p.flag(key, value)?,
            "sticky" => spec.fatal_sticky = p.flag(key, value)?,
            "shadow" => spec.shadow_doorbells = p.flag(key, value)?,
            "rounds" => spec.delay_rounds = rounds(p, key, value)?,
            "core" => {
                let cpu = value.parse::<usize>();
                spec.core =
                    Some(cpu.map_err(|_| p.bad(key, value, "expected a CPU number (0, 1, ...)"))?)
            }
            "idle" => {
                self.idle_spin = Some(match value.to_ascii_lowercase().as_str() {
                    "spin" => true,
                    "backoff" => false,
                    _ => return Err(p.bad(key, value, "expected spin or backoff")),
                })
            }
            "ms" | "mset" | "pi" | "pil" | "noiob" | "mdts" | "sgl" | "msgl" | "aerl" => {
                self.feature(key, value)?
            }
            k if let Some(kind) = InjectKind::from_key(k) => {
                spec.faults.push(fault(p, kind, key, value)?);
            }
            _ => return Err(p.unknown_key(key, "emu", EMU_KEYS)),
        }
        Ok(())
    }

    /// A metadata, protection or controller limit key.
    fn feature(&mut self, key: &str, value: &str) -> Result<()> {
        let p = self.p;
        let f = &mut self.spec.features;
        let num = |max: u32, hint: &str| {
            value
                .parse::<u32>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| p.bad(key, value, hint))
        };
        match key {
            "ms" => {
                let hint = "expected metadata bytes per block: 0, 8, 16, ... 256 (a multiple of 8)";
                f.metadata_size = num(256, hint)?
                    .try_into()
                    .ok()
                    .filter(|ms: &u16| ms.is_multiple_of(8))
                    .ok_or_else(|| p.bad(key, value, hint))?;
            }
            "mset" => f.extended_lba = p.flag(key, value)?,
            "pi" => {
                f.protection = match value {
                    "0" => ProtectionType::None,
                    "1" => ProtectionType::Type1,
                    "2" => ProtectionType::Type2,
                    "3" => ProtectionType::Type3,
                    _ => {
                        return Err(p.bad(
                            key,
                            value,
                            "expected a protection information type: 0 (none), 1, 2 or 3",
                        ));
                    }
                }
            }
            "pil" => f.pi_first = p.flag(key, value)?,
            "noiob" => {
                f.optimal_io_boundary = num(
                    65535,
                    "expected an optimal I/O boundary in blocks, 0..=65535 (0: none)",
                )? as u16
            }
            "mdts" => {
                f.mdts = value
                    .parse::<u8>()
                    .ok()
                    .filter(|n| (1..=12).contains(n))
                    .ok_or_else(|| {
                        p.bad(
                            key,
                            value,
                            "expected MDTS 1..=12 (largest transfer 2^MDTS x 4 KiB)",
                        )
                    })?
            }
            "sgl" => f.sgl = p.flag(key, value)?,
            "msgl" => f.sgl_metadata = p.flag(key, value)?,
            _ => {
                f.aerl_z = num(
                    15,
                    "expected a zero-based Asynchronous Event Request limit 0..=15 (3: four requests)",
                )? as u8
            }
        }
        Ok(())
    }

    /// `mset` and `pil` need metadata and protection to apply to; `pi`
    /// without `ms` takes 8 bytes of metadata.
    fn check_features(&mut self, given: &[&str]) -> Result<()> {
        let p = self.p;
        let f = &mut self.spec.features;
        let has_pi = f.protection != ProtectionType::None;
        if has_pi && f.metadata_size == 0 {
            if given.contains(&"ms") {
                return Err(p.bad(
                    "ms",
                    "0",
                    &format!(
                        "protection information needs at least 8 metadata bytes; set {} or more",
                        p.syntax.kv("ms", "8")
                    ),
                ));
            }
            f.metadata_size = 8;
        }
        if f.extended_lba && f.metadata_size == 0 {
            return Err(p.bad(
                "mset",
                "1",
                &format!(
                    "an extended LBA needs metadata; add {}",
                    p.syntax.kv("ms", "8")
                ),
            ));
        }
        if f.pi_first && !has_pi {
            return Err(p.bad(
                "pil",
                "1",
                &format!(
                    "the protection information location needs a PI type; add {}",
                    p.syntax.kv("pi", "1")
                ),
            ));
        }
        Ok(())
    }

    /// `namespaces` (or `ns` in the fio spelling): the namespace count,
    /// given once.
    fn namespace_count(&mut self, key: &str, value: &str) -> Result<()> {
        if let Some(other) = self.count_key.replace(key.to_string()) {
            return Err(self.p.bad(
                key,
                value,
                &format!("{other} and {key} both set the namespace count; give one"),
            ));
        }
        self.spec.namespaces = value
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_EMU_NAMESPACES).contains(n))
            .ok_or_else(|| {
                self.p
                    .bad(key, value, "expected a namespace count 1..=1024")
            })?;
        Ok(())
    }

    /// The checks that need every key: backing, size, namespace and mode.
    fn finish(mut self) -> Result<TransportId> {
        self.check_backing()?;
        self.spec.mode = self.mode()?;
        Ok(TransportId {
            controller: super::ControllerId::Emu(self.spec),
            nsid: self.nsid,
        })
    }

    /// One backing, at least one block, and the selected namespace exists.
    fn check_backing(&self) -> Result<()> {
        let (p, spec) = (self.p, &self.spec);
        if spec.null && spec.file.is_some() {
            return Err(p.bad(
                "null",
                "1",
                "null and file backings exclude each other; drop one of them",
            ));
        }
        if spec.size < spec.lba_size as u64 {
            return Err(p.bad(
                "size",
                &spec.size.to_string(),
                "a namespace needs at least one block",
            ));
        }
        if let Some(n) = self.nsid.filter(|&n| n > spec.namespaces) {
            return Err(p.bad(
                "ns",
                &n.to_string(),
                &format!(
                    "the emulated controller has {} namespace(s); add {}",
                    spec.namespaces,
                    p.syntax.kv("namespaces", &n.to_string())
                ),
            ));
        }
        Ok(())
    }

    /// The execution mode; `idle` and `core` apply to a device thread only.
    fn mode(&self) -> Result<EmuRunMode> {
        let p = self.p;
        let only_threaded = p.syntax.kv("mode", "threaded");
        if self.threaded {
            Ok(EmuRunMode::Threaded {
                spin: self.idle_spin.unwrap_or(true),
            })
        } else if self.idle_spin.is_some() {
            Err(p.bad(
                "idle",
                "set",
                &format!("idle applies to {only_threaded} only"),
            ))
        } else if let Some(c) = self.spec.core {
            Err(p.bad(
                "core",
                &c.to_string(),
                &format!("core applies to {only_threaded} only (inline mode has no device thread)"),
            ))
        } else {
            Ok(EmuRunMode::Inline)
        }
    }
}

/// `rounds`: device rounds a `delay` fault holds a completion, at least 1.
fn rounds(p: &Parser<'_>, key: &str, value: &str) -> Result<u32> {
    value
        .parse::<u32>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| p.bad(key, value, "expected a number of device rounds, at least 1"))
}

/// A fault key (`lose:0.001`): the share of I/O commands it hits.
fn fault(p: &Parser<'_>, kind: InjectKind, key: &str, value: &str) -> Result<Injection> {
    Injection::parse(kind, value).ok_or_else(|| {
        p.bad(
            key,
            value,
            &format!(
                "expected the share of I/O commands hit by '{}', a fraction 0..=1 such as 0.01",
                kind.describe()
            ),
        )
    })
}
