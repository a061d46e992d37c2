//! NVMe over Fabrics commands (NVMe Base 2.0 §6, Fabrics Command Set):
//! Connect for the admin and I/O queues, Property Get/Set (CAP, VS, CC,
//! CSTS in place of BAR registers), Keep Alive, and the SGL descriptors a
//! TCP command carries (in-capsule data or transport data). Plain data: no I/O.

use crate::spec::{
    command::{AdminOpcode, Command},
    status::{Status, StatusCodeType},
};

/// Opcode of every Fabrics command.
pub const FABRICS_OPCODE: u8 = 0x7F;
/// Fabrics command type (FCTYPE, SQE byte 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FcType(pub u8);

impl FcType {
    /// Property Set.
    pub const PROPERTY_SET: Self = Self(0x00);
    /// Connect.
    pub const CONNECT: Self = Self(0x01);
    /// Property Get.
    pub const PROPERTY_GET: Self = Self(0x04);
    /// Disconnect.
    pub const DISCONNECT: Self = Self(0x08);
}

/// The well-known NQN of a discovery controller.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";
/// Bytes of Connect data.
pub const CONNECT_DATA_LEN: usize = 1024;
/// Longest NQN (223 bytes of UTF-8; the field holds 256 with a NUL).
pub const MAX_NQN_LEN: usize = 223;
/// CNTLID asking the target for any controller (dynamic controller model).
pub const CNTLID_DYNAMIC: u16 = 0xFFFF;

/// Property offsets (the register offsets of a PCIe controller).
pub mod property {
    /// CAP — controller capabilities, 8 bytes.
    pub const CAP: u32 = 0x00;
    /// VS — version, 4 bytes.
    pub const VS: u32 = 0x08;
    /// CC — controller configuration, 4 bytes.
    pub const CC: u32 = 0x14;
    /// CSTS — controller status, 4 bytes.
    pub const CSTS: u32 = 0x1C;
}

/// PSDT value in CDW0 bits 15:14: SGLs, MPTR an address (the only data
/// pointer Fabrics allows).
const CDW0_PSDT_SGL: u32 = 1 << 14;

/// SGL descriptor type/subtype byte: Data Block, subtype Offset — data in
/// the command capsule at this offset.
pub const SGL_IN_CAPSULE: u8 = 0x01;
/// SGL descriptor type/subtype byte: Transport SGL Data Block, subtype
/// Transport Specific — data moved by C2HData/R2T+H2CData.
pub const SGL_TRANSPORT: u8 = 0x5A;
/// SGL descriptor type/subtype byte: Data Block with no data (length 0).
const SGL_NULL: u8 = 0x00;

/// Point `cmd`'s data pointer at `len` bytes: in the capsule (`in_capsule`)
/// or moved by the transport. Sets PSDT to SGL. `len` 0 makes a null descriptor.
pub fn set_data_sgl(cmd: &mut Command, len: u32, in_capsule: bool) {
    cmd.cdw0 = (cmd.cdw0 & !(3 << 14)) | CDW0_PSDT_SGL;
    // SGL1 spans DPTR (bytes 24..40): address (8), length (4), reserved (3),
    // type/subtype (1). PRP1 is bytes 24..32 and PRP2 bytes 32..40.
    cmd.prp1 = 0;
    let kind = match (len, in_capsule) {
        (0, _) => SGL_NULL,
        (_, true) => SGL_IN_CAPSULE,
        (_, false) => SGL_TRANSPORT,
    };
    cmd.prp2 = len as u64 | (kind as u64) << 56;
}

/// The SGL1 length and type byte of `cmd` (for checks and tests).
pub fn data_sgl(cmd: &Command) -> (u32, u8) {
    (cmd.prp2 as u32, (cmd.prp2 >> 56) as u8)
}

fn fabrics(fctype: FcType) -> Command {
    let mut c = Command::new(FABRICS_OPCODE, 0);
    // FCTYPE is SQE byte 4, the low byte of the NSID dword's place.
    c.nsid = fctype.0 as u32;
    c
}

/// Connect (FCTYPE 01h). `sqsize_z` is SQSIZE, 0's based; `kato_ms` the
/// Keep Alive Timeout (admin queue only; 0 disables it). With
/// `disable_sq_flow_control` CATTR bit 2 asks the controller to stop
/// reporting SQHD (it may then complete reads with C2HData SUCCESS).
/// The 1024-byte data comes from [`connect_data`], in the capsule.
pub fn connect(qid: u16, sqsize_z: u16, kato_ms: u32, disable_sq_flow_control: bool) -> Command {
    let mut c = fabrics(FcType::CONNECT);
    // Bytes 40..42 RECFMT (0), 42..44 QID, 44..46 SQSIZE, 46 CATTR, 48..52 KATO.
    c.cdw10 = (qid as u32) << 16;
    c.cdw11 = sqsize_z as u32 | if disable_sq_flow_control { 1 << 18 } else { 0 };
    c.cdw12 = kato_ms;
    set_data_sgl(&mut c, CONNECT_DATA_LEN as u32, true);
    c
}

