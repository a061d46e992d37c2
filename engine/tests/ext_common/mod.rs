//! Shared helpers for the metadata, protection information, fused and
//! vectored request tests: a controller on the inline emulator with chosen
//! namespaces, and waiting for completions.

#![allow(dead_code)]

use nvme_emu::{EmuConfig, EmuController, EmuHandle, EmuNamespaceConfig};
use nvme_engine::dma::{DmaBuf, DmaPool};
use nvme_engine::{Controller, ControllerOptions, IoCompletion, IoQueuePair, QueuePairOptions};

pub type Qp = IoQueuePair<EmuController>;

/// A controller over `cfg` (its namespaces replaced by `namespaces`), one
/// queue pair of `entries`, and a 4 MiB pool.
pub fn bring_up(
    cfg: EmuConfig,
    namespaces: Vec<EmuNamespaceConfig>,
    entries: u16,
) -> (Controller<EmuController>, EmuHandle, Qp, DmaPool) {
    bring_up_with(cfg, namespaces, entries, ControllerOptions::default())
}

/// [`bring_up`] with driver options.
pub fn bring_up_with(
    cfg: EmuConfig,
    namespaces: Vec<EmuNamespaceConfig>,
    entries: u16,
    opts: ControllerOptions,
) -> (Controller<EmuController>, EmuHandle, Qp, DmaPool) {
    let mut cfg = cfg.without_namespaces();
    for ns in namespaces {
        cfg = cfg.namespace(ns);
    }
    let emu = EmuController::new(cfg).expect("emulator config");
    let handle = emu.handle();
    let ctrl = Controller::new(emu, opts).expect("bring-up");
    assert!(
        ctrl.skipped_namespaces().is_empty(),
        "{:?}",
        ctrl.skipped_namespaces()
    );
    let qp = ctrl
        .create_io_qpair(QueuePairOptions::default().with_entries(entries))
        .expect("queue pair");
    let pool = ctrl.create_pool(4 << 20).expect("pool");
    (ctrl, handle, qp, pool)
}

/// Ring the doorbell and reap until `n` completions arrived (inline
/// emulator: each reap finds what the doorbell write executed).
pub fn reap(qp: &mut Qp, n: usize) -> Vec<IoCompletion> {
    qp.ring_doorbell();
    let mut out = Vec::new();
    let mut idle = 0u64;
    while out.len() < n {
        if qp.process_completions(n - out.len(), |c| out.push(c)) == 0 {
            idle += 1;
            assert!(idle < 50_000_000, "no completion after {idle} polls");
            std::thread::yield_now();
        }
    }
    out
}

/// Reap one completion.
pub fn one(qp: &mut Qp) -> IoCompletion {
    reap(qp, 1).pop().expect("a completion")
}

/// A buffer of exactly `len` bytes holding `data` (or zeros).
pub fn buf_of(pool: &mut DmaPool, len: usize, data: Option<&[u8]>) -> DmaBuf {
    let mut b = pool.alloc(len).expect("alloc");
    assert!(b.set_window(0, len));
    b.fill(0);
    if let Some(d) = data {
        assert!(b.write_at(0, d));
    }
    b
}

/// The bytes of `b`.
pub fn bytes(b: &DmaBuf) -> Vec<u8> {
    let mut v = vec![0u8; b.len()];
    b.read_at(0, &mut v);
    v
}

/// A deterministic pattern.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
