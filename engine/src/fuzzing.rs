//! Fuzzing harness: the driver against a device the input controls.
//!
//! Not part of the supported API. [`run`] builds an emulated controller
//! whose Identify data, fault rules (every [`FaultAction`]), recovery
//! behaviour and register reads come from the input, brings the driver up
//! on it, and plays a script of I/O, polling, raw completion entries with
//! arbitrary CID/SQ head/SQ id/status, timeout scans with a synthetic
//! clock, resets, fatal status and removal. It checks the driver's promise:
//! no panic, every submitted command completes at most once, every refused
//! or completed command gives its buffer back, and once the device is
//! honest again every command completes. Loops are bounded by the input
//! length; waits are bounded by short admin timeouts.
//!
//! Used by the `cargo fuzz` crate in `fuzz/` and by a seeded stable test.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::device::Device;
use crate::dma::{DmaError, DmaRegion, HostMemory};
use crate::driver::{Controller, ControllerOptions, IoCompletion, QueuePairOptions};
use crate::emu::{EmuConfig, EmuController, EmuHandle, FaultAction, FaultRule};
use crate::spec::registers::{ALL_ONES, offset};
use crate::spec::{Completion, Status, StatusCodeType};

/// Reads values from the fuzz input; zeros once it is exhausted.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Self {
        Input { data, pos: 0 }
    }
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        self.u32() as u64 | (self.u32() as u64) << 32
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = (start + n).min(self.data.len());
        self.pos += n;
        &self.data[start..end]
    }
}

/// An emulated controller whose register reads the input may replace.
struct FuzzDevice {
    emu: EmuController,
    /// Bytes deciding, per register read, whether to lie and with what.
    script: Mutex<(Vec<u8>, usize)>,
}

impl FuzzDevice {
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
}

