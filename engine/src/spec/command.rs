//! The 64-byte submission queue entry and command opcodes (NVMe Base 2.0 §4.2,
//! NVM Command Set 1.0 §3), with builders for the NVM commands that address
//! a block range (Read, Write, Compare, Write Uncorrectable, Verify), fused
//! pairs (CDW0.FUSE), the data pointer type (CDW0.PSDT) and MPTR.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A submission queue entry (SQE), 64 bytes, host byte order (little endian on
/// every platform this crate supports).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Command {
    /// CDW0: OPC 7:0, FUSE 9:8, PSDT 15:14, CID 31:16.
    pub cdw0: u32,
    /// NSID — namespace identifier.
    pub nsid: u32,
    /// CDW2 (command specific).
    pub cdw2: u32,
    /// CDW3 (command specific).
    pub cdw3: u32,
    /// MPTR — metadata pointer.
    pub mptr: u64,
    /// PRP1 (DPTR bytes 0..8).
    pub prp1: u64,
    /// PRP2 (DPTR bytes 8..16).
    pub prp2: u64,
    /// CDW10.
    pub cdw10: u32,
    /// CDW11.
    pub cdw11: u32,
    /// CDW12.
    pub cdw12: u32,
    /// CDW13.
    pub cdw13: u32,
    /// CDW14.
    pub cdw14: u32,
    /// CDW15.
    pub cdw15: u32,
}

const _: () = assert!(size_of::<Command>() == 64);

impl Command {
    /// A command with the given opcode and namespace, every other field zero.
    pub const fn new(opcode: u8, nsid: u32) -> Self {
        Command {
            cdw0: opcode as u32,
            nsid,
            cdw2: 0,
            cdw3: 0,
            mptr: 0,
            prp1: 0,
            prp2: 0,
            cdw10: 0,
            cdw11: 0,
            cdw12: 0,
            cdw13: 0,
            cdw14: 0,
            cdw15: 0,
        }
    }
    /// CDW0.OPC — opcode.
    pub const fn opcode(&self) -> u8 {
        self.cdw0 as u8
    }
    /// CDW0.CID — command identifier.
    pub const fn cid(&self) -> u16 {
        (self.cdw0 >> 16) as u16
    }
    /// Set CDW0.CID.
    pub const fn set_cid(&mut self, cid: u16) {
        self.cdw0 = (self.cdw0 & 0xffff) | ((cid as u32) << 16);
    }
    /// CDW0.FUSE — fused operation.
    pub const fn fuse(&self) -> u8 {
        ((self.cdw0 >> 8) & 3) as u8
    }
    /// CDW0.PSDT — PRP or SGL for data transfer (00b = PRPs).
    pub const fn psdt(&self) -> u8 {
        ((self.cdw0 >> 14) & 3) as u8
    }
    /// Starting LBA of an NVM read/write/write-zeroes command (CDW10/11).
    pub const fn slba(&self) -> u64 {
        self.cdw10 as u64 | ((self.cdw11 as u64) << 32)
    }
    /// Set the starting LBA (CDW10/11).
    pub const fn set_slba(&mut self, slba: u64) {
        self.cdw10 = slba as u32;
        self.cdw11 = (slba >> 32) as u32;
    }
    /// CDW12.NLB — number of logical blocks, zero-based.
    pub const fn nlb_z(&self) -> u16 {
        self.cdw12 as u16
    }
    /// Set CDW12.NLB (zero-based), keeping CDW12's other bits.
    pub const fn set_nlb_z(&mut self, nlb_z: u16) {
        self.cdw12 = (self.cdw12 & !0xffff) | nlb_z as u32;
    }
    /// Set CDW0.FUSE.
    pub const fn set_fuse(&mut self, fuse: Fuse) {
        self.cdw0 = (self.cdw0 & !(3 << 8)) | (fuse as u32) << 8;
    }
    /// Set CDW0.PSDT.
    pub const fn set_psdt(&mut self, psdt: Psdt) {
        self.cdw0 = (self.cdw0 & !(3 << 14)) | (psdt as u32) << 14;
    }
    /// Set MPTR: the metadata buffer (PSDT 00b/01b) or the address of one
    /// SGL descriptor describing it (PSDT 10b).
    pub const fn set_mptr(&mut self, mptr: u64) {
        self.mptr = mptr;
    }

