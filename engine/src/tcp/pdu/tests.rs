//! PDU round trips, one test per decoder error, and random input that must
//! never panic the decoder.

use proptest::prelude::*;

use super::*;
use crate::spec::{
    command::Command,
    completion::Completion,
    status::{Status, StatusCodeType},
};

const ALL: Digests = Digests {
    header: true,
    data: true,
};
const MAX: usize = 1 << 20;

fn enc(h: &Header, data: &[u8], d: Digests, pda: u8) -> Vec<u8> {
    let mut b = vec![0u8; 512 + data.len()];
    let n = encode(&mut b, h, data, d, pda).unwrap();
    b.truncate(n);
    b
}

fn samples() -> Vec<(Header, Vec<u8>)> {
    let mut cmd = Command::new(0x01, 1);
    cmd.set_cid(7);
    cmd.cdw12 = 3;
    let cqe = Completion::new(
        5,
        3,
        1,
        7,
        Status::new(StatusCodeType::GENERIC, 0x02),
        false,
    );
    let d = DataHeader {
        cccid: 7,
        ttag: 2,
        offset: 4096,
        len: 100,
        last: true,
        success: false,
    };
    vec![
        (
            Header::IcReq(IcReq {
                pfv: 0,
                hpda: 3,
                digests: ALL,
                maxr2t: 0,
            }),
            vec![],
        ),
        (
            Header::IcResp(IcResp {
                pfv: 0,
                cpda: 1,
                digests: ALL,
                maxh2cdata: 131072,
            }),
            vec![],
        ),
        (Header::CapsuleCmd(cmd), vec![]),
        (Header::CapsuleCmd(cmd), vec![0xA5; 300]),
        (Header::CapsuleResp(cqe), vec![]),
        (Header::H2cData(d), vec![1; 100]),
        (
            Header::C2hData(DataHeader {
                ttag: 0,
                success: true,
                ..d
            }),
            vec![2; 100],
        ),
        (
            Header::R2t(R2t {
                cccid: 7,
                ttag: 9,
                offset: 0,
                len: 65536,
            }),
            vec![],
        ),
        (
            Header::C2hTermReq(TermReq {
                fes: Fes::DATA_LIMIT_EXCEEDED,
                fei: 8192,
            }),
            vec![0x04; 24],
        ),
        (
            Header::H2cTermReq(TermReq {
                fes: Fes::HEADER_DIGEST_ERROR,
                fei: 0,
            }),
            vec![],
        ),
    ]
}

#[test]
fn every_pdu_type_round_trips_with_and_without_digests_and_alignment() {
    for digests in [
        Digests::default(),
        ALL,
        Digests {
            header: true,
            data: false,
        },
    ] {
        for pda in [0u8, 1, 7] {
            for (h, data) in samples() {
                let b = enc(&h, &data, digests, pda);
                let (pdu, used) = decode_pdu(&b, digests, MAX)
                    .unwrap_or_else(|e| panic!("{h:?} {digests:?} pda {pda}: {e}"));
                assert_eq!(used, b.len());
                assert_eq!(pdu.header.header, h);
                assert_eq!(pdu.data, &data[..]);
                assert_eq!(
                    encoded_len(pdu.header.ch.pdu_type, data.len(), digests, pda),
                    b.len()
                );
                if !data.is_empty() && !matches!(h, Header::C2hTermReq(_)) {
                    assert_eq!(pdu.header.ch.pdo as usize % ((pda as usize + 1) * 4), 0);
                }
            }
        }
    }
}

