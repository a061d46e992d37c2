//! Bring-up options of a controller (the knobs of [`crate::driver::Controller::new`]).

use std::time::Duration;

/// Options for bring-up.
///
/// Start from [`Default`] and change what differs, with the `with_*`
/// methods or by assigning fields (new options may be added in any release):
///
/// ```
/// use std::time::Duration;
/// use nvme_engine::ControllerOptions;
///
/// let opts = ControllerOptions::default()
///     .with_io_queues(4)
///     .with_io_timeout(Duration::from_secs(2));
/// assert_eq!((opts.io_queues, opts.io_timeout), (4, Duration::from_secs(2)));
/// assert_eq!(opts.admin_queue_entries, ControllerOptions::default().admin_queue_entries);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
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
        }
    }
}

impl ControllerOptions {
    /// These options with [`admin_queue_entries`](Self::admin_queue_entries) set: admin SQ and CQ entries.
    #[must_use]
    pub fn with_admin_queue_entries(mut self, admin_queue_entries: u16) -> Self {
        self.admin_queue_entries = admin_queue_entries;
        self
    }
    /// These options with [`io_queues`](Self::io_queues) set: I/O queue pairs to ask for.
    #[must_use]
    pub fn with_io_queues(mut self, io_queues: u16) -> Self {
        self.io_queues = io_queues;
        self
    }
    /// These options with [`io_queue_entries`](Self::io_queue_entries) set: default entries of an I/O queue pair.
    #[must_use]
    pub fn with_io_queue_entries(mut self, io_queue_entries: u16) -> Self {
        self.io_queue_entries = io_queue_entries;
        self
    }
    /// These options with [`admin_timeout`](Self::admin_timeout) set: how long one admin command may take.
    #[must_use]
    pub fn with_admin_timeout(mut self, admin_timeout: Duration) -> Self {
        self.admin_timeout = admin_timeout;
        self
    }
    /// These options with [`io_timeout`](Self::io_timeout) set: how long a synchronous I/O helper waits.
    #[must_use]
    pub fn with_io_timeout(mut self, io_timeout: Duration) -> Self {
        self.io_timeout = io_timeout;
        self
    }
    /// These options with [`max_transfer_bytes`](Self::max_transfer_bytes) set: the driver's cap on bytes per command.
    #[must_use]
    pub fn with_max_transfer_bytes(mut self, max_transfer_bytes: usize) -> Self {
        self.max_transfer_bytes = max_transfer_bytes;
        self
    }
    /// These options with [`io_retry_limit`](Self::io_retry_limit) set: resubmissions of a command after a retryable error or a reset.
    #[must_use]
    pub fn with_io_retry_limit(mut self, io_retry_limit: u8) -> Self {
        self.io_retry_limit = io_retry_limit;
        self
    }
    /// These options with [`timeout_scan_interval`](Self::timeout_scan_interval) set: least time between two timeout scans of a queue pair.
    #[must_use]
    pub fn with_timeout_scan_interval(mut self, timeout_scan_interval: Duration) -> Self {
        self.timeout_scan_interval = timeout_scan_interval;
        self
    }
    /// These options with [`shadow_doorbells`](Self::shadow_doorbells) set: whether shadow doorbells are used when the controller has them.
    #[must_use]
    pub fn with_shadow_doorbells(mut self, shadow_doorbells: bool) -> Self {
        self.shadow_doorbells = shadow_doorbells;
        self
    }
}

/// Largest per-command transfer the driver accepts as a cap (65536 blocks of 512 B).
pub(crate) const MAX_TRANSFER_CAP: usize = 32 << 20;
