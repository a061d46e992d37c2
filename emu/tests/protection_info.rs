//! Metadata formats and end-to-end protection information on the emulated
//! controller, driven at the command level: Identify reports the format,
//! extended and separate layouts round-trip, PRACT inserts and strips,
//! PRCHK finds each kind of bad tuple, and the corrupting faults make
//! stored tuples fail their checks.

#[path = "../../engine/tests/emu_support/mod.rs"]
mod emu_support;

use emu_support::*;
use nvme_emu::{EmuConfig, EmuError, EmuNamespaceConfig, FaultAction, FaultRule, ProtectionType};
use nvme_engine::dma::DmaBuf;
use nvme_engine::spec::status::{generic, media};
use nvme_engine::spec::{
    command::{Command, NvmOpcode},
    status::{Status, StatusCodeType},
};

const PRACT: u32 = 1 << 29;
const CHK_ALL: u32 = 0b111 << 26;
const CHK_GUARD: u32 = 1 << 28;

fn crc16(parts: &[&[u8]]) -> u16 {
    let c = crc::Crc::<u16>::new(&crc::CRC_16_T10_DIF);
    let mut d = c.digest();
    for p in parts {
        d.update(p);
    }
    d.finalize()
}

fn host(ns: EmuNamespaceConfig) -> (Host, Qp) {
    let mut h = Host::new(EmuConfig::ram(1 << 20).without_namespaces().namespace(ns));
    let q = h.create_io(1, 16);
    (h, q)
}

/// A Read/Write/Compare/Verify of `nlb` blocks at `slba`.
fn cmd(op: NvmOpcode, slba: u64, nlb: u32, data: &DmaBuf, meta: Option<&DmaBuf>) -> Command {
    let mut c = Command::new(op.0, 1);
    c.set_slba(slba);
    c.cdw12 = nlb - 1;
    c.prp1 = data.iova();
    c.prp2 = data.iova() + 4096;
    c.mptr = meta.map_or(0, |m| m.iova());
    c
}

fn media(sc: u8) -> Status {
    st(StatusCodeType::MEDIA, sc)
}

#[test]
fn identify_reports_the_metadata_format_protection_and_noiob() {
    let ns = EmuNamespaceConfig::ram(4096, 64)
        .metadata(64, true)
        .protection(ProtectionType::Type2, true)
        .optimal_io_boundary(32);
    let (mut h, _q) = host(ns);
    let id = identify_namespace(&mut h, 1);
    let f = id.current_format();
    assert_eq!((f.ms(), f.lbads()), (64, 12));
    assert_ne!(id.flbas & 0x10, 0, "FLBAS bit 4: extended LBA");
    assert_eq!(id.dps, 2 | 1 << 3, "type 2, first 8 bytes");
    assert_eq!(id.dpc & 0x1f, 0x1f);
    assert_eq!(id.mc & 3, 3);
    assert_eq!(id.noiob.get(), 32);
}

#[test]
fn bad_metadata_configurations_are_refused_with_the_fix() {
    let bad = |ns: EmuNamespaceConfig| {
        EmuConfig::ram(1 << 20)
            .without_namespaces()
            .namespace(ns)
            .validate()
            .unwrap_err()
    };
    let e = bad(EmuNamespaceConfig::ram(512, 8).metadata(12, false));
    assert!(matches!(e, EmuError::BadMetadataSize { ms: 12, .. }), "{e}");
    let mut ns = EmuNamespaceConfig::ram(512, 8);
    ns.protection = ProtectionType::Type1;
    assert!(matches!(bad(ns), EmuError::ProtectionNeedsMetadata { .. }));
    let e = bad(EmuNamespaceConfig::ram(512, 8).metadata(0, true));
    assert!(e.to_string().contains("extended LBA"), "{e}");
}

