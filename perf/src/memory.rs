//! How much memory this process can still get, checked before the run maps
//! emulated namespaces and DMA pools: the kernel's estimate
//! (`/proc/meminfo` MemAvailable, plus free hugepages for DMA) and the
//! memory cgroup's limit less its usage (cgroup v2 `memory.max` /
//! `memory.current` of the process's cgroup and its ancestors, or cgroup v1
//! `memory.limit_in_bytes` / `memory.usage_in_bytes`). Without the check a
//! run that does not fit is killed by the OOM killer without a word.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use crate::units::format_size_approx;

/// Memory the process may still use, and where the limit comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Available {
    /// Bytes of ordinary memory.
    pub bytes: u64,
    /// Bytes of free hugepages (DMA pools may use them instead).
    pub hugepages: u64,
    /// What sets the limit, for the error message.
    pub source: String,
}

/// Values at or above this are "no limit" in cgroup files.
const UNLIMITED: u64 = 1 << 62;

fn read_u64(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let t = text.trim();
    if t == "max" {
        return Some(u64::MAX);
    }
    t.parse().ok()
}

/// `MemAvailable` and free hugepage bytes from meminfo text.
pub fn parse_meminfo(text: &str) -> (Option<u64>, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    let avail = field("MemAvailable:").map(|kib| kib * 1024);
    let huge = field("HugePages_Free:").unwrap_or(0) * field("Hugepagesize:").unwrap_or(0) * 1024;
    (avail, huge)
}

/// The tightest (limit - usage) over the cgroup directories given, nearest first.
fn cgroup_room(dirs: &[PathBuf], limit_file: &str, usage_file: &str) -> Option<(u64, PathBuf)> {
    let mut best: Option<(u64, PathBuf)> = None;
    for d in dirs {
        let Some(limit) = read_u64(&d.join(limit_file)) else {
            continue;
        };
        if limit >= UNLIMITED {
            continue;
        }
        let used = read_u64(&d.join(usage_file)).unwrap_or(0);
        let room = limit.saturating_sub(used);
        if best.as_ref().is_none_or(|b| room < b.0) {
            best = Some((room, d.join(limit_file)));
        }
    }
    best
}

/// A cgroup path and its ancestors under `root`.
fn ancestors(root: &Path, rel: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let mut p = PathBuf::from(rel.trim_start_matches('/'));
    loop {
        v.push(root.join(&p));
        if !p.pop() {
            break;
        }
    }
    v
}

/// Room left in the process's memory cgroup (v2, then v1), if limited.
fn cgroup() -> Option<(u64, PathBuf)> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut dirs_v2 = Vec::new();
    let mut dirs_v1 = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if ctrls.is_empty() {
            dirs_v2 = ancestors(Path::new("/sys/fs/cgroup"), path);
        } else if ctrls.split(',').any(|c| c == "memory") {
            dirs_v1 = ancestors(Path::new("/sys/fs/cgroup/memory"), path);
        }
    }
    cgroup_room(&dirs_v2, "memory.max", "memory.current")
        .or_else(|| cgroup_room(&dirs_v1, "memory.limit_in_bytes", "memory.usage_in_bytes"))
}

/// What this process can still allocate; `None` when nothing can be read
/// (then no check is made).
pub fn available() -> Option<Available> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let (avail, hugepages) = parse_meminfo(&meminfo);
    let avail = avail?;
    let mut a = Available {
        bytes: avail,
        hugepages,
        source: format!(
            "MemAvailable in /proc/meminfo: {}",
            format_size_approx(avail)
        ),
    };
    if let Some((room, file)) = cgroup()
        && room < a.bytes
    {
        a.bytes = room;
        a.source = format!(
            "memory cgroup limit {} less usage: {}",
            file.display(),
            format_size_approx(room)
        );
    }
    Some(a)
}

/// One consumer of memory, for the error message.
#[derive(Clone, Debug)]
pub struct Need {
    /// What it is.
    pub what: String,
    /// Bytes.
    pub bytes: u64,
}

/// Refuse the run when `needs` (ordinary memory; DMA may also use free
/// hugepages) exceed what is available.
pub fn check(needs: &[Need], dma: u64, avail: &Available) -> Result<(), String> {
    let total = needs
        .iter()
        .fold(0u64, |a, n| a.saturating_add(n.bytes))
        .saturating_add(dma);
    let room = avail.bytes.saturating_add(avail.hugepages);
    if total <= room {
        return Ok(());
    }
    let mut parts: Vec<String> = needs
        .iter()
        .filter(|n| n.bytes > 0)
        .map(|n| format!("{} {}", n.what, format_size_approx(n.bytes)))
        .collect();
    if dma > 0 {
        parts.push(format!(
            "DMA buffers and queues {}",
            format_size_approx(dma)
        ));
    }
    Err(format!(
        "this run needs about {} of memory ({}) but only {} is available ({}{}); lower -q, -o, -P, the number of cores, or the emulated size:/ns:, or use null:1 or file: backing for emulated namespaces",
        format_size_approx(total),
        parts.join(", "),
        format_size_approx(room),
        avail.source,
        if avail.hugepages > 0 {
            format!(
                ", plus {} of free hugepages",
                format_size_approx(avail.hugepages)
            )
        } else {
            String::new()
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_fields_are_read_in_bytes() {
        let text = "MemTotal: 1000 kB\nMemAvailable:     2048 kB\nHugePages_Free:  3\nHugepagesize:    2048 kB\n";
        assert_eq!(parse_meminfo(text), (Some(2 << 20), 3 * (2 << 20)));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), (None, 0));
    }

    #[test]
    fn a_run_that_does_not_fit_names_what_it_needs_and_what_is_there() {
        let avail = Available {
            bytes: 1 << 30,
            hugepages: 0,
            source: "test".into(),
        };
        let needs = [Need {
            what: "emulated namespaces".into(),
            bytes: 20 << 30,
        }];
        let e = check(&needs, 8 << 20, &avail).unwrap_err();
        assert!(e.contains("needs about 20.0 GiB"), "{e}");
        assert!(e.contains("emulated namespaces 20.0 GiB"), "{e}");
        assert!(e.contains("only 1.0 GiB is available (test)"), "{e}");
        assert!(check(&needs[..0], 8 << 20, &avail).is_ok());
        // Sums saturate instead of wrapping.
        let huge = [Need {
            what: "x".into(),
            bytes: u64::MAX,
        }];
        assert!(check(&huge, u64::MAX, &avail).is_err());
    }

    #[test]
    fn ancestors_run_from_the_cgroup_to_the_root() {
        let v = ancestors(Path::new("/sys/fs/cgroup"), "/a/b");
        assert_eq!(
            v,
            [
                PathBuf::from("/sys/fs/cgroup/a/b"),
                PathBuf::from("/sys/fs/cgroup/a"),
                PathBuf::from("/sys/fs/cgroup")
            ]
        );
    }
}
