//! Fault injection of the emulated controller, observed through the
//! `Device` trait: the completions a misbehaving device produces.

mod emu_support;

use emu_support::*;
use nvme_emu::{EmuConfig, EmuMode, FaultAction, FaultRule};
use nvme_engine::Device;
use nvme_engine::spec::log::{SmartHealth, u128_le};
use nvme_engine::spec::registers::{Csts, offset};
use nvme_engine::spec::status::generic;
use nvme_engine::spec::{
    command::{AdminOpcode, Command, NvmOpcode},
    status::{Status, StatusCodeType},
};
use zerocopy::FromBytes;

fn setup() -> (Host, Qp) {
    let mut h = Host::new(EmuConfig::ram(1 << 20));
    let q = h.create_io(1, 16);
    (h, q)
}

#[test]
fn duplicate_completion_posts_the_same_cqe_twice() {
    let (mut h, mut q) = setup();
    let id = h
        .emu
        .add_fault(FaultRule::new(FaultAction::DuplicateCompletion).io().once());
    let buf = h.buf(512);
    push(&mut q, rw(NvmOpcode::READ, 1, 0, 1, &buf), 7);
    ring_sq(&h.dev, &q);
    let a = pop(&mut q);
    let b = pop(&mut q);
    assert_eq!((a.cid, b.cid), (7, 7));
    assert!(peek(&q).is_none());
    assert_eq!(h.emu.fault_hits(id), 1);
    ring_cq(&h.dev, &q);
    let c = h.exec(&mut q, rw(NvmOpcode::READ, 1, 0, 1, &buf));
    assert!(c.status().is_success(), "rule fired only once");
    assert!(peek(&q).is_none());
}

#[test]
fn unknown_cid_completion_names_a_cid_never_submitted() {
    let (mut h, mut q) = setup();
    h.emu.add_fault(
        FaultRule::new(FaultAction::CompleteWithUnknownCid)
            .io()
            .once(),
    );
    let buf = h.buf(512);
    push(&mut q, rw(NvmOpcode::READ, 1, 0, 1, &buf), 8);
    ring_sq(&h.dev, &q);
    assert_eq!(pop(&mut q).cid, 8);
    let extra = pop(&mut q).cid;
    assert!(extra != 8 && extra != 0, "cid {extra} was submitted before");
}

#[test]
fn stale_completion_reappears_after_the_next_round() {
    let (mut h, mut q) = setup();
    h.emu
        .add_fault(FaultRule::new(FaultAction::StaleCompletion).io().once());
    let buf = h.buf(512);
    let c = h.exec(&mut q, rw(NvmOpcode::READ, 1, 0, 1, &buf));
    // exec rang the CQ head doorbell: that round re-posted the old CQE.
    let stale = pop(&mut q);
    assert_eq!(stale.cid, c.cid);
}

#[test]
fn delayed_completion_arrives_after_n_rounds() {
    let (mut h, mut q) = setup();
    h.emu
        .add_fault(FaultRule::new(FaultAction::DelayPolls(3)).io().once());
    let buf = h.buf(512);
    push(&mut q, rw(NvmOpcode::READ, 1, 0, 1, &buf), 9);
    ring_sq(&h.dev, &q); // round 1
    assert!(peek(&q).is_none());
    h.emu.poll(); // round 2
    assert!(peek(&q).is_none());
    h.emu.poll(); // round 3
    assert_eq!(pop(&mut q).cid, 9);
}

#[test]
fn injected_status_skips_execution() {
    let (mut h, mut q) = setup();
    let media = Status::new(StatusCodeType::MEDIA, 0x81);
    h.emu.add_fault(
        FaultRule::new(FaultAction::CompleteWithStatus(media))
            .io()
            .opcode(NvmOpcode::READ.0)
            .lba(100..200),
    );
    let buf = h.buf(4096);
    let c = h.exec(&mut q, rw(NvmOpcode::READ, 1, 99, 2, &buf));
    assert!(c.status().code_eq(media));
    let c = h.exec(&mut q, rw(NvmOpcode::READ, 1, 90, 2, &buf));
    assert!(c.status().is_success());
}

#[test]
fn never_completed_command_is_aborted_on_request() {
    let (mut h, mut q) = setup();
    h.emu
        .add_fault(FaultRule::new(FaultAction::NeverComplete).io().once());
    let buf = h.buf(512);
    push(&mut q, rw(NvmOpcode::READ, 1, 0, 1, &buf), 42);
    ring_sq(&h.dev, &q);
    assert!(peek(&q).is_none());
    let mut abort = Command::new(AdminOpcode::ABORT.0, 0);
    abort.cdw10 = 1 | 42 << 16;
    let a = h.admin(abort);
    assert!(a.status().is_success());
    assert_eq!(a.dw0 & 1, 0, "aborted");
    let c = pop(&mut q);
    assert_eq!(c.cid, 42);
    assert!(c.status().code_eq(Status::new(
        StatusCodeType::GENERIC,
        generic::ABORT_REQUESTED
    )));
    // Nothing left to abort.
    let a = h.admin(abort);
    assert_eq!(a.dw0 & 1, 1, "not aborted");
}

