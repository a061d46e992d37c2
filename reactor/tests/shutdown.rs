//! Shutdown with I/O in flight: every accepted request is answered exactly
//! once, new submissions are refused, and the report adds up.

mod common;

use common::*;
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
