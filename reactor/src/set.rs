//! The reactor set: starts one reactor thread per configured core, connects
//! producers to reactors, registers pollers and timers, gathers counters and
//! shuts everything down in order.
//!
//! Everything here is off the I/O path: it may allocate, lock and block.

#![forbid(unsafe_code)]

use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use nvme_engine::Controller;
use nvme_engine::Device;
use nvme_engine::dma::DmaPool;

use crate::attach::{Attach, Uring, UringNamespace};
use crate::attach_tcp::{Tcp, TcpController};

use crate::context::LocalPoller;
use crate::cores::{AllowedCores, CoreSpec};
use crate::error::ReactorError;
use crate::poller::Poller;
use crate::producer::{self, Producer};
use crate::reactor::{self, Control, ReactorParams};
use crate::stats::{ControllerReport, ReactorReport, ReactorStats, ShutdownReport};
use crate::timer::TimerFn;

/// How to start a reactor set.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReactorConfig {
    /// Cores to run reactors on, one reactor per entry.
    pub cores: CoreSpec,
    /// Pin each reactor thread to its core. Off, the cores are still
    /// checked against the allowed set but threads float (for tests and
    /// small machines).
    pub pin: bool,
    /// Entries in each submission and completion ring (per producer per
    /// reactor). Also the most requests one producer can have inside one
    /// reactor at a time.
    pub ring_capacity: usize,
    /// Entries per NVMe I/O queue; `None` takes the controller's default.
    pub queue_entries: Option<u16>,
    /// Bytes of DMA memory each reactor reserves per controller, for
    /// reactor-local I/O ([`ReactorSet::add_local_poller`]).
    pub pool_bytes: usize,
    /// Most reactor-local requests in flight or uncollected per reactor.
    pub local_capacity: usize,
    /// Bytes of DMA memory each producer gets per controller for its buffers.
    pub producer_pool_bytes: usize,
    /// Most requests taken from one ring, and most completions reaped from
    /// one queue, per loop turn.
    pub batch: usize,
    /// Yield the CPU on idle loop turns (a system call, made only when there
    /// is nothing to do). Useful when reactors share cores with other work.
    pub idle_yield: bool,
    /// How long shutdown waits for in-flight commands before giving up on
    /// them and deleting the queues (which answers them, see
    /// [`ReactorSet::shutdown`]). `None` (the default) derives it from the
    /// controllers' timeouts ([`ReactorConfig::shutdown_wait_needed`]): long
    /// enough for a lost command to time out, be aborted and have its
    /// controller reset, so that it is answered with its real outcome.
    /// A value below that is refused by [`ReactorSet::start`]; to stop
    /// sooner on purpose, use [`ReactorSet::shutdown_within`].
    pub shutdown_timeout: Option<Duration>,
    /// How often each reactor checks the deadlines of its queue pairs
    /// (`IoQueuePair::check_timeouts`). The driver scans at most once per
    /// `ControllerOptions::timeout_scan_interval` whatever this is. Default 5 ms.
    pub timeout_check: Duration,
    /// Per-command deadline set on every queue pair the reactors create;
    /// `None` keeps the controller's `ControllerOptions::io_timeout`.
    pub io_timeout: Option<Duration>,
    /// How often a command is resubmitted after a DNR=0 error status or a
    /// controller reset before it fails; `None` keeps the controller's
    /// `ControllerOptions::io_retry_limit`.
    pub io_retry_limit: Option<u8>,
}

impl Default for ReactorConfig {
    fn default() -> Self {
        ReactorConfig {
            cores: CoreSpec::from_cores([0]),
            pin: false,
            ring_capacity: 256,
            queue_entries: None,
            pool_bytes: 2 << 20,
            local_capacity: 64,
            producer_pool_bytes: 2 << 20,
            batch: 32,
            idle_yield: false,
            shutdown_timeout: None,
            timeout_check: Duration::from_millis(5),
            io_timeout: None,
            io_retry_limit: None,
        }
    }
}

