//! Turning a [`Request`] into a command on a queue pair: namespace lookup
//! and the call to the driver's submit function for its operation. The
//! driver validates the request and builds PRPs; the SQ doorbell is left to
//! the caller, which rings it once per batch.
//!
//! Shared by the reactor loop and by direct mode.

#![forbid(unsafe_code)]

use crate::attach::Attach;
use nvme_engine::{LbaRange, QueuePair, SubmitErrorKind};

use crate::request::{Op, Request, RequestError};

/// Why a request did not go onto the queue.
pub(crate) enum IssueError {
    /// The queue pair is full: the request comes back whole, to retry later.
    QueueFull(Request),
    /// The request can never be submitted; it completes with this error.
    Failed {
        /// The request with its buffer (the error below is its result).
        request: Request,
        /// Why.
        error: RequestError,
    },
}

/// Why a request, submitted in place, did not go onto the queue; the
/// request keeps its buffer.
pub(crate) enum InPlaceError {
    /// The queue pair is full: retry later.
    QueueFull,
    /// The request can never be submitted; it completes with this error.
    Failed(RequestError),
}

/// Submit `req` on `qp` with the driver-side tag `tag` (the application's
/// token travels separately). Does not ring the doorbell.
#[allow(
    clippy::result_large_err,
    reason = "the request comes back by value for the backlog; boxing would allocate"
)]
#[inline]
pub(crate) fn issue<D: Attach>(
    controller: &D::Handle,
    controller_index: usize,
    qp: &mut QueuePair<D::Transport>,
    mut req: Request,
    tag: u64,
) -> Result<(), IssueError> {
    match issue_in_place::<D>(controller, controller_index, qp, &mut req, tag) {
        Ok(()) => Ok(()),
        Err(InPlaceError::QueueFull) => Err(IssueError::QueueFull(req)),
        Err(InPlaceError::Failed(error)) => Err(IssueError::Failed {
            request: req,
            error,
        }),
    }
}

/// [`issue`] on a request that stays where it is (in a ring slot): only
/// its buffer moves, to the driver; on failure the buffer is put back.
pub(crate) fn issue_in_place<D: Attach>(
    controller: &D::Handle,
    controller_index: usize,
    qp: &mut QueuePair<D::Transport>,
    req: &mut Request,
    tag: u64,
) -> Result<(), InPlaceError> {
    let Some(ns) = D::namespace(controller, req.nsid) else {
        return Err(InPlaceError::Failed(RequestError::NoSuchNamespace {
            controller: controller_index,
            nsid: req.nsid,
        }));
    };
    let result = match req.op {
        Op::Read | Op::Write { .. } => {
            let Some(buf) = req.buf.take() else {
                return Err(InPlaceError::Failed(RequestError::MissingBuffer {
                    op: req.op,
                }));
            };
            match req.op {
                Op::Write { fua } => qp.write(ns, req.lba, buf, fua, tag),
                _ => qp.read(ns, req.lba, buf, tag),
            }
        }
        // The operations without data refuse a buffer rather than drop it:
        // it is handed back with the answer.
        op if req.buf.is_some() => {
            return Err(InPlaceError::Failed(RequestError::UnexpectedBuffer { op }));
        }
        Op::Flush => qp.flush(ns, tag),
        Op::WriteZeroes { blocks, deallocate } => {
            qp.write_zeroes(ns, req.lba, blocks, deallocate, tag)
        }
        Op::Deallocate { blocks } => {
            let range = [LbaRange {
                lba: req.lba,
                blocks,
            }];
            qp.deallocate(ns, &range, tag)
        }
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            if e.buf.is_some() {
                req.buf = e.buf;
            }
            if matches!(e.kind, SubmitErrorKind::QueueFull { .. }) {
                Err(InPlaceError::QueueFull)
            } else {
                Err(InPlaceError::Failed(RequestError::from_submit(
                    controller_index,
                    e.kind,
                )))
            }
        }
    }
}
