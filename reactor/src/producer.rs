//! The application side of one (producer, reactor) pair: a submission ring
//! and a completion ring (`rtrb` SPSC rings), plus the producer's own DMA
//! pools. Also the reactor side's view of the same pair ([`Link`]).
//!
//! A [`Producer`] is `Send` (it can move to the thread that will use it)
//! but neither `Clone` nor `Sync`: exactly one thread submits on a ring and
//! exactly one reactor consumes it, which is what makes the rings
//! single-producer/single-consumer.
//!
//! Shutdown handshake: the reactor sets `closing` in the pair's shared
//! state; `try_submit` checks it before each push (one load of a line that
//! is written once). A request that raced past the check is never lost: when
//! the reactor lets go of its end (the `Drop` of [`Link`], so also when a
//! reactor thread dies) it leaves the submission ring's consumer and any
//! undelivered responses in `leftovers`, and `poll_completions` completes
//! those requests with [`RequestError::ShutDown`].

#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nvme_engine::dma::{DmaBuf, DmaError, DmaPool};

use crate::request::{Request, RequestError, Response};

/// Errors of a producer: why `try_submit` handed a request back, or why a
/// buffer could not be allocated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProducerError {
    /// The submission ring is full: poll completions, then retry.
    #[error(
        "the submission ring to the reactor is full; drain completions with poll_completions \
         and retry, or start the reactor set with a larger ring_capacity"
    )]
    RingFull,
    /// The reactor set is shutting down or gone: no new I/O is accepted.
    #[error("the reactor set is shutting down and accepts no new I/O")]
    ShuttingDown,
    /// A buffer was asked for a controller the reactor set does not drive.
    #[error("no controller {index}: the reactor set drives {count} controller(s), indexed from 0")]
    NoSuchController {
        /// Index given.
        index: usize,
        /// Controllers attached.
        count: usize,
    },
    /// The producer's DMA pool could not serve the allocation.
    #[error("allocating a DMA buffer failed")]
    Dma(#[from] DmaError),
}

/// A request handed back by `try_submit`, with the reason.
#[derive(Debug)]
pub struct Rejected {
    /// The request, unchanged (its buffer included).
    pub request: Request,
    /// Why it was not accepted.
    pub reason: ProducerError,
}

/// What the reactor leaves behind for the producer when it exits.
pub(crate) struct Leftovers {
    /// The submission ring's consumer end, holding any request pushed after
    /// the reactor's last look.
    pub(crate) submissions: rtrb::Consumer<Request>,
    /// Responses the completion ring had no room for.
    pub(crate) responses: VecDeque<Response>,
}

/// State shared by the two ends of a pair, touched only at shutdown.
pub(crate) struct LinkShared {
    pub(crate) closing: AtomicBool,
    pub(crate) leftovers: Mutex<Option<Leftovers>>,
}

/// The reactor's end of a pair. Its fields are private to this module:
/// the reactor takes requests through [`Link::intake`] and answers through
/// [`Link::deliver`] (or the [`Answer`] of an intake), which keep the
/// credit invariant below.
pub(crate) struct Link {
    submissions: rtrb::Consumer<Request>,
    completions: rtrb::Producer<Response>,
    /// Responses waiting for room in the completion ring (capacity `limit`,
    /// reserved at attach time).
    pending: VecDeque<Response>,
    /// Requests taken from the ring and not yet answered.
    outstanding: usize,
    /// Most requests taken and not yet in the completion ring:
    /// `outstanding + pending.len() <= limit`, so `pending` never grows.
    limit: usize,
    shared: Arc<LinkShared>,
}

impl Drop for Link {
    /// However the reactor lets go of a link — orderly exit, a dropped
    /// control message, unwinding — the producer learns it is closed and
    /// gets back what the reactor still held, so nothing is lost silently.
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        let (_, empty) = rtrb::RingBuffer::new(0);
        let left = Leftovers {
            submissions: std::mem::replace(&mut self.submissions, empty),
            responses: std::mem::take(&mut self.pending),
        };
        match self.shared.leftovers.lock() {
            Ok(mut g) => *g = Some(left),
            Err(poisoned) => *poisoned.into_inner() = Some(left),
        }
    }
}

impl Link {
    /// The most requests of this producer the reactor holds at once (its
    /// credit): what the reactor reserves for it when it attaches.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Answer a request taken from this link: push the response, or keep
    /// it pending when the ring is full. Returns true when the ring was full.
    #[inline(always)]
    pub(crate) fn deliver(&mut self, response: Response) -> bool {
        self.answer().deliver(response)
    }

