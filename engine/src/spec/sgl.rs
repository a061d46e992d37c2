//! Scatter gather list descriptors (NVMe Base 2.0 §4.3.2): the 16-byte
//! descriptor, its type byte (descriptor type 7:4, subtype 3:0), and the
//! Data Block, Bit Bucket, Segment and Last Segment descriptors a host
//! builds. A command carries its first descriptor in DPTR with CDW0.PSDT
//! 01b or 10b ([`super::command::Psdt`]); a Segment or Last Segment
//! descriptor points at a list of further descriptors, 16 bytes each.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::command::{Command, Psdt};

/// SGL descriptor type (the high nibble of byte 15). Open: a device may
/// report any value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SglDescriptorType(pub u8);

impl SglDescriptorType {
    /// 0h: SGL Data Block — a buffer of data.
    pub const DATA_BLOCK: Self = Self(0x0);
    /// 1h: SGL Bit Bucket — data to be discarded (reads only).
    pub const BIT_BUCKET: Self = Self(0x1);
    /// 2h: SGL Segment — the address of the next list segment, which has
    /// more segments after it.
    pub const SEGMENT: Self = Self(0x2);
    /// 3h: SGL Last Segment — the address of the final list segment.
    pub const LAST_SEGMENT: Self = Self(0x3);
    /// 4h: Keyed SGL Data Block (fabrics).
    pub const KEYED_DATA_BLOCK: Self = Self(0x4);
    /// 5h: Transport SGL Data Block (fabrics).
    pub const TRANSPORT_DATA_BLOCK: Self = Self(0x5);
}

/// SGL descriptor subtype 0h: the Address field is an address.
pub const SGL_SUBTYPE_ADDRESS: u8 = 0x0;
/// SGL descriptor subtype 1h: the Address field is an offset (SGLS bit 20).
pub const SGL_SUBTYPE_OFFSET: u8 = 0x1;

/// Bytes of one SGL descriptor.
pub const SGL_DESCRIPTOR_BYTES: usize = 16;

/// One SGL descriptor, 16 bytes, little endian: Address (bytes 7:0),
/// Length (11:8), reserved (14:12), SGL identifier (15: type 7:4, subtype
/// 3:0). A Bit Bucket descriptor leaves Address reserved.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct SglDescriptor {
    /// Address of the buffer or of the next list segment.
    pub address: U64,
    /// Length in bytes (of the buffer, or of the segment: 16 per descriptor).
    pub length: U32,
    /// Reserved.
    pub rsvd: [u8; 3],
    /// SGL identifier: descriptor type 7:4, subtype 3:0.
    pub id: u8,
}

const _: () = assert!(size_of::<SglDescriptor>() == SGL_DESCRIPTOR_BYTES);

impl SglDescriptor {
    fn with(kind: SglDescriptorType, address: u64, length: u32) -> Self {
        SglDescriptor {
            address: U64::new(address),
            length: U32::new(length),
            rsvd: [0; 3],
            id: kind.0 << 4 | SGL_SUBTYPE_ADDRESS,
        }
    }
    /// A Data Block descriptor: `length` bytes at `address`.
    pub fn data_block(address: u64, length: u32) -> Self {
        Self::with(SglDescriptorType::DATA_BLOCK, address, length)
    }
    /// A Bit Bucket descriptor: `length` bytes of a read are discarded.
    pub fn bit_bucket(length: u32) -> Self {
        Self::with(SglDescriptorType::BIT_BUCKET, 0, length)
    }
    /// A Segment descriptor: `descriptors` descriptors at `address`, the
    /// last of which is itself a Segment or Last Segment descriptor.
    pub fn segment(address: u64, descriptors: u32) -> Self {
        Self::with(
            SglDescriptorType::SEGMENT,
            address,
            descriptors.saturating_mul(SGL_DESCRIPTOR_BYTES as u32),
        )
    }
    /// A Last Segment descriptor: the final `descriptors` descriptors, at
    /// `address` (none of them a Segment or Last Segment).
    pub fn last_segment(address: u64, descriptors: u32) -> Self {
        Self::with(
            SglDescriptorType::LAST_SEGMENT,
            address,
            descriptors.saturating_mul(SGL_DESCRIPTOR_BYTES as u32),
        )
    }
    /// The descriptor type (identifier bits 7:4).
    pub const fn kind(&self) -> SglDescriptorType {
        SglDescriptorType(self.id >> 4)
    }
    /// The descriptor subtype (identifier bits 3:0).
    pub const fn subtype(&self) -> u8 {
        self.id & 0xf
    }
    /// The descriptor as DPTR's two quadwords (PRP1, PRP2 positions).
    pub fn to_dptr(&self) -> (u64, u64) {
        let bytes = self.as_bytes();
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&bytes[..8]);
        hi.copy_from_slice(&bytes[8..]);
        (u64::from_le_bytes(lo), u64::from_le_bytes(hi))
    }
}

impl Command {
    /// Put `first` in DPTR and select SGLs for the data with CDW0.PSDT
    /// (`psdt` must not be [`Psdt::Prp`]; MPTR is left as it is).
    pub fn set_data_sgl(&mut self, first: &SglDescriptor, psdt: Psdt) {
        let (prp1, prp2) = first.to_dptr();
        self.prp1 = prp1;
        self.prp2 = prp2;
        self.set_psdt(psdt);
    }
    /// DPTR read as an SGL descriptor (meaningful when PSDT is not 00b).
    pub fn data_sgl(&self) -> SglDescriptor {
        let mut bytes = [0u8; SGL_DESCRIPTOR_BYTES];
        bytes[..8].copy_from_slice(&self.prp1.to_le_bytes());
        bytes[8..].copy_from_slice(&self.prp2.to_le_bytes());
        SglDescriptor::read_from_bytes(&bytes).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::command::NvmOpcode;

    #[test]
    fn descriptors_encode_type_in_the_high_nibble_of_byte_15() {
        let d = SglDescriptor::data_block(0x1122_3344_5566_7788, 4096);
        let b = d.as_bytes();
        assert_eq!(&b[..8], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&b[8..12], &4096u32.to_le_bytes());
        assert_eq!(b[15], 0x00);
        assert_eq!(SglDescriptor::bit_bucket(512).as_bytes()[15], 0x10);
        let s = SglDescriptor::segment(0x9000, 4);
        assert_eq!((s.as_bytes()[15], s.length.get()), (0x20, 64));
        let l = SglDescriptor::last_segment(0x9000, 3);
        assert_eq!(
            (l.kind(), l.subtype()),
            (SglDescriptorType::LAST_SEGMENT, 0)
        );
        assert_eq!(l.length.get(), 48);
    }

    #[test]
    fn a_command_carries_its_first_descriptor_in_dptr() {
        let mut c = Command::nvm_blocks(NvmOpcode::WRITE, 1, 0, 7);
        let d = SglDescriptor::last_segment(0xabc0, 2);
        c.set_data_sgl(&d, Psdt::SglContiguousMetadata);
        assert_eq!(c.psdt(), 1);
        assert_eq!(c.prp1, 0xabc0);
        assert_eq!(c.prp2, 32 | 0x30 << 56);
        assert_eq!(c.data_sgl(), d);
    }
}
