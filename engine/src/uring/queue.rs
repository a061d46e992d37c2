//! An io_uring passthrough queue: the driver's [`QueuePair`] over one
//! [`UringTransport`] ring, so it has the same [`crate::Namespace`] checks,
//! [`crate::IoCompletion`]s, [`crate::IoError`]s, deadlines, retries,
//! synchronous helpers and exactly-once teardown as a PCIe queue pair. This
//! file chooses the ring's modes (polled or interrupt completion, fixed
//! buffers or not) and registers DMA pools with it: any number of pools,
//! at any time, into the ring's table of `fixed_slots` fixed buffers.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::dma::{DmaPool, RegionHold};
use crate::driver::{ControllerOptions, QueuePair};

use super::device::{UringDevice, kernel_timeout_ms};
use super::error::UringError;
use super::kernel::{KernelVersion, io_uring_disabled};
use super::modes::{BufferMode, CompletionMode, RingStats};
use super::ring::{RingSetupError, UringTransport};

/// A queue pair over io_uring passthrough.
pub type UringQueue = QueuePair<UringTransport>;

/// Options for one queue.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct UringQueueOptions {
    /// Commands in flight at once (1..=4096).
    pub entries: u16,
    /// Use `IORING_SETUP_IOPOLL` when the namespace has poll queues.
    pub polled: bool,
    /// Fail instead of falling back to interrupts when polling is not possible.
    pub require_polled: bool,
    /// Register pools as fixed buffers (Linux 6.1+).
    pub fixed_buffers: bool,
    /// Slots of the ring's fixed-buffer table (1..=16384, the kernel's
    /// limit): each pool registered takes one per largest transfer's worth
    /// of its bytes (a 2 MiB pool with 512 KiB transfers takes 4). The
    /// kernel keeps 8 bytes per slot. Memory beyond the table still works,
    /// pinned per I/O and counted ([`RingStats::unregistered_io`](super::RingStats::unregistered_io)).
    pub fixed_slots: u16,
    /// Deadline of each command; past it the command is cancelled and, when
    /// it then completes cancelled, reported as [`IoError::TimedOut`](crate::IoError::TimedOut).
    pub timeout: Duration,
    /// Timeout the kernel's NVMe driver enforces per command (abort, then
    /// controller reset); `None` leaves its default (`nvme_core.io_timeout`).
    pub kernel_timeout: Option<Duration>,
    /// How long dropping the queue waits for commands that never complete
    /// before giving their buffers up as quarantined.
    pub close_timeout: Duration,
    /// Resubmissions of a command after a DNR=0 error status.
    pub retry_limit: u8,
}

impl Default for UringQueueOptions {
    fn default() -> Self {
        UringQueueOptions {
            entries: 128,
            polled: true,
            require_polled: false,
            fixed_buffers: true,
            fixed_slots: 4096,
            timeout: Duration::from_secs(30),
            kernel_timeout: None,
            close_timeout: Duration::from_secs(120),
            retry_limit: ControllerOptions::default().io_retry_limit,
        }
    }
}

/// The completion mode every one of `queues` queues created with `opts`
/// at once by this process will get: what a program creating several
/// rings (one per thread) should plan for, so that all of them run in the
/// same mode. Polled when asked for, the kernel can, the namespace has poll
/// queues and either one queue is wanted or the kernel lets several rings
/// poll one device (Linux 6.5); otherwise interrupts, with the reason.
/// Creating the queues with `polled` set to `mode == Polled` and
/// `require_polled` to the same then gives each exactly this mode.
pub(super) fn plan_completion(
    dev: &UringDevice,
    opts: &UringQueueOptions,
    queues: usize,
) -> CompletionMode {
    let kernel = dev.kernel();
    let release = super::kernel::release();
    let poll = dev.poll_support();
    if !opts.polled {
        return CompletionMode::Interrupts {
            reason: "polling not asked for (poll:0)".into(),
        };
    }
    if !kernel.is_none_or(|k| k.at_least(KernelVersion::IOPOLL_AND_FIXED)) {
        return CompletionMode::Interrupts {
            reason: format!("kernel {release} predates polled uring commands (Linux 6.1)"),
        };
    }
    if poll.available != Some(true) {
        return CompletionMode::Interrupts {
            reason: format!(
                "no poll queues ({}); set nvme.poll_queues=N to poll",
                poll.detail
            ),
        };
    }
    let concurrent = kernel.is_some_and(|k| k.at_least(KernelVersion::CONCURRENT_POLL));
    if queues > 1 && !concurrent {
        return CompletionMode::Interrupts {
            reason: format!(
                "{queues} queues wanted; on kernel {release} (before Linux 6.5) several rings \
                 polling one NVMe device can crash the kernel, so only one queue per process \
                 may poll: use one queue (one core, one queue pair) to poll"
            ),
        };
    }
    if POLLED_RINGS.load(Ordering::Acquire) != 0 && !concurrent {
        return CompletionMode::Interrupts {
            reason: format!(
                "another queue of this process already polls; on kernel {release} (before \
                 Linux 6.5) only one queue per process may poll"
            ),
        };
    }
    CompletionMode::Polled
}

