//! Shared set-up for the driver-against-emulator tests.

#![allow(dead_code)]

use nvme_emu::{EmuConfig, EmuController, EmuHandle, EmuMode};
use nvme_engine::dma::{DmaBuf, DmaPool};
use nvme_engine::{Controller, ControllerOptions, IoQueuePair, QueuePairOptions};

/// Both execution modes of the emulator.
pub fn modes() -> [EmuMode; 2] {
    [EmuMode::Inline, EmuMode::threaded()]
}

/// A controller brought up on an emulator built from `cfg`.
pub fn bring_up(cfg: EmuConfig, opts: ControllerOptions) -> (Controller<EmuController>, EmuHandle) {
    let emu = EmuController::new(cfg).expect("emulator config");
    let handle = emu.handle();
    let ctrl = Controller::new(emu, opts).expect("bring-up");
    (ctrl, handle)
}

/// A controller, one queue pair of `entries` and a pool of `pool_bytes`.
pub fn setup(
    cfg: EmuConfig,
    entries: u16,
    pool_bytes: usize,
) -> (
    Controller<EmuController>,
    EmuHandle,
    IoQueuePair<EmuController>,
    DmaPool,
) {
    let (ctrl, handle) = bring_up(cfg, ControllerOptions::default());
    let qp = ctrl
        .create_io_qpair(QueuePairOptions::default().with_entries(entries))
        .expect("queue pair");
    let pool = ctrl.create_pool(pool_bytes).expect("pool");
    (ctrl, handle, qp, pool)
}

/// A deterministic byte pattern for block `lba` of a given seed.
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

/// A buffer of `len` bytes filled with `data`.
pub fn filled(pool: &mut DmaPool, data: &[u8]) -> DmaBuf {
    let mut b = pool.alloc(data.len()).expect("alloc");
    assert!(b.set_window(0, data.len()));
    assert!(b.write_at(0, data));
    b
}

/// Wait until the aborts and resets the queue pairs posted from their
/// deadline scans have been carried out by the controller's admin worker
/// (the scans themselves never wait for them).
pub fn settle(ctrl: &Controller<EmuController>) {
    assert!(
        ctrl.wait_for_admin_work(std::time::Duration::from_secs(120)),
        "the admin worker did not finish the posted aborts and resets"
    );
}
