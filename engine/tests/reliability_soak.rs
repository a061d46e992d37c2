//! Engine-level soak: several threads, each owning a queue pair over its own
//! LBA range, drive random reads and writes while the emulated controller
//! injects random faults (transient and permanent error statuses, delays,
//! lost, duplicate, stale and unknown completions) and the main thread
//! resets the controller in the middle. Afterwards every I/O completed
//! exactly once, every successful read matched a model of the last
//! successfully written pattern of each block (blocks whose write failed
//! become unknown), and every error is one a fault explains. Bounded by
//! operation count. The emulator runs inline on the host threads; the
//! threaded device is covered by the driver fault tests.

mod driver_common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use driver_common::*;
use nvme_emu::{EmuConfig, FaultAction, FaultRule};
use nvme_engine::spec::status::{generic, media};
use nvme_engine::spec::{
    command::NvmOpcode,
    status::{Status, StatusCodeType},
};
use nvme_engine::{ControllerOptions, IoError, QueuePairOptions};

const THREADS: u64 = 3;
const BLOCKS_PER_THREAD: u64 = 64;
const OPS_PER_THREAD: u64 = 600;
const DEPTH: usize = 8;
const BS: usize = 512;

/// What the model knows about one block.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Block {
    /// Last successful write used this seed (0: never written, zeros).
    Known(u64),
    /// A write failed or timed out: contents undefined.
    Unknown,
}

fn block_pattern(seed: u64) -> Vec<u8> {
    if seed == 0 {
        vec![0; BS]
    } else {
        pattern(seed, BS)
    }
}

struct Inflight {
    write: bool,
    lba: u64,
    blocks: u64,
    seed: u64,
}

fn transient() -> Status {
    Status::new(StatusCodeType::GENERIC, generic::INTERNAL_ERROR)
}
fn permanent() -> Status {
    Status::new(StatusCodeType::MEDIA, media::UNRECOVERED_READ_ERROR).with_dnr(true)
}

