//! The queue pair's synchronous helpers for the requests beyond plain reads
//! and writes, against the emulated controller: data and separate metadata
//! round trip through `write_ext_sync` / `read_ext_sync`, vectored data
//! through `write_vectored_sync` / `read_vectored_sync`; `compare_sync`
//! fails with Compare Failure and hands the buffer back; `verify_sync`
//! finds blocks made unreadable by `write_uncorrectable_sync`;
//! `compare_and_write_sync` writes only on a match and reports a
//! miscompare with both halves' buffers; every helper refuses with Busy
//! while other commands are in flight, and a refusal before submission
//! hands every buffer back.

mod ext_common;

use ext_common::*;
use nvme_emu::{EmuConfig, EmuNamespaceConfig};
use nvme_engine::dma::DmaBuf;
use nvme_engine::spec::status::{StatusCodeType, media};
use nvme_engine::{IoData, IoError, IoOptions, SubmitErrorKind};

fn status_of(e: &IoError) -> Option<(StatusCodeType, u8)> {
    match e {
        IoError::Status(s) => Some((s.sct(), s.sc())),
        _ => None,
    }
}

fn setup(
    ms: u16,
) -> (
    nvme_engine::Controller<nvme_emu::EmuController>,
    Qp,
    nvme_engine::dma::DmaPool,
    nvme_engine::Namespace,
) {
    let (ctrl, _h, qp, pool) = bring_up(
        EmuConfig::ram(1 << 20),
        vec![EmuNamespaceConfig::ram(512, 1024).metadata(ms, false)],
        16,
    );
    let ns = ctrl.namespaces()[0].clone();
    (ctrl, qp, pool, ns)
}

#[test]
fn ext_sync_helpers_round_trip_data_and_separate_metadata() {
    let (_c, mut qp, mut pool, ns) = setup(8);
    let (data, meta) = (pattern(1, 2048), pattern(2, 32));
    let w = IoData::new(buf_of(&mut pool, 2048, Some(&data))).with_metadata(buf_of(
        &mut pool,
        32,
        Some(&meta),
    ));
    let back = qp.write_ext_sync(&ns, 8, w, &IoOptions::default()).unwrap();
    assert!(
        back.buf().is_some() && back.meta().is_some(),
        "buffers back"
    );
    let r = IoData::new(buf_of(&mut pool, 2048, None)).with_metadata(buf_of(&mut pool, 32, None));
    let got = qp.read_ext_sync(&ns, 8, r, &IoOptions::default()).unwrap();
    assert_eq!(bytes(got.buf().unwrap()), data);
    assert_eq!(bytes(got.meta().unwrap()), meta);

    // Refused before submission (no metadata buffer): the data comes back.
    let e = qp
        .read_ext_sync(
            &ns,
            8,
            IoData::new(buf_of(&mut pool, 512, None)),
            &IoOptions::default(),
        )
        .unwrap_err();
    assert!(
        matches!(
            e.error,
            IoError::Rejected(SubmitErrorKind::MetadataBufferMissing { bytes: 8, .. })
        ),
        "{}",
        e.error
    );
    assert!(e.into_data().buf().is_some());
    assert_eq!(qp.outstanding(), 0);
}

#[test]
fn vectored_sync_helpers_write_and_read_segments_in_order() {
    let (_c, mut qp, mut pool, ns) = setup(0);
    let data = pattern(3, 3 * 512);
    let segs: Vec<DmaBuf> = data
        .chunks(512)
        .map(|d| buf_of(&mut pool, 512, Some(d)))
        .collect();
    let back = qp.write_vectored_sync(&ns, 100, segs, true).unwrap();
    assert_eq!(back.len(), 3);
    let got = qp
        .read_sync(&ns, 100, buf_of(&mut pool, data.len(), None))
        .unwrap();
    assert_eq!(bytes(&got), data);
    let segs = vec![buf_of(&mut pool, 1024, None), buf_of(&mut pool, 512, None)];
    let segs = qp.read_vectored_sync(&ns, 100, segs).unwrap();
    let joined: Vec<u8> = segs.iter().flat_map(bytes).collect();
    assert_eq!(joined, data);
}

#[test]
fn compare_sync_reports_compare_failure_with_the_buffer() {
    let (_c, mut qp, mut pool, ns) = setup(0);
    let a = pattern(4, 1024);
    qp.write_sync(&ns, 10, buf_of(&mut pool, 1024, Some(&a)), false)
        .unwrap();
    let o = IoOptions::default();
    let same = IoData::new(buf_of(&mut pool, 1024, Some(&a)));
    assert!(qp.compare_sync(&ns, 10, same, &o).is_ok());
    let mut b = a.clone();
    b[1000] ^= 0x10;
    let e = qp
        .compare_sync(&ns, 10, IoData::new(buf_of(&mut pool, 1024, Some(&b))), &o)
        .unwrap_err();
    assert_eq!(
        status_of(&e.error),
        Some((StatusCodeType::MEDIA, media::COMPARE_FAILURE))
    );
    assert_eq!(bytes(e.buf.as_ref().unwrap()), b, "the buffer comes back");
}

