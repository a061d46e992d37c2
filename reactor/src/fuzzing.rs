//! Fuzzing harness: reactors, producers and direct-mode queues against
//! emulated controllers that misbehave as the input says.
//!
//! Built only with the `fuzzing` cargo feature; not part of the supported
//! API. [`run`] reads, from the input: one or two inline (or, rarely,
//! threaded) emulated controllers with their queue sizes and fault rules
//! (every kind the emulator has: error status, lost, delayed, duplicate,
//! unknown CID, stale, bogus SQ head, fatal status, removal), whether
//! fatal status and removal survive a reset, and the timeouts; then either
//! a reactor set (one or two reactors, ring capacity, batch, queue depth,
//! an explicit shutdown wait that may be too short) with a script over up
//! to four producers, or a direct-mode queue with its own script. Script
//! steps: reads, writes (FUA or not), flushes, Write Zeroes, Deallocate,
//! malformed requests (no buffer, a bad controller, namespace or length),
//! bursts that fill the rings, polling, new producers, producers dropped
//! with requests inside, fatal status, removal, new fault rules, a
//! controller that refuses resets or cannot be quiesced, resets and admin
//! commands with buffers from the application thread, time passing,
//! counters, and shutdown, `shutdown_within` or drop at any point; in
//! direct mode also deadline checks on a synthetic clock, and deletion
//! (`delete_with`, `delete`, drop) with requests outstanding.
//!
//! It checks the reactor's promise: no panic and no hang; every request a
//! producer (or a direct queue) accepted is answered exactly once, with
//! its buffer (only [`RequestError::QueueNotDeleted`] withholds it), and a
//! request handed back comes back whole; no buffer comes back, unless
//! quarantined, while the controller still holds a command pointing at it
//! (the emulator lists what it holds: fetched and not finished, or visible
//! at the SQ tail and not fetched — a real device may still write those);
//! every buffer is accounted for once all are freed; the device never
//! reached memory outside its mappings; an explicit shutdown wait is
//! refused exactly when it is shorter than the one the timeouts need.
//!
//! Time is real (reactors read the clock), so every timeout is a few
//! milliseconds, CAP.TO is cut to 500 ms, and a controller refuses resets
//! for at most one script step per run: a run takes milliseconds, and a
//! few seconds at worst. Used by the `reactor` target in `fuzz/` and by
//! `reactor/tests/fuzz_seeded.rs`.

#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nvme_emu::fuzzing::{Input, Rewired, rule, short_ready_timeout};
use nvme_emu::{EmuConfig, EmuController, EmuHandle, EmuMode, EmuNamespaceConfig};
use nvme_engine::dma::{DmaBuf, DmaPool};
use nvme_engine::spec::log::LogId;
use nvme_engine::spec::status::{Status, StatusCodeType, generic};
use nvme_engine::{Controller, ControllerOptions, IoError};

use local::Local;

use crate::{AllowedCores, CoreSpec, Op, Producer, ProducerError};
use crate::{ReactorConfig, ReactorError, ReactorSet, Request, RequestError, Response};

/// The device the harness drives.
type Dev = Rewired;

/// No loop of the harness may run longer than this: past it, a hang.
const HANG: Duration = Duration::from_secs(60);

/// Blocks of the one namespace of each controller (512-byte blocks).
const BLOCKS: u64 = 256;