/// Write 4 blocks with PRACT (device generates PI), read them back with
/// PRACT clear and full checking, and check the tuples the host sees.
fn pract_round_trip(kind: ProtectionType, first: bool, ms: u16, extended: bool) {
    let lbs = 512usize;
    let ms_ = ms as usize;
    let ns = EmuNamespaceConfig::ram(512, 64)
        .metadata(ms, extended)
        .protection(kind, first);
    let (mut h, mut q) = host(ns);
    let nlb = 4usize;
    let pattern: Vec<u8> = (0..nlb * lbs).map(|i| (i * 7 + 3) as u8).collect();
    let step = if extended { lbs + ms_ } else { lbs };
    let mut wbuf = h.buf(8192);
    let mut wmeta = h.buf(4096);
    wmeta.fill(0xee);
    // With PRACT and 8 bytes of metadata the host sends data only (packed);
    // with more, each block's metadata too, the device filling in the tuple.
    let wstep = if extended && ms_ > 8 { lbs + ms_ } else { lbs };
    for i in 0..nlb {
        assert!(wbuf.write_at(i * wstep, &pattern[i * lbs..(i + 1) * lbs]));
        if wstep > lbs {
            assert!(wbuf.write_at(i * wstep + lbs, &vec![0xee; ms_]));
        }
    }
    let (slba, ref_tag, app) = (8u64, 8u32, 0x4242u16);
    let mut w = cmd(NvmOpcode::WRITE, slba, nlb as u32, &wbuf, Some(&wmeta));
    w.cdw12 |= PRACT;
    w.cdw14 = ref_tag;
    w.cdw15 = app as u32;
    assert_eq!(h.exec(&mut q, w).status(), Status::SUCCESS, "{kind:?}");

    let mut rbuf = h.buf(8192);
    let mut rmeta = h.buf(4096);
    rbuf.fill(0);
    rmeta.fill(0);
    let mut r = cmd(NvmOpcode::READ, slba, nlb as u32, &rbuf, Some(&rmeta));
    r.cdw12 |= CHK_ALL;
    r.cdw14 = ref_tag;
    r.cdw15 = app as u32 | 0xffff << 16;
    assert_eq!(
        h.exec(&mut q, r).status(),
        Status::SUCCESS,
        "{kind:?} {first} {ms} {extended}"
    );
    for i in 0..nlb {
        let mut d = vec![0u8; lbs];
        let mut m = vec![0u8; ms_];
        rbuf.read_at(i * step, &mut d);
        if extended {
            rbuf.read_at(i * step + lbs, &mut m);
        } else {
            rmeta.read_at(i * ms_, &mut m);
        }
        assert_eq!(d, &pattern[i * lbs..(i + 1) * lbs], "block {i} data");
        let at = if first { 0 } else { ms_ - 8 };
        let guard_tail: &[u8] = if first { &[] } else { &m[..ms_ - 8] };
        if ms_ > 8 {
            // PRACT keeps the host's other metadata bytes.
            let other = if first { &m[8..] } else { &m[..ms_ - 8] };
            assert!(other.iter().all(|&b| b == 0xee), "block {i} metadata kept");
        }
        let t = &m[at..at + 8];
        assert_eq!(u16::from_be_bytes([t[0], t[1]]), crc16(&[&d, guard_tail]));
        assert_eq!(u16::from_be_bytes([t[2], t[3]]), app);
        let want_ref = match kind {
            ProtectionType::Type3 => ref_tag,
            _ => ref_tag + i as u32,
        };
        assert_eq!(u32::from_be_bytes([t[4], t[5], t[6], t[7]]), want_ref);
    }

    if ms == 8 {
        // PRACT on a read of 8-byte metadata: checked and stripped.
        rbuf.fill(0);
        rmeta.fill(0x77);
        let mut r = cmd(NvmOpcode::READ, slba, nlb as u32, &rbuf, Some(&rmeta));
        r.cdw12 |= PRACT | CHK_ALL;
        r.cdw14 = ref_tag;
        r.cdw15 = app as u32 | 0xffff << 16;
        assert_eq!(h.exec(&mut q, r).status(), Status::SUCCESS);
        let mut d = vec![0u8; nlb * lbs];
        rbuf.read_at(0, &mut d);
        assert_eq!(d, pattern, "data only, packed, with PRACT stripping");
        let mut m = [0u8; 32];
        rmeta.read_at(0, &mut m);
        assert!(m.iter().all(|&b| b == 0x77), "no metadata transferred");
    }
}

#[test]
fn pract_generates_tuples_that_read_back_in_every_type_location_and_layout() {
    for kind in [
        ProtectionType::Type1,
        ProtectionType::Type2,
        ProtectionType::Type3,
    ] {
        for first in [true, false] {
            for ms in [8u16, 16] {
                for extended in [true, false] {
                    pract_round_trip(kind, first, ms, extended);
                }
            }
        }
    }
}

