//! Per-command deadlines: a lost completion is aborted and completes once
//! with `IoError::TimedOut` and its buffer; late and duplicate completions
//! are never delivered; a failed abort or too many timeouts reset the
//! controller. Time is synthetic (`check_timeouts(now)`), never slept.

mod driver_common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use driver_common::*;
use nvme_emu::{EmuConfig, FaultAction, FaultRule};
use nvme_engine::spec::{
    command::{AdminOpcode, NvmOpcode},
    completion::Completion,
    status::Status,
};
use nvme_engine::{ControllerOptions, IoCompletion, IoError, QueuePairOptions};

const T: Duration = Duration::from_secs(30);

fn collect(qp: &mut nvme_engine::IoQueuePair<nvme_emu::EmuController>) -> Vec<IoCompletion> {
    let mut v = Vec::new();
    qp.process_completions(usize::MAX, |c| v.push(c));
    v
}

#[test]
fn lost_completion_is_aborted_and_completes_once_timed_out_with_its_buffer() {
    let (ctrl, h, mut qp, mut pool) = setup(EmuConfig::ram(1 << 20), 8, 1 << 20);
    let ns = ctrl.namespace(1).unwrap().clone();
    h.add_fault(FaultRule::new(FaultAction::NeverComplete).io().once());
    qp.read(&ns, 0, pool.alloc(512).unwrap(), 7).unwrap();
    qp.read(&ns, 1, pool.alloc(512).unwrap(), 8).unwrap();
    let first = collect(&mut qp);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].token, 8);
    let t0 = Instant::now();
    assert_eq!(qp.check_timeouts(t0), 0, "the first scan only stamps");
    assert_eq!(qp.check_timeouts(t0 + T / 2), 0);
    assert!(collect(&mut qp).is_empty());
    assert_eq!(qp.check_timeouts(t0 + T), 1);
    settle(&ctrl);
    assert_eq!(qp.stats().aborts_sent, 1);
    assert_eq!(h.admin_commands(AdminOpcode::ABORT), 1);
    let done = collect(&mut qp);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].token, 7);
    assert_eq!(done[0].result, Err(IoError::TimedOut(T)));
    assert!(done[0].buf.is_some(), "the abort proved the device done");
    assert_eq!(qp.outstanding(), 0);
    // Later scans and polls deliver nothing more.
    qp.check_timeouts(t0 + 3 * T);
    h.poll();
    assert!(collect(&mut qp).is_empty());
    assert_eq!(ctrl.resets(), 0, "an abort was enough");
}

#[test]
fn late_completion_of_a_timed_out_command_is_delivered_once_and_duplicates_are_dropped() {
    let (ctrl, h, mut qp, mut pool) = setup(EmuConfig::ram(1 << 20), 8, 1 << 20);
    let ns = ctrl.namespace(1).unwrap().clone();
    // Held for 3 device rounds; the emulator cannot abort a command it has
    // already executed, so the abort reports "not aborted".
    h.add_fault(FaultRule::new(FaultAction::DelayPolls(3)).io().once());
    qp.read(&ns, 0, pool.alloc(512).unwrap(), 1).unwrap();
    let t0 = Instant::now();
    qp.check_timeouts(t0);
    assert_eq!(qp.check_timeouts(t0 + T), 1);
    assert!(collect(&mut qp).is_empty(), "still held by the device");
    for _ in 0..3 {
        h.poll();
    }
    let done = collect(&mut qp);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].result, Err(IoError::TimedOut(T)));
    assert!(done[0].buf.is_some());
    // The first command of a fresh 8-entry queue pair used slot 0 with
    // generation 1: CID 1 << 3. A repeat of that completion is a duplicate.
    let c = Completion::new(0, 1, qp.qid(), 8, Status::SUCCESS, false);
    assert!(h.inject_completion(qp.qid(), c));
    assert!(collect(&mut qp).is_empty());
    assert_eq!(qp.stats().duplicate_completions, 1);
    assert_eq!(ctrl.resets(), 0);
}

