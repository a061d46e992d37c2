//! Bring-up options of a controller (the knobs of [`crate::driver::Controller::new`]).

use std::time::Duration;

/// Options for bring-up.
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// Admin SQ and CQ entries (equal sizes), 2..=4096. Default 32.
    pub admin_queue_entries: u16,
    /// I/O queue pairs to ask for with Set Features Number of Queues. Default 64.
    pub io_queues: u16,
    /// Default entries of an I/O queue pair, clamped to CAP.MQES+1 and 4096. Default 1024.
    pub io_queue_entries: u16,
    /// How long one admin command may take. Default 5 s.
    pub admin_timeout: Duration,
    /// How long a synchronous I/O helper waits for its completion. Default 30 s.
    pub io_timeout: Duration,
    /// The driver's own cap on bytes per command (also bounded by MDTS).
    /// Every queue slot preallocates PRP-list pages for this much. Default 2 MiB.
    pub max_transfer_bytes: usize,
    /// How often a command is resubmitted after an error status with DNR=0
    /// or after a controller reset, before it fails. Default 3.
    pub io_retry_limit: u8,
    /// Least time between two timeout scans of a queue pair
    /// ([`crate::driver::IoQueuePair::check_timeouts`]); also the granularity of I/O
    /// deadlines. Default 10 ms.
    pub timeout_scan_interval: Duration,
    /// Use shadow doorbells (Doorbell Buffer Config) on I/O queues when the
    /// controller supports them (OACS bit 8): MMIO doorbell writes only when
    /// the device asks for them. Default false: every doorbell is an MMIO
    /// write. Turn it on for a device that polls the shadow doorbells (it
    /// then asks for almost no MMIO writes). QEMU's NVMe controller (7.2)
    /// does not poll: it writes EventIdx equal to the value it last read, so
    /// a host that keeps up still writes MMIO for every batch, while its
    /// submission pass keeps picking up shadow-only tails and holds back the
    /// completions until it ends; nvme-perf at QD32 in a guest lost up to a
    /// quarter of its IOPS that way, with no fewer MMIO writes per I/O.
    pub shadow_doorbells: bool,
    /// Keep Asynchronous Event Requests outstanding (min(AERL+1, 16)) and
    /// act on the events: namespaces attached, detached or resized,
    /// SMART / Health warnings, error log entries
    /// ([`crate::driver::Controller::events`]). Default true.
    pub async_events: bool,
    /// How often the controller's admin worker looks for asynchronous event
    /// completions on the admin queue (interrupts are off).
    /// [`crate::driver::Controller::process_events`] looks at once.
    /// Default 10 ms.
    pub admin_poll_interval: Duration,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            admin_queue_entries: 32,
            io_queues: 64,
            io_queue_entries: 1024,
            admin_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(30),
            max_transfer_bytes: 2 << 20,
            io_retry_limit: 3,
            timeout_scan_interval: Duration::from_millis(10),
            shadow_doorbells: false,
            async_events: true,
            admin_poll_interval: Duration::from_millis(10),
        }
    }
}

/// Largest per-command transfer the driver accepts as a cap (65536 blocks of 512 B).
pub(crate) const MAX_TRANSFER_CAP: usize = 32 << 20;
