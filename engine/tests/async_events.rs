//! The driver's Asynchronous Event Request handling against the emulated
//! controller: requests outstanding from bring-up (AERL+1, bounded),
//! namespaces attached, detached and resized at run time, SMART / Health
//! and error events with their log pages, masking lifted by the driver's
//! log read, re-arming after a reset, a controller that refuses requests,
//! and shutdown with requests outstanding. The emulator runs inline, so an
//! event is in the admin completion queue when the call that raises it
//! returns, and `process_events` has handled it when it returns: no test
//! waits on a clock.

mod driver_common;

use driver_common::*;
use nvme_emu::{EmuConfig, EmuController, EmuHandle, EmuNamespaceConfig};
use nvme_engine::spec::command::AdminOpcode;
use nvme_engine::spec::events::AsyncEventType;
use nvme_engine::spec::features::FeatureId;
use nvme_engine::spec::status::generic;
use nvme_engine::{Controller, ControllerEvent, ControllerOptions, IoError, SubmitErrorKind};

fn config(limit: u8) -> EmuConfig {
    let mut c = EmuConfig::ram(1 << 20);
    c.async_event_limit = limit;
    c.max_namespaces = 4;
    c
}

fn up(limit: u8) -> (Controller<EmuController>, EmuHandle) {
    bring_up(config(limit), ControllerOptions::default())
}

/// Default options changed by `f` (the options type is non-exhaustive).
fn options(f: impl FnOnce(&mut ControllerOptions)) -> ControllerOptions {
    let mut o = ControllerOptions::default();
    f(&mut o);
    o
}

/// Handle what the controller reported and take the events.
fn events(ctrl: &Controller<EmuController>) -> Vec<ControllerEvent> {
    ctrl.process_events();
    ctrl.events()
}

#[test]
fn aerl_plus_one_requests_are_outstanding_from_bring_up() {
    let (ctrl, emu) = up(3);
    let s = ctrl.event_stats();
    assert_eq!((s.requests_wanted, s.requests_outstanding), (3, 3));
    assert_eq!(emu.admin_commands(AdminOpcode::ASYNC_EVENT_REQUEST), 3);
    assert_eq!(s.failed_requests, 0, "no request beyond the limit");
    assert!(ctrl.events().is_empty());
    assert_eq!(
        ctrl.process_events(),
        0,
        "nothing completes without an event"
    );
}

#[test]
fn outstanding_requests_are_bounded_by_the_admin_queue() {
    let (ctrl, _emu) = bring_up(config(16), options(|o| o.admin_queue_entries = 4));
    let s = ctrl.event_stats();
    assert_eq!(
        (s.requests_wanted, s.requests_outstanding),
        (2, 2),
        "a 4-entry admin queue leaves room for two requests and one command"
    );
    // Admin commands still work beside them.
    ctrl.get_features(FeatureId::NUMBER_OF_QUEUES, 0).unwrap();
}

#[test]
fn requests_can_be_turned_off() {
    let (ctrl, emu) = bring_up(config(4), options(|o| o.async_events = false));
    assert_eq!(ctrl.event_stats().requests_outstanding, 0);
    assert_eq!(emu.admin_commands(AdminOpcode::ASYNC_EVENT_REQUEST), 0);
}

#[test]
fn attached_namespace_is_reported_and_usable() {
    let (ctrl, emu) = up(2);
    let mut qp = ctrl.create_io_qpair(Default::default()).unwrap();
    let mut pool = ctrl.create_pool(1 << 20).unwrap();
    let nsid = emu
        .attach_namespace(EmuNamespaceConfig::ram(4096, 256))
        .unwrap();
    let ev = events(&ctrl);
    let ns = match ev.as_slice() {
        [ControllerEvent::NamespaceAttached(ns)] => ns.clone(),
        other => panic!("expected one attach event, got {other:?}"),
    };
    assert_eq!((ns.id(), ns.blocks(), ns.block_size()), (nsid, 256, 4096));
    assert_eq!(ctrl.active_namespace(nsid).unwrap().blocks(), 256);
    assert_eq!(ctrl.active_namespaces().len(), 2);
    let data = pattern(7, 8192);
    let buf = qp
        .write_sync(&ns, 10, filled(&mut pool, &data), false)
        .unwrap();
    let buf = qp.read_sync(&ns, 10, buf).unwrap();
    assert_eq!(buf.to_vec(), data);
    let s = ctrl.event_stats();
    assert_eq!((s.namespace_notices, s.namespace_changes), (1, 1));
    assert_eq!(s.requests_outstanding, 2, "re-armed after the event");
    // The driver read the Changed Namespace List, which unmasks the
    // notice: a second attach is reported too.
    let second = emu
        .attach_namespace(EmuNamespaceConfig::ram(512, 64))
        .unwrap();
    match events(&ctrl).as_slice() {
        [ControllerEvent::NamespaceAttached(ns)] => assert_eq!(ns.id(), second),
        other => panic!("expected a second attach event, got {other:?}"),
    }
    assert_eq!(ctrl.admin_stats().ignored_completions, 0);
}