#[test]
fn failed_abort_escalates_to_a_reset_and_the_queue_keeps_working() {
    let opts = ControllerOptions::default().with_admin_timeout(Duration::from_millis(100));
    let (ctrl, h) = bring_up(EmuConfig::ram(1 << 20), opts);
    let mut qp = ctrl.create_io_qpair(QueuePairOptions::default()).unwrap();
    let mut pool = ctrl.create_pool(1 << 20).unwrap();
    let ns = ctrl.namespace(1).unwrap().clone();
    h.add_fault(FaultRule::new(FaultAction::NeverComplete).io().once());
    h.add_fault(
        FaultRule::new(FaultAction::NeverComplete)
            .admin()
            .opcode(AdminOpcode::ABORT.0)
            .once(),
    );
    qp.write(&ns, 3, filled(&mut pool, &pattern(1, 512)), false, 5)
        .unwrap();
    qp.ring_doorbell();
    let t0 = Instant::now();
    qp.check_timeouts(t0);
    assert_eq!(qp.check_timeouts(t0 + T), 1);
    settle(&ctrl);
    assert_eq!(ctrl.resets(), 1, "the abort timed out");
    let done = collect(&mut qp);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].result, Err(IoError::TimedOut(T)));
    assert!(done[0].buf.is_some(), "the reset proved the device done");
    assert_eq!(qp.stats().recreated, 1);
    let data = pattern(2, 1024);
    let b = qp
        .write_sync(&ns, 8, filled(&mut pool, &data), false)
        .unwrap();
    assert_eq!(qp.read_sync(&ns, 8, b).unwrap().to_vec(), data);
}

#[test]
fn unanswered_abort_resets_after_the_grace_period() {
    let opts = ControllerOptions::default().with_admin_timeout(Duration::from_secs(5));
    let (ctrl, h) = bring_up(EmuConfig::ram(1 << 20), opts);
    let mut qp = ctrl.create_io_qpair(QueuePairOptions::default()).unwrap();
    let mut pool = ctrl.create_pool(1 << 20).unwrap();
    let ns = ctrl.namespace(1).unwrap().clone();
    // Held far longer than any test runs: the abort says "not aborted".
    h.add_fault(
        FaultRule::new(FaultAction::DelayPolls(1_000_000))
            .io()
            .once(),
    );
    qp.read(&ns, 0, pool.alloc(512).unwrap(), 1).unwrap();
    qp.ring_doorbell();
    let t0 = Instant::now();
    qp.check_timeouts(t0);
    qp.check_timeouts(t0 + T);
    settle(&ctrl);
    assert_eq!(ctrl.resets(), 0);
    qp.check_timeouts(t0 + T + Duration::from_secs(4));
    settle(&ctrl);
    assert_eq!(ctrl.resets(), 0, "grace is the admin timeout (5 s)");
    qp.check_timeouts(t0 + T + Duration::from_secs(5));
    settle(&ctrl);
    assert_eq!(ctrl.resets(), 1);
    let done = collect(&mut qp);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].result, Err(IoError::TimedOut(T)));
    assert!(done[0].buf.is_some());
}

#[test]
fn many_timeouts_in_one_scan_reset_instead_of_aborting_each() {
    let (ctrl, h, mut qp, mut pool) = setup(EmuConfig::ram(1 << 20), 16, 1 << 20);
    let ns = ctrl.namespace(1).unwrap().clone();
    h.add_fault(
        FaultRule::new(FaultAction::NeverComplete)
            .io()
            .opcode(NvmOpcode::READ.0)
            .times(6),
    );
    for t in 0..6 {
        qp.read(&ns, t, pool.alloc(512).unwrap(), t).unwrap();
    }
    qp.ring_doorbell();
    let t0 = Instant::now();
    qp.check_timeouts(t0);
    assert_eq!(qp.check_timeouts(t0 + T), 6);
    settle(&ctrl);
    assert_eq!(qp.stats().aborts_sent, 0);
    assert_eq!(ctrl.resets(), 1);
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for c in collect(&mut qp) {
        assert_eq!(c.result, Err(IoError::TimedOut(T)));
        assert!(c.buf.is_some());
        *seen.entry(c.token).or_default() += 1;
    }
    assert_eq!(seen.len(), 6);
    assert!(seen.values().all(|&n| n == 1));
}

