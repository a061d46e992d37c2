//! Metadata and end-to-end data protection fields (NVM Command Set 1.0
//! §5.2 and §4.1.5.1): the namespace's metadata capabilities (MC), data
//! protection capabilities (DPC) and settings (DPS), the metadata format a
//! namespace is formatted with, and the per-command protection fields —
//! PRINFO (PRACT and PRCHK, CDW12 bits 29:26), the expected initial
//! logical block reference tag (EILBRT, CDW14) and the expected logical
//! block application tag and mask (ELBAT / ELBATM, CDW15).
//!
//! Only the 16-bit guard protection information format is described (the
//! 8-byte tuple: guard, application tag, reference tag, big-endian); the
//! 32b and 64b guard formats of the NVM Command Set 2.0 are not.

use std::fmt;

use super::command::Command;

/// Bytes of one protection information tuple (16-bit guard format).
pub const PI_TUPLE_BYTES: u16 = 8;

/// CDW12 bit 29 of Read, Write, Compare, Verify, Write Zeroes:
/// PRACT — protection information action.
pub const CDW12_PRACT: u32 = 1 << 29;
/// CDW12 bit 28: PRCHK guard — check the guard field.
pub const CDW12_PRCHK_GUARD: u32 = 1 << 28;
/// CDW12 bit 27: PRCHK application tag — check the application tag.
pub const CDW12_PRCHK_APP_TAG: u32 = 1 << 27;
/// CDW12 bit 26: PRCHK reference tag — check the reference tag.
pub const CDW12_PRCHK_REF_TAG: u32 = 1 << 26;
/// CDW12 bits 29:26: the whole PRINFO field.
pub const CDW12_PRINFO_MASK: u32 = 0xf << 26;

/// MC — metadata capabilities (Identify Namespace byte 27).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MetadataCapabilities(pub u8);

impl MetadataCapabilities {
    /// MC bit 0: metadata may travel at the end of each block, in the data
    /// buffer (extended LBA).
    pub const fn extended(self) -> bool {
        self.0 & 1 != 0
    }
    /// MC bit 1: metadata may travel in a separate buffer (MPTR).
    pub const fn separate(self) -> bool {
        self.0 & 2 != 0
    }
}

/// DPC — end-to-end data protection capabilities (Identify Namespace byte 28).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProtectionCapabilities(pub u8);

impl ProtectionCapabilities {
    /// DPC bits 2:0: whether protection information type `kind` is supported.
    pub const fn supports(self, kind: PiType) -> bool {
        self.0 & (1 << (kind.dps_value() - 1)) != 0
    }
    /// DPC bit 3: the tuple may be the first 8 bytes of the metadata.
    pub const fn first(self) -> bool {
        self.0 & (1 << 3) != 0
    }
    /// DPC bit 4: the tuple may be the last 8 bytes of the metadata.
    pub const fn last(self) -> bool {
        self.0 & (1 << 4) != 0
    }
}

/// DPS — end-to-end data protection type settings (Identify Namespace byte 29).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProtectionSettings(pub u8);

impl ProtectionSettings {
    /// DPS bits 2:0 as reported: 0 none, 1..=3 the type, 4..=7 reserved.
    pub const fn type_value(self) -> u8 {
        self.0 & 7
    }
    /// The protection information type enabled, or `None` when protection
    /// is off or the value is reserved (see [`type_value`](Self::type_value)).
    pub const fn pi_type(self) -> Option<PiType> {
        PiType::from_dps(self.type_value())
    }
    /// DPS bit 3: the tuple is in the first 8 bytes of the metadata (clear:
    /// the last 8 bytes).
    pub const fn first(self) -> bool {
        self.0 & (1 << 3) != 0
    }
    /// The settings for a type and location (what a device reports).
    pub const fn new(kind: Option<PiType>, location: PiLocation) -> Self {
        let t = match kind {
            Some(k) => k.dps_value(),
            None => 0,
        };
        let first = matches!(location, PiLocation::First) as u8;
        Self(t | first << 3)
    }
}

/// A protection information type (NVM Command Set 1.0 §5.2.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PiType {
    /// Type 1: the reference tag is the low 32 bits of the LBA; a command
    /// gives the tag of its first block, which advances by one per block.
    Type1,
    /// Type 2: the reference tag starts at the command's (E)ILBRT and
    /// advances by one per block; the application tag is checked as for
    /// type 1.
    Type2,
    /// Type 3: the reference tag is opaque and the same for every block of
    /// a command; checking is off for a block only if both tags are all ones.
    Type3,
}

impl PiType {
    /// The DPS type value (1..=3).
    pub const fn dps_value(self) -> u8 {
        match self {
            PiType::Type1 => 1,
            PiType::Type2 => 2,
            PiType::Type3 => 3,
        }
    }
    /// The type a DPS value names; `None` for 0 (off) and the reserved 4..=7.
    pub const fn from_dps(value: u8) -> Option<Self> {
        match value {
            1 => Some(PiType::Type1),
            2 => Some(PiType::Type2),
            3 => Some(PiType::Type3),
            _ => None,
        }
    }
    /// Whether the reference tag advances by one per block (types 1 and 2).
    pub const fn ref_tag_increments(self) -> bool {
        !matches!(self, PiType::Type3)
    }
}

