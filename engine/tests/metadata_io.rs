//! Reads and writes with metadata and protection information through the
//! queue pair against the emulated controller: extended-LBA and separate
//! (MPTR) metadata round trips; tuples the host generates in software with
//! PRACT clear pass the controller's checks; tuples the controller inserts
//! with PRACT set pass the host's checker (and are stripped again on read);
//! corrupted guards and reference tags come back as End-to-end Guard (82h)
//! and Reference Tag (84h) Check Errors with every buffer; and buffers that
//! do not fit the format are refused before anything reaches the device.

mod ext_common;
mod metadata_common;

use ext_common::*;
use metadata_common::{host_check, io_data, md_buffers, status_of};
use nvme_emu::{EmuConfig, EmuNamespaceConfig, FaultAction, FaultRule, ProtectionType};
use nvme_engine::pi::{PiTags, Protection};
use nvme_engine::spec::command::NvmOpcode;
use nvme_engine::spec::protection::{MetadataLayout, PrChk};
use nvme_engine::spec::status::{StatusCodeType, media};
use nvme_engine::{IoData, IoOptions, SubmitErrorKind};

const LBA: u64 = 40;

/// Protection type and whether the tuple is first.
type Pi = Option<(ProtectionType, bool)>;

/// (block size, metadata size, extended, protection)
const FORMATS: [(u32, u16, bool, Pi); 6] = [
    (512, 8, true, None),
    (512, 8, false, None),
    (4096, 64, false, None),
    (512, 16, true, Some((ProtectionType::Type1, true))),
    (4096, 8, false, Some((ProtectionType::Type2, false))),
    (4096, 64, true, Some((ProtectionType::Type3, false))),
];

fn namespace(
    bs: u32,
    ms: u16,
    extended: bool,
    pi: Option<(ProtectionType, bool)>,
) -> EmuNamespaceConfig {
    let ns = EmuNamespaceConfig::ram(bs, 256).metadata(ms, extended);
    match pi {
        Some((kind, first)) => ns.protection(kind, first),
        None => ns,
    }
}

#[test]
fn data_and_metadata_round_trip_in_extended_and_separate_layouts() {
    for (bs, ms, extended, pi) in FORMATS {
        let (ctrl, _h, mut qp, mut pool) = bring_up(
            EmuConfig::ram(1 << 20),
            vec![namespace(bs, ms, extended, pi)],
            16,
        );
        let ns = ctrl.namespaces()[0].clone();
        let blocks = 3usize;
        let (bs, ms) = (bs as usize, ms as usize);
        let unit = if extended { bs + ms } else { bs };
        let mut data = pattern(bs as u64 + ms as u64, blocks * unit);
        let mut meta = pattern(7, if extended { 0 } else { blocks * ms });
        // Valid tuples on a PI format (PRCHK off still stores them as given).
        let tags = PiTags::for_lba(LBA, 0x1234);
        if let Ok(p) = Protection::of(&ns) {
            match p.layout() {
                MetadataLayout::Extended => p.generate_extended(&mut data, &tags).unwrap(),
                MetadataLayout::Separate => p.generate_separate(&data, &mut meta, &tags).unwrap(),
            }
        }
        let mut w = IoData::new(buf_of(&mut pool, data.len(), Some(&data)));
        if !extended {
            w = w.with_metadata(buf_of(&mut pool, meta.len(), Some(&meta)));
        }
        qp.write_ext(&ns, LBA, w, &IoOptions::default(), 1).unwrap();
        let c = one(&mut qp);
        assert!(c.result.is_ok(), "{bs}+{ms}: {:?}", c.result);
        assert!(c.buf.is_some());
        assert_eq!(
            c.meta().is_some(),
            !extended,
            "the metadata buffer comes back"
        );

        let (d, m) = md_buffers(&mut pool, &ns, blocks, None);
        qp.read_ext(&ns, LBA, io_data(d, m), &IoOptions::default(), 2)
            .unwrap();
        let c = one(&mut qp);
        assert!(c.result.is_ok(), "{bs}+{ms}: {:?}", c.result);
        assert_eq!(c.token, 2);
        assert_eq!(bytes(c.buf.as_ref().unwrap()), data, "{bs}+{ms} data");
        if !extended {
            assert_eq!(bytes(c.meta().unwrap()), meta, "{bs}+{ms} metadata");
        }
        // A plain read of an extended namespace carries the metadata too.
        if extended {
            qp.read(&ns, LBA, buf_of(&mut pool, data.len(), None), 3)
                .unwrap();
            let c = one(&mut qp);
            assert!(c.result.is_ok());
            assert_eq!(bytes(c.buf.as_ref().unwrap()), data);
        }
    }
}