/// What one run did (for the stable test's coverage checks).
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct Outcome {
    /// A reactor set (or the direct queue) started.
    pub started: bool,
    /// The run used a direct-mode queue instead of reactors.
    pub direct: bool,
    /// The emulators ran their own device threads.
    pub threaded: bool,
    /// Requests accepted.
    pub accepted: u64,
    /// Requests handed back by `try_submit` or `submit`.
    pub handed_back: u64,
    /// Answers with success.
    pub succeeded: u64,
    /// Answers with an error.
    pub failed: u64,
    /// Answers `TimedOut`.
    pub timed_out: u64,
    /// Answers `ControllerReset`.
    pub reset: u64,
    /// Answers `Gone`.
    pub gone: u64,
    /// Answers `Command Aborted due to SQ Deletion`.
    pub deletion_aborted: u64,
    /// Answers `ShutDown`.
    pub shut_down: u64,
    /// Answers `QueueNotDeleted` (no buffer).
    pub not_deleted: u64,
    /// Buffers that came back quarantined.
    pub quarantined: u64,
    /// Buffers checked against the commands the controller held.
    pub held_checks: u64,
    /// Reactor-local requests accepted (also counted in `accepted`).
    pub local_accepted: u64,
    /// Producers (or direct queues) dropped or deleted with requests inside.
    pub dropped_busy: u64,
    /// A shutdown gave up waiting and answered by deleting the queues.
    pub gave_up: bool,
    /// An explicit shutdown wait was refused as too short.
    pub wait_refused: bool,
    /// A controller was quiesced.
    pub quiesced: bool,
}

/// An accepted request not answered yet.
#[derive(Clone, Copy)]
struct Sent {
    /// Producer slot (0 in direct mode).
    owner: usize,
    controller: usize,
    buf: bool,
}

/// Every accepted request, until its answer.
#[derive(Default)]
struct Book {
    sent: HashMap<u64, Sent>,
    answered: HashSet<u64>,
    next: u64,
}

