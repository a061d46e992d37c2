//! The outcome of executing one command: completion dword 0 and a status
//! (NVMe Base 2.0 §4.2.3), with helpers for the error statuses the
//! emulator reports (always with Do Not Retry set).

#![forbid(unsafe_code)]

use nvme_engine::spec::status::{Status, StatusCodeType};

/// A generic-status error with DNR set.
pub(crate) fn generic_err(sc: u8) -> Status {
    Status::new(StatusCodeType::GENERIC, sc).with_dnr(true)
}

/// A command-specific-status error with DNR set.
pub(crate) fn specific_err(sc: u8) -> Status {
    Status::new(StatusCodeType::COMMAND_SPECIFIC, sc).with_dnr(true)
}

/// The outcome of executing one command.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Done {
    pub(crate) dw0: u32,
    pub(crate) status: Status,
}

impl Done {
    pub(crate) fn ok(dw0: u32) -> Self {
        Done {
            dw0,
            status: Status::SUCCESS,
        }
    }
    pub(crate) fn err(status: Status) -> Self {
        Done { dw0: 0, status }
    }
}
