//! Backpressure never loses I/O: a tiny NVMe queue behind a full batch
//! parks requests in the reactor's backlog, tiny rings hand requests back to
//! the submitter, and everything completes exactly once with its data.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use nvme_reactor::{PollStatus, ReactorSet, Request};

#[test]
fn a_full_nvme_queue_parks_requests_and_loses_none() {
    let mut cfg = config(1);
    cfg.queue_entries = Some(4); // 3 commands in flight at most
    cfg.ring_capacity = 64;
    cfg.batch = 64;
    let set = ReactorSet::start(cfg, vec![controller()]).unwrap();
    let mut p = set.producer(0).unwrap();

    // Hold the reactor inside a poller while the ring fills, so one turn
    // sees far more requests than the queue holds (no timing involved).
    let entered = Arc::new(AtomicBool::new(false));
    let go = Arc::new(AtomicBool::new(false));
    {
        let (entered, go) = (Arc::clone(&entered), Arc::clone(&go));
        set.add_poller(
            0,
            Box::new(move || {
                entered.store(true, Ordering::Release);
                while !go.load(Ordering::Acquire) {
                    std::thread::yield_now();
                }
                PollStatus::Idle
            }),
        )
        .unwrap();
    }
    wait_for(|| entered.load(Ordering::Acquire));
    const N: u64 = 60;
    for token in 0..N {
        let mut buf = p.alloc(1024).unwrap();
        fill(&mut buf, token);
        p.try_submit(Request::write(0, 1, token * 2, buf, false, token))
            .expect("ring has room");
    }
    go.store(true, Ordering::Release);

    let mut seen = vec![0u32; N as usize];
    let mut bufs = Vec::new();
    wait_for(|| {
        p.poll_completions(|r| {
            seen[r.token as usize] += 1;
            assert!(r.result.is_ok(), "{:?}", r.result);
            bufs.push(r.buf.unwrap());
        });
        bufs.len() == N as usize
    });
    assert!(seen.iter().all(|&n| n == 1));
    for b in bufs {
        p.free(b).unwrap();
    }
    let stats = set.stats().unwrap();
    assert!(
        stats[0].queue_full > 0,
        "the queue never filled: {}",
        stats[0]
    );
    assert_eq!(stats[0].submitted, N);

    // Read everything back through the same tiny queue.
    let reads = (0..N)
        .map(|token| {
            let buf = p.alloc(1024).unwrap();
            (0, Request::read(0, 1, token * 2, buf, token))
        })
        .collect();
    for r in run_all(std::slice::from_mut(&mut p), reads) {
        let buf = r.buf.unwrap();
        assert!(holds(&buf, r.token), "LBA {} holds other data", r.token * 2);
        p.free(buf).unwrap();
    }
    let report = set.shutdown();
    assert_eq!(report.completed(), 2 * N);
    assert!(report.is_clean(), "{report}");
}

#[test]
fn tiny_rings_hand_requests_back_and_lose_none() {
    let mut cfg = config(2);
    cfg.ring_capacity = 2;
    cfg.queue_entries = Some(2);
    let set = ReactorSet::start(cfg, vec![controller()]).unwrap();
    let mut producers = vec![set.producer(0).unwrap(), set.producer(1).unwrap()];
    const N: u64 = 300;
    let requests = (0..N)
        .map(|t| {
            let pi = (t % 2) as usize;
            let mut buf = producers[pi].alloc(512).unwrap();
            fill(&mut buf, t);
            (pi, Request::write(0, 1, t, buf, false, t))
        })
        .collect();
    let responses = run_all(&mut producers, requests);
    let mut seen = vec![0u32; N as usize];
    for r in responses {
        seen[r.token as usize] += 1;
        assert!(r.result.is_ok());
    }
    assert!(seen.iter().all(|&n| n == 1));
    let report = set.shutdown();
    assert_eq!(report.completed(), N);
    assert!(report.is_clean(), "{report}");
}

#[test]
fn a_full_completion_ring_keeps_responses_on_the_reactor_until_drained() {
    let mut cfg = config(1);
    cfg.ring_capacity = 4;
    let set = ReactorSet::start(cfg, vec![controller()]).unwrap();
    let mut p = set.producer(0).unwrap();
    const N: u64 = 8;
    // Never poll until the reactor has answered everything: the second
    // half of the answers finds the completion ring full.
    for token in 0..N {
        let mut req = Request::flush(0, 1, token);
        loop {
            match p.try_submit(req) {
                Ok(()) => break,
                Err(rejected) => {
                    req = rejected.request;
                    std::thread::yield_now();
                }
            }
        }
    }
    wait_for(|| set.stats().unwrap()[0].completed == N);
    let stats = set.stats().unwrap();
    assert!(stats[0].completion_ring_full > 0, "{}", stats[0]);
    let mut seen = vec![0u32; N as usize];
    wait_for(|| {
        p.poll_completions(|r| {
            assert!(r.result.is_ok());
            seen[r.token as usize] += 1;
        });
        seen.iter().all(|&n| n > 0)
    });
    assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
    assert!(set.shutdown().is_clean());
}

#[test]
fn a_dropped_producer_does_not_stall_its_reactor() {
    let mut cfg = config(1);
    cfg.ring_capacity = 4;
    let set = ReactorSet::start(cfg, vec![controller()]).unwrap();
    let mut gone = set.producer(0).unwrap();
    for token in 0..4 {
        gone.try_submit(Request::flush(0, 1, token)).unwrap();
    }
    drop(gone);
    let mut p = set.producer(0).unwrap();
    let responses = run_all(
        std::slice::from_mut(&mut p),
        (0..20).map(|t| (0, Request::flush(0, 1, t))).collect(),
    );
    assert_eq!(responses.len(), 20);
    wait_for(|| set.stats().unwrap()[0].producers == 1);
    let report = set.shutdown();
    assert_eq!(report.completed(), 24);
}
