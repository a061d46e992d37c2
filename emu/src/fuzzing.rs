//! Fuzzing harness: the driver against a device the input controls.
//!
//! Built only with the `fuzzing` cargo feature; not part of the supported
//! API. [`run`] builds an emulated controller (inline, or threaded with its
//! own device thread) with one to three namespaces, whose Identify data,
//! claimed namespace count (up to NN = 0xFFFFFFFF with an endless active
//! list), fault rules (every [`FaultAction`]), recovery behaviour and
//! register reads come from the input. It brings the driver up on it and
//! plays a script over up to three I/O queue pairs: reads and writes on any
//! namespace, polling, raw completion entries with arbitrary CID/SQ head/SQ
//! id/status, timeout scans with a synthetic clock, resets in the middle of
//! I/O, fatal status, removal, admin commands with caller buffers (Get Log
//! Page, raw Identify), and deletion of a queue pair with I/O outstanding.
//!
//! It checks the driver's promise: no panic, every submitted command
//! completes at most once, every refused or completed command gives its
//! buffer back, a deleted queue pair answers everything it held, memory
//! outside every buffer is never written, and once the device is honest
//! again every command completes. Loops are bounded by the input length;
//! waits are bounded by short admin timeouts.
//!
//! Used by the `cargo fuzz` crate in `fuzz/` and by a seeded stable test.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{EmuConfig, EmuController, EmuHandle, EmuMode, EmuNamespaceConfig};
use crate::{FaultAction, FaultRule};
use nvme_engine::Device;
use nvme_engine::dma::{DmaBuf, DmaPool};
use nvme_engine::dma::{DmaError, DmaRegion, HostMemory};
use nvme_engine::spec::command::cns;
use nvme_engine::spec::command::{AdminOpcode, Command};
use nvme_engine::spec::log::LogId;
use nvme_engine::spec::registers::{ALL_ONES, offset};
use nvme_engine::spec::{
    completion::Completion,
    status::{Status, StatusCodeType},
};
use nvme_engine::{Controller, ControllerOptions, IoCompletion, IoQueuePair, QueuePairOptions};

/// Reads values from the fuzz input; zeros once it is exhausted.
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    /// Read `data` from its start.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data, pos: 0 }
    }
    /// How many bytes were read (past the end too).
    pub fn consumed(&self) -> usize {
        self.pos
    }
    /// Whether every byte was read.
    pub fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    /// The next two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    /// The next four bytes, little-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    /// The next eight bytes, little-endian.
    pub fn u64(&mut self) -> u64 {
        self.u32() as u64 | (self.u32() as u64) << 32
    }
    /// The next `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = (start + n).min(self.data.len());
        self.pos += n;
        &self.data[start..end]
    }
}

/// An emulated controller whose register reads pass through a hook, which
/// gets the offset and the true value and returns what the host reads: a
/// device that lies in its registers. Everything else is the emulator's.
/// Used by the harnesses here and in `nvme-reactor`, and by the
/// regression tests of what they found.
pub struct Rewired {
    emu: EmuController,
    hook: Box<dyn Fn(usize, u32) -> u32 + Send + Sync>,
}

impl Rewired {
    /// `emu`, with every register read passed through `hook(offset, value)`.
    pub fn new(
        emu: EmuController,
        hook: impl Fn(usize, u32) -> u32 + Send + Sync + 'static,
    ) -> Self {
        Rewired {
            emu,
            hook: Box::new(hook),
        }
    }
    /// The emulated controller underneath.
    pub fn emu(&self) -> &EmuController {
        &self.emu
    }
}

impl Device for Rewired {
    fn read32(&self, off: usize) -> u32 {
        (self.hook)(off, self.emu.read32(off))
    }
    fn write32(&self, off: usize, value: u32) {
        self.emu.write32(off, value)
    }
    fn map_dma(&self, memory: HostMemory) -> Result<DmaRegion, DmaError> {
        self.emu.map_dma(memory)
    }
    fn allows_plain_memory(&self) -> bool {
        true
    }
    fn name(&self) -> String {
        self.emu.name()
    }
    fn quiesce(&self) -> Result<(), nvme_engine::QuiesceError> {
        self.emu.quiesce()
    }
}