impl Book {
    fn token(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn accept(&mut self, token: u64, sent: Sent, out: &mut Outcome) {
        self.sent.insert(token, sent);
        out.accepted += 1;
    }

    /// Check one answer; returns its buffer, to be freed. Panics on a
    /// broken promise.
    fn answer(
        &mut self,
        r: Response,
        owner: usize,
        emus: &[EmuHandle],
        out: &mut Outcome,
    ) -> Option<DmaBuf> {
        self.check(r, owner, emus, out)
            .unwrap_or_else(|broken| panic!("{broken}"))
    }

    /// [`Book::answer`], returning what broke instead of panicking (for
    /// code on a reactor thread, whose panics the reactor catches).
    fn check(
        &mut self,
        r: Response,
        owner: usize,
        emus: &[EmuHandle],
        out: &mut Outcome,
    ) -> Result<Option<DmaBuf>, String> {
        let token = r.token;
        if self.answered.contains(&token) {
            return Err(format!("request {token} answered twice"));
        }
        let Some(sent) = self.sent.remove(&token) else {
            return Err(format!("an answer for request {token}, never accepted"));
        };
        self.answered.insert(token);
        if sent.owner != owner {
            return Err(format!("request {token} answered to another producer"));
        }
        let withheld = matches!(r.result, Err(RequestError::QueueNotDeleted { .. }));
        if r.buf.is_some() != (sent.buf && !withheld) {
            return Err(format!(
                "request {token} lost or gained a buffer: {:?}",
                r.result
            ));
        }
        match &r.result {
            Ok(_) => out.succeeded += 1,
            Err(e) => {
                out.failed += 1;
                count(e, out);
            }
        }
        if let Some(buf) = &r.buf {
            if buf.is_quarantined() {
                out.quarantined += 1;
            } else if let Some(h) = emus.get(sent.controller) {
                not_held(h, buf, token)?;
                out.held_checks += 1;
            }
        }
        Ok(r.buf)
    }
}

fn count(e: &RequestError, out: &mut Outcome) {
    let aborted = Status::new(StatusCodeType::GENERIC, generic::ABORTED_SQ_DELETION);
    match e {
        RequestError::TimedOut { .. } => out.timed_out += 1,
        RequestError::ControllerReset { .. } => out.reset += 1,
        RequestError::Gone { .. } => out.gone += 1,
        RequestError::ShutDown => out.shut_down += 1,
        RequestError::QueueNotDeleted { .. } => out.not_deleted += 1,
        RequestError::Device(IoError::Status(s)) if s.code_eq(aborted) => out.deletion_aborted += 1,
        _ => {}
    }
}

/// The controller behind `h` must hold no command whose data starts in
/// `buf`, unless it can no longer write (quiesced).
fn not_held(h: &EmuHandle, buf: &DmaBuf, token: u64) -> Result<(), String> {
    if h.is_quiesced() {
        return Ok(());
    }
    let (start, end) = (buf.iova(), buf.iova() + buf.capacity() as u64);
    match h
        .held_commands()
        .into_iter()
        .find(|(sqid, cmd)| *sqid != 0 && (start..end).contains(&cmd.prp1))
    {
        None => Ok(()),
        Some((sqid, cmd)) => Err(format!(
            "request {token}: its buffer came back while the controller still holds a command \
             (SQ {sqid}, opcode {:#x}) that points at it",
            cmd.opcode()
        )),
    }
}

/// One controller's emulator configuration and the driver's options.
fn controller(input: &mut Input<'_>, threaded: bool) -> Option<(Controller<Dev>, EmuHandle)> {
    let mut cfg = EmuConfig::ram(BLOCKS * 512)
        .without_namespaces()
        .namespace(EmuNamespaceConfig::ram(512, BLOCKS));
    cfg.mdts = 1 + input.u8() % 4;
    cfg.max_queue_entries = 2 + input.u8() as u32 % 40;
    cfg.io_queues = 4;
    if threaded {
        cfg = cfg.mode(EmuMode::threaded_cooperative());
    }
    let emu = EmuController::new(cfg).ok()?;
    let h = emu.handle();
    h.seed_faults(input.u64());
    for _ in 0..input.u8() % 4 {
        h.add_fault(rule(input));
    }
    h.set_vanish_recovers_on_reset(input.u8() & 1 == 1);
    h.set_fatal_survives_reset(input.u8() & 3 == 3);
    let admin_ms = if threaded {
        200
    } else {
        5 + input.u8() as u64 % 30
    };
    let opts = ControllerOptions::default()
        .with_admin_timeout(Duration::from_millis(admin_ms))
        .with_io_timeout(Duration::from_millis(2 + input.u8() as u64 % 40))
        .with_io_retry_limit(input.u8() % 3);
    let ctrl = Controller::new(Rewired::new(emu, short_ready_timeout), opts).ok()?;
    Some((ctrl, h))
}

/// A request of any kind, well formed or not, with a buffer from `alloc`.
fn request(
    input: &mut Input<'_>,
    controllers: usize,
    token: u64,
    mut alloc: impl FnMut(usize, usize) -> Option<DmaBuf>,
) -> Request {
    let kind = input.u8();
    let mut controller = input.u8() as usize % controllers;
    let nsid = match input.u8() {
        0 => 2,
        1 => u32::MAX,
        _ => 1,
    };
    let blocks = 1 + input.u8() as u64 % 8;
    let lba = input.u16() as u64 % (BLOCKS + 8);
    if kind >= 250 {
        controller = controllers + (kind & 1) as usize;
    }
    let len = blocks as usize * 512 + usize::from(kind % 50 == 49);
    let op = match kind % 8 {
        0..=2 => Op::Read,
        3..=5 => Op::Write { fua: kind & 8 != 0 },
        6 => Op::Flush,
        _ if kind & 16 != 0 => Op::WriteZeroes {
            blocks: blocks as u32,
            deallocate: kind & 32 != 0,
        },
        _ => Op::Deallocate {
            blocks: blocks as u32,
        },
    };
    let mut r = Request::without_data(op, controller, nsid, lba, token);
    // Reads and writes carry their buffer, unless the input leaves it out;
    // a buffer on a request that needs none comes back all the same.
    if matches!(op, Op::Read | Op::Write { .. }) != (kind % 64 == 63) {
        r.buf = alloc(controller.min(controllers - 1), len);
    }
    r
}

/// Device events any script may play on controller `h`.
fn device_event(input: &mut Input<'_>, h: &EmuHandle, refused: &mut u8) {
    match input.u8() % 8 {
        0 => h.trigger_fatal(),
        1 => h.trigger_vanish(),
        2 => {
            h.add_fault(rule(input));
        }
        3 => h.clear_faults(),
        // A controller that cannot be reset (CSTS.RDY stays 1), for one
        // script step and once per run (a refused reset waits 2 × CAP.TO).
        4 if *refused == 0 => {
            h.set_ignores_disable(true);
            *refused = 2;
        }
        5 => h.set_quiesce_fails(input.u8() & 1 == 1),
        _ => {}
    }
}

/// Application-thread admin work on `ctrl`: a reset, or a command with a
/// caller buffer (which must come back safe to reuse).
fn admin(input: &mut Input<'_>, ctrl: &Controller<Dev>, pool: Option<&mut DmaPool>) {
    match input.u8() % 3 {
        0 => {
            let _ = ctrl.reset();
        }
        1 => {
            let _ = ctrl.smart_log();
        }
        _ => {
            let Some(pool) = pool else { return };
            let Ok(mut buf) = pool.alloc(4 * (1 + input.u16() as usize % 1024)) else {
                return;
            };
            let _ = ctrl.get_log_page(0xffff_ffff, LogId(1 + input.u8() % 3), &mut buf);
            assert!(pool.free(buf).is_ok(), "an admin buffer came back twice");
        }
    }
}

/// After a step with a controller refusing resets: let it take them again.
fn end_refusal(refused: &mut u8, emus: &[EmuHandle]) {
    if *refused == 2 {
        *refused = 1;
    } else if *refused == 1 {
        for h in emus {
            h.set_ignores_disable(false);
        }
        *refused = 3;
    }
}

/// Run one input. Panics only when the reactor breaks its promise.
pub fn run(data: &[u8]) -> Outcome {
    run_with(data, true)
}

/// [`run`], with threaded emulators only when `allow_threaded`.
pub fn run_with(data: &[u8], allow_threaded: bool) -> Outcome {
    let mut input = Input::new(data);
    let mut out = Outcome::default();
    let flags = input.u8();
    out.threaded = allow_threaded && flags & 0xe0 == 0xe0;
    out.direct = flags & 0x0c == 0x0c;
    let n_ctrl = if out.direct {
        1
    } else {
        1 + (flags & 1) as usize
    };
    let mut ctrls = Vec::new();
    let mut emus = Vec::new();
    for _ in 0..n_ctrl {
        let Some((c, h)) = controller(&mut input, out.threaded) else {
            return out;
        };
        ctrls.push(c);
        emus.push(h);
    }
    if out.direct {
        direct::run(&mut input, &ctrls[0], &emus, &mut out);
    } else {
        reactors(&mut input, flags, ctrls, &emus, &mut out);
    }
    for h in &emus {
        out.quiesced |= h.is_quiesced();
        assert_eq!(
            h.dma_faults(),
            0,
            "the host pointed the device outside its memory"
        );
    }
    out
}

/// The reactor-set script.
fn reactors(
    input: &mut Input<'_>,
    flags: u8,
    ctrls: Vec<Controller<Dev>>,
    emus: &[EmuHandle],
    out: &mut Outcome,
) {
    let Ok(allowed) = AllowedCores::current() else {
        return;
    };
    let cores = allowed.cores();
    let n = 1 + (flags >> 1 & 1) as usize;
    let mut cfg = ReactorConfig {
        cores: CoreSpec::from_cores((0..n).map(|i| cores[i % cores.len()])),
        idle_yield: true,
        ring_capacity: 1 + input.u8() as usize % 16,
        batch: 1 + input.u8() as usize % 8,
        queue_entries: Some(2 + input.u16() % 40),
        pool_bytes: 64 << 10,
        local_capacity: 4,
        producer_pool_bytes: 128 << 10,
        timeout_check: Duration::from_millis(1),
        ..ReactorConfig::default()
    };
    let needed = ctrls
        .iter()
        .map(|c| cfg.shutdown_wait_needed(c))
        .max()
        .unwrap_or_default();
    if flags & 0x10 != 0 {
        // An explicit wait, maybe too short for the timeouts.
        cfg.shutdown_timeout = Some(needed.mul_f64(input.u8() as f64 / 128.0));
    }
    let explicit = cfg.shutdown_timeout;
    let mut admin_pools: Vec<Option<DmaPool>> =
        ctrls.iter().map(|c| c.create_pool(64 << 10).ok()).collect();
    let set = match ReactorSet::start(cfg, ctrls) {
        Ok(set) => set,
        Err(ReactorError::ShutdownTooShort {
            shutdown_timeout, ..
        }) => {
            assert!(shutdown_timeout < needed, "a long enough wait was refused");
            out.wait_refused = true;
            return;
        }
        Err(_) => return,
    };
    if let Some(t) = explicit {
        assert!(
            t >= needed,
            "a wait of {t:?} was accepted; {needed:?} is needed"
        );
    }
    out.started = true;
    let mut producers: Vec<Option<Producer>> = Vec::new();
    for i in 0..1 + input.u8() % 2 {
        producers.push(set.producer(i as usize % n).ok());
    }
    // A poller doing reactor-local I/O on reactor 0, sometimes.
    let local = (input.u8() & 3 == 3).then(|| {
        let len = input.u8() as usize % 48;
        let local = Arc::new(Mutex::new(Local::new(input.take(len).to_vec())));
        let p = local::poller(Arc::clone(&local), emus.to_vec(), emus.len());
        set.add_local_poller(0, p).map(|()| local)
    });
    let local = local.and_then(Result::ok);
    let mut drained = false;
    let mut book = Book::default();
    let mut refused = 0u8;
    let mut set = Some(set);
    let mut steps = 0;
    while !input.done() && steps < 160 {
        steps += 1;
        let op = input.u8();
        let pi = input.u8() as usize % producers.len();
        end_refusal(&mut refused, emus);
        let Some(live) = set.as_ref() else { break };
        match op % 16 {
            0..=5 => {
                if let Some(p) = producers[pi].as_mut() {
                    submit(input, p, pi, emus.len(), &mut book, out);
                }
            }
            6 | 7 => {
                if let Some(p) = producers[pi].as_mut() {
                    poll(p, pi, emus, &mut book, out);
                }
            }
            8 if producers.len() < 4 => {
                producers.push(live.producer(input.u8() as usize % n).ok());
            }
            9 => {
                // Nobody will hear these answers; the reactor must cope.
                if producers[pi].take().is_some() {
                    let before = book.sent.len();
                    book.sent.retain(|_, s| s.owner != pi);
                    out.dropped_busy += (book.sent.len() < before) as u64;
                }
            }
            10 => {
                let ci = input.u8() as usize % emus.len();
                device_event(input, &emus[ci], &mut refused);
            }
            11 => {
                let ci = input.u8() as usize % emus.len();
                admin(input, &live.controllers()[ci], admin_pools[ci].as_mut());
            }
            12 => std::thread::sleep(Duration::from_millis(input.u8() as u64 % 4)),
            13 => {
                let _ = live.stats();
            }
            14 => {
                if let Some(set) = set.take() {
                    drained = stop(input, set, out);
                }
            }
            _ => {
                // A burst: fill the ring, then keep going (full, or closing).
                if let Some(p) = producers[pi].as_mut() {
                    for _ in 0..input.u8() % 24 {
                        let token = book.token();
                        let req = Request::flush(0, 1, token);
                        match p.try_submit(req) {
                            Ok(()) => book.accept(token, Sent::new(pi, 0, false), out),
                            Err(rej) => handed_back(p, rej.request, &rej.reason, token, out),
                        }
                    }
                }
            }
        }
    }
    // The end: maybe an honest device again, then shutdown, the bounded
    // one, or drop.
    end_refusal(&mut refused, emus);
    end_refusal(&mut refused, emus);
    if input.u8() & 1 == 1 {
        for h in emus {
            h.clear_faults();
        }
    }
    if let Some(set) = set.take() {
        drained = stop(input, set, out);
    }
    if let Some(local) = local {
        let l = local.lock().unwrap_or_else(|p| p.into_inner());
        assert!(l.broken.is_empty(), "reactor-local I/O: {:?}", l.broken);
        if drained {
            let owed: Vec<u64> = l.book.sent.keys().copied().collect();
            assert!(owed.is_empty(), "local requests never answered: {owed:?}");
        }
        out.local_accepted += l.out.accepted;
        out.accepted += l.out.accepted;
        out.succeeded += l.out.succeeded;
        out.failed += l.out.failed;
        out.handed_back += l.out.handed_back;
        out.held_checks += l.out.held_checks;
    }
    let deadline = Instant::now() + HANG;
    for (pi, p) in producers.iter_mut().enumerate() {
        let Some(p) = p else { continue };
        // After the reactors exited, the rings and what they left behind
        // hold every answer still owed.
        while poll(p, pi, emus, &mut book, out) > 0 {
            assert!(
                Instant::now() < deadline,
                "answers kept coming for {HANG:?}"
            );
        }
        assert_eq!(
            p.pool_bytes_in_use(),
            0,
            "a buffer of producer {pi} never came back"
        );
    }
    let owed: Vec<u64> = book.sent.keys().copied().collect();
    assert!(owed.is_empty(), "requests never answered: {owed:?}");
    for pool in admin_pools.iter().flatten() {
        assert_eq!(pool.used(), 0, "an admin buffer never came back");
    }
}

impl Sent {
    fn new(owner: usize, controller: usize, buf: bool) -> Self {
        Sent {
            owner,
            controller,
            buf,
        }
    }
}

/// Shutdown, `shutdown_within`, or drop, as the input says. True when the
/// reactors drained before they exited (a shutdown that did not give up),
/// so that local pollers had every answer handed to them.
fn stop(input: &mut Input<'_>, set: ReactorSet<Dev>, out: &mut Outcome) -> bool {
    let (report, bounded) = match input.u8() % 4 {
        0 | 1 => (set.shutdown(), false),
        2 => (
            set.shutdown_within(Duration::from_millis(input.u8() as u64 % 20)),
            true,
        ),
        _ => {
            drop(set);
            return false;
        }
    };
    let gave_up = report
        .reactors
        .iter()
        .any(|r| r.errors.iter().any(|e| e.contains("gave up")));
    for r in &report.reactors {
        assert!(
            !r.errors.iter().any(|e| e.contains("panicked")),
            "a reactor panicked: {report}"
        );
    }
    out.gave_up |= gave_up;
    !gave_up && !bounded
}

/// A request handed back must be the one submitted, buffer included.
fn handed_back(p: &mut Producer, req: Request, why: &ProducerError, token: u64, out: &mut Outcome) {
    assert_eq!(req.token, token, "another request came back: {why}");
    out.handed_back += 1;
    if let Some(buf) = req.buf {
        assert!(
            p.free(buf).is_ok(),
            "a handed-back buffer is not the producer's"
        );
    }
}

fn submit(
    input: &mut Input<'_>,
    p: &mut Producer,
    pi: usize,
    controllers: usize,
    book: &mut Book,
    out: &mut Outcome,
) {
    let token = book.token();
    let req = request(input, controllers, token, |c, len| p.alloc_for(c, len).ok());
    let sent = Sent::new(pi, req.controller, req.buf.is_some());
    match p.try_submit(req) {
        Ok(()) => book.accept(token, sent, out),
        Err(rej) => handed_back(p, rej.request, &rej.reason, token, out),
    }
}

/// Take every answer available now; returns how many.
fn poll(
    p: &mut Producer,
    pi: usize,
    emus: &[EmuHandle],
    book: &mut Book,
    out: &mut Outcome,
) -> usize {
    let mut got = Vec::new();
    let n = p.poll_completions(|r| got.push(r));
    for r in got {
        if let Some(buf) = book.answer(r, pi, emus, out) {
            assert!(
                p.free(buf).is_ok(),
                "an answered buffer is not the producer's"
            );
        }
    }
    n
}

mod direct;
mod local;
