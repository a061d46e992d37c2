//! What a reactor drives, over either transport: a controller nvme-engine
//! brought up itself (PCIe through VFIO or uio, or the emulated one), for
//! every `D: Device`, or a namespace left with the kernel's nvme driver and
//! reached by NVMe passthrough over io_uring ([`Uring`]). The reactor, its
//! dispatch, [`crate::ReactorContext`] and [`crate::DirectQueue`] are
//! written once over [`Attach`]; each reactor owns its queues — queue pairs
//! on a controller, or rings on a generic node — on its own thread.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use nvme_engine::dma::{DmaPool, RegionHold};
use nvme_engine::transport::CommandTransport;
use nvme_engine::uring::{UringDevice, UringError, UringQueueOptions, UringTransport};
use nvme_engine::{
    Controller, Device, DriverError, Health, Namespace, PcieQueue, QueuePair, QueuePairOptions,
};

use crate::error::ReactorError;

/// A kind of attachment a reactor drives: the type parameter of
/// [`crate::ReactorSet`], [`crate::ReactorContext`], [`crate::LocalPoller`]
/// and [`crate::DirectQueue`]. Every [`Device`] is one (its handle is the
/// [`Controller`]); [`Uring`] is the other.
pub trait Attach: Send + Sync + Sized + 'static {
    /// What the application hands the reactors, shared by all of them.
    type Handle: Clone + Send + Sync + 'static;
    /// How commands reach the device.
    type Transport: CommandTransport + Send;
    /// Why a queue or a pool could not be made.
    type Error: std::error::Error + Send + Sync + Into<AttachError> + 'static;

    /// A queue of `entries` (or the default) for the calling thread, whose
    /// buffers come from `pool` (registered with it where the transport
    /// registers memory).
    fn create_queue(
        h: &Self::Handle,
        entries: Option<u16>,
        pool: &mut DmaPool,
    ) -> Result<QueuePair<Self::Transport>, Self::Error>;
    /// A DMA pool of `bytes` for buffers of this handle.
    fn create_pool(h: &Self::Handle, bytes: usize) -> Result<DmaPool, Self::Error>;
    /// Make the memory of a producer's pool for this handle reachable by
    /// `q` the transport's fastest way, when the producer attaches to the
    /// reactor owning `q` (before any of its requests is taken). io_uring:
    /// registered as fixed buffers, so the kernel pins no page per I/O;
    /// memory it cannot register still works, counted in
    /// [`crate::ReactorStats::unregistered_io`]. PCIe: nothing to do (a pool
    /// is mapped for the device when it is made).
    fn register_memory(_q: &mut QueuePair<Self::Transport>, _memory: RegionHold) {}
    /// Release what [`Attach::register_memory`] holds for pools that are
    /// gone with all their buffers. Off the I/O path.
    fn release_memory(_q: &mut QueuePair<Self::Transport>) {}
    /// Commands of `q` whose data went in registered memory (io_uring fixed
    /// buffers) and outside it (pinned by the kernel per I/O); `(0, 0)` on
    /// transports where every pool is mapped for the device.
    fn buffer_counts(_q: &QueuePair<Self::Transport>) -> (u64, u64) {
        (0, 0)
    }
    /// Active namespace `nsid`.
    fn namespace(h: &Self::Handle, nsid: u32) -> Option<&Namespace>;
    /// The device's name, for messages.
    fn name(h: &Self::Handle) -> String;
    /// The least shutdown wait that lets a lost command be answered with its
    /// real outcome, with the reactors' per-command deadline `io_timeout`
    /// (`None`: the handle's own) checked every `timeout_check` (see
    /// `ReactorConfig::shutdown_wait_needed`).
    fn shutdown_wait_needed(
        h: &Self::Handle,
        io_timeout: Option<Duration>,
        timeout_check: Duration,
    ) -> Duration;
    /// The shutdown wait is below `needed` for handle `index`: the error
    /// naming the timeouts behind it.
    fn shutdown_too_short(
        h: &Self::Handle,
        io_timeout: Option<Duration>,
        index: usize,
        shutdown_timeout: Duration,
        needed: Duration,
    ) -> ReactorError;
    /// The controller's state (a kernel-owned one is live while its node
    /// works: the kernel recovers it and reports failures per command).
    fn health(h: &Self::Handle) -> Health;
    /// Controller resets this process made.
    fn resets(h: &Self::Handle) -> u64;
    /// Keep the handle's admin work off `cores` (reactors spin there).
    fn keep_admin_work_off(h: &Self::Handle, cores: &[usize]);
    /// The error for `e`, from reactor `reactor` (or, `None`, a producer's
    /// pool) on handle `controller`.
    fn setup_error(e: Self::Error, reactor: Option<usize>, controller: usize) -> ReactorError;
}