/// A register read with CAP.TO cut to 500 ms (its unit): a reset the
/// device refuses then costs half a second, not the emulator's 5 s.
pub fn short_ready_timeout(off: usize, value: u32) -> u32 {
    if off == offset::CAP && value != ALL_ONES {
        (value & !(0xff << 24)) | 1 << 24
    } else {
        value
    }
}

/// The register lies of one run.
struct Lies {
    /// CSTS reads are true while set: the emulator is refusing CC.EN = 0,
    /// and a lie of CSTS.RDY = 0 on top would be a controller claiming to
    /// have stopped while it runs on, which no driver can detect.
    honest_csts: AtomicBool,
    /// Bytes deciding, per register read, whether to lie and with what.
    script: Mutex<(Vec<u8>, usize)>,
}

impl Lies {
    fn lie(&self) -> Option<u32> {
        let mut s = self.script.lock().unwrap_or_else(|p| p.into_inner());
        let (bytes, pos) = &mut *s;
        let b = *bytes.get(*pos)?;
        *pos += 1;
        match b {
            0..=15 => {
                let v = bytes.get(*pos..*pos + 4)?;
                let v = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                *pos += 4;
                Some(v)
            }
            16 => Some(ALL_ONES),
            _ => None,
        }
    }

    fn read(&self, off: usize, real: u32) -> u32 {
        let real = short_ready_timeout(off, real);
        let honest = off == offset::CSTS && self.honest_csts.load(Ordering::SeqCst);
        if off < offset::DOORBELLS && !honest {
            self.lie().unwrap_or(real)
        } else {
            real
        }
    }
}

/// An error status for a fault rule. Never Successful Completion: a device
/// that reports success for a command it did not carry out (a Delete I/O
/// CQ it ignores, then keeps writing that CQ) cannot be told from an honest
/// one by any driver, so it is outside what the harness checks.
fn status(input: &mut Input<'_>) -> Status {
    let sct = [
        StatusCodeType::GENERIC,
        StatusCodeType::COMMAND_SPECIFIC,
        StatusCodeType::MEDIA,
        StatusCodeType::PATH,
    ][input.u8() as usize % 4];
    let sc = match input.u8() {
        0 if sct == StatusCodeType::GENERIC => nvme_engine::spec::status::generic::INTERNAL_ERROR,
        sc => sc,
    };
    Status::new(sct, sc).with_dnr(input.u8() & 1 == 1)
}

/// A fault rule of any kind the emulator has, never reporting success for
/// a command it did not carry out (see [`status`]).
pub fn rule(input: &mut Input<'_>) -> FaultRule {
    let action = match input.u8() % 10 {
        0 => FaultAction::CompleteWithStatus(status(input)),
        1 => FaultAction::DuplicateCompletion,
        2 => FaultAction::CompleteWithUnknownCid,
        3 => FaultAction::StaleCompletion,
        4 => FaultAction::NeverComplete,
        5 => FaultAction::DelayPolls(input.u8() as u32 % 8),
        6 => FaultAction::BogusSqhd,
        7 => FaultAction::FatalStatus,
        8 => FaultAction::Vanish,
        _ => FaultAction::CompleteWithStatus(status(input)),
    };
    let mut r = FaultRule::new(action);
    r = match input.u8() % 4 {
        0 => r.admin(),
        1 | 2 => r.io(),
        _ => r,
    };
    if input.u8() & 1 == 1 {
        r = r.opcode(input.u8() % 3);
    }
    r.skip(input.u8() as u64 % 8)
        .times(1 + input.u8() as u64 % 4)
        .probability((input.u8() as f64) / 255.0)
}