    /// An NVM command on `nlb_z + 1` blocks at `slba` (CDW10/11, CDW12.NLB);
    /// the data pointer is left for the caller.
    pub const fn nvm_blocks(opcode: NvmOpcode, nsid: u32, slba: u64, nlb_z: u16) -> Self {
        let mut c = Command::new(opcode.0, nsid);
        c.set_slba(slba);
        c.cdw12 = nlb_z as u32;
        c
    }
    /// Compare (05h): the controller compares the data buffer with the
    /// blocks and fails with Compare Failure on a mismatch.
    pub const fn compare(nsid: u32, slba: u64, nlb_z: u16) -> Self {
        Self::nvm_blocks(NvmOpcode::COMPARE, nsid, slba, nlb_z)
    }
    /// Write Uncorrectable (04h): the blocks read back as Unrecovered Read
    /// Error until written again. No data pointer.
    pub const fn write_uncorrectable(nsid: u32, slba: u64, nlb_z: u16) -> Self {
        Self::nvm_blocks(NvmOpcode::WRITE_UNCORRECTABLE, nsid, slba, nlb_z)
    }
    /// Verify (0Ch): the controller reads and checks the blocks (and their
    /// protection information, as PRINFO asks) without moving data.
    pub const fn verify(nsid: u32, slba: u64, nlb_z: u16) -> Self {
        Self::nvm_blocks(NvmOpcode::VERIFY, nsid, slba, nlb_z)
    }
    /// A fused Compare and Write on the same blocks: the first command
    /// (Compare, FUSE 01b) and the second (Write, FUSE 10b). Submit them in
    /// adjacent slots of one submission queue, with one doorbell write
    /// covering both; the write happens only if the compare matches.
    pub const fn compare_and_write(nsid: u32, slba: u64, nlb_z: u16) -> (Self, Self) {
        let mut first = Self::compare(nsid, slba, nlb_z);
        first.set_fuse(Fuse::First);
        let mut second = Self::nvm_blocks(NvmOpcode::WRITE, nsid, slba, nlb_z);
        second.set_fuse(Fuse::Second);
        (first, second)
    }
}

/// CDW0.FUSE — fused operation (NVMe Base 2.0 §4.2, figure 88).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Fuse {
    /// 00b: a normal command.
    Normal = 0,
    /// 01b: the first command of a fused operation.
    First = 1,
    /// 10b: the second command of a fused operation.
    Second = 2,
}

/// CDW0.PSDT — how DPTR and MPTR describe the buffers (NVMe Base 2.0 §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Psdt {
    /// 00b: PRPs for the data; MPTR is the address of a contiguous
    /// metadata buffer.
    Prp = 0,
    /// 01b: an SGL for the data; MPTR is the address of a contiguous,
    /// byte-aligned metadata buffer (SGLS bit 17 for unaligned ones).
    SglContiguousMetadata = 1,
    /// 10b: an SGL for the data; MPTR is the address of one SGL descriptor
    /// describing the metadata (SGLS bit 19).
    SglMetadataDescriptor = 2,
}

/// CDW12 bit 30 of Read/Write: Force Unit Access.
pub const CDW12_FUA: u32 = 1 << 30;
/// CDW12 bit 31 of Read/Write/Write Zeroes: Limited Retry.
pub const CDW12_LR: u32 = 1 << 31;
/// CDW12 bit 25 of Write Zeroes: Deallocate.
pub const CDW12_DEAC: u32 = 1 << 25;
/// CDW11 bit 2 of Dataset Management: Attribute – Deallocate.
pub const DSM_ATTR_DEALLOCATE: u32 = 1 << 2;
/// CDW11 bit 1 of Create I/O CQ: Interrupts Enabled.
pub const CREATE_CQ_IEN: u32 = 1 << 1;
/// CDW11 bit 0 of Create I/O SQ/CQ: Physically Contiguous.
pub const CREATE_Q_PC: u32 = 1;

