//! Regression tests for what fuzzing the driver against a hostile device
//! found (`emu/src/fuzzing.rs`, run by `fuzz/` and the seeded test).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nvme_emu::fuzzing::Rewired;
use nvme_emu::{EmuConfig, EmuController};
use nvme_engine::spec::completion::Completion;
use nvme_engine::spec::registers::{Cc, Csts, offset};
use nvme_engine::{Controller, ControllerOptions, Device};

/// A completion entry for CQ 1 as a device that still had the queue would
/// write it.
fn first_entry_of_cq1() -> Completion {
    Completion {
        dw0: 0,
        dw1: 0,
        sqhd: 0,
        sqid: 1,
        cid: 0,
        status_phase: 0,
    }
}

const GARBAGE_CC: u32 = 0x3f19_684a;

/// An emulated controller whose CC register reads back a fixed garbage
/// value (the one the fuzzer used), as a failing device might.
fn lying_cc(emu: EmuController) -> Rewired {
    Rewired::new(
        emu,
        |off, value| {
            if off == offset::CC { GARBAGE_CC } else { value }
        },
    )
}

/// Found by fuzzing: shutdown read CC back and wrote it with SHN set. A
/// garbage read cleared EN, which disabled the controller; the driver
/// then waited CAP.TO for a shutdown that never came and reported a
/// timeout. CC is now always written from the driver's own value.
#[test]
fn shutdown_does_not_trust_a_garbage_cc_read() {
    assert!(!Cc::from(GARBAGE_CC).en());
    let emu = EmuController::new(EmuConfig::ram(1 << 20)).unwrap();
    let ctrl = Controller::new(lying_cc(emu), ControllerOptions::default()).unwrap();
    ctrl.shutdown().unwrap();
    let csts = Csts::from(ctrl.device().read32(offset::CSTS));
    assert_eq!(csts.shst(), 2, "shutdown complete reported");
}

/// Found by fuzzing: a controller the driver could not reset (disabled and
/// fatal) was asked to shut down on drop and the driver waited CAP.TO.
/// Shutdown of a controller that is not running returns at once.
#[test]
fn shutdown_of_a_disabled_controller_returns_at_once() {
    let emu = EmuController::new(EmuConfig::ram(1 << 20)).unwrap();
    let ctrl = Controller::new(emu, ControllerOptions::default()).unwrap();
    ctrl.device().write32(offset::CC, 0);
    ctrl.shutdown().unwrap();
    assert_eq!(ctrl.device().read32(offset::CC), 0, "CC was left alone");
}

/// The emulated controller with one CSTS read, once armed, that returns all
/// ones: a transient PCIe error seen by the host while the device works on.
fn flickering_csts(emu: EmuController, armed: Arc<AtomicBool>) -> Rewired {
    Rewired::new(emu, move |off, value| {
        if off == offset::CSTS && armed.swap(false, Ordering::SeqCst) {
            u32::MAX
        } else {
            value
        }
    })
}

/// Found by fuzzing the threaded emulator: a CSTS read of all ones while
/// Create I/O CQ was outstanding made queue creation fail and release the
/// ring memory, though the controller had created the CQ and went on
/// writing it. A create that ends without a completion now resets the
/// controller (deleting the CQ) before the memory goes.
#[test]
fn create_cq_interrupted_by_a_transient_all_ones_read_leaves_no_cq_in_freed_memory() {
    use nvme_emu::{FaultAction, FaultRule};
    use nvme_engine::spec::command::AdminOpcode;
    let emu = EmuController::new(EmuConfig::ram(1 << 20)).unwrap();
    let h = emu.handle();
    let armed = Arc::new(AtomicBool::new(false));
    let dev = flickering_csts(emu, Arc::clone(&armed));
    let ctrl = Controller::new(dev, ControllerOptions::default()).unwrap();
    // The CQ is created at once; its completion waits for device rounds,
    // so the host polls CSTS meanwhile and sees the flicker.
    h.add_fault(
        FaultRule::new(FaultAction::DelayPolls(1_000_000))
            .admin()
            .opcode(AdminOpcode::CREATE_IO_CQ.0)
            .once(),
    );
    armed.store(true, Ordering::SeqCst);
    let e = ctrl
        .create_io_qpair(Default::default())
        .expect_err("creation sees the device gone");
    assert!(e.to_string().contains("0xFFFFFFFF"), "{e}");
    // The device writing its CQ now must not reach memory the host freed.
    h.inject_completion(1, first_entry_of_cq1());
    assert_eq!(
        h.dma_faults(),
        0,
        "the device wrote a CQ in released memory"
    );
    // And the controller is usable again.
    assert!(ctrl.create_io_qpair(Default::default()).is_ok());
}

/// Found by fuzzing with queue pairs deleted and re-created: when Create
/// I/O SQ failed and the Delete I/O CQ that undoes it failed too, the ring
/// memory was released while the controller still had the CQ. The driver
/// now resets the controller (which deletes every queue) first.
#[test]
fn failed_sq_creation_whose_cq_cannot_be_deleted_resets_before_releasing_the_ring() {
    use nvme_emu::{FaultAction, FaultRule};
    use nvme_engine::spec::status::generic;
    use nvme_engine::spec::{
        command::AdminOpcode,
        status::{Status, StatusCodeType},
    };
    let emu = EmuController::new(EmuConfig::ram(1 << 20)).unwrap();
    let h = emu.handle();
    let ctrl = Controller::new(emu, ControllerOptions::default()).unwrap();
    let fail = |opcode: u8| {
        FaultRule::new(FaultAction::CompleteWithStatus(Status::new(
            StatusCodeType::GENERIC,
            generic::INTERNAL_ERROR,
        )))
        .admin()
        .opcode(opcode)
        .once()
    };
    h.add_fault(fail(AdminOpcode::CREATE_IO_SQ.0));
    h.add_fault(fail(AdminOpcode::DELETE_IO_CQ.0));
    let e = ctrl.create_io_qpair(Default::default()).unwrap_err();
    assert!(e.to_string().contains("Create I/O Submission Queue"), "{e}");
    assert_eq!(ctrl.resets(), 1, "the reset removed the CQ");
    assert!(
        !h.inject_completion(1, first_entry_of_cq1()),
        "the CQ is gone"
    );
    assert_eq!(h.dma_faults(), 0);
    assert!(ctrl.create_io_qpair(Default::default()).is_ok());
}