/// A host-built tuple for `data`.
fn tuple(data: &[u8], app: u16, reftag: u32) -> [u8; 8] {
    let mut t = [0u8; 8];
    t[..2].copy_from_slice(&crc16(&[data]).to_be_bytes());
    t[2..4].copy_from_slice(&app.to_be_bytes());
    t[4..].copy_from_slice(&reftag.to_be_bytes());
    t
}

#[test]
fn prchk_on_write_names_guard_app_and_reference_tag_errors() {
    let ns = EmuNamespaceConfig::ram(512, 64)
        .metadata(8, false)
        .protection(ProtectionType::Type1, false);
    let (mut h, mut q) = host(ns);
    let mut data = h.buf(4096);
    data.fill(0x3c);
    let mut meta = h.buf(4096);
    let block = vec![0x3cu8; 512];
    let write =
        |h: &mut Host, q: &mut Qp, meta: &mut DmaBuf, t: [u8; 8], app: u16, data: &DmaBuf| {
            meta.write_at(0, &t);
            let mut w = cmd(NvmOpcode::WRITE, 5, 1, data, Some(meta));
            w.cdw12 |= CHK_ALL;
            w.cdw14 = 5;
            w.cdw15 = app as u32 | 0xffff << 16;
            h.exec(q, w).status()
        };
    let good = tuple(&block, 9, 5);
    assert_eq!(
        write(&mut h, &mut q, &mut meta, good, 9, &data),
        Status::SUCCESS
    );
    let mut bad_guard = good;
    bad_guard[1] ^= 1;
    assert_status_is(
        write(&mut h, &mut q, &mut meta, bad_guard, 9, &data),
        media(media::GUARD_CHECK_ERROR),
    );
    assert_status_is(
        write(&mut h, &mut q, &mut meta, good, 10, &data),
        media(media::APP_TAG_CHECK_ERROR),
    );
    let wrong_ref = tuple(&block, 9, 6);
    assert_status_is(
        write(&mut h, &mut q, &mut meta, wrong_ref, 9, &data),
        media(media::REF_TAG_CHECK_ERROR),
    );
    // The escape: application tag FFFFh turns every check off (types 1 and 2).
    let mut escaped = bad_guard;
    escaped[2..4].copy_from_slice(&[0xff, 0xff]);
    assert_eq!(
        write(&mut h, &mut q, &mut meta, escaped, 9, &data),
        Status::SUCCESS
    );
    // Type 1: an EILBRT that is not the LBA is Invalid Protection Information.
    meta.write_at(0, &good);
    let mut w = cmd(NvmOpcode::WRITE, 5, 1, &data, Some(&meta));
    w.cdw12 |= CHK_ALL;
    w.cdw14 = 4;
    assert_status_is(
        h.exec(&mut q, w).status(),
        st(StatusCodeType::COMMAND_SPECIFIC, 0x81),
    );
}

fn assert_status_is(got: Status, want: Status) {
    assert!(got.code_eq(want), "got {got}, want {want}");
}

