//! A reactor never blocks on admin work: while one of its controllers is
//! being reset, the others keep completing I/O on the same thread.
//!
//! Controller A turns fatal with reads in flight; the reactor's deadline
//! check sees CSTS.CFS and asks for a reset, which A's admin worker starts.
//! The emulator holds that reset (the write clearing CC.EN does not return)
//! until the test releases it, so nothing here depends on timing: if the
//! reset ran on the reactor thread, controller B's I/O could not complete
//! while it is held, and the test would fail at its hang guard.

mod common;

use std::collections::HashMap;

use common::*;
use nvme_engine::Health;
use nvme_reactor::{ReactorSet, Request};

/// Reads in flight on controller A when it fails.
const A_READS: u64 = 4;
/// I/Os controller B must complete while A's reset is held.
const B_IOS: u64 = 256;

/// Opens the reset gate when the test ends, also on failure, so a failed
/// run does not leave a thread waiting at it.
struct OpenOnDrop(nvme_emu::EmuHandle);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.hold_resets(false);
    }
}

#[test]
fn other_controller_keeps_completing_io_while_one_controller_reset_is_held() {
    let (a, ha) = controller_with_handle();
    let b = controller();
    let set = ReactorSet::start(config(1), vec![a, b]).unwrap();
    // Dropped before the set, whose drop waits for the reactor.
    let _gate = OpenOnDrop(ha.clone());
    let mut p = set.producer(0).unwrap();

    // A fails with reads in flight; its reset will wait at the gate.
    ha.hold_resets(true);
    ha.trigger_fatal();
    for token in 0..A_READS {
        let buf = p.alloc_for(0, BLOCK).unwrap();
        p.try_submit(Request::read(0, 1, token * 8, buf, token))
            .unwrap();
    }
    // The stall check (100 ms without a completion) finds CSTS.CFS and
    // posts the reset; the admin worker reaches the gate.
    wait_for(|| ha.resets_held() == 1);

    // B, on the same reactor, completes its I/O while A's reset is held.
    let requests = (0..B_IOS)
        .map(|i| {
            let mut buf = p.alloc_for(1, BLOCK).unwrap();
            fill(&mut buf, i);
            let token = 1000 + i;
            (0, Request::write(1, 1, i, buf, false, token))
        })
        .collect();
    let mut producers = [p];
    let mut a_answers: HashMap<u64, usize> = HashMap::new();
    let responses = run_all(&mut producers, requests);
    let [mut p] = producers;
    let mut b_done = 0;
    for r in responses {
        if r.token >= 1000 {
            r.result.unwrap();
            b_done += 1;
        } else {
            *a_answers.entry(r.token).or_default() += 1;
        }
        p.free(r.buf.expect("buffer returned")).unwrap();
    }
    assert_eq!(b_done, B_IOS);
    assert_eq!(ha.resets_held(), 1, "A's reset was held throughout");
    assert!(a_answers.is_empty(), "A answered during its reset");
    // The reactor answers a stats request while A's reset is held.
    let during = set.stats().unwrap()[0];
    assert_eq!(during.queues.resets_requested, 1, "{during}");
    println!(
        "controller B completed {B_IOS} writes while A's reset was held; longest reactor \
         turn so far {:?} (busy/idle turns {}/{})",
        during.longest_turn, during.iterations_busy, during.iterations_idle
    );

    // Release: A comes back, its reads are resubmitted and each is
    // answered exactly once.
    ha.hold_resets(false);
    wait_for(|| {
        let mut got = Vec::new();
        p.poll_completions(|r| got.push(r));
        for r in got {
            *a_answers.entry(r.token).or_default() += 1;
            assert!(r.result.is_ok(), "token {}: {:?}", r.token, r.result);
            p.free(r.buf.expect("buffer returned")).unwrap();
        }
        a_answers.len() as u64 == A_READS
    });
    assert!(a_answers.values().all(|&n| n == 1), "{a_answers:?}");
    let report = set.shutdown();
    assert_eq!(report.controllers[0].resets, 1, "{report}");
    assert_eq!(report.controllers[0].health, Health::Live);
    assert_eq!(report.controllers[1].resets, 0);
    assert_eq!(report.completed(), A_READS + B_IOS);
    assert_eq!(report.failed(), 0, "{report}");
    p.poll_completions(|r| panic!("extra answer for token {}", r.token));
    assert_eq!(p.pool_bytes_in_use(), 0);
}
