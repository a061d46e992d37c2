//! Where the device threads of emulated controllers run. A spinning device
//! thread on the same core as a spinning worker gets only scheduler time
//! slices (milliseconds), which turns millions of IOPS into thousands; so
//! each device thread goes to an allowed core that no worker uses, and only
//! when none is left do both sides switch to polling that yields the CPU.

#![forbid(unsafe_code)]

/// Where one emulated controller's device thread runs (`shared`: the core
/// is also used by a worker or by another device thread, and both sides
/// must yield when idle).
pub use nvme_trid::EmuThread as EmuPlacement;

/// Place device threads, one per entry of `requested` (`Some(core)` when the
/// user pinned it with `core:N`), given the CPUs the process may use and the
/// workers' cores. Unpinned threads take the lowest allowed core used by no
/// worker and no other device thread; without one they share, cycling over
/// the workers' cores from the last (the first worker is most often the one
/// a user watches).
pub fn place(
    allowed: &[usize],
    workers: &[usize],
    requested: &[Option<usize>],
) -> Vec<EmuPlacement> {
    let mut taken: Vec<usize> = requested.iter().flatten().copied().collect();
    let mut fallback = workers.iter().rev().cycle();
    let mut cores = Vec::with_capacity(requested.len());
    for r in requested {
        let core = match r {
            Some(c) => *c,
            None => {
                let busy: Vec<usize> = workers.iter().chain(&taken).copied().collect();
                let free = nvme_engine::cpu::free_cpu(allowed, &busy);
                let c = free
                    .or_else(|| fallback.next().copied())
                    .or_else(|| allowed.first().copied())
                    .unwrap_or(0);
                taken.push(c);
                c
            }
        };
        cores.push(core);
    }
    cores
        .iter()
        .map(|&core| EmuPlacement {
            core,
            shared: workers.contains(&core) || cores.iter().filter(|&&c| c == core).count() > 1,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(core: usize, shared: bool) -> EmuPlacement {
        EmuPlacement { core, shared }
    }

    #[test]
    fn device_thread_gets_a_core_no_worker_uses() {
        assert_eq!(place(&[0, 1], &[0], &[None]), vec![p(1, false)]);
        assert_eq!(place(&[0, 1, 2, 3], &[1, 2], &[None]), vec![p(0, false)]);
        assert_eq!(
            place(&[0, 1, 2, 3], &[0], &[None, None]),
            vec![p(1, false), p(2, false)]
        );
    }

    #[test]
    fn without_a_free_core_it_shares_and_says_so() {
        assert_eq!(place(&[0, 1], &[0, 1], &[None]), vec![p(1, true)]);
        assert_eq!(place(&[0], &[0], &[None]), vec![p(0, true)]);
        assert_eq!(
            place(&[0, 1, 2], &[0, 1], &[None, None]),
            vec![p(2, false), p(1, true)]
        );
    }

    #[test]
    fn two_device_threads_on_one_spare_core_share_it() {
        // Both pinned by the user to the same spare core.
        assert_eq!(
            place(&[0, 1, 2], &[0], &[Some(2), Some(2)]),
            vec![p(2, true), p(2, true)]
        );
    }

    #[test]
    fn a_pinned_core_is_kept_and_not_given_to_others() {
        assert_eq!(place(&[0, 1, 2], &[0], &[Some(0)]), vec![p(0, true)]);
        assert_eq!(
            place(&[0, 1, 2], &[0], &[None, Some(1)]),
            vec![p(2, false), p(1, false)]
        );
    }
}