#[test]
fn deleting_the_sq_completes_held_commands_as_aborted() {
    let (mut h, mut q) = setup();
    h.emu
        .add_fault(FaultRule::new(FaultAction::NeverComplete).io().times(2));
    let buf = h.buf(512);
    push(&mut q, rw(NvmOpcode::READ, 1, 0, 1, &buf), 1);
    push(&mut q, rw(NvmOpcode::READ, 1, 0, 1, &buf), 2);
    ring_sq(&h.dev, &q);
    assert!(peek(&q).is_none());
    let mut del = Command::new(AdminOpcode::DELETE_IO_SQ.0, 0);
    del.cdw10 = 1;
    assert!(h.admin(del).status().is_success());
    let aborted = Status::new(StatusCodeType::GENERIC, generic::ABORTED_SQ_DELETION);
    let mut cids = vec![];
    for _ in 0..2 {
        let c = pop(&mut q);
        assert!(c.status().code_eq(aborted));
        cids.push(c.cid);
    }
    cids.sort();
    assert_eq!(cids, [1, 2]);
    let mut del_cq = Command::new(AdminOpcode::DELETE_IO_CQ.0, 0);
    del_cq.cdw10 = 1;
    assert!(h.admin(del_cq).status().is_success());
}

#[test]
fn bogus_sqhd_is_outside_the_queue() {
    let (mut h, mut q) = setup();
    h.emu
        .add_fault(FaultRule::new(FaultAction::BogusSqhd).io().once());
    let buf = h.buf(512);
    let c = h.exec(&mut q, rw(NvmOpcode::READ, 1, 0, 1, &buf));
    assert!(c.sqhd as u32 >= q.size);
}

#[test]
fn fatal_status_and_vanish_show_in_registers() {
    let (mut h, mut q) = setup();
    h.emu
        .add_fault(FaultRule::new(FaultAction::FatalStatus).io().once());
    let buf = h.buf(512);
    push(&mut q, rw(NvmOpcode::READ, 1, 0, 1, &buf), 3);
    ring_sq(&h.dev, &q);
    assert!(Csts::from(h.dev.read32(offset::CSTS)).cfs());
    assert!(peek(&q).is_none());
    h.emu.trigger_vanish();
    assert_eq!(h.dev.read32(offset::CSTS), u32::MAX);
    assert_eq!(h.dev.read32(offset::VS), u32::MAX);
}

#[test]
fn probabilistic_faults_in_threaded_mode() {
    let mut h = Host::new(EmuConfig::ram(1 << 20).mode(EmuMode::threaded()));
    let mut q = h.create_io(1, 64);
    h.emu.seed_faults(1);
    let err = Status::new(StatusCodeType::GENERIC, generic::INTERNAL_ERROR);
    let id = h.emu.add_fault(
        FaultRule::new(FaultAction::CompleteWithStatus(err))
            .io()
            .probability(0.5),
    );
    let buf = h.buf(512);
    let failed = (0..64)
        .filter(|&i| {
            !h.exec(&mut q, rw(NvmOpcode::READ, 1, i, 1, &buf))
                .status()
                .is_success()
        })
        .count() as u64;
    assert_eq!(failed, h.emu.fault_hits(id));
    assert!((10..54).contains(&failed), "{failed}");
}

#[test]
fn smart_log_counts_commands_and_data_units() {
    let (mut h, mut q) = setup();
    let buf = h.buf(4096);
    for _ in 0..3 {
        h.exec(&mut q, rw(NvmOpcode::WRITE, 1, 0, 8, &buf));
    }
    h.exec(&mut q, rw(NvmOpcode::READ, 1, 0, 8, &buf));
    let log = h.buf(512);
    let mut glp = Command::new(AdminOpcode::GET_LOG_PAGE.0, 0xFFFF_FFFF);
    glp.cdw10 = 0x02 | (512 / 4 - 1) << 16;
    glp.prp1 = log.iova();
    assert!(h.admin(glp).status().is_success());
    let s = SmartHealth::read_from_bytes(&log.to_vec()).unwrap();
    assert_eq!(u128_le(&s.host_write_commands), 3);
    assert_eq!(u128_le(&s.host_read_commands), 1);
    assert_eq!(
        u128_le(&s.data_units_written),
        1,
        "24 units of 512 bytes round up"
    );
    assert_eq!(h.emu.stats().io_commands, 4);
}