/// `n` inputs of `min + r % spread` random bytes each, from a xorshift
/// generator seeded with `seed`: what the stable tests feed the harnesses
/// in place of a fuzzer, the same on every run.
pub fn seeded_inputs(
    seed: u64,
    n: usize,
    min: usize,
    spread: u64,
) -> impl Iterator<Item = Vec<u8>> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n).map(move |_| {
        let len = min + (next() % spread) as usize;
        (0..len).map(|_| next() as u8).collect()
    })
}

/// What one run did (for the stable test's coverage checks).
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    /// The driver brought the controller up.
    pub brought_up: bool,
    /// Commands submitted.
    pub submitted: u64,
    /// Commands completed successfully.
    pub succeeded: u64,
    /// Commands completed with an error.
    pub failed: u64,
    /// Queue pairs deleted with commands outstanding.
    pub deleted_busy: u64,
    /// Admin commands with a caller buffer that completed.
    pub admin_buffers: u64,
    /// Usable namespaces found.
    pub namespaces: usize,
    /// The emulator ran its own device thread.
    pub threaded: bool,
    /// The driver quiesced the device (a reset it could not complete).
    pub quiesced: bool,
    /// Bytes of buffers handed back quarantined.
    pub quarantined: usize,
}

/// Per-command bookkeeping: completions seen, whether it carries a buffer,
/// and the queue pair it went to.
#[derive(Clone, Copy)]
struct Entry {
    seen: u32,
    buf: bool,
    qp: usize,
}

struct Book {
    entries: HashMap<u64, Entry>,
    next: u64,
}

impl Book {
    fn record(&mut self, c: IoCompletion, out: &mut Outcome, pool: &mut DmaPool) {
        let e = self
            .entries
            .get_mut(&c.token)
            .expect("completion for a token never submitted");
        e.seen += 1;
        assert_eq!(e.seen, 1, "command {} completed twice", c.token);
        assert_eq!(
            c.buf.is_some(),
            e.buf,
            "command {} lost or gained a buffer",
            c.token
        );
        if c.result.is_ok() {
            out.succeeded += 1;
        } else {
            out.failed += 1;
        }
        if let Some(b) = c.buf {
            give_back(pool, b);
        }
    }
}

/// Return a buffer to its pool (a quarantined one is kept out of reuse by
/// the pool itself).
fn give_back(pool: &mut DmaPool, b: DmaBuf) {
    assert!(
        pool.free(b).is_ok(),
        "a buffer came back twice or to the wrong pool"
    );
}

fn config(input: &mut Input<'_>, allow_threaded: bool) -> EmuConfig {
    let flags = input.u8();
    let mut cfg = EmuConfig::ram(256 << 10).without_namespaces();
    for i in 0..1 + flags % 3 {
        let lba = if (flags >> (2 + i)) & 1 == 1 {
            4096
        } else {
            512
        };
        cfg = cfg.namespace(EmuNamespaceConfig::ram(lba, (128u64 << 10) / lba as u64));
    }
    if allow_threaded && flags & 0xe0 == 0xe0 {
        cfg = cfg.mode(EmuMode::threaded_cooperative());
    }
    cfg.mdts = 1 + input.u8() % 10;
    cfg.max_queue_entries = 2 + input.u8() as u32 % 63;
    cfg.io_queues = 1 + input.u8() as u16 % 3;
    cfg
}

/// A hostile namespace count, sometimes.
fn claim(input: &mut Input<'_>, h: &EmuHandle) {
    match input.u8() {
        0..=199 => {}
        200..=239 => h.claim_namespaces(1 + input.u8() as u32 * 8),
        240..=249 => h.claim_namespaces(1024 * (1 + input.u8() as u32 % 4)),
        _ => h.claim_namespaces(u32::MAX - input.u8() as u32),
    }
}

