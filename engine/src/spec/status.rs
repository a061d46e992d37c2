//! Completion status field: status code type, status code, and their names
//! (NVMe Base 2.0 §4.6.1, NVM Command Set 1.0 §4.1.1).

use std::fmt;

/// SCT — status code type (3 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatusCodeType(pub u8);

impl StatusCodeType {
    /// Generic command status.
    pub const GENERIC: Self = Self(0);
    /// Command specific status.
    pub const COMMAND_SPECIFIC: Self = Self(1);
    /// Media and data integrity errors.
    pub const MEDIA: Self = Self(2);
    /// Path related status.
    pub const PATH: Self = Self(3);
    /// Vendor specific.
    pub const VENDOR: Self = Self(7);
}

/// The 15-bit status field of a completion: SC 7:0, SCT 10:8, CRD 12:11,
/// M 13, DNR 14 (bit positions relative to the field, phase excluded).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(u16);

/// Generic status codes (SCT 0h).
pub mod generic {
    /// Successful Completion.
    pub const SUCCESS: u8 = 0x00;
    /// Invalid Command Opcode.
    pub const INVALID_OPCODE: u8 = 0x01;
    /// Invalid Field in Command.
    pub const INVALID_FIELD: u8 = 0x02;
    /// Command ID Conflict.
    pub const CID_CONFLICT: u8 = 0x03;
    /// Data Transfer Error.
    pub const DATA_TRANSFER_ERROR: u8 = 0x04;
    /// Commands Aborted due to Power Loss Notification.
    pub const ABORTED_POWER_LOSS: u8 = 0x05;
    /// Internal Error.
    pub const INTERNAL_ERROR: u8 = 0x06;
    /// Command Abort Requested.
    pub const ABORT_REQUESTED: u8 = 0x07;
    /// Command Aborted due to SQ Deletion.
    pub const ABORTED_SQ_DELETION: u8 = 0x08;
    /// Command Aborted due to Failed Fused Command.
    pub const ABORTED_FAILED_FUSED: u8 = 0x09;
    /// Command Aborted due to Missing Fused Command.
    pub const ABORTED_MISSING_FUSED: u8 = 0x0A;
    /// Invalid Namespace or Format.
    pub const INVALID_NAMESPACE: u8 = 0x0B;
    /// Command Sequence Error.
    pub const COMMAND_SEQUENCE_ERROR: u8 = 0x0C;
    /// Invalid SGL Segment Descriptor.
    pub const INVALID_SGL_SEGMENT_DESCRIPTOR: u8 = 0x0D;
    /// Invalid Number of SGL Descriptors.
    pub const INVALID_SGL_DESCRIPTOR_COUNT: u8 = 0x0E;
    /// Data SGL Length Invalid.
    pub const DATA_SGL_LENGTH_INVALID: u8 = 0x0F;
    /// Metadata SGL Length Invalid.
    pub const METADATA_SGL_LENGTH_INVALID: u8 = 0x10;
    /// SGL Descriptor Type Invalid.
    pub const SGL_DESCRIPTOR_TYPE_INVALID: u8 = 0x11;
    /// PRP Offset Invalid.
    pub const INVALID_PRP_OFFSET: u8 = 0x13;
    /// SGL Offset Invalid.
    pub const SGL_OFFSET_INVALID: u8 = 0x16;
    /// SGL Data Block Granularity Invalid.
    pub const SGL_DATA_BLOCK_GRANULARITY_INVALID: u8 = 0x1E;
    /// LBA Out of Range.
    pub const LBA_OUT_OF_RANGE: u8 = 0x80;
    /// Capacity Exceeded.
    pub const CAPACITY_EXCEEDED: u8 = 0x81;
    /// Namespace Not Ready.
    pub const NAMESPACE_NOT_READY: u8 = 0x82;
}

