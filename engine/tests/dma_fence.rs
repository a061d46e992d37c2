//! No buffer comes back while the device may still write it: an admin
//! command with a buffer that times out is aborted and the controller reset;
//! a controller that cannot be reset (CSTS.RDY stays 1) is quiesced (the
//! emulator stops all DMA) before buffers return; and where quiescing fails
//! too, the memory is quarantined — never reused — and the error says so.
//! Each test plays the late device write itself (`EmuHandle::dma_write`) to
//! show whether it could still land.

use std::time::Duration;

use nvme_emu::{EmuConfig, EmuController, EmuHandle, FaultAction, FaultRule};
use nvme_engine::dma::{DmaBuf, DmaPool};
use nvme_engine::spec::log::LogId;
use nvme_engine::spec::status::generic;
use nvme_engine::spec::{
    command::AdminOpcode,
    status::{Status, StatusCodeType},
};
use nvme_engine::{
    Controller, ControllerOptions, DeviceGone, DriverError, IoCompletion, IoError, IoQueuePair,
    QueuePairOptions,
};

type Ctrl = Controller<EmuController>;

fn up() -> (Ctrl, EmuHandle, DmaPool) {
    let emu = EmuController::new(EmuConfig::ram(1 << 20)).unwrap();
    let h = emu.handle();
    let opts = ControllerOptions::default()
        .with_admin_timeout(Duration::from_millis(100))
        // The shadow doorbell pages are fenced with the admin queue.
        .with_shadow_doorbells(true);
    let ctrl = Controller::new(emu, opts).unwrap();
    let pool = ctrl.create_pool(1 << 20).unwrap();
    (ctrl, h, pool)
}

fn hang_log_page(h: &EmuHandle) {
    h.add_fault(
        FaultRule::new(FaultAction::NeverComplete)
            .admin()
            .opcode(AdminOpcode::GET_LOG_PAGE.0)
            .once(),
    );
}

/// Every block of `len` the pool can still hand out: none may be `iova`.
fn never_handed_out_again(pool: &mut DmaPool, iova: u64, len: usize) {
    let mut held = Vec::new();
    while let Ok(b) = pool.alloc(len) {
        assert_ne!(b.iova(), iova, "a quarantined block was handed out again");
        held.push(b);
    }
    assert!(!held.is_empty());
    for b in held {
        pool.free(b).unwrap();
    }
}

