//! Losing one controller mid-run (surprise removal, or a fatal error that a
//! reset cannot clear) while the other keeps serving: requests to the lost
//! controller fail with `Gone` (`DeviceGone::Removed` / `DeviceGone::Failed`) — the ones in
//! flight once the driver notices, later ones at once without reaching the
//! device — requests to the other one succeed with correct data, and
//! shutdown completes and names the lost controller.

mod common;

use common::*;
use nvme_emu::EmuHandle;
use nvme_engine::{DeviceGone, Health};
use nvme_reactor::{Producer, ReactorSet, Request, RequestError};

/// Requests per producer in each phase.
const N: u64 = 64;
const BLOCKS: u64 = 2;

fn lba(p: usize, i: u64) -> u64 {
    (p as u64 * N + i) * BLOCKS
}

/// Phase-one writes: request `i` of producer `p` goes to controller `i % 2`
/// and has token `p * N + i`.
fn writes(producers: &mut [Producer]) -> Vec<(usize, Request)> {
    let mut out = Vec::new();
    for (p, prod) in producers.iter_mut().enumerate() {
        for i in 0..N {
            let c = (i % 2) as usize;
            let mut buf = prod.alloc_for(c, BLOCKS as usize * BLOCK).unwrap();
            fill(&mut buf, lba(p, i) + 1);
            out.push((
                p,
                Request::write(c, 1, lba(p, i), buf, false, p as u64 * N + i),
            ));
        }
    }
    out
}

/// Phase-two reads of the same blocks.
fn reads(producers: &mut [Producer]) -> Vec<(usize, Request)> {
    let mut out = Vec::new();
    for (p, prod) in producers.iter_mut().enumerate() {
        for i in 0..N {
            let c = (i % 2) as usize;
            let buf = prod.alloc_for(c, BLOCKS as usize * BLOCK).unwrap();
            out.push((p, Request::read(c, 1, lba(p, i), buf, p as u64 * N + i)));
        }
    }
    out
}

fn lose_controller_mid_run(lose: impl FnOnce(&EmuHandle), expected: RequestError, health: Health) {
    let (c0, _h0) = controller_with_handle();
    let (c1, h1) = controller_with_handle();
    let set = ReactorSet::start(config(2), vec![c0, c1]).unwrap();
    let mut producers = vec![set.producer(0).unwrap(), set.producer(1).unwrap()];

    let requests = writes(&mut producers);
    for r in run_all(&mut producers, requests) {
        assert!(r.result.is_ok(), "before the loss: {:?}", r.result);
        let buf = r.buf.expect("buffer returned");
        producers[(r.token / N) as usize].free(buf).unwrap();
    }
    let before = set.stats().unwrap();
    let submitted_before: u64 = before.iter().map(|s| s.submitted).sum();

    lose(&h1);

    let requests = reads(&mut producers);
    let responses = run_all(&mut producers, requests);
    let mut seen = vec![0u32; 2 * N as usize];
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut bufs = Vec::new();
    for r in responses {
        seen[r.token as usize] += 1;
        let (p, i) = ((r.token / N) as usize, r.token % N);
        let buf = r.buf.expect("buffer returned");
        if i % 2 == 0 {
            r.result.expect("the other controller keeps serving");
            assert!(holds(&buf, lba(p, i) + 1), "data of request {}", r.token);
            ok += 1;
        } else {
            let e = r
                .result
                .expect_err("the lost controller fails its requests");
            assert_eq!(e, expected, "{e}");
            assert!(e.controller_unusable());
            assert!(e.to_string().contains("controller 1"), "{e}");
            failed += 1;
        }
        bufs.push((p, buf));
    }
    for (p, buf) in bufs {
        producers[p].free(buf).unwrap();
    }
    assert!(seen.iter().all(|&n| n == 1), "answered once: {seen:?}");
    assert_eq!((ok, failed), (N, N));
    assert_eq!(set.controllers()[1].health(), health);
    assert_eq!(set.controllers()[0].health(), Health::Live);

    // Fail fast: once the loss is noticed, requests no longer reach the
    // device. At most what was in the rings' credit (32 per producer) went
    // onto the lost controller's queues first.
    let after = set.stats().unwrap();
    let submitted_after: u64 = after.iter().map(|s| s.submitted).sum();
    assert!(
        submitted_after - submitted_before <= N + 2 * 32,
        "{submitted_after} - {submitted_before}"
    );

    let report = set.shutdown();
    assert!(!report.is_clean());
    assert_eq!(report.failed(), N, "{report}");
    let lost: Vec<_> = report.lost_controllers().collect();
    assert_eq!(lost.len(), 1, "{report}");
    assert_eq!((lost[0].index, lost[0].health), (1, health));
    assert!(
        report.reactors.iter().all(|r| r.errors.is_empty()),
        "{report}"
    );
    assert!(
        report
            .reactors
            .iter()
            .flat_map(|r| &r.failures)
            .all(|f| f.error == expected),
        "{report}"
    );
    assert!(report.to_string().contains("controller 1"), "{report}");
    for p in &producers {
        assert_eq!(p.pool_bytes_in_use(), 0, "a buffer was lost");
    }
}

#[test]
fn a_removed_controller_fails_its_requests_while_the_other_keeps_serving() {
    lose_controller_mid_run(
        |h| h.trigger_vanish(),
        RequestError::Gone {
            controller: 1,
            kind: DeviceGone::Removed,
        },
        Health::Removed,
    );
}

#[test]
fn a_failed_controller_fails_its_requests_while_the_other_keeps_serving() {
    lose_controller_mid_run(
        |h| {
            h.set_fatal_survives_reset(true);
            h.trigger_fatal();
        },
        RequestError::Gone {
            controller: 1,
            kind: DeviceGone::Failed,
        },
        Health::Failed,
    );
}

#[test]
fn shutdown_completes_with_io_in_flight_on_a_removed_controller() {
    let (c0, _h0) = controller_with_handle();
    let (c1, h1) = controller_with_handle();
    let set = ReactorSet::start(config(1), vec![c0, c1]).unwrap();
    let mut p = set.producer(0).unwrap();
    h1.trigger_vanish();
    const M: u64 = 20;
    for token in 0..M {
        let c = (token % 2) as usize;
        let buf = p.alloc_for(c, 4096).unwrap();
        p.try_submit(Request::read(c, 1, token * 8, buf, token))
            .expect("ring has room");
    }
    // Every request was taken by the reactor (submitted, or refused at once
    // when the removal was already noticed); then shut down at once.
    wait_for(|| {
        let s = set.stats().unwrap()[0];
        s.submitted + s.failed >= M
    });
    let report = set.shutdown();
    let mut seen = vec![0u32; M as usize];
    let mut bufs = Vec::new();
    while p.poll_completions(|r| {
        seen[r.token as usize] += 1;
        if r.token % 2 == 0 {
            assert!(r.result.is_ok(), "{:?}", r.result);
        } else {
            assert_eq!(
                r.result.unwrap_err(),
                RequestError::Gone {
                    controller: 1,
                    kind: DeviceGone::Removed
                }
            );
        }
        bufs.push(r.buf.expect("buffer returned"));
    }) > 0
    {}
    for b in bufs {
        p.free(b).unwrap();
    }
    assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
    assert_eq!(p.pool_bytes_in_use(), 0);
    assert_eq!(report.device_removed(), M / 2, "{report}");
    assert!(
        report.reactors.iter().all(|r| r.errors.is_empty()),
        "{report}"
    );
    assert_eq!(report.controllers[1].health, Health::Removed, "{report}");
}