/// Create the queue (see [`UringDevice::create_queue`]).
pub(super) fn create(dev: &UringDevice, opts: UringQueueOptions) -> Result<UringQueue, UringError> {
    if !(1..=4096).contains(&opts.entries) {
        return Err(UringError::InvalidOption {
            name: "entries",
            value: opts.entries as u64,
            hint: "a queue holds 1 to 4096 commands",
        });
    }
    let kernel = dev.kernel();
    let new_enough = kernel.is_none_or(|k| k.at_least(KernelVersion::IOPOLL_AND_FIXED));
    let release = super::kernel::release();
    let poll = dev.poll_support();
    let mut poll_slot = None;
    let completion_mode = if !opts.polled {
        CompletionMode::Interrupts {
            reason: "polling not asked for".into(),
        }
    } else if !new_enough {
        CompletionMode::Interrupts {
            reason: format!("kernel {release} predates polled uring commands (Linux 6.1)"),
        }
    } else if poll.available == Some(true) {
        match PolledRingSlot::take(kernel) {
            Some(slot) => {
                poll_slot = Some(slot);
                CompletionMode::Polled
            }
            None => CompletionMode::Interrupts {
                reason: format!(
                    "another queue of this process already polls; on kernel {release} \
                         (before Linux 6.5) several rings polling one NVMe device can crash \
                         the kernel (the polled request's bio may be freed while another ring \
                         polls it), so only one queue at a time polls"
                ),
            },
        }
    } else {
        CompletionMode::Interrupts {
            reason: format!(
                "no poll queues ({}); set nvme.poll_queues=N to poll",
                poll.detail
            ),
        }
    };
    if opts.require_polled && completion_mode != CompletionMode::Polled {
        return Err(UringError::NoPollQueues {
            path: dev.path().display().to_string(),
            detail: match &completion_mode {
                CompletionMode::Interrupts { reason } => reason.clone(),
                CompletionMode::Polled => String::new(),
            },
        });
    }
    let buffer_mode = if !opts.fixed_buffers {
        BufferMode::Unregistered {
            reason: "fixed buffers not asked for".into(),
        }
    } else if !new_enough {
        BufferMode::Unregistered {
            reason: format!(
                "kernel {release} predates fixed buffers for uring commands (Linux 6.1)"
            ),
        }
    } else {
        BufferMode::Unregistered {
            reason: "no pool registered yet (UringQueue::register_pool)".into(),
        }
    };
    if opts.fixed_buffers
        && !(1..=super::ring::MAX_FIXED_SLOTS).contains(&(opts.fixed_slots as u32))
    {
        return Err(UringError::InvalidOption {
            name: "fixed_slots",
            value: opts.fixed_slots as u64,
            hint: "a ring's fixed-buffer table has 1 to 16384 slots",
        });
    }
    let capacity = opts.entries as usize;
    let ring = UringTransport::new(
        dev.ns_fd(),
        capacity,
        completion_mode == CompletionMode::Polled,
        if opts.fixed_buffers && new_enough {
            opts.fixed_slots as u32
        } else {
            0
        },
        dev.max_transfer_bytes(),
        kernel_timeout_ms(opts.kernel_timeout),
    )
    .map_err(|e| setup_error(e, opts.entries as u32))?;
    let mut ring = ring;
    ring.completion_mode = completion_mode;
    ring.buffer_mode = buffer_mode;
    if opts.fixed_buffers && new_enough {
        // The kernel refused the ring's table of fixed buffers.
        if let Some(why) = ring.fixed_unavailable() {
            ring.buffer_mode = BufferMode::Unregistered { reason: why.into() };
        }
    }
    ring.close_timeout = opts.close_timeout;
    ring.poll_slot = poll_slot;
    let scan = ControllerOptions::default().timeout_scan_interval;
    Ok(QueuePair::new(ring, opts.timeout, opts.retry_limit, scan))
}