#[test]
fn detached_namespace_io_fails_with_invalid_namespace_and_is_answered_once() {
    let (ctrl, emu) = up(2);
    let ns = ctrl.namespace(1).unwrap().clone();
    let mut qp = ctrl.create_io_qpair(Default::default()).unwrap();
    let mut pool = ctrl.create_pool(1 << 20).unwrap();
    emu.detach_namespace(1).unwrap();
    match events(&ctrl).as_slice() {
        [ControllerEvent::NamespaceDetached { nsid: 1 }] => {}
        other => panic!("expected a detach event, got {other:?}"),
    }
    assert!(ctrl.active_namespace(1).is_none());
    assert!(ctrl.active_namespaces().is_empty());
    let before = *qp.stats();
    let e = qp
        .read_sync(&ns, 0, pool.alloc(4096).unwrap())
        .expect_err("a detached namespace cannot be read");
    match e.error {
        IoError::Status(s) => assert_eq!(s.sc(), generic::INVALID_NAMESPACE, "{s}"),
        other => panic!("expected Invalid Namespace or Format, got {other}"),
    }
    assert!(
        e.error.to_string().contains("Invalid Namespace"),
        "{}",
        e.error
    );
    assert!(e.buf.is_some(), "the buffer comes back");
    let after = *qp.stats();
    assert_eq!(
        after.completed - before.completed,
        1,
        "answered exactly once"
    );
    assert_eq!(after.timeouts, 0);
}

#[test]
fn resized_namespace_new_size_is_used_by_the_range_checks() {
    let (ctrl, emu) = up(2);
    let old = ctrl.namespace(1).unwrap().clone();
    let old_blocks = old.blocks();
    let mut qp = ctrl.create_io_qpair(Default::default()).unwrap();
    let mut pool = ctrl.create_pool(1 << 20).unwrap();
    emu.resize_namespace(1, old_blocks * 2).unwrap();
    let grown = match events(&ctrl).as_slice() {
        [
            ControllerEvent::NamespaceChanged {
                old_blocks: was,
                namespace,
            },
        ] => {
            assert_eq!(*was, old_blocks);
            namespace.clone()
        }
        other => panic!("expected a change event, got {other:?}"),
    };
    assert_eq!(grown.blocks(), old_blocks * 2);
    assert_eq!(ctrl.active_namespace(1).unwrap().blocks(), old_blocks * 2);
    // Past the old end: the old copy refuses, the new one reaches the device.
    let beyond = old_blocks + 10;
    let e = qp
        .read_sync(&old, beyond, pool.alloc(512).unwrap())
        .expect_err("old size");
    assert!(matches!(
        e.error,
        IoError::Rejected(SubmitErrorKind::LbaOutOfRange { .. })
    ));
    let data = pattern(3, 512);
    let b = qp
        .write_sync(&grown, beyond, filled(&mut pool, &data), false)
        .unwrap();
    assert_eq!(qp.read_sync(&grown, beyond, b).unwrap().to_vec(), data);

    // Shrink: the new size refuses what the old allowed.
    emu.resize_namespace(1, old_blocks / 2).unwrap();
    let shrunk = match events(&ctrl).as_slice() {
        [ControllerEvent::NamespaceChanged { namespace, .. }] => namespace.clone(),
        other => panic!("expected a change event, got {other:?}"),
    };
    assert_eq!(shrunk.blocks(), old_blocks / 2);
    let e = qp
        .read_sync(&shrunk, old_blocks / 2, pool.alloc(512).unwrap())
        .expect_err("new size");
    assert!(matches!(
        e.error,
        IoError::Rejected(SubmitErrorKind::LbaOutOfRange { .. })
    ));
}

#[test]
fn smart_critical_warnings_are_reported_with_the_log_and_unmasked() {
    let (ctrl, emu) = up(2);
    emu.set_critical_warning(0x02);
    match events(&ctrl).as_slice() {
        [ControllerEvent::Health { event, log }] => {
            assert_eq!(event.kind, AsyncEventType::SMART_HEALTH);
            assert_eq!(log.critical_warning & 0x02, 0x02);
        }
        other => panic!("expected a health event, got {other:?}"),
    }
    // The driver's log read unmasked SMART events: another bit is reported.
    emu.set_critical_warning(0x02 | 0x01);
    match events(&ctrl).as_slice() {
        [ControllerEvent::Health { log, .. }] => assert_eq!(log.critical_warning & 0x03, 0x03),
        other => panic!("expected a second health event, got {other:?}"),
    }
    let s = ctrl.event_stats();
    assert_eq!((s.health, s.received, s.log_read_failures), (2, 2, 0));
    assert_eq!(s.requests_outstanding, 2);
}

