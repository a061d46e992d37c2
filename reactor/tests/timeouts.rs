//! Deadlines on reactors and in direct mode: a command the device never
//! completes is timed out by the reactor's own deadline checks and answered
//! with `RequestError::TimedOut`, also while the set shuts down; the
//! configuration is validated.
//!
//! The only commands that can time out are the ones the emulator is told
//! to lose (inline mode completes every other command during its doorbell
//! write); the deadlines just bound the run.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nvme_emu::{FaultAction, FaultRule};
use nvme_engine::spec::command::NvmOpcode;
use nvme_engine::{Health, QueuePairOptions};
use nvme_reactor::{DirectQueue, ReactorError, ReactorSet, Request, RequestError};

const TIMEOUT: Duration = Duration::from_millis(100);

#[test]
fn a_lost_command_times_out_on_the_reactor_and_the_others_complete() {
    let (ctrl, h) = controller_with_handle();
    let lost = h.add_fault(
        FaultRule::new(FaultAction::NeverComplete)
            .io()
            .opcode(NvmOpcode::READ.0)
            .lba(40..41)
            .once(),
    );
    let mut cfg = config(1);
    cfg.io_timeout = Some(TIMEOUT);
    let set = ReactorSet::start(cfg, vec![ctrl]).unwrap();
    let mut producers = [set.producer(0).unwrap()];
    let requests = (0..10u64)
        .map(|i| {
            let buf = producers[0].alloc(BLOCK).unwrap();
            (0, Request::read(0, 1, i * 8, buf, i))
        })
        .collect();
    let responses = run_all(&mut producers, requests);
    assert_eq!(h.fault_hits(lost), 1);
    for r in responses {
        if r.token == 5 {
            let e = r.result.unwrap_err();
            assert_eq!(
                e,
                RequestError::TimedOut {
                    controller: 0,
                    timeout: TIMEOUT
                }
            );
            assert!(e.outcome_unknown() && !e.controller_unusable());
            assert!(e.to_string().contains("no completion within"), "{e}");
        } else {
            r.result.unwrap();
        }
        producers[0].free(r.buf.expect("buffer returned")).unwrap();
    }
    let stats = set.stats().unwrap()[0];
    assert_eq!(stats.timed_out, 1);
    assert_eq!(stats.queues.timeouts, 1);
    assert!(stats.queues.aborts_sent >= 1, "{stats}");
    assert!(stats.timeout_checks > 0);
    let report = set.shutdown();
    assert_eq!(report.timed_out(), 1, "{report}");
    assert_eq!(report.controllers[0].health, Health::Live);
    assert!(!report.is_clean());
    assert_eq!(producers[0].pool_bytes_in_use(), 0);
}

#[test]
fn shutdown_times_out_lost_commands_instead_of_hanging() {
    let (ctrl, h) = controller_with_handle();
    h.add_fault(FaultRule::new(FaultAction::NeverComplete).io().times(3));
    let mut cfg = config(1);
    cfg.io_timeout = Some(TIMEOUT);
    let set = ReactorSet::start(cfg, vec![ctrl]).unwrap();
    let mut p = set.producer(0).unwrap();
    for token in 0..3 {
        let buf = p.alloc(BLOCK).unwrap();
        p.try_submit(Request::read(0, 1, token, buf, token))
            .unwrap();
    }
    wait_for(|| set.stats().unwrap()[0].submitted == 3);
    let report = set.shutdown();
    assert!(report.reactors[0].errors.is_empty(), "{report}");
    let mut n = 0;
    p.poll_completions(|r| {
        assert!(
            matches!(r.result, Err(RequestError::TimedOut { .. })),
            "{:?}",
            r.result
        );
        assert!(r.buf.is_some());
        n += 1;
    });
    assert_eq!(n, 3);
    assert_eq!(report.timed_out(), 3, "{report}");
}

#[test]
fn direct_mode_times_out_a_lost_command() {
    let (ctrl, h) = controller_with_handle();
    h.add_fault(FaultRule::new(FaultAction::NeverComplete).io().once());
    let mut q = DirectQueue::new(&ctrl, QueuePairOptions::default(), 1 << 20).unwrap();
    q.queue_pair().set_timeout(TIMEOUT);
    let buf = q.alloc(BLOCK).unwrap();
    q.submit(Request::read(0, 1, 0, buf, 9)).unwrap();
    let mut done = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.is_none() {
        assert!(Instant::now() < deadline, "never timed out");
        q.poll(8, |r| done = Some(r));
        q.check_timeouts(Instant::now());
        std::thread::yield_now();
    }
    let r = done.unwrap();
    assert_eq!(r.token, 9);
    assert!(matches!(
        r.result,
        Err(RequestError::TimedOut { controller: 0, .. })
    ));
    q.free(r.buf.unwrap()).unwrap();
    q.delete().unwrap();
}

#[test]
fn invalid_deadline_settings_are_refused() {
    let mut cfg = config(1);
    cfg.timeout_check = Duration::ZERO;
    let e = ReactorSet::start(cfg, vec![controller()]).unwrap_err();
    assert!(matches!(e, ReactorError::Config(_)), "{e}");
    assert!(e.to_string().contains("timeout_check"), "{e}");
    let mut cfg = config(1);
    cfg.io_timeout = Some(Duration::ZERO);
    let e = ReactorSet::start(cfg, vec![controller()]).unwrap_err();
    assert!(e.to_string().contains("io_timeout"), "{e}");
}
