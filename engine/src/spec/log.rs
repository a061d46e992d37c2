//! Log pages (NVMe Base 2.0 §5.16): identifiers, Error Information,
//! SMART / Health Information and the Changed Namespace List.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use super::status::Status;

/// Log page identifiers (Get Log Page CDW10.LID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LogId(pub u8);

impl LogId {
    /// Error Information.
    pub const ERROR_INFORMATION: Self = Self(0x01);
    /// SMART / Health Information.
    pub const SMART_HEALTH: Self = Self(0x02);
    /// Firmware Slot Information.
    pub const FIRMWARE_SLOT: Self = Self(0x03);
    /// Changed Namespace List.
    pub const CHANGED_NAMESPACE_LIST: Self = Self(0x04);
}

/// Changed Namespace List log (04h), 4096 bytes: the NSIDs whose Identify
/// Namespace data changed (attached, detached, resized, reformatted) since
/// the log was last read, in increasing order and zero-terminated; when more
/// than 1024 changed, the first entry is FFFFFFFFh and the rest are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ChangedNamespaceList {
    /// The entries.
    pub ids: [U32; 1024],
}

const _: () = assert!(size_of::<ChangedNamespaceList>() == 4096);

/// What a Changed Namespace List reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangedNamespaces {
    /// These NSIDs changed (possibly none).
    List(Vec<u32>),
    /// More than 1024 namespaces changed: re-read every namespace.
    Overflow,
}

impl ChangedNamespaceList {
    /// An empty list.
    pub fn zeroed() -> Self {
        <Self as FromZeros>::new_zeroed()
    }
    /// The changed NSIDs up to the first zero, or `Overflow`.
    pub fn changes(&self) -> ChangedNamespaces {
        if self.ids[0].get() == u32::MAX {
            return ChangedNamespaces::Overflow;
        }
        ChangedNamespaces::List(
            self.ids
                .iter()
                .map(|n| n.get())
                .take_while(|&n| n != 0)
                .collect(),
        )
    }
}

/// One Error Information log entry, 64 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ErrorInformation {
    /// Error count: a unique, incrementing identifier; 0 = empty entry.
    pub error_count: U64,
    /// Submission queue ID of the failed command.
    pub sqid: U16,
    /// Command ID of the failed command.
    pub cid: U16,
    /// Status field (bit 0 phase tag, 15:1 status).
    pub status: U16,
    /// Parameter error location.
    pub param_error_location: U16,
    /// First LBA that experienced the error.
    pub lba: U64,
    /// Namespace of the error.
    pub nsid: U32,
    /// Vendor specific information available (log page id).
    pub vs: u8,
    /// Transport type.
    pub trtype: u8,
    /// Reserved.
    pub rsvd30: [u8; 2],
    /// Command specific information.
    pub csi: U64,
    /// Transport type specific information.
    pub trtype_specific: U16,
    /// Reserved.
    pub rsvd42: [u8; 22],
}

const _: () = assert!(size_of::<ErrorInformation>() == 64);

impl ErrorInformation {
    /// An empty entry.
    pub fn zeroed() -> Self {
        <Self as FromZeros>::new_zeroed()
    }
    /// The status of the failed command.
    pub fn status(&self) -> Status {
        Status::from_field(self.status.get() >> 1)
    }
}

/// SMART / Health Information log, 512 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SmartHealth {
    /// Critical warning bits.
    pub critical_warning: u8,
    /// Composite temperature (K).
    pub composite_temperature: U16,
    /// Available spare (%).
    pub available_spare: u8,
    /// Available spare threshold (%).
    pub available_spare_threshold: u8,
    /// Percentage used.
    pub percentage_used: u8,
    /// Endurance group critical warning summary.
    pub endurance_critical_warning: u8,
    /// Reserved.
    pub rsvd7: [u8; 25],
    /// Data units read (thousands of 512-byte units), 128-bit.
    pub data_units_read: [u8; 16],
    /// Data units written (thousands of 512-byte units), 128-bit.
    pub data_units_written: [u8; 16],
    /// Host read commands, 128-bit.
    pub host_read_commands: [u8; 16],
    /// Host write commands, 128-bit.
    pub host_write_commands: [u8; 16],
    /// Controller busy time (minutes), 128-bit.
    pub controller_busy_time: [u8; 16],
    /// Power cycles, 128-bit.
    pub power_cycles: [u8; 16],
    /// Power on hours, 128-bit.
    pub power_on_hours: [u8; 16],
    /// Unsafe shutdowns, 128-bit.
    pub unsafe_shutdowns: [u8; 16],
    /// Media and data integrity errors, 128-bit.
    pub media_errors: [u8; 16],
    /// Number of error information log entries, 128-bit.
    pub error_log_entries: [u8; 16],
    /// Warning composite temperature time (minutes).
    pub warning_temperature_time: U32,
    /// Critical composite temperature time (minutes).
    pub critical_temperature_time: U32,
    /// Temperature sensors 1..8 (K).
    pub temperature_sensors: [U16; 8],
    /// Reserved.
    pub rsvd216: [u8; 296],
}

const _: () = assert!(size_of::<SmartHealth>() == 512);
const _: () = assert!(std::mem::offset_of!(SmartHealth, data_units_read) == 32);
const _: () = assert!(std::mem::offset_of!(SmartHealth, warning_temperature_time) == 192);

impl SmartHealth {
    /// An all-zero log.
    pub fn zeroed() -> Self {
        <Self as FromZeros>::new_zeroed()
    }
}

/// Read a 128-bit little-endian counter from a log page.
pub fn u128_le(bytes: &[u8; 16]) -> u128 {
    u128::from_le_bytes(*bytes)
}

/// Encode a 128-bit little-endian counter for a log page.
pub fn to_u128_le(value: u128) -> [u8; 16] {
    value.to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_status_decode() {
        let mut s = SmartHealth::zeroed();
        s.host_read_commands = to_u128_le(1 << 70);
        assert_eq!(u128_le(&s.host_read_commands), 1 << 70);
        let mut e = ErrorInformation::zeroed();
        e.status = U16::new((0x0080 << 1) | 1);
        assert_eq!(e.status().sc(), 0x80);
    }

    #[test]
    fn changed_namespace_list_stops_at_zero_and_reports_overflow() {
        let mut l = ChangedNamespaceList::zeroed();
        assert_eq!(l.changes(), ChangedNamespaces::List(vec![]));
        l.ids[0] = U32::new(2);
        l.ids[1] = U32::new(7);
        l.ids[3] = U32::new(9);
        assert_eq!(l.changes(), ChangedNamespaces::List(vec![2, 7]));
        l.ids[0] = U32::new(u32::MAX);
        assert_eq!(l.changes(), ChangedNamespaces::Overflow);
    }
}
