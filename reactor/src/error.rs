//! The errors of starting and managing a reactor set ([`ReactorError`]).
//! Apart from the rest so that the reactor threads, which report their
//! set-up failures with it, need nothing from the set that starts them.

#![forbid(unsafe_code)]

use std::time::Duration;

use nvme_engine::DriverError;
use nvme_engine::uring::UringError;

use crate::cores::CoreError;

/// Errors from starting and managing reactors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReactorError {
    /// The core specification is invalid or not allowed.
    #[error(transparent)]
    Cores(#[from] CoreError),
    /// No controller was given.
    #[error("a reactor set needs at least one controller; bring one up with Controller::new")]
    NoControllers,
    /// The shutdown wait is shorter than a lost command needs to be
    /// timed out, aborted and recovered.
    #[error(
        "shutdown_timeout {shutdown_timeout:?} is shorter than the {needed:?} a lost command on \
         controller {controller} can take to be answered (io_timeout {io_timeout:?} + abort and \
         grace, admin_timeout {admin_timeout:?} each + reset, 2 × CAP.TO {cap_to_ms} ms + 2 × \
         admin_timeout); set shutdown_timeout to at least {needed:?} (or None to derive it), \
         lower io_timeout, or use ReactorSet::shutdown_within to stop sooner on purpose"
    )]
    ShutdownTooShort {
        /// The configured shutdown wait.
        shutdown_timeout: Duration,
        /// What the controller's timeouts need.
        needed: Duration,
        /// The controller that needs it.
        controller: usize,
        /// Its per-command deadline.
        io_timeout: Duration,
        /// Its admin-command deadline.
        admin_timeout: Duration,
        /// Its CAP.TO in milliseconds.
        cap_to_ms: u64,
    },
    /// A configuration value is out of range.
    #[error("invalid reactor configuration: {0}")]
    Config(&'static str),
    /// A reactor could not create its queue pair or pool.
    #[error(
        "reactor {reactor} could not set up controller {controller}; lower the number of \
         reactors or queue entries, or check the controller"
    )]
    Setup {
        /// Reactor index.
        reactor: usize,
        /// Controller index.
        controller: usize,
        /// What the driver reported.
        #[source]
        source: DriverError,
    },
    /// A reactor thread could not be spawned.
    #[error("spawning reactor thread {reactor} failed")]
    Spawn {
        /// Reactor index.
        reactor: usize,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A reactor index out of range.
    #[error("no reactor {index}: this set runs {count} reactor(s), indexed from 0")]
    NoSuchReactor {
        /// Index given.
        index: usize,
        /// Reactors running.
        count: usize,
    },
    /// A reactor thread has exited (it panicked, or the set is shutting down).
    #[error("reactor {index} is no longer running; shut the set down and read its report")]
    ReactorGone {
        /// Reactor index.
        index: usize,
    },
    /// A reactor could not create its ring or pool on an io_uring
    /// namespace, or a producer's pool could not be made (`reactor: None`).
    #[error(
        "{} could not set up io_uring namespace {controller}",
        match .reactor { Some(r) => format!("reactor {r}"), None => "a producer".to_string() }
    )]
    UringSetup {
        /// Reactor index (`None`: a producer's pool).
        reactor: Option<usize>,
        /// Handle index.
        controller: usize,
        /// What the transport reported (and how to fix it).
        #[source]
        source: UringError,
    },
    /// The shutdown wait is shorter than a lost command on an io_uring
    /// namespace can take to be answered.
    #[error(
        "shutdown_timeout {shutdown_timeout:?} is shorter than the {needed:?} a lost command on \
         {path} (handle {controller}) can take to be answered (io_timeout {io_timeout:?}, then \
         the kernel's own timeout, abort and reset, which closing the ring waits for); set \
         shutdown_timeout to at least {needed:?} (or None to derive it), or use \
         ReactorSet::shutdown_within to stop sooner on purpose"
    )]
    UringShutdownTooShort {
        /// The configured shutdown wait.
        shutdown_timeout: Duration,
        /// What the timeouts need.
        needed: Duration,
        /// The handle that needs it.
        controller: usize,
        /// Its generic node.
        path: String,
        /// The per-command deadline.
        io_timeout: Duration,
    },
    /// A reactor could not connect its I/O queue or make its pool on an
    /// NVMe/TCP controller, or a producer's pool could not be made
    /// (`reactor: None`).
    #[error(
        "{} could not set up NVMe/TCP controller {controller}",
        match .reactor { Some(r) => format!("reactor {r}"), None => "a producer".to_string() }
    )]
    TcpSetup {
        /// Reactor index (`None`: a producer's pool).
        reactor: Option<usize>,
        /// Controller index.
        controller: usize,
        /// What the transport reported (and how to fix it).
        #[source]
        source: nvme_engine::tcp::TcpError,
    },
    /// The shutdown wait is shorter than a lost command on an NVMe/TCP
    /// controller can take to be answered.
    #[error(
        "shutdown_timeout {shutdown_timeout:?} is shorter than the {needed:?} a lost command on \
         {target} (controller {controller}) can take to be answered (io_timeout {io_timeout:?} \
         + an Abort and its grace period, up to the admin command timeout {admin_timeout:?} \
         each, then the association is reset); set shutdown_timeout to at least {needed:?} (or \
         None to derive it), lower io_timeout, or use ReactorSet::shutdown_within to stop \
         sooner on purpose"
    )]
    TcpShutdownTooShort {
        /// The configured shutdown wait.
        shutdown_timeout: Duration,
        /// What the timeouts need.
        needed: Duration,
        /// The controller that needs it.
        controller: usize,
        /// Its address and subsystem.
        target: String,
        /// The per-command deadline.
        io_timeout: Duration,
        /// The admin command timeout (Abort).
        admin_timeout: Duration,
    },
    /// A producer's DMA pool could not be created.
    #[error("creating a producer's DMA pool for controller {controller} failed")]
    ProducerPool {
        /// Controller index.
        controller: usize,
        /// What the driver reported.
        #[source]
        source: DriverError,
    },
}
