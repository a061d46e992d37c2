//! Separate metadata described by an SGL at MPTR (PSDT 10b, Identify SGLS
//! bit 19) through the queue pair against the emulated controller: one
//! metadata buffer as a Data Block descriptor and several metadata
//! segments as a Last Segment list round trip at several sizes and
//! formats, and agree with the contiguous MPTR path; the PSDT chosen for
//! each combination of options is what the controller receives;
//! protection information is checked by the controller through SGL
//! metadata (and a corrupted tuple in one segment is caught); a forced
//! metadata SGL on a controller without bit 19, several segments with
//! `MetadataPointer::Contiguous`, PRP data and too many segments are
//! refused with every buffer; and requests held by the controller hand
//! every buffer back once when the queue pair is deleted.

mod ext_common;

use std::time::Duration;

use ext_common::*;
use nvme_emu::{EmuConfig, EmuNamespaceConfig, FaultAction, FaultRule, ProtectionType};
use nvme_engine::dma::{DmaBuf, DmaPool};
use nvme_engine::pi::{PiTags, Protection};
use nvme_engine::spec::command::NvmOpcode;
use nvme_engine::spec::protection::PrChk;
use nvme_engine::spec::status::{StatusCodeType, media};
use nvme_engine::{
    ControllerOptions, DataPointer, IoData, IoError, IoOptions, MetadataPointer, SubmitErrorKind,
};

const LBA: u64 = 24;

