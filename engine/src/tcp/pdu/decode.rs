//! Decoding of NVMe/TCP PDUs (Transport Specification §3.6): every length
//! (HLEN, PLEN, PDO, DATAL) is checked against the type and the bytes at
//! hand before it is used; header and data digests are verified. Any input
//! gives a PDU or a typed error, never a panic.

use super::{
    CH_LEN, CommonHeader, DIGEST_LEN, DataHeader, Digests, FLAG_DDGST, FLAG_HDGST, FLAG_LAST_PDU,
    FLAG_SUCCESS, Fes, Header, IcReq, IcResp, MAX_TERM_DATA, MIN_MAXH2CDATA, PduHeader, PduType,
    R2t, TermReq, crc32c,
};

/// Why a PDU was rejected. Every variant names the offending field so the
/// peer's fault can be reported (and returned in an H2CTermReq: see
/// [`DecodeError::fes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not enough bytes yet (not an error of the peer: read more).
    #[error("PDU incomplete: {have} of at least {need} bytes")]
    Short {
        /// Bytes available.
        have: usize,
        /// Bytes needed to go on.
        need: usize,
    },
    /// PDU-Type not defined for this direction.
    #[error("unexpected PDU type {0:#04x}")]
    UnexpectedType(u8),
    /// HLEN does not match the type.
    #[error("PDU type {pdu_type:#04x} with HLEN {hlen}, the specification fixes {expected}")]
    BadHlen {
        /// PDU-Type.
        pdu_type: u8,
        /// HLEN received.
        hlen: u8,
        /// HLEN the type has.
        expected: usize,
    },
    /// A digest flag disagrees with what the connection negotiated.
    #[error(
        "PDU type {pdu_type:#04x} {what} digest flag is {got}, the connection negotiated {negotiated}"
    )]
    DigestFlag {
        /// PDU-Type.
        pdu_type: u8,
        /// "header" or "data".
        what: &'static str,
        /// The flag's value in the PDU.
        got: bool,
        /// What ICReq/ICResp set.
        negotiated: bool,
    },
    /// PLEN is too small for the header or over the receiver's limit.
    #[error("PDU type {pdu_type:#04x} PLEN {plen} is out of range ({min}..={max})")]
    BadPlen {
        /// PDU-Type.
        pdu_type: u8,
        /// PLEN received.
        plen: u32,
        /// Smallest acceptable.
        min: usize,
        /// Largest acceptable.
        max: usize,
    },
    /// PDO points inside the header, past the PDU, or is set on a PDU without data.
    #[error(
        "PDU type {pdu_type:#04x} PDO {pdo} is invalid (header {header_len} bytes, PLEN {plen})"
    )]
    BadPdo {
        /// PDU-Type.
        pdu_type: u8,
        /// PDO received.
        pdo: u8,
        /// HLEN plus the header digest.
        header_len: usize,
        /// PLEN.
        plen: u32,
    },
    /// DATAL disagrees with the data PLEN leaves.
    #[error(
        "PDU type {pdu_type:#04x} DATAL {datal} disagrees with the {actual} data bytes PLEN leaves"
    )]
    BadDatal {
        /// PDU-Type.
        pdu_type: u8,
        /// DATAL.
        datal: u32,
        /// Data bytes PLEN - PDO - data digest leave.
        actual: usize,
    },
    /// The header digest does not match the header.
    #[error(
        "header digest mismatch on PDU type {pdu_type:#04x}: received {received:#010x}, computed {computed:#010x}"
    )]
    HeaderDigest {
        /// PDU-Type.
        pdu_type: u8,
        /// Digest in the PDU.
        received: u32,
        /// Digest of the bytes received.
        computed: u32,
    },
    /// The data digest does not match the data.
    #[error(
        "data digest mismatch on PDU type {pdu_type:#04x}: received {received:#010x}, computed {computed:#010x}"
    )]
    DataDigest {
        /// PDU-Type.
        pdu_type: u8,
        /// Digest in the PDU.
        received: u32,
        /// Digest of the bytes received.
        computed: u32,
    },
    /// A field holds a value the specification forbids.
    #[error("PDU type {pdu_type:#04x}: {what}")]
    BadField {
        /// PDU-Type.
        pdu_type: u8,
        /// Which field and why.
        what: &'static str,
        /// Byte offset of the field in the PDU (FEI of a termination request).
        offset: u32,
    },
}

