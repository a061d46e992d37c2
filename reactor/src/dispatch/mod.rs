//! Dispatch: the one place a request is submitted to a queue pair and
//! answered.
//!
//! It owns the reactor's request slots ([`slots`]: one per request between
//! being taken and being answered, whose tag is the driver's token) and the
//! answer path: a response is built by one of [`completed`], [`refused`] or
//! [`not_deleted`], counted once ([`ReactorStats`], the first
//! [`FailedIo`]s), and delivered once, to its producer's completion ring or
//! to the reactor-local queue. Every outcome takes that path:
//!
//! - success, an NVMe error status, a timeout (the driver aborted the
//!   command or reset the controller), a reset with its retries used up, a
//!   removal or a failed controller: the driver's completion, through
//!   [`Dispatch::reap`] (and [`Dispatch::delete_queue`] at the end);
//! - a request the driver refuses before it reaches the device (no such
//!   controller or namespace, no buffer, invalid): at once, with its buffer;
//! - shutdown: what is still parked for queue room, or was left on a queue
//!   the device would not delete, by [`Dispatch::answer_unanswered`].
//!
//! The reactor's loop, its local pollers (`ReactorContext`), teardown and
//! direct mode (`DirectQueue`, which has no slots: its token is the
//! application's) all submit and answer through this module.
//!
//! Requests waiting for room on a full NVMe queue stay in their slot and in
//! the queue's backlog (oldest first), and are retried before anything new
//! is taken for that queue, so a queue never reorders what it was given.

#![forbid(unsafe_code)]

mod issue;
mod local;
mod slots;

use std::collections::VecDeque;

use crate::attach::Attach;
use nvme_engine::dma::DmaPool;
use nvme_engine::{DriverError, IoCompletion, QueuePair};

use crate::producer::{Answer, Link};
use crate::request::{Request, RequestError, Response};
use crate::stats::{FailedIo, MAX_RECORDED_FAILURES, ReactorStats};

use issue::{InPlaceError, issue_in_place};
pub(crate) use issue::{IssueError, issue};
use local::Local;
use slots::{LOCAL_LINK, Owner, Slots, Tag};

/// One controller as seen by one reactor.
pub(crate) struct Queue<D: Attach> {
    pub(crate) controller: D::Handle,
    pub(crate) qp: QueuePair<D::Transport>,
    /// The reactor's own DMA memory for this controller: buffers for
    /// reactor-local I/O. Released after the queue pair is deleted.
    pub(crate) pool: DmaPool,
    /// Tags of the requests waiting for room on this queue, oldest first.
    backlog: VecDeque<Tag>,
    /// Whether entries were added since the last doorbell.
    dirty: bool,
}

impl<D: Attach> Queue<D> {
    pub(crate) fn new(controller: D::Handle, qp: QueuePair<D::Transport>, pool: DmaPool) -> Self {
        Queue {
            controller,
            qp,
            pool,
            backlog: VecDeque::new(),
            dirty: false,
        }
    }

    /// Write the SQ Tail Doorbell if entries were added since the last
    /// time (one write covers them all); true when it was written.
    #[inline]
    pub(crate) fn ring_doorbell(&mut self) -> bool {
        if !self.dirty {
            return false;
        }
        self.qp.ring_doorbell();
        self.dirty = false;
        true
    }

    /// Put `req` on this queue under `tag`: its buffer moves to the driver
    /// (and comes back into `req` when the driver refuses it). The doorbell
    /// is left for [`Queue::ring_doorbell`], once per batch.
    #[inline(always)]
    fn submit(&mut self, ci: usize, req: &mut Request, tag: Tag) -> Result<(), InPlaceError> {
        issue_in_place::<D>(&self.controller, ci, &mut self.qp, req, tag)?;
        self.dirty = true;
        Ok(())
    }

    /// Requests waiting for room on this queue.
    pub(crate) fn waiting(&self) -> usize {
        self.backlog.len()
    }
}

/// The response to the driver's completion `c` of a command on controller
/// `controller`, whose application token is `token`.
#[inline(always)]
pub(crate) fn completed(controller: usize, token: u64, c: IoCompletion) -> Response {
    Response {
        token,
        result: c.result.map_err(|e| RequestError::from_io(controller, e)),
        buf: c.buf,
    }
}

/// The response to a request that never reached the device: `error`, and
/// the buffer back.
pub(crate) fn refused(request: Request, error: RequestError) -> Response {
    Response {
        token: request.token,
        result: Err(error),
        buf: request.buf,
    }
}

