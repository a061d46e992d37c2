//! Software protection information (`nvme_engine::pi`) against the
//! emulated controller, at the command level: tuples the host generates
//! pass the controller's checks with PRCHK all on, tuples the controller
//! inserts with PRACT pass the host's checker, in every type, location and
//! layout; the metadata format is taken from the controller's own Identify
//! Namespace data; and corruption on either side is caught by the other.

mod emu_support;

use emu_support::*;
use nvme_emu::{EmuConfig, EmuNamespaceConfig, FaultAction, FaultRule, ProtectionType};
use nvme_engine::dma::DmaBuf;
use nvme_engine::pi::{PiError, PiField, PiTags, Protection};
use nvme_engine::spec::protection::{
    MetadataFormat, MetadataLayout, PiFields, PiLocation, PiType, PrChk,
};
use nvme_engine::spec::status::media;
use nvme_engine::spec::{
    command::{Command, NvmOpcode},
    status::{Status, StatusCodeType},
};

const SLBA: u64 = 12;
const APP: u16 = 0x5a5a;

struct Case {
    kind: ProtectionType,
    first: bool,
    lba: u32,
    ms: u16,
    extended: bool,
}

impl Case {
    fn all() -> Vec<Case> {
        let mut v = Vec::new();
        for kind in [
            ProtectionType::Type1,
            ProtectionType::Type2,
            ProtectionType::Type3,
        ] {
            for first in [true, false] {
                for (lba, ms) in [(512, 8), (512, 16), (4096, 8), (4096, 64)] {
                    for extended in [true, false] {
                        v.push(Case {
                            kind,
                            first,
                            lba,
                            ms,
                            extended,
                        });
                    }
                }
            }
        }
        v
    }

    /// Blocks per command: as many as two pages (PRP1 + PRP2) carry.
    fn blocks(&self) -> usize {
        let unit = self.lba as usize + if self.extended { self.ms as usize } else { 0 };
        (8192 / unit).min(4)
    }

    fn label(&self) -> String {
        format!(
            "{:?} {} {}+{} {}",
            self.kind,
            if self.first { "first" } else { "last" },
            self.lba,
            self.ms,
            if self.extended {
                "extended"
            } else {
                "separate"
            }
        )
    }
}

/// A controller with one namespace in this format, an I/O queue, and the
/// metadata format decoded from its Identify Namespace data.
fn setup(c: &Case) -> (Host, Qp, MetadataFormat) {
    let ns = EmuNamespaceConfig::ram(c.lba, 64)
        .metadata(c.ms, c.extended)
        .protection(c.kind, c.first);
    let mut h = Host::new(EmuConfig::ram(1 << 20).without_namespaces().namespace(ns));
    let q = h.create_io(1, 16);
    let id = identify_namespace(&mut h, 1);
    let f = id.metadata_format().unwrap().expect("a metadata format");
    (h, q, f)
}

/// The PiTags and PRINFO of a command on `SLBA`.
fn tags(kind: PiType) -> PiTags {
    PiTags {
        ref_tag: if kind == PiType::Type1 {
            SLBA as u32
        } else {
            0x1000
        },
        app_tag: APP,
        app_mask: 0xffff,
    }
}

fn command(op: NvmOpcode, blocks: usize, data: &DmaBuf, meta: &DmaBuf, pi: PiFields) -> Command {
    let mut c = rw(op, 1, SLBA, blocks as u32, data);
    c.set_mptr(meta.iova());
    pi.apply(&mut c);
    c
}

/// Run `cmd` on `q`, expecting success.
fn exec_ok(h: &mut Host, q: &mut Qp, c: &Case, cmd: Command) {
    assert_eq!(h.exec(q, cmd).status(), Status::SUCCESS, "{}", c.label());
}

/// The first `len` bytes of `buf`.
fn contents(buf: &DmaBuf, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    buf.read_at(0, &mut v);
    v
}

fn fields(t: &PiTags, pract: bool, check: PrChk) -> PiFields {
    PiFields {
        pract,
        check,
        ref_tag: t.ref_tag,
        app_tag: t.app_tag,
        app_mask: t.app_mask,
    }
}

/// Host buffers in the namespace's layout: (data or extended, separate metadata).
fn host_buffers(c: &Case, n: usize) -> (Vec<u8>, Vec<u8>) {
    let ms = c.ms as usize;
    let unit = c.lba as usize + if c.extended { ms } else { 0 };
    let data = (0..n * unit).map(|i| (i * 31 + 7) as u8).collect();
    let meta = if c.extended {
        Vec::new()
    } else {
        vec![0xc3; n * ms]
    };
    (data, meta)
}

