//! Vectored requests (one command over several DMA buffers) and SGLs
//! through the queue pair against the emulated controller: odd-sized,
//! unaligned segments go as an SGL when the controller reports SGLs, and
//! are refused with the segment named when it does not; page-aligned
//! segments go as one PRP list either way; a full list page of descriptors
//! goes and one more is refused; longer lists chain through Segment
//! descriptors across the slot's list pages; a forced SGL on a controller without them
//! is refused; separate metadata travels beside vectored data.

mod ext_common;

use ext_common::*;
use nvme_emu::{EmuConfig, EmuNamespaceConfig};
use nvme_engine::dma::{DmaBuf, DmaPool};
use nvme_engine::{DataPointer, IoData, IoOptions, SubmitErrorKind};

/// Segments of `sizes` bytes, each at byte `offset` of its own pool
/// buffer, holding consecutive slices of `data`.
fn segments(pool: &mut DmaPool, sizes: &[usize], offset: usize, data: &[u8]) -> Vec<DmaBuf> {
    let mut at = 0;
    sizes
        .iter()
        .map(|&n| {
            let mut b = pool.alloc(offset + n).unwrap();
            assert!(b.set_window(offset, n));
            assert!(b.write_at(0, &data[at..at + n]));
            at += n;
            b
        })
        .collect()
}

fn joined(segs: &[DmaBuf]) -> Vec<u8> {
    segs.iter().flat_map(bytes).collect()
}

fn controller(
    sgl: bool,
    mdts: u8,
) -> (
    nvme_engine::Controller<nvme_emu::EmuController>,
    Qp,
    DmaPool,
) {
    let mut cfg = EmuConfig::ram(1 << 20);
    cfg.sgl = sgl;
    cfg.mdts = mdts;
    let (ctrl, _h, qp, pool) = bring_up(cfg, vec![EmuNamespaceConfig::ram(512, 2048)], 16);
    (ctrl, qp, pool)
}

#[test]
fn unaligned_segments_round_trip_as_an_sgl() {
    let (ctrl, mut qp, mut pool) = controller(true, 7);
    let ns = ctrl.namespaces()[0].clone();
    let sizes = [100, 1000, 36, 3984];
    let data = pattern(9, sizes.iter().sum());
    let w = IoData::vectored(segments(&mut pool, &sizes, 12, &data));
    qp.write_ext(&ns, 64, w, &IoOptions::default(), 1).unwrap();
    let c = one(&mut qp);
    assert!(c.result.is_ok(), "{:?}", c.result);
    assert_eq!(c.segments().len(), 4, "every segment comes back, in order");
    assert!(c.buf.is_none());
    let got = qp
        .read_sync(&ns, 64, buf_of(&mut pool, data.len(), None))
        .unwrap();
    assert_eq!(bytes(&got), data);

    let zero = vec![0u8; data.len()];
    let r = IoData::vectored(segments(&mut pool, &[1000, 3984, 100, 36], 20, &zero));
    qp.read_ext(&ns, 64, r, &IoOptions::default(), 2).unwrap();
    let c = one(&mut qp);
    assert!(c.result.is_ok(), "{:?}", c.result);
    assert_eq!(joined(c.segments()), data);

    // One buffer forced through an SGL.
    let o = IoOptions::default().data_pointer(DataPointer::Sgl);
    qp.read_ext(
        &ns,
        64,
        IoData::new(buf_of(&mut pool, data.len(), None)),
        &o,
        3,
    )
    .unwrap();
    let c = one(&mut qp);
    assert!(c.result.is_ok(), "{:?}", c.result);
    assert_eq!(bytes(c.buf.as_ref().unwrap()), data);
}

#[test]
fn without_sgls_page_aligned_segments_go_as_prps_and_others_are_refused() {
    let (ctrl, mut qp, mut pool) = controller(false, 7);
    let ns = ctrl.namespaces()[0].clone();
    // First may start mid-page but must end on a page; the rest start on one.
    let data = pattern(4, 3584 + 8192 + 512);
    let mut segs = segments(&mut pool, &[3584], 512, &data);
    segs.extend(segments(&mut pool, &[8192, 512], 0, &data[3584..]));
    qp.write_ext(&ns, 0, IoData::vectored(segs), &IoOptions::default(), 1)
        .unwrap();
    let c = one(&mut qp);
    assert!(c.result.is_ok(), "{:?}", c.result);
    let got = qp
        .read_sync(&ns, 0, buf_of(&mut pool, data.len(), None))
        .unwrap();
    assert_eq!(bytes(&got), data);

    let odd = segments(&mut pool, &[512, 512], 0, &data);
    let mut e = qp
        .write_ext(&ns, 0, IoData::vectored(odd), &IoOptions::default(), 2)
        .unwrap_err();
    assert!(
        matches!(e.kind, SubmitErrorKind::SegmentsNeedSgl { index: 0, .. }),
        "{}",
        e.kind
    );
    assert!(e.kind.to_string().contains("no SGL support"));
    assert_eq!(e.take_segments().len(), 2, "the segments come back");

    let o = IoOptions::default().data_pointer(DataPointer::Sgl);
    let e = qp
        .read_ext(&ns, 0, IoData::new(buf_of(&mut pool, 512, None)), &o, 3)
        .unwrap_err();
    assert!(matches!(e.kind, SubmitErrorKind::Sgl(_)), "{}", e.kind);
    assert_eq!(qp.outstanding(), 0);
}