/// Command specific status codes (SCT 1h).
pub mod command_specific {
    /// Completion Queue Invalid.
    pub const INVALID_CQ: u8 = 0x00;
    /// Invalid Queue Identifier.
    pub const INVALID_QUEUE_ID: u8 = 0x01;
    /// Invalid Queue Size.
    pub const INVALID_QUEUE_SIZE: u8 = 0x02;
    /// Abort Command Limit Exceeded.
    pub const ABORT_LIMIT_EXCEEDED: u8 = 0x03;
    /// Invalid Log Page.
    pub const INVALID_LOG_PAGE: u8 = 0x09;
    /// Invalid Queue Deletion.
    pub const INVALID_QUEUE_DELETION: u8 = 0x0C;
    /// Feature Identifier Not Saveable.
    pub const FEATURE_NOT_SAVEABLE: u8 = 0x0D;
    /// Feature Not Changeable.
    pub const FEATURE_NOT_CHANGEABLE: u8 = 0x0E;
    /// Asynchronous Event Request Limit Exceeded.
    pub const ASYNC_EVENT_LIMIT_EXCEEDED: u8 = 0x05;
    /// Conflicting Attributes (NVM command set).
    pub const CONFLICTING_ATTRIBUTES: u8 = 0x80;
    /// Invalid Protection Information (NVM command set): PRINFO, EILBRT or
    /// the namespace's protection settings do not fit together.
    pub const INVALID_PROTECTION_INFORMATION: u8 = 0x81;
    /// Attempted Write to Read Only Range (NVM command set).
    pub const WRITE_TO_READ_ONLY_RANGE: u8 = 0x82;
}

/// Media and data integrity errors (SCT 2h).
pub mod media {
    /// Write Fault.
    pub const WRITE_FAULT: u8 = 0x80;
    /// Unrecovered Read Error.
    pub const UNRECOVERED_READ_ERROR: u8 = 0x81;
    /// End-to-end Guard Check Error.
    pub const GUARD_CHECK_ERROR: u8 = 0x82;
    /// End-to-end Application Tag Check Error.
    pub const APP_TAG_CHECK_ERROR: u8 = 0x83;
    /// End-to-end Reference Tag Check Error.
    pub const REF_TAG_CHECK_ERROR: u8 = 0x84;
    /// Compare Failure.
    pub const COMPARE_FAILURE: u8 = 0x85;
    /// Access Denied.
    pub const ACCESS_DENIED: u8 = 0x86;
    /// Deallocated or Unwritten Logical Block.
    pub const DEALLOCATED_OR_UNWRITTEN: u8 = 0x87;
}

impl Status {
    /// Successful Completion.
    pub const SUCCESS: Self = Self(0);

    /// A status from its type and code, CRD/M/DNR clear.
    pub const fn new(sct: StatusCodeType, sc: u8) -> Self {
        Self(sc as u16 | ((sct.0 as u16 & 7) << 8))
    }
    /// A status from the raw 15-bit field (completion DW3 bits 31:17).
    pub const fn from_field(field: u16) -> Self {
        Self(field & 0x7fff)
    }
    /// The raw 15-bit field.
    pub const fn field(self) -> u16 {
        self.0
    }
    /// SC — status code.
    pub const fn sc(self) -> u8 {
        self.0 as u8
    }
    /// SCT — status code type.
    pub const fn sct(self) -> StatusCodeType {
        StatusCodeType(((self.0 >> 8) & 7) as u8)
    }
    /// CRD — command retry delay selector.
    pub const fn crd(self) -> u8 {
        ((self.0 >> 11) & 3) as u8
    }
    /// M — more information in the Error Information log.
    pub const fn more(self) -> bool {
        self.0 & (1 << 13) != 0
    }
    /// DNR — do not retry.
    pub const fn dnr(self) -> bool {
        self.0 & (1 << 14) != 0
    }
    /// This status with DNR set or cleared.
    pub const fn with_dnr(self, dnr: bool) -> Self {
        if dnr {
            Self(self.0 | 1 << 14)
        } else {
            Self(self.0 & !(1 << 14))
        }
    }
    /// This status with M set or cleared.
    pub const fn with_more(self, more: bool) -> Self {
        if more {
            Self(self.0 | 1 << 13)
        } else {
            Self(self.0 & !(1 << 13))
        }
    }
    /// Whether SCT and SC say success (CRD/M/DNR ignored).
    pub const fn is_success(self) -> bool {
        self.0 & 0x7ff == 0
    }
    /// Whether type and code equal `other`'s, ignoring CRD/M/DNR.
    pub const fn code_eq(self, other: Status) -> bool {
        self.0 & 0x7ff == other.0 & 0x7ff
    }

