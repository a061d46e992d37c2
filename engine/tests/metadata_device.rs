//! Metadata, protection information, Compare, fused Compare and Write and
//! vectored requests against a real controller (QEMU's in the guest, whose
//! boot adds namespaces of 512-byte blocks formatted `ms=8,mset=1,pi=1` and
//! `ms=8,mset=0,pi=1`, and of 4096-byte blocks with 64 bytes of metadata,
//! interleaved and separate) and, always, against the emulated controller
//! formatted the same way.
//!
//! On every namespace with protection information: tuples generated in
//! software (PRACT=0) pass the controller's checks and read back checked by
//! the host; tuples the controller inserts (PRACT=1) pass the host's check,
//! and are stripped again on a PRACT=1 read where the metadata is only the
//! tuple; a write whose guard is wrong is refused with End-to-end Guard
//! Check Error (82h) and one whose reference tag is wrong with 84h; data and
//! tuples round trip at every transfer size up to the namespace's maximum
//! (`metadata_common::sweep_sizes`). On the plain namespace: Compare (85h on
//! a mismatch), the fused pair where FUSES reports it (refused, naming
//! FUSES, where not), and unaligned segments as one SGL command.
//!
//! The PCI part runs when `NVME_ENGINE_TEST_PCI` names a controller bound by
//! `scripts/setup.sh` and `NVME_ENGINE_TEST_WRITE=1` allows writes (it
//! writes the metadata namespaces and a few blocks of the first one);
//! `NVME_ENGINE_TEST_EXPECT_PI=N` makes it fail unless N namespaces with
//! protection information were exercised.

mod ext_common;
mod metadata_common;

use ext_common::{buf_of, bytes, pattern};
use metadata_common::*;
use nvme_emu::{EmuConfig, EmuController, EmuNamespaceConfig, ProtectionType};
use nvme_engine::dma::{DmaBuf, DmaPool};
use nvme_engine::pi::{PiTags, Protection};
use nvme_engine::spec::protection::{MetadataLayout, PrChk};
use nvme_engine::spec::status::{StatusCodeType, media};
use nvme_engine::vfio::{RealDevice, VfioOptions};
use nvme_engine::{
    Controller, ControllerOptions, Device, IoData, IoOptions, IoQueuePair, Namespace,
    QueuePairOptions, SubmitErrorKind,
};

/// Every protection information path on `ns` at `lba`.
fn protection<D: Device>(name: &str, qp: &mut IoQueuePair<D>, pool: &mut DmaPool, ns: &Namespace) {
    let p = Protection::of(ns).expect("a PI namespace");
    let f = ns.metadata().expect("a metadata namespace");
    let blocks = 4usize;
    let lba = 8u64;
    let tags = PiTags::for_lba(lba, 0x5aa5);
    let all = IoOptions::default().protection(false, PrChk::ALL, tags);
    let mut scratch = Vec::new();
    let what = format!("{name} ns {} ({f})", ns.id());

    // Software tuples, checked by the controller on the way in and out.
    let (d, m) = protected_buffers(pool, ns, blocks, 1, &tags);
    let written = bytes(&d);
    qp.write_ext(ns, lba, io_data(d, m), &all, 1).unwrap();
    wait_ok(qp, &format!("{what}: PRACT=0 write"));
    let (d, m) = md_buffers(pool, ns, blocks, None);
    qp.read_ext(ns, lba, io_data(d, m), &all, 2).unwrap();
    let c = wait_ok(qp, &format!("{what}: checked read"));
    host_check(ns, &c, &tags, &what);
    if f.layout == MetadataLayout::Extended {
        assert_eq!(
            bytes(c.buf.as_ref().unwrap()),
            written,
            "{what}: data + tuples"
        );
    }

    // Tuples the controller inserts, checked by the host. With 8 bytes of
    // metadata no metadata moves; with more, the rest of it does.
    let bs = ns.block_size() as usize;
    let strips = f.pract_strips_metadata();
    let plain = pattern(7, blocks * bs);
    let insert = IoOptions::default().protection(true, PrChk::NONE, tags);
    let w = if strips {
        IoData::new(buf_of(pool, plain.len(), Some(&plain)))
    } else {
        let (d, m) = md_buffers(pool, ns, blocks, Some(7));
        io_data(d, m)
    };
    qp.write_ext(ns, lba, w, &insert, 3).unwrap();
    wait_ok(qp, &format!("{what}: PRACT=1 write"));
    let (d, m) = md_buffers(pool, ns, blocks, None);
    qp.read_ext(ns, lba, io_data(d, m), &IoOptions::default(), 4)
        .unwrap();
    let c = wait_ok(qp, &format!("{what}: plain read"));
    host_check(ns, &c, &tags, &format!("{what}: inserted tuples"));
    if strips {
        let strip = IoOptions::default().protection(true, PrChk::ALL, tags);
        let r = IoData::new(buf_of(pool, plain.len(), None));
        qp.read_ext(ns, lba, r, &strip, 5).unwrap();
        let c = wait_ok(qp, &format!("{what}: PRACT=1 read"));
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
        let (mut d, mut m) = md_buffers(pool, ns, blocks, Some(9));
        p.generate_dma(&mut d, m.as_mut(), &tags, &mut scratch)
            .unwrap();
        // The second block's tuple.
        let tuple = f.pi_offset().unwrap();
        let target: &mut DmaBuf = m.as_mut().unwrap_or(&mut d);
        let off = match f.layout {
            MetadataLayout::Extended => (bs + f.size as usize) + bs + tuple + corrupt_at,
            MetadataLayout::Separate => f.size as usize + tuple + corrupt_at,
        };
        let mut byte = [0u8];
        target.read_at(off, &mut byte);
        target.write_at(off, &[byte[0] ^ 0x5a]);
        qp.write_ext(ns, lba, io_data(d, m), &all, 6).unwrap();
        let c = wait_one(qp);
        assert_eq!(
            status_of(&c.result),
            Some((StatusCodeType::MEDIA, sc)),
            "{what}: {:?}",
            c.result
        );
        assert!(c.buf.is_some(), "{what}: the buffer comes back");
    }
    eprintln!("{what}: PRACT=0/1 writes and reads, host and controller checks, 82h/84h: OK");
}