#[test]
fn error_events_are_reported_with_the_error_log_entry() {
    let (ctrl, emu) = up(2);
    emu.report_internal_error(true);
    match events(&ctrl).as_slice() {
        [ControllerEvent::Error { event, entry }] => {
            assert_eq!(event.kind, AsyncEventType::ERROR);
            assert!(entry.is_some(), "the log entry is read");
            assert!(event.to_string().contains("Persistent Internal Error"));
        }
        other => panic!("expected an error event, got {other:?}"),
    }
    emu.report_internal_error(false);
    assert_eq!(events(&ctrl).len(), 1, "unmasked by the log read");
    assert_eq!(ctrl.event_stats().errors, 2);
}

#[test]
fn an_event_reaped_while_an_admin_command_waits_is_kept_not_ignored() {
    let (ctrl, emu) = up(2);
    emu.set_critical_warning(0x04);
    // This command's wait reaps the event's completion first.
    ctrl.get_features(FeatureId::NUMBER_OF_QUEUES, 0).unwrap();
    assert_eq!(ctrl.admin_stats().ignored_completions, 0);
    assert!(matches!(
        events(&ctrl).as_slice(),
        [ControllerEvent::Health { .. }]
    ));
}

#[test]
fn requests_are_rearmed_after_every_reset() {
    let (ctrl, emu) = up(3);
    for round in 1..=2u64 {
        ctrl.reset().unwrap();
        let s = ctrl.event_stats();
        assert_eq!(s.requests_outstanding, 3, "round {round}");
        assert_eq!(s.rearmed_after_reset, round);
        assert_eq!(
            emu.admin_commands(AdminOpcode::ASYNC_EVENT_REQUEST),
            3 * (round + 1)
        );
    }
    // The reset also cleared the event configuration; the driver set it
    // again, so events still arrive.
    emu.set_critical_warning(0x02);
    assert!(matches!(
        events(&ctrl).as_slice(),
        [ControllerEvent::Health { .. }]
    ));
    assert_eq!(ctrl.event_stats().failed_requests, 0);
}

#[test]
fn requests_refused_with_limit_exceeded_are_counted_and_not_resent() {
    // The controller claims AERL 7 (eight requests) but keeps only two.
    let emu = EmuController::new(config(2)).unwrap();
    let h = emu.handle();
    h.patch_identify_controller(259, 7);
    let ctrl = Controller::new(emu, ControllerOptions::default()).unwrap();
    ctrl.process_events();
    let s = ctrl.event_stats();
    assert_eq!(s.requests_wanted, 8);
    assert_eq!(s.failed_requests, 6, "six refused with Limit Exceeded");
    assert_eq!(s.requests_outstanding, 2);
    assert_eq!(ctrl.process_events(), 0, "no re-send loop");
    assert_eq!(h.admin_commands(AdminOpcode::ASYNC_EVENT_REQUEST), 8);
    // The two that stayed still deliver events.
    h.set_critical_warning(0x01);
    assert!(matches!(
        events(&ctrl).as_slice(),
        [ControllerEvent::Health { .. }]
    ));
}

#[test]
fn shutdown_with_requests_outstanding_completes_and_loses_no_io() {
    let (ctrl, _emu) = up(4);
    let ns = ctrl.namespace(1).unwrap().clone();
    let mut qp = ctrl.create_io_qpair(Default::default()).unwrap();
    let mut pool = ctrl.create_pool(1 << 20).unwrap();
    let b = qp
        .write_sync(&ns, 0, filled(&mut pool, &pattern(1, 4096)), false)
        .unwrap();
    assert_eq!(ctrl.event_stats().requests_outstanding, 4);
    drop(b);
    drop(qp);
    ctrl.shutdown()
        .expect("shutdown does not wait for the requests");
    assert_eq!(ctrl.process_events(), 0);
    assert_eq!(ctrl.admin_stats().ignored_completions, 0);
    drop(ctrl);
}

#[test]
fn the_admin_worker_handles_events_without_the_application_polling() {
    for mode in modes() {
        let (ctrl, emu) = bring_up(config(2).mode(mode), ControllerOptions::default());
        emu.set_critical_warning(0x01);
        // No process_events: the worker looks every admin_poll_interval.
        // Bounded generously; the assertion does not depend on how soon.
        let start = std::time::Instant::now();
        let got = loop {
            let ev = ctrl.events();
            if !ev.is_empty() {
                break ev;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(120),
                "the worker never handled the event"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert!(matches!(got.as_slice(), [ControllerEvent::Health { .. }]));
        assert_eq!(ctrl.event_stats().requests_outstanding, 2);
    }
}