    fn answer(&mut self) -> Answer<'_> {
        Answer {
            completions: &mut self.completions,
            pending: &mut self.pending,
            outstanding: &mut self.outstanding,
        }
    }

    /// Whether responses wait for room in the completion ring.
    #[inline]
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Move pending responses into the ring while it has room; true when
    /// any moved.
    pub(crate) fn flush_pending(&mut self) -> bool {
        let mut moved = false;
        while let Some(r) = self.pending.pop_front() {
            if let Err(rtrb::PushError::Full(r)) = self.completions.push(r) {
                self.pending.push_front(r);
                break;
            }
            moved = true;
        }
        moved
    }

    /// Whether the reactor may take another request from this ring.
    pub(crate) fn has_credit(&self) -> bool {
        self.outstanding + self.pending.len() < self.limit
    }

    /// Take up to `max` requests (fewer when the producer's credit or the
    /// ring has fewer), read in place as one chunk: `None` when there is
    /// nothing to take.
    #[inline]
    pub(crate) fn intake(&mut self, max: usize) -> Option<Intake<'_>> {
        let credit = self
            .limit
            .saturating_sub(self.outstanding + self.pending.len());
        let n = max.min(credit).min(self.submissions.slots());
        if n == 0 {
            return None;
        }
        let chunk = self.submissions.read_chunk(n).ok()?;
        Some(Intake {
            chunk,
            answer: Answer {
                completions: &mut self.completions,
                pending: &mut self.pending,
                outstanding: &mut self.outstanding,
            },
        })
    }

    /// Tell the producer the reactor is closing: new submissions fail with
    /// [`ProducerError::ShuttingDown`].
    pub(crate) fn close(&self) {
        // Release: a producer that sees the flag also sees everything this
        // reactor did before (nothing it relies on, but cheap).
        self.shared.closing.store(true, Ordering::Release);
    }

    /// Nothing of this producer is in flight, and nothing is left in its
    /// ring that the reactor could still take.
    pub(crate) fn is_drained(&self) -> bool {
        self.outstanding == 0 && (self.submissions.is_empty() || !self.has_credit())
    }

    /// When the producer was dropped, forget the responses nobody can
    /// receive (which frees its credit, so the requests still in its ring
    /// are carried out and then forgotten the same way). True when the
    /// link holds nothing any more and can be let go.
    pub(crate) fn release_if_abandoned(&mut self) -> bool {
        if !self.completions.is_abandoned() {
            return false;
        }
        self.pending.clear();
        self.submissions.is_empty() && self.outstanding == 0
    }
}

/// A link's answering side, apart from its submission ring.
pub(crate) struct Answer<'a> {
    completions: &'a mut rtrb::Producer<Response>,
    pending: &'a mut VecDeque<Response>,
    outstanding: &'a mut usize,
}

impl Answer<'_> {
    /// Answer one request taken from the link (see [`Link::deliver`]).
    #[inline(always)]
    pub(crate) fn deliver(&mut self, response: Response) -> bool {
        *self.outstanding -= 1;
        if !self.pending.is_empty() {
            self.pending.push_back(response);
            return true;
        }
        match self.completions.push(response) {
            Ok(()) => false,
            Err(rtrb::PushError::Full(response)) => {
                self.pending.push_back(response);
                true
            }
        }
    }
}

/// Requests taken from a link's ring, read in place (see [`Link::intake`]).
pub(crate) struct Intake<'a> {
    chunk: rtrb::chunks::ReadChunk<'a, Request>,
    answer: Answer<'a>,
}

impl Intake<'_> {
    /// Hand each request, in ring order, to `f` with the link's answering
    /// side. Every request handed out counts as taken: it is answered once,
    /// through that [`Answer`] now or through [`Link::deliver`] later.
    /// Whatever `f` leaves in a request is dropped when the ring slots are
    /// released, once, after the last one (one index update per chunk).
    #[inline(always)]
    pub(crate) fn for_each<F: FnMut(&mut Request, &mut Answer<'_>)>(mut self, mut f: F) {
        let (first, second) = self.chunk.as_mut_slices();
        for req in first.iter_mut().chain(second.iter_mut()) {
            *self.answer.outstanding += 1;
            f(req, &mut self.answer);
        }
        self.chunk.commit_all();
    }
}

