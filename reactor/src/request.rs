//! The messages between application threads and reactors: an I/O
//! [`Request`] (NVM Command Set §3: Read, Write, Flush, Write Zeroes,
//! Dataset Management/Deallocate) and its [`Response`].
//!
//! Requests and responses own their data buffer, so a buffer travels with
//! its I/O: the application allocates it, sends it, and gets it back in the
//! response, whatever the outcome.

#![forbid(unsafe_code)]

use std::time::Duration;

use nvme_engine::dma::DmaBuf;
use nvme_engine::{DeviceGone, IoError, SubmitErrorKind};

/// The operation of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Read into the request's buffer (its window length sets the size).
    Read,
    /// Write the request's buffer.
    Write {
        /// Force Unit Access: complete only once the data is on media.
        fua: bool,
    },
    /// Flush the volatile write cache.
    Flush,
    /// Write Zeroes over `blocks` blocks starting at the request's LBA.
    WriteZeroes {
        /// Number of blocks (one-based).
        blocks: u32,
        /// Also deallocate the blocks (DEAC).
        deallocate: bool,
    },
    /// Deallocate (trim) `blocks` blocks starting at the request's LBA.
    Deallocate {
        /// Number of blocks (one-based).
        blocks: u32,
    },
}

/// One I/O request from an application thread.
#[derive(Debug)]
pub struct Request {
    /// What to do.
    pub op: Op,
    /// Index of the controller in the list the reactor set was started with.
    pub controller: usize,
    /// Namespace ID.
    pub nsid: u32,
    /// Starting LBA (ignored by Flush).
    pub lba: u64,
    /// Data buffer: required by Read and Write, refused by the others;
    /// returned in the response whatever the outcome.
    pub buf: Option<DmaBuf>,
    /// The application's tag, returned in the response.
    pub token: u64,
}

impl Request {
    /// A read of `buf.len()` bytes at `lba`.
    pub fn read(controller: usize, nsid: u32, lba: u64, buf: DmaBuf, token: u64) -> Self {
        Request {
            op: Op::Read,
            controller,
            nsid,
            lba,
            buf: Some(buf),
            token,
        }
    }

    /// A write of `buf.len()` bytes at `lba`.
    pub fn write(
        controller: usize,
        nsid: u32,
        lba: u64,
        buf: DmaBuf,
        fua: bool,
        token: u64,
    ) -> Self {
        Request {
            op: Op::Write { fua },
            controller,
            nsid,
            lba,
            buf: Some(buf),
            token,
        }
    }

    /// A flush of the namespace.
    pub fn flush(controller: usize, nsid: u32, token: u64) -> Self {
        Request {
            op: Op::Flush,
            controller,
            nsid,
            lba: 0,
            buf: None,
            token,
        }
    }

    /// A request with no buffer (Write Zeroes, Deallocate, Flush).
    pub fn without_data(op: Op, controller: usize, nsid: u32, lba: u64, token: u64) -> Self {
        Request {
            op,
            controller,
            nsid,
            lba,
            buf: None,
            token,
        }
    }
}

