//! Surprise removal: registers reading all ones are noticed by the stall
//! check (not per I/O); after a reset attempt that still reads all ones the
//! controller is removed, everything in flight completes with
//! `DeviceGone::Removed` and its buffer, new submissions fail fast, and
//! another controller in the process keeps working. A device that comes
//! back on reset recovers its I/O instead.

mod driver_common;

use std::time::{Duration, Instant};

use driver_common::*;
use nvme_emu::{EmuConfig, FaultAction, FaultRule};
use nvme_engine::{DeviceGone, Health, IoCompletion, IoError, SubmitErrorKind};

type Qp = nvme_engine::IoQueuePair<nvme_emu::EmuController>;

fn collect(qp: &mut Qp) -> Vec<IoCompletion> {
    let mut v = Vec::new();
    qp.process_completions(usize::MAX, |c| v.push(c));
    v
}

#[test]
fn removal_fails_in_flight_io_once_and_new_io_fast_while_another_controller_works() {
    let (a, ha, mut qa, mut pa) = setup(EmuConfig::ram(1 << 20), 16, 1 << 20);
    let (b, _hb, mut qb, mut pb) = setup(EmuConfig::ram(1 << 20), 16, 1 << 20);
    let nsa = a.namespace(1).unwrap().clone();
    let nsb = b.namespace(1).unwrap().clone();
    ha.add_fault(FaultRule::new(FaultAction::NeverComplete).io());
    for t in 0..5 {
        qa.read(&nsa, t, pa.alloc(512).unwrap(), t).unwrap();
    }
    assert!(collect(&mut qa).is_empty());
    ha.trigger_vanish();
    // Nothing notices before the stall check: no per-I/O register reads.
    assert!(collect(&mut qa).is_empty());
    let t0 = Instant::now();
    qa.check_timeouts(t0);
    assert_eq!(a.health(), Health::Live);
    qa.check_timeouts(t0 + Duration::from_millis(100));
    assert!(a.is_removed());
    let done = collect(&mut qa);
    assert_eq!(done.len(), 5);
    let mut tokens: Vec<u64> = done
        .iter()
        .map(|c| {
            assert_eq!(c.result, Err(IoError::Gone(DeviceGone::Removed)));
            assert!(c.buf.is_some());
            c.token
        })
        .collect();
    tokens.sort();
    assert_eq!(tokens, [0, 1, 2, 3, 4]);
    assert!(collect(&mut qa).is_empty(), "exactly once");
    let e = qa.read(&nsa, 0, pa.alloc(512).unwrap(), 9).unwrap_err();
    assert_eq!(e.kind, SubmitErrorKind::Gone(DeviceGone::Removed));
    assert!(e.buf.is_some());
    assert!(a.smart_log().is_err());
    // The other controller is unaffected.
    let data = pattern(3, 2048);
    let buf = qb
        .write_sync(&nsb, 4, filled(&mut pb, &data), true)
        .unwrap();
    assert_eq!(qb.read_sync(&nsb, 4, buf).unwrap().to_vec(), data);
    // Teardown of the removed controller does not hang.
    drop(qa);
    drop(a);
}

#[test]
fn device_that_returns_on_reset_recovers_its_in_flight_io() {
    let (ctrl, h, mut qp, mut pool) = setup(EmuConfig::ram(1 << 20), 8, 1 << 20);
    let ns = ctrl.namespace(1).unwrap().clone();
    h.set_vanish_recovers_on_reset(true);
    // The second read makes the device vanish when it is fetched.
    h.add_fault(FaultRule::new(FaultAction::Vanish).io().skip(1).once());
    qp.write(&ns, 0, filled(&mut pool, &pattern(5, 512)), false, 1)
        .unwrap();
    qp.read(&ns, 0, pool.alloc(512).unwrap(), 2).unwrap();
    let first = collect(&mut qp);
    assert_eq!(first.len(), 1);
    assert!(h.is_vanished());
    let t0 = Instant::now();
    qp.check_timeouts(t0);
    qp.check_timeouts(t0 + Duration::from_millis(100));
    assert_eq!(ctrl.health(), Health::Live);
    assert_eq!(ctrl.resets(), 1);
    let done = collect(&mut qp);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].token, 2);
    assert_eq!(done[0].buf.as_ref().unwrap().to_vec(), pattern(5, 512));
}

#[test]
fn sync_helper_on_a_removed_device_returns_device_removed_without_hanging() {
    let (ctrl, h, mut qp, mut pool) = setup(EmuConfig::ram(1 << 20), 8, 1 << 20);
    let ns = ctrl.namespace(1).unwrap().clone();
    h.add_fault(FaultRule::new(FaultAction::Vanish).io().once());
    let e = qp.read_sync(&ns, 0, pool.alloc(512).unwrap()).unwrap_err();
    assert_eq!(e.error, IoError::Gone(DeviceGone::Removed));
    assert!(e.buf.is_some());
    assert!(ctrl.is_removed());
    // An explicit reset cannot bring back a device that stays gone.
    assert!(ctrl.reset().is_err());
    assert!(ctrl.is_removed());
}
