//! Controller reset and the retry policy: in-flight commands survive a
//! reset (re-created queues, resubmission on the owning thread) up to the
//! retry limit; DNR=0 errors are retried, DNR=1 never; raw commands are not
//! resubmitted; fatal status is detected and reset; MDTS 10 transfers use
//! chained PRP lists end to end.

mod driver_common;

use std::time::{Duration, Instant};

use driver_common::*;
use nvme_emu::{EmuConfig, FaultAction, FaultRule};
use nvme_engine::spec::status::{generic, media};
use nvme_engine::spec::{
    command::Command,
    status::{Status, StatusCodeType},
};
use nvme_engine::{ControllerOptions, DeviceGone, Health, IoCompletion, IoError, QueuePairOptions};

type Qp = nvme_engine::IoQueuePair<nvme_emu::EmuController>;

fn collect(qp: &mut Qp) -> Vec<IoCompletion> {
    let mut v = Vec::new();
    qp.process_completions(usize::MAX, |c| v.push(c));
    v
}

#[test]
fn reset_from_another_thread_resubmits_in_flight_io_on_the_owning_thread() {
    let (ctrl, h, mut qp, mut pool) = setup(EmuConfig::ram(1 << 20), 8, 1 << 20);
    let ns = ctrl.namespace(1).unwrap().clone();
    let data = pattern(9, 512 * 4);
    let b = qp
        .write_sync(&ns, 0, filled(&mut pool, &data), false)
        .unwrap();
    pool.free(b).unwrap();
    h.add_fault(FaultRule::new(FaultAction::NeverComplete).io().times(3));
    for t in 0..3 {
        qp.read(&ns, t, pool.alloc(512).unwrap(), t).unwrap();
    }
    assert!(collect(&mut qp).is_empty());
    let other = ctrl.clone();
    std::thread::spawn(move || other.reset().unwrap())
        .join()
        .unwrap();
    assert_eq!(ctrl.resets(), 1);
    assert_eq!(ctrl.health(), Health::Live);
    let done = collect(&mut qp);
    assert_eq!(done.len(), 3, "{:?}", qp.stats());
    for c in done {
        assert!(c.result.is_ok(), "{:?}", c.result);
        let lba = c.token as usize;
        assert_eq!(c.buf.unwrap().to_vec(), &data[lba * 512..(lba + 1) * 512]);
    }
    assert_eq!(qp.stats().recreated, 1);
    assert_eq!(qp.stats().resubmitted, 3);
}

#[test]
fn in_flight_io_beyond_the_retry_limit_fails_with_controller_reset() {
    let (ctrl, h, mut qp, mut pool) = setup(EmuConfig::ram(1 << 20), 8, 1 << 20);
    let ns = ctrl.namespace(1).unwrap().clone();
    qp.set_retry_limit(1);
    h.add_fault(FaultRule::new(FaultAction::NeverComplete).io());
    qp.read(&ns, 0, pool.alloc(512).unwrap(), 1).unwrap();
    qp.ring_doorbell();
    ctrl.reset().unwrap();
    assert!(collect(&mut qp).is_empty(), "resubmitted once");
    ctrl.reset().unwrap();
    let done = collect(&mut qp);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].result, Err(IoError::ControllerReset));
    assert!(done[0].buf.is_some());
    h.clear_faults();
    qp.read_sync(&ns, 0, pool.alloc(512).unwrap()).unwrap();
}

#[test]
fn raw_commands_are_not_resubmitted_after_a_reset() {
    let (ctrl, h, mut qp, _pool) = setup(EmuConfig::ram(1 << 20), 8, 1 << 20);
    let ns = ctrl.namespace(1).unwrap().clone();
    h.add_fault(FaultRule::new(FaultAction::NeverComplete).io());
    // A vendor-specific opcode: the driver cannot know it is safe to repeat.
    qp.submit_raw(Command::new(0x81, ns.id()), None, 4).unwrap();
    qp.ring_doorbell();
    ctrl.reset().unwrap();
    let done = collect(&mut qp);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].result, Err(IoError::ControllerReset));
}