/// Why a queue or pool could not be made, over either transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// The PCIe driver's reason.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// The io_uring transport's reason.
    #[error(transparent)]
    Uring(#[from] UringError),
    /// The NVMe/TCP transport's reason (see `attach_tcp`).
    #[error(transparent)]
    Tcp(#[from] nvme_engine::tcp::TcpError),
}

impl<D: Device> Attach for D {
    type Handle = Controller<D>;
    type Transport = PcieQueue<D>;
    type Error = DriverError;

    fn create_queue(
        h: &Controller<D>,
        entries: Option<u16>,
        _pool: &mut DmaPool,
    ) -> Result<QueuePair<PcieQueue<D>>, DriverError> {
        let mut o = QueuePairOptions::default();
        o.entries = entries;
        h.create_io_qpair(o)
    }
    fn create_pool(h: &Controller<D>, bytes: usize) -> Result<DmaPool, DriverError> {
        h.create_pool(bytes)
    }
    fn namespace(h: &Controller<D>, nsid: u32) -> Option<&Namespace> {
        h.namespace(nsid)
    }
    fn name(h: &Controller<D>) -> String {
        h.device().name()
    }
    fn shutdown_wait_needed(
        h: &Controller<D>,
        io_timeout: Option<Duration>,
        timeout_check: Duration,
    ) -> Duration {
        // Its deadline (found at most one driver scan and one reactor check
        // late), an Abort and its grace period (up to the admin timeout
        // each), then a controller reset (up to twice CAP.TO plus two admin
        // commands to bring the controller and the queue back).
        let opts = h.options();
        let io = io_timeout.unwrap_or(opts.io_timeout);
        let cap_to = Duration::from_millis(h.cap().timeout_ms());
        let detect = io + opts.timeout_scan_interval + timeout_check;
        let abort = opts.admin_timeout + io.min(opts.admin_timeout);
        let reset = 2 * cap_to + 2 * opts.admin_timeout;
        detect + abort + reset
    }
    fn shutdown_too_short(
        h: &Controller<D>,
        io_timeout: Option<Duration>,
        index: usize,
        shutdown_timeout: Duration,
        needed: Duration,
    ) -> ReactorError {
        ReactorError::ShutdownTooShort {
            shutdown_timeout,
            needed,
            controller: index,
            io_timeout: io_timeout.unwrap_or(h.options().io_timeout),
            admin_timeout: h.options().admin_timeout,
            cap_to_ms: h.cap().timeout_ms(),
        }
    }
    fn health(h: &Controller<D>) -> Health {
        h.health()
    }
    fn resets(h: &Controller<D>) -> u64 {
        h.resets()
    }
    fn keep_admin_work_off(h: &Controller<D>, cores: &[usize]) {
        h.keep_admin_work_off(cores);
    }
    fn setup_error(source: DriverError, reactor: Option<usize>, controller: usize) -> ReactorError {
        match reactor {
            Some(reactor) => ReactorError::Setup {
                reactor,
                controller,
                source,
            },
            None => ReactorError::ProducerPool { controller, source },
        }
    }
}

/// NVMe passthrough over io_uring: each reactor drives one ring per
/// namespace handle ([`UringNamespace`]: a [`UringDevice`] opened once and
/// shared, with the ring options its transport ID chose), polled when the
/// kernel lets that ring poll. Start a set with
/// [`crate::ReactorSet::start_uring`].
#[derive(Debug)]
pub struct Uring;

/// An opened io_uring namespace and the options of the rings made on it.
#[derive(Clone, Debug)]
pub struct UringNamespace {
    device: Arc<UringDevice>,
    options: UringQueueOptions,
}

impl UringNamespace {
    /// `device`, whose rings get `options` (`entries` is overridden by
    /// [`ReactorConfig::queue_entries`](crate::ReactorConfig::queue_entries) when that is set).
    pub fn new(device: UringDevice, options: UringQueueOptions) -> Self {
        UringNamespace {
            device: Arc::new(device),
            options,
        }
    }
    /// The opened namespace.
    pub fn device(&self) -> &UringDevice {
        &self.device
    }
    /// The options of its rings.
    pub fn options(&self) -> &UringQueueOptions {
        &self.options
    }
}

impl Attach for Uring {
    type Handle = UringNamespace;
    type Transport = UringTransport;
    type Error = UringError;

    fn create_queue(
        h: &UringNamespace,
        entries: Option<u16>,
        pool: &mut DmaPool,
    ) -> Result<QueuePair<UringTransport>, UringError> {
        let mut o = h.options;
        if let Some(n) = entries {
            o.entries = n;
        }
        let mut q = h.device.create_queue(o)?;
        // Falls back (and says why in the queue's buffer mode) when the
        // kernel cannot register: I/O still works, pinned per command.
        q.register_pool(pool);
        Ok(q)
    }
    fn create_pool(h: &UringNamespace, bytes: usize) -> Result<DmaPool, UringError> {
        h.device.create_pool(bytes)
    }
    fn register_memory(q: &mut QueuePair<UringTransport>, memory: RegionHold) {
        // Falls back as above; the ring counts what goes unregistered.
        q.register_memory(memory);
    }
    fn release_memory(q: &mut QueuePair<UringTransport>) {
        q.release_unused();
    }
    fn buffer_counts(q: &QueuePair<UringTransport>) -> (u64, u64) {
        let s = q.ring_stats();
        (s.fixed_buffer_io, s.unregistered_io)
    }
    fn namespace(h: &UringNamespace, nsid: u32) -> Option<&Namespace> {
        Some(h.device.namespace()).filter(|n| n.id() == nsid)
    }
    fn name(h: &UringNamespace) -> String {
        h.device.path().display().to_string()
    }
    fn shutdown_wait_needed(
        h: &UringNamespace,
        io_timeout: Option<Duration>,
        timeout_check: Duration,
    ) -> Duration {
        // The command's deadline, found one check late, then the kernel's
        // own timeout handling (abort, controller reset), which the ring's
        // close waits for.
        let o = &h.options;
        io_timeout.unwrap_or(o.timeout) + timeout_check + o.close_timeout
    }
    fn shutdown_too_short(
        h: &UringNamespace,
        io_timeout: Option<Duration>,
        index: usize,
        shutdown_timeout: Duration,
        needed: Duration,
    ) -> ReactorError {
        ReactorError::UringShutdownTooShort {
            shutdown_timeout,
            needed,
            controller: index,
            path: Self::name(h),
            io_timeout: io_timeout.unwrap_or(h.options.timeout),
        }
    }
    fn health(_h: &UringNamespace) -> Health {
        Health::Live
    }
    fn resets(_h: &UringNamespace) -> u64 {
        0
    }
    fn keep_admin_work_off(_h: &UringNamespace, _cores: &[usize]) {
        // The kernel does the admin work of a namespace it keeps.
    }
    fn setup_error(source: UringError, reactor: Option<usize>, controller: usize) -> ReactorError {
        ReactorError::UringSetup {
            reactor,
            controller,
            source,
        }
    }
}
