//! Encoding of NVMe/TCP PDUs into a caller's buffer, without allocating:
//! common header from the PSH, header digest, padding to the receiver's
//! data alignment, data and data digest.

use super::{
    CH_LEN, DIGEST_LEN, Digests, FLAG_DDGST, FLAG_HDGST, FLAG_LAST_PDU, FLAG_SUCCESS, Header,
    PduType, crc32c,
};

/// The caller's buffer is too small for the PDU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("PDU needs {need} bytes, the buffer has {have}")]
pub struct BufferTooSmall {
    /// Bytes needed.
    pub need: usize,
    /// Bytes available.
    pub have: usize,
}

/// Data offset of a PDU with a header of `header_len` bytes (digest
/// included) when the receiver asked for alignment `pda` (0's based dwords).
pub const fn data_offset(header_len: usize, pda: u8) -> usize {
    let align = (pda as usize + 1) * 4;
    header_len.div_ceil(align) * align
}

/// Bytes [`encode`] writes for a PDU of `pdu_type` with `data_len` data bytes.
pub fn encoded_len(pdu_type: PduType, data_len: usize, digests: Digests, pda: u8) -> usize {
    let hlen = pdu_type.header_len().unwrap_or(CH_LEN);
    let hd = if digests.header && pdu_type.has_header_digest() {
        DIGEST_LEN
    } else {
        0
    };
    if data_len == 0 {
        return hlen + hd;
    }
    if matches!(pdu_type, PduType::H2C_TERM_REQ | PduType::C2H_TERM_REQ) {
        return hlen + data_len;
    }
    let dd = if digests.data { DIGEST_LEN } else { 0 };
    data_offset(hlen + hd, pda) + data_len + dd
}

/// Encode a PDU into `out` without allocating: the header (`header` gives
/// the PSH; the CH is built from it), the header digest when negotiated,
/// padding to the receiver's alignment `pda`, `data` and its digest.
/// Returns the bytes written (PLEN). Termination requests carry their data
/// right after the header, unaligned and without digests.
pub fn encode(
    out: &mut [u8],
    header: &Header,
    data: &[u8],
    digests: Digests,
    pda: u8,
) -> Result<usize, BufferTooSmall> {
    let (t, mut flags) = match header {
        Header::IcReq(_) => (PduType::IC_REQ, 0),
        Header::IcResp(_) => (PduType::IC_RESP, 0),
        Header::CapsuleCmd(_) => (PduType::CAPSULE_CMD, 0),
        Header::CapsuleResp(_) => (PduType::CAPSULE_RESP, 0),
        Header::H2cData(d) => (PduType::H2C_DATA, if d.last { FLAG_LAST_PDU } else { 0 }),
        Header::C2hData(d) => (
            PduType::C2H_DATA,
            if d.last { FLAG_LAST_PDU } else { 0 } | if d.success { FLAG_SUCCESS } else { 0 },
        ),
        Header::R2t(_) => (PduType::R2T, 0),
        Header::H2cTermReq(_) => (PduType::H2C_TERM_REQ, 0),
        Header::C2hTermReq(_) => (PduType::C2H_TERM_REQ, 0),
    };
    let term = matches!(t, PduType::H2C_TERM_REQ | PduType::C2H_TERM_REQ);
    let hlen = t.header_len().unwrap_or(CH_LEN);
    let hd = digests.header && t.has_header_digest();
    let header_len = hlen + if hd { DIGEST_LEN } else { 0 };
    let (pdo, dd) = if data.is_empty() || term {
        (0, false)
    } else {
        (data_offset(header_len, pda), digests.data)
    };
    let data_at = if term { header_len } else { pdo };
    let plen = if data.is_empty() {
        header_len
    } else {
        data_at + data.len() + if dd { DIGEST_LEN } else { 0 }
    };
    if out.len() < plen || pdo > u8::MAX as usize || plen > u32::MAX as usize {
        return Err(BufferTooSmall {
            need: plen,
            have: out.len(),
        });
    }
    if hd {
        flags |= FLAG_HDGST;
    }
    if dd {
        flags |= FLAG_DDGST;
    }
    let out = &mut out[..plen];
    out[..header_len].fill(0);
    out[0] = t.0;
    out[1] = flags;
    out[2] = hlen as u8;
    out[3] = pdo as u8;
    out[4..8].copy_from_slice(&(plen as u32).to_le_bytes());
    let psh = &mut out[CH_LEN..hlen];
    match header {
        Header::IcReq(r) => {
            psh[0..2].copy_from_slice(&r.pfv.to_le_bytes());
            psh[2] = r.hpda;
            psh[3] = r.digests.to_byte();
            psh[4..8].copy_from_slice(&r.maxr2t.to_le_bytes());
        }
        Header::IcResp(r) => {
            psh[0..2].copy_from_slice(&r.pfv.to_le_bytes());
            psh[2] = r.cpda;
            psh[3] = r.digests.to_byte();
            psh[4..8].copy_from_slice(&r.maxh2cdata.to_le_bytes());
        }
        Header::CapsuleCmd(c) => psh.copy_from_slice(zerocopy::IntoBytes::as_bytes(c)),
        Header::CapsuleResp(c) => psh[..16].copy_from_slice(zerocopy::IntoBytes::as_bytes(c)),
        Header::H2cData(d) | Header::C2hData(d) => {
            psh[0..2].copy_from_slice(&d.cccid.to_le_bytes());
            psh[2..4].copy_from_slice(&d.ttag.to_le_bytes());
            psh[4..8].copy_from_slice(&d.offset.to_le_bytes());
            psh[8..12].copy_from_slice(&d.len.to_le_bytes());
        }
        Header::R2t(r) => {
            psh[0..2].copy_from_slice(&r.cccid.to_le_bytes());
            psh[2..4].copy_from_slice(&r.ttag.to_le_bytes());
            psh[4..8].copy_from_slice(&r.offset.to_le_bytes());
            psh[8..12].copy_from_slice(&r.len.to_le_bytes());
        }
        Header::H2cTermReq(r) | Header::C2hTermReq(r) => {
            psh[0..2].copy_from_slice(&r.fes.0.to_le_bytes());
            psh[2..6].copy_from_slice(&r.fei.to_le_bytes());
        }
    }
    if hd {
        let crc = crc32c(&out[..hlen]);
        out[hlen..header_len].copy_from_slice(&crc.to_le_bytes());
    }
    if !data.is_empty() {
        out[header_len..data_at].fill(0);
        out[data_at..data_at + data.len()].copy_from_slice(data);
        if dd {
            let crc = crc32c(data);
            out[data_at + data.len()..].copy_from_slice(&crc.to_le_bytes());
        }
    }
    Ok(plen)
}