#[test]
fn dnr_zero_errors_are_retried_up_to_the_limit_and_dnr_one_never() {
    let (ctrl, h, mut qp, mut pool) = setup(EmuConfig::ram(1 << 20), 8, 1 << 20);
    let ns = ctrl.namespace(1).unwrap().clone();
    let transient = Status::new(StatusCodeType::GENERIC, generic::NAMESPACE_NOT_READY);
    // Two transient failures, then success: the caller sees success.
    let id = h.add_fault(
        FaultRule::new(FaultAction::CompleteWithStatus(transient))
            .io()
            .times(2),
    );
    qp.read_sync(&ns, 0, pool.alloc(512).unwrap()).unwrap();
    assert_eq!(h.fault_hits(id), 2);
    assert_eq!(qp.stats().retries, 2);
    h.clear_faults();
    // Always failing: 1 + 3 submissions, then the error with the buffer.
    let id = h.add_fault(FaultRule::new(FaultAction::CompleteWithStatus(transient)).io());
    let e = qp.read_sync(&ns, 0, pool.alloc(512).unwrap()).unwrap_err();
    assert_eq!(e.error, IoError::Status(transient));
    assert!(e.buf.is_some());
    assert_eq!(h.fault_hits(id), 4);
    h.clear_faults();
    // DNR=1: reported at once.
    let fatal = Status::new(StatusCodeType::MEDIA, media::WRITE_FAULT).with_dnr(true);
    let id = h.add_fault(FaultRule::new(FaultAction::CompleteWithStatus(fatal)).io());
    let e = qp
        .write_sync(&ns, 0, pool.alloc(512).unwrap(), false)
        .unwrap_err();
    assert_eq!(e.error, IoError::Status(fatal));
    assert_eq!(h.fault_hits(id), 1);
    assert_eq!(qp.stats().retries, 5);
}

#[test]
fn fatal_status_is_found_by_the_stall_check_and_a_reset_recovers_the_io() {
    let (ctrl, h, mut qp, mut pool) = setup(EmuConfig::ram(1 << 20), 8, 1 << 20);
    let ns = ctrl.namespace(1).unwrap().clone();
    h.add_fault(FaultRule::new(FaultAction::FatalStatus).io().once());
    qp.read(&ns, 0, pool.alloc(512).unwrap(), 1).unwrap();
    assert!(collect(&mut qp).is_empty());
    let t0 = Instant::now();
    qp.check_timeouts(t0);
    assert_eq!(ctrl.resets(), 0);
    qp.check_timeouts(t0 + Duration::from_millis(100));
    settle(&ctrl);
    assert_eq!(
        ctrl.resets(),
        1,
        "CSTS.CFS seen after 100 ms without progress"
    );
    let done = collect(&mut qp);
    assert_eq!(done.len(), 1);
    assert!(done[0].result.is_ok(), "{:?}", done[0].result);
}

#[test]
fn fatal_status_that_survives_reset_fails_io_and_shutdown_returns_promptly() {
    let (ctrl, h, mut qp, mut pool) = setup(EmuConfig::ram(1 << 20), 8, 1 << 20);
    let ns = ctrl.namespace(1).unwrap().clone();
    h.set_fatal_survives_reset(true);
    h.add_fault(FaultRule::new(FaultAction::NeverComplete).io().once());
    qp.read(&ns, 0, pool.alloc(512).unwrap(), 1).unwrap();
    qp.ring_doorbell();
    h.trigger_fatal();
    assert!(ctrl.reset().is_err());
    assert_eq!(ctrl.health(), Health::Failed);
    let done = collect(&mut qp);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].result, Err(IoError::Gone(DeviceGone::Failed)));
    assert!(done[0].buf.is_some());
    let e = qp.read(&ns, 0, pool.alloc(512).unwrap(), 2).unwrap_err();
    assert_eq!(
        e.kind,
        nvme_engine::SubmitErrorKind::Gone(DeviceGone::Failed)
    );
    // Found by fuzzing: shutdown of a stopped controller used to wait out
    // CAP.TO for a shutdown the controller never reports.
    assert!(matches!(
        ctrl.shutdown(),
        Err(nvme_engine::DriverError::ControllerFatal { .. })
    ));
    drop(qp);
}

