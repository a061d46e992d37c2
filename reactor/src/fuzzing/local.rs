//! The reactor-local part of the reactor harness: a poller on a reactor
//! submits reads, writes and requests without data through its
//! [`ReactorContext`](crate::ReactorContext), one request per loop turn from
//! its own slice of the input, played over and over (which also decides on which turns it leaves
//! its answers uncollected), and checks every answer it collects the way
//! the producers' answers are checked. What it finds broken is kept for
//! the harness thread: a panic on the reactor would be caught by the
//! reactor (which then drops its pollers) and go unnoticed.

#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};

use nvme_emu::EmuHandle;
use nvme_emu::fuzzing::Input;

use super::{Book, Dev, Outcome, Sent, request};
use crate::{LocalPoller, PollStatus};

/// Most local requests a run submits: the script repeats, so the poller
/// is still busy, or still holding answers, whenever shutdown comes.
const MAX_REQUESTS: u64 = 64;

/// What a local poller did, shared with the harness thread.
#[derive(Default)]
pub(super) struct Local {
    pub(super) book: Book,
    pub(super) out: Outcome,
    pub(super) broken: Vec<String>,
    script: Vec<u8>,
    pos: usize,
}

impl Local {
    pub(super) fn new(script: Vec<u8>) -> Self {
        Local {
            script,
            ..Local::default()
        }
    }
}

/// A poller playing `shared`'s script on controllers `0..controllers`.
pub(super) fn poller(
    shared: Arc<Mutex<Local>>,
    emus: Vec<EmuHandle>,
    controllers: usize,
) -> LocalPoller<Dev> {
    Box::new(move |ctx| {
        let mut guard = shared.lock().unwrap_or_else(|p| p.into_inner());
        let l = &mut *guard;
        let mut busy = false;
        // Some turns leave the answers waiting (they must still be handed
        // over before the reactor exits); a closing reactor's are taken.
        let n = l.script.len().max(1);
        let skip = l.script.get(l.pos % n).is_some_and(|b| b & 0x80 != 0);
        l.pos += 1;
        let mut got = Vec::new();
        if !skip || ctx.is_closing() {
            ctx.poll_completions(|r| got.push(r));
        }
        for r in got {
            busy = true;
            match l.book.check(r, 0, &emus, &mut l.out) {
                Ok(Some(buf)) => {
                    if let Err(e) = ctx.free(buf) {
                        l.broken.push(format!("a local answer's buffer: {e}"));
                    }
                }
                Ok(None) => {}
                Err(broken) => l.broken.push(broken),
            }
        }
        if !l.script.is_empty() && l.out.accepted < MAX_REQUESTS && !ctx.is_closing() {
            let at = l.pos % n;
            let mut input = Input::new(&l.script[at..]);
            let token = l.book.token();
            let req = request(&mut input, controllers, token, |c, len| {
                ctx.alloc(c, len).ok()
            });
            l.pos += input.consumed();
            let sent = Sent::new(0, req.controller, req.buf.is_some());
            match ctx.submit(req) {
                Ok(()) => {
                    l.book.accept(token, sent, &mut l.out);
                    busy = true;
                }
                Err(rejected) => {
                    l.out.handed_back += 1;
                    if rejected.request.token != token {
                        l.broken.push("another local request came back".into());
                    }
                    if let Some(buf) = rejected.request.buf
                        && ctx.free(buf).is_err()
                    {
                        l.broken
                            .push("a handed-back local buffer is not the reactor's".into());
                    }
                }
            }
        }
        if busy {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    })
}