#[test]
fn c2h_data_layout_matches_the_specification_offsets() {
    let d = DataHeader {
        cccid: 0x1234,
        ttag: 0,
        offset: 0x10,
        len: 4,
        last: true,
        success: true,
    };
    let b = enc(&Header::C2hData(d), &[9, 9, 9, 9], ALL, 0);
    // CH: type 7, flags HDGSTF|DDGSTF|LAST|SUCCESS, HLEN 24, PDO 28, PLEN 36.
    assert_eq!(&b[..8], &[7, 0x0F, 24, 28, 36, 0, 0, 0]);
    assert_eq!(&b[8..10], &[0x34, 0x12]);
    assert_eq!(&b[12..16], &[0x10, 0, 0, 0]);
    assert_eq!(&b[16..20], &[4, 0, 0, 0]);
    assert_eq!(
        u32::from_le_bytes(b[24..28].try_into().unwrap()),
        crc32c(&b[..24])
    );
    assert_eq!(
        u32::from_le_bytes(b[32..36].try_into().unwrap()),
        crc32c(&[9, 9, 9, 9])
    );
}

#[test]
fn crc32c_is_the_castagnoli_check_value() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
}

#[test]
fn encoder_refuses_a_short_buffer_without_writing_past_it() {
    let (h, data) = samples().remove(3);
    let mut b = [0u8; 100];
    assert_eq!(
        encode(&mut b, &h, &data, Digests::default(), 0),
        Err(BufferTooSmall {
            need: 372,
            have: 100
        })
    );
}

fn resp() -> Vec<u8> {
    let (h, _) = samples().remove(4);
    enc(&h, &[], Digests::default(), 0)
}

fn c2h(d: Digests) -> Vec<u8> {
    let (h, data) = samples().remove(6);
    enc(&h, &data, d, 0)
}

#[test]
fn short_input_asks_for_the_header_then_the_whole_pdu() {
    let b = c2h(ALL);
    assert_eq!(
        decode_pdu(&b[..5], ALL, MAX),
        Err(DecodeError::Short { have: 5, need: 8 })
    );
    assert_eq!(
        decode_pdu(&b[..20], ALL, MAX),
        Err(DecodeError::Short { have: 20, need: 28 })
    );
    assert_eq!(
        decode_pdu(&b[..40], ALL, MAX),
        Err(DecodeError::Short {
            have: 40,
            need: b.len()
        })
    );
}

#[test]
fn unknown_type_and_wrong_hlen_are_rejected() {
    let mut b = resp();
    b[0] = 0x08;
    assert_eq!(
        decode_pdu(&b, Digests::default(), MAX),
        Err(DecodeError::UnexpectedType(8))
    );
    let mut b = resp();
    b[2] = 25;
    assert!(matches!(
        decode_pdu(&b, Digests::default(), MAX),
        Err(DecodeError::BadHlen {
            hlen: 25,
            expected: 24,
            ..
        })
    ));
}

#[test]
fn digest_flags_must_match_the_negotiation() {
    let b = resp();
    assert!(matches!(
        decode_pdu(&b, ALL, MAX),
        Err(DecodeError::DigestFlag { what: "header", .. })
    ));
    let b = c2h(Digests {
        header: false,
        data: true,
    });
    assert!(matches!(
        decode_pdu(&b, Digests::default(), MAX),
        Err(DecodeError::DigestFlag { what: "data", .. })
    ));
    // A data digest flag on a PDU without data.
    let mut b = resp();
    b[1] |= FLAG_DDGST;
    assert!(matches!(
        decode_pdu(&b, Digests::default(), MAX),
        Err(DecodeError::DigestFlag { what: "data", .. })
    ));
}

#[test]
fn plen_below_the_header_over_the_limit_or_with_data_on_a_dataless_type_is_rejected() {
    let mut b = resp();
    b[4] = 20;
    assert!(matches!(
        decode_pdu(&b, Digests::default(), MAX),
        Err(DecodeError::BadPlen { plen: 20, .. })
    ));
    let b = c2h(Digests::default());
    assert!(matches!(
        decode_pdu(&b, Digests::default(), 64),
        Err(DecodeError::BadPlen { max: 64, .. })
    ));
    let mut b = resp();
    b[4] = 28;
    b.extend_from_slice(&[0; 4]);
    assert!(matches!(
        decode_pdu(&b, Digests::default(), MAX),
        Err(DecodeError::BadPlen { .. })
    ));
    // A termination request with more than 152 bytes of data.
    let mut t = enc(&samples()[8].0, &[1; 24], Digests::default(), 0);
    t[4..8].copy_from_slice(&(24u32 + 153).to_le_bytes());
    assert!(matches!(
        decode_header(&t, Digests::default(), MAX),
        Err(DecodeError::BadPlen { .. })
    ));
}