/// Why a request failed.
///
/// The reliability outcomes ([`RequestError::TimedOut`],
/// [`RequestError::ControllerReset`], [`RequestError::Gone`]) name the
/// controller; see
/// `docs/GUARANTEES.md` for what each says about the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The controller completed the command with an error status (after
    /// the driver's retries, for statuses with DNR clear).
    #[error("the device failed the command: {0}")]
    Device(IoError),
    /// No completion within the queue's deadline: the command was aborted
    /// (or the controller reset) and the device is done with the buffer.
    #[error(
        "controller {controller}: no completion within {timeout:?}; the command was aborted \
         and may or may not have taken effect — re-read or rewrite its blocks, and raise \
         ReactorConfig::io_timeout if the device is merely slow"
    )]
    TimedOut {
        /// Controller index.
        controller: usize,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// The controller's device was removed, or the controller failed and a
    /// reset did not bring it back. Requests in flight may or may not have
    /// taken effect; later ones fail at once without reaching it. The
    /// wording is the driver's ([`DeviceGone`]).
    #[error("controller {controller}: {kind}")]
    Gone {
        /// Controller index.
        controller: usize,
        /// Removed or failed.
        kind: DeviceGone,
    },
    /// The request was in flight across controller resets and ran out of
    /// retries (or is not safe to resubmit).
    #[error(
        "controller {controller} was reset while the request was in flight and its retries are \
         used up; it may or may not have taken effect — submit it again"
    )]
    ControllerReset {
        /// Controller index.
        controller: usize,
    },
    /// The driver refused the command before submitting it (bad LBA, size,
    /// alignment, unsupported operation...).
    #[error("the command was not submitted: {0}")]
    Invalid(SubmitErrorKind),
    /// The controller index is not one the reactor set was started with.
    #[error("no controller {index}: the reactor set drives {count} controller(s), indexed from 0")]
    NoSuchController {
        /// Index given.
        index: usize,
        /// Controllers attached.
        count: usize,
    },
    /// The namespace is not active on the controller.
    #[error(
        "namespace {nsid} is not an active namespace of controller {controller}; \
         list them with the identify example"
    )]
    NoSuchNamespace {
        /// Controller index.
        controller: usize,
        /// NSID given.
        nsid: u32,
    },
    /// A Read or Write came without a buffer.
    #[error("a {op:?} request needs a data buffer; allocate one with Producer::alloc")]
    MissingBuffer {
        /// The operation.
        op: Op,
    },
    /// A Flush, Write Zeroes or Deallocate came with a data buffer, which
    /// it has no use for; the buffer comes back with this answer.
    #[error(
        "a {op:?} request carries no data buffer: leave Request::buf empty (use \
         Request::flush or Request::without_data); the buffer is handed back with this answer"
    )]
    UnexpectedBuffer {
        /// The operation.
        op: Op,
    },
    /// At shutdown the device would not delete the I/O queue the command
    /// was on: the command may still execute, and the device may still
    /// write its buffer, so the buffer is not handed back.
    #[error(
        "controller {controller} did not delete its I/O queue at shutdown while this command was \
         still on it: it may or may not take effect, and its buffer is withheld because the \
         device may still write it — reset the controller (or restart the process) before \
         trusting those blocks"
    )]
    QueueNotDeleted {
        /// Controller index.
        controller: usize,
    },
    /// The reactor was shutting down when the request reached it.
    #[error("the reactor shut down before this request could be submitted; nothing was written")]
    ShutDown,
}

impl RequestError {
    /// The error for a command of controller `controller` that the driver
    /// completed with `e`.
    pub fn from_io(controller: usize, e: IoError) -> Self {
        match e {
            IoError::TimedOut(timeout) => RequestError::TimedOut {
                controller,
                timeout,
            },
            IoError::Gone(kind) => RequestError::Gone { controller, kind },
            IoError::ControllerReset => RequestError::ControllerReset { controller },
            IoError::Rejected(kind) => RequestError::from_submit(controller, kind),
            other => RequestError::Device(other),
        }
    }

    /// The error for a request the driver refused to submit to controller
    /// `controller`.
    pub fn from_submit(controller: usize, kind: SubmitErrorKind) -> Self {
        match kind {
            SubmitErrorKind::Gone(kind) => RequestError::Gone { controller, kind },
            other => RequestError::Invalid(other),
        }
    }

    /// Whether the request may have partly or wholly taken effect even
    /// though it failed: a failed write leaves its blocks undefined. False
    /// for requests the driver or reactor refused before submission.
    pub fn outcome_unknown(&self) -> bool {
        // A removed or failed controller also refuses new requests with
        // `Gone`; those never reached it, but the caller cannot tell them
        // apart from the ones in flight, so the answer is "maybe".
        matches!(
            self,
            RequestError::Device(_)
                | RequestError::TimedOut { .. }
                | RequestError::ControllerReset { .. }
                | RequestError::Gone { .. }
                | RequestError::QueueNotDeleted { .. }
        )
    }