#[test]
fn per_queue_timeout_and_scan_interval_are_honoured() {
    let (ctrl, h, mut qp, mut pool) = setup(EmuConfig::ram(1 << 20), 8, 1 << 20);
    let ns = ctrl.namespace(1).unwrap().clone();
    qp.set_timeout(Duration::from_secs(2));
    assert_eq!(qp.timeout(), Duration::from_secs(2));
    h.add_fault(FaultRule::new(FaultAction::NeverComplete).io().once());
    qp.read(&ns, 0, pool.alloc(512).unwrap(), 1).unwrap();
    qp.ring_doorbell();
    let t0 = Instant::now();
    qp.check_timeouts(t0);
    // Within the scan interval (10 ms) nothing is looked at.
    assert_eq!(qp.check_timeouts(t0 + Duration::from_millis(5)), 0);
    assert_eq!(qp.check_timeouts(t0 + Duration::from_millis(1990)), 0);
    assert_eq!(qp.check_timeouts(t0 + Duration::from_secs(2)), 1);
    settle(&ctrl);
    let done = collect(&mut qp);
    assert_eq!(
        done[0].result,
        Err(IoError::TimedOut(Duration::from_secs(2)))
    );
}

#[test]
fn threaded_device_timeouts_are_aborted_and_complete_exactly_once() {
    let cfg = EmuConfig::ram(1 << 20).mode(nvme_emu::EmuMode::threaded());
    let (ctrl, h, mut qp, mut pool) = setup(cfg, 8, 1 << 20);
    let ns = ctrl.namespace(1).unwrap().clone();
    h.add_fault(
        FaultRule::new(FaultAction::NeverComplete)
            .io()
            .opcode(NvmOpcode::READ.0)
            .times(2),
    );
    qp.read(&ns, 0, pool.alloc(512).unwrap(), 1).unwrap();
    qp.read(&ns, 1, pool.alloc(512).unwrap(), 2).unwrap();
    qp.write(&ns, 2, filled(&mut pool, &pattern(4, 512)), false, 3)
        .unwrap();
    let mut seen: HashMap<u64, Result<u32, IoError>> = HashMap::new();
    let poll_until = |qp: &mut nvme_engine::IoQueuePair<_>,
                      seen: &mut HashMap<u64, Result<u32, IoError>>,
                      n: usize| {
        let start = Instant::now();
        while seen.len() < n {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{:?}",
                qp.stats()
            );
            qp.process_completions(usize::MAX, |c| {
                assert!(c.buf.is_some());
                assert!(seen.insert(c.token, c.result).is_none(), "twice");
            });
        }
    };
    poll_until(&mut qp, &mut seen, 1);
    assert!(seen[&3].is_ok());
    // Both lost reads time out; the device thread answers the aborts.
    let t0 = Instant::now();
    qp.check_timeouts(t0);
    qp.check_timeouts(t0 + T);
    settle(&ctrl);
    poll_until(&mut qp, &mut seen, 3);
    assert_eq!(seen[&1], Err(IoError::TimedOut(T)));
    assert_eq!(seen[&2], Err(IoError::TimedOut(T)));
    qp.check_timeouts(t0 + 3 * T);
    qp.process_completions(usize::MAX, |c| panic!("extra completion {}", c.token));
    assert_eq!(qp.outstanding(), 0);
}
