//! Turning a [`Request`] into a command on a queue pair: namespace lookup
//! and the call to the driver's submit function for its operation. The
//! driver validates the request and builds PRPs; the SQ doorbell is left to
//! the caller, which rings it once per batch.
//!
//! Shared by the reactor loop and by direct mode.

#![forbid(unsafe_code)]

use nvme_engine::Device;
use nvme_engine::driver::{Controller, IoQueuePair, LbaRange, SubmitErrorKind};

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

/// Submit `req` on `qp` with the driver-side tag `tag` (the application's
/// token travels separately). Does not ring the doorbell.
#[allow(
    clippy::result_large_err,
    reason = "the request comes back by value for the backlog; boxing would allocate"
)]
pub(crate) fn issue<D: Device>(
    controller: &Controller<D>,
    controller_index: usize,
    qp: &mut IoQueuePair<D>,
    mut req: Request,
    tag: u64,
) -> Result<(), IssueError> {
    let Some(ns) = controller.namespace(req.nsid) else {
        let error = RequestError::NoSuchNamespace {
            controller: controller_index,
            nsid: req.nsid,
        };
        return Err(IssueError::Failed {
            request: req,
            error,
        });
    };
    let result = match req.op {
        Op::Read | Op::Write { .. } => {
            let Some(buf) = req.buf.take() else {
                let error = RequestError::MissingBuffer { op: req.op };
                return Err(IssueError::Failed {
                    request: req,
                    error,
                });
            };
            match req.op {
                Op::Write { fua } => qp.write(ns, req.lba, buf, fua, tag),
                _ => qp.read(ns, req.lba, buf, tag),
            }
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
                Err(IssueError::QueueFull(req))
            } else {
                Err(IssueError::Failed {
                    request: req,
                    error: RequestError::from_submit(controller_index, e.kind),
                })
            }
        }
    }
}