impl fmt::Display for PiType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "type {}", self.dps_value())
    }
}

/// Where the 8-byte tuple sits in a block's metadata (DPS bit 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PiLocation {
    /// The first 8 bytes.
    First,
    /// The last 8 bytes; the guard then also covers the metadata bytes
    /// before the tuple.
    Last,
}

impl fmt::Display for PiLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PiLocation::First => "first 8 bytes",
            PiLocation::Last => "last 8 bytes",
        })
    }
}

/// How the metadata of each block travels (FLBAS bit 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetadataLayout {
    /// Extended LBA: each block's metadata follows its data in the data
    /// buffer (`block size + metadata size` bytes per block).
    Extended,
    /// A separate buffer, addressed by MPTR (or an SGL), holding the
    /// metadata of every block of the command back to back.
    Separate,
}

impl fmt::Display for MetadataLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MetadataLayout::Extended => "extended LBA",
            MetadataLayout::Separate => "separate buffer",
        })
    }
}

/// Protection information a namespace is formatted with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PiFormat {
    /// The type.
    pub kind: PiType,
    /// Where the tuple sits in the metadata.
    pub location: PiLocation,
}

/// The metadata a namespace's current LBA format carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MetadataFormat {
    /// MS — metadata bytes per block (at least 1).
    pub size: u16,
    /// Interleaved with the data, or in a separate buffer.
    pub layout: MetadataLayout,
    /// Protection information in the metadata, if enabled (DPS).
    pub pi: Option<PiFormat>,
}

impl MetadataFormat {
    /// Byte offset of the tuple in one block's metadata, if PI is enabled.
    pub const fn pi_offset(&self) -> Option<usize> {
        match self.pi {
            Some(PiFormat {
                location: PiLocation::First,
                ..
            }) => Some(0),
            Some(PiFormat {
                location: PiLocation::Last,
                ..
            }) => Some((self.size - PI_TUPLE_BYTES) as usize),
            None => None,
        }
    }
    /// Whether PRACT on this format moves no metadata at all: the metadata
    /// is exactly the tuple, which the controller inserts on writes and
    /// strips on reads (NVM Command Set 1.0 §5.2.2).
    pub const fn pract_strips_metadata(&self) -> bool {
        self.pi.is_some() && self.size == PI_TUPLE_BYTES
    }
}

impl fmt::Display for MetadataFormat {
    /// `8 bytes of metadata (separate buffer), PI type 1 in the first 8 bytes`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes of metadata ({})", self.size, self.layout)?;
        if let Some(pi) = self.pi {
            write!(f, ", PI {} in the {}", pi.kind, pi.location)?;
        }
        Ok(())
    }
}

/// Why the metadata format a namespace reports cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataFormatError {
    /// DPS names a reserved protection type.
    #[error(
        "DPS reports protection information type value {value}, which is reserved (1, 2 or 3 \
         expected); the controller's Identify Namespace data is inconsistent"
    )]
    ReservedPiType {
        /// DPS bits 2:0.
        value: u8,
    },
    /// Protection enabled on a format whose metadata cannot hold a tuple.
    #[error(
        "DPS enables protection information but the LBA format has only {ms} metadata bytes \
         (a tuple needs 8); the controller's Identify Namespace data is inconsistent"
    )]
    MetadataTooSmall {
        /// MS of the current format.
        ms: u16,
    },
    /// Protection enabled on a format without metadata.
    #[error(
        "DPS enables protection information type {value} but the LBA format carries no \
         metadata; the controller's Identify Namespace data is inconsistent"
    )]
    PiWithoutMetadata {
        /// DPS bits 2:0.
        value: u8,
    },
}

/// PRCHK — which protection fields the controller checks (CDW12 bits 28:26).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PrChk {
    /// Check the guard (CRC of the data).
    pub guard: bool,
    /// Check the application tag (against ELBAT under ELBATM).
    pub app_tag: bool,
    /// Check the reference tag (against EILBRT, advanced per block for
    /// types 1 and 2).
    pub ref_tag: bool,
}

impl PrChk {
    /// Every check on.
    pub const ALL: Self = PrChk {
        guard: true,
        app_tag: true,
        ref_tag: true,
    };
    /// No check.
    pub const NONE: Self = PrChk {
        guard: false,
        app_tag: false,
        ref_tag: false,
    };
    /// The CDW12 bits.
    pub const fn cdw12(self) -> u32 {
        (if self.guard { CDW12_PRCHK_GUARD } else { 0 })
            | (if self.app_tag { CDW12_PRCHK_APP_TAG } else { 0 })
            | (if self.ref_tag { CDW12_PRCHK_REF_TAG } else { 0 })
    }
    /// Decode from CDW12.
    pub const fn from_cdw12(cdw12: u32) -> Self {
        PrChk {
            guard: cdw12 & CDW12_PRCHK_GUARD != 0,
            app_tag: cdw12 & CDW12_PRCHK_APP_TAG != 0,
            ref_tag: cdw12 & CDW12_PRCHK_REF_TAG != 0,
        }
    }
    /// Whether any check is on.
    pub const fn any(self) -> bool {
        self.guard || self.app_tag || self.ref_tag
    }
}