/// Compare, the fused pair and an SGL of unaligned segments on a plain namespace.
fn commands<D: Device>(name: &str, qp: &mut IoQueuePair<D>, pool: &mut DmaPool, ns: &Namespace) {
    let bs = ns.block_size() as usize;
    let lba = 64u64;
    let a = pattern(3, bs);
    let o = IoOptions::default();
    qp.write_sync(ns, lba, buf_of(pool, bs, Some(&a)), false)
        .unwrap();
    if ns.optional_commands().compare() {
        qp.compare(ns, lba, IoData::new(buf_of(pool, bs, Some(&a))), &o, 1)
            .unwrap();
        assert!(wait_one(qp).result.is_ok(), "{name}: compare of equal data");
        let b = pattern(4, bs);
        qp.compare(ns, lba, IoData::new(buf_of(pool, bs, Some(&b))), &o, 2)
            .unwrap();
        let c = wait_one(qp);
        assert_eq!(
            status_of(&c.result),
            Some((StatusCodeType::MEDIA, media::COMPARE_FAILURE)),
            "{name}: {:?}",
            c.result
        );
        eprintln!("{name}: compare (equal, 85h): OK");
    }
    let (cmp, wr) = (
        buf_of(pool, bs, Some(&a)),
        buf_of(pool, bs, Some(&pattern(5, bs))),
    );
    match qp.compare_and_write(ns, lba, cmp.into(), wr.into(), &o, [3, 4]) {
        Ok(()) => {
            let (x, y) = (wait_one(qp), wait_one(qp));
            assert!(
                x.result.is_ok() && y.result.is_ok(),
                "{name}: fused: {:?} {:?}",
                x.result,
                y.result
            );
            let got = qp.read_sync(ns, lba, buf_of(pool, bs, None)).unwrap();
            assert_eq!(
                bytes(&got),
                pattern(5, bs),
                "{name}: the fused write happened"
            );
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
    let whole = pattern(6, 2 * bs);
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
            let c = wait_one(qp);
            assert!(c.result.is_ok(), "{name}: vectored write: {:?}", c.result);
            assert_eq!(c.segments().len(), 3);
            let got = qp.read_sync(ns, lba, buf_of(pool, 2 * bs, None)).unwrap();
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
            let what = format!("{name} ns {}", ns.id());
            let start = std::time::Instant::now();
            let sizes = round_trip_every_size(&what, &mut qp, &mut pool, ns);
            eprintln!(
                "{what}: data and tuples round trip at {sizes} sizes up to {} blocks ({:.1} s)",
                ns.max_blocks_per_io(),
                start.elapsed().as_secs_f64()
            );
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
        )
        .namespace(
            EmuNamespaceConfig::ram(4096, 512)
                .metadata(64, true)
                .protection(ProtectionType::Type1, false),
        );
    let ctrl = Controller::new(
        EmuController::new(cfg).unwrap(),
        ControllerOptions::default(),
    )
    .expect("bring-up");
    assert_eq!(exercise("emu", &ctrl), 4);
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
        // The QEMU boot formats four namespaces with PI and says so in
        // NVME_ENGINE_TEST_EXPECT_PI: fail when they are missing.
        eprintln!("{addr}: {n} namespaces with protection information exercised");
        if let Some(want) = std::env::var("NVME_ENGINE_TEST_EXPECT_PI")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            assert!(
                n >= want,
                "{addr}: expected the boot's {want} PI namespaces, found {n}"
            );
        }
        ctrl.shutdown().expect("shutdown");
    }
}
