//! The 16-byte completion queue entry (NVMe Base 2.0 §4.6).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::status::Status;

/// A completion queue entry (CQE), 16 bytes.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Completion {
    /// DW0 — command specific.
    pub dw0: u32,
    /// DW1 — command specific.
    pub dw1: u32,
    /// DW2 bits 15:0 — SQHD, the submission queue head pointer.
    pub sqhd: u16,
    /// DW2 bits 31:16 — SQID, the submission queue this command came from.
    pub sqid: u16,
    /// DW3 bits 15:0 — CID, the command identifier.
    pub cid: u16,
    /// DW3 bits 31:16 — bit 0 the phase tag, bits 15:1 the status field.
    pub status_phase: u16,
}

const _: () = assert!(size_of::<Completion>() == 16);

impl Completion {
    /// The phase tag (DW3 bit 16).
    pub const fn phase(&self) -> bool {
        self.status_phase & 1 != 0
    }
    /// The status field, without the phase tag.
    pub const fn status(&self) -> Status {
        Status::from_field(self.status_phase >> 1)
    }
    /// DW3 as one dword: CID, phase and status; the dword a poller loads first.
    pub const fn dw3(&self) -> u32 {
        self.cid as u32 | ((self.status_phase as u32) << 16)
    }
    /// Build a completion from its parts.
    pub const fn new(
        dw0: u32,
        sqhd: u16,
        sqid: u16,
        cid: u16,
        status: Status,
        phase: bool,
    ) -> Self {
        Completion {
            dw0,
            dw1: 0,
            sqhd,
            sqid,
            cid,
            status_phase: (status.field() << 1) | phase as u16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::status::StatusCodeType;

    #[test]
    fn phase_and_status_are_separate_bits() {
        let st = Status::new(StatusCodeType::GENERIC, 0x80).with_dnr(true);
        let c = Completion::new(7, 3, 1, 0x1234, st, true);
        assert!(c.phase());
        assert_eq!(c.status(), st);
        assert!(c.status().dnr());
        assert_eq!(c.dw3() & 0xffff, 0x1234);
        assert_eq!(c.dw3() >> 16 & 1, 1);
        let c0 = Completion::new(0, 0, 0, 1, Status::SUCCESS, false);
        assert!(!c0.phase());
        assert!(c0.status().is_success());
    }
}
