//! NVMe over TCP as a reactor attachment ([`Tcp`]): each reactor connects,
//! on its own thread, one I/O queue of its own per controller — a TCP
//! connection with its own QID, a [`TcpQueue`](nvme_engine::tcp::TcpQueue)
//! — and polls it without blocking like any queue pair; the association's
//! thread (one per [`TcpDevice`]) keeps the admin queue: Keep Alive, the
//! Aborts the reactors' deadline checks post, and re-establishing the
//! association after a failure, after which each reactor's queue Connects
//! again and resends what it held. Every request is answered once on every
//! path, as on PCIe: a command lost with a connection completes with a
//! transport error (or is resent after the reconnection, within the retry
//! limit), one past its deadline is aborted, then the association is reset.
//!
//! A target on the same machine (loopback) runs its work in kernel threads
//! that may need a reactor's core: set
//! [`ReactorConfig::idle_yield`](crate::ReactorConfig::idle_yield) there.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use nvme_engine::dma::DmaPool;
use nvme_engine::tcp::{TcpDevice, TcpError, TcpQueueOptions, TcpTransport};
use nvme_engine::{ControllerOptions, Health, Namespace, QueuePair};

use crate::attach::Attach;
use crate::error::ReactorError;

/// NVMe over TCP: each reactor drives one I/O queue (one connection) per
/// [`TcpController`]. Start a set with
/// [`ReactorSet::start_tcp`](crate::ReactorSet::start_tcp).
#[derive(Debug)]
pub struct Tcp;

/// An opened NVMe/TCP controller, shared by the reactors, and the options
/// of the I/O queues they connect on it.
#[derive(Clone, Debug)]
pub struct TcpController {
    device: Arc<TcpDevice>,
    options: TcpQueueOptions,
}

impl TcpController {
    /// `device`, with default queue options.
    pub fn new(device: TcpDevice) -> Self {
        Self::with_options(device, TcpQueueOptions::default())
    }
    /// `device`, whose queues get `options` (`entries`, the deadline and
    /// the retry limit are overridden by the reactors'
    /// [`ReactorConfig`](crate::ReactorConfig) `queue_entries`, `io_timeout`
    /// and `io_retry_limit` when those are set).
    pub fn with_options(device: TcpDevice, options: TcpQueueOptions) -> Self {
        TcpController {
            device: Arc::new(device),
            options,
        }
    }
    /// The controller.
    pub fn device(&self) -> &TcpDevice {
        &self.device
    }
    /// The options of its queues.
    pub fn options(&self) -> &TcpQueueOptions {
        &self.options
    }
    /// The controller back, once no reactor or producer holds it (to shut
    /// it down with [`TcpDevice::shutdown`]); `Err(self)` while one does.
    /// Dropping the last handle shuts it down too.
    pub fn into_device(self) -> Result<TcpDevice, Self> {
        let options = self.options;
        Arc::try_unwrap(self.device).map_err(|device| TcpController { device, options })
    }
}

impl Attach for Tcp {
    type Handle = TcpController;
    type Transport = TcpTransport;
    type Error = TcpError;

    fn create_queue(
        h: &TcpController,
        entries: Option<u16>,
        _pool: &mut DmaPool,
    ) -> Result<QueuePair<TcpTransport>, TcpError> {
        let mut o = h.options;
        if let Some(n) = entries {
            o.entries = n;
        }
        h.device.create_queue(o)
    }
    fn create_pool(h: &TcpController, bytes: usize) -> Result<DmaPool, TcpError> {
        h.device
            .create_pool(bytes)
            .map_err(|source| TcpError::Pool { bytes, source })
    }
    #[inline]
    fn namespace(h: &TcpController, nsid: u32) -> Option<&Namespace> {
        // In NSID order: a binary search, not a walk, per request.
        let all = h.device.namespaces();
        all.binary_search_by_key(&nsid, |n| n.id())
            .ok()
            .map(|i| &all[i])
    }
    fn name(h: &TcpController) -> String {
        h.device.name()
    }
    fn shutdown_wait_needed(
        h: &TcpController,
        io_timeout: Option<Duration>,
        timeout_check: Duration,
    ) -> Duration {
        // Its deadline (found at most one scan and one reactor check
        // late), the Abort (up to the admin command timeout) and its grace
        // period; ending the association then fails the command at once.
        let io = io_timeout.unwrap_or(h.options.timeout);
        let admin = h.device.session().command_timeout;
        let scan = ControllerOptions::default().timeout_scan_interval;
        io + scan + timeout_check + admin + io.min(admin)
    }
    fn shutdown_too_short(
        h: &TcpController,
        io_timeout: Option<Duration>,
        index: usize,
        shutdown_timeout: Duration,
        needed: Duration,
    ) -> ReactorError {
        ReactorError::TcpShutdownTooShort {
            shutdown_timeout,
            needed,
            controller: index,
            target: Self::name(h),
            io_timeout: io_timeout.unwrap_or(h.options.timeout),
            admin_timeout: h.device.session().command_timeout,
        }
    }
    fn health(h: &TcpController) -> Health {
        match h.device.is_live() {
            Ok(true) => Health::Live,
            Ok(false) => Health::Resetting,
            Err(_) => Health::Failed,
        }
    }
    fn resets(h: &TcpController) -> u64 {
        h.device.stats().failures
    }
    fn keep_admin_work_off(_h: &TcpController, _cores: &[usize]) {
        // The association's thread sleeps between Keep Alives and blocks
        // on the network otherwise; it is not pinned, so the scheduler
        // keeps it off busy cores.
    }
    fn setup_error(source: TcpError, reactor: Option<usize>, controller: usize) -> ReactorError {
        ReactorError::TcpSetup {
            reactor,
            controller,
            source,
        }
    }
}
