//! Reactor-level soak: three application threads drive random reads and
//! writes through two reactors over two emulated controllers while the
//! controllers inject random faults (error statuses with DNR clear and set,
//! delays, duplicate, stale and unknown-CID completions), lose commands
//! that must time out, and get reset from another thread in the middle.
//!
//! Afterwards every request was answered exactly once, every successful
//! read matched a per-block model (blocks whose write failed become
//! unknown), the media match the model, every error is one an injected
//! fault explains (bounded by the fault hit counts), and every producer
//! pool is back to zero bytes in use.
//!
//! Nothing depends on timing: the emulators run inline (a command without a
//! fault completes during the doorbell write that sends it), so only the
//! injected lost commands can time out; phases are sequenced by conditions,
//! not sleeps; the deadlines only turn a hang into a failure.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use nvme_emu::{EmuConfig, EmuController, EmuHandle, FaultAction, FaultId, FaultRule};
use nvme_engine::spec::status::Status;
use nvme_engine::{Controller, ControllerOptions, Health, IoError, QueuePairOptions};
use nvme_reactor::{PollStatus, Producer, ReactorSet, Request, RequestError};

const PRODUCERS: u64 = 3;
const CONTROLLERS: usize = 2;
const REACTORS: usize = 2;
/// Blocks each producer owns on each controller.
const BLOCKS: u64 = 64;
const OPS: u64 = 600;
const DEPTH: usize = 8;
const RETRY_LIMIT: u8 = 3;
const IO_TIMEOUT: Duration = Duration::from_millis(200);
/// Commands lost before the halfway point, per controller.
const LOST: u64 = 2;
/// Commands lost after it and caught in flight by the reset (or timed out
/// first), per controller.
const HELD: u64 = 2;

/// What the model knows about one block.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Block {
    /// The last successful write used this seed (0: never written, zeros).
    Known(u64),
    /// A write failed or timed out: contents undefined.
    Unknown,
}

fn block_bytes(seed: u64) -> Vec<u8> {
    if seed == 0 {
        vec![0; BLOCK]
    } else {
        (0..BLOCK).map(|i| pattern_byte(seed, i)).collect()
    }
}

struct Inflight {
    controller: usize,
    write: bool,
    lba: u64,
    blocks: u64,
    seed: u64,
}

struct Faults {
    transient: FaultId,
    permanent: FaultId,
    delay: FaultId,
    lost: FaultId,
}

fn transient() -> FaultAction {
    FaultAction::internal_error()
}
fn permanent() -> FaultAction {
    FaultAction::media_error()
}
fn status_of(a: FaultAction) -> Status {
    match a {
        FaultAction::CompleteWithStatus(s) => s,
        _ => unreachable!("a status action"),
    }
}

fn soak_controller(seed: u64) -> (Controller<EmuController>, EmuHandle, Faults) {
    let device = EmuController::new(EmuConfig::ram(PRODUCERS * BLOCKS * BLOCK as u64))
        .expect("emulated controller");
    let h = device.handle();
    let opts = ControllerOptions::default().with_admin_timeout(Duration::from_millis(500));
    let ctrl = Controller::new(device, opts).expect("bring-up");
    h.seed_faults(seed);
    let transient = h.add_fault(FaultRule::new(transient()).io().probability(0.05));
    let permanent = h.add_fault(FaultRule::new(permanent()).io().probability(0.01));
    let delay = h.add_fault(
        FaultRule::new(FaultAction::DelayPolls(4))
            .io()
            .probability(0.05),
    );
    h.add_fault(
        FaultRule::new(FaultAction::DuplicateCompletion)
            .io()
            .probability(0.02),
    );
    h.add_fault(
        FaultRule::new(FaultAction::StaleCompletion)
            .io()
            .probability(0.02),
    );
    h.add_fault(
        FaultRule::new(FaultAction::CompleteWithUnknownCid)
            .io()
            .probability(0.01),
    );
    // Deterministic: the 51st and 52nd I/O commands are lost.
    let lost = h.add_fault(
        FaultRule::new(FaultAction::NeverComplete)
            .io()
            .skip(50)
            .times(LOST),
    );
    (
        ctrl,
        h,
        Faults {
            transient,
            permanent,
            delay,
            lost,
        },
    )
}

/// Shared phase flags between the producers and the main thread.
#[derive(Default)]
struct Phases {
    paused: AtomicUsize,
    resume: AtomicBool,
}