#[test]
fn software_pi_written_with_pract_clear_passes_the_controllers_checks() {
    for (bs, ms, extended, pi) in FORMATS.into_iter().filter(|f| f.3.is_some()) {
        let (ctrl, _h, mut qp, mut pool) = bring_up(
            EmuConfig::ram(1 << 20),
            vec![namespace(bs, ms, extended, pi)],
            16,
        );
        let ns = ctrl.namespaces()[0].clone();
        let p = Protection::of(&ns).unwrap();
        let blocks = 2usize;
        let tags = PiTags {
            ref_tag: LBA as u32,
            app_tag: 0xbeef,
            app_mask: 0xffff,
        };
        let opts = IoOptions::default().protection(false, PrChk::ALL, tags);
        let (mut data, mut meta) = md_buffers(&mut pool, &ns, blocks, Some(3));
        p.generate_dma(&mut data, meta.as_mut(), &tags, &mut Vec::new())
            .unwrap();
        qp.write_ext(&ns, LBA, io_data(data, meta), &opts, 1)
            .unwrap();
        let c = one(&mut qp);
        assert!(c.result.is_ok(), "{bs}+{ms}: {:?}", c.result);

        // A wrong application tag expected: the controller says 83h.
        let wrong = IoOptions::default().protection(
            false,
            PrChk::ALL,
            PiTags {
                app_tag: 0xbeee,
                ..tags
            },
        );
        let (d, m) = md_buffers(&mut pool, &ns, blocks, None);
        qp.read_ext(&ns, LBA, io_data(d, m), &wrong, 2).unwrap();
        let c = one(&mut qp);
        assert_eq!(
            status_of(&c.result),
            Some((StatusCodeType::MEDIA, media::APP_TAG_CHECK_ERROR)),
            "{bs}+{ms}"
        );
        assert!(c.buf.is_some() && c.meta().is_some() != extended);

        // The completion's buffers, and the box holding the metadata
        // buffer, go into the next request.
        let r = match c.extra {
            Some(extra) => IoData::with_extra(c.buf, extra),
            None => IoData::new(c.buf.unwrap()),
        };
        qp.read_ext(&ns, LBA, r, &opts, 3).unwrap();
        let c = one(&mut qp);
        assert!(c.result.is_ok(), "{bs}+{ms}: {:?}", c.result);
        host_check(&ns, &c, &tags, &format!("{bs}+{ms}"));
        // Verify checks the stored tuples without moving data.
        qp.verify(&ns, LBA, blocks as u32, &opts, 4).unwrap();
        assert!(one(&mut qp).result.is_ok());
    }
}