fn generate(p: &Protection, t: &PiTags, data: &mut [u8], meta: &mut [u8]) {
    match p.layout() {
        MetadataLayout::Extended => p.generate_extended(data, t).unwrap(),
        MetadataLayout::Separate => p.generate_separate(data, meta, t).unwrap(),
    }
}

fn check(p: &Protection, t: &PiTags, data: &[u8], meta: &[u8]) -> Result<(), PiError> {
    match p.layout() {
        MetadataLayout::Extended => p.check_extended(data, t, PrChk::ALL),
        MetadataLayout::Separate => p.check_separate(data, meta, t, PrChk::ALL),
    }
}

#[test]
fn host_generated_pi_passes_the_controllers_checks_and_reads_back_checked() {
    for c in Case::all() {
        let (mut h, mut q, f) = setup(&c);
        let p = Protection::new(c.lba as usize, f).unwrap();
        let kind = p.kind();
        let t = tags(kind);
        let n = c.blocks();
        let (mut data, mut meta) = host_buffers(&c, n);
        generate(&p, &t, &mut data, &mut meta);

        // The same tuples generated straight into DMA buffers.
        let (mut dbuf, mut mbuf) = (h.buf(data.len()), h.buf(meta.len().max(8)));
        let (plain_data, plain_meta) = host_buffers(&c, n);
        assert!(dbuf.write_at(0, &plain_data) && mbuf.write_at(0, &plain_meta));
        assert!(mbuf.set_window(0, meta.len()));
        let mut scratch = Vec::new();
        let sep = (!c.extended).then_some(&mut mbuf);
        p.generate_dma(&mut dbuf, sep, &t, &mut scratch).unwrap();
        let (dma_data, dma_meta) = (contents(&dbuf, data.len()), contents(&mbuf, meta.len()));
        assert_eq!((&dma_data, &dma_meta), (&data, &meta), "{}", c.label());

        let (mut dbuf, mut mbuf) = (h.buf(8192), h.buf(4096));
        assert!(dbuf.write_at(0, &data) && mbuf.write_at(0, &meta));
        let w = command(
            NvmOpcode::WRITE,
            n,
            &dbuf,
            &mbuf,
            fields(&t, false, PrChk::ALL),
        );
        exec_ok(&mut h, &mut q, &c, w);

        // Read back with the controller checking too; the host's checker
        // agrees with what arrives.
        let (rbuf, rmeta) = (h.buf(8192), h.buf(4096));
        let r = command(
            NvmOpcode::READ,
            n,
            &rbuf,
            &rmeta,
            fields(&t, false, PrChk::ALL),
        );
        exec_ok(&mut h, &mut q, &c, r);
        let (back, back_meta) = (contents(&rbuf, data.len()), contents(&rmeta, meta.len()));
        assert_eq!((&back, &back_meta), (&data, &meta), "{}", c.label());
        check(&p, &t, &back, &back_meta).unwrap();

        // One flipped data bit in the last block: the controller refuses
        // the write with a guard error — it really checks what we generate.
        let last = (n - 1) * (data.len() / n) + 17;
        data[last] ^= 0x04;
        assert!(dbuf.write_at(0, &data));
        let w = command(
            NvmOpcode::WRITE,
            n,
            &dbuf,
            &mbuf,
            fields(&t, false, PrChk::ALL),
        );
        assert!(
            h.exec(&mut q, w)
                .status()
                .code_eq(Status::new(StatusCodeType::MEDIA, media::GUARD_CHECK_ERROR)),
            "{}",
            c.label()
        );
        assert!(matches!(
            check(&p, &t, &data, &meta),
            Err(PiError::Check { block, field: PiField::Guard, .. }) if block == n - 1
        ));
    }
}