#[test]
fn every_io_completes_exactly_once_with_correct_data_under_random_faults_and_a_reset() {
    // Inline mode: the device runs on the host threads' doorbell writes, so
    // a command without a fault completes before any timeout scan can see
    // it in flight, and only lost or delayed completions can time out.
    let cfg = EmuConfig::ram(THREADS * BLOCKS_PER_THREAD * BS as u64);
    let opts = ControllerOptions::default().with_admin_timeout(Duration::from_millis(500));
    let (ctrl, h) = bring_up(cfg, opts);
    h.seed_faults(0xC0FFEE);
    let transient_id = h.add_fault(
        FaultRule::new(FaultAction::CompleteWithStatus(transient()))
            .io()
            .probability(0.05),
    );
    let permanent_id = h.add_fault(
        FaultRule::new(FaultAction::CompleteWithStatus(permanent()))
            .io()
            .opcode(NvmOpcode::READ.0)
            .probability(0.01),
    );
    let delay_id = h.add_fault(
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
    let lost_id = h.add_fault(
        FaultRule::new(FaultAction::NeverComplete)
            .io()
            .probability(0.005)
            .times(6),
    );
    // Every worker stops at half its operations with commands in flight
    // and waits, not polling, for the reset.
    let halfway = Arc::new(AtomicU64::new(0));
    let reset_done = Arc::new(AtomicBool::new(false));
    let ns = ctrl.namespace(1).unwrap().clone();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let ctrl = ctrl.clone();
            let h = h.clone();
            let ns = ns.clone();
            let halfway = Arc::clone(&halfway);
            let reset_done = Arc::clone(&reset_done);
            std::thread::spawn(move || {
                let mut qp = ctrl
                    .create_io_qpair(QueuePairOptions::default().with_entries(16))
                    .unwrap();
                // Lost completions time out quickly on the real clock; the
                // outcome does not depend on when.
                qp.set_timeout(Duration::from_millis(200));
                let mut pool = ctrl.create_pool(1 << 20).unwrap();
                let base = t * BLOCKS_PER_THREAD;
                let mut model = vec![Block::Known(0); BLOCKS_PER_THREAD as usize];
                let mut busy = vec![false; BLOCKS_PER_THREAD as usize];
                let mut inflight: HashMap<u64, Inflight> = HashMap::new();
                let mut completed: HashMap<u64, u32> = HashMap::new();
                let mut errors: HashMap<String, u64> = HashMap::new();
                let mut rng = 0x9E37_79B9u64 + t;
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let (mut submitted, mut token, mut verified) = (0u64, 0u64, 0u64);
                let start = Instant::now();
                let mut paused = false;
                while submitted < OPS_PER_THREAD || !inflight.is_empty() {
                    assert!(
                        start.elapsed() < Duration::from_secs(60),
                        "stuck: {:?}",
                        qp.stats()
                    );
                    while submitted < OPS_PER_THREAD && inflight.len() < DEPTH {
                        let blocks = 1 + next() % 4;
                        let lba = next() % (BLOCKS_PER_THREAD - blocks + 1);
                        let range = lba as usize..(lba + blocks) as usize;
                        if busy[range.clone()].iter().any(|&b| b) {
                            break;
                        }
                        let write = next() % 2 == 0;
                        token += 1;
                        let seed = (t << 32) | token;
                        let mut buf = pool.alloc(blocks as usize * BS).unwrap();
                        let r = if write {
                            for i in 0..blocks {
                                buf.write_at(i as usize * BS, &block_pattern(seed + i));
                            }
                            qp.write(&ns, base + lba, buf, next() % 4 == 0, token)
                        } else {
                            qp.read(&ns, base + lba, buf, token)
                        };
                        r.unwrap();
                        busy[range].iter_mut().for_each(|b| *b = true);
                        inflight.insert(
                            token,
                            Inflight {
                                write,
                                lba,
                                blocks,
                                seed,
                            },
                        );
                        submitted += 1;
                    }
                    qp.process_completions(usize::MAX, |c| {
                        *completed.entry(c.token).or_default() += 1;
                        let op = inflight
                            .remove(&c.token)
                            .expect("completion for a token in flight");
                        let range = op.lba as usize..(op.lba + op.blocks) as usize;
                        busy[range.clone()].iter_mut().for_each(|b| *b = false);
                        let buf = c.buf.expect("buffer returned");
                        match c.result {
                            Ok(_) if op.write => {
                                for i in 0..op.blocks {
                                    model[(op.lba + i) as usize] = Block::Known(op.seed + i);
                                }
                            }
                            Ok(_) => {
                                for (i, lba) in range.enumerate() {
                                    if let Block::Known(seed) = model[lba] {
                                        let mut got = vec![0u8; BS];
                                        buf.read_at(i * BS, &mut got);
                                        assert!(
                                            got == block_pattern(seed),
                                            "block {lba} of thread {t} holds wrong data"
                                        );
                                        verified += 1;
                                    }
                                }
                            }
                            Err(e) => {
                                if op.write {
                                    model[range].iter_mut().for_each(|b| *b = Block::Unknown);
                                }
                                let kind = match e {
                                    IoError::Status(s) if s == transient() => "transient",
                                    IoError::Status(s) if s == permanent() => "permanent",
                                    IoError::TimedOut(_) => "timeout",
                                    IoError::ControllerReset => "reset",
                                    other => panic!("error no fault explains: {other}"),
                                };
                                *errors.entry(kind.into()).or_default() += 1;
                            }
                        }
                        pool.free(buf).unwrap();
                    });
                    if submitted >= OPS_PER_THREAD / 2 && !paused {
                        paused = true;
                        qp.ring_doorbell();
                        halfway.fetch_add(1, Ordering::AcqRel);
                        while !reset_done.load(Ordering::Acquire) {
                            std::thread::yield_now();
                        }
                    }
                    // Advance delayed completions even when no doorbell moves.
                    h.poll();
                    qp.check_timeouts(Instant::now());
                }
                assert_eq!(completed.len() as u64, submitted);
                assert!(
                    completed.values().all(|&n| n == 1),
                    "a command completed twice"
                );
                assert_eq!(qp.outstanding(), 0);
                (qp, pool, model, errors, verified)
            })
        })
        .collect();
    let t0 = Instant::now();
    while halfway.load(Ordering::Acquire) < THREADS {
        assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::yield_now();
    }
    ctrl.reset().unwrap();
    reset_done.store(true, Ordering::Release);
    let mut results = Vec::new();
    for w in workers {
        results.push(w.join().expect("worker"));
    }
    // Timeouts may escalate to resets of their own; ours is one of them.
    assert!(ctrl.resets() >= 1);
    let (transient_hits, permanent_hits, lost_hits, delay_hits) = (
        h.fault_hits(transient_id),
        h.fault_hits(permanent_id),
        h.fault_hits(lost_id),
        h.fault_hits(delay_id),
    );
    h.clear_faults();
    // Check the models against the media with faults off.
    let mut total_errors: HashMap<String, u64> = HashMap::new();
    let mut resubmitted = 0;
    for (t, (mut qp, mut pool, model, errors, verified)) in results.into_iter().enumerate() {
        assert!(verified > 0);
        assert!(qp.stats().recreated >= 1, "{:?}", qp.stats());
        resubmitted += qp.stats().resubmitted;
        for (k, v) in errors {
            *total_errors.entry(k).or_default() += v;
        }
        let base = t as u64 * BLOCKS_PER_THREAD;
        let buf = pool.alloc(BLOCKS_PER_THREAD as usize * BS).unwrap();
        let buf = qp.read_sync(&ns, base, buf).unwrap();
        for (i, b) in model.iter().enumerate() {
            if let Block::Known(seed) = b {
                let mut got = vec![0u8; BS];
                buf.read_at(i * BS, &mut got);
                assert!(
                    got == block_pattern(*seed),
                    "final check: block {i} of thread {t}"
                );
            }
        }
    }
    assert!(resubmitted > 0, "commands were in flight at the reset");
    let count = |k: &str| total_errors.get(k).copied().unwrap_or(0);
    // Faults really fired, and every error is one of theirs: a permanent
    // error at most once per injection, a transient one only after four
    // failed submissions in a row, a timeout at most once per lost or
    // delayed completion (a delay is in device rounds, which a loaded
    // machine may stretch past the deadline).
    assert!(transient_hits > 20, "{transient_hits}");
    assert!(count("permanent") <= permanent_hits, "{total_errors:?}");
    assert!(count("transient") * 4 <= transient_hits, "{total_errors:?}");
    assert!(
        count("timeout") <= lost_hits + delay_hits,
        "{total_errors:?} lost {lost_hits} delayed {delay_hits}"
    );
    eprintln!(
        "soak: errors {total_errors:?}, hits transient {transient_hits} permanent \
         {permanent_hits} lost {lost_hits}, resets {}",
        ctrl.resets()
    );
}
