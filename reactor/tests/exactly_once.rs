//! Every accepted request is answered exactly once on the paths where the
//! device does not cooperate: shutdown that gives up on a device that never
//! completes, a queue the device will not delete, and direct-mode deletion.
//! Also: the shutdown wait is derived from the timeouts, and a wait that is
//! too short for them is refused.

mod common;

use std::time::Duration;

use common::*;
use nvme_emu::{EmuConfig, EmuController, EmuHandle, FaultAction, FaultRule};
use nvme_engine::spec::{
    command::AdminOpcode,
    status::generic,
    status::{Status, StatusCodeType},
};
use nvme_engine::{Controller, ControllerOptions, QueuePairOptions};
use nvme_reactor::{DirectQueue, ReactorError, ReactorSet, Request, RequestError};

/// An inline emulated controller whose admin commands give up quickly
/// (queue deletion waits up to one admin timeout for stragglers).
fn impatient_controller() -> (Controller<Dev>, EmuHandle) {
    let device = EmuController::new(EmuConfig::ram(16 << 20)).expect("emulated controller");
    let handle = device.handle();
    let opts = ControllerOptions::default().with_admin_timeout(Duration::from_millis(200));
    (Controller::new(device, opts).expect("bring-up"), handle)
}

fn aborted_by_deletion() -> RequestError {
    RequestError::Device(nvme_engine::IoError::Status(Status::new(
        StatusCodeType::GENERIC,
        generic::ABORTED_SQ_DELETION,
    )))
}

/// Submit `n` one-block writes with tokens `0..n` through reactor 0 and
/// wait until the reactor has taken all of them from the ring.
fn submit_writes(set: &ReactorSet<Dev>, p: &mut nvme_reactor::Producer, n: u64) {
    for token in 0..n {
        let buf = p.alloc(BLOCK).unwrap();
        p.try_submit(Request::write(0, 1, token, buf, true, token))
            .expect("ring has room");
    }
    wait_for(|| {
        let s = set.stats().unwrap()[0];
        s.submitted >= n.min(15)
    });
}

#[test]
fn a_device_that_never_completes_still_answers_every_request_with_its_buffer_after_shutdown() {
    let (ctrl, h) = impatient_controller();
    h.add_fault(FaultRule::new(FaultAction::NeverComplete).io());
    // 16-entry queue: 15 commands fit, the other 5 wait in the backlog.
    let set = ReactorSet::start(config(1), vec![ctrl]).unwrap();
    let mut p = set.producer(0).unwrap();
    const N: u64 = 20;
    submit_writes(&set, &mut p, N);
    // Far below the I/O timeout (30 s): shutdown gives up on the device.
    let report = set.shutdown_within(Duration::from_millis(50));
    assert!(
        report.reactors[0].errors[0].contains("shutdown gave up"),
        "{report}"
    );
    let mut seen = vec![0u32; N as usize];
    let (mut aborted, mut refused) = (0, 0);
    let mut bufs = Vec::new();
    p.poll_completions(|r| {
        seen[r.token as usize] += 1;
        match r.result {
            Err(RequestError::ShutDown) => refused += 1,
            Err(e) if e == aborted_by_deletion() => aborted += 1,
            other => panic!("unexpected result {other:?}"),
        }
        bufs.push(r.buf.expect("every buffer comes back"));
    });
    for b in bufs {
        p.free(b).unwrap();
    }
    assert!(seen.iter().all(|&n| n == 1), "answered counts: {seen:?}");
    assert_eq!(aborted, 15, "commands on the device");
    assert_eq!(refused, 5, "requests waiting for queue room");
    assert_eq!(p.pool_bytes_in_use(), 0, "a buffer was lost");
    assert_eq!(p.poll_completions(|_| panic!("answered twice")), 0);
    assert_eq!(report.completed(), N, "{report}");
}

/// Shut down with `N` writes the device never completes and a Delete I/O
/// SQ it never answers; `stoppable: false` also makes the controller ignore
/// CC.EN = 0 and the transport unable to quiesce it. Returns the responses.
fn shutdown_with_a_queue_the_device_will_not_delete(
    stoppable: bool,
) -> Vec<nvme_reactor::Response> {
    let (ctrl, h) = impatient_controller();
    h.add_fault(FaultRule::new(FaultAction::NeverComplete).io());
    let set = ReactorSet::start(config(1), vec![ctrl]).unwrap();
    let mut p = set.producer(0).unwrap();
    submit_writes(&set, &mut p, 4);
    h.add_fault(
        FaultRule::new(FaultAction::NeverComplete)
            .admin()
            .opcode(AdminOpcode::DELETE_IO_SQ.0),
    );
    if !stoppable {
        h.set_ignores_disable(true);
        h.set_quiesce_fails(true);
    }
    let report = set.shutdown_within(Duration::from_millis(50));
    assert_eq!(report.completed(), 4, "{report}");
    let mut answered = Vec::new();
    p.poll_completions(|r| answered.push(r));
    assert_eq!(p.poll_completions(|_| panic!("answered twice")), 0);
    answered
}