#[test]
fn verify_sync_finds_blocks_made_unreadable_by_write_uncorrectable_sync() {
    let (_c, mut qp, mut pool, ns) = setup(0);
    qp.write_sync(
        &ns,
        0,
        buf_of(&mut pool, 4096, Some(&pattern(5, 4096))),
        false,
    )
    .unwrap();
    let o = IoOptions::default();
    qp.verify_sync(&ns, 0, 8, &o).unwrap();
    qp.write_uncorrectable_sync(&ns, 2, 2).unwrap();
    let e = qp.verify_sync(&ns, 0, 8, &o).unwrap_err();
    assert_eq!(
        status_of(&e.error),
        Some((StatusCodeType::MEDIA, media::UNRECOVERED_READ_ERROR)),
        "{}",
        e.error
    );
    qp.verify_sync(&ns, 4, 4, &o).unwrap();
    // Writing the blocks makes them readable again.
    qp.write_sync(&ns, 2, buf_of(&mut pool, 1024, None), false)
        .unwrap();
    qp.verify_sync(&ns, 0, 8, &o).unwrap();
    // A refusal: zero blocks.
    let e = qp.verify_sync(&ns, 0, 0, &o).unwrap_err();
    assert!(matches!(
        e.error,
        IoError::Rejected(SubmitErrorKind::ZeroLength)
    ));
}

#[test]
fn compare_and_write_sync_writes_on_a_match_and_reports_a_miscompare() {
    let (_c, mut qp, mut pool, ns) = setup(0);
    let (a, b, c) = (pattern(6, 512), pattern(7, 512), pattern(8, 512));
    qp.write_sync(&ns, 3, buf_of(&mut pool, 512, Some(&a)), false)
        .unwrap();
    let o = IoOptions::default();
    let cmp = IoData::new(buf_of(&mut pool, 512, Some(&a)));
    let wr = IoData::new(buf_of(&mut pool, 512, Some(&b)));
    let (cmp, wr) = qp.compare_and_write_sync(&ns, 3, cmp, wr, &o).unwrap();
    assert!(cmp.buf().is_some() && wr.buf().is_some());
    let got = qp.read_sync(&ns, 3, buf_of(&mut pool, 512, None)).unwrap();
    assert_eq!(bytes(&got), b, "written after the match");

    // The blocks hold b now: comparing with a fails and c is not written.
    let cmp = IoData::new(buf_of(&mut pool, 512, Some(&a)));
    let wr = IoData::new(buf_of(&mut pool, 512, Some(&c)));
    let e = qp.compare_and_write_sync(&ns, 3, cmp, wr, &o).unwrap_err();
    assert!(e.miscompare(), "{e}");
    assert_eq!(
        status_of(&e.error()),
        Some((StatusCodeType::MEDIA, media::COMPARE_FAILURE))
    );
    let (ce, we) = (e.compare.unwrap_err(), e.write.unwrap_err());
    assert!(
        ce.buf.is_some() && we.buf.is_some(),
        "both halves' buffers back"
    );
    assert!(matches!(we.error, IoError::Status(_)), "{}", we.error);
    let got = qp.read_sync(&ns, 3, buf_of(&mut pool, 512, None)).unwrap();
    assert_eq!(bytes(&got), b, "nothing written on a miscompare");

    // Refused before submission (lengths differ): both halves back.
    let cmp = IoData::new(buf_of(&mut pool, 512, Some(&b)));
    let wr = IoData::new(buf_of(&mut pool, 1024, None));
    let e = qp.compare_and_write_sync(&ns, 3, cmp, wr, &o).unwrap_err();
    assert!(!e.miscompare());
    assert!(matches!(
        e.error(),
        IoError::Rejected(SubmitErrorKind::FusedMismatch(_))
    ));
    assert!(e.compare.unwrap_err().buf.is_some() && e.write.unwrap_err().buf.is_some());
    assert_eq!(qp.outstanding(), 0);
}

#[test]
fn sync_helpers_refuse_while_other_commands_are_in_flight() {
    let (_c, mut qp, mut pool, ns) = setup(0);
    qp.read(&ns, 0, buf_of(&mut pool, 512, None), 1).unwrap();
    let o = IoOptions::default();
    let e = qp
        .read_ext_sync(&ns, 0, IoData::new(buf_of(&mut pool, 512, None)), &o)
        .unwrap_err();
    assert!(matches!(e.error, IoError::Busy(1)), "{}", e.error);
    assert!(e.buf.is_some(), "the buffer comes back");
    let e = qp
        .compare_and_write_sync(
            &ns,
            0,
            IoData::new(buf_of(&mut pool, 512, None)),
            IoData::new(buf_of(&mut pool, 512, None)),
            &o,
        )
        .unwrap_err();
    assert!(matches!(e.error(), IoError::Busy(1)));
    assert!(qp.verify_sync(&ns, 0, 1, &o).is_err());
    assert!(
        one(&mut qp).result.is_ok(),
        "the earlier read still completes"
    );
}
