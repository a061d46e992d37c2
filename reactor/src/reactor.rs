//! One reactor: a thread that owns an I/O queue pair and a DMA pool per
//! controller and runs a run-to-completion loop over them.
//!
//! A loop turn:
//! 1. move responses waiting for completion-ring room into their rings;
//! 2. retry commands waiting for NVMe queue room (the backlog), oldest first;
//! 3. drain each submission ring, up to `batch` requests per ring, as long
//!    as the ring's producer has credit (see [`Link::has_credit`]);
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
//! Nothing on this path allocates, locks or makes a system call: slots,
//! backlogs and pending-response queues are reserved when a producer
//! attaches (or, for local I/O, at start), and the rings are wait-free.
//! A panic that escapes a poller or timer is caught: the reactor drops its
//! application code, stops accepting, drains, and reports it.
//!
//! The deadline check is the one step that may block: when a command timed
//! out, or the controller looks removed or fatal, the driver aborts it or
//! resets the controller on this thread (see the crate documentation).

#![forbid(unsafe_code)]

use std::any::Any;
use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

use nvme_engine::Device;
use nvme_engine::dma::DmaPool;
use nvme_engine::driver::{
    Controller, IoCompletion, IoQueuePair, QueuePairOptions, QueuePairStats,
};

use crate::context::{LOCAL_LINK, Local, LocalPoller, ReactorContext};
use crate::cores;
use crate::issue::{InPlaceError, IssueError, issue, issue_in_place};
use crate::poller::{PollStatus, Poller, Pollers};
use crate::producer::{Link, deliver};
use crate::request::{Op, Request, RequestError, Response};
use crate::set::ReactorError;
use crate::stats::{FailedIo, MAX_RECORDED_FAILURES, ReactorReport, ReactorStats};
use crate::timer::{TimerFn, Timers};

mod teardown;

