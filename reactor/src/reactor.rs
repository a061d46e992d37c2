//! One reactor: a thread that owns an I/O queue pair and a DMA pool per
//! controller and runs a run-to-completion loop over them.
//!
//! A loop turn:
//! 1. move responses waiting for completion-ring room into their rings;
//! 2. retry commands waiting for NVMe queue room (the backlog), oldest first;
//! 3. drain each submission ring, up to `batch` requests per ring, as long
//!    as the ring's producer has credit (see [`Link::intake`]);
//! 4. run local pollers, which may submit more commands directly;
//! 5. write each SQ Tail Doorbell once for everything added this turn (one
//!    tail write covers every new entry);
//! 6. reap each completion queue with a bounded budget and answer;
//! 7. run pollers, then due timers and, every `timeout_check`, the
//!    deadline check of each queue pair (`IoQueuePair::check_timeouts`).
//!    The clock is read once per turn, and only when there are timers or
//!    commands in flight;
//! 8. now and then (every 64 turns, or when idle) look at the control
//!    channel: new producers, pollers, timers, stats requests, shutdown.
//!
//! Steps 1–3 and 6, the local pollers' submissions and the answers of
//! teardown are the dispatch's ([`Dispatch`]): this module decides when,
//! the dispatch how a request is submitted and answered.
//!
//! Nothing on this path allocates, locks or makes a system call: slots,
//! backlogs and pending-response queues are reserved when a producer
//! attaches (or, for local I/O, at start), and the rings are wait-free.
//! A panic that escapes a poller or timer is caught: the reactor drops its
//! application code, stops accepting, drains, and reports it.
//!
//! The deadline check never blocks on admin work: when a command timed
//! out, or a controller looks removed or fatal, the driver posts the Abort
//! or the reset to that controller's admin worker and returns; the reactor
//! keeps serving every controller while one recovers. The longest loop
//! turn is measured from the clock reads the loop makes anyway
//! ([`ReactorStats::longest_turn`]).

#![forbid(unsafe_code)]

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

use crate::attach::Attach;
use nvme_engine::QueuePairStats;
use nvme_engine::dma::RegionHold;

use crate::context::{LocalPoller, ReactorContext};
use crate::cores;
use crate::dispatch::{Dispatch, Queue};
use crate::error::ReactorError;
use crate::poller::{PollStatus, Poller, Pollers};
use crate::producer::Link;
use crate::stats::{ReactorReport, ReactorStats};
use crate::timer::{TimerFn, Timers};

mod teardown;

/// Messages from the reactor set to a reactor (off the I/O path).
pub(crate) enum Control<D: Attach> {
    /// A new producer's ring pair, and a hold on each of its pools'
    /// memory (one per controller, in controller order).
    Attach(Link, Vec<RegionHold>),
    /// Register a poller.
    AddPoller(Poller),
    /// Register a poller that does I/O on the reactor.
    AddLocalPoller(LocalPoller<D>),
    /// Register a periodic timer.
    AddTimer(Duration, TimerFn),
    /// Reply with a snapshot of the counters.
    Stats(Sender<ReactorStats>),
    /// Stop accepting, drain, tear down, exit; give up waiting for the
    /// device after the given time (`None`: the configured wait).
    Shutdown(Option<Duration>),
}

/// What a reactor thread is started with.
pub(crate) struct ReactorParams<D: Attach> {
    pub(crate) index: usize,
    pub(crate) core: usize,
    pub(crate) pin: bool,
    pub(crate) controllers: Vec<D::Handle>,
    pub(crate) queue_entries: Option<u16>,
    pub(crate) pool_bytes: usize,
    pub(crate) local_capacity: usize,
    pub(crate) batch: usize,
    pub(crate) idle_yield: bool,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) timeout_check: Duration,
    pub(crate) io_timeout: Option<Duration>,
    pub(crate) io_retry_limit: Option<u8>,
}

struct Reactor<D: Attach> {
    queues: Vec<Queue<D>>,
    /// The request slots, the links to producers and the answer path.
    dispatch: Dispatch,
    pollers: Pollers,
    local_pollers: Vec<LocalPoller<D>>,
    timers: Timers,
    control: Receiver<Control<D>>,
    batch: usize,
    idle_yield: bool,
    shutdown_timeout: Duration,
    closing: Option<Instant>,
    /// Period of the deadline checks.
    timeout_check: Duration,
    /// When the next deadline check is due (`None`: at the next clock read).
    next_timeout_check: Option<Instant>,
    /// The clock read of the previous turn, if that turn read the clock.
    last_clock: Option<Instant>,
}

