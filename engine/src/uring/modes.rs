//! What a ring reports about itself: how it learns about completions
//! ([`CompletionMode`]: `IORING_SETUP_IOPOLL` or interrupts, and why), how
//! data buffers reach the kernel ([`BufferMode`]: fixed buffers or pinned
//! per I/O, and why), and its counters ([`RingStats`]).

#![forbid(unsafe_code)]

/// How the ring learns about completions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompletionMode {
    /// `IORING_SETUP_IOPOLL`: each reap polls the driver's poll queue.
    Polled,
    /// Interrupt-driven completion, reaped from the shared ring without a
    /// system call; why polling is not in use.
    Interrupts {
        /// Why (no poll queues, kernel too old, not asked for).
        reason: String,
    },
}

/// How data buffers reach the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BufferMode {
    /// Buffers inside registered memory go as fixed buffers.
    Fixed,
    /// Every I/O's pages are pinned by the kernel per command; why.
    Unregistered {
        /// Why (kernel before 6.1, registration refused, not asked for).
        reason: String,
    },
}

/// Counters of one ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RingStats {
    /// `io_uring_enter` calls (submissions and polled reaps).
    pub enter_calls: u64,
    /// `io_uring_enter` calls that reaped (`IORING_ENTER_GETEVENTS`; on a
    /// polled ring, those poll the driver's queue).
    pub reap_calls: u64,
    /// `io_uring_enter` calls that failed (retried later).
    pub enter_errors: u64,
    /// Commands that went with a fixed buffer.
    pub fixed_buffer_io: u64,
    /// Commands with data outside any registered buffer (the kernel pins
    /// their pages per I/O).
    pub unregistered_io: u64,
    /// Memory regions (pools) registered as fixed buffers.
    pub regions_registered: u64,
    /// Registrations released after their pool and buffers were gone.
    pub regions_released: u64,
    /// Registrations that failed (the reason is in the buffer mode).
    pub registration_failures: u64,
    /// Cancellation requests sent.
    pub cancels_sent: u64,
    /// Cancellations the kernel carried out (result 0).
    pub cancels_done: u64,
    /// Cancellations the kernel could not carry out (-ENOENT: not found,
    /// -EALREADY: already running in the driver); the command then
    /// completes on its own or by the kernel driver's own timeout.
    pub cancels_refused: u64,
    /// The last errno of a cancellation that was neither done nor refused.
    pub cancel_last_errno: i32,
    /// The last errno a command completed with (0 if none).
    pub last_errno: i32,
}