/// Counters kept by a producer (on its own thread).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProducerStats {
    /// Requests accepted into the submission ring.
    pub submitted: u64,
    /// Responses handed to the application.
    pub completed: u64,
    /// `try_submit` calls refused because the ring was full.
    pub ring_full: u64,
}

/// An application thread's connection to one reactor.
///
/// `Send`, so it can move to the thread that submits:
/// ```
/// fn send<T: Send>() {}
/// send::<nvme_reactor::Producer>();
/// ```
/// but not `Sync` (two threads can never share one ring end):
/// ```compile_fail
/// fn sync<T: Sync>() {}
/// sync::<nvme_reactor::Producer>();
/// ```
/// and not `Clone` (a second handle would make the ring multi-producer):
/// ```compile_fail
/// fn clone<T: Clone>() {}
/// clone::<nvme_reactor::Producer>();
/// ```
pub struct Producer {
    reactor: usize,
    submissions: rtrb::Producer<Request>,
    completions: rtrb::Consumer<Response>,
    shared: Arc<LinkShared>,
    pools: Vec<DmaPool>,
    stats: ProducerStats,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("reactor", &self.reactor)
            .field("stats", &self.stats)
            .finish()
    }
}

/// Build both ends of a pair with rings of `capacity` entries.
pub(crate) fn pair(reactor: usize, capacity: usize, pools: Vec<DmaPool>) -> (Producer, Link) {
    let (sub_tx, sub_rx) = rtrb::RingBuffer::new(capacity);
    let (comp_tx, comp_rx) = rtrb::RingBuffer::new(capacity);
    let shared = Arc::new(LinkShared {
        closing: AtomicBool::new(false),
        leftovers: Mutex::new(None),
    });
    let producer = Producer {
        reactor,
        submissions: sub_tx,
        completions: comp_rx,
        shared: Arc::clone(&shared),
        pools,
        stats: ProducerStats::default(),
    };
    let link = Link {
        submissions: sub_rx,
        completions: comp_tx,
        pending: VecDeque::with_capacity(capacity),
        outstanding: 0,
        limit: capacity,
        shared,
    };
    (producer, link)
}

impl Producer {
    /// The reactor this producer submits to.
    pub fn reactor(&self) -> usize {
        self.reactor
    }

