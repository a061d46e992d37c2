//! Controller bring-up, Identify, namespaces, admin commands, queue pair
//! management and shutdown against the emulated controller.

mod driver_common;

use std::time::Duration;

use driver_common::*;
use nvme_emu::{EmuConfig, EmuController, EmuNamespaceConfig, FaultAction, FaultRule};
use nvme_engine::DriverError;
use nvme_engine::spec::command::cns;
use nvme_engine::spec::features::FeatureId;
use nvme_engine::spec::identify::IdentifyController;
use nvme_engine::spec::log::LogId;
use nvme_engine::spec::status::generic;
use nvme_engine::spec::{
    command::{AdminOpcode, Command},
    status::{Status, StatusCodeType},
};
use nvme_engine::{Controller, ControllerOptions, QueuePairOptions};
use zerocopy::FromBytes;

#[test]
fn bring_up_identifies_controller_and_namespaces() {
    for mode in modes() {
        let cfg = EmuConfig::ram(1 << 20)
            .namespace(EmuNamespaceConfig::ram(4096, 256))
            .mode(mode);
        let (ctrl, _h) = bring_up(cfg, ControllerOptions::default());
        assert_eq!(ctrl.identify().serial(), "EMU0001");
        assert!(ctrl.version().mjr() >= 1);
        let ns = ctrl.namespaces();
        assert_eq!(ns.len(), 2);
        assert_eq!(
            (ns[0].id(), ns[0].block_size(), ns[0].blocks()),
            (1, 512, 2048)
        );
        assert_eq!(
            (ns[1].id(), ns[1].block_size(), ns[1].blocks()),
            (2, 4096, 256)
        );
        assert_eq!(ctrl.max_transfer_bytes(), 512 << 10);
        assert_eq!(ns[0].max_blocks_per_io(), 1024);
        assert_eq!(ns[1].max_blocks_per_io(), 128);
        assert!(ns[0].volatile_write_cache());
        assert!(ns[0].supports_write_zeroes() && ns[0].supports_deallocate());
        assert!(ctrl.namespace(3).is_none());
        assert_eq!(ctrl.io_queues_granted(), 64);
        assert!(ctrl.skipped_namespaces().is_empty());
    }
}

#[test]
fn queue_count_uses_what_the_controller_granted() {
    let mut cfg = EmuConfig::ram(1 << 20);
    cfg.io_queues = 3;
    let (ctrl, _h) = bring_up(cfg, ControllerOptions::default());
    assert_eq!(ctrl.io_queues_granted(), 3);
    let opts = ControllerOptions::default().with_io_queues(2);
    let (ctrl, _h) = bring_up(EmuConfig::ram(1 << 20), opts);
    assert_eq!(ctrl.io_queues_granted(), 2);
}

#[test]
fn features_get_and_set_round_trip() {
    for mode in modes() {
        let (ctrl, _h) = bring_up(EmuConfig::ram(1 << 20).mode(mode), Default::default());
        ctrl.set_features(FeatureId::VOLATILE_WRITE_CACHE, 0)
            .unwrap();
        assert_eq!(
            ctrl.get_features(FeatureId::VOLATILE_WRITE_CACHE, 0)
                .unwrap()
                & 1,
            0
        );
        ctrl.set_features(FeatureId::VOLATILE_WRITE_CACHE, 1)
            .unwrap();
        assert_eq!(
            ctrl.get_features(FeatureId::VOLATILE_WRITE_CACHE, 0)
                .unwrap()
                & 1,
            1
        );
        let granted = ctrl.get_features(FeatureId::NUMBER_OF_QUEUES, 0).unwrap();
        assert_eq!(granted & 0xffff, 63);
    }
}

