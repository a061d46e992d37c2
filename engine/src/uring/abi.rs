//! The kernel's NVMe passthrough ABI (Linux `include/uapi/linux/nvme_ioctl.h`):
//! the structures the admin ioctl and `IORING_OP_URING_CMD` carry, the ioctl
//! numbers, and their conversion from the engine's own 64-byte [`Command`].
//!
//! Only facts are taken from the kernel: field order, sizes and offsets
//! (checked at compile time below) and the `_IOWR('N', nr, size)` numbers.
//! The kernel builds the submission queue entry itself from these fields: it
//! picks the command identifier and describes the data with PRPs or SGLs, so
//! CDW0's CID, FUSE and PSDT and the DPTR of the engine's command are not
//! carried over (the ABI's `flags` byte must be zero).

#![forbid(unsafe_code)]

use std::mem::offset_of;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::spec::command::Command;

/// `struct nvme_passthru_cmd` (also `nvme_admin_cmd`): the argument of
/// `NVME_IOCTL_ADMIN_CMD` and `NVME_IOCTL_IO_CMD`, 72 bytes.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct PassthruCmd {
    /// CDW0.OPC.
    pub opcode: u8,
    /// Must be 0 (the kernel chooses FUSE and PSDT).
    pub flags: u8,
    /// Reserved.
    pub rsvd1: u16,
    /// NSID.
    pub nsid: u32,
    /// CDW2.
    pub cdw2: u32,
    /// CDW3.
    pub cdw3: u32,
    /// Metadata buffer (user address), 0 for none.
    pub metadata: u64,
    /// Data buffer (user address), 0 for none.
    pub addr: u64,
    /// Metadata buffer length in bytes.
    pub metadata_len: u32,
    /// Data buffer length in bytes.
    pub data_len: u32,
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
    /// Per-command timeout in milliseconds, 0 for the driver's default.
    pub timeout_ms: u32,
    /// Completion DW0, written back by the kernel.
    pub result: u32,
}

/// `struct nvme_uring_cmd`: the command area of an `IORING_OP_URING_CMD`
/// submission with `NVME_URING_CMD_IO`, 72 bytes (it fits the 80 bytes a
/// 128-byte SQE offers).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct UringCmd {
    /// CDW0.OPC.
    pub opcode: u8,
    /// Must be 0.
    pub flags: u8,
    /// Reserved.
    pub rsvd1: u16,
    /// NSID (must name the namespace of the node the command is sent to).
    pub nsid: u32,
    /// CDW2.
    pub cdw2: u32,
    /// CDW3.
    pub cdw3: u32,
    /// Metadata buffer (user address), 0 for none.
    pub metadata: u64,
    /// Data buffer (user address; with `IORING_URING_CMD_FIXED`, inside the
    /// registered buffer the SQE's `buf_index` names).
    pub addr: u64,
    /// Metadata buffer length in bytes.
    pub metadata_len: u32,
    /// Data buffer length in bytes.
    pub data_len: u32,
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
    /// Per-command timeout in milliseconds, 0 for the driver's default
    /// (`nvme_core.io_timeout`, 30 s unless changed).
    pub timeout_ms: u32,
    /// Reserved.
    pub rsvd2: u32,
}

const _: () = assert!(size_of::<PassthruCmd>() == 72);
const _: () = assert!(offset_of!(PassthruCmd, nsid) == 4);
const _: () = assert!(offset_of!(PassthruCmd, metadata) == 16);
const _: () = assert!(offset_of!(PassthruCmd, addr) == 24);
const _: () = assert!(offset_of!(PassthruCmd, data_len) == 36);
const _: () = assert!(offset_of!(PassthruCmd, cdw10) == 40);
const _: () = assert!(offset_of!(PassthruCmd, timeout_ms) == 64);
const _: () = assert!(offset_of!(PassthruCmd, result) == 68);
const _: () = assert!(size_of::<UringCmd>() == 72);
const _: () = assert!(offset_of!(UringCmd, addr) == 24);
const _: () = assert!(offset_of!(UringCmd, data_len) == 36);
const _: () = assert!(offset_of!(UringCmd, cdw10) == 40);
const _: () = assert!(offset_of!(UringCmd, cdw15) == 60);
const _: () = assert!(offset_of!(UringCmd, timeout_ms) == 64);
const _: () = assert!(size_of::<UringCmd>() <= URING_CMD_AREA);

/// Bytes of command data a 128-byte SQE carries (`IORING_SETUP_SQE128`).
pub const URING_CMD_AREA: usize = 80;

/// `_IOC` with direction read|write, type `'N'`, number `nr`, argument size `size`.
const fn iowr(nr: u32, size: usize) -> u32 {
    (3 << 30) | ((size as u32) << 16) | ((b'N' as u32) << 8) | nr
}

/// `NVME_IOCTL_ID` = `_IO('N', 0x40)`: returns the NSID of a namespace node.
pub const NVME_IOCTL_ID: u32 = (b'N' as u32) << 8 | 0x40;
/// `NVME_IOCTL_ADMIN_CMD` = `_IOWR('N', 0x41, struct nvme_admin_cmd)`.
pub const NVME_IOCTL_ADMIN_CMD: u32 = iowr(0x41, size_of::<PassthruCmd>());
/// `NVME_URING_CMD_IO` = `_IOWR('N', 0x80, struct nvme_uring_cmd)`: the
/// `cmd_op` of an I/O command sent with `IORING_OP_URING_CMD`.
pub const NVME_URING_CMD_IO: u32 = iowr(0x80, size_of::<UringCmd>());
/// `NVME_URING_CMD_ADMIN` = `_IOWR('N', 0x82, struct nvme_uring_cmd)`.
pub const NVME_URING_CMD_ADMIN: u32 = iowr(0x82, size_of::<UringCmd>());