#[test]
fn pract_lets_the_controller_insert_tuples_that_the_host_checks_on_read() {
    // 8 bytes of metadata: PRACT moves no metadata at all.
    for (bs, extended, kind) in [
        (512u32, true, ProtectionType::Type1),
        (4096, false, ProtectionType::Type1),
        (512, false, ProtectionType::Type3),
    ] {
        let (ctrl, _h, mut qp, mut pool) = bring_up(
            EmuConfig::ram(1 << 20),
            vec![namespace(bs, 8, extended, Some((kind, true)))],
            16,
        );
        let ns = ctrl.namespaces()[0].clone();
        let bsz = bs as usize;
        let blocks = 4;
        let tags = PiTags {
            ref_tag: LBA as u32,
            app_tag: 0x0a0b,
            app_mask: 0xffff,
        };
        let data = pattern(11, blocks * bsz);
        let insert = IoOptions::default().protection(true, PrChk::NONE, tags);
        let w = IoData::new(buf_of(&mut pool, data.len(), Some(&data)));
        qp.write_ext(&ns, LBA, w, &insert, 1).unwrap();
        let c = one(&mut qp);
        assert!(c.result.is_ok(), "{:?}", c.result);
        assert!(c.meta().is_none());

        // Read with PRACT clear: the stored tuples arrive and check out.
        let (d, m) = md_buffers(&mut pool, &ns, blocks, None);
        qp.read_ext(&ns, LBA, io_data(d, m), &IoOptions::default(), 2)
            .unwrap();
        let c = one(&mut qp);
        assert!(c.result.is_ok(), "{:?}", c.result);
        host_check(&ns, &c, &tags, &format!("{bs}, {kind:?}: inserted tuples"));

        // Read with PRACT set: checked by the controller and stripped.
        let strip = IoOptions::default().protection(true, PrChk::ALL, tags);
        let r = IoData::new(buf_of(&mut pool, data.len(), None));
        qp.read_ext(&ns, LBA, r, &strip, 3).unwrap();
        let c = one(&mut qp);
        assert!(c.result.is_ok(), "{:?}", c.result);
        assert_eq!(bytes(c.buf.as_ref().unwrap()), data);
    }
}

#[test]
fn corrupted_guard_and_reference_tag_complete_with_82h_and_84h_and_every_buffer() {
    for (fault, sc) in [
        (FaultAction::CorruptGuard, media::GUARD_CHECK_ERROR),
        (FaultAction::CorruptReferenceTag, media::REF_TAG_CHECK_ERROR),
    ] {
        let (ctrl, h, mut qp, mut pool) = bring_up(
            EmuConfig::ram(1 << 20),
            vec![namespace(
                512,
                8,
                false,
                Some((ProtectionType::Type1, true)),
            )],
            16,
        );
        let ns = ctrl.namespaces()[0].clone();
        let tags = PiTags::for_lba(LBA, 0x77);
        let opts = IoOptions::default().protection(true, PrChk::ALL, tags);
        let w = IoData::new(buf_of(&mut pool, 2048, Some(&pattern(5, 2048))));
        qp.write_ext(&ns, LBA, w, &opts, 1).unwrap();
        assert!(one(&mut qp).result.is_ok());

        h.add_fault(FaultRule::new(fault).io().opcode(NvmOpcode::READ.0).once());
        let check = IoOptions::default().protection(false, PrChk::ALL, tags);
        let r =
            IoData::new(buf_of(&mut pool, 2048, None)).with_metadata(buf_of(&mut pool, 32, None));
        qp.read_ext(&ns, LBA, r, &check, 2).unwrap();
        let c = one(&mut qp);
        assert_eq!(
            status_of(&c.result),
            Some((StatusCodeType::MEDIA, sc)),
            "{fault:?}: {:?}",
            c.result
        );
        assert!(
            c.buf.is_some() && c.meta().is_some(),
            "both buffers come back"
        );
    }
}