impl ReactorConfig {
    /// The least shutdown wait that lets a command lost by `controller`
    /// be answered with its real outcome rather than by queue deletion:
    /// its deadline (the I/O timeout, found at most one driver scan and
    /// one reactor check late), an Abort and its grace period (up to the
    /// admin timeout each), then a controller reset (up to twice CAP.TO
    /// plus two admin commands to bring the controller and the queue back).
    pub fn shutdown_wait_needed<D: Device>(&self, controller: &Controller<D>) -> Duration {
        <D as Attach>::shutdown_wait_needed(controller, self.io_timeout, self.timeout_check)
    }

    /// The wait shutdown uses: `shutdown_timeout`, or the largest
    /// [`ReactorConfig::shutdown_wait_needed`] over `controllers`; an
    /// explicit value below that is an error naming both.
    fn shutdown_wait<D: Attach>(
        &self,
        controllers: &[D::Handle],
    ) -> Result<Duration, ReactorError> {
        let (needed, worst) = controllers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (
                    D::shutdown_wait_needed(c, self.io_timeout, self.timeout_check),
                    i,
                )
            })
            .max()
            .unwrap_or((Duration::ZERO, 0));
        match self.shutdown_timeout {
            None => Ok(needed),
            Some(t) if t >= needed => Ok(t),
            Some(t) => Err(D::shutdown_too_short(
                &controllers[worst],
                self.io_timeout,
                worst,
                t,
                needed,
            )),
        }
    }
}

struct Handle<D: Attach> {
    core: usize,
    control: Sender<Control<D>>,
    thread: Option<JoinHandle<ReactorReport>>,
}

/// A set of running reactors over a list of controllers.
pub struct ReactorSet<D: Attach> {
    reactors: Vec<Handle<D>>,
    controllers: Vec<D::Handle>,
    ring_capacity: usize,
    producer_pool_bytes: usize,
}

impl<D: Attach> std::fmt::Debug for ReactorSet<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReactorSet")
            .field("cores", &self.cores())
            .field("controllers", &self.controllers.len())
            .finish()
    }
}

impl<D: Device> ReactorSet<D> {
    /// Start one reactor per core in `config.cores`, each creating its own
    /// I/O queue pair and DMA pool per controller on its own thread.
    /// Returns once every reactor is ready (or the first failure, after
    /// stopping the reactors already started).
    pub fn start(
        config: ReactorConfig,
        controllers: Vec<Controller<D>>,
    ) -> Result<Self, ReactorError> {
        Self::launch(config, controllers)
    }
}

impl ReactorSet<Uring> {
    /// Start one reactor per core in `config.cores` over io_uring
    /// namespaces (NVMe passthrough on their generic nodes): each reactor
    /// creates, on its own thread, one ring per namespace — polled where the
    /// kernel lets it — and a DMA pool registered with it. Requests name the
    /// namespace by its index in `devices` and by its NSID.
    pub fn start_uring(
        config: ReactorConfig,
        devices: Vec<UringNamespace>,
    ) -> Result<Self, ReactorError> {
        Self::launch(config, devices)
    }
}

impl ReactorSet<Tcp> {
    /// Start one reactor per core in `config.cores` over NVMe/TCP
    /// controllers: each reactor connects, on its own thread, one I/O queue
    /// per controller (QIDs are taken in order) and polls it. Requests
    /// name the controller by its index in `controllers` and the namespace
    /// by its NSID.
    pub fn start_tcp(
        config: ReactorConfig,
        controllers: Vec<TcpController>,
    ) -> Result<Self, ReactorError> {
        Self::launch(config, controllers)
    }
}

impl<D: Attach> ReactorSet<D> {
    /// [`ReactorSet::start`] over either transport
    /// (`ReactorSet::<A>::start_with`): `controllers` are the handles of
    /// attachment kind `D` — controllers of a [`Device`] or, for
    /// [`Uring`], opened io_uring namespaces.
    pub fn start_with(
        config: ReactorConfig,
        controllers: Vec<D::Handle>,
    ) -> Result<Self, ReactorError> {
        Self::launch(config, controllers)
    }

