//! Reactor-local I/O at shutdown: "in-flight local I/O still completes and
//! can be collected" (`ReactorContext::is_closing`) — also an answer that
//! arrived before the shutdown and that the poller had not collected yet.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use nvme_reactor::{PollStatus, ReactorContext, ReactorSet, Request};

/// A poller that submits one write on its first call and collects answers
/// only once the reactor is closing. The write completes at once (inline
/// emulator), so its answer waits uncollected when shutdown begins; the
/// reactor used to exit right then, and the answer and its buffer were
/// dropped with the poller.
#[test]
fn a_local_answer_not_yet_collected_at_shutdown_still_reaches_its_poller() {
    let set = ReactorSet::start(config(1), vec![controller()]).unwrap();
    let submitted = Arc::new(AtomicU64::new(0));
    let collected = Arc::new(AtomicU64::new(0));
    let (s, c) = (Arc::clone(&submitted), Arc::clone(&collected));
    let mut sent = false;
    set.add_local_poller(
        0,
        Box::new(move |ctx: &mut ReactorContext<'_, Dev>| {
            if !sent {
                let mut buf = ctx.alloc(0, BLOCK).expect("reactor pool");
                fill(&mut buf, 7);
                ctx.submit(Request::write(0, 1, 0, buf, false, 7))
                    .expect("a local write is accepted");
                sent = true;
                s.fetch_add(1, Ordering::Release);
                return PollStatus::Busy;
            }
            if !ctx.is_closing() {
                return PollStatus::Idle;
            }
            let mut got = Vec::new();
            ctx.poll_completions(|r| got.push(r));
            for r in got {
                assert_eq!(r.token, 7);
                r.result.expect("the write succeeded");
                ctx.free(r.buf.expect("the buffer comes back"))
                    .expect("free to the reactor pool");
                c.fetch_add(1, Ordering::Release);
            }
            PollStatus::Idle
        }),
    )
    .unwrap();
    wait_for(|| submitted.load(Ordering::Acquire) == 1);
    // The write is answered within the turn that submitted it; wait until
    // the reactor has reaped it.
    wait_for(|| set.stats().unwrap()[0].completed >= 1);
    let report = set.shutdown();
    assert!(report.reactors[0].errors.is_empty(), "{report}");
    assert_eq!(
        collected.load(Ordering::Acquire),
        1,
        "the answer reached the poller before the reactor exited"
    );
}