#[test]
fn type3_escape_needs_both_tags_all_ones() {
    let ns = EmuNamespaceConfig::ram(512, 64)
        .metadata(8, true)
        .protection(ProtectionType::Type3, true);
    let (mut h, mut q) = host(ns);
    let mut buf = h.buf(4096);
    buf.fill(1);
    buf.write_at(512, &[0, 0, 0xff, 0xff, 0, 0, 0, 0]);
    let mut w = cmd(NvmOpcode::WRITE, 0, 1, &buf, None);
    w.cdw12 |= CHK_GUARD;
    assert_status_is(h.exec(&mut q, w).status(), media(media::GUARD_CHECK_ERROR));
    buf.write_at(512, &[0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(h.exec(&mut q, w).status(), Status::SUCCESS);
}

#[test]
fn corrupting_faults_make_stored_guards_and_reference_tags_fail_their_checks() {
    let ns = EmuNamespaceConfig::ram(512, 64)
        .metadata(8, false)
        .protection(ProtectionType::Type1, true);
    let (mut h, mut q) = host(ns);
    let mut data = h.buf(4096);
    data.fill(0x11);
    let meta = h.buf(4096);
    let write = |h: &mut Host, q: &mut Qp| {
        let mut w = cmd(NvmOpcode::WRITE, 16, 2, &data, Some(&meta));
        w.cdw12 |= PRACT;
        w.cdw14 = 16;
        h.exec(q, w).status()
    };
    let read = |h: &mut Host, q: &mut Qp| {
        let mut r = cmd(NvmOpcode::READ, 16, 2, &data, Some(&meta));
        r.cdw12 |= CHK_ALL;
        r.cdw14 = 16;
        h.exec(q, r).status()
    };
    let id = h.emu.add_fault(
        FaultRule::new(FaultAction::CorruptGuard)
            .io()
            .opcode(NvmOpcode::WRITE.0)
            .once(),
    );
    assert_eq!(write(&mut h, &mut q), Status::SUCCESS);
    assert_eq!(h.emu.fault_hits(id), 1);
    assert_status_is(read(&mut h, &mut q), media(media::GUARD_CHECK_ERROR));
    assert_eq!(write(&mut h, &mut q), Status::SUCCESS, "a clean rewrite");
    assert_eq!(read(&mut h, &mut q), Status::SUCCESS);
    h.emu.add_fault(
        FaultRule::new(FaultAction::CorruptReferenceTag)
            .io()
            .opcode(NvmOpcode::READ.0)
            .lba(17..18)
            .once(),
    );
    assert_status_is(read(&mut h, &mut q), media(media::REF_TAG_CHECK_ERROR));
    // Without reference tag checking the same blocks read fine.
    let mut r = cmd(NvmOpcode::READ, 16, 2, &data, Some(&meta));
    r.cdw12 |= CHK_GUARD;
    assert_eq!(h.exec(&mut q, r).status(), Status::SUCCESS);
}

#[test]
fn extended_4096_plus_64_and_separate_metadata_round_trip_without_pi() {
    for extended in [true, false] {
        let (mut h, mut q) = host(EmuNamespaceConfig::ram(4096, 16).metadata(64, extended));
        let mut w = h.buf(8192);
        let mut wm = h.buf(4096);
        let image: Vec<u8> = (0..4096 + 64).map(|i| (i % 251) as u8).collect();
        if extended {
            w.write_at(0, &image);
        } else {
            w.write_at(0, &image[..4096]);
            wm.write_at(0, &image[4096..]);
        }
        let c = cmd(NvmOpcode::WRITE, 3, 1, &w, Some(&wm));
        assert_eq!(h.exec(&mut q, c).status(), Status::SUCCESS);
        let mut r = h.buf(8192);
        let mut rm = h.buf(4096);
        r.fill(0);
        rm.fill(0);
        let c = cmd(NvmOpcode::READ, 3, 1, &r, Some(&rm));
        assert_eq!(h.exec(&mut q, c).status(), Status::SUCCESS);
        let mut back = vec![0u8; 4096 + 64];
        if extended {
            r.read_at(0, &mut back);
        } else {
            r.read_at(0, &mut back[..4096]);
            rm.read_at(0, &mut back[4096..]);
        }
        assert_eq!(back, image, "extended={extended}");
    }
}

#[test]
fn metadata_outside_registered_memory_is_a_data_transfer_error() {
    let (mut h, mut q) = host(EmuNamespaceConfig::ram(512, 16).metadata(8, false));
    let data = h.buf(4096);
    let mut c = cmd(NvmOpcode::WRITE, 0, 1, &data, None);
    c.mptr = 0xdead_0000;
    assert_status_is(
        h.exec(&mut q, c).status(),
        st(StatusCodeType::GENERIC, generic::DATA_TRANSFER_ERROR),
    );
}

#[test]
fn verify_and_compare_check_protection_information_on_the_device() {
    let ns = EmuNamespaceConfig::ram(512, 64)
        .metadata(16, true)
        .protection(ProtectionType::Type2, false);
    let (mut h, mut q) = host(ns);
    let mut buf = h.buf(8192);
    for i in 0..2 {
        buf.write_at(i * 528, &[0x99; 512]);
        buf.write_at(i * 528 + 512, &[0xcd; 16]);
    }
    let mut w = cmd(NvmOpcode::WRITE, 30, 2, &buf, None);
    w.cdw12 |= PRACT;
    w.cdw14 = 1000;
    assert_eq!(h.exec(&mut q, w).status(), Status::SUCCESS);
    let verify = |h: &mut Host, q: &mut Qp, ref_tag: u32| {
        let mut v = Command::new(0x0C, 1);
        v.set_slba(30);
        v.cdw12 = 1 | CHK_ALL;
        v.cdw14 = ref_tag;
        v.cdw15 = 0xffff << 16;
        h.exec(q, v).status()
    };
    assert_eq!(verify(&mut h, &mut q, 1000), Status::SUCCESS);
    assert_status_is(
        verify(&mut h, &mut q, 999),
        media(media::REF_TAG_CHECK_ERROR),
    );
    // Compare sees the stored image (data, the host's metadata and the
    // tuple the device wrote): read it back and compare it unchanged.
    let mut r = cmd(NvmOpcode::READ, 30, 2, &buf, None);
    r.cdw14 = 1000;
    assert_eq!(h.exec(&mut q, r).status(), Status::SUCCESS);
    let mut c = cmd(NvmOpcode::COMPARE, 30, 2, &buf, None);
    c.cdw12 |= CHK_ALL;
    c.cdw14 = 1000;
    assert_eq!(h.exec(&mut q, c).status(), Status::SUCCESS);
    buf.write_at(528 + 520, &[0]);
    assert_status_is(h.exec(&mut q, c).status(), media(media::COMPARE_FAILURE));
    h.emu.add_fault(
        FaultRule::new(FaultAction::CorruptGuard)
            .io()
            .opcode(0x0C)
            .once(),
    );
    assert_status_is(
        verify(&mut h, &mut q, 1000),
        media(media::GUARD_CHECK_ERROR),
    );
}

#[test]
fn write_zeroes_with_pract_leaves_blocks_that_pass_every_check() {
    let ns = EmuNamespaceConfig::ram(512, 64)
        .metadata(8, false)
        .protection(ProtectionType::Type1, false);
    let (mut h, mut q) = host(ns);
    let data = h.buf(4096);
    let meta = h.buf(4096);
    let read = |h: &mut Host, q: &mut Qp| {
        let mut r = cmd(NvmOpcode::READ, 40, 4, &data, Some(&meta));
        r.cdw12 |= CHK_ALL;
        r.cdw14 = 40;
        r.cdw15 = 7 | 0xffff << 16;
        h.exec(q, r).status()
    };
    let mut wz = Command::new(NvmOpcode::WRITE_ZEROES.0, 1);
    wz.set_slba(40);
    wz.cdw12 = 3;
    assert_eq!(h.exec(&mut q, wz).status(), Status::SUCCESS);
    assert_status_is(read(&mut h, &mut q), media(media::APP_TAG_CHECK_ERROR));
    wz.cdw12 = 3 | PRACT;
    wz.cdw14 = 40;
    wz.cdw15 = 7;
    assert_eq!(h.exec(&mut q, wz).status(), Status::SUCCESS);
    assert_eq!(read(&mut h, &mut q), Status::SUCCESS);
}

#[test]
fn protection_information_in_a_file_namespace_survives_the_controller() {
    let path = std::env::temp_dir().join(format!("emu-pi-{}.img", std::process::id()));
    let meta_path = std::path::PathBuf::from(format!("{}.meta", path.display()));
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&meta_path);
    let ns = || {
        EmuNamespaceConfig::file(&path, 512, 64)
            .grow_file()
            .metadata(8, false)
            .protection(ProtectionType::Type1, true)
    };
    {
        let (mut h, mut q) = host(ns());
        let mut data = h.buf(4096);
        data.fill(0x6b);
        let meta = h.buf(4096);
        let mut w = cmd(NvmOpcode::WRITE, 12, 3, &data, Some(&meta));
        w.cdw12 |= PRACT;
        w.cdw14 = 12;
        assert_eq!(h.exec(&mut q, w).status(), Status::SUCCESS);
    }
    assert_eq!(std::fs::metadata(&meta_path).unwrap().len(), 64 * 8);
    let (mut h, mut q) = host(ns());
    let data = h.buf(4096);
    let meta = h.buf(4096);
    let mut r = cmd(NvmOpcode::READ, 12, 3, &data, Some(&meta));
    r.cdw12 |= CHK_ALL;
    r.cdw14 = 12;
    assert_eq!(h.exec(&mut q, r).status(), Status::SUCCESS);
    let mut t = [0u8; 8];
    meta.read_at(16, &mut t);
    assert_eq!(
        u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        14,
        "block 14's reference tag"
    );
    drop(h);
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(&meta_path).unwrap();
}