impl DecodeError {
    /// The FES and FEI to send in an H2CTermReq for this error (`None` for
    /// [`DecodeError::Short`], which is no error of the peer).
    pub fn fes(&self) -> Option<(Fes, u32)> {
        Some(match *self {
            DecodeError::Short { .. } => return None,
            DecodeError::UnexpectedType(_) => (Fes::INVALID_HEADER_FIELD, 0),
            DecodeError::BadHlen { .. } => (Fes::INVALID_HEADER_FIELD, 2),
            DecodeError::DigestFlag { .. } => (Fes::INVALID_HEADER_FIELD, 1),
            DecodeError::BadPlen { .. } | DecodeError::BadDatal { .. } => {
                (Fes::INVALID_HEADER_FIELD, 4)
            }
            DecodeError::BadPdo { .. } => (Fes::INVALID_HEADER_FIELD, 3),
            DecodeError::HeaderDigest { .. } => (Fes::HEADER_DIGEST_ERROR, 0),
            // A data digest error is reported per command, not by termination;
            // a connection that wants to terminate uses this.
            DecodeError::DataDigest { .. } => (Fes::PDU_SEQUENCE_ERROR, 0),
            DecodeError::BadField { offset, .. } => (Fes::INVALID_HEADER_FIELD, offset),
        })
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Decode a PDU header from the start of `b` (which may hold more: only the
/// header and its digest are read). `digests` is what the connection
/// negotiated (all off before ICResp); `max_plen` bounds PLEN so a peer
/// cannot make the receiver wait for gigabytes. Needs [`CH_LEN`] bytes to
/// learn the header's length, then `header_len` bytes
/// ([`DecodeError::Short`] says how many).
pub fn decode_header(
    b: &[u8],
    digests: Digests,
    max_plen: usize,
) -> Result<PduHeader, DecodeError> {
    let ch = CommonHeader::parse(b).ok_or(DecodeError::Short {
        have: b.len(),
        need: CH_LEN,
    })?;
    let t = ch.pdu_type;
    let expected = t.header_len().ok_or(DecodeError::UnexpectedType(t.0))?;
    if ch.hlen as usize != expected {
        return Err(DecodeError::BadHlen {
            pdu_type: t.0,
            hlen: ch.hlen,
            expected,
        });
    }
    let hd = ch.flags & FLAG_HDGST != 0;
    let want_hd = digests.header && t.has_header_digest();
    if hd != want_hd {
        return Err(DecodeError::DigestFlag {
            pdu_type: t.0,
            what: "header",
            got: hd,
            negotiated: want_hd,
        });
    }
    let header_len = expected + if hd { DIGEST_LEN } else { 0 };
    let plen = ch.plen as usize;
    if plen < header_len || plen > max_plen.max(header_len) {
        return Err(DecodeError::BadPlen {
            pdu_type: t.0,
            plen: ch.plen,
            min: header_len,
            max: max_plen.max(header_len),
        });
    }
    if b.len() < header_len {
        return Err(DecodeError::Short {
            have: b.len(),
            need: header_len,
        });
    }
    if hd {
        let received = le32(b, expected);
        let computed = crc32c(&b[..expected]);
        if received != computed {
            return Err(DecodeError::HeaderDigest {
                pdu_type: t.0,
                received,
                computed,
            });
        }
    }
    let dd = ch.flags & FLAG_DDGST != 0;
    let bad_pdo = DecodeError::BadPdo {
        pdu_type: t.0,
        pdo: ch.pdo,
        header_len,
        plen: ch.plen,
    };
    // Where the data lies. Termination requests put it right after the
    // header with PDO 0; the others say where with PDO.
    let (pad, data_len) = if plen == header_len {
        if ch.pdo != 0 && !matches!(t, PduType::C2H_TERM_REQ | PduType::H2C_TERM_REQ) {
            // PDO without data: tolerated only when it points at the end.
            if ch.pdo as usize != header_len {
                return Err(bad_pdo);
            }
        }
        if dd {
            return Err(DecodeError::DigestFlag {
                pdu_type: t.0,
                what: "data",
                got: true,
                negotiated: false,
            });
        }
        (0, 0)
    } else if !t.may_carry_data() {
        return Err(DecodeError::BadPlen {
            pdu_type: t.0,
            plen: ch.plen,
            min: header_len,
            max: header_len,
        });
    } else if matches!(t, PduType::C2H_TERM_REQ | PduType::H2C_TERM_REQ) {
        let n = plen - header_len;
        if n > MAX_TERM_DATA || dd {
            return Err(DecodeError::BadPlen {
                pdu_type: t.0,
                plen: ch.plen,
                min: header_len,
                max: header_len + MAX_TERM_DATA,
            });
        }
        (0, n)
    } else {
        let pdo = ch.pdo as usize;
        if pdo < header_len || pdo > plen {
            return Err(bad_pdo);
        }
        if dd != digests.data {
            return Err(DecodeError::DigestFlag {
                pdu_type: t.0,
                what: "data",
                got: dd,
                negotiated: digests.data,
            });
        }
        let dlen = if dd { DIGEST_LEN } else { 0 };
        if plen - pdo < dlen {
            return Err(bad_pdo);
        }
        (pdo - header_len, plen - pdo - dlen)
    };
    let header = decode_psh(&ch, &b[..expected], data_len)?;
    Ok(PduHeader {
        ch,
        header,
        header_len,
        pad,
        data_len,
        data_digest: dd && data_len > 0,
    })
}

fn decode_psh(ch: &CommonHeader, b: &[u8], data_len: usize) -> Result<Header, DecodeError> {
    let t = ch.pdu_type;
    let field = |what, offset| DecodeError::BadField {
        pdu_type: t.0,
        what,
        offset,
    };
    Ok(match t {
        PduType::IC_REQ | PduType::IC_RESP => {
            let pfv = le16(b, 8);
            if pfv != 0 {
                return Err(field("PFV is not 0 (the only PDU format version)", 8));
            }
            if b[10] > 31 {
                return Err(field("PDA over 31 (alignment over 128 bytes)", 10));
            }
            let digests = Digests::from_byte(b[11]);
            if t == PduType::IC_REQ {
                Header::IcReq(IcReq {
                    pfv,
                    hpda: b[10],
                    digests,
                    maxr2t: le32(b, 12),
                })
            } else {
                let maxh2cdata = le32(b, 12);
                if maxh2cdata < MIN_MAXH2CDATA || !maxh2cdata.is_multiple_of(4) {
                    return Err(field(
                        "MAXH2CDATA under 4096 or not a multiple of 4 bytes",
                        12,
                    ));
                }
                Header::IcResp(IcResp {
                    pfv,
                    cpda: b[10],
                    digests,
                    maxh2cdata,
                })
            }
        }
        PduType::CAPSULE_CMD => {
            let mut sqe = [0u8; 64];
            sqe.copy_from_slice(&b[CH_LEN..CH_LEN + 64]);
            Header::CapsuleCmd(zerocopy::transmute!(sqe))
        }
        PduType::CAPSULE_RESP => {
            let mut cqe = [0u8; 16];
            cqe.copy_from_slice(&b[CH_LEN..CH_LEN + 16]);
            Header::CapsuleResp(zerocopy::transmute!(cqe))
        }
        PduType::H2C_DATA | PduType::C2H_DATA => {
            let d = DataHeader {
                cccid: le16(b, 8),
                ttag: le16(b, 10),
                offset: le32(b, 12),
                len: le32(b, 16),
                last: ch.flags & FLAG_LAST_PDU != 0,
                success: ch.flags & FLAG_SUCCESS != 0,
            };
            if d.len as usize != data_len {
                return Err(DecodeError::BadDatal {
                    pdu_type: t.0,
                    datal: d.len,
                    actual: data_len,
                });
            }
            if d.len == 0 {
                return Err(field("DATAL is 0", 16));
            }
            if d.offset.checked_add(d.len).is_none() {
                return Err(field("DATAO + DATAL overflows", 12));
            }
            if t == PduType::C2H_DATA {
                if d.success && !d.last {
                    return Err(field("SUCCESS set without LAST_PDU", 1));
                }
                Header::C2hData(d)
            } else {
                if d.success {
                    return Err(field("SUCCESS set on H2CData", 1));
                }
                Header::H2cData(d)
            }
        }
        PduType::R2T => {
            let r = R2t {
                cccid: le16(b, 8),
                ttag: le16(b, 10),
                offset: le32(b, 12),
                len: le32(b, 16),
            };
            if r.len == 0 {
                return Err(field("R2TL is 0", 16));
            }
            if r.offset.checked_add(r.len).is_none() {
                return Err(field("R2TO + R2TL overflows", 12));
            }
            Header::R2t(r)
        }
        PduType::H2C_TERM_REQ | PduType::C2H_TERM_REQ => {
            let tr = TermReq {
                fes: Fes(le16(b, 8)),
                fei: le32(b, 10),
            };
            if t == PduType::H2C_TERM_REQ {
                Header::H2cTermReq(tr)
            } else {
                Header::C2hTermReq(tr)
            }
        }
        other => return Err(DecodeError::UnexpectedType(other.0)),
    })
}

/// A whole PDU in one buffer: its header and data (digest checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pdu<'a> {
    /// The header.
    pub header: PduHeader,
    /// The data (empty when none).
    pub data: &'a [u8],
}

/// Decode one whole PDU from the start of `b`: header checks of
/// [`decode_header`], then the data and its digest. Returns the PDU and the
/// bytes it took.
pub fn decode_pdu(
    b: &[u8],
    digests: Digests,
    max_plen: usize,
) -> Result<(Pdu<'_>, usize), DecodeError> {
    let header = decode_header(b, digests, max_plen)?;
    let plen = header.total_len();
    if b.len() < plen {
        return Err(DecodeError::Short {
            have: b.len(),
            need: plen,
        });
    }
    let start = header.header_len + header.pad;
    let data = &b[start..start + header.data_len];
    if header.data_digest {
        let at = start + header.data_len;
        let received = le32(b, at);
        let computed = crc32c(data);
        if received != computed {
            return Err(DecodeError::DataDigest {
                pdu_type: header.ch.pdu_type.0,
                received,
                computed,
            });
        }
    }
    Ok((Pdu { header, data }, plen))
}
