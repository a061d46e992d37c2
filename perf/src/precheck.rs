//! Checks made before any controller is opened or any I/O runs, each with
//! an error that says what to change: the JSON destination can be written,
//! no controller or backing file is named twice, an emulated namespace's
//! backing file is neither created empty for a read workload nor silently
//! extended, and the run fits in the memory the machine (and the memory
//! cgroup) still has.

#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::path::Path;

use anyhow::{Context, Result, bail};
use nvme_trid::{ControllerId, EmuSpec, TransportId};

use crate::memory::{self, Need};
use crate::units::format_size;

/// The `--json` file, opened before the run. A file this run created is
/// removed again if no report is written into it (the run failed).
pub struct JsonDest {
    /// The open file (not truncated until the report is written).
    pub file: File,
    path: std::path::PathBuf,
    created: bool,
    /// Set once the report is in the file.
    pub written: bool,
}

impl Drop for JsonDest {
    fn drop(&mut self) {
        if self.created && !self.written {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Open the `--json` file now (created if missing, not truncated until the
/// report is written), so a bad destination fails before the run.
pub fn json_destination(path: &Path) -> Result<JsonDest> {
    if path.is_dir() {
        bail!(
            "--json {}: is a directory; give a file name, e.g. {}",
            path.display(),
            path.join("report.json").display()
        );
    }
    let created = !path.exists();
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| {
            format!(
                "--json {}: cannot write the report there (checked before the run); pick a writable path or use --json alone for stdout",
                path.display()
            )
        })?;
    Ok(JsonDest {
        file,
        path: path.to_path_buf(),
        created,
        written: false,
    })
}

/// Refuse a PCI controller or an emulated backing file named twice.
pub fn distinct_controllers(transports: &[TransportId]) -> Result<()> {
    for (i, a) in transports.iter().enumerate() {
        for (j, b) in transports.iter().enumerate().skip(i + 1) {
            match (&a.controller, &b.controller) {
                (ControllerId::Pcie { addr: x, .. }, ControllerId::Pcie { addr: y, .. })
                    if x == y =>
                {
                    bail!(
                        "controller {x} is named twice (-r number {} and {}); name it once: without ns: every namespace is driven, with ns:<id> one",
                        i + 1,
                        j + 1
                    );
                }
                (ControllerId::Emu(x), ControllerId::Emu(y)) => {
                    if let (Some(p), Some(q)) = (&x.file, &y.file)
                        && same_file(p, q)
                    {
                        bail!(
                            "backing file {} is named by two emulated controllers (-r number {} and {}); give each its own file",
                            p.display(),
                            i + 1,
                            j + 1
                        );
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Settle an emulated controller's file backing against what is on disk:
/// without `size:` an existing file keeps its own size (namespace 1's file
/// decides for all); a read-only workload needs every file to exist.
pub fn settle_file_backing(spec: &mut EmuSpec, writes: bool) -> Result<()> {
    for n in 1..=spec.namespaces {
        let Some(f) = spec.namespace_file(n) else {
            return Ok(());
        };
        match std::fs::metadata(&f) {
            Ok(m) if m.is_dir() => bail!(
                "file:{} names a directory; give a file (created if missing)",
                f.display()
            ),
            Ok(m) => {
                let len = m.len();
                if !spec.size_given && n == 1 {
                    let usable = len - len % spec.lba_size as u64;
                    if usable == 0 {
                        bail!(
                            "backing file {} holds {len} bytes, less than one {}-byte block; give size: to extend it{}",
                            f.display(),
                            spec.lba_size,
                            if writes {
                                ""
                            } else {
                                " (with a write workload)"
                            }
                        );
                    }
                    spec.size = usable;
                } else if len < spec.size && !writes {
                    bail!(
                        "backing file {} holds {} but size: asks for {}; a read workload opens it read-only and never extends it: ask for at most {len} bytes, or extend it with a write workload",
                        f.display(),
                        format_size(len),
                        format_size(spec.size)
                    );
                }
            }
            Err(_) if !writes => bail!(
                "backing file {} does not exist; a read workload opens it read-only and reads nothing it could create: write it first (-w write), or use a RAM namespace (drop file:)",
                f.display()
            ),
            Err(_) => {}
        }
    }
    Ok(())
}

/// Memory the emulated RAM namespaces will hold: all of it when the run
/// writes (touched pages stay allocated), nothing for read-only runs (reads
/// of untouched anonymous memory allocate nothing).
pub fn emu_ram_need(transports: &[TransportId], writes: bool) -> u64 {
    if !writes {
        return 0;
    }
    transports
        .iter()
        .map(|t| match &t.controller {
            ControllerId::Emu(s) if !s.null && s.file.is_none() => {
                s.size.saturating_mul(s.namespaces as u64)
            }
            _ => 0,
        })
        .fold(0u64, u64::saturating_add)
}

/// Refuse the run when `ram` (emulated namespaces) and `dma` (buffers and
/// queues) do not fit in the available memory.
pub fn memory_fits(ram: u64, dma: u64) -> Result<()> {
    let Some(avail) = memory::available() else {
        return Ok(());
    };
    let needs = [Need {
        what: "emulated RAM namespaces".into(),
        bytes: ram,
    }];
    memory::check(&needs, dma, &avail).map_err(anyhow::Error::msg)
}

/// DMA memory one queue pair takes: `qd` buffers of the pool's block size,
/// the SQ and CQ, and a PRP-list page per slot.
pub fn qpair_dma_bytes(queue_depth: usize, io_size: usize, entries: u16) -> u64 {
    let block = io_size.next_power_of_two().max(4096) as u64;
    (queue_depth as u64)
        .saturating_mul(block)
        .saturating_add(entries as u64 * (64 + 16 + 4096))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_transport_id(s: &str) -> Result<TransportId, nvme_trid::TransportIdError> {
        s.parse()
    }

    fn emu(s: &str) -> EmuSpec {
        match parse_transport_id(s).unwrap().controller {
            ControllerId::Emu(e) => e,
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_same_pci_address_twice_is_named_as_such() {
        let t: Vec<TransportId> = [
            "trtype:PCIe traddr:0000:04:00.0 ns:1",
            "trtype:emu",
            "trtype:PCIe traddr:04:00.0 ns:2",
        ]
        .iter()
        .map(|s| parse_transport_id(s).unwrap())
        .collect();
        let e = distinct_controllers(&t).unwrap_err().to_string();
        assert!(
            e.contains("controller 0000:04:00.0 is named twice (-r number 1 and 3)"),
            "{e}"
        );
    }

    #[test]
    fn an_existing_file_keeps_its_size_without_size_key() {
        let path = std::env::temp_dir().join(format!("perf-settle-{}.img", std::process::id()));
        std::fs::write(&path, vec![0u8; 8192 + 100]).unwrap();
        let mut s = emu(&format!("trtype:emu file:{}", path.display()));
        settle_file_backing(&mut s, true).unwrap();
        assert_eq!(s.size, 8192);
        let mut s = emu(&format!("trtype:emu file:{} size:1M", path.display()));
        let e = settle_file_backing(&mut s, false).unwrap_err().to_string();
        assert!(e.contains("never extends it"), "{e}");
        settle_file_backing(&mut s, true).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut s = emu(&format!("trtype:emu file:{}", path.display()));
        let e = settle_file_backing(&mut s, false).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
    }

    #[test]
    fn ram_namespaces_count_only_when_the_run_writes() {
        let t = [parse_transport_id("trtype:emu size:1G ns:4").unwrap()];
        assert_eq!(emu_ram_need(&t, true), 4 << 30);
        assert_eq!(emu_ram_need(&t, false), 0);
        let t = [parse_transport_id("trtype:emu size:1G null:1").unwrap()];
        assert_eq!(emu_ram_need(&t, true), 0);
    }
}