/// The response to a request left on a queue the device would not delete:
/// the device may still write its buffer, which is not handed back.
pub(crate) fn not_deleted(controller: usize, token: u64) -> Response {
    Response {
        token,
        result: Err(RequestError::QueueNotDeleted { controller }),
        buf: None,
    }
}

/// Why a local request was handed back.
pub(crate) enum LocalRefusal {
    /// Every local slot is taken.
    NoCredit,
    /// The queue is full, or ring requests wait for it.
    QueueFull,
}

/// The request slots of one reactor and everything an answer goes to.
pub(crate) struct Dispatch {
    slots: Slots,
    out: Out,
}

/// Where answers go, and their counters.
struct Out {
    links: Vec<Option<Link>>,
    local: Local,
    stats: ReactorStats,
    failures: Vec<FailedIo>,
}

/// Count an answer, remembering the first failures.
#[inline(always)]
fn count(stats: &mut ReactorStats, failures: &mut Vec<FailedIo>, response: &Response) {
    stats.completed += 1;
    if let Err(error) = &response.result {
        count_failure(stats, failures, response.token, *error);
    }
}

#[cold]
fn count_failure(
    stats: &mut ReactorStats,
    failures: &mut Vec<FailedIo>,
    token: u64,
    error: RequestError,
) {
    stats.failed += 1;
    stats.count_error(&error);
    // Capacity reserved at start: recording never allocates.
    if failures.len() < MAX_RECORDED_FAILURES {
        failures.push(FailedIo {
            reactor: stats.reactor,
            token,
            error,
        });
    }
}

impl Out {
    /// Count a response and hand it to the link (or local queue) that
    /// asked.
    #[inline(always)]
    fn respond(&mut self, link: u32, response: Response) {
        count(&mut self.stats, &mut self.failures, &response);
        if link == LOCAL_LINK {
            self.local.deliver(response);
        } else if let Some(Some(l)) = self.links.get_mut(link as usize)
            && l.deliver(response)
        {
            self.stats.completion_ring_full += 1;
        }
    }

    /// Answer the driver's completion `c` of controller `ci`: release its
    /// slot and respond to the slot's owner. A tag that names no taken slot
    /// (never expected) answers nothing.
    #[inline(always)]
    fn complete(&mut self, slots: &mut Slots, ci: usize, c: IoCompletion) {
        if let Some(owner) = slots.finish(c.token) {
            self.respond(owner.link, completed(ci, owner.token, c));
        }
    }
}

/// Answer a request taken from a link's ring through that link's answering
/// side (the ring itself is borrowed by the intake).
#[inline(always)]
fn respond_in_ring(
    stats: &mut ReactorStats,
    failures: &mut Vec<FailedIo>,
    answer: &mut Answer<'_>,
    response: Response,
) {
    count(stats, failures, &response);
    if answer.deliver(response) {
        stats.completion_ring_full += 1;
    }
}

/// Move a request out of its ring slot, leaving an empty shell behind
/// (only for requests that must wait: their slot owns them).
fn take_request(req: &mut Request) -> Request {
    std::mem::replace(
        req,
        Request::without_data(crate::request::Op::Flush, 0, 0, 0, 0),
    )
}

impl Dispatch {
    /// A dispatch with `local_capacity` slots for local pollers.
    pub(crate) fn new(stats: ReactorStats, local_capacity: usize) -> Self {
        let mut slots = Slots::default();
        slots.grow(local_capacity);
        Dispatch {
            slots,
            out: Out {
                links: Vec::new(),
                local: Local::new(local_capacity),
                stats,
                failures: Vec::with_capacity(MAX_RECORDED_FAILURES),
            },
        }
    }

    pub(crate) fn stats(&self) -> &ReactorStats {
        &self.out.stats
    }

    pub(crate) fn stats_mut(&mut self) -> &mut ReactorStats {
        &mut self.out.stats
    }

    /// Producers attached.
    pub(crate) fn producers(&self) -> usize {
        self.out.links.iter().flatten().count()
    }

    /// The final counters, the recorded failures and the links (whose drop
    /// hands their producer what they still hold).
    pub(crate) fn into_parts(self) -> (ReactorStats, Vec<FailedIo>, Vec<Option<Link>>) {
        (self.out.stats, self.out.failures, self.out.links)
    }