/// Namespace Attachment CDW10 SEL: attach the namespace to the controllers
/// listed (NVMe Base 2.0 §5.23).
pub const NS_ATTACH_SEL_ATTACH: u32 = 0;
/// Namespace Attachment CDW10 SEL: detach it from them.
pub const NS_ATTACH_SEL_DETACH: u32 = 1;

/// Admin command opcodes (NVMe Base 2.0 §5, figure 139).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AdminOpcode(pub u8);

impl AdminOpcode {
    /// Delete I/O Submission Queue.
    pub const DELETE_IO_SQ: Self = Self(0x00);
    /// Create I/O Submission Queue.
    pub const CREATE_IO_SQ: Self = Self(0x01);
    /// Get Log Page.
    pub const GET_LOG_PAGE: Self = Self(0x02);
    /// Delete I/O Completion Queue.
    pub const DELETE_IO_CQ: Self = Self(0x04);
    /// Create I/O Completion Queue.
    pub const CREATE_IO_CQ: Self = Self(0x05);
    /// Identify.
    pub const IDENTIFY: Self = Self(0x06);
    /// Abort.
    pub const ABORT: Self = Self(0x08);
    /// Set Features.
    pub const SET_FEATURES: Self = Self(0x09);
    /// Get Features.
    pub const GET_FEATURES: Self = Self(0x0A);
    /// Asynchronous Event Request.
    pub const ASYNC_EVENT_REQUEST: Self = Self(0x0C);
    /// Namespace Attachment (CDW10 SEL: [`NS_ATTACH_SEL_ATTACH`] or
    /// [`NS_ATTACH_SEL_DETACH`]; data: a Controller List, §4.6.1).
    pub const NAMESPACE_ATTACHMENT: Self = Self(0x15);
    /// Keep Alive.
    pub const KEEP_ALIVE: Self = Self(0x18);
    /// Doorbell Buffer Config.
    pub const DOORBELL_BUFFER_CONFIG: Self = Self(0x7C);
    /// Format NVM.
    pub const FORMAT_NVM: Self = Self(0x80);

    /// A readable name, or `None` for an opcode this crate does not know.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x00 => "Delete I/O Submission Queue",
            0x01 => "Create I/O Submission Queue",
            0x02 => "Get Log Page",
            0x04 => "Delete I/O Completion Queue",
            0x05 => "Create I/O Completion Queue",
            0x06 => "Identify",
            0x08 => "Abort",
            0x09 => "Set Features",
            0x0A => "Get Features",
            0x0C => "Asynchronous Event Request",
            0x15 => "Namespace Attachment",
            0x18 => "Keep Alive",
            0x7C => "Doorbell Buffer Config",
            0x80 => "Format NVM",
            _ => return None,
        })
    }
}

/// NVM command set I/O opcodes (NVM Command Set 1.0 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NvmOpcode(pub u8);

impl NvmOpcode {
    /// Flush.
    pub const FLUSH: Self = Self(0x00);
    /// Write.
    pub const WRITE: Self = Self(0x01);
    /// Read.
    pub const READ: Self = Self(0x02);
    /// Write Uncorrectable.
    pub const WRITE_UNCORRECTABLE: Self = Self(0x04);
    /// Compare.
    pub const COMPARE: Self = Self(0x05);
    /// Write Zeroes.
    pub const WRITE_ZEROES: Self = Self(0x08);
    /// Dataset Management.
    pub const DATASET_MANAGEMENT: Self = Self(0x09);
    /// Verify.
    pub const VERIFY: Self = Self(0x0C);

