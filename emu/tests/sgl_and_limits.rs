//! SGLs on the emulated controller at the command level (Data Block,
//! Bit Bucket, Segment and Last Segment descriptors, an SGL at MPTR, every
//! malformed-list status, a looping chain that must end), and MDTS with and
//! without extended metadata.

#[path = "../../engine/tests/emu_support/mod.rs"]
mod emu_support;

use emu_support::*;
use nvme_emu::{EmuConfig, EmuNamespaceConfig};
use nvme_engine::dma::DmaBuf;
use nvme_engine::spec::status::generic;
use nvme_engine::spec::{
    command::{Command, NvmOpcode},
    status::{Status, StatusCodeType},
};

const DATA: u8 = 0x0;
const BUCKET: u8 = 0x1;
const SEGMENT: u8 = 0x2;
const LAST: u8 = 0x3;

fn desc(addr: u64, len: u32, kind: u8) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&addr.to_le_bytes());
    b[8..12].copy_from_slice(&len.to_le_bytes());
    b[15] = kind << 4;
    b
}

/// A command of `nlb` 512-byte blocks whose DPTR holds the SGL descriptor `first`.
fn sgl_cmd(op: NvmOpcode, slba: u64, nlb: u32, first: [u8; 16]) -> Command {
    let mut c = Command::new(op.0, 1);
    c.cdw0 |= 1 << 14; // PSDT 01b
    c.set_slba(slba);
    c.cdw12 = nlb - 1;
    c.prp1 = u64::from_le_bytes(first[..8].try_into().unwrap());
    c.prp2 = u64::from_le_bytes(first[8..].try_into().unwrap());
    c
}

fn setup(cfg: EmuConfig) -> (Host, Qp) {
    let mut h = Host::new(cfg);
    let q = h.create_io(1, 16);
    (h, q)
}

fn is(got: Status, sc: u8) {
    let want = st(StatusCodeType::GENERIC, sc);
    assert!(got.code_eq(want), "got {got}, want {want}");
}

fn put(b: &mut DmaBuf, at: usize, d: [u8; 16]) {
    assert!(b.write_at(at, &d));
}

#[test]
fn data_blocks_segments_and_bit_buckets_move_the_right_bytes() {
    let (mut h, mut q) = setup(EmuConfig::ram(1 << 20));
    let mut src = h.buf(8192);
    let pattern: Vec<u8> = (0..2048u32).map(|i| (i * 13 % 256) as u8).collect();
    src.write_at(0, &pattern);
    // Write 4 blocks from one data block.
    let c = sgl_cmd(NvmOpcode::WRITE, 10, 4, desc(src.iova(), 2048, DATA));
    assert_eq!(h.exec(&mut q, c).status(), Status::SUCCESS);
    // Read them back scattered: segment [300 B, bucket 200 B, last segment ->
    // [1548 B]] into three places.
    let mut dst = h.buf(16384);
    dst.fill(0);
    let mut segs = h.buf(4096);
    let s0 = segs.iova();
    put(&mut segs, 0, desc(dst.iova() + 4096, 300, DATA));
    put(&mut segs, 16, desc(0, 200, BUCKET));
    put(&mut segs, 32, desc(s0 + 1024, 16, LAST));
    put(&mut segs, 1024, desc(dst.iova() + 8192 + 4, 1548, DATA));
    let c = sgl_cmd(NvmOpcode::READ, 10, 4, desc(s0, 48, SEGMENT));
    assert_eq!(h.exec(&mut q, c).status(), Status::SUCCESS);
    let mut a = vec![0u8; 300];
    let mut b = vec![0u8; 1548];
    dst.read_at(4096, &mut a);
    dst.read_at(8196, &mut b);
    assert_eq!(a, &pattern[..300]);
    assert_eq!(b, &pattern[500..]);
}

#[test]
fn malformed_sgls_fail_with_the_status_that_names_the_problem() {
    let (mut h, mut q) = setup(EmuConfig::ram(1 << 20));
    let data = h.buf(4096);
    let mut segs = h.buf(4096);
    let s0 = segs.iova();
    let d = data.iova();
    // Data SGL Length Invalid: too short, and too long.
    let c = sgl_cmd(NvmOpcode::READ, 0, 2, desc(d, 512, DATA));
    is(h.exec(&mut q, c).status(), 0x0F);
    let c = sgl_cmd(NvmOpcode::READ, 0, 1, desc(d, 1024, DATA));
    is(h.exec(&mut q, c).status(), 0x0F);
    // Invalid SGL Segment Descriptor: a length that is not whole descriptors.
    put(&mut segs, 0, desc(d, 512, DATA));
    let c = sgl_cmd(NvmOpcode::READ, 0, 1, desc(s0, 24, SEGMENT));
    is(h.exec(&mut q, c).status(), 0x0D);
    // ...and a segment descriptor in the middle of a segment.
    put(&mut segs, 0, desc(s0 + 512, 16, LAST));
    put(&mut segs, 16, desc(d, 512, DATA));
    let c = sgl_cmd(NvmOpcode::READ, 0, 1, desc(s0, 32, SEGMENT));
    is(h.exec(&mut q, c).status(), 0x0D);
    // SGL Descriptor Type Invalid: keyed data block, and a bit bucket on a write.
    let c = sgl_cmd(NvmOpcode::READ, 0, 1, desc(d, 512, 0x4));
    is(h.exec(&mut q, c).status(), 0x11);
    let c = sgl_cmd(NvmOpcode::WRITE, 0, 1, desc(0, 512, BUCKET));
    is(h.exec(&mut q, c).status(), 0x11);
    // A data block outside registered memory.
    let c = sgl_cmd(NvmOpcode::READ, 0, 1, desc(0xdead_0000, 512, DATA));
    is(h.exec(&mut q, c).status(), generic::DATA_TRANSFER_ERROR);
    // PSDT 11b is reserved.
    let mut c = sgl_cmd(NvmOpcode::READ, 0, 1, desc(d, 512, DATA));
    c.cdw0 |= 3 << 14;
    is(h.exec(&mut q, c).status(), generic::INVALID_FIELD);
}