/// What one producer thread hands back.
struct Outcome {
    producer: Producer,
    models: Vec<Vec<Block>>,
    errors: HashMap<&'static str, u64>,
    verified: u64,
    answered: u64,
}

fn classify(e: &RequestError) -> &'static str {
    match e {
        RequestError::Device(IoError::Status(s)) if *s == status_of(transient()) => "transient",
        RequestError::Device(IoError::Status(s)) if *s == status_of(permanent()) => "permanent",
        RequestError::TimedOut { timeout, .. } => {
            assert_eq!(*timeout, IO_TIMEOUT, "the configured deadline");
            "timeout"
        }
        RequestError::ControllerReset { .. } => "reset",
        other => panic!("an error no injected fault explains: {other}"),
    }
}

fn run_producer(t: u64, mut p: Producer, phases: &Phases) -> Outcome {
    let base = t * BLOCKS;
    let mut models = vec![vec![Block::Known(0); BLOCKS as usize]; CONTROLLERS];
    let mut busy = vec![vec![false; BLOCKS as usize]; CONTROLLERS];
    let mut inflight: HashMap<u64, Inflight> = HashMap::new();
    let mut answered: HashMap<u64, u32> = HashMap::new();
    let mut errors: HashMap<&'static str, u64> = HashMap::new();
    let mut rng = 0x2545_F491_4F6C_DD1Du64 ^ (t + 1).wrapping_mul(0x9E37_79B9);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut submitted, mut token, mut verified) = (0u64, 0u64, 0u64);
    let mut paused = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    while submitted < OPS || !inflight.is_empty() {
        assert!(Instant::now() < deadline, "producer {t} stuck: {p:?}");
        let halfway = submitted >= OPS / 2 && !phases.resume.load(Ordering::Acquire);
        if halfway && inflight.is_empty() && !paused {
            paused = true;
            phases.paused.fetch_add(1, Ordering::AcqRel);
        }
        while !halfway && submitted < OPS && inflight.len() < DEPTH {
            let c = (next() % CONTROLLERS as u64) as usize;
            let blocks = 1 + next() % 4;
            let lba = next() % (BLOCKS - blocks + 1);
            let range = lba as usize..(lba + blocks) as usize;
            // Never two requests in flight on the same blocks.
            if busy[c][range.clone()].iter().any(|&b| b) {
                break;
            }
            let write = next() % 2 == 0;
            token += 1;
            let seed = (t + 1) << 40 | token << 8;
            let mut buf = p.alloc_for(c, blocks as usize * BLOCK).expect("pool");
            let req = if write {
                for i in 0..blocks {
                    assert!(buf.write_at(i as usize * BLOCK, &block_bytes(seed + i)));
                }
                Request::write(c, 1, base + lba, buf, next() % 4 == 0, token)
            } else {
                Request::read(c, 1, base + lba, buf, token)
            };
            if let Err(rejected) = p.try_submit(req) {
                // Ring full: take the buffer back and try again later.
                token -= 1;
                p.free(rejected.request.buf.expect("buffer")).expect("free");
                break;
            }
            busy[c][range].iter_mut().for_each(|b| *b = true);
            inflight.insert(
                token,
                Inflight {
                    controller: c,
                    write,
                    lba,
                    blocks,
                    seed,
                },
            );
            submitted += 1;
        }
        let mut freed = Vec::new();
        p.poll_completions(|r| {
            *answered.entry(r.token).or_default() += 1;
            let op = inflight
                .remove(&r.token)
                .expect("a response for a request in flight");
            let c = op.controller;
            let range = op.lba as usize..(op.lba + op.blocks) as usize;
            busy[c][range.clone()].iter_mut().for_each(|b| *b = false);
            let buf = r.buf.expect("buffer returned");
            match &r.result {
                Ok(_) if op.write => {
                    for i in 0..op.blocks {
                        models[c][(op.lba + i) as usize] = Block::Known(op.seed + i);
                    }
                }
                Ok(_) => {
                    for (i, lba) in range.enumerate() {
                        if let Block::Known(seed) = models[c][lba] {
                            let mut got = vec![0u8; BLOCK];
                            assert!(buf.read_at(i * BLOCK, &mut got));
                            assert!(
                                got == block_bytes(seed),
                                "controller {c} block {} of producer {t} holds wrong data",
                                base + lba as u64
                            );
                            verified += 1;
                        }
                    }
                }
                Err(e) => {
                    assert!(e.outcome_unknown() && !e.controller_unusable(), "{e}");
                    if op.write {
                        models[c][range]
                            .iter_mut()
                            .for_each(|b| *b = Block::Unknown);
                    }
                    *errors.entry(classify(e)).or_default() += 1;
                }
            }
            freed.push(buf);
        });
        for buf in freed {
            p.free(buf).expect("free");
        }
        if paused {
            while !phases.resume.load(Ordering::Acquire) {
                assert!(Instant::now() < deadline, "never resumed");
                std::thread::yield_now();
            }
            paused = false;
        }
        std::thread::yield_now();
    }
    assert_eq!(answered.len() as u64, submitted, "every request answered");
    assert!(
        answered.values().all(|&n| n == 1),
        "a request was answered twice"
    );
    Outcome {
        producer: p,
        models,
        errors,
        verified,
        answered: submitted,
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within 60 s");
        std::thread::yield_now();
    }
}