    /// Reserve everything a new producer can ever need (slots, and backlog
    /// room on every queue), then add its link.
    pub(crate) fn attach<D: Attach>(&mut self, link: Link, queues: &mut [Queue<D>]) {
        let more = link.limit();
        self.slots.grow(more);
        for q in queues {
            q.backlog.reserve(more);
        }
        self.out.links.push(Some(link));
    }

    /// Move responses waiting for completion-ring room into their rings;
    /// true when any moved.
    pub(crate) fn flush_pending(&mut self) -> bool {
        let mut busy = false;
        for link in self.out.links.iter_mut().flatten() {
            if link.has_pending() {
                busy |= link.flush_pending();
            }
        }
        busy
    }

    /// Tell every producer the reactor is closing.
    pub(crate) fn close_links(&self) {
        for link in self.out.links.iter().flatten() {
            link.close();
        }
    }

    /// Forget responses nobody can receive, and drop links whose producer
    /// is gone once nothing of theirs is in flight.
    pub(crate) fn release_abandoned(&mut self) {
        for slot in &mut self.out.links {
            if slot.as_mut().is_some_and(Link::release_if_abandoned) {
                *slot = None;
            }
        }
    }

    /// Nothing in flight, and nothing left in a ring that could still be
    /// taken.
    pub(crate) fn is_drained<D: Attach>(&self, queues: &[Queue<D>]) -> bool {
        self.out.local.in_flight() == 0
            && queues
                .iter()
                .all(|q| q.backlog.is_empty() && q.qp.outstanding() == 0)
            && self.out.links.iter().flatten().all(Link::is_drained)
    }

    /// Take requests from every submission ring, up to `batch` per ring,
    /// and submit them.
    ///
    /// The requests are read in place, as one chunk per ring: only each
    /// one's buffer moves (to the driver), and the ring's read index is
    /// published once per chunk (hop_bench: about 50 instructions per I/O
    /// fewer than popping and moving each request).
    pub(crate) fn take_from_rings<D: Attach>(
        &mut self,
        queues: &mut [Queue<D>],
        batch: usize,
    ) -> bool {
        let Dispatch { slots, out } = self;
        let Out {
            links,
            stats,
            failures,
            ..
        } = out;
        let mut busy = false;
        for (li, link) in links.iter_mut().enumerate() {
            let Some(link) = link.as_mut() else {
                continue;
            };
            // A slot per request taken: the credit of every producer is
            // reserved, so this bound never bites.
            let Some(intake) = link.intake(batch.min(slots.available())) else {
                continue;
            };
            intake.for_each(|req, answer| {
                let ci = req.controller;
                let Some(q) = queues.get_mut(ci) else {
                    let error = RequestError::NoSuchController {
                        index: ci,
                        count: queues.len(),
                    };
                    let response = Response {
                        token: req.token,
                        result: Err(error),
                        buf: req.buf.take(),
                    };
                    respond_in_ring(stats, failures, answer, response);
                    return;
                };
                let owner = Owner {
                    link: li as u32,
                    token: req.token,
                };
                let Some(tag) = slots.take(owner, ci) else {
                    return; // not reached: see the bound above
                };
                if !q.backlog.is_empty() {
                    // Keep order: newer requests queue behind older ones.
                    slots.park(tag, take_request(req));
                    q.backlog.push_back(tag);
                    return;
                }
                match q.submit(ci, req, tag) {
                    Ok(()) => stats.submitted += 1,
                    Err(InPlaceError::QueueFull) => {
                        stats.queue_full += 1;
                        slots.park(tag, take_request(req));
                        q.backlog.push_back(tag);
                    }
                    Err(InPlaceError::Failed(error)) => {
                        slots.put_back(tag);
                        let response = Response {
                            token: req.token,
                            result: Err(error),
                            buf: req.buf.take(),
                        };
                        respond_in_ring(stats, failures, answer, response);
                    }
                }
            });
            busy = true;
        }
        busy
    }