/// The protection fields of one Read, Write, Compare, Verify or Write
/// Zeroes command: PRINFO, EILBRT/ILBRT, ELBAT/LBAT and ELBATM/LBATM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PiFields {
    /// PRACT: on a write the controller generates the tuples; on a read it
    /// checks and (with 8-byte metadata) strips them.
    pub pract: bool,
    /// PRCHK: the fields the controller checks.
    pub check: PrChk,
    /// CDW14 — (E)ILBRT: the reference tag of the first block.
    pub ref_tag: u32,
    /// CDW15 bits 15:0 — (E)LBAT: the application tag.
    pub app_tag: u16,
    /// CDW15 bits 31:16 — (E)LBATM: the application tag bits checked.
    pub app_mask: u16,
}

impl PiFields {
    /// CDW12 bits 29:26.
    pub const fn prinfo_cdw12(&self) -> u32 {
        (if self.pract { CDW12_PRACT } else { 0 }) | self.check.cdw12()
    }
    /// CDW15: ELBATM in 31:16, ELBAT in 15:0.
    pub const fn cdw15(&self) -> u32 {
        self.app_tag as u32 | (self.app_mask as u32) << 16
    }
    /// Write the fields into `cmd` (PRINFO bits replaced, CDW14 and CDW15 set).
    pub const fn apply(&self, cmd: &mut Command) {
        cmd.cdw12 = (cmd.cdw12 & !CDW12_PRINFO_MASK) | self.prinfo_cdw12();
        cmd.cdw14 = self.ref_tag;
        cmd.cdw15 = self.cdw15();
    }
    /// Read the fields back from a command.
    pub const fn from_command(cmd: &Command) -> Self {
        PiFields {
            pract: cmd.cdw12 & CDW12_PRACT != 0,
            check: PrChk::from_cdw12(cmd.cdw12),
            ref_tag: cmd.cdw14,
            app_tag: cmd.cdw15 as u16,
            app_mask: (cmd.cdw15 >> 16) as u16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::command::NvmOpcode;

    #[test]
    fn prinfo_bits_sit_at_cdw12_29_to_26_and_leave_nlb_alone() {
        let mut c = Command::new(NvmOpcode::WRITE.0, 1);
        c.cdw12 = 0x0000_00ff | CDW12_PRINFO_MASK;
        let f = PiFields {
            pract: true,
            check: PrChk {
                guard: false,
                app_tag: true,
                ref_tag: false,
            },
            ref_tag: 0xdead_beef,
            app_tag: 0x1234,
            app_mask: 0xff00,
        };
        f.apply(&mut c);
        assert_eq!(c.cdw12, 0xff | 1 << 29 | 1 << 27);
        assert_eq!(c.cdw14, 0xdead_beef);
        assert_eq!(c.cdw15, 0xff00_1234);
        assert_eq!(PiFields::from_command(&c), f);
        assert_eq!(PrChk::ALL.cdw12(), 0b111 << 26);
        assert!(!PrChk::NONE.any());
    }

    #[test]
    fn capability_and_setting_bits_decode() {
        let dpc = ProtectionCapabilities(0b1_0101);
        assert!(dpc.supports(PiType::Type1));
        assert!(!dpc.supports(PiType::Type2));
        assert!(dpc.supports(PiType::Type3));
        assert!(!dpc.first());
        assert!(dpc.last());
        let mc = MetadataCapabilities(2);
        assert!(!mc.extended() && mc.separate());
        let dps = ProtectionSettings(0b1010);
        assert_eq!(dps.pi_type(), Some(PiType::Type2));
        assert!(dps.first());
        assert_eq!(ProtectionSettings(5).pi_type(), None);
        assert_eq!(ProtectionSettings(5).type_value(), 5);
        assert_eq!(
            ProtectionSettings::new(Some(PiType::Type3), PiLocation::First),
            ProtectionSettings(0b1011)
        );
        assert_eq!(
            ProtectionSettings::new(None, PiLocation::Last),
            ProtectionSettings(0)
        );
    }

    #[test]
    fn tuple_offset_follows_location_and_size() {
        let mut f = MetadataFormat {
            size: 64,
            layout: MetadataLayout::Extended,
            pi: Some(PiFormat {
                kind: PiType::Type1,
                location: PiLocation::Last,
            }),
        };
        assert_eq!(f.pi_offset(), Some(56));
        assert!(!f.pract_strips_metadata());
        assert_eq!(
            f.to_string(),
            "64 bytes of metadata (extended LBA), PI type 1 in the last 8 bytes"
        );
        f.pi = Some(PiFormat {
            kind: PiType::Type3,
            location: PiLocation::First,
        });
        assert_eq!(f.pi_offset(), Some(0));
        f.size = 8;
        assert!(f.pract_strips_metadata());
        f.pi = None;
        assert_eq!(f.pi_offset(), None);
        assert!(!f.pract_strips_metadata());
    }
}