/// Messages from the reactor set to a reactor (off the I/O path).
pub(crate) enum Control<D: Device> {
    /// A new producer's ring pair.
    Attach(Link),
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
pub(crate) struct ReactorParams<D: Device> {
    pub(crate) index: usize,
    pub(crate) core: usize,
    pub(crate) pin: bool,
    pub(crate) controllers: Vec<Controller<D>>,
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

/// One controller as seen by one reactor.
pub(crate) struct Queue<D: Device> {
    pub(crate) controller: Controller<D>,
    pub(crate) qp: IoQueuePair<D>,
    /// The reactor's own DMA memory for this controller: buffers for
    /// reactor-local I/O. Released after the queue pair is deleted.
    pub(crate) pool: DmaPool,
    /// Slots whose request waits for room on this queue, oldest first.
    pub(crate) backlog: VecDeque<u32>,
    /// Whether entries were added since the last doorbell.
    pub(crate) dirty: bool,
}

/// A request between leaving its ring and being answered.
#[derive(Default)]
pub(crate) struct Slot {
    /// Index of the producer link, or [`LOCAL_LINK`].
    pub(crate) link: u32,
    /// Index of the controller whose queue the request is for.
    pub(crate) controller: u32,
    /// The request's own token.
    pub(crate) token: u64,
    /// The request itself while it waits in a backlog.
    pub(crate) parked: Option<Request>,
}

struct Reactor<D: Device> {
    stats: ReactorStats,
    queues: Vec<Queue<D>>,
    links: Vec<Option<Link>>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    pollers: Pollers,
    local_pollers: Vec<LocalPoller<D>>,
    local: Local,
    timers: Timers,
    control: Receiver<Control<D>>,
    batch: usize,
    idle_yield: bool,
    shutdown_timeout: Duration,
    closing: Option<Instant>,
    failures: Vec<FailedIo>,
    /// Period of the deadline checks.
    timeout_check: Duration,
    /// When the next deadline check is due (`None`: at the next clock read).
    next_timeout_check: Option<Instant>,
}

/// The body of a reactor thread: set up on this thread, report readiness
/// through `ready`, run until shutdown, tear down, report.
pub(crate) fn run<D: Device>(
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
        stats,
        queues,
        links: Vec::new(),
        slots: Vec::new(),
        free: Vec::new(),
        pollers: Pollers::default(),
        local_pollers: Vec::new(),
        local: Local::new(params.local_capacity),
        timers: Timers::default(),
        control,
        batch: params.batch.max(1),
        idle_yield: params.idle_yield,
        shutdown_timeout: params.shutdown_timeout,
        closing: None,
        failures: Vec::with_capacity(MAX_RECORDED_FAILURES),
        timeout_check: params.timeout_check,
        next_timeout_check: None,
    };
    reactor.add_slots(params.local_capacity);
    let mut errors = match panic::catch_unwind(AssertUnwindSafe(|| reactor.run_loop())) {
        Ok(errors) => errors,
        Err(payload) => reactor.recover(params.index, payload.as_ref()),
    };
    errors.extend(reactor.teardown());
    let Reactor {
        stats,
        links,
        failures,
        ..
    } = reactor;
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
fn setup<D: Device>(params: &ReactorParams<D>) -> Result<Vec<Queue<D>>, ReactorError> {
    if params.pin {
        cores::pin_current_thread(params.core)?;
    }
    let mut queues = Vec::with_capacity(params.controllers.len());
    for (i, controller) in params.controllers.iter().enumerate() {
        let made = controller
            .create_io_qpair(QueuePairOptions {
                entries: params.queue_entries,
            })
            .and_then(|qp| Ok((qp, controller.create_pool(params.pool_bytes)?)));
        match made {
            Ok((mut qp, pool)) => {
                if let Some(t) = params.io_timeout {
                    qp.set_timeout(t);
                }
                if let Some(n) = params.io_retry_limit {
                    qp.set_retry_limit(n);
                }
                queues.push(Queue {
                    controller: controller.clone(),
                    qp,
                    pool,
                    backlog: VecDeque::new(),
                    dirty: false,
                })
            }
            Err(source) => {
                for q in queues {
                    let _ = q.qp.delete();
                }
                return Err(ReactorError::Setup {
                    reactor: params.index,
                    controller: i,
                    source,
                });
            }
        }
    }
    Ok(queues)
}

/// Count an answer, remembering the first failures.
pub(crate) fn count_response(
    stats: &mut ReactorStats,
    failures: &mut Vec<FailedIo>,
    token: u64,
    result: &Result<u32, RequestError>,
) {
    stats.completed += 1;
    if let Err(error) = result {
        stats.failed += 1;
        stats.count_error(error);
        // Capacity reserved at start: recording never allocates.
        if failures.len() < MAX_RECORDED_FAILURES {
            failures.push(FailedIo {
                reactor: stats.reactor,
                token,
                error: *error,
            });
        }
    }
}

/// Move a request out of its ring slot, leaving an empty shell behind
/// (only for requests that must wait: the backlog owns them).
fn take_request(req: &mut Request) -> Request {
    std::mem::replace(req, Request::without_data(Op::Flush, 0, 0, 0, 0))
}

/// A link's answering side, apart from its submission ring.
struct Answer<'a> {
    completions: &'a mut rtrb::Producer<Response>,
    pending: &'a mut VecDeque<Response>,
    outstanding: &'a mut usize,
}

impl Answer<'_> {
    /// Answer a request still in its ring slot with `result` and its buffer.
    fn send(
        &mut self,
        stats: &mut ReactorStats,
        failures: &mut Vec<FailedIo>,
        req: &mut Request,
        result: Result<u32, RequestError>,
    ) {
        let response = Response {
            token: req.token,
            result,
            buf: req.buf.take(),
        };
        count_response(stats, failures, response.token, &response.result);
        if deliver(self.completions, self.pending, self.outstanding, response) {
            stats.completion_ring_full += 1;
        }
    }
}

/// Where answers go: producer links, or the reactor-local queue.
struct Sinks<'a> {
    links: &'a mut [Option<Link>],
    local: &'a mut Local,
    stats: &'a mut ReactorStats,
    failures: &'a mut Vec<FailedIo>,
}

impl Sinks<'_> {
    /// Answer a request: count it and hand the response to its link.
    #[inline(always)]
    fn respond(&mut self, link: u32, response: Response) {
        count_response(self.stats, self.failures, response.token, &response.result);
        if link == LOCAL_LINK {
            self.local.deliver(response);
        } else if let Some(Some(l)) = self.links.get_mut(link as usize)
            && l.deliver(response)
        {
            self.stats.completion_ring_full += 1;
        }
    }

    /// Answer the driver's completion `c` of controller `ci`: release its
    /// slot to `free` and respond to the slot's link. A token that names no
    /// slot (never expected) is dropped.
    #[inline(always)]
    fn complete(&mut self, slots: &[Slot], free: &mut Vec<u32>, ci: usize, c: IoCompletion) {
        let Some(s) = slots.get(c.token as usize) else {
            return;
        };
        let (link, token) = (s.link, s.token);
        free.push(c.token as u32);
        let r = Response {
            token,
            result: c.result.map_err(|e| RequestError::from_io(ci, e)),
            buf: c.buf,
        };
        self.respond(link, r);
    }
}