/// Buffers of `sizes` bytes, each at byte `offset` of its own pool
/// buffer, holding consecutive slices of `data`.
fn pieces(pool: &mut DmaPool, sizes: &[usize], offset: usize, data: &[u8]) -> Vec<DmaBuf> {
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

/// `total` bytes cut into pieces of `step` (the last may be shorter).
fn cut(total: usize, step: usize) -> Vec<usize> {
    (0..total)
        .step_by(step)
        .map(|at| step.min(total - at))
        .collect()
}

fn controller(
    bs: u32,
    ms: u16,
    pi: Option<ProtectionType>,
    sgl_metadata: bool,
) -> (
    nvme_engine::Controller<nvme_emu::EmuController>,
    nvme_emu::EmuHandle,
    Qp,
    DmaPool,
) {
    let mut cfg = EmuConfig::ram(1 << 20);
    cfg.sgl_metadata = sgl_metadata;
    let mut ns = EmuNamespaceConfig::ram(bs, 512).metadata(ms, false);
    if let Some(kind) = pi {
        ns = ns.protection(kind, false);
    }
    // Held commands are waited for this long when the queue pair is
    // deleted (the inline emulator answers admin commands at once).
    let opts = ControllerOptions::default().with_admin_timeout(Duration::from_millis(200));
    bring_up_with(cfg, vec![ns], 16, opts)
}

fn status_of(r: &Result<u32, IoError>) -> Option<(StatusCodeType, u8)> {
    match r {
        Err(IoError::Status(s)) => Some((s.sct(), s.sc())),
        _ => None,
    }
}

#[test]
fn one_metadata_buffer_round_trips_as_an_sgl_data_block_at_several_sizes() {
    for (bs, ms) in [(512u32, 8u16), (512, 16), (4096, 64)] {
        let (ctrl, _h, mut qp, mut pool) = controller(bs, ms, None, true);
        let ns = ctrl.namespaces()[0].clone();
        for blocks in [1usize, 3, 8, 32] {
            let (dlen, mlen) = (blocks * bs as usize, blocks * ms as usize);
            let data = pattern(blocks as u64, dlen);
            let meta = pattern(100 + blocks as u64, mlen);
            let sgl = IoOptions::default().metadata_pointer(MetadataPointer::Sgl);
            let w = IoData::new(buf_of(&mut pool, dlen, Some(&data))).with_metadata(buf_of(
                &mut pool,
                mlen,
                Some(&meta),
            ));
            qp.write_ext(&ns, LBA, w, &sgl, 1).unwrap();
            let c = one(&mut qp);
            assert!(c.result.is_ok(), "{bs}+{ms} x{blocks}: {:?}", c.result);
            assert!(c.buf.is_some() && c.meta().is_some());

            // Read back both ways: through the SGL, and at a plain MPTR.
            for how in [MetadataPointer::Sgl, MetadataPointer::Contiguous] {
                let r = IoData::new(buf_of(&mut pool, dlen, None))
                    .with_metadata(buf_of(&mut pool, mlen, None));
                let o = IoOptions::default().metadata_pointer(how);
                qp.read_ext(&ns, LBA, r, &o, 2).unwrap();
                let c = one(&mut qp);
                assert!(
                    c.result.is_ok(),
                    "{bs}+{ms} x{blocks} {how:?}: {:?}",
                    c.result
                );
                assert_eq!(bytes(c.buf.as_ref().unwrap()), data, "{how:?} data");
                assert_eq!(bytes(c.meta().unwrap()), meta, "{how:?} metadata");
            }
        }
    }
}

#[test]
fn vectored_metadata_beside_vectored_data_round_trips_through_a_last_segment_list() {
    for (bs, ms) in [(512u32, 8u16), (4096, 64)] {
        let (ctrl, _h, mut qp, mut pool) = controller(bs, ms, None, true);
        let ns = ctrl.namespaces()[0].clone();
        for blocks in [2usize, 5, 16] {
            let (dlen, mlen) = (blocks * bs as usize, blocks * ms as usize);
            let data = pattern(7 + blocks as u64, dlen);
            let meta = pattern(70 + blocks as u64, mlen);
            // Data per block at odd offsets; metadata per block, unaligned.
            let w = IoData::vectored(pieces(&mut pool, &cut(dlen, bs as usize), 4, &data))
                .with_metadata_segments(pieces(&mut pool, &cut(mlen, ms as usize), 3, &meta));
            qp.write_ext(&ns, LBA, w, &IoOptions::default(), 1).unwrap();
            let c = one(&mut qp);
            assert!(c.result.is_ok(), "{bs}+{ms} x{blocks}: {:?}", c.result);
            assert_eq!(c.segments().len(), blocks, "data segments back, in order");
            assert_eq!(c.meta_segments().len(), blocks, "metadata segments back");
            assert_eq!(joined(c.meta_segments()), meta);

            // The contiguous path reads what the segments wrote.
            let r = IoData::new(buf_of(&mut pool, dlen, None))
                .with_metadata(buf_of(&mut pool, mlen, None));
            qp.read_ext(&ns, LBA, r, &IoOptions::default(), 2).unwrap();
            let c = one(&mut qp);
            assert!(c.result.is_ok(), "{:?}", c.result);
            assert_eq!(bytes(c.buf.as_ref().unwrap()), data);
            assert_eq!(bytes(c.meta().unwrap()), meta);

            // And segments split differently read it back: one data
            // buffer, metadata in uneven pieces.
            let zero = vec![0u8; mlen];
            let r = IoData::new(buf_of(&mut pool, dlen, None)).with_metadata_segments(pieces(
                &mut pool,
                &cut(mlen, 12),
                1,
                &zero,
            ));
            qp.read_ext(&ns, LBA, r, &IoOptions::default(), 3).unwrap();
            let c = one(&mut qp);
            assert!(c.result.is_ok(), "{:?}", c.result);
            assert_eq!(bytes(c.buf.as_ref().unwrap()), data);
            assert_eq!(joined(c.meta_segments()), meta);
        }
    }
}

#[test]
fn the_controller_receives_the_psdt_and_mptr_the_options_ask_for() {
    // Every command is held (never completed) so its entry can be read.
    for sgl_metadata in [true, false] {
        let (ctrl, emu, mut qp, mut pool) = controller(512, 8, None, sgl_metadata);
        let ns = ctrl.namespaces()[0].clone();
        emu.add_fault(FaultRule::new(FaultAction::NeverComplete).io());
        let data = |pool: &mut DmaPool| buf_of(pool, 1024, None);
        let meta = |pool: &mut DmaPool| buf_of(pool, 16, None);
        let cases = [
            // PRP data: contiguous MPTR, PSDT 00b.
            (IoOptions::default(), 0u8),
            // SGL data: an SGL at MPTR when the controller takes one.
            (
                IoOptions::default().data_pointer(DataPointer::Sgl),
                if sgl_metadata { 2 } else { 1 },
            ),
            // SGL data, metadata asked contiguous: PSDT 01b.
            (
                IoOptions::default()
                    .data_pointer(DataPointer::Sgl)
                    .metadata_pointer(MetadataPointer::Contiguous),
                1,
            ),
        ];
        let mut metas = Vec::new();
        for (i, (o, _)) in cases.iter().enumerate() {
            let m = meta(&mut pool);
            metas.push(m.iova());
            let r = IoData::new(data(&mut pool)).with_metadata(m);
            qp.read_ext(&ns, 0, r, o, i as u64).unwrap();
        }
        qp.ring_doorbell();
        qp.process_completions(16, |c| panic!("held, yet completed: {c:?}"));
        let held = emu.held_commands();
        assert_eq!(held.len(), cases.len());
        for (i, (_, cmd)) in held.iter().enumerate() {
            assert_eq!(cmd.opcode(), NvmOpcode::READ.0);
            assert_eq!(cmd.psdt(), cases[i].1, "case {i}, bit 19 {sgl_metadata}");
            if cmd.psdt() == 2 {
                assert_ne!(cmd.mptr, metas[i], "MPTR names a descriptor");
            } else {
                assert_eq!(cmd.mptr, metas[i], "MPTR names the buffer");
            }
        }
        // Deleting the queue pair answers each held command once, with
        // every buffer.
        let mut answered = Vec::new();
        qp.delete_with(|c| {
            assert!(c.result.is_err());
            assert!(c.buf.is_some() && c.meta().is_some(), "{c:?}");
            answered.push(c.token);
        })
        .unwrap();
        answered.sort_unstable();
        assert_eq!(answered, vec![0, 1, 2]);
    }
}

#[test]
fn vectored_metadata_held_at_deletion_comes_back_once_with_every_segment() {
    let (ctrl, emu, mut qp, mut pool) = controller(512, 8, None, true);
    let ns = ctrl.namespaces()[0].clone();
    emu.add_fault(FaultRule::new(FaultAction::NeverComplete).io());
    for t in 0..4u64 {
        let data = pattern(t, 2048);
        let meta = pattern(t + 9, 32);
        let w = IoData::vectored(pieces(&mut pool, &[512; 4], 0, &data))
            .with_metadata_segments(pieces(&mut pool, &[8; 4], 1, &meta));
        qp.write_ext(&ns, 4 * t, w, &IoOptions::default(), t)
            .unwrap();
    }
    qp.ring_doorbell();
    assert_eq!(emu.held_commands().len(), 4);
    assert!(emu.held_commands().iter().all(|(_, c)| c.psdt() == 2));
    let mut seen = [0u32; 4];
    qp.delete_with(|c| {
        assert!(c.result.is_err());
        assert_eq!((c.segments().len(), c.meta_segments().len()), (4, 4));
        seen[c.token as usize] += 1;
    })
    .unwrap();
    assert_eq!(seen, [1; 4], "each request answered exactly once");
}

#[test]
fn protection_information_is_checked_by_the_controller_through_sgl_metadata() {
    for kind in [ProtectionType::Type1, ProtectionType::Type3] {
        let (ctrl, _h, mut qp, mut pool) = controller(512, 8, Some(kind), true);
        let ns = ctrl.namespaces()[0].clone();
        let p = Protection::of(&ns).unwrap();
        let blocks = 4usize;
        let tags = PiTags::for_lba(LBA, 0x5a5a);
        let opts = IoOptions::default().protection(false, PrChk::ALL, tags);
        let data = pattern(kind as u64, blocks * 512);
        let mut meta = vec![0u8; blocks * 8];
        p.generate_separate(&data, &mut meta, &tags).unwrap();

        // Tuples in one metadata segment per block: accepted and stored.
        let w = IoData::new(buf_of(&mut pool, data.len(), Some(&data)))
            .with_metadata_segments(pieces(&mut pool, &[8; 4], 0, &meta));
        qp.write_ext(&ns, LBA, w, &opts, 1).unwrap();
        let c = one(&mut qp);
        assert!(c.result.is_ok(), "{kind:?}: {:?}", c.result);

        // Read back through the SGL with every check on; the host's
        // checker agrees with what came back.
        let r = IoData::new(buf_of(&mut pool, data.len(), None)).with_metadata_segments(pieces(
            &mut pool,
            &[12, 4, 16],
            2,
            &[0; 32],
        ));
        qp.read_ext(&ns, LBA, r, &opts, 2).unwrap();
        let c = one(&mut qp);
        assert!(c.result.is_ok(), "{kind:?}: {:?}", c.result);
        let got = joined(c.meta_segments());
        assert_eq!(got, meta);
        p.check_separate(&bytes(c.buf.as_ref().unwrap()), &got, &tags, PrChk::ALL)
            .unwrap();

        // A guard damaged in the third block's segment: the controller
        // refuses the write with End-to-end Guard Check Error.
        let mut bad = meta.clone();
        bad[2 * 8] ^= 0x40;
        let w = IoData::new(buf_of(&mut pool, data.len(), Some(&data)))
            .with_metadata_segments(pieces(&mut pool, &[8; 4], 0, &bad));
        qp.write_ext(&ns, LBA, w, &opts, 3).unwrap();
        let c = one(&mut qp);
        assert_eq!(
            status_of(&c.result),
            Some((StatusCodeType::MEDIA, media::GUARD_CHECK_ERROR)),
            "{kind:?}"
        );
        assert_eq!(c.meta_segments().len(), 4, "the segments come back");

        // A wrong application tag expected on read: 83h.
        let wrong = IoOptions::default().protection(
            false,
            PrChk {
                app_tag: true,
                ..PrChk::NONE
            },
            PiTags {
                app_tag: 0x5a5b,
                ..tags
            },
        );
        let r = IoData::new(buf_of(&mut pool, data.len(), None)).with_metadata_segments(pieces(
            &mut pool,
            &[16, 16],
            0,
            &[0; 32],
        ));
        qp.read_ext(&ns, LBA, r, &wrong, 4).unwrap();
        let c = one(&mut qp);
        assert_eq!(
            status_of(&c.result),
            Some((StatusCodeType::MEDIA, media::APP_TAG_CHECK_ERROR)),
            "{kind:?}"
        );
    }
}

#[test]
fn metadata_sgls_are_refused_without_sgls_bit_19_and_buffers_come_back() {
    let (ctrl, _h, mut qp, mut pool) = controller(512, 8, None, false);
    let ns = ctrl.namespaces()[0].clone();
    let sgl = IoOptions::default().metadata_pointer(MetadataPointer::Sgl);
    let r = IoData::new(buf_of(&mut pool, 1024, None)).with_metadata(buf_of(&mut pool, 16, None));
    let mut e = qp.read_ext(&ns, 0, r, &sgl, 1).unwrap_err();
    assert!(
        matches!(e.kind, SubmitErrorKind::MetadataSgl(_)),
        "{}",
        e.kind
    );
    assert!(e.kind.to_string().contains("bit 19"), "{}", e.kind);
    assert!(e.buf.is_some() && e.take_meta().is_some());

    // Several segments need the SGL: refused too, every segment back.
    let w = IoData::new(buf_of(&mut pool, 1024, None)).with_metadata_segments(pieces(
        &mut pool,
        &[8, 8],
        0,
        &[0; 16],
    ));
    let mut e = qp
        .write_ext(&ns, 0, w, &IoOptions::default(), 2)
        .unwrap_err();
    assert!(e.kind.to_string().contains("bit 19"), "{}", e.kind);
    assert_eq!(e.take_meta_segments().len(), 2);

    // Automatic choice falls back to a contiguous MPTR beside SGL data.
    let data = pattern(5, 1024);
    let auto = IoOptions::default().data_pointer(DataPointer::Sgl);
    let w = IoData::new(buf_of(&mut pool, 1024, Some(&data))).with_metadata(buf_of(
        &mut pool,
        16,
        Some(&[7; 16]),
    ));
    qp.write_ext(&ns, 0, w, &auto, 3).unwrap();
    assert!(one(&mut qp).result.is_ok());
    assert_eq!(qp.outstanding(), 0);

    // Without any SGL support the refusal names SGLS bits 1:0.
    let mut cfg = EmuConfig::ram(1 << 20);
    cfg.sgl = false;
    let (ctrl, _h, mut qp, mut pool) = bring_up(
        cfg,
        vec![EmuNamespaceConfig::ram(512, 64).metadata(8, false)],
        4,
    );
    let ns = ctrl.namespaces()[0].clone();
    let r = IoData::new(buf_of(&mut pool, 512, None)).with_metadata(buf_of(&mut pool, 8, None));
    let e = qp.read_ext(&ns, 0, r, &sgl, 1).unwrap_err();
    assert!(e.kind.to_string().contains("bits 1:0"), "{}", e.kind);
}

#[test]
fn conflicting_metadata_options_and_too_many_segments_are_refused() {
    let (ctrl, _h, mut qp, _) = controller(512, 8, None, true);
    let ns = ctrl.namespaces()[0].clone();
    // Every segment takes a 4 KiB block, never given back here.
    let mut pool = ctrl.create_pool(8 << 20).unwrap();
    let two = |pool: &mut DmaPool| pieces(pool, &[8, 8], 0, &[0; 16]);

    let contiguous = IoOptions::default().metadata_pointer(MetadataPointer::Contiguous);
    let r = IoData::new(buf_of(&mut pool, 1024, None)).with_metadata_segments(two(&mut pool));
    let e = qp.read_ext(&ns, 0, r, &contiguous, 1).unwrap_err();
    assert!(e.kind.to_string().contains("Contiguous"), "{}", e.kind);

    let prp = IoOptions::default().data_pointer(DataPointer::Prp);
    let r = IoData::new(buf_of(&mut pool, 1024, None)).with_metadata_segments(two(&mut pool));
    let e = qp.read_ext(&ns, 0, r, &prp, 2).unwrap_err();
    assert!(
        e.kind.to_string().contains("DataPointer::Prp"),
        "{}",
        e.kind
    );

    let both = IoData::new(buf_of(&mut pool, 1024, None))
        .with_metadata(buf_of(&mut pool, 16, None))
        .with_metadata_segments(two(&mut pool));
    let mut e = qp
        .read_ext(&ns, 0, both, &IoOptions::default(), 3)
        .unwrap_err();
    assert!(
        matches!(e.kind, SubmitErrorKind::MetadataSgl(_)),
        "{}",
        e.kind
    );
    assert!(e.take_meta().is_some() && e.take_meta_segments().len() == 2);

    // Lengths must sum to blocks × ms.
    let r = IoData::new(buf_of(&mut pool, 1024, None)).with_metadata_segments(pieces(
        &mut pool,
        &[8, 4],
        0,
        &[0; 12],
    ));
    let e = qp
        .read_ext(&ns, 0, r, &IoOptions::default(), 4)
        .unwrap_err();
    assert!(
        matches!(
            e.kind,
            SubmitErrorKind::MetadataLength {
                len: 12,
                expected: 16,
                ..
            }
        ),
        "{}",
        e.kind
    );

    // 255 one-byte segments fill the last list page beside one data
    // descriptor in DPTR; 256 do not fit.
    let data = buf_of(&mut pool, 32 * 512, None);
    let meta = pattern(3, 256);
    let mut sizes = vec![1usize; 254];
    sizes.push(2);
    let r = IoData::new(data).with_metadata_segments(pieces(&mut pool, &sizes, 0, &meta));
    qp.write_ext(&ns, 0, r, &IoOptions::default(), 5).unwrap();
    let mut c = one(&mut qp);
    assert!(c.result.is_ok(), "{:?}", c.result);
    assert_eq!(joined(c.meta_segments()), meta);
    let buf = c.buf.take().unwrap();
    drop(c);
    let r = IoData::new(buf).with_metadata_segments(pieces(&mut pool, &[1; 256], 0, &meta));
    let mut e = qp
        .write_ext(&ns, 0, r, &IoOptions::default(), 6)
        .unwrap_err();
    assert!(
        matches!(
            e.kind,
            SubmitErrorKind::TooManyMetadataSegments {
                count: 256,
                max: 255
            }
        ),
        "{}",
        e.kind
    );
    assert_eq!(e.take_meta_segments().len(), 256);

    // The slot's one list page is shared with the data's descriptors: 250
    // data segments leave room for a Last Segment and two Data Blocks, 254
    // only for one Data Block.
    let data = pattern(4, 512);
    let meta = pattern(5, 8);
    for (count, ok) in [(250usize, true), (254, false)] {
        let mut sizes = vec![2usize; count - 1];
        sizes.push(512 - 2 * (count - 1));
        let w = IoData::vectored(pieces(&mut pool, &sizes, 0, &data))
            .with_metadata_segments(pieces(&mut pool, &[3, 5], 0, &meta));
        let r = qp.write_ext(&ns, 0, w, &IoOptions::default(), 7);
        if ok {
            r.unwrap();
            let c = one(&mut qp);
            assert!(c.result.is_ok(), "{count}: {:?}", c.result);
        } else {
            let e = r.unwrap_err();
            assert!(
                matches!(
                    e.kind,
                    SubmitErrorKind::TooManyMetadataSegments { count: 2, max: 1 }
                ),
                "{}",
                e.kind
            );
        }
    }
    let r = IoData::new(buf_of(&mut pool, 512, None)).with_metadata(buf_of(&mut pool, 8, None));
    qp.read_ext(&ns, 0, r, &IoOptions::default(), 8).unwrap();
    let c = one(&mut qp);
    assert!(c.result.is_ok(), "{:?}", c.result);
    assert_eq!(
        (bytes(c.buf.as_ref().unwrap()), bytes(c.meta().unwrap())),
        (data, meta)
    );
    assert_eq!(qp.outstanding(), 0);
}
