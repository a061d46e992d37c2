//! Reactor-local I/O: application code that runs on a reactor (a "local
//! poller") and puts commands straight onto the reactor's queue pairs, with
//! buffers from the reactor's own DMA pools — no ring, no other thread.
//!
//! This is the SPDK model of an application living on its reactor. The
//! reactor reserves `local_capacity` request slots for it at start; local
//! responses wait in a reactor-side queue (also reserved) until the poller
//! collects them with [`ReactorContext::poll_completions`].

#![forbid(unsafe_code)]

use crate::attach::Attach;
use nvme_engine::dma::{DmaBuf, DmaError};

use crate::dispatch::{Dispatch, LocalRefusal, Queue};
use crate::poller::PollStatus;
use crate::request::{Request, Response};

/// A poller that may do I/O on its reactor.
pub type LocalPoller<D> = Box<dyn FnMut(&mut ReactorContext<'_, D>) -> PollStatus + Send>;

/// Why a local submission or allocation did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// All local slots are taken (in flight or waiting to be collected).
    #[error(
        "all reactor-local request slots are in use; collect responses with poll_completions, \
         or start the set with a larger local_capacity"
    )]
    NoCredit,
    /// The controller's queue is full (or ring requests are waiting for it).
    #[error("the I/O queue is full; retry on a later turn")]
    QueueFull,
    /// The reactor is shutting down.
    #[error("the reactor is shutting down and accepts no new I/O")]
    Closing,
    /// No such controller.
    #[error("no controller {index}: the reactor set drives {count} controller(s), indexed from 0")]
    NoSuchController {
        /// Index given.
        index: usize,
        /// Controllers attached.
        count: usize,
    },
    /// The reactor's pool could not serve the buffer.
    #[error("allocating from the reactor's DMA pool failed")]
    Dma(#[from] DmaError),
}

/// A local request handed back, with the reason.
#[derive(Debug)]
pub struct LocalRejected {
    /// The request, unchanged.
    pub request: Request,
    /// Why.
    pub reason: ContextError,
}

#[allow(
    clippy::result_large_err,
    reason = "the request comes back by value; boxing it would allocate per rejection"
)]
fn reject(request: Request, reason: ContextError) -> Result<(), LocalRejected> {
    Err(LocalRejected { request, reason })
}

/// What a local poller sees of its reactor.
pub struct ReactorContext<'a, D: Attach> {
    pub(crate) reactor: usize,
    pub(crate) closing: bool,
    pub(crate) queues: &'a mut [Queue<D>],
    pub(crate) dispatch: &'a mut Dispatch,
}

impl<D: Attach> ReactorContext<'_, D> {
    /// Index of the reactor this code runs on.
    pub fn reactor(&self) -> usize {
        self.reactor
    }

    /// Whether the reactor is shutting down (submissions are refused; in-flight
    /// local I/O still completes and can be collected).
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Local requests submitted and not yet collected.
    pub fn outstanding(&self) -> usize {
        self.dispatch.local_uncollected()
    }

    /// A buffer from the reactor's DMA pool for controller `controller`.
    pub fn alloc(&mut self, controller: usize, len: usize) -> Result<DmaBuf, ContextError> {
        let count = self.queues.len();
        let q = self
            .queues
            .get_mut(controller)
            .ok_or(ContextError::NoSuchController {
                index: controller,
                count,
            })?;
        Ok(q.pool.alloc(len)?)
    }

    /// Return a buffer to the reactor pool it came from.
    pub fn free(&mut self, buf: DmaBuf) -> Result<(), ContextError> {
        let addr = buf.as_ptr() as usize;
        let owner = self.queues.iter_mut().find(|q| {
            let base = q.pool.region().as_ptr() as usize;
            addr >= base && addr < base + q.pool.capacity()
        });
        match owner {
            Some(q) => Ok(q.pool.free(buf)?),
            None => Err(DmaError::ForeignBuffer.into()),
        }
    }

    /// Put a request on the controller's queue. The doorbell is written by
    /// the reactor after its local pollers ran. A request that can never be
    /// submitted (bad LBA, namespace...) is accepted and answered with its
    /// error like any other.
    #[allow(
        clippy::result_large_err,
        reason = "the request comes back by value; boxing it would allocate per rejection"
    )]
    pub fn submit(&mut self, request: Request) -> Result<(), LocalRejected> {
        if self.closing {
            return reject(request, ContextError::Closing);
        }
        if !self.dispatch.local_has_credit() {
            return reject(request, ContextError::NoCredit);
        }
        let ci = request.controller;
        let count = self.queues.len();
        let Some(q) = self.queues.get_mut(ci) else {
            return reject(request, ContextError::NoSuchController { index: ci, count });
        };
        match self.dispatch.submit_local(q, ci, request) {
            Ok(()) => Ok(()),
            Err((request, LocalRefusal::NoCredit)) => reject(request, ContextError::NoCredit),
            Err((request, LocalRefusal::QueueFull)) => reject(request, ContextError::QueueFull),
        }
    }

    /// Call `f` for each local response collected so far; returns how many.
    pub fn poll_completions<F: FnMut(Response)>(&mut self, mut f: F) -> usize {
        let mut n = 0;
        while let Some(r) = self.dispatch.collect_local() {
            f(r);
            n += 1;
        }
        n
    }
}
