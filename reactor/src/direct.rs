//! Direct mode: an application thread owns a queue pair and a DMA pool
//! itself and drives them with the same [`Request`]/[`Response`] types the
//! reactors use, with no reactor thread and no ring in between.
//!
//! This is a thin layer over the driver's `IoQueuePair`: `submit` writes the
//! command (no doorbell), `poll` rings the doorbell once for everything
//! submitted since the last call and reaps completions. Submitting and
//! answering go through the reactor's dispatch functions, so a request
//! fails, times out or is aborted with the same [`Response`] in both modes.
//! There is no slot table here: the driver's tracker is the only record of
//! a command, and the application's token is the driver's token.

#![forbid(unsafe_code)]

use std::collections::HashMap;

use nvme_engine::Device;
use nvme_engine::uring::UringError;

use crate::attach::{Attach, AttachError, Uring, UringNamespace};
use crate::attach_tcp::{Tcp, TcpController};
use nvme_engine::dma::{DmaBuf, DmaError, DmaPool};
use nvme_engine::{Controller, DriverError, QueuePair, QueuePairOptions};

use crate::dispatch::{IssueError, completed, issue, not_deleted, refused};
use crate::request::{Request, RequestError, Response};

/// Errors of direct mode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectError {
    /// Creating the queue pair or pool failed.
    #[error("setting up a direct-mode queue pair failed")]
    Setup(#[source] DriverError),
    /// Creating the ring or pool on an io_uring namespace failed.
    #[error("setting up a direct-mode io_uring queue failed")]
    UringSetup(#[source] UringError),
    /// Connecting the queue or making the pool of an NVMe/TCP controller
    /// failed.
    #[error("setting up a direct-mode NVMe/TCP queue failed")]
    TcpSetup(#[source] nvme_engine::tcp::TcpError),
    /// The pool could not serve a buffer.
    #[error("allocating a DMA buffer failed")]
    Dma(#[from] DmaError),
    /// Deleting the queue pair failed and the controller could not be
    /// reset. Every request that was outstanding has still been answered
    /// through the callback of [`DirectQueue::delete_with`]; buffers the
    /// device may still write come back quarantined (never reused).
    #[error(
        "deleting the direct-mode queue pair failed and the controller could not be reset; every \
         command on it was answered, and buffers the device may still write are quarantined"
    )]
    Delete(#[source] DriverError),
}

/// [`DirectQueue::delete`] failed: the queue pair could not be deleted.
/// The outstanding requests are still answered, in `answered` (kept apart
/// from [`DirectError`] because buffers are not `Sync`).
#[derive(Debug, thiserror::Error)]
#[error(
    "deleting the direct-mode queue pair failed; {} outstanding request(s) were answered, those \
     the device still held with an error and without their buffers — reset the controller \
     before reusing those blocks",
    answered.len()
)]
pub struct DeleteFailed {
    /// What the driver reported.
    #[source]
    pub source: DriverError,
    /// The responses of the requests that were outstanding.
    pub answered: Vec<Response>,
}

/// What `submit` did with a request it could not put on the queue.
#[derive(Debug)]
pub enum DirectSubmit {
    /// The queue is full: the request comes back untouched; poll, then retry.
    QueueFull(Request),
    /// The request can never be submitted: here is its response (the error
    /// and the buffer).
    Failed(Response),
}

/// A queue pair and a DMA pool owned by the calling thread.
pub struct DirectQueue<D: Attach> {
    controller: D::Handle,
    controller_index: usize,
    qp: QueuePair<D::Transport>,
    pool: DmaPool,
}

/// A set-up failure of either transport as a [`DirectError`].
fn setup_error(e: impl Into<AttachError>) -> DirectError {
    match e.into() {
        AttachError::Driver(e) => DirectError::Setup(e),
        AttachError::Uring(e) => DirectError::UringSetup(e),
        AttachError::Tcp(e) => DirectError::TcpSetup(e),
    }
}

impl<D: Attach> std::fmt::Debug for DirectQueue<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectQueue")
            .field("qid", &self.qp.qid())
            .field("outstanding", &self.qp.outstanding())
            .finish()
    }
}

impl<D: Device> DirectQueue<D> {
    /// Create a queue pair (on this thread) and a pool of `pool_bytes`.
    /// Requests must name controller index 0.
    pub fn new(
        controller: &Controller<D>,
        opts: QueuePairOptions,
        pool_bytes: usize,
    ) -> Result<Self, DirectError> {
        let qp = controller
            .create_io_qpair(opts)
            .map_err(DirectError::Setup)?;
        let pool = controller
            .create_pool(pool_bytes)
            .map_err(DirectError::Setup)?;
        Ok(DirectQueue {
            controller: controller.clone(),
            controller_index: 0,
            qp,
            pool,
        })
    }
}

impl DirectQueue<Uring> {
    /// Create a ring of `entries` (or the default) on this thread over an
    /// io_uring namespace, and a pool of `pool_bytes` registered with it.
    /// Requests must name controller index 0.
    pub fn new_uring(
        device: &UringNamespace,
        entries: Option<u16>,
        pool_bytes: usize,
    ) -> Result<Self, DirectError> {
        Self::create(device, entries, pool_bytes)
    }
}

impl DirectQueue<Tcp> {
    /// Connect an I/O queue of `entries` (or the controller's option) on
    /// this thread, and a pool of `pool_bytes` for its buffers. Requests
    /// must name controller index 0.
    pub fn new_tcp(
        controller: &TcpController,
        entries: Option<u16>,
        pool_bytes: usize,
    ) -> Result<Self, DirectError> {
        Self::create(controller, entries, pool_bytes)
    }
}

