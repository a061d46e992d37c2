//! The command-level transport seam: what a queue pair needs from whatever
//! carries NVMe commands to a controller and brings their completions back.
//! See the module documentation of [`crate::uring`] for the design and how
//! PCIe, io_uring passthrough and NVMe/TCP each implement it.

use std::time::Duration;

use crate::driver::{DeviceGone, IoError, SubmitErrorKind};
use crate::spec::{command::Command, status::Status};

/// Which way a command's data moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataDirection {
    /// Host memory to the controller (Write, Dataset Management ranges).
    ToDevice,
    /// Controller to host memory (Read, Identify).
    FromDevice,
}

/// A command's data buffer as every transport needs it: the host address
/// (io_uring passes it to the kernel, TCP copies from and to it), the I/O
/// virtual address (PCIe builds PRPs from it), the length and the direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataRef {
    /// Host virtual address of the first byte.
    pub addr: *mut u8,
    /// The device's address of the first byte (IOVA; PCIe only).
    pub iova: u64,
    /// Bytes.
    pub len: u32,
    /// Direction.
    pub direction: DataDirection,
}

/// What became of one command, as the transport saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandOutcome {
    /// The controller completed it: completion DW0 and the status field.
    Completed {
        /// Completion DW0.
        dw0: u32,
        /// Status (success or the device's error).
        status: Status,
    },
    /// The transport failed it without a controller status: a negative
    /// errno from the kernel (io_uring), a lost connection (TCP).
    Failed(TransportFailure),
}

/// A failure below the NVMe layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportFailure {
    /// The kernel failed the command with this errno (positive value).
    Errno(i32),
    /// The command was cancelled before the controller completed it
    /// (`-ECANCELED` from io_uring; a cancelled request of the kernel's
    /// NVMe driver, `-EINTR`, after its own timeout, abort or reset).
    Cancelled,
}

/// One completion: the tag given at submission and the outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportCompletion {
    /// The tag given at submission (the driver's CID).
    pub tag: u16,
    /// What happened.
    pub outcome: CommandOutcome,
}

/// A submission the transport refused; nothing was queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitRefusal {
    /// No room for another command: reap completions first.
    Full,
    /// The data description cannot be carried (too long, misaligned,
    /// outside every registered buffer where one is required).
    BadData(&'static str),
    /// The transport is gone (device removed, ring or connection closed).
    Gone,
}

/// What a cancellation request did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelRequest {
    /// A cancellation was sent; the command's own completion still arrives
    /// through [`CommandTransport::poll`] (cancelled, or completed anyway).
    Sent,
    /// The tag is not in flight.
    NotInFlight,
    /// No room to send it now; try again after reaping.
    Busy,
}

/// A carrier of NVMe commands to one queue of one controller, owned by one
/// thread. The driver's queue pair keeps everything that does not depend on
/// the carrier (CID slab and generations, buffers, deadlines and what to do
/// when one passes, retries, namespace checks) and talks to the carrier only
/// through this trait.
pub trait CommandTransport {
    /// Commands that can be in flight at once.
    fn capacity(&self) -> usize;

    /// Commands submitted and not yet completed.
    fn in_flight(&self) -> usize;

    /// Largest data transfer one command may carry, in bytes.
    fn max_transfer(&self) -> usize;

    /// Queue `cmd` (CID, PRPs and SGLs are the transport's to fill) with
    /// its data; `tag` comes back with the completion. Nothing reaches the
    /// controller before [`CommandTransport::flush`].
    ///
    /// # Safety
    ///
    /// `data`, when given, names memory that stays valid, and that nothing
    /// else reads (for [`DataDirection::FromDevice`]) or writes, until the
    /// completion carrying `tag` has been returned by `poll`.
    unsafe fn submit(
        &mut self,
        cmd: &Command,
        data: Option<DataRef>,
        tag: u16,
    ) -> Result<(), SubmitRefusal>;

    /// Hand everything queued since the last flush to the controller, in one
    /// doorbell write or one system call; nothing when nothing is queued.
    fn flush(&mut self) -> Result<(), SubmitRefusal>;

    /// Reap at most `max` completions without blocking; returns how many
    /// were passed to `f`. Every submitted tag completes exactly once.
    fn poll<F: FnMut(TransportCompletion)>(&mut self, max: usize, f: F) -> usize;

    /// Ask for the command with `tag` to be cancelled (it passed its
    /// deadline). It still completes through `poll`, exactly once.
    fn cancel(&mut self, tag: u16) -> CancelRequest;
}