    /// A readable name, or `None` for an opcode this crate does not know.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x00 => "Flush",
            0x01 => "Write",
            0x02 => "Read",
            0x04 => "Write Uncorrectable",
            0x05 => "Compare",
            0x08 => "Write Zeroes",
            0x09 => "Dataset Management",
            0x0C => "Verify",
            _ => return None,
        })
    }
}

/// Identify CNS values (CDW10.CNS).
pub mod cns {
    /// Identify Namespace data structure for the given NSID.
    pub const NAMESPACE: u8 = 0x00;
    /// Identify Controller data structure.
    pub const CONTROLLER: u8 = 0x01;
    /// Active namespace ID list (NSIDs greater than CDW1.NSID).
    pub const ACTIVE_NAMESPACES: u8 = 0x02;
}

/// One Dataset Management range (NVM Command Set 1.0 §3.2.3), 16 bytes.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct DsmRange {
    /// Context attributes.
    pub attributes: u32,
    /// Length in logical blocks (one-based).
    pub nlb: u32,
    /// Starting LBA.
    pub slba: u64,
}

const _: () = assert!(size_of::<DsmRange>() == 16);

/// Most ranges one Dataset Management command carries.
pub const DSM_MAX_RANGES: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cid_and_slba_round_trip_without_touching_other_fields() {
        let mut c = Command::new(NvmOpcode::WRITE.0, 1);
        c.cdw0 |= 0x4000; // PSDT bits are preserved
        c.set_cid(0xbeef);
        c.set_slba(0x1_2345_6789);
        assert_eq!(c.cid(), 0xbeef);
        assert_eq!(c.opcode(), 0x01);
        assert_eq!(c.psdt(), 1);
        assert_eq!(c.slba(), 0x1_2345_6789);
        assert_eq!(c.cdw10, 0x2345_6789);
        assert_eq!(c.cdw11, 1);
    }

    #[test]
    fn block_command_builders_set_opcode_range_and_fuse_bits() {
        let c = Command::compare(3, 0x1_0000_0002, 7);
        assert_eq!(c.opcode(), 0x05);
        assert_eq!(c.nsid, 3);
        assert_eq!(c.slba(), 0x1_0000_0002);
        assert_eq!(c.nlb_z(), 7);
        assert_eq!(c.fuse(), 0);
        assert_eq!(Command::write_uncorrectable(1, 9, 0).opcode(), 0x04);
        assert_eq!(Command::verify(1, 9, 0).opcode(), 0x0C);
        let (first, second) = Command::compare_and_write(1, 100, 3);
        assert_eq!((first.opcode(), first.fuse()), (0x05, 1));
        assert_eq!((second.opcode(), second.fuse()), (0x01, 2));
        assert_eq!((second.slba(), second.nlb_z()), (100, 3));
    }

    #[test]
    fn fuse_psdt_and_nlb_setters_touch_only_their_bits() {
        let mut c = Command::nvm_blocks(NvmOpcode::READ, 1, 0, 0);
        c.cdw12 = 0xffff_0000;
        c.set_cid(0xabcd);
        c.set_psdt(Psdt::SglMetadataDescriptor);
        c.set_fuse(Fuse::Second);
        c.set_nlb_z(0x1234);
        assert_eq!(c.psdt(), 2);
        assert_eq!(c.fuse(), 2);
        assert_eq!(c.cid(), 0xabcd);
        assert_eq!(c.opcode(), 0x02);
        assert_eq!(c.cdw12, 0xffff_1234);
        c.set_fuse(Fuse::Normal);
        c.set_psdt(Psdt::Prp);
        assert_eq!(c.cdw0, 0xabcd_0002);
        c.set_mptr(0x2000);
        assert_eq!(c.mptr, 0x2000);
    }

    #[test]
    fn opcode_names() {
        assert_eq!(NvmOpcode::READ.name(), Some("Read"));
        assert_eq!(AdminOpcode(0xEE).name(), None);
        assert_eq!(
            AdminOpcode::CREATE_IO_CQ.name(),
            Some("Create I/O Completion Queue")
        );
    }
}
