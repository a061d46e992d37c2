//! CPU placement for the threads of the engine and of the programs built on
//! it (reactors, benchmark workers, the emulated controller's device
//! thread): the CPUs this process may run on, read from the calling
//! thread's affinity mask; pinning the calling thread to one of them; and
//! picking a CPU no busy thread uses for a helper thread.
//!
//! The policies — which thread goes where — stay with their owners; this
//! module only does the mechanics, so every pin is checked the same way.
//! Built on `core_affinity` (`sched_getaffinity` / `sched_setaffinity` on
//! Linux).
//!
//! Also the processor's time-stamp counter ([`tsc`]), the cheap per-I/O
//! clock of benchmark loops.

#![forbid(unsafe_code)]

/// Why a CPU set could not be read or a thread could not be pinned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CpuError {
    /// The calling thread's affinity mask could not be read, or is empty.
    #[error(
        "cannot read this thread's CPU affinity mask (sched_getaffinity); run without pinning \
         on this platform"
    )]
    AffinityUnavailable,
    /// A CPU outside the process's affinity mask.
    #[error(
        "CPU {cpu} is not one this process may run on (allowed: {allowed}); pick one of those \
         or widen the set (taskset, cgroup cpuset)"
    )]
    NotAllowed {
        /// The CPU asked for.
        cpu: usize,
        /// The allowed CPUs, as a list such as `0-2,5`.
        allowed: String,
    },
    /// The kernel refused the new affinity.
    #[error("pinning the thread to CPU {cpu} failed (sched_setaffinity); check the CPU is online")]
    PinFailed {
        /// The CPU asked for.
        cpu: usize,
    },
}

/// The CPUs the calling thread may run on, ascending and distinct; never
/// empty.
pub fn allowed_cpus() -> Result<Vec<usize>, CpuError> {
    let mut cpus: Vec<usize> = core_affinity::get_core_ids()
        .ok_or(CpuError::AffinityUnavailable)?
        .into_iter()
        .map(|c| c.id)
        .collect();
    if cpus.is_empty() {
        return Err(CpuError::AffinityUnavailable);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Pin the calling thread to `cpu`, which must be one the process may run
/// on. The kernel decides: a thread already pinned elsewhere may still move
/// to any CPU of its cpuset. A refusal names the CPUs this thread may use.
pub fn pin_current_thread(cpu: usize) -> Result<(), CpuError> {
    // The affinity call cannot name a CPU beyond the set size (it would
    // index past the mask), so such a CPU is refused without trying.
    if cpu < libc::CPU_SETSIZE as usize
        && core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
    {
        return Ok(());
    }
    let allowed = allowed_cpus()?;
    if allowed.binary_search(&cpu).is_err() {
        return Err(CpuError::NotAllowed {
            cpu,
            allowed: format_cpus(&allowed),
        });
    }
    Err(CpuError::PinFailed { cpu })
}

/// The first CPU of `allowed` (in its order) that no busy thread uses, for
/// a helper thread that should not take time slices from a spinning one;
/// `None` when every allowed CPU is busy. `busy` may repeat CPUs.
pub fn free_cpu(allowed: &[usize], busy: &[usize]) -> Option<usize> {
    allowed.iter().copied().find(|c| !busy.contains(c))
}

/// The processor's time-stamp counter: invariant (constant rate, not
/// stopped in idle states) on every x86_64 CPU this engine targets, and a
/// few instructions to read. Calibrate its rate against
/// [`std::time::Instant`] before turning ticks into time.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn tsc() -> u64 {
    crate::sys::tsc()
}

/// CPUs as a compact list: `[0,1,2,5]` → `"0-2,5"` (input order kept,
/// consecutive ascending runs merged), the form `taskset -c` takes.
pub fn format_cpus(cpus: &[usize]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if end == start {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowed_set_is_readable_sorted_and_distinct() {
        let cpus = allowed_cpus().unwrap();
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]), "{cpus:?}");
    }

    #[test]
    fn pinning_to_an_allowed_cpu_moves_the_thread_there() {
        let cpu = *allowed_cpus().unwrap().last().unwrap();
        std::thread::spawn(move || {
            pin_current_thread(cpu).unwrap();
            // After the pin the mask holds only that CPU.
            assert_eq!(allowed_cpus().unwrap(), vec![cpu]);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_pinned_thread_can_move_to_another_allowed_cpu() {
        let allowed = allowed_cpus().unwrap();
        let (first, last) = (allowed[0], *allowed.last().unwrap());
        std::thread::spawn(move || {
            pin_current_thread(first).unwrap();
            // The mask now holds `first` only; the cpuset still allows `last`.
            pin_current_thread(last).unwrap();
            assert_eq!(allowed_cpus().unwrap(), vec![last]);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn pinning_outside_the_allowed_set_is_refused_naming_the_set() {
        let allowed = allowed_cpus().unwrap();
        let outside = allowed.last().unwrap() + 1_000_000;
        let e = std::thread::spawn(move || pin_current_thread(outside))
            .join()
            .unwrap()
            .unwrap_err();
        assert_eq!(
            e,
            CpuError::NotAllowed {
                cpu: outside,
                allowed: format_cpus(&allowed)
            }
        );
        assert!(e.to_string().contains("taskset"), "{e}");
    }

    #[test]
    fn a_free_cpu_is_the_first_allowed_one_no_busy_thread_uses() {
        assert_eq!(free_cpu(&[0, 1, 2], &[0, 1]), Some(2));
        assert_eq!(free_cpu(&[0, 1, 2, 3], &[1, 1, 2]), Some(0));
        assert_eq!(free_cpu(&[4, 5], &[5, 4]), None);
        assert_eq!(free_cpu(&[], &[]), None);
    }

    #[test]
    fn cpu_lists_format_compactly() {
        assert_eq!(format_cpus(&[0, 1, 2, 5]), "0-2,5");
        assert_eq!(format_cpus(&[3]), "3");
        assert_eq!(format_cpus(&[]), "");
        assert_eq!(format_cpus(&[3, 0, 1]), "3,0-1");
    }
}