#[test]
fn admin_buffer_timeout_aborts_then_resets_and_the_buffer_is_safe() {
    let (ctrl, h, mut pool) = up();
    hang_log_page(&h);
    let mut buf = pool.alloc(512).unwrap();
    let e = ctrl
        .get_log_page(0xffff_ffff, LogId::SMART_HEALTH, &mut buf)
        .unwrap_err();
    assert!(
        matches!(
            e,
            DriverError::AdminDataTimeout {
                command: "Get Log Page",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("aborted and the controller was reset"),
        "{e}"
    );
    assert_eq!(h.admin_commands(AdminOpcode::ABORT), 1);
    assert_eq!(ctrl.resets(), 1);
    assert!(!buf.is_quarantined());
    // The reset dropped the command: polling the device changes nothing.
    buf.fill(0x5a);
    for _ in 0..10 {
        h.poll();
    }
    assert!(buf.to_vec().iter().all(|&b| b == 0x5a));
    // And the controller works again.
    ctrl.get_log_page(0xffff_ffff, LogId::SMART_HEALTH, &mut buf)
        .unwrap();
}

#[test]
fn admin_buffer_timeout_on_a_controller_that_cannot_be_reset_quiesces_it_first() {
    let (ctrl, h, mut pool) = up();
    h.set_ignores_disable(true);
    hang_log_page(&h);
    let mut buf = pool.alloc(4096).unwrap();
    let e = ctrl
        .get_log_page(0xffff_ffff, LogId::SMART_HEALTH, &mut buf)
        .unwrap_err();
    assert!(
        e.to_string().contains("quiesced (bus mastering off)"),
        "{e}"
    );
    assert!(h.is_quiesced());
    assert!(!buf.is_quarantined());
    // A late write by the device cannot land any more.
    assert!(!h.dma_write(buf.iova(), &[0xee; 64]));
    // The controller refuses further use with a clear error.
    let e = ctrl.reset().unwrap_err();
    assert!(matches!(e, DriverError::Quiesced { .. }), "{e}");
    assert!(e.to_string().contains("re-create the Controller"), "{e}");
    let e = ctrl.smart_log().unwrap_err();
    assert!(matches!(e, DriverError::Quiesced { .. }), "{e}");
}

#[test]
fn admin_buffer_timeout_without_a_way_to_quiesce_quarantines_the_buffer() {
    let (ctrl, h, mut pool) = up();
    h.set_ignores_disable(true);
    h.set_quiesce_fails(true);
    hang_log_page(&h);
    let mut buf = pool.alloc(4096).unwrap();
    let iova = buf.iova();
    let before = nvme_engine::dma::quarantined_bytes();
    let e = ctrl
        .admin_command(
            {
                let mut c =
                    nvme_engine::spec::command::Command::new(AdminOpcode::GET_LOG_PAGE.0, 0);
                c.cdw10 = 2 | (1023 << 16);
                c
            },
            Some(&mut buf),
        )
        .unwrap_err();
    assert!(matches!(e, DriverError::DmaQuarantined { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("quarantined") && msg.contains("4096 bytes"),
        "{msg}"
    );
    assert!(buf.is_quarantined());
    // The device can still write it...
    assert!(h.dma_write(iova, &[0xee; 64]));
    // ...so the pool never hands the block out again.
    pool.free(buf).unwrap();
    assert_eq!(pool.quarantined(), 4096);
    never_handed_out_again(&mut pool, iova, 4096);
    // Dropping everything keeps the memory mapped for good.
    drop(pool);
    drop(ctrl);
    assert!(nvme_engine::dma::quarantined_bytes() >= before + (1 << 20));
}

type Qp = IoQueuePair<EmuController>;

fn read_stuck(ctrl: &Ctrl, h: &EmuHandle, pool: &mut DmaPool) -> (Qp, u64) {
    let ns = ctrl.namespace(1).unwrap().clone();
    let mut qp = ctrl
        .create_io_qpair(QueuePairOptions::default().with_entries(8))
        .unwrap();
    h.add_fault(FaultRule::new(FaultAction::NeverComplete).io().once());
    let buf = pool.alloc(512).unwrap();
    let iova = buf.iova();
    qp.read(&ns, 0, buf, 7).unwrap();
    qp.ring_doorbell();
    (qp, iova)
}

fn collect(qp: &mut Qp) -> Vec<IoCompletion> {
    let mut v = Vec::new();
    qp.process_completions(usize::MAX, |c| v.push(c));
    v
}

fn only_buf(done: &mut Vec<IoCompletion>) -> DmaBuf {
    assert_eq!(done.len(), 1, "every command answered exactly once");
    done.pop().unwrap().buf.expect("the buffer comes back")
}

#[test]
fn failed_reset_quiesces_the_device_before_in_flight_buffers_come_back() {
    let (ctrl, h, mut pool) = up();
    let (mut qp, iova) = read_stuck(&ctrl, &h, &mut pool);
    h.set_ignores_disable(true);
    let e = ctrl.reset().unwrap_err();
    assert!(e.to_string().contains("CSTS.RDY=0"), "{e}");
    assert!(h.is_quiesced(), "quiesced before anything is handed back");
    let mut done = collect(&mut qp);
    assert_eq!(done[0].result, Err(IoError::Gone(DeviceGone::Failed)));
    let buf = only_buf(&mut done);
    assert_eq!(buf.iova(), iova);
    assert!(!buf.is_quarantined());
    assert!(!h.dma_write(iova, &[1; 8]));
}

#[test]
fn failed_reset_without_quiesce_hands_back_quarantined_buffers() {
    let (ctrl, h, mut pool) = up();
    let (mut qp, iova) = read_stuck(&ctrl, &h, &mut pool);
    h.set_ignores_disable(true);
    h.set_quiesce_fails(true);
    assert!(ctrl.reset().is_err());
    let mut done = collect(&mut qp);
    assert_eq!(done[0].result, Err(IoError::Gone(DeviceGone::Failed)));
    let buf = only_buf(&mut done);
    assert!(buf.is_quarantined());
    assert!(h.dma_write(iova, &[1; 8]), "the device can still write it");
    pool.free(buf).unwrap();
    never_handed_out_again(&mut pool, iova, 512);
}

fn fail_delete(h: &EmuHandle) {
    h.add_fault(
        FaultRule::new(FaultAction::CompleteWithStatus(Status::new(
            StatusCodeType::GENERIC,
            generic::INTERNAL_ERROR,
        )))
        .admin()
        .opcode(AdminOpcode::DELETE_IO_SQ.0)
        .once(),
    );
}

#[test]
fn failed_queue_deletion_resets_the_controller_and_answers_every_command() {
    let (ctrl, h, mut pool) = up();
    let (qp, iova) = read_stuck(&ctrl, &h, &mut pool);
    fail_delete(&h);
    let mut done = Vec::new();
    qp.delete_with(|c| done.push(c)).unwrap();
    assert_eq!(ctrl.resets(), 1, "the reset deleted the queue instead");
    assert_eq!(
        done[0].result,
        Err(IoError::Status(Status::new(
            StatusCodeType::GENERIC,
            generic::ABORTED_SQ_DELETION
        )))
    );
    let buf = only_buf(&mut done);
    assert_eq!(buf.iova(), iova);
    assert!(!buf.is_quarantined());
    // The queue id is free again.
    let _again = ctrl.create_io_qpair(QueuePairOptions::default()).unwrap();
}

#[test]
fn failed_queue_deletion_on_a_controller_that_cannot_be_reset_quiesces_it() {
    let (ctrl, h, mut pool) = up();
    let (qp, iova) = read_stuck(&ctrl, &h, &mut pool);
    fail_delete(&h);
    h.set_ignores_disable(true);
    let mut done = Vec::new();
    let e = qp.delete_with(|c| done.push(c)).unwrap_err();
    assert!(matches!(e, DriverError::AdminFailed { .. }), "{e}");
    assert!(h.is_quiesced());
    assert_eq!(done[0].result, Err(IoError::Gone(DeviceGone::Failed)));
    let buf = only_buf(&mut done);
    assert!(!buf.is_quarantined());
    assert!(!h.dma_write(iova, &[1; 8]));
}

#[test]
fn failed_queue_deletion_without_quiesce_quarantines_buffers_and_says_so() {
    let (ctrl, h, mut pool) = up();
    let (qp, iova) = read_stuck(&ctrl, &h, &mut pool);
    fail_delete(&h);
    h.set_ignores_disable(true);
    h.set_quiesce_fails(true);
    let mut done = Vec::new();
    let e = qp.delete_with(|c| done.push(c)).unwrap_err();
    assert!(matches!(e, DriverError::DmaQuarantined { .. }), "{e}");
    assert!(
        e.to_string().contains("deleting an I/O queue pair failed"),
        "{e}"
    );
    let buf = only_buf(&mut done);
    assert!(buf.is_quarantined());
    pool.free(buf).unwrap();
    never_handed_out_again(&mut pool, iova, 512);
}

/// Found by fuzzing: after a reset that could not be proven to stop the
/// device, an idle queue pair was deleted as if the reset had removed its
/// queues, and its rings were released while the controller could still
/// write its CQ.
#[test]
fn idle_queue_pair_deleted_after_an_unproven_stop_keeps_its_rings_mapped() {
    let (ctrl, h, _pool) = up();
    let qp = ctrl
        .create_io_qpair(QueuePairOptions::default().with_entries(8))
        .unwrap();
    let qid = qp.qid();
    h.set_ignores_disable(true);
    h.set_quiesce_fails(true);
    assert!(ctrl.reset().is_err());
    let before = nvme_engine::dma::quarantined_bytes();
    qp.delete_with(|c| panic!("nothing was outstanding: {}", c.token))
        .unwrap();
    assert!(nvme_engine::dma::quarantined_bytes() > before);
    // The controller, never stopped, writes its CQ: the memory is still
    // there for it, and nobody else's.
    let c = nvme_engine::spec::completion::Completion {
        dw0: 0,
        dw1: 0,
        sqhd: 0,
        sqid: qid,
        cid: 0,
        status_phase: 0,
    };
    assert!(h.inject_completion(qid, c));
    assert_eq!(
        h.dma_faults(),
        0,
        "the CQ was written after its memory went"
    );
}

#[test]
fn shadow_doorbell_pages_of_a_controller_that_cannot_be_stopped_stay_mapped() {
    let (ctrl, h, pool) = up();
    assert!(ctrl.shadow_doorbells_active());
    let (shadow, event) = h.doorbell_buffer_pages().expect("pages configured");
    h.set_ignores_disable(true);
    h.set_quiesce_fails(true);
    drop(pool);
    drop(ctrl);
    // The controller still runs and may write EventIdx values: both pages
    // must still be memory the device can reach, never released for reuse.
    assert!(h.dma_write(event, &[0xee; 8]));
    assert!(h.dma_write(shadow, &[0xee; 8]));
}
