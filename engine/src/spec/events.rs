//! Asynchronous events (NVMe Base 2.0 §5.2): the completion dword 0 of an
//! Asynchronous Event Request — event type (bits 2:0), event information
//! (15:8) and the log page to read to clear the event (23:16) — with the
//! specification's names for the types and for each type's information
//! values.

use std::fmt;

use super::log::LogId;

/// Asynchronous event type (completion DW0 bits 2:0). Open: a device may
/// report any value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AsyncEventType(pub u8);

impl AsyncEventType {
    /// 0h: Error status.
    pub const ERROR: Self = Self(0);
    /// 1h: SMART / Health status.
    pub const SMART_HEALTH: Self = Self(1);
    /// 2h: Notice.
    pub const NOTICE: Self = Self(2);
    /// 6h: I/O command specific status.
    pub const IO_COMMAND_SPECIFIC: Self = Self(6);
    /// 7h: Vendor specific.
    pub const VENDOR: Self = Self(7);
}

/// Event information of an Error event (type 0h).
pub mod error_info {
    /// Write to Invalid Doorbell Register.
    pub const INVALID_DOORBELL_REGISTER: u8 = 0x00;
    /// Invalid Doorbell Write Value.
    pub const INVALID_DOORBELL_VALUE: u8 = 0x01;
    /// Diagnostic Failure.
    pub const DIAGNOSTIC_FAILURE: u8 = 0x02;
    /// Persistent Internal Error.
    pub const PERSISTENT_INTERNAL_ERROR: u8 = 0x03;
    /// Transient Internal Error.
    pub const TRANSIENT_INTERNAL_ERROR: u8 = 0x04;
    /// Firmware Image Load Error.
    pub const FIRMWARE_IMAGE_LOAD_ERROR: u8 = 0x05;
}

/// Event information of a SMART / Health event (type 1h).
pub mod smart_info {
    /// NVM Subsystem Reliability.
    pub const RELIABILITY: u8 = 0x00;
    /// Temperature Threshold.
    pub const TEMPERATURE_THRESHOLD: u8 = 0x01;
    /// Spare Below Threshold.
    pub const SPARE_BELOW_THRESHOLD: u8 = 0x02;
}

/// Event information of a Notice event (type 2h).
pub mod notice_info {
    /// Namespace Attribute Changed: read the Changed Namespace List (04h).
    pub const NAMESPACE_ATTRIBUTE_CHANGED: u8 = 0x00;
    /// Firmware Activation Starting.
    pub const FIRMWARE_ACTIVATION_STARTING: u8 = 0x01;
    /// Telemetry Log Changed.
    pub const TELEMETRY_LOG_CHANGED: u8 = 0x02;
    /// Asymmetric Namespace Access Change.
    pub const ANA_CHANGE: u8 = 0x03;
    /// Predictable Latency Event Aggregate Log Change.
    pub const PREDICTABLE_LATENCY_CHANGE: u8 = 0x04;
    /// LBA Status Information Alert.
    pub const LBA_STATUS_ALERT: u8 = 0x05;
    /// Endurance Group Event Aggregate Log Page Change.
    pub const ENDURANCE_GROUP_CHANGE: u8 = 0x06;
}

/// Event information of an I/O command specific event (type 6h).
pub mod io_specific_info {
    /// Reservation Log Page Available.
    pub const RESERVATION_LOG_AVAILABLE: u8 = 0x00;
    /// Sanitize Operation Completed.
    pub const SANITIZE_COMPLETED: u8 = 0x01;
}

/// One asynchronous event, decoded from an Asynchronous Event Request's
/// completion dword 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AsyncEvent {
    /// Event type.
    pub kind: AsyncEventType,
    /// Event information (meaning depends on the type).
    pub info: u8,
    /// The log page whose read clears the event and re-enables its type.
    pub log_page: LogId,
}

