//! The direct-mode script of the reactor harness: one [`DirectQueue`] on
//! the calling thread, deadline checks on a synthetic clock (so a lost
//! command is timed out, aborted and its controller reset without waiting
//! for real time), and deletion with requests outstanding — answered
//! through `delete_with`, returned by `delete`, or dropped unheard — after
//! which a new queue takes over.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use nvme_emu::EmuHandle;
use nvme_emu::fuzzing::Input;
use nvme_engine::{Controller, QueuePairOptions};

use super::{Book, Dev, HANG, Outcome, Sent};
use super::{admin, device_event, end_refusal, request};
use crate::{DirectQueue, DirectSubmit, Response};

/// Answers gathered while the queue is borrowed, checked afterwards.
fn settle(
    q: &mut DirectQueue<Dev>,
    got: Vec<Response>,
    emus: &[EmuHandle],
    book: &mut Book,
    out: &mut Outcome,
) {
    for r in got {
        if let Some(buf) = book.answer(r, 0, emus, out) {
            assert!(q.free(buf).is_ok(), "an answered buffer is not the queue's");
        }
    }
}

fn queue(ctrl: &Controller<Dev>, entries: u16) -> Option<DirectQueue<Dev>> {
    let opts = QueuePairOptions::default().with_entries(entries);
    DirectQueue::new(ctrl, opts, 128 << 10).ok()
}

/// Delete `q` with whatever it holds: through `delete_with` (`how` 0),
/// `delete` (1) or drop (2); every answer it
/// gives is checked, and a dropped queue's requests are forgotten.
fn delete(how: u8, q: DirectQueue<Dev>, emus: &[EmuHandle], book: &mut Book, out: &mut Outcome) {
    out.dropped_busy += (q.outstanding() > 0) as u64;
    // Buffers answered now go back with their pool, which goes with `q`.
    let answered = match how {
        0 => {
            let mut got = Vec::new();
            let _ = q.delete_with(|r| got.push(r));
            got
        }
        1 => match q.delete() {
            Ok(got) => got,
            Err(e) => e.answered,
        },
        _ => {
            drop(q);
            book.sent.clear();
            return;
        }
    };
    for r in answered {
        let _ = book.answer(r, 0, emus, out);
    }
    let owed: Vec<u64> = book.sent.keys().copied().collect();
    assert!(
        owed.is_empty(),
        "deleting the queue left requests unanswered: {owed:?}"
    );
}

/// The direct-mode script on `ctrl` (the first of `emus`).
pub(super) fn run(
    input: &mut Input<'_>,
    ctrl: &Controller<Dev>,
    emus: &[EmuHandle],
    out: &mut Outcome,
) {
    let entries = 2 + input.u16() % 40;
    let Some(q) = queue(ctrl, entries) else {
        return;
    };
    out.started = true;
    let mut q = Some(q);
    let mut admin_pool = ctrl.create_pool(64 << 10).ok();
    let mut book = Book::default();
    let mut now = Instant::now();
    let mut refused = 0u8;
    let mut steps = 0;
    while !input.done() && steps < 160 {
        steps += 1;
        end_refusal(&mut refused, emus);
        let op = input.u8();
        let Some(live) = q.as_mut() else {
            q = queue(ctrl, entries);
            continue;
        };
        match op % 12 {
            0..=4 => {
                let token = book.token();
                let req = request(input, 1, token, |_, len| live.alloc(len).ok());
                let sent = Sent::new(0, req.controller, req.buf.is_some());
                match live.submit(req) {
                    Ok(()) => book.accept(token, sent, out),
                    Err(DirectSubmit::QueueFull(req)) => {
                        assert_eq!(req.token, token, "another request came back");
                        out.handed_back += 1;
                        if let Some(buf) = req.buf {
                            assert!(live.free(buf).is_ok());
                        }
                    }
                    Err(DirectSubmit::Failed(resp)) => {
                        // Refused at once: answered now, through the same checks.
                        book.accept(token, sent, out);
                        settle(live, vec![resp], emus, &mut book, out);
                    }
                }
            }
            5 | 6 => {
                let mut got = Vec::new();
                live.poll(1 + input.u8() as usize % 32, |r| got.push(r));
                settle(live, got, emus, &mut book, out);
            }
            7 => {
                now += Duration::from_millis(input.u16() as u64);
                live.check_timeouts(now);
                // Aborts and resets run on the admin worker.
                let _ = ctrl.wait_for_admin_work(HANG);
            }
            8 => device_event(input, &emus[0], &mut refused),
            9 => admin(input, ctrl, admin_pool.as_mut()),
            10 => {
                if let Some(old) = q.take() {
                    delete(input.u8() % 3, old, emus, &mut book, out);
                }
            }
            _ => {
                emus[0].poll();
            }
        }
    }
    end_refusal(&mut refused, emus);
    end_refusal(&mut refused, emus);
    let Some(mut live) = q.take() else {
        return;
    };
    // The device becomes honest: every request must now be answered within
    // a bounded number of rounds, or by the deletion after them.
    emus[0].clear_faults();
    for _ in 0..64 {
        if live.outstanding() == 0 {
            break;
        }
        emus[0].poll();
        now += Duration::from_secs(40);
        live.check_timeouts(now);
        let _ = ctrl.wait_for_admin_work(HANG);
        let mut got = Vec::new();
        live.poll(usize::MAX, |r| got.push(r));
        settle(&mut live, got, emus, &mut book, out);
    }
    if live.outstanding() == 0 {
        assert!(
            book.sent.is_empty(),
            "a request was never answered though none is outstanding"
        );
        assert_eq!(live.pool().used(), 0, "a buffer never came back");
    }
    delete(input.u8() % 2, live, emus, &mut book, out);
    if let Some(pool) = admin_pool {
        assert_eq!(pool.used(), 0, "an admin buffer never came back");
    }
}
