//! Shared helpers for the reactor tests: emulated controllers, small
//! configurations, unique data patterns and bounded waiting.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nvme_emu::{EmuConfig, EmuController, EmuHandle, EmuMode};
use nvme_engine::dma::DmaBuf;
use nvme_engine::{Controller, ControllerOptions};
use nvme_reactor::{
    AllowedCores, CoreSpec, Producer, ProducerError, ReactorConfig, Request, Response,
};

/// The device type the tests drive.
pub type Dev = EmuController;

/// Block size of the emulated namespaces.
pub const BLOCK: usize = 512;

/// An emulated controller with one 16 MiB RAM namespace (NSID 1), inline
/// mode: deterministic, no device thread.
pub fn controller() -> Controller<Dev> {
    let device = EmuController::new(EmuConfig::ram(16 << 20)).expect("emulated controller");
    Controller::new(device, ControllerOptions::default()).expect("bring-up")
}

/// An emulated controller like [`controller`] in threaded mode (a device
/// thread polls the doorbells), with its fault-injection handle.
pub fn threaded_controller() -> (Controller<Dev>, EmuHandle) {
    let device = EmuController::new(EmuConfig::ram(16 << 20).mode(EmuMode::threaded()))
        .expect("emulated controller");
    let handle = device.handle();
    let ctrl = Controller::new(device, ControllerOptions::default()).expect("bring-up");
    (ctrl, handle)
}

/// [`controller`] with its fault-injection handle.
pub fn controller_with_handle() -> (Controller<Dev>, EmuHandle) {
    let device = EmuController::new(EmuConfig::ram(16 << 20)).expect("emulated controller");
    let handle = device.handle();
    let ctrl = Controller::new(device, ControllerOptions::default()).expect("bring-up");
    (ctrl, handle)
}

/// `n` reactors on allowed cores (repeating cores when there are fewer),
/// unpinned, yielding when idle (tests share two cores).
pub fn config(n: usize) -> ReactorConfig {
    let allowed = AllowedCores::current().expect("affinity");
    let cores = (0..n).map(|i| allowed.cores()[i % allowed.cores().len()]);
    let mut c = ReactorConfig::default();
    c.cores = CoreSpec::from_cores(cores);
    c.pin = false;
    c.ring_capacity = 32;
    c.queue_entries = Some(16);
    c.pool_bytes = 64 << 10;
    c.producer_pool_bytes = 1 << 20;
    c.batch = 16;
    c.idle_yield = true;
    c
}

/// Byte `i` of the unique pattern for `key`.
pub fn pattern_byte(key: u64, i: usize) -> u8 {
    let x = key
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i as u64 / 8)
        .rotate_left((i % 8) as u32 * 8);
    (x ^ (x >> 29)) as u8 ^ (i as u8)
}

/// Fill `buf` with the pattern for `key`.
pub fn fill(buf: &mut DmaBuf, key: u64) {
    let data: Vec<u8> = (0..buf.len()).map(|i| pattern_byte(key, i)).collect();
    assert!(buf.write_at(0, &data));
}

/// Whether `buf` holds the pattern for `key`.
pub fn holds(buf: &DmaBuf, key: u64) -> bool {
    let data = buf.to_vec();
    data.iter()
        .enumerate()
        .all(|(i, &b)| b == pattern_byte(key, i))
}

/// Submit every `(producer index, request)` through `producers`, retrying
/// requests the rings hand back, and return all responses. A generous
/// deadline only turns a hang into a failure; nothing depends on speed.
pub fn run_all(producers: &mut [Producer], requests: Vec<(usize, Request)>) -> Vec<Response> {
    let total = requests.len();
    let mut queue: VecDeque<(usize, Request)> = requests.into();
    let mut out = Vec::with_capacity(total);
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < total {
        while let Some((pi, req)) = queue.pop_front() {
            match producers[pi].try_submit(req) {
                Ok(()) => {}
                Err(rejected) => {
                    assert!(
                        matches!(rejected.reason, ProducerError::RingFull),
                        "unexpected rejection: {}",
                        rejected.reason
                    );
                    queue.push_front((pi, rejected.request));
                    break;
                }
            }
        }
        for p in producers.iter_mut() {
            p.poll_completions(|r| out.push(r));
        }
        assert!(Instant::now() < deadline, "no progress for 60 s");
        std::thread::yield_now();
    }
    out
}

/// Wait for `cond`, with the same hang guard.
pub fn wait_for(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "condition not met within 60 s");
        std::thread::yield_now();
    }
}