#[test]
fn mdts_10_transfers_use_chained_prp_lists_end_to_end() {
    let mut cfg = EmuConfig::ram(16 << 20);
    cfg.mdts = 10;
    let opts = ControllerOptions::default().with_max_transfer_bytes(4 << 20);
    let (ctrl, h) = bring_up(cfg, opts);
    assert_eq!(ctrl.max_transfer_bytes(), 4 << 20);
    let mut qp = ctrl
        .create_io_qpair(QueuePairOptions::default().with_entries(4))
        .unwrap();
    let mut pool = ctrl.create_pool(16 << 20).unwrap();
    let ns = ctrl.namespace(1).unwrap().clone();
    let len = 4 << 20;
    // Start 512 bytes into a page: 1025 pages, 1024 list entries, three
    // chained list pages.
    let mut b = pool.alloc(len + 4096).unwrap();
    assert!(b.set_window(512, len));
    let data = pattern(77, len);
    assert!(b.write_at(0, &data));
    let b = qp.write_sync(&ns, 100, b, false).unwrap();
    let mut r = pool.alloc(len + 4096).unwrap();
    assert!(r.set_window(3584, len));
    r.fill(0);
    let r = qp.read_sync(&ns, 100, r).unwrap();
    assert!(
        r.to_vec() == data,
        "4 MiB round trip through chained PRP lists"
    );
    assert_eq!(h.dma_faults(), 0);
    pool.free(b).unwrap();
    // One byte-block more than MDTS is refused before submission.
    let big = pool.alloc(len + 512).unwrap();
    let e = qp.read(&ns, 0, big, 1).unwrap_err();
    assert!(matches!(
        e.kind,
        nvme_engine::SubmitErrorKind::TooLarge { .. }
    ));
}

/// The emulated controller, with a gate that holds a reset at CC.EN = 0
/// until the test opens it.
struct GatedReset {
    emu: nvme_emu::EmuController,
    armed: std::sync::atomic::AtomicBool,
    gate: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
}

impl nvme_engine::Device for GatedReset {
    fn read32(&self, off: usize) -> u32 {
        self.emu.read32(off)
    }
    fn write32(&self, off: usize, value: u32) {
        use std::sync::atomic::Ordering;
        if off == nvme_engine::spec::registers::offset::CC
            && value == 0
            && self.armed.swap(false, Ordering::AcqRel)
        {
            let mut open = self.gate.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
        }
        self.emu.write32(off, value)
    }
    fn map_dma(
        &self,
        memory: nvme_engine::dma::HostMemory,
    ) -> Result<nvme_engine::dma::DmaRegion, nvme_engine::dma::DmaError> {
        self.emu.map_dma(memory)
    }
    fn allows_plain_memory(&self) -> bool {
        true
    }
    fn name(&self) -> String {
        self.emu.name()
    }
}

#[test]
fn submissions_during_a_reset_are_held_and_sent_once_the_queues_exist_again() {
    use std::sync::atomic::Ordering;
    let emu = nvme_emu::EmuController::new(EmuConfig::ram(1 << 20)).unwrap();
    let dev = GatedReset {
        emu,
        armed: std::sync::atomic::AtomicBool::new(false),
        gate: std::sync::Mutex::new(false),
        opened: std::sync::Condvar::new(),
    };
    let ctrl = nvme_engine::Controller::new(dev, ControllerOptions::default()).unwrap();
    let ns = ctrl.namespace(1).unwrap().clone();
    let mut qp = ctrl
        .create_io_qpair(QueuePairOptions::default().with_entries(8))
        .unwrap();
    let mut pool = ctrl.create_pool(1 << 20).unwrap();
    ctrl.device().armed.store(true, Ordering::Release);
    let resetter = {
        let ctrl = ctrl.clone();
        std::thread::spawn(move || ctrl.reset())
    };
    while ctrl.health() != Health::Resetting {
        std::thread::yield_now();
    }
    let data = pattern(11, 512);
    qp.write(&ns, 2, filled(&mut pool, &data), false, 1)
        .unwrap();
    let mut got = Vec::new();
    assert_eq!(qp.process_completions(usize::MAX, |c| got.push(c)), 0);
    assert!(got.is_empty(), "held while the controller resets");
    *ctrl.device().gate.lock().unwrap() = true;
    ctrl.device().opened.notify_all();
    resetter.join().unwrap().unwrap();
    qp.process_completions(usize::MAX, |c| got.push(c));
    assert_eq!(got.len(), 1);
    assert!(got[0].result.is_ok(), "{:?}", got[0].result);
    let b = qp.read_sync(&ns, 2, pool.alloc(512).unwrap()).unwrap();
    assert_eq!(b.to_vec(), data);
}