/// The body of a reactor thread: set up on this thread, report readiness
/// through `ready`, run until shutdown, tear down, report.
pub(crate) fn run<D: Attach>(
    params: ReactorParams<D>,
    control: Receiver<Control<D>>,
    ready: Sender<Result<(), ReactorError>>,
) -> ReactorReport {
    let stats = ReactorStats {
        reactor: params.index,
        core: params.core,
        ..ReactorStats::default()
    };
    let queues = match setup(&params) {
        Ok(q) => q,
        Err(e) => {
            let msg = e.to_string();
            let _ = ready.send(Err(e));
            return ReactorReport {
                stats,
                errors: vec![msg],
                failures: Vec::new(),
            };
        }
    };
    let _ = ready.send(Ok(()));
    let mut reactor = Reactor {
        queues,
        dispatch: Dispatch::new(stats, params.local_capacity),
        pollers: Pollers::default(),
        local_pollers: Vec::new(),
        timers: Timers::default(),
        control,
        batch: params.batch.max(1),
        idle_yield: params.idle_yield,
        shutdown_timeout: params.shutdown_timeout,
        closing: None,
        timeout_check: params.timeout_check,
        next_timeout_check: None,
        last_clock: None,
    };
    let mut errors = match panic::catch_unwind(AssertUnwindSafe(|| reactor.run_loop())) {
        Ok(errors) => errors,
        Err(payload) => reactor.recover(params.index, payload.as_ref()),
    };
    errors.extend(reactor.teardown());
    let (stats, failures, links) = reactor.dispatch.into_parts();
    // Dropping a link hands what it still holds (responses waiting for
    // ring room, requests still in its ring) to its producer.
    drop(links);
    ReactorReport {
        stats,
        errors,
        failures,
    }
}

/// Pin, then create this reactor's queue pairs and pools on its own thread.
fn setup<D: Attach>(params: &ReactorParams<D>) -> Result<Vec<Queue<D>>, ReactorError> {
    if params.pin {
        cores::pin_current_thread(params.core)?;
    }
    let mut queues = Vec::with_capacity(params.controllers.len());
    for (i, controller) in params.controllers.iter().enumerate() {
        let made = D::create_pool(controller, params.pool_bytes).and_then(|mut pool| {
            Ok((
                D::create_queue(controller, params.queue_entries, &mut pool)?,
                pool,
            ))
        });
        match made {
            Ok((mut qp, pool)) => {
                if let Some(t) = params.io_timeout {
                    qp.set_timeout(t);
                }
                if let Some(n) = params.io_retry_limit {
                    qp.set_retry_limit(n);
                }
                queues.push(Queue::new(controller.clone(), qp, pool))
            }
            Err(source) => {
                for q in queues {
                    let _ = q.qp.delete();
                }
                return Err(D::setup_error(source, Some(params.index), i));
            }
        }
    }
    Ok(queues)
}

impl<D: Attach> Reactor<D> {
    /// Loop until shutdown has drained everything; returns teardown notes.
    fn run_loop(&mut self) -> Vec<String> {
        let mut turn: u64 = 0;
        loop {
            let busy = self.turn();
            let stats = self.dispatch.stats_mut();
            if busy {
                stats.iterations_busy += 1;
            } else {
                stats.iterations_idle += 1;
            }
            turn = turn.wrapping_add(1);
            if !busy || turn.is_multiple_of(64) {
                if self.closing.is_none() {
                    self.control();
                    self.dispatch.release_abandoned();
                    for q in &mut self.queues {
                        D::release_memory(&mut q.qp);
                    }
                }
                if let Some(since) = self.closing {
                    if self.drained() {
                        return Vec::new();
                    }
                    if since.elapsed() > self.shutdown_timeout {
                        return vec![self.stuck_report()];
                    }
                }
                if !busy && self.idle_yield {
                    std::thread::yield_now();
                }
            }
        }
    }

    /// After a panic escaped the loop (a poller or timer, most likely):
    /// drop the application code, stop accepting, and drain what is in
    /// flight so every request is still answered once.
    fn recover(&mut self, index: usize, payload: &(dyn Any + Send)) -> Vec<String> {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let mut errors = vec![format!(
            "reactor {index} panicked ({what}); its pollers and timers were dropped, \
             it stopped accepting I/O and drained what was in flight"
        )];
        self.pollers = Pollers::default();
        self.local_pollers = Vec::new();
        self.timers = Timers::default();
        if self.closing.is_none() {
            self.begin_shutdown();
        }
        match panic::catch_unwind(AssertUnwindSafe(|| self.run_loop())) {
            Ok(more) => errors.extend(more),
            Err(_) => errors.push(format!(
                "reactor {index} panicked again while draining; what was still in flight \
                 is answered as its queues are deleted"
            )),
        }
        errors
    }