impl AsyncEvent {
    /// Decode completion DW0.
    pub const fn from_dw0(dw0: u32) -> Self {
        AsyncEvent {
            kind: AsyncEventType((dw0 & 7) as u8),
            info: (dw0 >> 8) as u8,
            log_page: LogId((dw0 >> 16) as u8),
        }
    }
    /// Encode as completion DW0 (what a device reports).
    pub const fn dw0(&self) -> u32 {
        (self.kind.0 & 7) as u32 | (self.info as u32) << 8 | (self.log_page.0 as u32) << 16
    }
    /// Whether this is a Namespace Attribute Changed notice: the host reads
    /// the Changed Namespace List and re-identifies the namespaces it names.
    pub const fn is_namespace_change(&self) -> bool {
        self.kind.0 == AsyncEventType::NOTICE.0
            && self.info == notice_info::NAMESPACE_ATTRIBUTE_CHANGED
    }
    /// The specification's name for the event, or `None` if unknown.
    pub const fn name(&self) -> Option<&'static str> {
        Some(match (self.kind.0, self.info) {
            (0, 0x00) => "Write to Invalid Doorbell Register",
            (0, 0x01) => "Invalid Doorbell Write Value",
            (0, 0x02) => "Diagnostic Failure",
            (0, 0x03) => "Persistent Internal Error",
            (0, 0x04) => "Transient Internal Error",
            (0, 0x05) => "Firmware Image Load Error",
            (1, 0x00) => "NVM Subsystem Reliability",
            (1, 0x01) => "Temperature Threshold",
            (1, 0x02) => "Spare Below Threshold",
            (2, 0x00) => "Namespace Attribute Changed",
            (2, 0x01) => "Firmware Activation Starting",
            (2, 0x02) => "Telemetry Log Changed",
            (2, 0x03) => "Asymmetric Namespace Access Change",
            (2, 0x04) => "Predictable Latency Event Aggregate Log Change",
            (2, 0x05) => "LBA Status Information Alert",
            (2, 0x06) => "Endurance Group Event Aggregate Log Page Change",
            (6, 0x00) => "Reservation Log Page Available",
            (6, 0x01) => "Sanitize Operation Completed",
            _ => return None,
        })
    }
}

impl fmt::Display for AsyncEvent {
    /// `Namespace Attribute Changed (type 2h, info 00h, log page 04h)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name().unwrap_or(match self.kind.0 {
            0 => "Unknown Error event",
            1 => "Unknown SMART / Health event",
            2 => "Unknown Notice",
            6 => "Unknown I/O Command Specific event",
            7 => "Vendor Specific event",
            _ => "Unknown event",
        });
        write!(
            f,
            "{name} (type {:X}h, info {:02X}h, log page {:02X}h)",
            self.kind.0, self.info, self.log_page.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dw0_fields_decode_and_round_trip() {
        let e = AsyncEvent::from_dw0(0x0004_0002);
        assert_eq!(e.kind, AsyncEventType::NOTICE);
        assert_eq!(e.info, notice_info::NAMESPACE_ATTRIBUTE_CHANGED);
        assert_eq!(e.log_page, LogId::CHANGED_NAMESPACE_LIST);
        assert!(e.is_namespace_change());
        assert_eq!(e.dw0(), 0x0004_0002);
        assert_eq!(
            e.to_string(),
            "Namespace Attribute Changed (type 2h, info 00h, log page 04h)"
        );
        let s = AsyncEvent::from_dw0(0xff02_0101);
        assert_eq!(s.kind, AsyncEventType::SMART_HEALTH);
        assert_eq!(s.info, smart_info::TEMPERATURE_THRESHOLD);
        assert_eq!(s.log_page, LogId::SMART_HEALTH);
        assert!(!s.is_namespace_change());
        let v = AsyncEvent::from_dw0(0x00c0_4207);
        assert_eq!(
            v.to_string(),
            "Vendor Specific event (type 7h, info 42h, log page C0h)"
        );
    }
}
