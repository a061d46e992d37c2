//! NVMe/TCP protocol data units (NVMe/TCP Transport Specification 1.0, §3.6):
//! the 8-byte common header, every PDU-specific header, header and data
//! digests (CRC32C), a decoder that never panics (typed errors for every
//! malformed field) and an encoder that writes into a caller's buffer
//! without allocating.
//!
//! Layout of a PDU on the wire: common header (CH) and PDU-specific header
//! (PSH), `HLEN` bytes together; the header digest (4 bytes) when `HDGSTF`
//! is set; padding up to `PDO`; `DATAL` data bytes; the data digest (4
//! bytes) when `DDGSTF` is set. `PLEN` counts all of it. Every multi-byte
//! field is little endian.
//!
//! `decode` reads PDUs, `encode` writes them.

mod decode;
mod encode;

pub use decode::{DecodeError, Pdu, decode_header, decode_pdu};
pub use encode::{BufferTooSmall, data_offset, encode, encoded_len};

use crate::spec::{command::Command, completion::Completion};

/// Bytes in the common header.
pub const CH_LEN: usize = 8;
/// Bytes in a header or data digest.
pub const DIGEST_LEN: usize = 4;
/// The longest header this module knows (ICReq/ICResp) plus its digest
/// room: what a receiver buffers before it knows more.
pub const MAX_HEADER_LEN: usize = 128 + DIGEST_LEN;
/// Most data a termination request carries (the offending PDU header).
pub const MAX_TERM_DATA: usize = 152;
/// The smallest MAXH2CDATA a controller may announce (§3.6.2.3).
pub const MIN_MAXH2CDATA: u32 = 4096;

/// PDU-Type (CH byte 0). Open newtype: a peer may send anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PduType(pub u8);

impl PduType {
    /// Initialize Connection Request (host to controller).
    pub const IC_REQ: Self = Self(0x00);
    /// Initialize Connection Response.
    pub const IC_RESP: Self = Self(0x01);
    /// Host to Controller Terminate Connection Request.
    pub const H2C_TERM_REQ: Self = Self(0x02);
    /// Controller to Host Terminate Connection Request.
    pub const C2H_TERM_REQ: Self = Self(0x03);
    /// Command capsule.
    pub const CAPSULE_CMD: Self = Self(0x04);
    /// Response capsule.
    pub const CAPSULE_RESP: Self = Self(0x05);
    /// Host to Controller Data.
    pub const H2C_DATA: Self = Self(0x06);
    /// Controller to Host Data.
    pub const C2H_DATA: Self = Self(0x07);
    /// Ready to Transfer.
    pub const R2T: Self = Self(0x09);

    /// The fixed HLEN of this type, `None` for a type this module does not know.
    pub const fn header_len(self) -> Option<usize> {
        match self.0 {
            0x00 | 0x01 => Some(128),
            0x04 => Some(CH_LEN + 64),
            0x02 | 0x03 | 0x05 | 0x06 | 0x07 | 0x09 => Some(24),
            _ => None,
        }
    }

    /// Whether PDUs of this type carry a header digest when digests are on
    /// (ICReq/ICResp and termination requests never do).
    pub const fn has_header_digest(self) -> bool {
        matches!(self.0, 0x04..=0x07 | 0x09)
    }

    /// Whether PDUs of this type may carry data.
    pub const fn may_carry_data(self) -> bool {
        matches!(self.0, 0x02 | 0x03 | 0x04 | 0x06 | 0x07)
    }
}

/// CH FLAGS bit 0 — HDGSTF, a header digest follows the header.
pub const FLAG_HDGST: u8 = 1 << 0;
/// CH FLAGS bit 1 — DDGSTF, a data digest follows the data.
pub const FLAG_DDGST: u8 = 1 << 1;
/// H2CData/C2HData FLAGS bit 2 — LAST_PDU of this transfer.
pub const FLAG_LAST_PDU: u8 = 1 << 2;
/// C2HData FLAGS bit 3 — SUCCESS: the command completed successfully and no
/// response capsule follows.
pub const FLAG_SUCCESS: u8 = 1 << 3;

/// Which digests a connection negotiated in ICReq/ICResp.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digests {
    /// Header digest (HDGST_ENABLE).
    pub header: bool,
    /// Data digest (DDGST_ENABLE).
    pub data: bool,
}

impl Digests {
    /// ICReq/ICResp DGST byte: bit 0 header, bit 1 data.
    pub const fn to_byte(self) -> u8 {
        (self.header as u8) | ((self.data as u8) << 1)
    }

    /// From the DGST byte.
    pub const fn from_byte(b: u8) -> Self {
        Digests {
            header: b & 1 != 0,
            data: b & 2 != 0,
        }
    }
}

/// CRC32C as NVMe/TCP digests use it (the iSCSI polynomial, stored little endian).
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// Continue a CRC32C over more bytes.
pub fn crc32c_append(crc: u32, bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, bytes)
}

/// Fatal Error Status of a termination request (H2CTermReq/C2HTermReq FES).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fes(pub u16);

