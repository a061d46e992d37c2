//! Compare, fused Compare and Write, Write Uncorrectable and Verify through
//! the queue pair against the emulated controller: Compare Failure (85h) on
//! a mismatch; the fused pair writes only when its compare matches (the
//! write otherwise aborted with 09h), reaches the controller with one
//! doorbell write and completes twice; a queue that cannot take both
//! commands refuses before queuing either; Write Uncorrectable blocks fail
//! reads and Verify until written again.

mod ext_common;

use ext_common::*;
use nvme_emu::{EmuConfig, EmuNamespaceConfig};
use nvme_engine::spec::status::{StatusCodeType, generic, media};
use nvme_engine::{IoData, IoError, IoOptions, SubmitErrorKind};

fn status_of(r: &Result<u32, IoError>) -> Option<(StatusCodeType, u8)> {
    match r {
        Err(IoError::Status(s)) => Some((s.sct(), s.sc())),
        _ => None,
    }
}

fn setup(
    entries: u16,
) -> (
    nvme_engine::Controller<nvme_emu::EmuController>,
    Qp,
    nvme_engine::dma::DmaPool,
    nvme_engine::Namespace,
) {
    let (ctrl, _h, qp, pool) = bring_up(
        EmuConfig::ram(1 << 20),
        vec![EmuNamespaceConfig::ram(512, 1024)],
        entries,
    );
    let ns = ctrl.namespaces()[0].clone();
    (ctrl, qp, pool, ns)
}

#[test]
fn compare_succeeds_on_equal_blocks_and_fails_with_85h_otherwise() {
    let (_c, mut qp, mut pool, ns) = setup(16);
    let a = pattern(1, 1024);
    qp.write_sync(&ns, 10, buf_of(&mut pool, 1024, Some(&a)), false)
        .unwrap();
    let o = IoOptions::default();
    qp.compare(
        &ns,
        10,
        IoData::new(buf_of(&mut pool, 1024, Some(&a))),
        &o,
        1,
    )
    .unwrap();
    assert!(one(&mut qp).result.is_ok());
    let mut b = a.clone();
    b[700] ^= 1;
    qp.compare(
        &ns,
        10,
        IoData::new(buf_of(&mut pool, 1024, Some(&b))),
        &o,
        2,
    )
    .unwrap();
    let c = one(&mut qp);
    assert_eq!(
        status_of(&c.result),
        Some((StatusCodeType::MEDIA, media::COMPARE_FAILURE))
    );
    assert!(c.buf.is_some());
}

#[test]
fn fused_compare_and_write_writes_only_when_the_compare_matches() {
    let (_c, mut qp, mut pool, ns) = setup(16);
    assert!(ns.supports_compare_and_write());
    let (a, b, c) = (pattern(1, 512), pattern(2, 512), pattern(3, 512));
    qp.write_sync(&ns, 7, buf_of(&mut pool, 512, Some(&a)), false)
        .unwrap();
    let o = IoOptions::default();

    let doorbells = qp.stats().sq_doorbell_writes;
    qp.compare_and_write(
        &ns,
        7,
        IoData::new(buf_of(&mut pool, 512, Some(&a))),
        IoData::new(buf_of(&mut pool, 512, Some(&b))),
        &o,
        [10, 11],
    )
    .unwrap();
    assert_eq!(qp.outstanding(), 2);
    let mut done = reap(&mut qp, 2);
    assert_eq!(
        qp.stats().sq_doorbell_writes - doorbells,
        1,
        "both commands went with one doorbell write"
    );
    done.sort_by_key(|c| c.token);
    assert_eq!(done.iter().map(|c| c.token).collect::<Vec<_>>(), [10, 11]);
    assert!(done.iter().all(|c| c.result.is_ok() && c.buf.is_some()));
    let got = qp.read_sync(&ns, 7, buf_of(&mut pool, 512, None)).unwrap();
    assert_eq!(bytes(&got), b, "the write happened");

    // The blocks no longer hold `a`: the compare fails, the write is aborted.
    qp.compare_and_write(
        &ns,
        7,
        IoData::new(buf_of(&mut pool, 512, Some(&a))),
        IoData::new(buf_of(&mut pool, 512, Some(&c))),
        &o,
        [20, 21],
    )
    .unwrap();
    let mut done = reap(&mut qp, 2);
    done.sort_by_key(|c| c.token);
    assert_eq!(
        status_of(&done[0].result),
        Some((StatusCodeType::MEDIA, media::COMPARE_FAILURE))
    );
    assert_eq!(
        status_of(&done[1].result),
        Some((StatusCodeType::GENERIC, generic::ABORTED_FAILED_FUSED))
    );
    assert_eq!(
        qp.stats().retries,
        0,
        "a fused command is never resent alone"
    );
    let got = qp.read_sync(&ns, 7, got).unwrap();
    assert_eq!(bytes(&got), b, "the write did not happen");
}

#[test]
fn a_fused_pair_that_does_not_fit_is_refused_before_either_is_queued() {
    // Four entries: three commands in flight at most.
    let (_c, mut qp, mut pool, ns) = setup(4);
    for t in 0..2 {
        qp.read(&ns, t, buf_of(&mut pool, 512, None), t).unwrap();
    }
    let submitted = qp.stats().submitted;
    let e = qp
        .compare_and_write(
            &ns,
            7,
            IoData::new(buf_of(&mut pool, 512, None)),
            IoData::new(buf_of(&mut pool, 512, None)),
            &IoOptions::default(),
            [10, 11],
        )
        .unwrap_err();
    assert!(matches!(e.compare.kind, SubmitErrorKind::QueueFull { .. }));
    assert!(e.compare.buf.is_some() && e.write.buf.is_some());
    assert_eq!(qp.stats().submitted, submitted, "neither was queued");
    assert_eq!(qp.outstanding(), 2);
    reap(&mut qp, 2);
    // With room for both it goes.
    qp.compare_and_write(
        &ns,
        7,
        e.compare.buf.unwrap().into(),
        e.write.buf.unwrap().into(),
        &IoOptions::default(),
        [10, 11],
    )
    .unwrap();
    assert!(reap(&mut qp, 2).iter().all(|c| c.result.is_ok()));
}

#[test]
fn write_uncorrectable_blocks_fail_reads_and_verify_until_written_again() {
    let (_c, mut qp, mut pool, ns) = setup(16);
    let o = IoOptions::default();
    qp.write_uncorrectable(&ns, 30, 2, 1).unwrap();
    assert!(one(&mut qp).result.is_ok());
    qp.read(&ns, 31, buf_of(&mut pool, 512, None), 2).unwrap();
    let c = one(&mut qp);
    assert_eq!(
        status_of(&c.result),
        Some((StatusCodeType::MEDIA, media::UNRECOVERED_READ_ERROR))
    );
    qp.verify(&ns, 29, 4, &o, 3).unwrap();
    assert!(one(&mut qp).result.is_err());
    qp.write_sync(
        &ns,
        30,
        buf_of(&mut pool, 1024, Some(&pattern(4, 1024))),
        false,
    )
    .unwrap();
    qp.verify(&ns, 29, 4, &o, 4).unwrap();
    assert!(one(&mut qp).result.is_ok());
    assert!(matches!(
        qp.verify(&ns, 1023, 2, &o, 5).unwrap_err().kind,
        SubmitErrorKind::LbaOutOfRange { .. }
    ));
}