    /// One loop turn; true when it did any work.
    fn turn(&mut self) -> bool {
        let mut busy = self.dispatch.flush_pending();
        busy |= self.dispatch.retry_backlogs(&mut self.queues);
        busy |= self.dispatch.take_from_rings(&mut self.queues, self.batch);
        if !self.local_pollers.is_empty() {
            busy |= self.run_local_pollers();
        }
        for q in &mut self.queues {
            if q.ring_doorbell() {
                self.dispatch.stats_mut().doorbells += 1;
            }
        }
        busy |= self.dispatch.reap(&mut self.queues, self.batch);
        busy |= self.pollers.run();
        let in_flight = self.queues.iter().any(|q| q.qp.outstanding() > 0);
        if in_flight || !self.timers.is_empty() {
            // The one clock read of the turn (a vDSO call, not a system call).
            let now = Instant::now();
            if let Some(last) = self.last_clock {
                let turn = now.saturating_duration_since(last);
                let stats = self.dispatch.stats_mut();
                if turn > stats.longest_turn {
                    stats.longest_turn = turn;
                }
            }
            self.last_clock = Some(now);
            if !self.timers.is_empty() {
                let ran = self.timers.run_due(now);
                self.dispatch.stats_mut().timers_run += ran as u64;
                busy |= ran > 0;
            }
            if in_flight {
                busy |= self.check_timeouts(now);
            }
        } else {
            self.last_clock = None;
        }
        busy
    }

    /// Every `timeout_check`, check the deadlines of every queue pair. Does
    /// not wait for aborts or resets (the controllers' admin workers run
    /// them); the commands concerned are answered by a later
    /// [`Dispatch::reap`].
    fn check_timeouts(&mut self, now: Instant) -> bool {
        if self.next_timeout_check.is_some_and(|t| now < t) {
            return false;
        }
        self.next_timeout_check = now.checked_add(self.timeout_check);
        self.dispatch.stats_mut().timeout_checks += 1;
        let mut timed_out = 0;
        for q in &mut self.queues {
            timed_out += q.qp.check_timeouts(now);
        }
        timed_out > 0
    }

    /// Run the pollers that do I/O here, each with a view of the reactor.
    fn run_local_pollers(&mut self) -> bool {
        // Taking the list out (no allocation) lets the context borrow the
        // rest of the reactor.
        let mut pollers = std::mem::take(&mut self.local_pollers);
        let mut ctx = ReactorContext {
            reactor: self.dispatch.stats().reactor,
            closing: self.closing.is_some(),
            queues: &mut self.queues,
            dispatch: &mut self.dispatch,
        };
        let mut busy = false;
        for p in &mut pollers {
            busy |= p(&mut ctx) == PollStatus::Busy;
        }
        self.local_pollers = pollers;
        busy
    }

    /// Apply control messages.
    fn control(&mut self) {
        loop {
            match self.control.try_recv() {
                Ok(Control::Attach(link, memory)) => {
                    // Before any of its requests is taken: each of its
                    // pools registered with the queue of its controller.
                    for (q, hold) in self.queues.iter_mut().zip(memory) {
                        D::register_memory(&mut q.qp, hold);
                    }
                    self.dispatch.attach(link, &mut self.queues)
                }
                Ok(Control::AddPoller(p)) => self.pollers.add(p),
                Ok(Control::AddLocalPoller(p)) => self.local_pollers.push(p),
                Ok(Control::AddTimer(period, f)) => self.timers.add(Instant::now(), period, f),
                Ok(Control::Stats(reply)) => {
                    let _ = reply.send(self.snapshot());
                }
                Ok(Control::Shutdown(wait)) => {
                    if let Some(wait) = wait {
                        self.shutdown_timeout = wait;
                    }
                    self.begin_shutdown();
                    return;
                }
                Err(TryRecvError::Disconnected) => {
                    self.begin_shutdown();
                    return;
                }
                Err(TryRecvError::Empty) => return,
            }
        }
    }

    fn begin_shutdown(&mut self) {
        self.dispatch.close_links();
        self.closing = Some(Instant::now());
    }

    /// Nothing in flight, nothing left in a ring that could still be taken,
    /// and no local answer waiting for a poller that could still collect
    /// it (its pollers run on while the reactor closes; once they are gone,
    /// after a panic, nobody can).
    fn drained(&self) -> bool {
        self.dispatch.is_drained(&self.queues)
            && (self.local_pollers.is_empty() || self.dispatch.local_uncollected() == 0)
    }

    fn stuck_report(&self) -> String {
        let in_flight: usize = self.queues.iter().map(|q| q.qp.outstanding()).sum();
        let waiting: usize = self.queues.iter().map(Queue::waiting).sum();
        format!(
            "shutdown gave up after {:?}: {in_flight} command(s) still in flight on the device, \
             {waiting} waiting for queue room; they are answered as the queues are deleted",
            self.shutdown_timeout
        )
    }

    fn snapshot(&self) -> ReactorStats {
        let mut queues = QueuePairStats::default();
        let (mut fixed, mut unregistered) = (0, 0);
        for q in &self.queues {
            queues += q.qp.stats();
            let (f, u) = D::buffer_counts(&q.qp);
            fixed += f;
            unregistered += u;
        }
        ReactorStats {
            queues,
            fixed_buffer_io: fixed,
            unregistered_io: unregistered,
            producers: self.dispatch.producers(),
            pollers: self.pollers.len() + self.local_pollers.len(),
            timers: self.timers.len(),
            ..*self.dispatch.stats()
        }
    }
}