/// A Connect argument the target could never accept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} is {len} bytes; an NQN is 1 to {MAX_NQN_LEN} bytes (e.g. nqn.2014-08.org.example:disk1)"
)]
pub struct BadNqn {
    /// "subsystem NQN" or "host NQN".
    pub what: &'static str,
    /// Its length.
    pub len: usize,
}

/// The Connect data: HOSTID, CNTLID, SUBNQN, HOSTNQN (NUL-padded).
pub fn connect_data(
    host_id: &[u8; 16],
    cntlid: u16,
    subnqn: &str,
    hostnqn: &str,
) -> Result<[u8; CONNECT_DATA_LEN], BadNqn> {
    for (what, nqn) in [("subsystem NQN", subnqn), ("host NQN", hostnqn)] {
        if nqn.is_empty() || nqn.len() > MAX_NQN_LEN {
            return Err(BadNqn {
                what,
                len: nqn.len(),
            });
        }
    }
    let mut d = [0u8; CONNECT_DATA_LEN];
    d[..16].copy_from_slice(host_id);
    d[16..18].copy_from_slice(&cntlid.to_le_bytes());
    d[256..256 + subnqn.len()].copy_from_slice(subnqn.as_bytes());
    d[512..512 + hostnqn.len()].copy_from_slice(hostnqn.as_bytes());
    Ok(d)
}

/// The host NQN derived from a host ID, in the UUID form the specification
/// suggests (`nqn.2014-08.org.nvmexpress:uuid:<uuid>`).
pub fn host_nqn_from_id(host_id: &[u8; 16]) -> String {
    let h = host_id;
    format!(
        "nqn.2014-08.org.nvmexpress:uuid:{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        h[0],
        h[1],
        h[2],
        h[3],
        h[4],
        h[5],
        h[6],
        h[7],
        h[8],
        h[9],
        h[10],
        h[11],
        h[12],
        h[13],
        h[14],
        h[15]
    )
}

/// Property Get (FCTYPE 04h) of `offset`, 8 bytes wide when `wide`.
/// The value comes back in completion DW0 (and DW1 for 8 bytes).
pub fn property_get(offset: u32, wide: bool) -> Command {
    let mut c = fabrics(FcType::PROPERTY_GET);
    // Byte 40 ATTRIB (bits 2:0 size: 0 four bytes, 1 eight), 44..48 OFST.
    c.cdw10 = wide as u32;
    c.cdw11 = offset;
    set_data_sgl(&mut c, 0, true);
    c
}

/// Property Set (FCTYPE 00h) of a 4-byte property.
pub fn property_set(offset: u32, value: u32) -> Command {
    let mut c = fabrics(FcType::PROPERTY_SET);
    // Byte 40 ATTRIB, 44..48 OFST, 48..56 VALUE.
    c.cdw10 = 0;
    c.cdw11 = offset;
    c.cdw12 = value;
    c.cdw13 = 0;
    set_data_sgl(&mut c, 0, true);
    c
}

/// Keep Alive (admin opcode 18h).
pub fn keep_alive() -> Command {
    let mut c = Command::new(AdminOpcode::KEEP_ALIVE.0, 0);
    set_data_sgl(&mut c, 0, true);
    c
}

/// Connect status codes (command specific, SCT 1h).
pub mod connect_sc {
    /// Incompatible Format (RECFMT).
    pub const INCOMPATIBLE_FORMAT: u8 = 0x80;
    /// Controller Busy.
    pub const CONTROLLER_BUSY: u8 = 0x81;
    /// Connect Invalid Parameters (DW0: IATTR, IPO).
    pub const INVALID_PARAMETERS: u8 = 0x82;
    /// Connect Restart Discovery.
    pub const RESTART_DISCOVERY: u8 = 0x83;
    /// Connect Invalid Host.
    pub const INVALID_HOST: u8 = 0x84;
}