#[test]
fn log_pages_are_read_into_caller_buffers_and_decoded() {
    for mode in modes() {
        let (ctrl, _h) = bring_up(EmuConfig::ram(1 << 20).mode(mode), Default::default());
        let smart = ctrl.smart_log().unwrap();
        assert!(
            smart.composite_temperature.get() > 0,
            "emulator reports a temperature"
        );
        let errors = ctrl.error_log(4).unwrap();
        assert_eq!(errors.len(), 4);
        let mut pool = ctrl.create_pool(1 << 20).unwrap();
        let mut buf = pool.alloc(512).unwrap();
        buf.fill(0xee);
        ctrl.get_log_page(0xffff_ffff, LogId::SMART_HEALTH, &mut buf)
            .unwrap();
        let mut raw = [0u8; 512];
        assert!(buf.read_at(0, &mut raw));
        assert_ne!(raw, [0xee; 512], "device wrote the log into the buffer");
        let mut odd = pool.alloc(512).unwrap();
        odd.set_window(0, 6);
        assert!(matches!(
            ctrl.get_log_page(0, LogId::SMART_HEALTH, &mut odd),
            Err(DriverError::BufferTooSmall { .. })
        ));
    }
}

#[test]
fn raw_admin_command_fills_prps_from_the_buffer() {
    let (ctrl, h) = bring_up(EmuConfig::ram(1 << 20), Default::default());
    let mut pool = ctrl.create_pool(1 << 20).unwrap();
    let mut buf = pool.alloc(4096).unwrap();
    let mut cmd = Command::new(AdminOpcode::IDENTIFY.0, 0);
    cmd.cdw10 = cns::CONTROLLER as u32;
    let before = h.admin_commands(AdminOpcode::IDENTIFY);
    ctrl.admin_command(cmd, Some(&mut buf)).unwrap();
    assert_eq!(h.admin_commands(AdminOpcode::IDENTIFY), before + 1);
    let id = IdentifyController::read_from_bytes(&buf.to_vec()).unwrap();
    assert_eq!(id.serial(), "EMU0001");
    // An unknown opcode fails with the device's status, by name.
    let err = ctrl.admin_command(Command::new(0xEE, 0), None).unwrap_err();
    assert!(err.to_string().contains("Invalid Command Opcode"), "{err}");
}

#[test]
fn queue_pairs_are_limited_to_the_granted_count_and_ids_are_reused() {
    for mode in modes() {
        let opts = ControllerOptions::default().with_io_queues(2);
        let (ctrl, h) = bring_up(EmuConfig::ram(1 << 20).mode(mode), opts);
        let a = ctrl.create_io_qpair(QueuePairOptions::default()).unwrap();
        let b = ctrl.create_io_qpair(QueuePairOptions::default()).unwrap();
        assert_eq!((a.qid(), b.qid()), (1, 2));
        let err = ctrl
            .create_io_qpair(QueuePairOptions::default())
            .unwrap_err();
        assert!(
            matches!(err, DriverError::QueuesExhausted { granted: 2 }),
            "{err}"
        );
        a.delete().unwrap();
        assert_eq!(h.admin_commands(AdminOpcode::DELETE_IO_SQ), 1);
        assert_eq!(h.admin_commands(AdminOpcode::DELETE_IO_CQ), 1);
        let c = ctrl.create_io_qpair(QueuePairOptions::default()).unwrap();
        assert_eq!(c.qid(), 1);
        drop(b); // best-effort delete on drop
        assert_eq!(h.admin_commands(AdminOpcode::DELETE_IO_SQ), 2);
        drop(c);
    }
}

#[test]
fn queue_entries_are_clamped_to_cap_mqes() {
    let mut cfg = EmuConfig::ram(1 << 20);
    cfg.max_queue_entries = 64;
    let (ctrl, _h) = bring_up(cfg, Default::default());
    let qp = ctrl
        .create_io_qpair(QueuePairOptions::default().with_entries(1024))
        .unwrap();
    assert_eq!(qp.capacity(), 63);
    let err = ctrl
        .create_io_qpair(QueuePairOptions::default().with_entries(1))
        .unwrap_err();
    assert!(matches!(
        err,
        DriverError::InvalidOption {
            name: "entries",
            ..
        }
    ));
}