#[test]
fn buffers_that_do_not_fit_the_format_are_refused_before_reaching_the_device() {
    let (ctrl, h, mut qp, mut pool) = bring_up(
        EmuConfig::ram(1 << 20),
        vec![
            EmuNamespaceConfig::ram(512, 256),
            namespace(512, 16, false, None),
            namespace(512, 8, true, Some((ProtectionType::Type1, true))),
            namespace(512, 8, false, Some((ProtectionType::Type1, true))),
        ],
        16,
    );
    let ns = ctrl.namespaces().to_vec();
    let before = h.stats().io_commands;
    let pi = IoOptions::default().protection(false, PrChk::ALL, PiTags::for_lba(0, 0));
    let pract = IoOptions::default().protection(true, PrChk::NONE, PiTags::for_lba(0, 0));
    let plain = IoOptions::default();

    // PI asked of a namespace without it.
    for n in &ns[..2] {
        let e = qp
            .write_ext(n, 0, IoData::new(buf_of(&mut pool, 512, None)), &pi, 1)
            .unwrap_err();
        assert!(
            matches!(e.kind, SubmitErrorKind::ProtectionNotEnabled { .. }),
            "{}",
            e.kind
        );
        assert!(e.buf.is_some());
    }
    // Separate metadata missing, or the wrong size.
    let e = qp
        .read_ext(
            &ns[1],
            0,
            IoData::new(buf_of(&mut pool, 1024, None)),
            &plain,
            1,
        )
        .unwrap_err();
    assert!(matches!(
        e.kind,
        SubmitErrorKind::MetadataBufferMissing {
            nsid: 2,
            bytes: 32,
            ..
        }
    ));
    assert!(e.kind.to_string().contains("with_metadata"));
    let d = IoData::new(buf_of(&mut pool, 1024, None)).with_metadata(buf_of(&mut pool, 16, None));
    let mut e = qp.read_ext(&ns[1], 0, d, &plain, 1).unwrap_err();
    assert!(matches!(
        e.kind,
        SubmitErrorKind::MetadataLength {
            len: 16,
            expected: 32,
            blocks: 2
        }
    ));
    assert!(e.take_meta().is_some(), "the metadata buffer comes back");
    // A metadata buffer where none travels.
    for (n, len, opts) in [
        (&ns[0], 512, &plain),
        (&ns[2], 520, &plain),
        (&ns[3], 512, &pract),
    ] {
        let d = IoData::new(buf_of(&mut pool, len, None)).with_metadata(buf_of(&mut pool, 8, None));
        let mut e = qp.write_ext(n, 0, d, opts, 1).unwrap_err();
        assert!(
            matches!(e.kind, SubmitErrorKind::MetadataBufferUnused { .. }),
            "{}",
            e.kind
        );
        assert!(e.take_meta().is_some());
    }
    // Extended: the buffer holds data and metadata per block.
    let e = qp
        .write(&ns[2], 0, buf_of(&mut pool, 512, None), false, 1)
        .unwrap_err();
    assert!(matches!(
        e.kind,
        SubmitErrorKind::NotExtendedBlockMultiple {
            len: 512,
            unit: 520,
            ..
        }
    ));
    // Past the end counts blocks of the extended unit.
    let e = qp
        .read_ext(
            &ns[2],
            255,
            IoData::new(buf_of(&mut pool, 1040, None)),
            &plain,
            1,
        )
        .unwrap_err();
    assert!(matches!(
        e.kind,
        SubmitErrorKind::LbaOutOfRange { blocks: 2, .. }
    ));
    assert_eq!(h.stats().io_commands, before, "nothing reached the device");
    assert_eq!(qp.outstanding(), 0);
}

#[test]
fn metadata_buffers_in_flight_come_back_exactly_once_when_the_queue_is_deleted() {
    let (ctrl, h, mut qp, mut pool) = bring_up(
        EmuConfig::ram(1 << 20),
        vec![namespace(512, 16, false, None)],
        16,
    );
    let ns = ctrl.namespaces()[0].clone();
    h.add_fault(
        FaultRule::new(FaultAction::NeverComplete)
            .io()
            .opcode(NvmOpcode::READ.0),
    );
    for t in 0..3 {
        let d =
            IoData::new(buf_of(&mut pool, 1024, None)).with_metadata(buf_of(&mut pool, 32, None));
        qp.read_ext(&ns, t * 2, d, &IoOptions::default(), t)
            .unwrap();
    }
    qp.ring_doorbell();
    let mut seen = Vec::new();
    qp.delete_with(|c| {
        assert!(c.result.is_err(), "never completed by the device");
        seen.push((c.token, c.buf.is_some(), c.meta().is_some()));
    })
    .unwrap();
    seen.sort();
    assert_eq!(seen, [(0, true, true), (1, true, true), (2, true, true)]);
}