/// A rejected Connect explained: the status, and for Invalid Parameters
/// which field the target named (DW0 bits 23:16 IATTR, bit 16 set: in the
/// Connect data; bits 15:0 IPO, the byte offset).
pub fn explain_connect_failure(status: Status, dw0: u32) -> String {
    if status.sct() != StatusCodeType::COMMAND_SPECIFIC {
        return format!("the target rejected Connect: {status}");
    }
    match status.sc() {
        connect_sc::INVALID_PARAMETERS => {
            let in_data = (dw0 >> 16) & 1 != 0;
            let ipo = dw0 as u16;
            let field = match (in_data, ipo) {
                (true, 256) => {
                    "the subsystem NQN: the target has no such subsystem on this port \
                     (list what the port offers with a discovery, or check \
                     /sys/kernel/config/nvmet/ports/*/subsystems on the target)"
                }
                (true, 512) => "the host NQN",
                (true, 16) => "the controller ID (CNTLID): no such controller for an I/O queue",
                (true, 0) => "the host ID",
                (false, 42) => "the queue ID (QID): over the number of I/O queues allowed",
                (false, 44) => "the queue size (SQSIZE): over MQES or 0",
                (false, 46) => "the connect attributes (CATTR)",
                (false, 48) => "the keep alive timeout (KATO)",
                _ => "a field the target named by offset",
            };
            format!(
                "the target rejected Connect: invalid parameter in the {} at byte {ipo}: {field}",
                if in_data { "Connect data" } else { "command" }
            )
        }
        connect_sc::INVALID_HOST => "the target rejected Connect: this host NQN is not allowed \
             to access the subsystem (add it under the subsystem's allowed_hosts, or set \
             attr_allow_any_host to 1 on the target)"
            .to_string(),
        connect_sc::CONTROLLER_BUSY => {
            "the target rejected Connect: controller busy (retry later)".to_string()
        }
        connect_sc::RESTART_DISCOVERY => {
            "the target rejected Connect: restart discovery (the subsystem moved)".to_string()
        }
        connect_sc::INCOMPATIBLE_FORMAT => {
            "the target rejected Connect: incompatible record format".to_string()
        }
        _ => format!("the target rejected Connect: {status}"),
    }
}

/// Controller configuration to enable a Fabrics controller: EN, CSS NVM,
/// MPS 4 KiB, AMS round robin, IOSQES 6 (64-byte SQE), IOCQES 4 (16-byte
/// CQE). A Fabrics target checks IOSQES/IOCQES although it has no rings.
pub const CC_ENABLE: u32 = 1 | (6 << 16) | (4 << 20);
/// CC.SHN — normal shutdown notification (bits 15:14 = 01b).
pub const CC_SHN_NORMAL: u32 = 1 << 14;
/// CSTS.RDY.
pub const CSTS_RDY: u32 = 1;
/// CSTS.CFS — controller fatal status.
pub const CSTS_CFS: u32 = 1 << 1;
/// CSTS.SHST — shutdown status (bits 3:2), 10b = complete.
pub const CSTS_SHST_COMPLETE: u32 = 2 << 2;

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    #[test]
    fn connect_places_qid_sqsize_cattr_kato_and_in_capsule_sgl_at_spec_offsets() {
        let c = connect(3, 127, 5000, true);
        let b = c.as_bytes();
        assert_eq!(b[0], 0x7F);
        assert_eq!(b[1] >> 6, 1, "PSDT = SGL");
        assert_eq!(b[4], 0x01, "FCTYPE Connect");
        assert_eq!(u16::from_le_bytes([b[42], b[43]]), 3);
        assert_eq!(u16::from_le_bytes([b[44], b[45]]), 127);
        assert_eq!(b[46], 1 << 2);
        assert_eq!(u32::from_le_bytes([b[48], b[49], b[50], b[51]]), 5000);
        assert_eq!(u32::from_le_bytes([b[32], b[33], b[34], b[35]]), 1024);
        assert_eq!(b[39], SGL_IN_CAPSULE);
    }

    #[test]
    fn property_get_and_set_place_attrib_offset_and_value() {
        let g = property_get(property::CAP, true);
        let b = g.as_bytes();
        assert_eq!((b[4], b[40]), (0x04, 1));
        let s = property_set(property::CC, CC_ENABLE);
        let b = s.as_bytes();
        assert_eq!((b[4], b[40]), (0x00, 0));
        assert_eq!(u32::from_le_bytes([b[44], b[45], b[46], b[47]]), 0x14);
        assert_eq!(u32::from_le_bytes([b[48], b[49], b[50], b[51]]), CC_ENABLE);
    }

    #[test]
    fn connect_data_places_nqns_and_rejects_empty_or_long_ones() {
        let d = connect_data(&[7; 16], 0xFFFF, "nqn.a", "nqn.h").unwrap();
        assert_eq!(&d[..16], &[7; 16]);
        assert_eq!(&d[16..18], &[0xFF, 0xFF]);
        assert_eq!(&d[256..262], b"nqn.a\0");
        assert_eq!(&d[512..518], b"nqn.h\0");
        assert!(connect_data(&[0; 16], 1, "", "nqn.h").is_err());
        assert!(connect_data(&[0; 16], 1, "n", &"x".repeat(224)).is_err());
    }

    #[test]
    fn unknown_subsystem_rejection_names_the_subsystem_nqn() {
        let st = Status::new(StatusCodeType::COMMAND_SPECIFIC, 0x82).with_dnr(true);
        let msg = explain_connect_failure(st, (1 << 16) | 256);
        assert!(msg.contains("subsystem NQN"), "{msg}");
        let msg = explain_connect_failure(Status::new(StatusCodeType::COMMAND_SPECIFIC, 0x84), 0);
        assert!(msg.contains("allow_any_host"), "{msg}");
    }

    #[test]
    fn host_nqn_has_uuid_form() {
        let n = host_nqn_from_id(&[0xab; 16]);
        assert_eq!(n.len(), "nqn.2014-08.org.nvmexpress:uuid:".len() + 36);
    }
}
