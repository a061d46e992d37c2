//! Threaded mode of the emulated controller: the device thread's lock-free
//! idle polls must never miss work — new doorbells, completions delayed by a
//! number of rounds, a CQ that frees up, queues re-created after a reset —
//! and it runs pinned when asked.

mod emu_support;

use emu_support::*;
use nvme_emu::{EmuConfig, EmuMode, FaultAction, FaultRule};
use nvme_engine::Device;
use nvme_engine::spec::command::NvmOpcode;
use nvme_engine::spec::registers::{Csts, offset};

fn threaded(mode: EmuMode) -> Host {
    Host::new(EmuConfig::ram(1 << 20).mode(mode))
}

#[test]
fn pinned_spinning_device_thread_completes_io() {
    let core = core_affinity::get_core_ids()
        .and_then(|ids| ids.first().map(|c| c.id))
        .unwrap_or(0);
    let mut h = threaded(EmuMode::threaded_spin().on_core(core));
    let mut q = h.create_io(1, 16);
    let buf = h.buf(512);
    for _ in 0..100 {
        let c = h.exec(&mut q, rw(NvmOpcode::READ, 1, 0, 1, &buf));
        assert!(c.status().is_success());
    }
}

#[test]
fn pinning_to_a_cpu_that_does_not_exist_is_an_error() {
    let cfg = EmuConfig::ram(1 << 20).mode(EmuMode::threaded_spin().on_core(100_000));
    let e = nvme_emu::EmuController::new(cfg).unwrap_err();
    assert!(e.to_string().contains("CPU 100000"), "{e}");
}

#[test]
fn delayed_completion_arrives_without_another_doorbell() {
    // Spinning: a backing-off thread would also run rounds when it wakes.
    let mut h = threaded(EmuMode::threaded_spin());
    let mut q = h.create_io(1, 16);
    h.emu
        .add_fault(FaultRule::new(FaultAction::DelayPolls(50)).io().once());
    let buf = h.buf(512);
    push(&mut q, rw(NvmOpcode::READ, 1, 0, 1, &buf), 9);
    ring_sq(&h.dev, &q);
    // No further doorbell: the device thread must keep running rounds.
    assert_eq!(pop(&mut q).cid, 9);
}

#[test]
fn commands_held_by_a_full_cq_follow_its_head_doorbell() {
    let mut h = threaded(EmuMode::threaded_spin());
    // A queue pair of 4 entries: the CQ holds 3 completions.
    let mut q = h.create_io(1, 4);
    let buf = h.buf(512);
    for cid in 0..3 {
        push(&mut q, rw(NvmOpcode::READ, 1, 0, 1, &buf), cid);
    }
    ring_sq(&h.dev, &q);
    let cids: Vec<u16> = (0..3).map(|_| pop(&mut q).cid).collect();
    assert_eq!(cids, [0, 1, 2]);
    for cid in 3..6 {
        push(&mut q, rw(NvmOpcode::READ, 1, 0, 1, &buf), cid);
    }
    // The CQ is full: nothing can post until the head doorbell frees it.
    ring_sq(&h.dev, &q);
    ring_cq(&h.dev, &q);
    let cids: Vec<u16> = (0..3).map(|_| pop(&mut q).cid).collect();
    assert_eq!(cids, [3, 4, 5]);
}

#[test]
fn queues_recreated_after_a_reset_are_polled() {
    let mut h = threaded(EmuMode::threaded_spin());
    let mut q = h.create_io(1, 16);
    let buf = h.buf(512);
    // Move the SQ tail to 5, so the re-created queue reaches the same tail
    // value the device thread saw before the reset.
    for _ in 0..5 {
        assert!(
            h.exec(&mut q, rw(NvmOpcode::READ, 1, 0, 1, &buf))
                .status()
                .is_success()
        );
    }
    h.dev.write32(offset::CC, 0);
    wait_until(|| !Csts::from(h.dev.read32(offset::CSTS)).rdy());
    h.admin.head = 0;
    h.admin.tail = 0;
    h.admin.phase = true;
    h.admin.cq.fill(0);
    h.enable();
    let mut q = h.create_io(1, 16);
    for cid in 0..5 {
        push(&mut q, rw(NvmOpcode::READ, 1, 0, 1, &buf), 50 + cid);
    }
    ring_sq(&h.dev, &q);
    let cids: Vec<u16> = (0..5).map(|_| pop(&mut q).cid).collect();
    assert_eq!(cids, [50, 51, 52, 53, 54]);
}
