//! Deadline scans post aborts and resets to the controller's admin worker
//! and return without waiting for the admin command: a scan made while the
//! device holds the Abort returns, later scans post nothing twice, and the
//! timed-out command still completes once, with its buffer, when the
//! device answers. The device's hold is released by the test (inline
//! emulator rounds), never by a clock.

mod driver_common;

use std::time::{Duration, Instant};

use driver_common::*;
use nvme_emu::{EmuConfig, FaultAction, FaultRule};
use nvme_engine::spec::command::{AdminOpcode, NvmOpcode};
use nvme_engine::{ControllerOptions, IoCompletion, IoError, IoQueuePair, QueuePairOptions};

const T: Duration = Duration::from_secs(30);

fn collect(qp: &mut IoQueuePair<nvme_emu::EmuController>) -> Vec<IoCompletion> {
    let mut v = Vec::new();
    qp.process_completions(usize::MAX, |c| v.push(c));
    v
}

#[test]
fn deadline_scan_returns_while_the_device_holds_its_abort() {
    // An admin timeout far beyond the test: a scan that waited for the
    // Abort would not return before the device answers it.
    let opts = ControllerOptions::default().with_admin_timeout(Duration::from_secs(600));
    let (ctrl, h) = bring_up(EmuConfig::ram(1 << 20), opts);
    let mut qp = ctrl
        .create_io_qpair(QueuePairOptions::default().with_entries(8))
        .unwrap();
    let mut pool = ctrl.create_pool(1 << 20).unwrap();
    let ns = ctrl.namespace(1).unwrap().clone();
    h.add_fault(
        FaultRule::new(FaultAction::NeverComplete)
            .io()
            .opcode(NvmOpcode::READ.0)
            .once(),
    );
    // The Abort is held until the test runs three device rounds.
    let held = h.add_fault(
        FaultRule::new(FaultAction::DelayPolls(3))
            .admin()
            .opcode(AdminOpcode::ABORT.0)
            .once(),
    );
    qp.read(&ns, 0, pool.alloc(512).unwrap(), 7).unwrap();
    qp.ring_doorbell();
    let t0 = Instant::now();
    assert_eq!(qp.check_timeouts(t0), 0, "the first scan only stamps");
    assert_eq!(qp.check_timeouts(t0 + T), 1);
    // The worker sent the Abort; the device holds it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while h.admin_commands(AdminOpcode::ABORT) == 0 {
        assert!(
            Instant::now() < deadline,
            "the admin worker never sent the Abort"
        );
        std::thread::yield_now();
    }
    assert_eq!(h.fault_hits(held), 1);
    assert!(
        !ctrl.wait_for_admin_work(Duration::ZERO),
        "the Abort is still outstanding"
    );
    // The owner keeps polling and scanning meanwhile; nothing is posted
    // twice. (The device may already have posted the aborted command's own
    // completion; only the Abort's completion is held.)
    let mut done = collect(&mut qp);
    assert_eq!(qp.check_timeouts(t0 + T + Duration::from_secs(1)), 0);
    assert_eq!(ctrl.resets(), 0);
    assert_eq!(qp.stats().aborts_sent, 1);
    // The device answers the Abort: the command completes once.
    for _ in 0..3 {
        h.poll();
    }
    settle(&ctrl);
    done.extend(collect(&mut qp));
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].token, 7);
    assert_eq!(done[0].result, Err(IoError::TimedOut(T)));
    assert!(done[0].buf.is_some(), "the abort proved the device done");
    assert_eq!(h.admin_commands(AdminOpcode::ABORT), 1);
    assert_eq!(ctrl.resets(), 0, "an abort was enough");
    qp.check_timeouts(t0 + 3 * T);
    settle(&ctrl);
    assert!(collect(&mut qp).is_empty());
}

#[test]
fn shutdown_waits_for_a_held_reset_and_every_command_still_completes_once() {
    let (ctrl, h, mut qp, mut pool) = setup(EmuConfig::ram(1 << 20), 8, 1 << 20);
    let ns = ctrl.namespace(1).unwrap().clone();
    h.hold_resets(true);
    h.add_fault(FaultRule::new(FaultAction::FatalStatus).io().once());
    qp.read(&ns, 0, pool.alloc(512).unwrap(), 1).unwrap();
    qp.ring_doorbell();
    assert!(collect(&mut qp).is_empty());
    let t0 = Instant::now();
    qp.check_timeouts(t0);
    qp.check_timeouts(t0 + Duration::from_millis(100));
    // The reset the stall check posted waits at the gate, on the worker.
    let deadline = Instant::now() + Duration::from_secs(60);
    while h.resets_held() == 0 {
        assert!(
            Instant::now() < deadline,
            "the admin worker never started the reset"
        );
        std::thread::yield_now();
    }
    let shutting = {
        let ctrl = ctrl.clone();
        std::thread::spawn(move || ctrl.shutdown())
    };
    h.hold_resets(false);
    // Shutdown stopped the worker after its reset; it then shut down the
    // re-enabled controller.
    shutting.join().unwrap().unwrap();
    assert_eq!(ctrl.resets(), 1);
    let mut answers = Vec::new();
    qp.delete_with(|c| answers.push(c)).unwrap();
    assert_eq!(answers.len(), 1, "the read is answered exactly once");
    assert_eq!(answers[0].token, 1);
    assert!(answers[0].buf.is_some());
}

/// The application drops its only handle while the admin worker waits on
/// an event's log page: the drop waits for that job and tears the
/// controller down itself (shutdown, CC.EN = 0) before it returns, rather
/// than leaving the teardown to the worker after the process may be gone.
#[test]
fn dropping_the_last_handle_during_an_admin_job_tears_down_before_returning() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let opts = ControllerOptions::default()
        .with_admin_timeout(Duration::from_secs(600))
        .with_shadow_doorbells(true);
    let (ctrl, h) = bring_up(EmuConfig::ram(1 << 20), opts);
    assert!(
        h.doorbell_buffer_pages().is_some(),
        "the enabled controller uses shadow doorbells"
    );
    // The event's log page is held until the test runs three device rounds.
    let held = h.add_fault(
        FaultRule::new(FaultAction::DelayPolls(3))
            .admin()
            .opcode(AdminOpcode::GET_LOG_PAGE.0)
            .once(),
    );
    h.set_critical_warning(0x01);
    let deadline = Instant::now() + Duration::from_secs(120);
    while h.fault_hits(held) == 0 {
        assert!(
            Instant::now() < deadline,
            "the worker never read the log page"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&dropped);
    let dropper = std::thread::spawn(move || {
        drop(ctrl);
        flag.store(true, Ordering::Release);
    });
    // A drop that does not wait returns at once; give it time to show.
    // (This only makes a broken drop visible; a correct one never returns
    // here, however slow the machine.)
    for _ in 0..200 {
        if dropped.load(Ordering::Acquire) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        !dropped.load(Ordering::Acquire),
        "the drop returned while the worker's job still held the controller"
    );
    for _ in 0..3 {
        h.poll();
    }
    dropper.join().unwrap();
    assert!(
        h.doorbell_buffer_pages().is_none(),
        "the controller was disabled before the drop returned"
    );
}