#[test]
fn failed_sq_creation_deletes_the_cq_and_frees_the_queue_id() {
    let (ctrl, h) = bring_up(EmuConfig::ram(1 << 20), Default::default());
    let st = Status::new(StatusCodeType::GENERIC, generic::INTERNAL_ERROR);
    h.add_fault(
        FaultRule::new(FaultAction::CompleteWithStatus(st))
            .admin()
            .opcode(AdminOpcode::CREATE_IO_SQ.0)
            .once(),
    );
    let err = ctrl
        .create_io_qpair(QueuePairOptions::default())
        .unwrap_err();
    assert!(
        matches!(
            err,
            DriverError::AdminFailed {
                command: "Create I/O Submission Queue",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(h.admin_commands(AdminOpcode::DELETE_IO_CQ), 1);
    let qp = ctrl.create_io_qpair(QueuePairOptions::default()).unwrap();
    assert_eq!(qp.qid(), 1, "the id of the failed pair was returned");
}

#[test]
fn failed_bring_up_step_reports_the_command() {
    let emu = EmuController::new(EmuConfig::ram(1 << 20)).unwrap();
    let h = emu.handle();
    let st = Status::new(StatusCodeType::GENERIC, generic::INTERNAL_ERROR);
    h.add_fault(
        FaultRule::new(FaultAction::CompleteWithStatus(st))
            .admin()
            .opcode(AdminOpcode::SET_FEATURES.0),
    );
    let err = Controller::new(emu, ControllerOptions::default())
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("Set Features failed: Internal Error"),
        "{err}"
    );
}

#[test]
fn admin_timeout_is_reported_and_the_queue_stays_usable() {
    for mode in modes() {
        let opts = ControllerOptions::default().with_admin_timeout(Duration::from_millis(100));
        let (ctrl, h) = bring_up(EmuConfig::ram(1 << 20).mode(mode), opts);
        h.add_fault(
            FaultRule::new(FaultAction::NeverComplete)
                .admin()
                .opcode(AdminOpcode::GET_FEATURES.0)
                .once(),
        );
        let err = ctrl
            .get_features(FeatureId::NUMBER_OF_QUEUES, 0)
            .unwrap_err();
        assert!(
            matches!(
                err,
                DriverError::AdminTimeout {
                    command: "Get Features",
                    ..
                }
            ),
            "{err}"
        );
        assert!(ctrl.get_features(FeatureId::NUMBER_OF_QUEUES, 0).is_ok());
    }
}

#[test]
fn vanished_device_and_fatal_status_are_named_errors() {
    for mode in modes() {
        let (ctrl, h) = bring_up(EmuConfig::ram(1 << 20).mode(mode), Default::default());
        h.trigger_fatal();
        let err = ctrl
            .get_features(FeatureId::NUMBER_OF_QUEUES, 0)
            .unwrap_err();
        assert!(matches!(err, DriverError::ControllerFatal { .. }), "{err}");
        let (ctrl, h) = bring_up(EmuConfig::ram(1 << 20).mode(mode), Default::default());
        h.trigger_vanish();
        let err = ctrl
            .get_features(FeatureId::NUMBER_OF_QUEUES, 0)
            .unwrap_err();
        assert!(matches!(err, DriverError::DeviceGone { .. }), "{err}");
    }
}

#[test]
fn shutdown_completes_and_later_admin_commands_are_refused() {
    for mode in modes() {
        let (ctrl, _h) = bring_up(EmuConfig::ram(1 << 20).mode(mode), Default::default());
        let qp = ctrl.create_io_qpair(QueuePairOptions::default()).unwrap();
        qp.delete().unwrap();
        ctrl.shutdown().unwrap();
        let csts = nvme_engine::spec::registers::Csts::from(nvme_engine::Device::read32(
            ctrl.device(),
            0x1c,
        ));
        assert_eq!(csts.shst(), nvme_engine::spec::registers::SHST_COMPLETE);
        ctrl.shutdown().unwrap(); // idempotent
        assert!(matches!(
            ctrl.get_features(FeatureId::NUMBER_OF_QUEUES, 0),
            Err(DriverError::ShutDown)
        ));
        assert!(matches!(
            ctrl.create_io_qpair(QueuePairOptions::default()),
            Err(DriverError::ShutDown)
        ));
    }
}