    /// The specification's name for this status, or `None` if unknown.
    pub const fn name(self) -> Option<&'static str> {
        let sc = self.sc();
        Some(match self.sct().0 {
            0 => match sc {
                0x00 => "Successful Completion",
                0x01 => "Invalid Command Opcode",
                0x02 => "Invalid Field in Command",
                0x03 => "Command ID Conflict",
                0x04 => "Data Transfer Error",
                0x05 => "Commands Aborted due to Power Loss Notification",
                0x06 => "Internal Error",
                0x07 => "Command Abort Requested",
                0x08 => "Command Aborted due to SQ Deletion",
                0x09 => "Command Aborted due to Failed Fused Command",
                0x0A => "Command Aborted due to Missing Fused Command",
                0x0B => "Invalid Namespace or Format",
                0x0C => "Command Sequence Error",
                0x0D => "Invalid SGL Segment Descriptor",
                0x0E => "Invalid Number of SGL Descriptors",
                0x0F => "Data SGL Length Invalid",
                0x10 => "Metadata SGL Length Invalid",
                0x11 => "SGL Descriptor Type Invalid",
                0x12 => "Invalid Use of Controller Memory Buffer",
                0x13 => "PRP Offset Invalid",
                0x14 => "Atomic Write Unit Exceeded",
                0x15 => "Operation Denied",
                0x16 => "SGL Offset Invalid",
                0x18 => "Host Identifier Inconsistent Format",
                0x19 => "Keep Alive Timer Expired",
                0x1A => "Keep Alive Timeout Invalid",
                0x1B => "Command Aborted due to Preempt and Abort",
                0x1C => "Sanitize Failed",
                0x1D => "Sanitize In Progress",
                0x1E => "SGL Data Block Granularity Invalid",
                0x1F => "Command Not Supported for Queue in CMB",
                0x20 => "Namespace is Write Protected",
                0x21 => "Command Interrupted",
                0x22 => "Transient Transport Error",
                0x80 => "LBA Out of Range",
                0x81 => "Capacity Exceeded",
                0x82 => "Namespace Not Ready",
                0x83 => "Reservation Conflict",
                0x84 => "Format In Progress",
                _ => return None,
            },
            1 => match sc {
                0x00 => "Completion Queue Invalid",
                0x01 => "Invalid Queue Identifier",
                0x02 => "Invalid Queue Size",
                0x03 => "Abort Command Limit Exceeded",
                0x05 => "Asynchronous Event Request Limit Exceeded",
                0x06 => "Invalid Firmware Slot",
                0x07 => "Invalid Firmware Image",
                0x08 => "Invalid Interrupt Vector",
                0x09 => "Invalid Log Page",
                0x0A => "Invalid Format",
                0x0B => "Firmware Activation Requires Conventional Reset",
                0x0C => "Invalid Queue Deletion",
                0x0D => "Feature Identifier Not Saveable",
                0x0E => "Feature Not Changeable",
                0x0F => "Feature Not Namespace Specific",
                0x10 => "Firmware Activation Requires NVM Subsystem Reset",
                0x11 => "Firmware Activation Requires Controller Level Reset",
                0x18 => "Namespace Already Attached",
                0x19 => "Namespace Is Private",
                0x1A => "Namespace Not Attached",
                0x1C => "Controller List Invalid",
                0x80 => "Conflicting Attributes",
                0x81 => "Invalid Protection Information",
                0x82 => "Attempted Write to Read Only Range",
                _ => return None,
            },
            2 => match sc {
                0x80 => "Write Fault",
                0x81 => "Unrecovered Read Error",
                0x82 => "End-to-end Guard Check Error",
                0x83 => "End-to-end Application Tag Check Error",
                0x84 => "End-to-end Reference Tag Check Error",
                0x85 => "Compare Failure",
                0x86 => "Access Denied",
                0x87 => "Deallocated or Unwritten Logical Block",
                _ => return None,
            },
            3 => match sc {
                0x00 => "Internal Path Error",
                0x01 => "Asymmetric Access Persistent Loss",
                0x02 => "Asymmetric Access Inaccessible",
                0x03 => "Asymmetric Access Transition",
                0x60 => "Controller Pathing Error",
                0x70 => "Host Pathing Error",
                0x71 => "Command Aborted By Host",
                _ => return None,
            },
            _ => return None,
        })
    }
}