    /// Resubmit backlogged requests, oldest first, until a queue is full
    /// again.
    pub(crate) fn retry_backlogs<D: Attach>(&mut self, queues: &mut [Queue<D>]) -> bool {
        let mut busy = false;
        for (ci, q) in queues.iter_mut().enumerate() {
            while let Some(&tag) = q.backlog.front() {
                let Some(mut req) = self.slots.unpark(tag) else {
                    q.backlog.pop_front();
                    continue;
                };
                match q.submit(ci, &mut req, tag) {
                    Ok(()) => self.out.stats.submitted += 1,
                    Err(InPlaceError::QueueFull) => {
                        self.slots.park(tag, req);
                        break;
                    }
                    Err(InPlaceError::Failed(error)) => {
                        if let Some(owner) = self.slots.finish(tag) {
                            self.out.respond(owner.link, refused(req, error));
                        }
                    }
                }
                busy = true;
                q.backlog.pop_front();
            }
        }
        busy
    }

    /// Reap every completion queue with a bounded budget and answer.
    pub(crate) fn reap<D: Attach>(&mut self, queues: &mut [Queue<D>], batch: usize) -> bool {
        let Dispatch { slots, out } = self;
        let mut busy = false;
        for (ci, q) in queues.iter_mut().enumerate() {
            if q.qp.outstanding() == 0 {
                continue;
            }
            let n =
                q.qp.process_completions(batch, |c: IoCompletion| out.complete(slots, ci, c));
            busy |= n > 0;
        }
        busy
    }

    /// Submit a local poller's request to queue `q` (controller `ci`). A
    /// request the driver refuses is accepted and answered with its error.
    #[allow(
        clippy::result_large_err,
        reason = "the request comes back by value; boxing it would allocate per rejection"
    )]
    pub(crate) fn submit_local<D: Attach>(
        &mut self,
        q: &mut Queue<D>,
        ci: usize,
        mut request: Request,
    ) -> Result<(), (Request, LocalRefusal)> {
        if !self.out.local.has_credit() {
            return Err((request, LocalRefusal::NoCredit));
        }
        if !q.backlog.is_empty() {
            // Requests from the rings are waiting for this queue: do not
            // overtake them.
            return Err((request, LocalRefusal::QueueFull));
        }
        let owner = Owner {
            link: LOCAL_LINK,
            token: request.token,
        };
        let Some(tag) = self.slots.take(owner, ci) else {
            return Err((request, LocalRefusal::NoCredit));
        };
        match q.submit(ci, &mut request, tag) {
            Ok(()) => {
                self.out.stats.submitted += 1;
                self.out.local.take();
                Ok(())
            }
            Err(InPlaceError::QueueFull) => {
                self.slots.put_back(tag);
                self.out.stats.queue_full += 1;
                Err((request, LocalRefusal::QueueFull))
            }
            Err(InPlaceError::Failed(error)) => {
                self.slots.put_back(tag);
                self.out.local.take();
                self.out.respond(LOCAL_LINK, refused(request, error));
                Ok(())
            }
        }
    }

    /// Whether a local poller may submit another request.
    pub(crate) fn local_has_credit(&self) -> bool {
        self.out.local.has_credit()
    }

    /// Local requests submitted and not yet collected.
    pub(crate) fn local_uncollected(&self) -> usize {
        self.out.local.uncollected()
    }

    /// The oldest local response not yet collected.
    pub(crate) fn collect_local(&mut self) -> Option<Response> {
        self.out.local.collect()
    }

    /// Delete queue `q` of controller `ci`, answering every command on it
    /// that the driver completes: those the device finishes while the
    /// queue drains, with their own result; once the controller deleted the
    /// queue (which aborts what it still held), the rest with `Command
    /// Aborted due to SQ Deletion` — with their buffers
    /// (`IoQueuePair::delete_with`). What the driver could not answer stays
    /// in its slot for [`Dispatch::answer_unanswered`].
    pub(crate) fn delete_queue<D: Attach>(
        &mut self,
        ci: usize,
        q: Queue<D>,
    ) -> Result<(), DriverError> {
        let Dispatch { slots, out } = self;
        q.qp.delete_with(|c: IoCompletion| out.complete(slots, ci, c))
    }

    /// After every queue was deleted, answer what the slots still hold:
    /// requests parked for queue room with [`RequestError::ShutDown`] and
    /// their buffers; requests left on a queue the device would not delete
    /// (the driver answers those itself, so never expected) with
    /// [`RequestError::QueueNotDeleted`] and without their buffers.
    pub(crate) fn answer_unanswered(&mut self) {
        let Dispatch { slots, out } = self;
        for left in slots.drain_taken() {
            let response = match left.parked {
                Some(req) => refused(req, RequestError::ShutDown),
                None => not_deleted(left.controller, left.owner.token),
            };
            out.respond(left.owner.link, response);
        }
    }
}