impl QueuePair<UringTransport> {
    /// Register `pool`'s memory with this ring as fixed buffers, so its
    /// buffers need no page pinning per I/O; returns the ring's buffer
    /// mode, which says why when the kernel could not (the pool's buffers
    /// then still work, pinned per I/O and counted in
    /// [`RingStats::unregistered_io`](super::RingStats::unregistered_io)).
    /// Any number of pools, at any time, also with commands in flight; the
    /// ring keeps the pool's memory mapped while registered, and releases
    /// it once the pool and all its buffers are gone
    /// ([`UringQueue::release_unused`]).
    pub fn register_pool(&mut self, pool: &DmaPool) -> &BufferMode {
        self.register_memory(pool.hold())
    }

    /// [`UringQueue::register_pool`] for the memory `hold` keeps mapped.
    pub fn register_memory(&mut self, hold: RegionHold) -> &BufferMode {
        let ring = self.transport_mut();
        // The reason is kept in the buffer mode.
        let _ = ring.register_memory(hold);
        ring.buffer_mode()
    }

    /// Release the registrations of pools that are gone with all their
    /// buffers (a system call per pool released, none otherwise); how
    /// many. Registering also does this first.
    pub fn release_unused(&mut self) -> usize {
        self.transport_mut().release_unused()
    }

    /// The ring's counters: system calls, fixed and unregistered I/O,
    /// registrations, cancellations.
    pub fn ring_stats(&self) -> &RingStats {
        self.transport().stats()
    }

    /// Polled or interrupt-driven completion, and why.
    pub fn completion_mode(&self) -> &CompletionMode {
        self.transport().completion_mode()
    }
    /// Fixed buffers or per-I/O pinning, and why.
    pub fn buffer_mode(&self) -> &BufferMode {
        self.transport().buffer_mode()
    }
}

/// Polling rings of this process on kernels where only one may poll.
static POLLED_RINGS: AtomicUsize = AtomicUsize::new(0);

/// The right to poll on a kernel before Linux 6.5, where the NVMe
/// driver's uring command polling dereferences the polled request's bio,
/// which a concurrent poller on another ring may already have completed
/// and freed (a kernel crash seen on 6.1 with several threads polling one
/// device). From 6.5 the driver polls by request and any number of rings
/// may poll.
pub(super) struct PolledRingSlot {
    counted: bool,
}

impl PolledRingSlot {
    fn take(kernel: Option<KernelVersion>) -> Option<Self> {
        if kernel.is_some_and(|k| k.at_least(KernelVersion::CONCURRENT_POLL)) {
            return Some(PolledRingSlot { counted: false });
        }
        POLLED_RINGS
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| PolledRingSlot { counted: true })
    }
}

impl Drop for PolledRingSlot {
    fn drop(&mut self) {
        if self.counted {
            POLLED_RINGS.store(0, Ordering::Release);
        }
    }
}

fn setup_error(e: RingSetupError, entries: u32) -> UringError {
    let release = super::kernel::release();
    match e {
        RingSetupError::NoUringCmd(detail) => UringError::NoUringCmd { release, detail },
        RingSetupError::Setup(source) => match source.raw_os_error() {
            Some(libc::EPERM) if io_uring_disabled().is_some_and(|v| v != 0) => {
                UringError::IoUringDisabled {
                    value: io_uring_disabled().unwrap_or(2),
                }
            }
            Some(libc::ENOSYS) | Some(libc::EPERM) => UringError::IoUringUnavailable { source },
            Some(libc::EINVAL)
                if KernelVersion::running()
                    .is_some_and(|k| !k.at_least(KernelVersion::URING_CMD)) =>
            {
                UringError::NoUringCmd {
                    release,
                    detail: "io_uring_setup rejected IORING_SETUP_SQE128 | IORING_SETUP_CQE32"
                        .into(),
                }
            }
            _ => UringError::RingSetup { entries, source },
        },
    }
}