/// The engine's view of an outcome: DW0 on success, else the [`IoError`] a
/// queue pair reports. `deadline` is `Some` when the command had passed its
/// deadline and a cancellation was asked for, so a cancelled command reports
/// as timed out.
pub fn outcome_to_result(
    outcome: CommandOutcome,
    deadline: Option<Duration>,
) -> Result<u32, IoError> {
    match outcome {
        CommandOutcome::Completed { dw0, status } if status.is_success() => Ok(dw0),
        CommandOutcome::Completed { status, .. } => Err(IoError::Status(status)),
        CommandOutcome::Failed(TransportFailure::Cancelled) => match deadline {
            Some(d) => Err(IoError::TimedOut(d)),
            None => Err(IoError::ControllerReset),
        },
        CommandOutcome::Failed(TransportFailure::Errno(errno)) => Err(errno_to_io_error(errno)),
    }
}

/// How a kernel errno on a passthrough command maps onto [`IoError`].
pub fn errno_to_io_error(errno: i32) -> IoError {
    let why = match errno {
        libc::ENODEV | libc::ENXIO | libc::ESHUTDOWN => return IoError::Gone(DeviceGone::Removed),
        libc::EACCES | libc::EPERM => {
            "the kernel refused the passthrough command for lack of privilege (EACCES/EPERM): \
             CAP_SYS_ADMIN before Linux 6.2, read/write access to the node after"
        }
        libc::EINVAL => {
            "the kernel rejected the passthrough command (EINVAL): NSID of another namespace, \
             transfer over the queue's max_hw_sectors_kb, or a buffer outside the registered one"
        }
        libc::EOPNOTSUPP => "the kernel does not support this passthrough command (EOPNOTSUPP)",
        libc::EFAULT => "the kernel could not access the data buffer (EFAULT)",
        libc::ENOMEM | libc::EAGAIN | libc::EBUSY => {
            "the kernel had no resources for the command (ENOMEM/EAGAIN/EBUSY); retry it"
        }
        libc::EIO => "the kernel failed the command with an I/O error (EIO)",
        _ => "the kernel failed the passthrough command with an unexpected errno",
    };
    IoError::Rejected(SubmitErrorKind::InvalidCommand(why))
}

/// The outcome an io_uring completion of `NVME_URING_CMD_IO` describes:
/// `res < 0` is a negative errno, `res > 0` the NVMe status field (the
/// 15-bit field without the phase tag), and the first extra dword of the
/// 32-byte CQE holds completion DW0 (the kernel stores the 64-bit result).
pub fn uring_outcome(res: i32, big_cqe0: u64) -> CommandOutcome {
    if res < 0 {
        let errno = -res;
        if errno == libc::ECANCELED || errno == libc::EINTR {
            return CommandOutcome::Failed(TransportFailure::Cancelled);
        }
        return CommandOutcome::Failed(TransportFailure::Errno(errno));
    }
    CommandOutcome::Completed {
        dw0: big_cqe0 as u32,
        status: Status::from_field(res as u16),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::status::StatusCodeType;
    use crate::spec::status::generic;

    #[test]
    fn positive_res_is_the_nvme_status_and_big_cqe_is_dw0() {
        assert_eq!(
            outcome_to_result(uring_outcome(0, 0xffff_ffff_0000_0007), None),
            Ok(7)
        );
        let lba = Status::new(StatusCodeType::GENERIC, generic::LBA_OUT_OF_RANGE);
        assert_eq!(
            uring_outcome(lba.field() as i32, 0),
            CommandOutcome::Completed {
                dw0: 0,
                status: lba
            }
        );
        // DNR survives (bit 14 of the field).
        let dnr = lba.with_dnr(true);
        match outcome_to_result(uring_outcome(dnr.field() as i32, 0), None) {
            Err(IoError::Status(s)) => {
                assert!(s.dnr());
                assert_eq!(s, dnr);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn negative_res_is_an_errno_and_cancellation_is_a_timeout_past_the_deadline() {
        assert_eq!(
            outcome_to_result(uring_outcome(-libc::ENODEV, 0), None),
            Err(IoError::Gone(DeviceGone::Removed))
        );
        let d = Duration::from_millis(5);
        assert_eq!(
            outcome_to_result(uring_outcome(-libc::ECANCELED, 0), Some(d)),
            Err(IoError::TimedOut(d))
        );
        assert_eq!(
            outcome_to_result(uring_outcome(-libc::EINTR, 0), None),
            Err(IoError::ControllerReset)
        );
        match outcome_to_result(uring_outcome(-libc::EACCES, 0), None) {
            Err(IoError::Rejected(SubmitErrorKind::InvalidCommand(m))) => {
                assert!(m.contains("CAP_SYS_ADMIN"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            uring_outcome(-libc::EIO, 0),
            CommandOutcome::Failed(TransportFailure::Errno(libc::EIO))
        );
    }
}
