//! Requests above the controller's maximum transfer (MDTS) and across the
//! namespace's optimal I/O boundary (NOIOB), split by [`Splitter`] against
//! the emulated controller with a small `mdts` and `noiob`: data lands
//! where it belongs across the splits, a failing child fails the parent
//! once with its error, a reset in the middle answers the parent once,
//! queue depth is respected, and deletion answers what is in flight.

mod driver_common;

use driver_common::*;
use nvme_emu::{EmuConfig, EmuController, EmuHandle, EmuNamespaceConfig, FaultAction, FaultRule};
use nvme_engine::dma::{DmaBuf, DmaPool};
use nvme_engine::spec::command::NvmOpcode;
use nvme_engine::spec::status::{Status, StatusCodeType, media};
use nvme_engine::{
    Controller, IoCompletion, IoError, IoQueuePair, Namespace, Splitter, SubmitErrorKind,
};

/// mdts 1: 8 KiB per command (16 blocks of 512 B); namespace 1 plain,
/// namespace 2 with an optimal I/O boundary of 8 blocks.
fn setup_small(
    entries: u16,
) -> (
    Controller<EmuController>,
    EmuHandle,
    IoQueuePair<EmuController>,
    DmaPool,
) {
    let mut cfg = EmuConfig::ram(4 << 20);
    cfg.mdts = 1;
    cfg = cfg.namespace(EmuNamespaceConfig::ram(512, 8192).optimal_io_boundary(8));
    setup(cfg, entries, 8 << 20)
}

/// Reap until `n` requests finished; returns them in completion order.
fn reap(sp: &mut Splitter, qp: &mut IoQueuePair<EmuController>, n: usize) -> Vec<IoCompletion> {
    let mut out = Vec::new();
    let mut spins = 0u64;
    while out.len() < n {
        sp.process_completions(qp, usize::MAX, |c| out.push(c));
        spins += 1;
        assert!(spins < 50_000_000, "requests never completed");
    }
    out
}

fn write_read_back(
    sp: &mut Splitter,
    qp: &mut IoQueuePair<EmuController>,
    pool: &mut DmaPool,
    ns: &Namespace,
    lba: u64,
    data: &[u8],
) -> DmaBuf {
    sp.write(qp, ns, lba, filled(pool, data), false, 1).unwrap();
    let done = reap(sp, qp, 1);
    assert_eq!(done[0].token, 1);
    assert!(done[0].result.is_ok(), "{:?}", done[0].result);
    let mut b = pool.alloc(data.len()).unwrap();
    assert!(b.set_window(0, data.len()));
    sp.read(qp, ns, lba, b, 2).unwrap();
    let mut done = reap(sp, qp, 1);
    let c = done.pop().unwrap();
    assert_eq!(c.token, 2);
    assert!(c.result.is_ok(), "{:?}", c.result);
    c.buf.expect("buffer back")
}

#[test]
fn requests_above_mdts_are_split_and_the_data_lands_in_place() {
    let (ctrl, emu, mut qp, mut pool) = setup_small(64);
    let ns = ctrl.namespace(1).unwrap().clone();
    assert_eq!(ctrl.max_transfer_bytes(), 8192);
    let mut sp = Splitter::new();
    let data = pattern(11, 100 * 1024);
    let writes = emu.io_commands(NvmOpcode::WRITE);
    let back = write_read_back(&mut sp, &mut qp, &mut pool, &ns, 3, &data);
    assert_eq!(back.to_vec(), data, "read back across the splits");
    // 100 KiB in 8 KiB commands: 13 writes (12 full, one of 4 KiB).
    assert_eq!(emu.io_commands(NvmOpcode::WRITE) - writes, 13);
    let s = sp.stats();
    assert_eq!((s.split, s.children, s.failed), (2, 26, 0));
    // Each 8 KiB piece is where it belongs: read it with plain commands.
    for (i, chunk) in data.chunks(8192).enumerate() {
        let mut b = pool.alloc(chunk.len()).unwrap();
        assert!(b.set_window(0, chunk.len()));
        let b = qp.read_sync(&ns, 3 + (i as u64) * 16, b).unwrap();
        assert_eq!(b.to_vec(), chunk, "piece {i}");
        pool.free(b).unwrap();
    }
    assert_eq!(sp.in_flight(), 0);
    pool.free(back)
        .expect("the parent buffer goes back to its pool");
}

