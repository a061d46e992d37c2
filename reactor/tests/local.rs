//! Reactor-local I/O: a poller on the reactor writes, reads back and
//! verifies with buffers from the reactor's own pool, while an application
//! thread uses the same reactor through a ring.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use nvme_reactor::{ContextError, PollStatus, ReactorContext, ReactorSet, Request};

const N: u64 = 40;
const BASE_LBA: u64 = 10_000;

/// A small state machine: write N patterned blocks, then read them back.
struct Checker {
    next: u64,
    reading: bool,
    done: u64,
    verified: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
}

impl Checker {
    fn poll(&mut self, ctx: &mut ReactorContext<'_, Dev>) -> PollStatus {
        let mut busy = false;
        let mut finished = Vec::new();
        ctx.poll_completions(|r| finished.push(r));
        for r in finished {
            busy = true;
            let buf = r.buf.expect("buffer returned");
            if r.result.is_err() || (self.reading && !holds(&buf, r.token)) {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
            if self.reading {
                self.verified.fetch_add(1, Ordering::Relaxed);
            }
            self.done += 1;
            ctx.free(buf).expect("free to the reactor pool");
        }
        if !self.reading && self.done == N {
            self.reading = true;
            self.next = 0;
            self.done = 0;
        }
        while self.next < N {
            let mut buf = ctx.alloc(0, BLOCK).expect("reactor pool");
            let lba = BASE_LBA + self.next;
            let req = if self.reading {
                Request::read(0, 1, lba, buf, self.next)
            } else {
                fill(&mut buf, self.next);
                Request::write(0, 1, lba, buf, false, self.next)
            };
            match ctx.submit(req) {
                Ok(()) => {
                    self.next += 1;
                    busy = true;
                }
                Err(rejected) => {
                    assert!(matches!(
                        rejected.reason,
                        ContextError::QueueFull | ContextError::NoCredit
                    ));
                    ctx.free(rejected.request.buf.unwrap()).unwrap();
                    break;
                }
            }
        }
        if busy {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }
}

#[test]
fn a_local_poller_does_io_with_the_reactor_pool_beside_a_ring_producer() {
    let mut cfg = config(1);
    cfg.local_capacity = 8;
    cfg.queue_entries = Some(8);
    let set = ReactorSet::start(cfg, vec![controller()]).unwrap();
    let verified = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut checker = Checker {
        next: 0,
        reading: false,
        done: 0,
        verified: Arc::clone(&verified),
        errors: Arc::clone(&errors),
    };
    set.add_local_poller(0, Box::new(move |ctx| checker.poll(ctx)))
        .unwrap();

    // Meanwhile an application thread writes elsewhere through a ring.
    let mut p = set.producer(0).unwrap();
    let requests = (0..60)
        .map(|t| {
            let mut buf = p.alloc(BLOCK).unwrap();
            fill(&mut buf, 1000 + t);
            (0, Request::write(0, 1, t, buf, false, 1000 + t))
        })
        .collect();
    for r in run_all(std::slice::from_mut(&mut p), requests) {
        assert!(r.result.is_ok());
    }

    wait_for(|| verified.load(Ordering::Relaxed) == N);
    assert_eq!(errors.load(Ordering::Relaxed), 0);
    let report = set.shutdown();
    assert_eq!(report.completed(), 60 + 2 * N, "{report}");
    assert!(report.is_clean(), "{report}");
}