#[test]
fn a_segment_chain_that_loops_ends_with_an_error_instead_of_hanging() {
    let (mut h, mut q) = setup(EmuConfig::ram(1 << 20));
    let data = h.buf(4096);
    let mut segs = h.buf(4096);
    let s0 = segs.iova();
    // Each pass adds 0 bytes and points back at itself.
    put(&mut segs, 0, desc(data.iova(), 0, DATA));
    put(&mut segs, 16, desc(s0, 32, SEGMENT));
    let c = sgl_cmd(NvmOpcode::READ, 0, 1, desc(s0, 32, SEGMENT));
    is(h.exec(&mut q, c).status(), 0x0E);
    // The controller still works.
    let c = sgl_cmd(NvmOpcode::READ, 0, 1, desc(data.iova(), 512, DATA));
    assert_eq!(h.exec(&mut q, c).status(), Status::SUCCESS);
}

#[test]
fn an_sgl_at_mptr_carries_separate_metadata() {
    let cfg = EmuConfig::ram(1 << 20)
        .without_namespaces()
        .namespace(EmuNamespaceConfig::ram(512, 64).metadata(16, false));
    let (mut h, mut q) = setup(cfg);
    let mut data = h.buf(4096);
    let mut meta = h.buf(4096);
    let mut mdesc = h.buf(4096);
    data.fill(0x21);
    meta.write_at(0, &[0x42; 32]);
    put(&mut mdesc, 0, desc(meta.iova(), 32, DATA));
    let mut c = sgl_cmd(NvmOpcode::WRITE, 4, 2, desc(data.iova(), 1024, DATA));
    c.cdw0 = (c.cdw0 & !(3 << 14)) | 2 << 14; // PSDT 10b
    c.mptr = mdesc.iova();
    assert_eq!(h.exec(&mut q, c).status(), Status::SUCCESS);
    meta.fill(0);
    let mut r = c;
    r.cdw0 = (r.cdw0 & !0xff) | NvmOpcode::READ.0 as u32;
    assert_eq!(h.exec(&mut q, r).status(), Status::SUCCESS);
    let mut back = [0u8; 32];
    meta.read_at(0, &mut back);
    assert_eq!(back, [0x42; 32]);
    // A metadata descriptor of the wrong length: Metadata SGL Length Invalid.
    put(&mut mdesc, 0, desc(meta.iova(), 16, DATA));
    is(h.exec(&mut q, r).status(), 0x10);
}

#[test]
fn without_sgl_support_none_is_reported_and_psdt_is_refused() {
    let mut cfg = EmuConfig::ram(1 << 20);
    cfg.sgl = false;
    let (mut h, mut q) = setup(cfg);
    assert_eq!(identify_controller(&mut h).sgls.get(), 0);
    let b = h.buf(4096);
    let c = sgl_cmd(NvmOpcode::READ, 0, 1, desc(b.iova(), 512, DATA));
    is(h.exec(&mut q, c).status(), generic::INVALID_FIELD);
}

#[test]
fn mdts_bounds_transfers_including_interleaved_metadata() {
    let mut cfg = EmuConfig::ram(1 << 20)
        .without_namespaces()
        .namespace(EmuNamespaceConfig::ram(512, 64))
        .namespace(EmuNamespaceConfig::ram(512, 64).metadata(8, true));
    cfg.mdts = 1; // 8 KiB
    let (mut h, mut q) = setup(cfg);
    assert_eq!(identify_controller(&mut h).mdts, 1);
    let b = h.buf(16384);
    let read = |nsid: u32, nlb: u32, len: u32| {
        let mut c = sgl_cmd(NvmOpcode::READ, 0, nlb, desc(b.iova(), len, DATA));
        c.nsid = nsid;
        c
    };
    assert_eq!(h.exec(&mut q, read(1, 16, 8192)).status(), Status::SUCCESS);
    is(
        h.exec(&mut q, read(1, 17, 8704)).status(),
        generic::INVALID_FIELD,
    );
    // 15 blocks of 520 bytes fit in 8 KiB; 16 do not.
    assert_eq!(
        h.exec(&mut q, read(2, 15, 15 * 520)).status(),
        Status::SUCCESS
    );
    is(
        h.exec(&mut q, read(2, 16, 16 * 520)).status(),
        generic::INVALID_FIELD,
    );
}