#[test]
fn pi_the_controller_inserts_with_pract_passes_the_host_checker() {
    for c in Case::all() {
        let (mut h, mut q, f) = setup(&c);
        let p = Protection::new(c.lba as usize, f).unwrap();
        let t = tags(p.kind());
        let n = c.blocks();
        let (lbs, ms) = (c.lba as usize, c.ms as usize);
        // With PRACT and exactly 8 bytes of metadata only data travels
        // (packed); with more, the host's metadata bytes travel too and
        // the controller fills in the tuple.
        let strips = f.pract_strips_metadata();
        let (mut wdata, wmeta) = host_buffers(&c, n);
        if strips && c.extended {
            wdata.truncate(n * lbs);
        }
        let (mut dbuf, mut mbuf) = (h.buf(8192), h.buf(4096));
        assert!(dbuf.write_at(0, &wdata) && mbuf.write_at(0, &wmeta));
        let w = command(
            NvmOpcode::WRITE,
            n,
            &dbuf,
            &mbuf,
            fields(&t, true, PrChk::NONE),
        );
        exec_ok(&mut h, &mut q, &c, w);

        // Read data and tuples as stored, the controller checking nothing.
        let (rbuf, rmeta) = (h.buf(8192), h.buf(4096));
        let r = command(
            NvmOpcode::READ,
            n,
            &rbuf,
            &rmeta,
            fields(&t, false, PrChk::NONE),
        );
        exec_ok(&mut h, &mut q, &c, r);
        let unit = lbs + if c.extended { ms } else { 0 };
        let (back, back_meta) = (
            contents(&rbuf, n * unit),
            contents(&rmeta, if c.extended { 0 } else { n * ms }),
        );
        check(&p, &t, &back, &back_meta).unwrap_or_else(|e| panic!("{}: {e}", c.label()));
        // The same check straight on the DMA buffers, through a scratch block.
        let (mut rbuf, mut rmeta) = (rbuf, rmeta);
        assert!(rbuf.set_window(0, n * unit));
        assert!(rmeta.set_window(0, n * ms));
        let sep = (!c.extended).then_some(&rmeta);
        let mut scratch = Vec::new();
        p.check_dma(&rbuf, sep, &t, PrChk::ALL, &mut scratch)
            .unwrap_or_else(|e| panic!("{}: {e}", c.label()));
        let other_app = PiTags { app_tag: !APP, ..t };
        assert!(matches!(
            p.check_dma(&rbuf, sep, &other_app, PrChk::ALL, &mut scratch),
            Err(PiError::Check {
                block: 0,
                field: PiField::AppTag,
                ..
            })
        ));

        // The same blocks read as if they started one block later fail on
        // the reference tag for types 1 and 2 (type 3's does not advance).
        let shifted = PiTags {
            ref_tag: t.ref_tag + 1,
            ..t
        };
        let r = check(&p, &shifted, &back, &back_meta);
        match p.kind() {
            PiType::Type3 => assert!(matches!(
                r,
                Err(PiError::Check {
                    block: 0,
                    field: PiField::RefTag,
                    ..
                })
            )),
            _ => assert!(
                matches!(
                    r,
                    Err(PiError::Check {
                        block: 0,
                        field: PiField::RefTag,
                        found,
                        ..
                    }) if found == t.ref_tag
                ),
                "{}: {r:?}",
                c.label()
            ),
        }
    }
}

#[test]
fn tuples_the_controller_corrupts_are_caught_by_the_host_checker() {
    let c = Case {
        kind: ProtectionType::Type1,
        first: false,
        lba: 512,
        ms: 16,
        extended: false,
    };
    for (action, field) in [
        (FaultAction::CorruptGuard, PiField::Guard),
        (FaultAction::CorruptReferenceTag, PiField::RefTag),
    ] {
        let (mut h, mut q, f) = setup(&c);
        assert_eq!(f.pi.unwrap().location, PiLocation::Last);
        let p = Protection::new(512, f).unwrap();
        let t = tags(p.kind());
        let (mut data, mut meta) = host_buffers(&c, 4);
        generate(&p, &t, &mut data, &mut meta);
        let (mut dbuf, mut mbuf) = (h.buf(8192), h.buf(4096));
        assert!(dbuf.write_at(0, &data) && mbuf.write_at(0, &meta));
        h.emu.add_fault(
            FaultRule::new(action)
                .io()
                .opcode(NvmOpcode::READ.0)
                .lba(SLBA + 2..SLBA + 3)
                .once(),
        );
        let w = command(
            NvmOpcode::WRITE,
            4,
            &dbuf,
            &mbuf,
            fields(&t, false, PrChk::ALL),
        );
        assert_eq!(h.exec(&mut q, w).status(), Status::SUCCESS);
        // A one-block read of the third block damages its stored tuple
        // (the fault hits every block of the command it matches, once).
        let (one, one_meta) = (h.buf(4096), h.buf(4096));
        let mut r = command(
            NvmOpcode::READ,
            1,
            &one,
            &one_meta,
            fields(&t, false, PrChk::NONE),
        );
        r.set_slba(SLBA + 2);
        assert_eq!(h.exec(&mut q, r).status(), Status::SUCCESS);
        let r = command(
            NvmOpcode::READ,
            4,
            &dbuf,
            &mbuf,
            fields(&t, false, PrChk::NONE),
        );
        assert_eq!(h.exec(&mut q, r).status(), Status::SUCCESS);
        dbuf.read_at(0, &mut data);
        mbuf.read_at(0, &mut meta);
        let err = p.check_separate(&data, &meta, &t, PrChk::ALL).unwrap_err();
        assert!(
            matches!(err, PiError::Check { block: 2, field: got, .. } if got == field),
            "{err}"
        );
    }
}