impl Device for FuzzDevice {
    fn read32(&self, off: usize) -> u32 {
        let real = self.emu.read32(off);
        if off < offset::DOORBELLS {
            self.lie().unwrap_or(real)
        } else {
            real
        }
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
}

fn status(input: &mut Input<'_>) -> Status {
    let sct = [
        StatusCodeType::GENERIC,
        StatusCodeType::COMMAND_SPECIFIC,
        StatusCodeType::MEDIA,
        StatusCodeType::PATH,
    ][input.u8() as usize % 4];
    Status::new(sct, input.u8()).with_dnr(input.u8() & 1 == 1)
}

fn rule(input: &mut Input<'_>) -> FaultRule {
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
}

/// Run one input. Panics only when the driver breaks its promise.
pub fn run(data: &[u8]) -> Outcome {
    let mut input = Input::new(data);
    let mut out = Outcome::default();
    let mut cfg = EmuConfig::ram(256 << 10);
    cfg.mdts = 1 + input.u8() % 10;
    cfg.max_queue_entries = 2 + input.u8() as u32 % 63;
    cfg.io_queues = 1 + input.u8() as u16 % 3;
    let Ok(emu) = EmuController::new(cfg) else {
        return out;
    };
    let h: EmuHandle = emu.handle();
    h.seed_faults(input.u64());
    for _ in 0..input.u8() % 4 {
        h.patch_identify_controller(input.u16() as usize, input.u8());
    }
    for _ in 0..input.u8() % 3 {
        h.patch_identify_namespace(1, input.u16() as usize, input.u8());
    }
    for _ in 0..input.u8() % 4 {
        h.add_fault(rule(&mut input));
    }
    h.set_vanish_recovers_on_reset(input.u8() & 1 == 1);
    h.set_fatal_survives_reset(input.u8() & 3 == 3);
    let script_len = input.u8() as usize % 64;
    let script = input.take(script_len).to_vec();
    let device = FuzzDevice {
        emu,
        script: Mutex::new((script, 0)),
    };
    let opts = ControllerOptions {
        admin_queue_entries: 2 + input.u8() as u16 % 16,
        io_queues: 2,
        admin_timeout: Duration::from_millis(2),
        io_timeout: Duration::from_secs(30),
        max_transfer_bytes: [4096, 8192, 64 << 10, 2 << 20][input.u8() as usize % 4],
        ..ControllerOptions::default()
    };
    let Ok(ctrl) = Controller::new(device, opts) else {
        return out;
    };
    out.brought_up = true;
    let entries = 2 + input.u8() as u16 % 32;
    let Ok(mut qp) = ctrl.create_io_qpair(QueuePairOptions {
        entries: Some(entries),
    }) else {
        return out;
    };
    let Ok(mut pool) = ctrl.create_pool(1 << 20) else {
        return out;
    };
    let ns = ctrl.namespaces().first().cloned();
    // Never handed to the device: must still hold its pattern at the end.
    let Ok(mut canary) = pool.alloc(8192) else {
        return out;
    };
    canary.fill(0xA5);
    let mut now = Instant::now();
    // token -> (completions seen, carries a buffer)
    let mut book: HashMap<u64, (u32, bool)> = HashMap::new();
    let mut next_token = 0u64;
    let record = |book: &mut HashMap<u64, (u32, bool)>,
                  c: IoCompletion,
                  out: &mut Outcome,
                  pool: &mut crate::dma::DmaPool| {
        let e = book.entry(c.token).or_insert((0, false));
        e.0 += 1;
        assert_eq!(e.0, 1, "command {} completed twice", c.token);
        assert_eq!(
            c.buf.is_some(),
            e.1,
            "command {} lost or gained a buffer",
            c.token
        );
        if c.result.is_ok() {
            out.succeeded += 1;
        } else {
            out.failed += 1;
        }
        if let Some(b) = c.buf {
            assert!(pool.free(b).is_ok(), "a buffer came back twice");
        }
    };
    let mut ops = 0;
    while !input.done() && ops < 256 {
        ops += 1;
        let op = input.u8();
        match op % 12 {
            0..=3 => {
                let Some(ns) = &ns else { continue };
                let blocks = 1 + input.u8() as usize % 8;
                let lba = input.u16() as u64 % ns.blocks.max(1);
                let Ok(buf) = pool.alloc(blocks * ns.block_size as usize) else {
                    continue;
                };
                let token = next_token;
                next_token += 1;
                let r = if op & 1 == 0 {
                    qp.read(ns, lba, buf, token)
                } else {
                    qp.write(ns, lba, buf, op & 2 == 2, token)
                };
                match r {
                    Ok(()) => {
                        book.insert(token, (0, true));
                        out.submitted += 1;
                    }
                    Err(e) => {
                        let buf = e.buf.expect("a refused command returns its buffer");
                        assert!(pool.free(buf).is_ok());
                    }
                }
            }
            4 => {
                let Some(ns) = &ns else { continue };
                let token = next_token;
                next_token += 1;
                if qp.flush(ns, token).is_ok() {
                    book.insert(token, (0, false));
                    out.submitted += 1;
                }
            }
            5 | 6 => {
                qp.process_completions(usize::MAX, |c| record(&mut book, c, &mut out, &mut pool));
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
                h.inject_completion(input.u8() as u16 % 3, c);
            }
            8 => {
                now += Duration::from_millis(input.u16() as u64 * 10);
                qp.check_timeouts(now);
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
                _ => {}
            },
            _ => qp.ring_doorbell(),
        }
    }
    // The device becomes honest: no more faults, register reads true. Every
    // command must now complete within a bounded number of rounds.
    h.clear_faults();
    for _ in 0..64 {
        if qp.outstanding() == 0 {
            break;
        }
        h.poll();
        now += Duration::from_secs(40);
        qp.check_timeouts(now);
        qp.process_completions(usize::MAX, |c| record(&mut book, c, &mut out, &mut pool));
    }
    assert!(
        canary.to_vec().iter().all(|&b| b == 0xA5),
        "memory outside every command's buffer was written"
    );
    assert_eq!(
        h.dma_faults(),
        0,
        "the driver pointed the device outside its memory"
    );
    if qp.outstanding() == 0 {
        assert!(
            book.values().all(|&(n, _)| n == 1),
            "a command never completed though none is outstanding"
        );
    } else {
        // Only a controller that stays fatal or gone after resets keeps
        // commands outstanding, and only while no reset was possible.
        assert!(
            !ctrl.health().eq(&crate::driver::Health::Live) || h.is_vanished(),
            "commands stuck on a live controller: {:?}",
            qp.stats()
        );
    }
    out
}