#[test]
fn requests_crossing_the_optimal_io_boundary_are_split_there() {
    let (ctrl, emu, mut qp, mut pool) = setup_small(64);
    let ns = ctrl.namespace(2).unwrap().clone();
    assert_eq!(ns.optimal_io_boundary(), Some(8));
    let mut sp = Splitter::new();
    // 8 blocks at LBA 4 cross the boundary at 8: two commands of 4 blocks.
    assert!(Splitter::needs_split(&ns, 4, 4096));
    assert!(!Splitter::needs_split(&ns, 8, 4096));
    let data = pattern(5, 4096);
    let writes = emu.io_commands(NvmOpcode::WRITE);
    let back = write_read_back(&mut sp, &mut qp, &mut pool, &ns, 4, &data);
    assert_eq!(back.to_vec(), data);
    assert_eq!(emu.io_commands(NvmOpcode::WRITE) - writes, 2);
    // Aligned to the boundary: one command, passed straight through.
    let before = sp.stats();
    let writes = emu.io_commands(NvmOpcode::WRITE);
    let _ = write_read_back(&mut sp, &mut qp, &mut pool, &ns, 16, &data);
    assert_eq!(emu.io_commands(NvmOpcode::WRITE) - writes, 1);
    assert_eq!(sp.stats().direct, before.direct + 2);
    // Above MDTS and across boundaries: 20 blocks at LBA 3 -> 5, 8, 7.
    let data = pattern(6, 20 * 512);
    let writes = emu.io_commands(NvmOpcode::WRITE);
    let back = write_read_back(&mut sp, &mut qp, &mut pool, &ns, 3, &data);
    assert_eq!(back.to_vec(), data);
    assert_eq!(emu.io_commands(NvmOpcode::WRITE) - writes, 3);
}

#[test]
fn an_error_in_one_child_fails_the_parent_once_with_that_error() {
    let (ctrl, emu, mut qp, mut pool) = setup_small(64);
    let ns = ctrl.namespace(1).unwrap().clone();
    let mut sp = Splitter::new();
    let bad = Status::new(StatusCodeType::MEDIA, media::UNRECOVERED_READ_ERROR).with_dnr(true);
    // The third 16-block child (LBAs 32..48) fails.
    emu.add_fault(
        FaultRule::new(FaultAction::CompleteWithStatus(bad))
            .io()
            .opcode(NvmOpcode::READ.0)
            .lba(32..48)
            .once(),
    );
    let mut b = pool.alloc(64 * 512).unwrap();
    assert!(b.set_window(0, 64 * 512));
    sp.read(&mut qp, &ns, 0, b, 9).unwrap();
    let done = reap(&mut sp, &mut qp, 1);
    // Nothing more arrives for it.
    for _ in 0..100 {
        sp.process_completions(&mut qp, usize::MAX, |c| panic!("second answer {c:?}"));
    }
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].token, 9);
    match &done[0].result {
        Err(IoError::Status(s)) => assert_eq!(s.sc(), media::UNRECOVERED_READ_ERROR),
        other => panic!("expected the child's error, got {other:?}"),
    }
    let buf = done.into_iter().next().unwrap().buf.expect("buffer back");
    assert_eq!(buf.len(), 64 * 512);
    assert!(!buf.is_quarantined());
    assert_eq!(sp.stats().failed, 1);
    assert_eq!(qp.outstanding(), 0, "every child answered");
}

#[test]
fn a_reset_in_the_middle_of_a_split_answers_the_parent_once() {
    let (ctrl, emu, mut qp, mut pool) = setup_small(64);
    let ns = ctrl.namespace(1).unwrap().clone();
    let data = pattern(21, 64 * 1024);
    let mut sp = Splitter::new();
    sp.write(&mut qp, &ns, 0, filled(&mut pool, &data), false, 5)
        .unwrap();
    // Hold half the children in the device, then reset under them.
    emu.add_fault(
        FaultRule::new(FaultAction::NeverComplete)
            .io()
            .opcode(NvmOpcode::WRITE.0)
            .lba(64..128),
    );
    qp.ring_doorbell();
    ctrl.reset().unwrap();
    emu.clear_faults();
    let done = reap(&mut sp, &mut qp, 1);
    for _ in 0..100 {
        sp.process_completions(&mut qp, usize::MAX, |c| panic!("second answer {c:?}"));
    }
    assert_eq!(done[0].token, 5);
    match &done[0].result {
        // Resubmitted after the reset: everything is written.
        Ok(_) => {
            let mut r = pool.alloc(data.len()).unwrap();
            assert!(r.set_window(0, data.len()));
            sp.read(&mut qp, &ns, 0, r, 6).unwrap();
            let back = reap(&mut sp, &mut qp, 1).pop().unwrap();
            assert_eq!(back.buf.unwrap().to_vec(), data);
        }
        Err(IoError::ControllerReset) => {}
        other => panic!("unexpected result {other:?}"),
    }
    assert!(done[0].buf.is_some());
    assert_eq!(qp.outstanding(), 0);
    assert_eq!(sp.in_flight(), 0);
}