impl fmt::Display for Status {
    /// `LBA Out of Range (SCT 0h, SC 80h)`, with `, DNR` when do-not-retry is set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dnr = if self.dnr() { ", DNR" } else { "" };
        match self.name() {
            Some(name) => write!(
                f,
                "{name} (SCT {:X}h, SC {:02X}h{dnr})",
                self.sct().0,
                self.sc()
            ),
            None => write!(
                f,
                "Unknown Status (SCT {:X}h, SC {:02X}h{dnr})",
                self.sct().0,
                self.sc()
            ),
        }
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_match_the_spec() {
        let s = Status::new(StatusCodeType::GENERIC, generic::LBA_OUT_OF_RANGE);
        assert_eq!(s.to_string(), "LBA Out of Range (SCT 0h, SC 80h)");
        let s = Status::new(
            StatusCodeType::COMMAND_SPECIFIC,
            command_specific::INVALID_QUEUE_ID,
        )
        .with_dnr(true);
        assert_eq!(
            s.to_string(),
            "Invalid Queue Identifier (SCT 1h, SC 01h, DNR)"
        );
        let s = Status::new(StatusCodeType::MEDIA, media::UNRECOVERED_READ_ERROR);
        assert_eq!(s.to_string(), "Unrecovered Read Error (SCT 2h, SC 81h)");
        let s = Status::new(StatusCodeType::MEDIA, media::REF_TAG_CHECK_ERROR);
        assert_eq!(
            s.to_string(),
            "End-to-end Reference Tag Check Error (SCT 2h, SC 84h)"
        );
        let s = Status::new(
            StatusCodeType::COMMAND_SPECIFIC,
            command_specific::INVALID_PROTECTION_INFORMATION,
        );
        assert_eq!(s.name(), Some("Invalid Protection Information"));
        let s = Status::new(StatusCodeType::GENERIC, generic::ABORTED_MISSING_FUSED);
        assert_eq!(
            s.name(),
            Some("Command Aborted due to Missing Fused Command")
        );
        let s = Status::new(StatusCodeType::GENERIC, generic::DATA_SGL_LENGTH_INVALID);
        assert_eq!(s.name(), Some("Data SGL Length Invalid"));
        let s = Status::new(StatusCodeType::VENDOR, 0xC3);
        assert_eq!(s.to_string(), "Unknown Status (SCT 7h, SC C3h)");
    }

    #[test]
    fn status_bits_decode_independently() {
        let s = Status::from_field(0x7fff);
        assert_eq!(s.sc(), 0xff);
        assert_eq!(s.sct().0, 7);
        assert_eq!(s.crd(), 3);
        assert!(s.more());
        assert!(s.dnr());
        assert!(!s.is_success());
        assert!(Status::SUCCESS.with_dnr(true).is_success());
        assert!(Status::SUCCESS.with_more(true).more());
        assert!(s.with_dnr(false).code_eq(s));
        assert!(!s.with_dnr(false).dnr());
    }
}
