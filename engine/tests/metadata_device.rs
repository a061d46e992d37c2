//! Metadata, protection information, Compare, fused Compare and Write and
//! vectored requests against a real controller (QEMU's in the guest, whose
//! boot adds namespaces formatted `ms=8,mset=1,pi=1` and `ms=8,mset=0,pi=1`)
//! and, always, against the emulated controller formatted the same way.
//!
//! On every namespace with protection information: tuples generated in
//! software (PRACT=0) pass the controller's checks and read back checked by
//! the host; tuples the controller inserts (PRACT=1) pass the host's check,
//! and are stripped again on a PRACT=1 read; a write whose guard is wrong is
//! refused with End-to-end Guard Check Error (82h) and one whose reference
//! tag is wrong with 84h. On the plain namespace: Compare (85h on a
//! mismatch), the fused pair where FUSES reports it (refused, naming FUSES,
//! where not), and unaligned segments as one SGL command.
//!
//! The PCI part runs when `NVME_ENGINE_TEST_PCI` names a controller bound by
//! `scripts/setup.sh` and `NVME_ENGINE_TEST_WRITE=1` allows writes (it
//! writes the metadata namespaces and a few blocks of the first one).

use nvme_emu::{EmuConfig, EmuController, EmuNamespaceConfig, ProtectionType};
use nvme_engine::dma::{DmaBuf, DmaPool};
use nvme_engine::pi::{PiTags, Protection};
use nvme_engine::spec::protection::{MetadataLayout, PrChk};
use nvme_engine::spec::status::{StatusCodeType, media};
use nvme_engine::vfio::{RealDevice, VfioOptions};
use nvme_engine::{
    Controller, ControllerOptions, Device, IoCompletion, IoData, IoError, IoOptions, IoQueuePair,
    Namespace, QueuePairOptions, SubmitErrorKind,
};

fn reap<D: Device>(qp: &mut IoQueuePair<D>) -> IoCompletion {
    qp.ring_doorbell();
    let start = std::time::Instant::now();
    let mut out = None;
    loop {
        qp.process_completions(1, |c| out = Some(c));
        if let Some(c) = out.take() {
            return c;
        }
        if start.elapsed() > std::time::Duration::from_secs(10) {
            qp.check_timeouts(std::time::Instant::now());
        }
        std::thread::yield_now();
    }
}

fn status(r: &Result<u32, IoError>) -> Option<u8> {
    match r {
        Err(IoError::Status(s)) if s.sct() == StatusCodeType::MEDIA => Some(s.sc()),
        _ => None,
    }
}

fn buf(pool: &mut DmaPool, len: usize, data: Option<&[u8]>) -> DmaBuf {
    let mut b = pool.alloc(len).expect("alloc");
    assert!(b.set_window(0, len));
    b.fill(0);
    if let Some(d) = data {
        assert!(b.write_at(0, d));
    }
    b
}

fn bytes(b: &DmaBuf) -> Vec<u8> {
    let mut v = vec![0u8; b.len()];
    b.read_at(0, &mut v);
    v
}

fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Buffers for `blocks` blocks of `ns` moving metadata: (data, separate
/// metadata), data holding `seed`'s pattern in each block's data bytes.
fn buffers(
    pool: &mut DmaPool,
    ns: &Namespace,
    blocks: usize,
    seed: u8,
) -> (DmaBuf, Option<DmaBuf>) {
    let f = ns.metadata().expect("a metadata namespace");
    let (bs, ms) = (ns.block_size() as usize, f.size as usize);
    match f.layout {
        MetadataLayout::Extended => (
            buf(
                pool,
                blocks * (bs + ms),
                Some(&data(seed, blocks * (bs + ms))),
            ),
            None,
        ),
        MetadataLayout::Separate => (
            buf(pool, blocks * bs, Some(&data(seed, blocks * bs))),
            Some(buf(pool, blocks * ms, None)),
        ),
    }
}

fn io(d: DmaBuf, m: Option<DmaBuf>) -> IoData {
    match m {
        Some(m) => IoData::new(d).with_metadata(m),
        None => IoData::new(d),
    }
}

/// Every protection information path on `ns` at `lba`.
fn protection<D: Device>(name: &str, qp: &mut IoQueuePair<D>, pool: &mut DmaPool, ns: &Namespace) {
    let p = Protection::of(ns).expect("a PI namespace");
    let blocks = 4usize;
    let lba = 8u64;
    let tags = PiTags::for_lba(lba, 0x5aa5);
    let all = IoOptions::default().protection(false, PrChk::ALL, tags);
    let mut scratch = Vec::new();
    let what = format!("{name} ns {} ({})", ns.id(), ns.metadata().unwrap());

    // Software tuples, checked by the controller on the way in and out.
    let (mut d, mut m) = buffers(pool, ns, blocks, 1);
    p.generate_dma(&mut d, m.as_mut(), &tags, &mut scratch)
        .unwrap();
    let written = bytes(&d);
    qp.write_ext(ns, lba, io(d, m), &all, 1).unwrap();
    let c = reap(qp);
    assert!(c.result.is_ok(), "{what}: PRACT=0 write: {:?}", c.result);
    let (d, m) = buffers(pool, ns, blocks, 0);
    qp.read_ext(ns, lba, io(d, m), &all, 2).unwrap();
    let c = reap(qp);
    assert!(c.result.is_ok(), "{what}: checked read: {:?}", c.result);
    p.check_dma(
        c.buf.as_ref().unwrap(),
        c.meta(),
        &tags,
        PrChk::ALL,
        &mut scratch,
    )
    .unwrap_or_else(|e| panic!("{what}: host check: {e}"));
    if ns.metadata().unwrap().layout == MetadataLayout::Extended {
        assert_eq!(
            bytes(c.buf.as_ref().unwrap()),
            written,
            "{what}: data + tuples"
        );
    }

    // Tuples the controller inserts, checked by the host. With 8 bytes of
    // metadata no metadata moves; with more, the rest of it does.
    let bs = ns.block_size() as usize;
    let strips = ns.metadata().unwrap().pract_strips_metadata();
    let plain = data(7, blocks * bs);
    let insert = IoOptions::default().protection(true, PrChk::NONE, tags);
    let w = if strips {
        IoData::new(buf(pool, plain.len(), Some(&plain)))
    } else {
        let (d, m) = buffers(pool, ns, blocks, 7);
        io(d, m)
    };
    qp.write_ext(ns, lba, w, &insert, 3).unwrap();
    let c = reap(qp);
    assert!(c.result.is_ok(), "{what}: PRACT=1 write: {:?}", c.result);
    let (d, m) = buffers(pool, ns, blocks, 0);
    qp.read_ext(ns, lba, io(d, m), &IoOptions::default(), 4)
        .unwrap();
    let c = reap(qp);
    assert!(c.result.is_ok(), "{what}: plain read: {:?}", c.result);
    p.check_dma(
        c.buf.as_ref().unwrap(),
        c.meta(),
        &tags,
        PrChk::ALL,
        &mut scratch,
    )
    .unwrap_or_else(|e| panic!("{what}: inserted tuples: {e}"));
    if strips {
        let strip = IoOptions::default().protection(true, PrChk::ALL, tags);
        qp.read_ext(
            ns,
            lba,
            IoData::new(buf(pool, plain.len(), None)),
            &strip,
            5,
        )
        .unwrap();
        let c = reap(qp);
        assert!(c.result.is_ok(), "{what}: PRACT=1 read: {:?}", c.result);
        assert_eq!(
            bytes(c.buf.as_ref().unwrap()),
            plain,
            "{what}: stripped data"
        );
    }

    // Wrong guard, wrong reference tag: the controller refuses the write.
    for (corrupt_at, sc) in [
        (0usize, media::GUARD_CHECK_ERROR),
        (4, media::REF_TAG_CHECK_ERROR),
    ] {
        let (mut d, mut m) = buffers(pool, ns, blocks, 9);
        p.generate_dma(&mut d, m.as_mut(), &tags, &mut scratch)
            .unwrap();
        // The second block's tuple.
        let f = ns.metadata().unwrap();
        let tuple = f.pi_offset().unwrap();
        let target: &mut DmaBuf = m.as_mut().unwrap_or(&mut d);
        let off = match f.layout {
            MetadataLayout::Extended => (bs + f.size as usize) + bs + tuple + corrupt_at,
            MetadataLayout::Separate => f.size as usize + tuple + corrupt_at,
        };
        let mut byte = [0u8];
        target.read_at(off, &mut byte);
        target.write_at(off, &[byte[0] ^ 0x5a]);
        qp.write_ext(ns, lba, io(d, m), &all, 6).unwrap();
        let c = reap(qp);
        assert_eq!(status(&c.result), Some(sc), "{what}: {:?}", c.result);
        assert!(c.buf.is_some(), "{what}: the buffer comes back");
    }
    eprintln!("{what}: PRACT=0/1 writes and reads, host and controller checks, 82h/84h: OK");
}

/// Compare, the fused pair and an SGL of unaligned segments on a plain namespace.
fn commands<D: Device>(name: &str, qp: &mut IoQueuePair<D>, pool: &mut DmaPool, ns: &Namespace) {
    let bs = ns.block_size() as usize;
    let lba = 64u64;
    let a = data(3, bs);
    let o = IoOptions::default();
    qp.write_sync(ns, lba, buf(pool, bs, Some(&a)), false)
        .unwrap();
    if ns.optional_commands().compare() {
        qp.compare(ns, lba, IoData::new(buf(pool, bs, Some(&a))), &o, 1)
            .unwrap();
        assert!(reap(qp).result.is_ok(), "{name}: compare of equal data");
        let b = data(4, bs);
        qp.compare(ns, lba, IoData::new(buf(pool, bs, Some(&b))), &o, 2)
            .unwrap();
        let c = reap(qp);
        assert_eq!(
            status(&c.result),
            Some(media::COMPARE_FAILURE),
            "{name}: {:?}",
            c.result
        );
        eprintln!("{name}: compare (equal, 85h): OK");
    }
    let (cmp, wr) = (buf(pool, bs, Some(&a)), buf(pool, bs, Some(&data(5, bs))));
    match qp.compare_and_write(ns, lba, cmp.into(), wr.into(), &o, [3, 4]) {
        Ok(()) => {
            let (x, y) = (reap(qp), reap(qp));
            assert!(
                x.result.is_ok() && y.result.is_ok(),
                "{name}: fused: {:?} {:?}",
                x.result,
                y.result
            );
            let got = qp.read_sync(ns, lba, buf(pool, bs, None)).unwrap();
            assert_eq!(bytes(&got), data(5, bs), "{name}: the fused write happened");
            eprintln!("{name}: fused compare and write: OK");
        }
        Err(e) => {
            assert!(!ns.supports_compare_and_write());
            assert_eq!(
                e.compare.kind,
                SubmitErrorKind::Unsupported("fused Compare and Write (FUSES)")
            );
            eprintln!("{name}: fused compare and write refused: FUSES reports none");
        }
    }
    // Unaligned segments: one command as an SGL (or refused, naming why).
    let whole = data(6, 2 * bs);
    let sizes = [100usize, bs - 100 + 60, bs - 60];
    let mut segs = Vec::new();
    let mut at = 0;
    for n in sizes {
        let mut b = pool.alloc(n + 8).unwrap();
        assert!(b.set_window(8, n));
        assert!(b.write_at(0, &whole[at..at + n]));
        at += n;
        segs.push(b);
    }
    match qp.write_ext(ns, lba, IoData::vectored(segs), &o, 5) {
        Ok(()) => {
            let c = reap(qp);
            assert!(c.result.is_ok(), "{name}: vectored write: {:?}", c.result);
            assert_eq!(c.segments().len(), 3);
            let got = qp.read_sync(ns, lba, buf(pool, 2 * bs, None)).unwrap();
            assert_eq!(bytes(&got), whole, "{name}: SGL write read back");
            eprintln!("{name}: vectored write of 3 unaligned segments as an SGL: OK");
        }
        Err(e) => {
            assert!(
                matches!(e.kind, SubmitErrorKind::SegmentsNeedSgl { .. }),
                "{name}: {}",
                e.kind
            );
            eprintln!("{name}: vectored unaligned segments refused: {}", e.kind);
        }
    }
}

fn exercise<D: Device>(name: &str, ctrl: &Controller<D>) -> usize {
    let mut qp = ctrl
        .create_io_qpair(QueuePairOptions::default().with_entries(16))
        .expect("queue pair");
    let mut pool = ctrl.create_pool(4 << 20).expect("pool");
    let mut protected = 0;
    for ns in ctrl.namespaces() {
        if ns.metadata().is_some_and(|m| m.pi.is_some()) && !ns.read_only() {
            protection(name, &mut qp, &mut pool, ns);
            protected += 1;
        }
    }
    if let Some(ns) = ctrl
        .namespaces()
        .iter()
        .find(|n| n.metadata().is_none() && !n.read_only())
    {
        commands(name, &mut qp, &mut pool, ns);
    }
    qp.delete().expect("delete queue pair");
    protected
}

#[test]
fn protection_information_compare_fused_and_sgl_on_the_emulated_controller() {
    let cfg = EmuConfig::ram(1 << 20)
        .without_namespaces()
        .namespace(EmuNamespaceConfig::ram(512, 2048))
        .namespace(EmuNamespaceConfig::ram(512, 2048))
        .namespace(
            EmuNamespaceConfig::ram(512, 2048)
                .metadata(8, true)
                .protection(ProtectionType::Type1, false),
        )
        .namespace(
            EmuNamespaceConfig::ram(512, 2048)
                .metadata(8, false)
                .protection(ProtectionType::Type1, false),
        )
        .namespace(
            EmuNamespaceConfig::ram(4096, 256)
                .metadata(64, false)
                .protection(ProtectionType::Type3, true),
        );
    let ctrl = Controller::new(
        EmuController::new(cfg).unwrap(),
        ControllerOptions::default(),
    )
    .expect("bring-up");
    assert_eq!(exercise("emu", &ctrl), 3);
}

#[test]
fn protection_information_compare_fused_and_sgl_on_a_real_controller() {
    let Ok(list) = std::env::var("NVME_ENGINE_TEST_PCI") else {
        eprintln!(
            "SKIPPED: set NVME_ENGINE_TEST_PCI=<bdf> (and NVME_ENGINE_TEST_WRITE=1) to run it"
        );
        return;
    };
    if std::env::var("NVME_ENGINE_TEST_WRITE").ok().as_deref() != Some("1") {
        eprintln!(
            "SKIPPED: this test writes; set NVME_ENGINE_TEST_WRITE=1 on a scratch controller"
        );
        return;
    }
    let no_iommu = std::env::var("NVME_ENGINE_TEST_NOIOMMU").is_ok_and(|v| v == "1");
    for addr in list.split([' ', ',']).filter(|s| !s.is_empty()) {
        let mut o = VfioOptions::default();
        o.no_iommu = no_iommu;
        let dev = RealDevice::open(addr, o).unwrap_or_else(|e| panic!("opening {addr}: {e}"));
        let ctrl = Controller::new(dev, ControllerOptions::default())
            .unwrap_or_else(|e| panic!("{addr}: bring-up: {e}"));
        for s in ctrl.skipped_namespaces() {
            eprintln!("{addr}: namespace {} skipped: {}", s.id, s.reason);
        }
        let n = exercise(addr, &ctrl);
        // The QEMU boot formats two namespaces with PI; say so when absent.
        eprintln!("{addr}: {n} namespaces with protection information exercised");
        if std::env::var("NVME_ENGINE_TEST_EXPECT_PI").ok().as_deref() == Some("1") {
            assert!(
                n >= 2,
                "{addr}: expected the boot's two PI namespaces, found {n}"
            );
        }
        ctrl.shutdown().expect("shutdown");
    }
}