#[test]
fn a_parent_that_does_not_fit_the_free_slots_is_refused_whole() {
    let (ctrl, emu, mut qp, mut pool) = setup_small(8);
    let ns = ctrl.namespace(1).unwrap().clone();
    let mut sp = Splitter::new();
    assert_eq!(qp.capacity(), 7);
    // 8 children never fit a 7-slot queue.
    let e = sp
        .read(&mut qp, &ns, 0, pool.alloc(64 * 1024).unwrap(), 1)
        .unwrap_err();
    assert!(
        matches!(
            e.kind,
            SubmitErrorKind::TooManyChildren {
                children: 8,
                capacity: 7,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.buf.is_some());
    // 4 children with 4 slots taken: queue full, nothing submitted.
    for t in 0..4 {
        qp.read(&ns, t * 8, pool.alloc(4096).unwrap(), t).unwrap();
    }
    let reads = emu.io_commands(NvmOpcode::READ);
    let e = sp
        .read(&mut qp, &ns, 0, pool.alloc(32 * 1024).unwrap(), 10)
        .unwrap_err();
    assert!(matches!(e.kind, SubmitErrorKind::QueueFull { .. }), "{e}");
    assert_eq!(qp.outstanding(), 4);
    let done = reap(&mut sp, &mut qp, 4);
    assert_eq!(done.len(), 4);
    assert_eq!(emu.io_commands(NvmOpcode::READ) - reads, 4);
    // Now it fits.
    sp.read(&mut qp, &ns, 0, e.buf.unwrap(), 10).unwrap();
    assert_eq!(reap(&mut sp, &mut qp, 1)[0].token, 10);
}

#[test]
fn requests_refused_up_front_submit_nothing() {
    let (ctrl, emu, mut qp, mut pool) = setup_small(64);
    let ns = ctrl.namespace(1).unwrap().clone();
    let mut sp = Splitter::new();
    let reads = emu.io_commands(NvmOpcode::READ);
    let e = sp
        .read(
            &mut qp,
            &ns,
            ns.blocks() - 8,
            pool.alloc(64 * 1024).unwrap(),
            1,
        )
        .unwrap_err();
    assert!(
        matches!(e.kind, SubmitErrorKind::LbaOutOfRange { .. }),
        "{e}"
    );
    let e = sp
        .read(&mut qp, &ns, 0, pool.alloc(4096).unwrap(), u64::MAX)
        .unwrap_err();
    assert!(
        matches!(e.kind, SubmitErrorKind::ReservedToken { .. }),
        "{e}"
    );
    qp.ring_doorbell();
    assert_eq!(emu.io_commands(NvmOpcode::READ), reads);
    assert_eq!(qp.outstanding(), 0);
}

#[test]
fn deleting_the_queue_pair_answers_each_split_request_once() {
    let (ctrl, emu, mut qp, mut pool) = setup_small(64);
    let ns = ctrl.namespace(1).unwrap().clone();
    let mut sp = Splitter::new();
    emu.add_fault(FaultRule::new(FaultAction::NeverComplete).io().lba(16..32));
    sp.read(&mut qp, &ns, 0, pool.alloc(32 * 1024).unwrap(), 1)
        .unwrap();
    sp.read(&mut qp, &ns, 100, pool.alloc(4096).unwrap(), 2)
        .unwrap();
    qp.ring_doorbell();
    let mut seen = Vec::new();
    sp.delete_with(qp, |c| seen.push((c.token, c.buf.is_some())))
        .unwrap();
    seen.sort();
    assert_eq!(seen, vec![(1, true), (2, true)]);
    assert_eq!(sp.in_flight(), 0);
}

#[test]
fn a_child_past_its_deadline_is_aborted_and_the_parent_answered_once_timed_out() {
    use std::time::{Duration, Instant};
    const T: Duration = Duration::from_secs(30);
    let (ctrl, emu, mut qp, mut pool) = setup_small(64);
    let ns = ctrl.namespace(1).unwrap().clone();
    qp.set_timeout(T);
    let mut sp = Splitter::new();
    // The second of four children never completes on its own.
    emu.add_fault(
        FaultRule::new(FaultAction::NeverComplete)
            .io()
            .lba(16..32)
            .once(),
    );
    sp.read(&mut qp, &ns, 0, pool.alloc(32 * 1024).unwrap(), 4)
        .unwrap();
    let mut done = Vec::new();
    sp.process_completions(&mut qp, usize::MAX, |c| done.push(c));
    assert!(done.is_empty(), "three children done, the parent waits");
    assert_eq!(qp.outstanding(), 1);
    // Synthetic time: the first scan stamps, the second finds it late.
    let t0 = Instant::now();
    qp.check_timeouts(t0);
    assert_eq!(qp.check_timeouts(t0 + T), 1);
    settle(&ctrl);
    sp.process_completions(&mut qp, usize::MAX, |c| done.push(c));
    qp.check_timeouts(t0 + 3 * T);
    emu.poll();
    sp.process_completions(&mut qp, usize::MAX, |c| done.push(c));
    assert_eq!(done.len(), 1, "answered exactly once");
    assert_eq!(done[0].token, 4);
    assert_eq!(done[0].result, Err(IoError::TimedOut(T)));
    let buf = done
        .pop()
        .unwrap()
        .buf
        .expect("the abort proved the device done");
    assert_eq!(buf.len(), 32 * 1024);
    assert!(!buf.is_quarantined());
    assert_eq!((qp.outstanding(), sp.in_flight()), (0, 0));
}