    /// Hand a request to the reactor. Never blocks; on a full ring or after
    /// shutdown the request comes back.
    #[allow(
        clippy::result_large_err,
        reason = "the request comes back by value; boxing it would allocate per rejection"
    )]
    pub fn try_submit(&mut self, request: Request) -> Result<(), Rejected> {
        // Acquire: pairs with the reactor's release store at shutdown. A
        // request that passes this check just before the store is still
        // answered (see the module doc), so no stronger ordering is needed.
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(Rejected {
                request,
                reason: ProducerError::ShuttingDown,
            });
        }
        match self.submissions.push(request) {
            Ok(()) => {
                self.stats.submitted += 1;
                Ok(())
            }
            Err(rtrb::PushError::Full(request)) => {
                self.stats.ring_full += 1;
                Err(Rejected {
                    request,
                    reason: ProducerError::RingFull,
                })
            }
        }
    }

    /// Free slots in the submission ring.
    pub fn free_slots(&self) -> usize {
        self.submissions.slots()
    }

    /// Call `f` for every response available now; returns how many.
    pub fn poll_completions<F: FnMut(Response)>(&mut self, mut f: F) -> usize {
        // One chunk for everything available: the ring's read index is
        // published once, not once per response.
        let mut n = 0;
        if let Ok(chunk) = self.completions.read_chunk(self.completions.slots()) {
            for r in chunk {
                f(r);
                n += 1;
            }
        }
        if n == 0 && self.shared.closing.load(Ordering::Acquire) {
            n += self.take_leftovers(&mut f);
        }
        self.stats.completed += n as u64;
        n
    }

    /// After the reactor exited: answer what it left behind.
    fn take_leftovers<F: FnMut(Response)>(&mut self, f: &mut F) -> usize {
        let taken = match self.shared.leftovers.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(mut left) = taken else { return 0 };
        let mut n = 0;
        for r in left.responses.drain(..) {
            f(r);
            n += 1;
        }
        while let Ok(req) = left.submissions.pop() {
            f(Response {
                token: req.token,
                result: Err(RequestError::ShutDown),
                buf: req.buf,
            });
            n += 1;
        }
        n
    }

    /// Whether the reactor set is shutting down (submissions are refused).
    pub fn is_closing(&self) -> bool {
        self.shared.closing.load(Ordering::Acquire)
    }

    /// A DMA buffer of `len` bytes for controller 0.
    pub fn alloc(&mut self, len: usize) -> Result<DmaBuf, ProducerError> {
        self.alloc_for(0, len)
    }

    /// A DMA buffer of `len` bytes usable with controller `controller`
    /// (each controller has its own pool: a real device can only reach
    /// memory mapped for it).
    pub fn alloc_for(&mut self, controller: usize, len: usize) -> Result<DmaBuf, ProducerError> {
        let count = self.pools.len();
        match self.pools.get_mut(controller) {
            Some(pool) => Ok(pool.alloc(len)?),
            None => Err(ProducerError::NoSuchController {
                index: controller,
                count,
            }),
        }
    }

    /// Return a buffer to the pool it came from.
    pub fn free(&mut self, buf: DmaBuf) -> Result<(), ProducerError> {
        let addr = buf.as_ptr() as usize;
        let owner = self.pools.iter_mut().find(|p| {
            let base = p.region().as_ptr() as usize;
            addr >= base && addr < base + p.capacity()
        });
        match owner {
            Some(pool) => Ok(pool.free(buf)?),
            None => Err(DmaError::ForeignBuffer.into()),
        }
    }

    /// Bytes of this producer's DMA pools handed out and not yet freed
    /// (over all controllers). Zero once every buffer came back and was
    /// freed: no buffer was lost.
    pub fn pool_bytes_in_use(&self) -> usize {
        self.pools.iter().map(|p| p.used()).sum()
    }

    /// This producer's counters.
    pub fn stats(&self) -> ProducerStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Op, Request};
    use std::thread;

    /// A producer thread pushes flushes through a tiny ring pair while a
    /// consumer thread plays the reactor (credit check, pending responses);
    /// every token comes back exactly once and in order.
    #[test]
    fn every_request_is_answered_once_in_order_across_two_threads() {
        const N: u64 = 20_000;
        let (mut producer, mut link) = pair(0, 4, Vec::new());
        let reactor = thread::spawn(move || {
            let mut answered = 0;
            while answered < N {
                link.flush_pending();
                while link.has_credit() {
                    let Ok(req) = link.submissions.pop() else {
                        break;
                    };
                    link.outstanding += 1;
                    link.deliver(Response {
                        token: req.token,
                        result: Ok(req.lba as u32),
                        buf: None,
                    });
                    answered += 1;
                }
                assert!(link.pending.len() <= link.limit);
                std::hint::spin_loop();
            }
            // Leave the rest to the producer, as a reactor does at exit.
            while !link.pending.is_empty() {
                let _ = link.flush_pending();
                thread::yield_now();
            }
        });
        let mut next_token = 0u64;
        let mut expect = 0u64;
        while expect < N {
            if next_token < N {
                let req = Request::without_data(Op::Flush, 0, 1, next_token * 3, next_token);
                match producer.try_submit(req) {
                    Ok(()) => next_token += 1,
                    Err(rejected) => {
                        assert!(matches!(rejected.reason, ProducerError::RingFull));
                        assert_eq!(rejected.request.token, next_token);
                    }
                }
            }
            producer.poll_completions(|r| {
                assert_eq!(r.token, expect, "responses out of order or duplicated");
                assert_eq!(r.result.unwrap(), (expect * 3) as u32);
                expect += 1;
            });
        }
        reactor.join().unwrap();
        assert_eq!(producer.stats().submitted, N);
        assert_eq!(producer.stats().completed, N);
    }

    #[test]
    fn requests_left_in_the_ring_at_exit_are_answered_with_shutdown() {
        let (mut producer, link) = pair(0, 8, Vec::new());
        for t in 0..3 {
            producer
                .try_submit(Request::flush(0, 1, t))
                .expect("ring has room");
        }
        drop(link);
        let rejected = producer.try_submit(Request::flush(0, 1, 99)).unwrap_err();
        assert!(matches!(rejected.reason, ProducerError::ShuttingDown));
        let mut tokens = Vec::new();
        producer.poll_completions(|r| {
            assert!(matches!(r.result, Err(RequestError::ShutDown)));
            tokens.push(r.token);
        });
        assert_eq!(tokens, vec![0, 1, 2]);
        assert_eq!(producer.poll_completions(|_| panic!("answered twice")), 0);
    }
}