    fn launch(config: ReactorConfig, controllers: Vec<D::Handle>) -> Result<Self, ReactorError> {
        if config.ring_capacity == 0 {
            return Err(ReactorError::Config("ring_capacity must be at least 1"));
        }
        if config.batch == 0 {
            return Err(ReactorError::Config("batch must be at least 1"));
        }
        if config.timeout_check.is_zero() {
            return Err(ReactorError::Config(
                "timeout_check must be more than zero (5 ms is a good value)",
            ));
        }
        if config.io_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ReactorError::Config(
                "io_timeout must be more than zero; use None for the controller's default",
            ));
        }
        // Read the allowed CPU set once, from the calling thread, before any
        // reactor thread changes its own mask.
        let allowed = AllowedCores::current()?;
        config.cores.check(&allowed)?;
        if controllers.is_empty() {
            return Err(ReactorError::NoControllers);
        }
        let shutdown_timeout = config.shutdown_wait::<D>(&controllers)?;
        if config.pin {
            // Aborts and resets run on each controller's admin worker: keep
            // it off the cores the reactors spin on, when a core is free.
            for c in &controllers {
                D::keep_admin_work_off(c, config.cores.cores());
            }
        }
        let mut set = ReactorSet {
            reactors: Vec::with_capacity(config.cores.len()),
            controllers,
            ring_capacity: config.ring_capacity,
            producer_pool_bytes: config.producer_pool_bytes,
        };
        for (index, &core) in config.cores.cores().iter().enumerate() {
            let (control_tx, control_rx) = mpsc::channel();
            let (ready_tx, ready_rx) = mpsc::channel();
            let params = ReactorParams {
                index,
                core,
                pin: config.pin,
                controllers: set.controllers.clone(),
                queue_entries: config.queue_entries,
                pool_bytes: config.pool_bytes,
                local_capacity: config.local_capacity,
                batch: config.batch,
                idle_yield: config.idle_yield,
                shutdown_timeout,
                timeout_check: config.timeout_check,
                io_timeout: config.io_timeout,
                io_retry_limit: config.io_retry_limit,
            };
            let thread = std::thread::Builder::new()
                .name(format!("nvme-reactor-{index}"))
                .spawn(move || reactor::run(params, control_rx, ready_tx))
                .map_err(|source| ReactorError::Spawn {
                    reactor: index,
                    source,
                })?;
            set.reactors.push(Handle {
                core,
                control: control_tx,
                thread: Some(thread),
            });
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(ReactorError::ReactorGone { index }),
            }
        }
        Ok(set)
    }

    /// Number of reactors.
    pub fn len(&self) -> usize {
        self.reactors.len()
    }

    /// Whether the set runs no reactor (never true for a started set).
    pub fn is_empty(&self) -> bool {
        self.reactors.is_empty()
    }

    /// The core of each reactor.
    pub fn cores(&self) -> Vec<usize> {
        self.reactors.iter().map(|h| h.core).collect()
    }

    /// The controllers, in request index order.
    pub fn controllers(&self) -> &[D::Handle] {
        &self.controllers
    }

    fn handle(&self, index: usize) -> Result<&Handle<D>, ReactorError> {
        self.reactors.get(index).ok_or(ReactorError::NoSuchReactor {
            index,
            count: self.reactors.len(),
        })
    }

    fn send(&self, index: usize, msg: Control<D>) -> Result<(), ReactorError> {
        self.handle(index)?
            .control
            .send(msg)
            .map_err(|_| ReactorError::ReactorGone { index })
    }

    /// A new connection from the calling application thread to reactor
    /// `reactor`: its own ring pair and its own DMA pool per controller.
    /// Move it to the thread that will submit. Over io_uring, the reactor
    /// registers each pool with its ring for that namespace as fixed
    /// buffers before it takes the producer's first request, and releases
    /// the registration once the producer and all its buffers are gone.
    pub fn producer(&self, reactor: usize) -> Result<Producer, ReactorError> {
        self.handle(reactor)?;
        let mut pools = Vec::with_capacity(self.controllers.len());
        for (i, c) in self.controllers.iter().enumerate() {
            let pool = D::create_pool(c, self.producer_pool_bytes)
                .map_err(|e| D::setup_error(e, None, i))?;
            pools.push(pool);
        }
        let memory = pools.iter().map(DmaPool::hold).collect();
        let (producer, link) = producer::pair(reactor, self.ring_capacity, pools);
        self.send(reactor, Control::Attach(link, memory))?;
        Ok(producer)
    }

    /// Run `poller` on reactor `reactor` on every loop turn.
    pub fn add_poller(&self, reactor: usize, poller: Poller) -> Result<(), ReactorError> {
        self.send(reactor, Control::AddPoller(poller))
    }

    /// Run `poller` on reactor `reactor` on every loop turn, with a
    /// [`ReactorContext`](crate::ReactorContext) through which it submits I/O straight onto the
    /// reactor's queue pairs, using buffers from the reactor's own pools.
    pub fn add_local_poller(
        &self,
        reactor: usize,
        poller: LocalPoller<D>,
    ) -> Result<(), ReactorError> {
        self.send(reactor, Control::AddLocalPoller(poller))
    }

    /// Run `f` on reactor `reactor` every `period` (first after one period).
    pub fn add_timer(
        &self,
        reactor: usize,
        period: Duration,
        f: TimerFn,
    ) -> Result<(), ReactorError> {
        self.send(reactor, Control::AddTimer(period, f))
    }

    /// A snapshot of every reactor's counters.
    pub fn stats(&self) -> Result<Vec<ReactorStats>, ReactorError> {
        let mut replies = Vec::with_capacity(self.reactors.len());
        for index in 0..self.reactors.len() {
            let (tx, rx) = mpsc::channel();
            self.send(index, Control::Stats(tx))?;
            replies.push(rx);
        }
        replies
            .into_iter()
            .enumerate()
            .map(|(index, rx)| rx.recv().map_err(|_| ReactorError::ReactorGone { index }))
            .collect()
    }

    /// Stop accepting I/O, finish what is in flight, deliver every response,
    /// delete the queues, join the threads and report.
    ///
    /// Every request accepted by a producer is answered exactly once, on
    /// every path: with its own result when the device completes it in
    /// time; when the wait runs out, by deleting its queue (the controller
    /// aborts what it holds: `Command Aborted due to SQ Deletion`, buffer
    /// included); if the device will not delete the queue, with
    /// [`RequestError::QueueNotDeleted`](crate::RequestError::QueueNotDeleted)
    /// and without the buffer, which the device may still write. Requests
    /// never taken from a ring are answered with
    /// [`RequestError::ShutDown`](crate::RequestError::ShutDown) and their
    /// buffers by [`Producer::poll_completions`]. Also run on drop.
    pub fn shutdown(mut self) -> ShutdownReport {
        self.stop(None)
    }

    /// [`ReactorSet::shutdown`], giving up on the device after `wait`
    /// even when that is shorter than the I/O timeout (a process that must
    /// exit now). Requests the device has not completed by then are
    /// answered by queue deletion, as described there.
    pub fn shutdown_within(mut self, wait: Duration) -> ShutdownReport {
        self.stop(Some(wait))
    }

    fn stop(&mut self, wait: Option<Duration>) -> ShutdownReport {
        for h in &self.reactors {
            let _ = h.control.send(Control::Shutdown(wait));
        }
        let mut report = ShutdownReport::default();
        for (index, h) in self.reactors.iter_mut().enumerate() {
            let Some(thread) = h.thread.take() else {
                continue;
            };
            match thread.join() {
                Ok(r) => report.reactors.push(r),
                Err(_) => report.reactors.push(ReactorReport {
                    stats: ReactorStats {
                        reactor: index,
                        core: h.core,
                        ..ReactorStats::default()
                    },
                    errors: vec![format!("reactor {index} panicked")],
                    failures: Vec::new(),
                }),
            }
        }
        report.controllers = self
            .controllers
            .iter()
            .enumerate()
            .map(|(index, c)| ControllerReport {
                index,
                name: D::name(c),
                health: D::health(c),
                resets: D::resets(c),
            })
            .collect();
        report
    }
}

impl<D: Attach> Drop for ReactorSet<D> {
    fn drop(&mut self) {
        self.stop(None);
    }
}
