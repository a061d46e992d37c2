//! Shutdown with I/O in flight: every accepted request is answered exactly
//! once, new submissions are refused, and the report adds up.

mod common;

use common::*;
use nvme_emu::{FaultAction, FaultRule};
use nvme_engine::spec::{
    command::NvmOpcode,
    status::{Status, StatusCodeType},
};
use nvme_reactor::{ProducerError, ReactorSet, Request, RequestError};

#[test]
fn shutdown_with_io_in_flight_answers_everything_exactly_once() {
    let mut cfg = config(2);
    cfg.ring_capacity = 64;
    let set = ReactorSet::start(cfg, vec![controller()]).unwrap();
    let mut producers = [set.producer(0).unwrap(), set.producer(1).unwrap()];
    const N: u64 = 120;
    let mut accepted = Vec::new();
    for token in 0..N {
        let p = &mut producers[(token % 2) as usize];
        let mut buf = p.alloc(4096).unwrap();
        fill(&mut buf, token);
        // 60 per ring, ring capacity 64: every submission fits.
        p.try_submit(Request::write(0, 1, token * 8, buf, false, token))
            .expect("ring has room");
        accepted.push(token);
    }
    // Shut down without having polled a single completion.
    let report = set.shutdown();

    for p in &mut producers {
        let rejected = p.try_submit(Request::flush(0, 1, 999)).unwrap_err();
        assert!(matches!(rejected.reason, ProducerError::ShuttingDown));
        assert!(rejected.reason.to_string().contains("shutting down"));
    }
    let mut seen = vec![0u32; N as usize];
    let mut ok = 0;
    let mut refused = 0;
    for p in &mut producers {
        // Everything is already delivered: one poll after shutdown suffices,
        // a second must find nothing new.
        while p.poll_completions(|r| {
            seen[r.token as usize] += 1;
            assert!(r.buf.is_some(), "buffer lost");
            match r.result {
                Ok(_) => ok += 1,
                Err(RequestError::ShutDown) => refused += 1,
                Err(e) => panic!("unexpected failure: {e}"),
            }
        }) > 0
        {}
    }
    assert!(seen.iter().all(|&n| n == 1), "answered counts: {seen:?}");
    assert_eq!(ok + refused, accepted.len() as u64);
    assert_eq!(report.completed(), ok, "{report}");
    assert_eq!(report.reactors.len(), 2);
    assert!(
        report.reactors.iter().all(|r| r.errors.is_empty()),
        "{report}"
    );
}

#[test]
fn dropping_the_set_shuts_down_and_answers_pending_io() {
    let set = ReactorSet::start(config(1), vec![controller()]).unwrap();
    let mut p = set.producer(0).unwrap();
    for token in 0..10 {
        let buf = p.alloc(512).unwrap();
        p.try_submit(Request::read(0, 1, token, buf, token))
            .unwrap();
    }
    drop(set);
    let mut n = 0;
    while p.poll_completions(|r| {
        assert!(r.buf.is_some(), "buffer lost");
        n += 1;
    }) > 0
    {}
    assert_eq!(n, 10);
}

#[test]
fn shutdown_waits_for_commands_the_device_is_still_holding() {
    let (ctrl, emu) = threaded_controller();
    // Every write is held by the device for a while: they are on the
    // device, not in a ring, when shutdown starts.
    emu.add_fault(
        FaultRule::new(FaultAction::DelayPolls(200))
            .io()
            .opcode(NvmOpcode::WRITE.0),
    );
    let set = ReactorSet::start(config(1), vec![ctrl]).unwrap();
    let mut p = set.producer(0).unwrap();
    const N: u64 = 10;
    for token in 0..N {
        let mut buf = p.alloc(512).unwrap();
        fill(&mut buf, token);
        p.try_submit(Request::write(0, 1, token, buf, true, token))
            .unwrap();
    }
    // Wait until the reactor has put them all on the queue.
    wait_for(|| set.stats().unwrap()[0].submitted == N);
    let report = set.shutdown();
    assert_eq!(report.completed(), N, "{report}");
    assert!(report.is_clean(), "{report}");
    let mut seen = vec![0u32; N as usize];
    while p.poll_completions(|r| {
        assert!(r.result.is_ok(), "{:?}", r.result);
        seen[r.token as usize] += 1;
    }) > 0
    {}
    assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
}

#[test]
fn failed_io_is_answered_and_summarised_in_the_report() {
    let (ctrl, emu) = controller_with_handle();
    emu.add_fault(
        FaultRule::new(FaultAction::CompleteWithStatus(Status::new(
            StatusCodeType::MEDIA,
            0x81,
        )))
        .io()
        .lba(100..101),
    );
    let blocks = ctrl.namespace(1).unwrap().blocks();
    let set = ReactorSet::start(config(1), vec![ctrl]).unwrap();
    let mut p = set.producer(0).unwrap();
    let requests = vec![
        (0, Request::read(0, 1, 100, p.alloc(512).unwrap(), 1)), // device error
        (0, Request::read(0, 1, blocks, p.alloc(512).unwrap(), 2)), // past the end
        (0, Request::flush(0, 9, 3)),                            // no such namespace
        (0, Request::flush(7, 1, 4)),                            // no such controller
        (0, Request::read(0, 1, 5, p.alloc(512).unwrap(), 5)),   // fine
    ];
    let mut responses = run_all(std::slice::from_mut(&mut p), requests);
    responses.sort_by_key(|r| r.token);
    assert!(matches!(responses[0].result, Err(RequestError::Device(_))));
    assert!(matches!(responses[1].result, Err(RequestError::Invalid(_))));
    assert!(matches!(
        responses[2].result,
        Err(RequestError::NoSuchNamespace { nsid: 9, .. })
    ));
    assert!(matches!(
        responses[3].result,
        Err(RequestError::NoSuchController { index: 7, count: 1 })
    ));
    assert!(responses[4].result.is_ok());
    assert!(responses[0].buf.is_some() && responses[1].buf.is_some());
    let report = set.shutdown();
    assert_eq!(report.failed(), 4);
    assert!(!report.is_clean());
    let mut tokens: Vec<u64> = report.reactors[0]
        .failures
        .iter()
        .map(|f| f.token)
        .collect();
    tokens.sort();
    assert_eq!(tokens, vec![1, 2, 3, 4]);
    let text = report.to_string();
    assert!(
        text.contains("4 failed") && text.contains("failed I/O token 1"),
        "{text}"
    );
}

#[test]
fn a_panicking_poller_does_not_lose_io() {
    let set = ReactorSet::start(config(1), vec![controller()]).unwrap();
    let mut p = set.producer(0).unwrap();
    let responses = run_all(
        std::slice::from_mut(&mut p),
        (0..8).map(|t| (0, Request::flush(0, 1, t))).collect(),
    );
    assert_eq!(responses.len(), 8);
    set.add_poller(0, Box::new(|| panic!("poller bug")))
        .unwrap();
    // The reactor stops accepting; whatever got in is still answered.
    let mut answered = 0;
    let mut accepted = 0;
    let mut token = 100;
    wait_for(|| {
        match p.try_submit(Request::flush(0, 1, token)) {
            Ok(()) => accepted += 1,
            Err(r) => assert!(matches!(
                r.reason,
                ProducerError::ShuttingDown | ProducerError::RingFull
            )),
        }
        token += 1;
        answered += p.poll_completions(|_| {});
        p.is_closing() && answered == accepted
    });
    let report = set.shutdown();
    let errors = &report.reactors[0].errors;
    assert!(errors.iter().any(|e| e.contains("poller bug")), "{report}");
}