impl Fes {
    /// Invalid PDU Header Field (FEI: byte offset of the field).
    pub const INVALID_HEADER_FIELD: Self = Self(0x01);
    /// PDU Sequence Error.
    pub const PDU_SEQUENCE_ERROR: Self = Self(0x02);
    /// Header Digest Error.
    pub const HEADER_DIGEST_ERROR: Self = Self(0x03);
    /// Data Transfer Out of Range.
    pub const DATA_OUT_OF_RANGE: Self = Self(0x04);
    /// R2T Limit Exceeded / Data Transfer Limit Exceeded.
    pub const DATA_LIMIT_EXCEEDED: Self = Self(0x05);
    /// Unsupported Parameter (FEI: byte offset of the field).
    pub const UNSUPPORTED_PARAMETER: Self = Self(0x06);

    /// A readable name, `None` for a value this module does not know.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x01 => "Invalid PDU Header Field",
            0x02 => "PDU Sequence Error",
            0x03 => "Header Digest Error",
            0x04 => "Data Transfer Out of Range",
            0x05 => "Data Transfer Limit Exceeded",
            0x06 => "Unsupported Parameter",
            _ => return None,
        })
    }
}

impl std::fmt::Display for Fes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} (FES {:#x})", self.0),
            None => write!(f, "unknown fatal error status {:#x}", self.0),
        }
    }
}

/// The common header (CH).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommonHeader {
    /// PDU-Type.
    pub pdu_type: PduType,
    /// FLAGS.
    pub flags: u8,
    /// HLEN — length of CH + PSH.
    pub hlen: u8,
    /// PDO — offset of the data from the start of the PDU (0: no data).
    pub pdo: u8,
    /// PLEN — length of the whole PDU.
    pub plen: u32,
}

impl CommonHeader {
    /// Parse the first [`CH_LEN`] bytes; `None` when fewer are given.
    pub fn parse(b: &[u8]) -> Option<Self> {
        let b: &[u8; CH_LEN] = b.get(..CH_LEN)?.try_into().ok()?;
        Some(CommonHeader {
            pdu_type: PduType(b[0]),
            flags: b[1],
            hlen: b[2],
            pdo: b[3],
            plen: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        })
    }
}

/// ICReq PSH fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcReq {
    /// PFV — PDU format version (0).
    pub pfv: u16,
    /// HPDA — host PDU data alignment, 0's based in dwords (data the
    /// controller sends starts at a multiple of `(hpda + 1) * 4`).
    pub hpda: u8,
    /// Digests asked for.
    pub digests: Digests,
    /// MAXR2T — 0's based: R2Ts the host accepts outstanding per command.
    pub maxr2t: u32,
}

/// ICResp PSH fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcResp {
    /// PFV — PDU format version (0).
    pub pfv: u16,
    /// CPDA — controller PDU data alignment, 0's based in dwords (data the
    /// host sends starts at a multiple of `(cpda + 1) * 4`).
    pub cpda: u8,
    /// Digests enabled.
    pub digests: Digests,
    /// MAXH2CDATA — most data bytes in one H2CData PDU.
    pub maxh2cdata: u32,
}

/// The PSH of H2CData and C2HData PDUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataHeader {
    /// CCCID — the command's CID.
    pub cccid: u16,
    /// TTAG — transfer tag of the R2T (H2CData only; 0 in C2HData).
    pub ttag: u16,
    /// DATAO — offset of this PDU's data in the command's data.
    pub offset: u32,
    /// DATAL — data bytes in this PDU.
    pub len: u32,
    /// LAST_PDU flag.
    pub last: bool,
    /// SUCCESS flag (C2HData only).
    pub success: bool,
}

/// R2T PSH fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct R2t {
    /// CCCID — the command's CID.
    pub cccid: u16,
    /// TTAG — to be echoed in the H2CData PDUs.
    pub ttag: u16,
    /// R2TO — offset of the requested data.
    pub offset: u32,
    /// R2TL — bytes requested.
    pub len: u32,
}

/// Termination request PSH fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TermReq {
    /// FES — fatal error status.
    pub fes: Fes,
    /// FEI — fatal error information (field offset, or the MAXH2CDATA limit).
    pub fei: u32,
}

/// A decoded PDU header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    /// ICReq.
    IcReq(IcReq),
    /// ICResp.
    IcResp(IcResp),
    /// CapsuleCmd: the SQE.
    CapsuleCmd(Command),
    /// CapsuleResp: the CQE.
    CapsuleResp(Completion),
    /// H2CData.
    H2cData(DataHeader),
    /// C2HData.
    C2hData(DataHeader),
    /// R2T.
    R2t(R2t),
    /// H2CTermReq.
    H2cTermReq(TermReq),
    /// C2HTermReq.
    C2hTermReq(TermReq),
}

/// A header and where its data lies in the PDU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PduHeader {
    /// The common header as received.
    pub ch: CommonHeader,
    /// The decoded PSH.
    pub header: Header,
    /// Bytes of header (HLEN plus the header digest when present).
    pub header_len: usize,
    /// Bytes of padding between the header and the data.
    pub pad: usize,
    /// Data bytes.
    pub data_len: usize,
    /// Whether a data digest follows the data.
    pub data_digest: bool,
}

impl PduHeader {
    /// Total PDU length (PLEN).
    pub fn total_len(&self) -> usize {
        self.ch.plen as usize
    }
}

#[cfg(test)]
mod tests;
