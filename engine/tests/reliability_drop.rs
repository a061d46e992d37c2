//! Dropping an I/O queue pair with commands outstanding keeps the promise
//! that `delete_with` keeps, with nobody to answer: the queue is deleted on
//! the device (or the controller reset, quiesced, or its memory
//! quarantined) before the commands' buffers are released, so the emulated
//! controller holds no command pointing at released memory and a late
//! device write never lands in memory that was handed back. A
//! `DirectQueue` of nvme-reactor is dropped through the same path.

use std::time::Duration;

use nvme_emu::{EmuConfig, EmuController, EmuHandle, FaultAction, FaultRule};
use nvme_engine::dma::DmaPool;
use nvme_engine::spec::command::AdminOpcode;
use nvme_engine::spec::status::{Status, StatusCodeType, generic};
use nvme_engine::{Controller, ControllerOptions, IoQueuePair, QueuePairOptions};

type Ctrl = Controller<EmuController>;

fn up() -> (Ctrl, EmuHandle, DmaPool) {
    let emu = EmuController::new(EmuConfig::ram(1 << 20)).unwrap();
    let h = emu.handle();
    let opts = ControllerOptions::default().with_admin_timeout(Duration::from_millis(100));
    let ctrl = Controller::new(emu, opts).unwrap();
    let pool = ctrl.create_pool(1 << 20).unwrap();
    (ctrl, h, pool)
}

/// A queue pair with three reads the device fetched and will never
/// complete; returns their buffers' IOVAs.
fn stuck_reads(
    ctrl: &Ctrl,
    h: &EmuHandle,
    pool: &mut DmaPool,
) -> (IoQueuePair<EmuController>, Vec<u64>) {
    let ns = ctrl.namespace(1).unwrap().clone();
    let mut qp = ctrl
        .create_io_qpair(QueuePairOptions::default().with_entries(8))
        .unwrap();
    h.add_fault(FaultRule::new(FaultAction::NeverComplete).io().times(3));
    let mut iovas = Vec::new();
    for t in 0..3u64 {
        let buf = pool.alloc(4096).unwrap();
        iovas.push(buf.iova());
        qp.read(&ns, t * 8, buf, t).unwrap();
    }
    qp.ring_doorbell();
    qp.process_completions(usize::MAX, |c| panic!("lost read {} completed", c.token));
    assert_eq!(h.held_commands().len(), 3, "the device holds the reads");
    (qp, iovas)
}

fn fail_sq_deletion(h: &EmuHandle) {
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
fn dropping_a_queue_pair_with_io_outstanding_deletes_its_queue_before_the_buffers_go() {
    let (ctrl, h, mut pool) = up();
    let (qp, _) = stuck_reads(&ctrl, &h, &mut pool);
    drop(qp);
    assert!(
        h.held_commands().is_empty(),
        "the controller still holds commands of a dropped queue pair: {:?}",
        h.held_commands()
    );
    assert_eq!(ctrl.resets(), 0, "an honest device needs no reset");
    // The queue ids are free again and the controller works.
    let mut again = ctrl.create_io_qpair(QueuePairOptions::default()).unwrap();
    let ns = ctrl.namespace(1).unwrap().clone();
    let buf = again.read_sync(&ns, 0, pool.alloc(4096).unwrap()).unwrap();
    pool.free(buf).unwrap();
}

#[test]
fn dropping_a_queue_pair_the_device_will_not_delete_resets_the_controller_first() {
    let (ctrl, h, mut pool) = up();
    let (qp, _) = stuck_reads(&ctrl, &h, &mut pool);
    fail_sq_deletion(&h);
    drop(qp);
    assert_eq!(ctrl.resets(), 1, "the reset deleted the queue instead");
    assert!(h.held_commands().is_empty(), "{:?}", h.held_commands());
    let _again = ctrl.create_io_qpair(QueuePairOptions::default()).unwrap();
}

#[test]
fn dropping_a_queue_pair_on_a_controller_that_cannot_be_reset_quiesces_it() {
    let (ctrl, h, mut pool) = up();
    let (qp, iovas) = stuck_reads(&ctrl, &h, &mut pool);
    fail_sq_deletion(&h);
    h.set_ignores_disable(true);
    drop(qp);
    assert!(h.is_quiesced(), "quiesced before the buffers were released");
    for iova in iovas {
        assert!(!h.dma_write(iova, &[1; 8]), "a late write still lands");
    }
}

#[test]
fn dropping_a_queue_pair_on_a_controller_that_cannot_be_stopped_keeps_its_buffers_mapped() {
    let (ctrl, h, mut pool) = up();
    let (qp, iovas) = stuck_reads(&ctrl, &h, &mut pool);
    fail_sq_deletion(&h);
    h.set_ignores_disable(true);
    h.set_quiesce_fails(true);
    // A process-wide count: no other test in this file quarantines memory.
    let before = nvme_engine::dma::quarantined_bytes();
    drop(qp);
    // Nothing of the pool's memory may be released or reused while the
    // controller, never stopped, still holds the reads.
    while let Ok(b) = pool.alloc(4096) {
        assert!(
            !iovas.contains(&b.iova()),
            "a held buffer was handed out again"
        );
        std::mem::forget(b);
    }
    drop(pool);
    assert!(
        nvme_engine::dma::quarantined_bytes() > before,
        "the pool's memory was released while the device holds the reads"
    );
    drop(ctrl);
    for iova in iovas {
        assert!(
            h.dma_write(iova, &[1; 8]),
            "the memory is still there for it"
        );
    }
    assert_eq!(h.dma_faults(), 0, "the device wrote memory that went away");
}