#[test]
fn a_queue_the_device_will_not_delete_is_reset_away_and_every_request_gets_its_buffer() {
    let answered = shutdown_with_a_queue_the_device_will_not_delete(true);
    let mut seen = vec![0u32; 4];
    for r in &answered {
        seen[r.token as usize] += 1;
        // The driver reset the controller, which deleted the queue: the
        // device can no longer write the buffers.
        assert_eq!(r.result, Err(aborted_by_deletion()));
        let buf = r.buf.as_ref().expect("every buffer comes back");
        assert!(!buf.is_quarantined());
    }
    assert!(seen.iter().all(|&n| n == 1), "answered counts: {seen:?}");
}

#[test]
fn a_queue_on_a_controller_that_cannot_be_stopped_answers_every_request_with_a_quarantined_buffer()
{
    let answered = shutdown_with_a_queue_the_device_will_not_delete(false);
    let mut seen = vec![0u32; 4];
    for r in &answered {
        seen[r.token as usize] += 1;
        assert!(r.result.is_err(), "{r:?}");
        // The device may still write it: it comes back marked, and its pool
        // never hands the block out again.
        let buf = r
            .buf
            .as_ref()
            .expect("every request is answered with its buffer");
        assert!(
            buf.is_quarantined(),
            "a buffer the device may still write came back for reuse"
        );
    }
    assert!(seen.iter().all(|&n| n == 1), "answered counts: {seen:?}");
}

#[test]
fn the_shutdown_wait_is_derived_from_the_timeouts_and_a_shorter_one_is_refused() {
    let ctrl = controller();
    let cfg = config(1);
    let needed = cfg.shutdown_wait_needed(&ctrl);
    let io = ctrl.options().io_timeout;
    let admin = ctrl.options().admin_timeout;
    assert!(needed > io + 2 * admin, "{needed:?}");
    let mut short = config(1);
    short.shutdown_timeout = Some(Duration::from_secs(10));
    let e = ReactorSet::start(short, vec![ctrl.clone()]).unwrap_err();
    assert!(matches!(e, ReactorError::ShutdownTooShort { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("shutdown_timeout 10s"), "{text}");
    assert!(text.contains("io_timeout 30s"), "{text}");
    assert!(text.contains(&format!("{needed:?}")), "{text}");
    // A shorter I/O timeout makes the same wait consistent.
    let mut ok = config(1);
    ok.io_timeout = Some(Duration::from_millis(500));
    ok.shutdown_timeout = Some(ok.shutdown_wait_needed(&ctrl));
    ReactorSet::start(ok, vec![ctrl]).unwrap().shutdown();
}

#[test]
fn direct_mode_delete_answers_outstanding_requests_with_their_buffers() {
    let (ctrl, h) = impatient_controller();
    h.add_fault(FaultRule::new(FaultAction::NeverComplete).io());
    let mut q = DirectQueue::new(&ctrl, QueuePairOptions::default(), 1 << 20).unwrap();
    for token in 0..3 {
        let buf = q.alloc(BLOCK).unwrap();
        q.submit(Request::write(0, 1, token, buf, false, 40 + token))
            .unwrap();
    }
    q.poll(8, |r| panic!("completed early: {r:?}"));
    let answered = q.delete().unwrap();
    let mut tokens: Vec<u64> = answered.iter().map(|r| r.token).collect();
    tokens.sort_unstable();
    assert_eq!(tokens, vec![40, 41, 42]);
    for r in answered {
        assert_eq!(r.result, Err(aborted_by_deletion()));
        assert!(r.buf.is_some(), "buffer lost");
    }
}

#[test]
fn direct_mode_delete_that_the_device_ignores_resets_and_answers_every_request_once() {
    let (ctrl, h) = impatient_controller();
    h.add_fault(FaultRule::new(FaultAction::NeverComplete).io());
    let mut q = DirectQueue::new(&ctrl, QueuePairOptions::default(), 1 << 20).unwrap();
    for token in [7, 7, 8] {
        let buf = q.alloc(BLOCK).unwrap();
        q.submit(Request::write(0, 1, token, buf, false, token))
            .unwrap();
    }
    q.poll(8, |r| panic!("completed early: {r:?}"));
    h.add_fault(
        FaultRule::new(FaultAction::NeverComplete)
            .admin()
            .opcode(AdminOpcode::DELETE_IO_SQ.0),
    );
    let mut answered = Vec::new();
    q.delete_with(|r| answered.push(r))
        .expect("the reset deleted the queue");
    let mut tokens: Vec<u64> = answered.iter().map(|r| r.token).collect();
    tokens.sort_unstable();
    assert_eq!(tokens, vec![7, 7, 8], "each request answered exactly once");
    for r in answered {
        assert_eq!(r.result, Err(aborted_by_deletion()));
        assert!(r.buf.is_some(), "buffer lost");
    }
    assert!(ctrl.resets() >= 1, "the controller was reset");
}