    /// Whether the controller behind the request is gone or failed, so
    /// that resubmitting to it is pointless until it is reset or replaced.
    pub fn controller_unusable(&self) -> bool {
        matches!(self, RequestError::Gone { .. })
    }
}

/// The outcome of a request, returned exactly once per accepted request.
#[derive(Debug)]
pub struct Response {
    /// The request's token.
    pub token: u64,
    /// Completion dword 0 on success, or why it failed.
    pub result: Result<u32, RequestError>,
    /// The request's buffer, handed back.
    pub buf: Option<DmaBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvme_engine::spec::status::{Status, StatusCodeType};

    #[test]
    fn driver_errors_map_to_request_errors_that_name_the_controller() {
        let t = Duration::from_millis(7);
        assert_eq!(
            RequestError::from_io(2, IoError::TimedOut(t)),
            RequestError::TimedOut {
                controller: 2,
                timeout: t
            }
        );
        assert_eq!(
            RequestError::from_io(1, IoError::Gone(DeviceGone::Removed)),
            RequestError::Gone {
                controller: 1,
                kind: DeviceGone::Removed
            }
        );
        assert_eq!(
            RequestError::from_io(1, IoError::ControllerReset),
            RequestError::ControllerReset { controller: 1 }
        );
        assert_eq!(
            RequestError::from_io(3, IoError::Gone(DeviceGone::Failed)),
            RequestError::Gone {
                controller: 3,
                kind: DeviceGone::Failed
            }
        );
        let s = IoError::Status(Status::new(StatusCodeType::GENERIC, 6));
        assert_eq!(RequestError::from_io(0, s), RequestError::Device(s));
        assert_eq!(
            RequestError::from_submit(4, SubmitErrorKind::Gone(DeviceGone::Removed)),
            RequestError::Gone {
                controller: 4,
                kind: DeviceGone::Removed
            }
        );
        assert_eq!(
            RequestError::from_submit(4, SubmitErrorKind::Gone(DeviceGone::Failed)),
            RequestError::Gone {
                controller: 4,
                kind: DeviceGone::Failed
            }
        );
        assert_eq!(
            RequestError::from_submit(0, SubmitErrorKind::ZeroLength),
            RequestError::Invalid(SubmitErrorKind::ZeroLength)
        );
    }

    #[test]
    fn reliability_errors_say_what_happened_and_what_to_do() {
        let cases = [
            (
                RequestError::TimedOut {
                    controller: 1,
                    timeout: Duration::from_millis(200),
                },
                "raise ReactorConfig::io_timeout",
            ),
            (
                RequestError::Gone {
                    controller: 1,
                    kind: DeviceGone::Removed,
                },
                "stop sending to it",
            ),
            (
                RequestError::ControllerReset { controller: 1 },
                "submit it again",
            ),
            (
                RequestError::Gone {
                    controller: 1,
                    kind: DeviceGone::Failed,
                },
                "Controller::reset()",
            ),
        ];
        for (e, hint) in cases {
            let text = e.to_string();
            assert!(text.contains("controller 1"), "{text}");
            assert!(text.contains(hint), "{text}");
            assert!(e.outcome_unknown());
        }
        for kind in [DeviceGone::Removed, DeviceGone::Failed] {
            let text = RequestError::Gone {
                controller: 1,
                kind,
            }
            .to_string();
            assert!(
                text.ends_with(&kind.to_string()),
                "the driver's wording: {text}"
            );
        }
        assert!(
            RequestError::Gone {
                controller: 0,
                kind: DeviceGone::Removed
            }
            .controller_unusable()
        );
        assert!(!RequestError::ControllerReset { controller: 0 }.controller_unusable());
        assert!(!RequestError::ShutDown.outcome_unknown());
    }
}