#[test]
fn a_full_list_page_of_segments_goes_and_one_more_is_refused() {
    let (ctrl, mut qp, mut pool) = controller(true, 7);
    let ns = ctrl.namespaces()[0].clone();
    // 256 descriptors fill the slot's list page (a Last Segment of 256).
    let data = pattern(6, 512 * 256);
    let w = IoData::vectored(segments(&mut pool, &[512; 256], 4, &data));
    qp.write_ext(&ns, 100, w, &IoOptions::default(), 1).unwrap();
    let c = one(&mut qp);
    assert!(c.result.is_ok(), "{:?}", c.result);
    assert_eq!(c.segments().len(), 256);
    let got = qp
        .read_sync(&ns, 100, buf_of(&mut pool, data.len(), None))
        .unwrap();
    assert_eq!(bytes(&got), data);
    drop(c);

    let data = pattern(6, 512 * 257);
    let w = IoData::vectored(segments(&mut pool, &[512; 257], 0, &data));
    let e = qp
        .write_ext(&ns, 0, w, &IoOptions::default(), 1)
        .unwrap_err();
    assert!(
        matches!(
            e.kind,
            SubmitErrorKind::TooManySegments {
                count: 257,
                max: 256
            }
        ),
        "{}",
        e.kind
    );
}

#[test]
fn long_sgls_chain_across_the_slots_list_pages() {
    // 8 MiB transfers: several list pages per slot (255 descriptors and
    // the one that leads on in each, 256 in the last).
    let mut cfg = EmuConfig::ram(1 << 20);
    cfg.mdts = 11;
    let opts = nvme_engine::ControllerOptions::default().with_max_transfer_bytes(8 << 20);
    let (ctrl, _h, mut qp, _) =
        bring_up_with(cfg, vec![EmuNamespaceConfig::ram(512, 8192)], 8, opts);
    // Every segment takes a 4 KiB pool block.
    let mut pool = ctrl.create_pool(16 << 20).expect("pool");
    let ns = ctrl.namespaces()[0].clone();
    // 700 descriptors: a Segment page, a Segment page, a Last Segment page.
    let data = pattern(12, 512 * 700);
    let w = IoData::vectored(segments(&mut pool, &[512; 700], 4, &data));
    qp.write_ext(&ns, 0, w, &IoOptions::default(), 1).unwrap();
    let c = one(&mut qp);
    assert!(c.result.is_ok(), "{:?}", c.result);
    let zero = vec![0u8; data.len()];
    let r = IoData::vectored(segments(&mut pool, &[512; 700], 8, &zero));
    qp.read_ext(&ns, 0, r, &IoOptions::default(), 2).unwrap();
    let c = one(&mut qp);
    assert!(c.result.is_ok(), "{:?}", c.result);
    assert_eq!(joined(c.segments()), data);
    drop(c);
    // More than the slot's pages hold: refused, naming the limit.
    let mut big = ctrl.create_pool(20 << 20).expect("pool");
    let many = IoData::vectored(segments(&mut big, &[512; 4000], 0, &pattern(1, 512 * 4000)));
    let e = qp
        .write_ext(&ns, 0, many, &IoOptions::default(), 3)
        .unwrap_err();
    match e.kind {
        SubmitErrorKind::TooManySegments { count: 4000, max } => {
            assert!((700..4000).contains(&max) && max % 255 == 1, "{max}")
        }
        k => panic!("{k}"),
    }
}

#[test]
fn separate_metadata_travels_beside_vectored_data() {
    let (ctrl, _h, mut qp, mut pool) = bring_up(
        EmuConfig::ram(1 << 20),
        vec![EmuNamespaceConfig::ram(512, 256).metadata(16, false)],
        16,
    );
    let ns = ctrl.namespaces()[0].clone();
    let data = pattern(8, 1536);
    let meta = pattern(9, 48);
    let w = IoData::vectored(segments(&mut pool, &[700, 836], 8, &data)).with_metadata(buf_of(
        &mut pool,
        48,
        Some(&meta),
    ));
    qp.write_ext(&ns, 3, w, &IoOptions::default(), 1).unwrap();
    let c = one(&mut qp);
    assert!(c.result.is_ok(), "{:?}", c.result);
    assert!(c.meta().is_some() && c.segments().len() == 2);
    let r = IoData::new(buf_of(&mut pool, 1536, None)).with_metadata(buf_of(&mut pool, 48, None));
    qp.read_ext(&ns, 3, r, &IoOptions::default(), 2).unwrap();
    let c = one(&mut qp);
    assert!(c.result.is_ok(), "{:?}", c.result);
    assert_eq!(bytes(c.buf.as_ref().unwrap()), data);
    assert_eq!(bytes(c.meta().unwrap()), meta);
}
