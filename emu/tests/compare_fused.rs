//! Compare, fused Compare and Write, Write Uncorrectable and Verify on the
//! emulated controller at the command level, and what Identify advertises
//! for them (ONCS, FUSES).

#[path = "../../engine/tests/emu_support/mod.rs"]
mod emu_support;

use emu_support::*;
use nvme_emu::{EmuConfig, EmuNamespaceConfig};
use nvme_engine::dma::DmaBuf;
use nvme_engine::spec::status::{generic, media};
use nvme_engine::spec::{
    command::{Command, NvmOpcode},
    status::{Status, StatusCodeType},
};

const VERIFY: u8 = 0x0C;

fn setup() -> (Host, Qp) {
    let mut h = Host::new(
        EmuConfig::ram(1 << 20)
            .without_namespaces()
            .namespace(EmuNamespaceConfig::ram(512, 256)),
    );
    let q = h.create_io(1, 16);
    (h, q)
}

fn is(got: Status, sct: StatusCodeType, sc: u8) {
    let want = st(sct, sc);
    assert!(got.code_eq(want), "got {got}, want {want}");
}

fn fused(op: NvmOpcode, fuse: u32, slba: u64, buf: &DmaBuf) -> Command {
    let mut c = rw(op, 1, slba, 1, buf);
    c.cdw0 |= fuse << 8;
    c
}

#[test]
fn identify_advertises_compare_write_uncorrectable_verify_and_fused_compare_and_write() {
    let (mut h, _q) = setup();
    let id = identify_controller(&mut h);
    let oncs = id.oncs.get();
    assert_eq!(
        oncs & 0b1000_0011,
        0b1000_0011,
        "compare, write uncorrectable, verify"
    );
    assert_eq!(id.fuses.get() & 1, 1);
    assert_ne!(id.sgls.get() & 3, 0, "SGLs supported by default");
}

#[test]
fn compare_succeeds_on_equal_data_and_fails_with_compare_failure() {
    let (mut h, mut q) = setup();
    let mut b = h.buf(4096);
    b.fill(0x5a);
    assert_eq!(
        h.exec(&mut q, rw(NvmOpcode::WRITE, 1, 4, 2, &b)).status(),
        Status::SUCCESS
    );
    assert_eq!(
        h.exec(&mut q, rw(NvmOpcode::COMPARE, 1, 4, 2, &b)).status(),
        Status::SUCCESS
    );
    b.write_at(700, &[0]);
    let c = h.exec(&mut q, rw(NvmOpcode::COMPARE, 1, 4, 2, &b));
    is(c.status(), StatusCodeType::MEDIA, media::COMPARE_FAILURE);
}

#[test]
fn fused_compare_and_write_writes_only_when_the_compare_matches() {
    let (mut h, mut q) = setup();
    let mut old = h.buf(4096);
    let mut new = h.buf(4096);
    old.fill(1);
    new.fill(2);
    assert_eq!(
        h.exec(&mut q, rw(NvmOpcode::WRITE, 1, 9, 1, &old)).status(),
        Status::SUCCESS
    );
    // Both halves go in together, one doorbell.
    let (c1, c2) = (h.cid(), h.cid());
    push(&mut q, fused(NvmOpcode::COMPARE, 1, 9, &old), c1);
    push(&mut q, fused(NvmOpcode::WRITE, 2, 9, &new), c2);
    ring_sq(&h.dev, &q);
    let (a, b) = (pop(&mut q), pop(&mut q));
    ring_cq(&h.dev, &q);
    assert_eq!((a.cid, a.status()), (c1, Status::SUCCESS));
    assert_eq!((b.cid, b.status()), (c2, Status::SUCCESS));
    assert_eq!(
        h.exec(&mut q, rw(NvmOpcode::COMPARE, 1, 9, 1, &new))
            .status(),
        Status::SUCCESS
    );

    // Compare against stale data: the compare fails and the write is aborted.
    let mut third = h.buf(4096);
    third.fill(3);
    let (c1, c2) = (h.cid(), h.cid());
    push(&mut q, fused(NvmOpcode::COMPARE, 1, 9, &old), c1);
    push(&mut q, fused(NvmOpcode::WRITE, 2, 9, &third), c2);
    ring_sq(&h.dev, &q);
    let (a, b) = (pop(&mut q), pop(&mut q));
    ring_cq(&h.dev, &q);
    is(a.status(), StatusCodeType::MEDIA, media::COMPARE_FAILURE);
    is(b.status(), StatusCodeType::GENERIC, 0x09);
    assert_eq!(
        h.exec(&mut q, rw(NvmOpcode::COMPARE, 1, 9, 1, &new))
            .status(),
        Status::SUCCESS,
        "the aborted write changed nothing"
    );
}