#[test]
fn every_request_is_answered_once_with_correct_data_under_faults_timeouts_and_a_reset() {
    let started = Instant::now();
    let mut ctrls = Vec::new();
    let mut handles = Vec::new();
    let mut faults = Vec::new();
    for c in 0..CONTROLLERS {
        let (ctrl, h, f) = soak_controller(0xC0FFEE + c as u64);
        ctrls.push(ctrl);
        handles.push(h);
        faults.push(f);
    }
    let mut cfg = config(REACTORS);
    cfg.io_timeout = Some(IO_TIMEOUT);
    cfg.io_retry_limit = Some(RETRY_LIMIT);
    cfg.timeout_check = Duration::from_millis(2);
    let set = ReactorSet::start(cfg, ctrls.clone()).expect("start");
    // Inline emulators advance delayed completions on device rounds: each
    // reactor runs one per turn.
    for r in 0..REACTORS {
        let hs = handles.clone();
        set.add_poller(
            r,
            Box::new(move || {
                let n: usize = hs.iter().map(|h| h.poll()).sum();
                if n > 0 {
                    PollStatus::Busy
                } else {
                    PollStatus::Idle
                }
            }),
        )
        .expect("poller");
    }
    let phases = Arc::new(Phases::default());
    let workers: Vec<_> = (0..PRODUCERS)
        .map(|t| {
            let p = set.producer(t as usize % REACTORS).expect("producer");
            let phases = Arc::clone(&phases);
            std::thread::spawn(move || run_producer(t, p, &phases))
        })
        .collect();

    // Phase 1 ends with every producer paused at half its requests with
    // nothing in flight: the lost commands have timed out and were answered.
    wait_until("producers pausing", || {
        phases.paused.load(Ordering::Acquire) == PRODUCERS as usize
    });
    for (h, f) in handles.iter().zip(&faults) {
        assert_eq!(h.fault_hits(f.lost), LOST, "lost commands fired");
    }
    let timeouts_so_far: u64 = set
        .stats()
        .expect("stats")
        .iter()
        .map(|s| s.timed_out)
        .sum();
    // Only a timeout can resolve a lost command first (the driver resets a
    // controller only to recover timed-out ones).
    assert!(timeouts_so_far >= 1, "lost commands time out");

    // Phase 2: hold a few commands, then reset both controllers from this
    // thread while they are in flight (unless they time out first).
    let held: Vec<_> = handles
        .iter()
        .map(|h| h.add_fault(FaultRule::new(FaultAction::NeverComplete).io().times(HELD)))
        .collect();
    phases.resume.store(true, Ordering::Release);
    wait_until("held commands", || {
        handles
            .iter()
            .zip(&held)
            .all(|(h, &id)| h.fault_hits(id) == HELD)
    });
    for c in set.controllers() {
        c.reset().expect("reset");
    }

    let outcomes: Vec<Outcome> = workers
        .into_iter()
        .map(|w| w.join().expect("producer thread"))
        .collect();
    let stats = set.stats().expect("stats");
    let report = set.shutdown();
    let elapsed = started.elapsed();

    // The reactors' view adds up with the producers'.
    let answered: u64 = outcomes.iter().map(|o| o.answered).sum();
    assert_eq!(answered, PRODUCERS * OPS);
    assert_eq!(report.completed(), answered, "{report}");
    assert!(
        report.reactors.iter().all(|r| r.errors.is_empty()),
        "{report}"
    );
    assert!(
        report.controllers.iter().all(|c| c.health == Health::Live),
        "{report}"
    );
    let resets: u64 = report.controllers.iter().map(|c| c.resets).sum();
    assert!(resets >= CONTROLLERS as u64, "{report}");
    let sum = |f: fn(&nvme_reactor::ReactorStats) -> u64| stats.iter().map(f).sum::<u64>();
    assert!(sum(|s| s.queues.duplicate_completions) > 0);
    // An invented CID usually names a slot with another generation, which
    // the driver counts as stale.
    assert!(sum(|s| s.queues.stale_completions + s.queues.unknown_completions) > 0);
    assert!(sum(|s| s.queues.retries) > 0);
    assert!(sum(|s| s.timeout_checks) > 0);
    // Each lost or held command either timed out or was resubmitted after
    // the reset (the driver counts both).
    assert!(
        sum(|s| s.queues.timeouts) + sum(|s| s.queues.resubmitted)
            >= (LOST + HELD) * CONTROLLERS as u64,
        "{stats:?}"
    );

    // Errors only where faults were injected, bounded by their hit counts.
    let mut errors: HashMap<&str, u64> = HashMap::new();
    for o in &outcomes {
        for (k, v) in &o.errors {
            *errors.entry(k).or_default() += v;
        }
    }
    let count = |k: &str| errors.get(k).copied().unwrap_or(0);
    let hits = |id: fn(&Faults) -> FaultId| -> u64 {
        handles
            .iter()
            .zip(&faults)
            .map(|(h, f)| h.fault_hits(id(f)))
            .sum()
    };
    let held_hits: u64 = handles
        .iter()
        .zip(&held)
        .map(|(h, &id)| h.fault_hits(id))
        .sum();
    let (transient_hits, permanent_hits, delay_hits, lost_hits) = (
        hits(|f| f.transient),
        hits(|f| f.permanent),
        hits(|f| f.delay),
        hits(|f| f.lost),
    );
    assert!(transient_hits > 20, "{transient_hits}");
    // A transient status is delivered only after RETRY_LIMIT retries.
    assert!(
        count("transient") * (RETRY_LIMIT as u64 + 1) <= transient_hits,
        "{errors:?} transient hits {transient_hits}"
    );
    assert!(count("permanent") <= permanent_hits, "{errors:?}");
    assert!(
        count("timeout") <= lost_hits + held_hits + delay_hits,
        "{errors:?} lost {lost_hits} held {held_hits} delayed {delay_hits}"
    );
    assert!(count("timeout") >= 1, "{errors:?}");
    // Reset errors: only commands in flight at a reset, out of retries.
    let capacity = (REACTORS * CONTROLLERS * 15) as u64;
    assert!(count("reset") <= resets * capacity, "{errors:?}");
    assert_eq!(
        report.failed(),
        errors.values().sum::<u64>(),
        "reactor and producers agree on failures: {report}"
    );
    assert_eq!(report.timed_out(), count("timeout"));

    // No buffer lost.
    for o in &outcomes {
        assert!(o.verified > 0);
        assert_eq!(
            o.producer.pool_bytes_in_use(),
            0,
            "a producer buffer was lost"
        );
    }

    // The media agree with the models (faults off).
    for h in &handles {
        h.clear_faults();
    }
    for (c, ctrl) in ctrls.iter().enumerate() {
        let mut qp = ctrl
            .create_io_qpair(QueuePairOptions::default().with_entries(16))
            .expect("queue pair");
        let mut pool = ctrl.create_pool(1 << 20).expect("pool");
        let ns = ctrl.namespace(1).expect("namespace").clone();
        for (t, o) in outcomes.iter().enumerate() {
            let buf = pool.alloc(BLOCKS as usize * BLOCK).expect("buffer");
            let buf = qp
                .read_sync(&ns, t as u64 * BLOCKS, buf)
                .expect("final read");
            for (i, b) in o.models[c].iter().enumerate() {
                if let Block::Known(seed) = b {
                    let mut got = vec![0u8; BLOCK];
                    assert!(buf.read_at(i * BLOCK, &mut got));
                    assert!(
                        got == block_bytes(*seed),
                        "final check: controller {c}, producer {t}, block {i}"
                    );
                }
            }
            pool.free(buf).expect("free");
        }
        qp.delete().expect("delete");
    }
    eprintln!(
        "reactor soak: {answered} requests in {elapsed:?}, errors {errors:?}, hits transient \
         {transient_hits} permanent {permanent_hits} delay {delay_hits} lost {lost_hits} held \
         {held_hits}, resets {resets}"
    );
}
