//! Where the built-in emulated controller does its work, next to the
//! program's own busy-polling threads (application threads, reactors).
//!
//! An emulated device thread that spins on a core shared with another
//! spinning thread gets scheduler time slices (milliseconds), so every
//! command that lands on the wrong side of a slice waits that long; one
//! that backs off and sleeps between commands adds a wake-up to every
//! commit. Either way the figures measure the scheduler, not the engine.
//! So: a device thread that keeps spinning on a core no busy thread uses
//! when the machine has one to spare; otherwise the inline device, which
//! executes commands inside the doorbell write, on the thread that rings
//! it (a reactor, or a direct-mode thread), and needs no core of its own.

#![forbid(unsafe_code)]

use std::fmt;

use nvme_emu::EmuMode;

use crate::cores::format_cores;

/// Where an emulated controller executes commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevicePlacement {
    /// A device thread pinned to `core`, which no busy thread uses, that
    /// busy-polls the doorbells without ever sleeping.
    Thread {
        /// The device thread's CPU.
        core: usize,
    },
    /// No device thread: commands execute in the doorbell write, on the
    /// thread that polls the queue.
    Inline,
}

impl DevicePlacement {
    /// The placement for a program whose busy-polling threads run on
    /// `busy` (cores may repeat), given the CPUs the process may use: the
    /// lowest allowed core outside `busy` for a spinning device thread, or
    /// the inline device when there is none.
    pub fn for_busy_cores(allowed: &[usize], busy: &[usize]) -> Self {
        match nvme_engine::cpu::free_cpu(allowed, busy) {
            Some(core) => DevicePlacement::Thread { core },
            None => DevicePlacement::Inline,
        }
    }

    /// The emulator mode that implements this placement.
    pub fn mode(&self) -> EmuMode {
        match *self {
            DevicePlacement::Thread { core } => EmuMode::threaded_spin().on_core(core),
            DevicePlacement::Inline => EmuMode::Inline,
        }
    }

    /// Whether commands execute on the polling thread (so the time of the
    /// doorbell write is the device's time).
    pub fn is_inline(&self) -> bool {
        matches!(self, DevicePlacement::Inline)
    }
}

impl fmt::Display for DevicePlacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DevicePlacement::Thread { core } => write!(
                f,
                "device thread spinning on core {core}, which no other busy thread uses"
            ),
            DevicePlacement::Inline => f.write_str(
                "inline device (commands execute in the doorbell write, on the polling thread): \
                 no core is free for a device thread",
            ),
        }
    }
}

/// Cores for a program's busy-polling threads and the emulated device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorePlan {
    /// One core per busy thread, in the order asked for: distinct allowed
    /// cores while they last (lowest first), then shared ones, cycling.
    pub threads: Vec<usize>,
    /// Where the emulated device works.
    pub device: DevicePlacement,
    /// Whether two busy threads share a core; they should then yield the
    /// CPU when idle (`ReactorConfig::idle_yield`).
    pub shared: bool,
}

impl CorePlan {
    /// Plan `busy_threads` busy-polling threads and an emulated device over
    /// the `allowed` CPUs. `allowed` must not be empty.
    pub fn new(allowed: &[usize], busy_threads: usize) -> Self {
        let threads: Vec<usize> = allowed.iter().copied().cycle().take(busy_threads).collect();
        let device = DevicePlacement::for_busy_cores(allowed, &threads);
        CorePlan {
            shared: busy_threads > allowed.len(),
            threads,
            device,
        }
    }
}

impl fmt::Display for CorePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "busy threads on cores {}; ", format_cores(&self.threads))?;
        write!(f, "{}", self.device)?;
        if self.shared {
            f.write_str(" (busy threads share cores and yield when idle)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_core_gets_a_spinning_device_thread() {
        assert_eq!(
            DevicePlacement::for_busy_cores(&[0, 1, 2], &[0, 1]),
            DevicePlacement::Thread { core: 2 }
        );
        assert_eq!(
            DevicePlacement::for_busy_cores(&[0, 1, 2, 3], &[1, 1]),
            DevicePlacement::Thread { core: 0 }
        );
        let plan = CorePlan::new(&[4, 5, 6], 2);
        assert_eq!(plan.threads, vec![4, 5]);
        assert_eq!(plan.device, DevicePlacement::Thread { core: 6 });
        assert!(!plan.shared);
        assert!(matches!(
            plan.device.mode(),
            EmuMode::Threaded {
                core: Some(6),
                idle: nvme_emu::IdlePolicy::Spin,
                ..
            }
        ));
    }

    #[test]
    fn without_a_free_core_the_device_runs_inline() {
        let plan = CorePlan::new(&[0, 1], 2);
        assert_eq!(plan.threads, vec![0, 1]);
        assert_eq!(plan.device, DevicePlacement::Inline);
        assert_eq!(plan.device.mode(), EmuMode::Inline);
        assert!(!plan.shared);
        assert!(plan.to_string().contains("inline device"), "{plan}");
    }

    #[test]
    fn more_threads_than_cores_share_and_say_so() {
        let plan = CorePlan::new(&[3], 2);
        assert_eq!(plan.threads, vec![3, 3]);
        assert_eq!(plan.device, DevicePlacement::Inline);
        assert!(plan.shared);
        assert!(plan.to_string().contains("yield when idle"), "{plan}");
    }
}