#[test]
fn a_fused_half_without_its_partner_is_aborted_as_missing() {
    let (mut h, mut q) = setup();
    let b = h.buf(4096);
    // A second command alone.
    let c = h.exec(&mut q, fused(NvmOpcode::WRITE, 2, 0, &b));
    is(c.status(), StatusCodeType::GENERIC, 0x0A);
    // A first command followed by a plain read: the first is aborted, the read runs.
    let (c1, c2) = (h.cid(), h.cid());
    push(&mut q, fused(NvmOpcode::COMPARE, 1, 0, &b), c1);
    push(&mut q, rw(NvmOpcode::READ, 1, 0, 1, &b), c2);
    ring_sq(&h.dev, &q);
    let (a, r) = (pop(&mut q), pop(&mut q));
    ring_cq(&h.dev, &q);
    assert_eq!(a.cid, c1);
    is(a.status(), StatusCodeType::GENERIC, 0x0A);
    assert_eq!((r.cid, r.status()), (c2, Status::SUCCESS));
    // A first half waiting when its SQ is deleted completes, aborted.
    let c1 = h.cid();
    push(&mut q, fused(NvmOpcode::COMPARE, 1, 0, &b), c1);
    ring_sq(&h.dev, &q);
    assert!(peek(&q).is_none(), "held for its second half");
    let mut del = Command::new(nvme_engine::spec::command::AdminOpcode::DELETE_IO_SQ.0, 0);
    del.cdw10 = 1;
    assert_eq!(h.admin(del).status(), Status::SUCCESS);
    let a = pop(&mut q);
    assert_eq!(a.cid, c1);
    is(
        a.status(),
        StatusCodeType::GENERIC,
        generic::ABORTED_SQ_DELETION,
    );
}

#[test]
fn write_uncorrectable_fails_reads_until_the_blocks_are_written() {
    let (mut h, mut q) = setup();
    let mut b = h.buf(4096);
    b.fill(9);
    let mut wu = Command::new(NvmOpcode::WRITE_UNCORRECTABLE.0, 1);
    wu.set_slba(20);
    wu.cdw12 = 3; // 20..24
    assert_eq!(h.exec(&mut q, wu).status(), Status::SUCCESS);
    for op in [NvmOpcode::READ, NvmOpcode::COMPARE, NvmOpcode(VERIFY)] {
        let c = h.exec(&mut q, rw(op, 1, 22, 1, &b));
        is(
            c.status(),
            StatusCodeType::MEDIA,
            media::UNRECOVERED_READ_ERROR,
        );
    }
    assert_eq!(
        h.exec(&mut q, rw(NvmOpcode::READ, 1, 24, 1, &b)).status(),
        Status::SUCCESS
    );
    assert_eq!(
        h.exec(&mut q, rw(NvmOpcode::WRITE, 1, 21, 2, &b)).status(),
        Status::SUCCESS
    );
    assert_eq!(
        h.exec(&mut q, rw(NvmOpcode::READ, 1, 21, 2, &b)).status(),
        Status::SUCCESS
    );
    let c = h.exec(&mut q, rw(NvmOpcode::READ, 1, 20, 1, &b));
    is(
        c.status(),
        StatusCodeType::MEDIA,
        media::UNRECOVERED_READ_ERROR,
    );
    let mut wz = Command::new(NvmOpcode::WRITE_ZEROES.0, 1);
    wz.set_slba(20);
    wz.cdw12 = 3;
    assert_eq!(h.exec(&mut q, wz).status(), Status::SUCCESS);
    assert_eq!(
        h.exec(&mut q, rw(NvmOpcode::READ, 1, 20, 4, &b)).status(),
        Status::SUCCESS
    );
}

#[test]
fn verify_checks_the_range_without_moving_data() {
    let (mut h, mut q) = setup();
    let mut b = h.buf(4096);
    b.fill(0xab);
    let mut v = Command::new(VERIFY, 1);
    v.set_slba(252);
    v.cdw12 = 5; // 252..258, past the end (256 blocks)
    is(
        h.exec(&mut q, v).status(),
        StatusCodeType::GENERIC,
        generic::LBA_OUT_OF_RANGE,
    );
    v.cdw12 = 5;
    v.set_slba(0);
    v.prp1 = 0xdead_0000; // never touched
    assert_eq!(h.exec(&mut q, v).status(), Status::SUCCESS);
}