impl<D: Attach> DirectQueue<D> {
    /// Create a queue of `entries` (or the default) on this thread, over
    /// either transport, and a pool of `pool_bytes` for its buffers.
    /// Requests must name controller index 0.
    pub fn create(
        handle: &D::Handle,
        entries: Option<u16>,
        pool_bytes: usize,
    ) -> Result<Self, DirectError> {
        let mut pool = D::create_pool(handle, pool_bytes).map_err(setup_error)?;
        let qp = D::create_queue(handle, entries, &mut pool).map_err(setup_error)?;
        Ok(DirectQueue {
            controller: handle.clone(),
            controller_index: 0,
            qp,
            pool,
        })
    }

    /// A DMA buffer of `len` bytes.
    pub fn alloc(&mut self, len: usize) -> Result<DmaBuf, DirectError> {
        Ok(self.pool.alloc(len)?)
    }

    /// Return a buffer to the pool.
    pub fn free(&mut self, buf: DmaBuf) -> Result<(), DirectError> {
        Ok(self.pool.free(buf)?)
    }

    /// Put a request on the queue (the doorbell is rung by [`DirectQueue::poll`]).
    /// The request's token is used as the command's token.
    pub fn submit(&mut self, request: Request) -> Result<(), DirectSubmit> {
        if request.controller != self.controller_index {
            let index = request.controller;
            let error = RequestError::NoSuchController { index, count: 1 };
            return Err(DirectSubmit::Failed(refused(request, error)));
        }
        let token = request.token;
        match issue::<D>(
            &self.controller,
            self.controller_index,
            &mut self.qp,
            request,
            token,
        ) {
            Ok(()) => Ok(()),
            Err(IssueError::QueueFull(r)) => Err(DirectSubmit::QueueFull(r)),
            Err(IssueError::Failed { request, error }) => {
                Err(DirectSubmit::Failed(refused(request, error)))
            }
        }
    }

    /// Ring the doorbell for what was submitted, then reap up to `max`
    /// completions, calling `f` for each. Returns how many.
    pub fn poll<F: FnMut(Response)>(&mut self, max: usize, mut f: F) -> usize {
        let index = self.controller_index;
        self.qp.ring_doorbell();
        self.qp
            .process_completions(max, |c| f(completed(index, c.token, c)))
    }

    /// Check deadlines as of `now` (see `IoQueuePair::check_timeouts`).
    /// Call it every few milliseconds while I/O is outstanding: without it
    /// a lost completion is never detected. May block while the controller
    /// recovers. Timed-out requests are answered by [`DirectQueue::poll`].
    pub fn check_timeouts(&mut self, now: std::time::Instant) -> usize {
        self.qp.check_timeouts(now)
    }

    /// Commands submitted and not yet reaped.
    pub fn outstanding(&self) -> usize {
        self.qp.outstanding()
    }

    /// The underlying queue pair, for anything this layer does not cover.
    pub fn queue_pair(&mut self) -> &mut QueuePair<D::Transport> {
        &mut self.qp
    }

    /// The pool, for anything this layer does not cover.
    pub fn pool(&mut self) -> &mut DmaPool {
        &mut self.pool
    }

    /// Delete the queue pair, answering every request still outstanding
    /// exactly once, and return those responses (see
    /// [`DirectQueue::delete_with`]).
    pub fn delete(self) -> Result<Vec<Response>, DeleteFailed> {
        let mut answered = Vec::with_capacity(self.qp.outstanding());
        match self.qp_delete(|r| answered.push(r)) {
            Ok(()) => Ok(answered),
            Err(source) => Err(DeleteFailed { source, answered }),
        }
    }

    /// Delete the queue pair, calling `f` once for every request still
    /// outstanding: with its own result when the device completes it while
    /// the queue drains (up to the admin timeout); once the controller
    /// deleted the queue, which aborts what it still held, with `Command
    /// Aborted due to SQ Deletion` — both with the buffer. When the device
    /// does not delete the queue, the driver resets the controller (the
    /// same answers); when that fails too, the buffers come back
    /// quarantined and this returns [`DirectError::Delete`].
    /// [`RequestError::QueueNotDeleted`] without a buffer answers a request
    /// the driver left unanswered, which it never should.
    ///
    /// Dropping a `DirectQueue` deletes the queue the same way but has
    /// nobody to answer: call this (or [`DirectQueue::delete`]) when
    /// requests may be outstanding.
    pub fn delete_with<F: FnMut(Response)>(self, f: F) -> Result<(), DirectError> {
        self.qp_delete(f).map_err(DirectError::Delete)
    }

    fn qp_delete<F: FnMut(Response)>(self, mut f: F) -> Result<(), DriverError> {
        let index = self.controller_index;
        // Tokens are the caller's and may repeat: count them.
        let mut pending: HashMap<u64, usize> = HashMap::new();
        for t in self.qp.outstanding_tokens() {
            *pending.entry(t).or_default() += 1;
        }
        let deleted = self.qp.delete_with(|c| {
            if let Some(n) = pending.get_mut(&c.token) {
                *n -= 1;
            }
            f(completed(index, c.token, c))
        });
        match deleted {
            Ok(()) => Ok(()),
            Err(source) => {
                for (token, n) in pending {
                    for _ in 0..n {
                        f(not_deleted(index, token));
                    }
                }
                Err(source)
            }
        }
    }
}