impl<D: Device> Reactor<D> {
    /// Loop until shutdown has drained everything; returns teardown notes.
    fn run_loop(&mut self) -> Vec<String> {
        let mut turn: u64 = 0;
        loop {
            let busy = self.turn();
            if busy {
                self.stats.iterations_busy += 1;
            } else {
                self.stats.iterations_idle += 1;
            }
            turn = turn.wrapping_add(1);
            if !busy || turn.is_multiple_of(64) {
                if self.closing.is_none() {
                    self.control();
                    self.reap_abandoned();
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
        let mut busy = false;
        for link in self.links.iter_mut().flatten() {
            if !link.pending.is_empty() {
                busy |= link.flush_pending();
            }
        }
        busy |= self.retry_backlogs();
        busy |= self.drain_rings();
        if !self.local_pollers.is_empty() {
            busy |= self.run_local_pollers();
        }
        for q in &mut self.queues {
            if q.dirty {
                q.qp.ring_doorbell();
                q.dirty = false;
                self.stats.doorbells += 1;
            }
        }
        busy |= self.reap();
        busy |= self.pollers.run();
        let in_flight = self.queues.iter().any(|q| q.qp.outstanding() > 0);
        if in_flight || !self.timers.is_empty() {
            // The one clock read of the turn (a vDSO call, not a system call).
            let now = Instant::now();
            if !self.timers.is_empty() {
                let ran = self.timers.run_due(now);
                self.stats.timers_run += ran as u64;
                busy |= ran > 0;
            }
            if in_flight {
                busy |= self.check_timeouts(now);
            }
        }
        busy
    }

    /// Every `timeout_check`, check the deadlines of every queue pair. May
    /// block while the driver aborts commands or resets a controller; the
    /// commands concerned are answered by a later [`Reactor::reap`].
    fn check_timeouts(&mut self, now: Instant) -> bool {
        if self.next_timeout_check.is_some_and(|t| now < t) {
            return false;
        }
        self.next_timeout_check = now.checked_add(self.timeout_check);
        self.stats.timeout_checks += 1;
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
            reactor: self.stats.reactor,
            closing: self.closing.is_some(),
            queues: &mut self.queues,
            slots: &mut self.slots,
            free: &mut self.free,
            stats: &mut self.stats,
            failures: &mut self.failures,
            local: &mut self.local,
        };
        let mut busy = false;
        for p in &mut pollers {
            busy |= p(&mut ctx) == PollStatus::Busy;
        }
        self.local_pollers = pollers;
        busy
    }

    /// Resubmit backlogged requests, oldest first, until a queue is full again.
    fn retry_backlogs(&mut self) -> bool {
        let Reactor {
            queues,
            links,
            slots,
            free,
            stats,
            failures,
            local,
            ..
        } = self;
        let mut busy = false;
        for (ci, q) in queues.iter_mut().enumerate() {
            while let Some(&slot) = q.backlog.front() {
                let Some(req) = slots[slot as usize].parked.take() else {
                    q.backlog.pop_front();
                    continue;
                };
                match issue(&q.controller, ci, &mut q.qp, req, slot as u64) {
                    Ok(()) => {
                        busy = true;
                        q.backlog.pop_front();
                        q.dirty = true;
                        stats.submitted += 1;
                    }
                    Err(IssueError::QueueFull(req)) => {
                        slots[slot as usize].parked = Some(req);
                        break;
                    }
                    Err(IssueError::Failed { request, error }) => {
                        busy = true;
                        q.backlog.pop_front();
                        let link = slots[slot as usize].link;
                        free.push(slot);
                        let r = Response {
                            token: request.token,
                            result: Err(error),
                            buf: request.buf,
                        };
                        Sinks {
                            links,
                            local,
                            stats,
                            failures,
                        }
                        .respond(link, r);
                    }
                }
            }
        }
        busy
    }

    /// Take requests from every submission ring, up to `batch` per ring.
    ///
    /// The requests are read in place, as one chunk per ring: only each
    /// one's buffer moves (to the driver), and the ring's read index is
    /// published once per chunk (hop_bench: about 50 instructions per I/O
    /// fewer than popping and moving each request).
    fn drain_rings(&mut self) -> bool {
        let Reactor {
            queues,
            links,
            slots,
            free,
            stats,
            failures,
            batch,
            ..
        } = self;
        let mut busy = false;
        for (li, link) in links.iter_mut().enumerate() {
            let Some(link) = link.as_mut() else {
                continue;
            };
            let Link {
                submissions,
                completions,
                pending,
                outstanding,
                limit,
                ..
            } = link;
            let credit = limit.saturating_sub(*outstanding + pending.len());
            let n = (*batch)
                .min(credit)
                .min(free.len())
                .min(submissions.slots());
            if n == 0 {
                continue;
            }
            let Ok(mut chunk) = submissions.read_chunk(n) else {
                continue;
            };
            let mut answer = Answer {
                completions,
                pending,
                outstanding,
            };
            let (first, second) = chunk.as_mut_slices();
            for req in first.iter_mut().chain(second.iter_mut()) {
                // n <= free.len(): a slot is always there.
                let Some(slot) = free.pop() else { break };
                *answer.outstanding += 1;
                let ci = req.controller;
                let Some(q) = queues.get_mut(ci) else {
                    free.push(slot);
                    let count = queues.len();
                    let result = Err(RequestError::NoSuchController { index: ci, count });
                    answer.send(stats, failures, req, result);
                    continue;
                };
                let s = &mut slots[slot as usize];
                s.link = li as u32;
                s.controller = ci as u32;
                s.token = req.token;
                if !q.backlog.is_empty() {
                    // Keep order: newer requests queue behind older ones.
                    s.parked = Some(take_request(req));
                    q.backlog.push_back(slot);
                    continue;
                }
                match issue_in_place(&q.controller, ci, &mut q.qp, req, slot as u64) {
                    Ok(()) => {
                        q.dirty = true;
                        stats.submitted += 1;
                    }
                    Err(InPlaceError::QueueFull) => {
                        stats.queue_full += 1;
                        s.parked = Some(take_request(req));
                        q.backlog.push_back(slot);
                    }
                    Err(InPlaceError::Failed(error)) => {
                        free.push(slot);
                        answer.send(stats, failures, req, Err(error));
                    }
                }
            }
            // Drops what is left of the requests (their buffers are gone).
            chunk.commit_all();
            busy = true;
        }
        busy
    }

    /// Reap every completion queue with a bounded budget.
    fn reap(&mut self) -> bool {
        let Reactor {
            queues,
            links,
            slots,
            free,
            stats,
            failures,
            local,
            batch,
            ..
        } = self;
        let mut busy = false;
        for (ci, q) in queues.iter_mut().enumerate() {
            if q.qp.outstanding() == 0 {
                continue;
            }
            let n = q.qp.process_completions(*batch, |c: IoCompletion| {
                Sinks {
                    links,
                    local,
                    stats,
                    failures,
                }
                .complete(slots, free, ci, c)
            });
            busy |= n > 0;
        }
        busy
    }

    /// Apply control messages.
    fn control(&mut self) {
        loop {
            match self.control.try_recv() {
                Ok(Control::Attach(link)) => self.attach(link),
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

    /// Reserve everything a new producer can ever need, then add its link.
    fn attach(&mut self, link: Link) {
        let more = link.limit;
        self.add_slots(more);
        for q in &mut self.queues {
            q.backlog.reserve(more);
        }
        self.links.push(Some(link));
    }

    /// Grow the slot table (and the free list's capacity) by `more`.
    fn add_slots(&mut self, more: usize) {
        let base = self.slots.len();
        self.slots.reserve(more);
        self.slots.extend((0..more).map(|_| Slot::default()));
        self.free.reserve(more);
        self.free
            .extend((base..base + more).rev().map(|i| i as u32));
    }

    /// Forget responses nobody can receive, and drop links whose producer
    /// is gone once nothing of theirs is in flight.
    fn reap_abandoned(&mut self) {
        for slot in &mut self.links {
            let Some(l) = slot else { continue };
            if !l.completions.is_abandoned() {
                continue;
            }
            // The producer was dropped: its pending responses have no
            // reader; dropping them frees its credit so the requests still
            // in its ring are carried out (and then dropped the same way).
            l.pending.clear();
            if l.submissions.is_empty() && l.outstanding == 0 {
                *slot = None;
            }
        }
    }

    fn begin_shutdown(&mut self) {
        for link in self.links.iter().flatten() {
            // Release: a producer that sees the flag also sees everything
            // this reactor did before (nothing it relies on, but cheap).
            link.shared.closing.store(true, Ordering::Release);
        }
        self.closing = Some(Instant::now());
    }

    /// Nothing in flight, and nothing left in a ring that could still be taken.
    fn drained(&self) -> bool {
        self.local.outstanding == 0
            && self
                .queues
                .iter()
                .all(|q| q.backlog.is_empty() && q.qp.outstanding() == 0)
            && self
                .links
                .iter()
                .flatten()
                .all(|l| l.outstanding == 0 && (l.submissions.is_empty() || !l.has_credit()))
    }

    fn stuck_report(&self) -> String {
        let in_flight: usize = self.queues.iter().map(|q| q.qp.outstanding()).sum();
        let waiting: usize = self.queues.iter().map(|q| q.backlog.len()).sum();
        format!(
            "shutdown gave up after {:?}: {in_flight} command(s) still in flight on the device, \
             {waiting} waiting for queue room; they are answered as the queues are deleted",
            self.shutdown_timeout
        )
    }

    fn snapshot(&self) -> ReactorStats {
        let mut queues = QueuePairStats::default();
        for q in &self.queues {
            queues += q.qp.stats();
        }
        ReactorStats {
            queues,
            producers: self.links.iter().flatten().count(),
            pollers: self.pollers.len() + self.local_pollers.len(),
            timers: self.timers.len(),
            ..self.stats
        }
    }
}
