//! What an io_uring completion of `NVME_URING_CMD_IO` says, in the terms of
//! the command-level seam ([`crate::driver::transport`]): `res < 0` is a
//! negative errno, `res >= 0` the NVMe status field, and the first extra
//! dword of the 32-byte CQE holds completion DW0.

#![forbid(unsafe_code)]

use crate::driver::transport::{CommandOutcome, TransportFailure};
use crate::spec::status::Status;

/// The outcome an io_uring completion of `NVME_URING_CMD_IO` describes:
/// `res < 0` is a negative errno (`-ECANCELED` and `-EINTR` are
/// cancellations), `res > 0` the NVMe status field (the 15-bit field without
/// the phase tag), and the first extra dword of the 32-byte CQE holds
/// completion DW0 (the kernel stores the 64-bit result).
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
            uring_outcome(0, 0xffff_ffff_0000_0007),
            CommandOutcome::Completed {
                dw0: 7,
                status: Status::from_field(0)
            }
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
        match uring_outcome(dnr.field() as i32, 0) {
            CommandOutcome::Completed { status, .. } => {
                assert!(status.dnr());
                assert_eq!(status, dnr);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn negative_res_is_an_errno_and_ecanceled_or_eintr_a_cancellation() {
        assert_eq!(
            uring_outcome(-libc::ENODEV, 0),
            CommandOutcome::Failed(TransportFailure::Errno(libc::ENODEV))
        );
        assert_eq!(
            uring_outcome(-libc::ECANCELED, 0),
            CommandOutcome::Failed(TransportFailure::Cancelled)
        );
        assert_eq!(
            uring_outcome(-libc::EINTR, 0),
            CommandOutcome::Failed(TransportFailure::Cancelled)
        );
        assert_eq!(
            uring_outcome(-libc::EIO, 0),
            CommandOutcome::Failed(TransportFailure::Errno(libc::EIO))
        );
    }
}