/// Let a controller that refused resets take them again, and its CSTS lie
/// again. A reset the admin worker started meanwhile (a stall check that
/// read fatal status, say) may still be waiting for CSTS.RDY = 0 after a
/// CC.EN = 0 the controller ignored: it must end first, on true reads.
/// Otherwise a lie of RDY = 0 would end it, and the driver would take a
/// controller that never stopped for a reset one — the lie no driver can
/// detect (out of scope: `fuzz/README.md`, "What counts as a crash").
/// Stall checks that read a lying CSTS start such resets without the
/// harness waiting for them.
fn end_stuck_phase(ctrl: &Controller<Rewired>, h: &EmuHandle, lies: &Lies) {
    let _ = ctrl.wait_for_admin_work(Duration::from_secs(60));
    h.set_ignores_disable(false);
    lies.honest_csts.store(false, Ordering::SeqCst);
}

/// Run one input. Panics only when the driver breaks its promise.
pub fn run(data: &[u8]) -> Outcome {
    run_with(data, true)
}

/// [`run`], with the threaded emulator only when `allow_threaded` (its runs
/// wait out real admin timeouts, so a stable test keeps them few).
pub fn run_with(data: &[u8], allow_threaded: bool) -> Outcome {
    let mut input = Input::new(data);
    let mut out = Outcome::default();
    let cfg = config(&mut input, allow_threaded);
    out.threaded = !matches!(cfg.mode, EmuMode::Inline);
    let Ok(emu) = EmuController::new(cfg) else {
        return out;
    };
    let h: EmuHandle = emu.handle();
    h.seed_faults(input.u64());
    claim(&mut input, &h);
    for _ in 0..input.u8() % 4 {
        h.patch_identify_controller(input.u16() as usize, input.u8());
    }
    for _ in 0..input.u8() % 3 {
        h.patch_identify_namespace(1 + input.u8() as u32 % 3, input.u16() as usize, input.u8());
    }
    for _ in 0..input.u8() % 4 {
        h.add_fault(rule(&mut input));
    }
    h.set_vanish_recovers_on_reset(input.u8() & 1 == 1);
    h.set_fatal_survives_reset(input.u8() & 3 == 3);
    let script_len = input.u8() as usize % 64;
    let script = input.take(script_len).to_vec();
    let lies = Arc::new(Lies {
        honest_csts: AtomicBool::new(false),
        script: Mutex::new((script, 0)),
    });
    let device = {
        let lies = Arc::clone(&lies);
        Rewired::new(emu, move |off, value| lies.read(off, value))
    };
    // Off by default; the shadow paths are fuzzed too.
    let opts = ControllerOptions::default()
        .with_admin_queue_entries(2 + input.u8() as u16 % 16)
        .with_io_queues(3)
        .with_admin_timeout(Duration::from_millis(if out.threaded { 200 } else { 2 }))
        .with_io_timeout(Duration::from_secs(30))
        .with_max_transfer_bytes([4096, 8192, 64 << 10, 2 << 20][input.u8() as usize % 4])
        .with_shadow_doorbells(true);
    let Ok(ctrl) = Controller::new(device, opts) else {
        return out;
    };
    out.brought_up = true;
    out.namespaces = ctrl.namespaces().len();
    let entries = 2 + input.u8() as u16 % 32;
    let qp_opts = QueuePairOptions::default().with_entries(entries);
    let mut qps: Vec<Option<IoQueuePair<Rewired>>> = Vec::new();
    for _ in 0..1 + input.u8() % 3 {
        qps.push(ctrl.create_io_qpair(qp_opts).ok());
    }
    if qps.iter().all(Option::is_none) {
        return out;
    }
    let Ok(mut pool) = ctrl.create_pool(1 << 20) else {
        return out;
    };
    let nss = ctrl.namespaces().to_vec();
    // Never handed to the device: must still hold its pattern at the end.
    let Ok(mut canary) = pool.alloc(8192) else {
        return out;
    };
    canary.fill(0xA5);
    let mut now = Instant::now();
    let mut book = Book {
        entries: HashMap::new(),
        next: 0,
    };
    let mut ops = 0;
    let (mut stuck_budget, mut stuck_phase) = (2u8, 0u8);
    while !input.done() && ops < 256 {
        ops += 1;
        let op = input.u8();
        // The stuck controller lasts for the one operation after the one
        // that asked for it, whatever that operation does.
        match stuck_phase {
            1 => stuck_phase = 2,
            2 => {
                end_stuck_phase(&ctrl, &h, &lies);
                stuck_phase = 0;
            }
            _ => {}
        }
        let qi = input.u8() as usize % qps.len();
        match op % 14 {
            0..=3 => {
                let Some(qp) = qps[qi].as_mut() else { continue };
                if nss.is_empty() {
                    continue;
                }
                let ns = &nss[input.u8() as usize % nss.len()];
                let blocks = 1 + input.u8() as usize % 8;
                let lba = input.u16() as u64 % ns.blocks().max(1);
                let Ok(buf) = pool.alloc(blocks * ns.block_size() as usize) else {
                    continue;
                };
                let token = book.next;
                book.next += 1;
                let r = if op & 1 == 0 {
                    qp.read(ns, lba, buf, token)
                } else {
                    qp.write(ns, lba, buf, op & 2 == 2, token)
                };
                match r {
                    Ok(()) => {
                        book.entries.insert(
                            token,
                            Entry {
                                seen: 0,
                                buf: true,
                                qp: qi,
                            },
                        );
                        out.submitted += 1;
                    }
                    Err(e) => {
                        let buf = e.buf.expect("a refused command returns its buffer");
                        give_back(&mut pool, buf);
                    }
                }
            }
            4 => {
                let Some(qp) = qps[qi].as_mut() else { continue };
                let Some(ns) = nss.first() else { continue };
                let token = book.next;
                book.next += 1;
                if qp.flush(ns, token).is_ok() {
                    book.entries.insert(
                        token,
                        Entry {
                            seen: 0,
                            buf: false,
                            qp: qi,
                        },
                    );
                    out.submitted += 1;
                }
            }
            5 | 6 => {
                let Some(qp) = qps[qi].as_mut() else { continue };
                qp.process_completions(usize::MAX, |c| book.record(c, &mut out, &mut pool));
            }
            7 => {
                let c = Completion {
                    dw0: input.u32(),
                    dw1: input.u32(),
                    sqhd: input.u16(),
                    sqid: input.u16(),
                    cid: input.u16(),
                    status_phase: input.u16(),
                };
                h.inject_completion(input.u8() as u16 % 4, c);
            }
            8 => {
                now += Duration::from_millis(input.u16() as u64 * 10);
                if let Some(qp) = qps[qi].as_mut() {
                    qp.check_timeouts(now);
                    // Aborts and resets run on the admin worker: wait for
                    // them so a seed replays the same way.
                    let _ = ctrl.wait_for_admin_work(Duration::from_secs(60));
                }
            }
            9 => {
                h.poll();
            }
            10 => match input.u8() % 8 {
                0 => {
                    let _ = ctrl.reset();
                }
                1 => h.trigger_fatal(),
                2 => h.trigger_vanish(),
                3 => {
                    let _ = ctrl.smart_log();
                }
                // A controller that cannot be reset (CSTS.RDY stays 1), for
                // the next operation only and twice per run at most (each
                // refused reset waits CAP.TO); and a transport that cannot
                // quiesce it.
                4 if stuck_budget > 0 => {
                    stuck_budget -= 1;
                    h.set_ignores_disable(true);
                    lies.honest_csts.store(true, Ordering::SeqCst);
                    stuck_phase = 1;
                }
                5 => h.set_quiesce_fails(input.u8() & 1 == 1),
                _ => {}
            },
            11 => {
                // An admin command with a caller buffer.
                let len = 4 * (1 + input.u16() as usize % 2048);
                let Ok(mut buf) = pool.alloc(len) else {
                    continue;
                };
                let r = if input.u8() & 1 == 0 {
                    ctrl.get_log_page(0xffff_ffff, LogId(1 + input.u8() % 3), &mut buf)
                } else {
                    let mut cmd = Command::new(AdminOpcode::IDENTIFY.0, input.u32() % 4);
                    cmd.cdw10 = [cns::CONTROLLER, cns::NAMESPACE, cns::ACTIVE_NAMESPACES]
                        [input.u8() as usize % 3] as u32;
                    ctrl.admin_command(cmd, Some(&mut buf)).map(|_| ())
                };
                if r.is_ok() {
                    out.admin_buffers += 1;
                }
                give_back(&mut pool, buf);
            }
            12 => {
                // Delete a queue pair with whatever it holds, then replace it.
                let Some(qp) = qps[qi].take() else {
                    qps[qi] = ctrl.create_io_qpair(qp_opts).ok();
                    continue;
                };
                if qp.outstanding() > 0 {
                    out.deleted_busy += 1;
                }
                // Deleted or not, every command it held is answered once.
                let _ = qp.delete_with(|c| book.record(c, &mut out, &mut pool));
                assert!(
                    book.entries
                        .values()
                        .filter(|e| e.qp == qi)
                        .all(|e| e.seen == 1),
                    "a deleted queue pair did not answer every command it held"
                );
                book.entries.retain(|_, e| e.qp != qi);
                qps[qi] = ctrl.create_io_qpair(qp_opts).ok();
            }
            _ => {
                if let Some(qp) = qps[qi].as_mut() {
                    qp.ring_doorbell();
                }
            }
        }
    }
    // The device becomes honest: no more faults, register reads true. Every
    // command must now complete within a bounded number of rounds.
    h.clear_faults();
    if stuck_phase != 0 {
        end_stuck_phase(&ctrl, &h, &lies);
    }
    // A queue pair re-creates its queues after a reset only when the admin
    // lock is free (a polling thread never waits for admin work), and the
    // admin worker takes that lock for its event poll. 64 rounds take well
    // under a millisecond: on a loaded machine the worker, descheduled while
    // it holds the lock, can outlast all of them. So the queue pairs of a
    // live inline controller also get real time (1 ms between rounds, 10 s
    // at most) before a command counts as stuck.
    let patience = Instant::now() + Duration::from_secs(10);
    for round in 0u32.. {
        if qps.iter().flatten().all(|q| q.outstanding() == 0) {
            break;
        }
        if round >= 64 {
            let live = ctrl.health() == nvme_engine::Health::Live && !h.is_vanished();
            if out.threaded || !live || Instant::now() >= patience {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        h.poll();
        now += Duration::from_secs(40);
        for qp in qps.iter_mut().flatten() {
            qp.check_timeouts(now);
            let _ = ctrl.wait_for_admin_work(Duration::from_secs(60));
            qp.process_completions(usize::MAX, |c| book.record(c, &mut out, &mut pool));
        }
    }
    out.quiesced = h.is_quiesced();
    out.quarantined = pool.quarantined();
    assert!(
        canary.to_vec().iter().all(|&b| b == 0xA5),
        "memory outside every command's buffer was written"
    );
    assert_eq!(
        h.dma_faults(),
        0,
        "the driver pointed the device outside its memory"
    );
    for (qi, qp) in qps.iter().enumerate() {
        let Some(qp) = qp else { continue };
        if qp.outstanding() == 0 {
            assert!(
                book.entries
                    .values()
                    .filter(|e| e.qp == qi)
                    .all(|e| e.seen == 1),
                "a command never completed though none is outstanding"
            );
        } else if !out.threaded {
            // Only a controller that stays fatal or gone after resets keeps
            // commands outstanding, and only while no reset was possible.
            assert!(
                !ctrl.health().eq(&nvme_engine::Health::Live) || h.is_vanished(),
                "commands stuck on a live controller: {:?}",
                qp.stats()
            );
        }
    }
    out
}