#[test]
fn pdo_inside_the_header_or_past_the_pdu_is_rejected() {
    for pdo in [0u8, 10, 23, 200] {
        let mut b = c2h(Digests::default());
        b[3] = pdo;
        assert!(
            matches!(
                decode_pdu(&b, Digests::default(), MAX),
                Err(DecodeError::BadPdo { .. })
            ),
            "PDO {pdo}"
        );
    }
}

#[test]
fn datal_must_equal_the_data_plen_leaves() {
    let mut b = c2h(Digests::default());
    b[16] = 99;
    assert!(matches!(
        decode_pdu(&b, Digests::default(), MAX),
        Err(DecodeError::BadDatal {
            datal: 99,
            actual: 100,
            ..
        })
    ));
}

#[test]
fn header_and_data_digest_mismatches_are_reported_with_both_values() {
    let mut b = c2h(ALL);
    b[9] ^= 1;
    assert!(matches!(
        decode_pdu(&b, ALL, MAX),
        Err(DecodeError::HeaderDigest { .. })
    ));
    let mut b = c2h(ALL);
    b[30] ^= 1;
    let e = decode_pdu(&b, ALL, MAX).unwrap_err();
    assert!(
        matches!(e, DecodeError::DataDigest { pdu_type: 7, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("data digest mismatch"));
}

#[test]
fn forbidden_field_values_are_rejected_with_their_offset() {
    let ic = |pfv: u16, maxh2c: u32| {
        let mut b = enc(&samples()[1].0, &[], Digests::default(), 0);
        b[8..10].copy_from_slice(&pfv.to_le_bytes());
        b[12..16].copy_from_slice(&maxh2c.to_le_bytes());
        b
    };
    let field = |b: &[u8]| match decode_pdu(b, Digests::default(), MAX) {
        Err(DecodeError::BadField { offset, .. }) => offset,
        other => panic!("{other:?}"),
    };
    assert_eq!(field(&ic(1, 8192)), 8);
    assert_eq!(field(&ic(0, 4092)), 12);
    assert_eq!(field(&ic(0, 8190)), 12);
    let mut b = c2h(Digests::default());
    b[1] &= !FLAG_LAST_PDU;
    assert_eq!(field(&b), 1, "SUCCESS without LAST_PDU");
    let mut b = c2h(Digests::default());
    b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(field(&b), 12, "DATAO + DATAL overflows");
    let mut r = enc(&samples()[7].0, &[], Digests::default(), 0);
    r[16..20].fill(0);
    assert_eq!(field(&r), 16, "R2TL 0");
    let e = DecodeError::BadField {
        pdu_type: 9,
        what: "x",
        offset: 16,
    };
    assert_eq!(e.fes(), Some((Fes::INVALID_HEADER_FIELD, 16)));
}

proptest! {
    #[test]
    fn random_bytes_never_panic_the_decoder(b in proptest::collection::vec(any::<u8>(), 0..400), hd: bool, dd: bool, max in 0usize..2048) {
        let d = Digests { header: hd, data: dd };
        let _ = decode_pdu(&b, d, max);
        let _ = decode_header(&b, d, max);
    }

    #[test]
    fn mutated_valid_pdus_never_panic_and_decode_within_bounds(i in 0usize..10, at in 0usize..600, v: u8, cut in 0usize..600, hd: bool, dd: bool) {
        let d = Digests { header: hd, data: dd };
        let (h, data) = samples().swap_remove(i);
        let mut b = enc(&h, &data, d, 0);
        if !b.is_empty() {
            let at = at % b.len();
            b[at] = v;
        }
        b.truncate(cut.min(b.len()));
        if let Ok((pdu, used)) = decode_pdu(&b, d, MAX) {
            prop_assert!(used <= b.len());
            prop_assert!(pdu.data.len() <= used);
        }
    }
}
