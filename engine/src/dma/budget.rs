//! How much ordinary memory this process may still use: `MemAvailable` from
//! `/proc/meminfo` and the memory limit of its cgroup and every ancestor
//! (v2 `memory.max` − `memory.current`, v1 `memory.limit_in_bytes` −
//! `memory.usage_in_bytes`). Checked before a large mapping (a DMA pool in
//! ordinary memory, the emulated controller's RAM namespaces), so an
//! oversized request fails with a message naming needed and available bytes
//! instead of the OOM killer ending the process without a word.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use super::DmaError;

/// The tightest memory limit found, and where it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryBudget {
    /// Bytes that may still be allocated.
    pub available: u64,
    /// Where the figure comes from (`MemAvailable`, a cgroup file).
    pub source: String,
}

/// Bytes above which a request is checked at all (smaller ones cannot
/// matter and are not worth the file reads).
const CHECK_ABOVE: u64 = 64 << 20;

/// The memory this process may still use, or `None` when nothing could be
/// read (not Linux, no /proc).
pub fn memory_budget() -> Option<MemoryBudget> {
    let mut best = meminfo_available(Path::new("/proc/meminfo")).map(|b| MemoryBudget {
        available: b,
        source: "MemAvailable in /proc/meminfo".into(),
    });
    for (dir, v2) in cgroup_dirs() {
        if let Some(c) = cgroup_budget(&dir, v2)
            && best.as_ref().is_none_or(|b| c.available < b.available)
        {
            best = Some(c);
        }
    }
    best
}

/// Refuse a request of `needed` bytes for `what` that does not fit in
/// `budget`.
pub fn check_fits(
    needed: u64,
    what: &'static str,
    budget: Option<MemoryBudget>,
) -> Result<(), DmaError> {
    if needed <= CHECK_ABOVE {
        return Ok(());
    }
    match budget {
        Some(b) if needed > b.available => Err(DmaError::MemoryShort {
            what,
            needed,
            available: b.available,
            limit: b.source,
        }),
        _ => Ok(()),
    }
}

/// [`check_fits`] against this machine now.
pub fn check_memory(needed: u64, what: &'static str) -> Result<(), DmaError> {
    if needed <= CHECK_ABOVE {
        return Ok(());
    }
    check_fits(needed, what, memory_budget())
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn meminfo_available(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// This process's cgroup directories, innermost first, with whether each is
/// cgroup v2.
fn cgroup_dirs() -> Vec<(PathBuf, bool)> {
    let Ok(text) = std::fs::read_to_string("/proc/self/cgroup") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (root, v2) = if controllers.is_empty() {
            (PathBuf::from("/sys/fs/cgroup"), true)
        } else if controllers.split(',').any(|c| c == "memory") {
            (PathBuf::from("/sys/fs/cgroup/memory"), false)
        } else {
            continue;
        };
        let mut dir = root.join(path.trim_start_matches('/'));
        loop {
            out.push((dir.clone(), v2));
            if dir == root || !dir.pop() || !dir.starts_with(&root) {
                break;
            }
        }
    }
    out
}

/// The room left under the limit in `dir`, when it has one.
fn cgroup_budget(dir: &Path, v2: bool) -> Option<MemoryBudget> {
    let (limit_file, usage_file) = if v2 {
        ("memory.max", "memory.current")
    } else {
        ("memory.limit_in_bytes", "memory.usage_in_bytes")
    };
    // "max" (v2) does not parse: no limit. v1 reports a huge number instead.
    let limit = read_u64(&dir.join(limit_file))?;
    if limit >= 1 << 60 {
        return None;
    }
    let used = read_u64(&dir.join(usage_file)).unwrap_or(0);
    Some(MemoryBudget {
        available: limit.saturating_sub(used),
        source: format!(
            "the cgroup limit {} ({limit} bytes, {used} in use)",
            dir.join(limit_file).display()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_above_the_budget_names_needed_available_and_source() {
        let b = MemoryBudget {
            available: 1 << 30,
            source: "the cgroup limit /x/memory.max".into(),
        };
        let e = check_fits(
            20 << 30,
            "the emulated controller's RAM namespaces",
            Some(b),
        )
        .unwrap_err();
        let m = e.to_string();
        assert!(m.contains("21474836480 bytes (20480 MiB)"), "{m}");
        assert!(m.contains("1073741824 bytes (1024 MiB)"), "{m}");
        assert!(m.contains("/x/memory.max"), "{m}");
    }

    #[test]
    fn small_requests_and_unknown_budgets_pass() {
        assert!(
            check_fits(
                1 << 20,
                "x",
                Some(MemoryBudget {
                    available: 0,
                    source: String::new()
                })
            )
            .is_ok()
        );
        assert!(check_fits(1 << 40, "x", None).is_ok());
    }

    #[test]
    fn meminfo_and_cgroup_files_parse() {
        let dir = std::env::temp_dir().join(format!("nvme-engine-budget-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("meminfo"),
            "MemTotal: 100 kB\nMemAvailable:    2048 kB\n",
        )
        .unwrap();
        assert_eq!(meminfo_available(&dir.join("meminfo")), Some(2 << 20));
        std::fs::write(dir.join("memory.max"), "1073741824\n").unwrap();
        std::fs::write(dir.join("memory.current"), "73741824\n").unwrap();
        assert_eq!(cgroup_budget(&dir, true).unwrap().available, 1_000_000_000);
        std::fs::write(dir.join("memory.max"), "max\n").unwrap();
        assert!(cgroup_budget(&dir, true).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn this_machine_has_a_budget() {
        assert!(memory_budget().is_some_and(|b| b.available > 0));
    }
}