const _: () = assert!(NVME_IOCTL_ID == 0x4e40);
const _: () = assert!(NVME_IOCTL_ADMIN_CMD == 0xc048_4e41);
const _: () = assert!(NVME_URING_CMD_IO == 0xc048_4e80);
const _: () = assert!(NVME_URING_CMD_ADMIN == 0xc048_4e82);

impl UringCmd {
    /// The passthrough form of `cmd`, with a data buffer of `data_len` bytes
    /// at user address `addr` (0 and 0 for none) and a kernel-side timeout.
    pub fn from_command(cmd: &Command, addr: u64, data_len: u32, timeout_ms: u32) -> Self {
        UringCmd {
            opcode: cmd.opcode(),
            flags: 0,
            rsvd1: 0,
            nsid: cmd.nsid,
            cdw2: cmd.cdw2,
            cdw3: cmd.cdw3,
            metadata: 0,
            addr,
            metadata_len: 0,
            data_len,
            cdw10: cmd.cdw10,
            cdw11: cmd.cdw11,
            cdw12: cmd.cdw12,
            cdw13: cmd.cdw13,
            cdw14: cmd.cdw14,
            cdw15: cmd.cdw15,
            timeout_ms,
            rsvd2: 0,
        }
    }

    /// The 80-byte command area of a 128-byte SQE holding this command.
    pub fn to_area(&self) -> [u8; URING_CMD_AREA] {
        let mut area = [0u8; URING_CMD_AREA];
        area[..size_of::<UringCmd>()].copy_from_slice(self.as_bytes());
        area
    }
}

impl PassthruCmd {
    /// The admin ioctl form of `cmd`, with a data buffer of `data_len` bytes
    /// at user address `addr` (0 and 0 for none).
    pub fn from_command(cmd: &Command, addr: u64, data_len: u32, timeout_ms: u32) -> Self {
        PassthruCmd {
            opcode: cmd.opcode(),
            flags: 0,
            rsvd1: 0,
            nsid: cmd.nsid,
            cdw2: cmd.cdw2,
            cdw3: cmd.cdw3,
            metadata: 0,
            addr,
            metadata_len: 0,
            data_len,
            cdw10: cmd.cdw10,
            cdw11: cmd.cdw11,
            cdw12: cmd.cdw12,
            cdw13: cmd.cdw13,
            cdw14: cmd.cdw14,
            cdw15: cmd.cdw15,
            timeout_ms,
            result: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::command::NvmOpcode;

    #[test]
    fn uring_cmd_carries_every_command_dword_and_drops_cid_and_prps() {
        let mut c = Command::new(NvmOpcode::WRITE.0, 7);
        c.set_cid(0x1234);
        c.cdw0 |= 0x4000; // PSDT: the kernel picks the data pointer format
        c.prp1 = 0xdead_0000;
        c.cdw2 = 2;
        c.cdw3 = 3;
        c.set_slba(0x1_0000_0002);
        c.cdw12 = 7 | (1 << 30);
        c.cdw13 = 13;
        c.cdw14 = 14;
        c.cdw15 = 15;
        let u = UringCmd::from_command(&c, 0x7000, 4096, 5);
        let area = u.to_area();
        assert_eq!(area[0], 0x01, "opcode");
        assert_eq!(area[1], 0, "flags must be zero");
        assert_eq!(u32::from_le_bytes(area[4..8].try_into().unwrap()), 7);
        assert_eq!(u32::from_le_bytes(area[8..12].try_into().unwrap()), 2);
        assert_eq!(u32::from_le_bytes(area[12..16].try_into().unwrap()), 3);
        assert_eq!(u64::from_le_bytes(area[24..32].try_into().unwrap()), 0x7000);
        assert_eq!(u32::from_le_bytes(area[36..40].try_into().unwrap()), 4096);
        assert_eq!(u32::from_le_bytes(area[40..44].try_into().unwrap()), 2);
        assert_eq!(u32::from_le_bytes(area[44..48].try_into().unwrap()), 1);
        assert_eq!(
            u32::from_le_bytes(area[48..52].try_into().unwrap()),
            7 | (1 << 30)
        );
        assert_eq!(u32::from_le_bytes(area[60..64].try_into().unwrap()), 15);
        assert_eq!(u32::from_le_bytes(area[64..68].try_into().unwrap()), 5);
        assert!(area[68..].iter().all(|&b| b == 0));
    }

    #[test]
    fn admin_passthru_has_the_result_dword_last() {
        let mut c = Command::new(0x06, 0);
        c.cdw10 = 1;
        let p = PassthruCmd::from_command(&c, 0x1000, 4096, 0);
        let b = p.as_bytes();
        assert_eq!(b.len(), 72);
        assert_eq!(b[0], 0x06);
        assert_eq!(u32::from_le_bytes(b[40..44].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(b[68..72].try_into().unwrap()), 0);
    }
}
