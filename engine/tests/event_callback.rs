//! Asynchronous events delivered to a callback registered on the
//! controller, against the emulated controller (inline, so an event is in
//! the admin completion queue when the call raising it returns, and
//! `process_events` returns only once the callback has seen it): a
//! namespace attached, resized and detached invokes the callback once each,
//! in order, with nothing queued meanwhile; removing the callback queues
//! events again; inside the callback the controller's event polling and
//! callback registration refuse instead of deadlocking, while admin
//! commands work; a panicking callback is removed and counted; left
//! alone, the admin worker thread runs the callback itself.

mod driver_common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use driver_common::*;
use nvme_emu::{EmuConfig, EmuController, EmuHandle, EmuNamespaceConfig};
use nvme_engine::spec::features::FeatureId;
use nvme_engine::{Controller, ControllerEvent, ControllerOptions};

fn up() -> (Arc<Controller<EmuController>>, EmuHandle) {
    let mut c = EmuConfig::ram(1 << 20);
    c.max_namespaces = 4;
    let (ctrl, emu) = bring_up(c, ControllerOptions::default());
    (Arc::new(ctrl), emu)
}

/// A short name for each event.
fn name(e: &ControllerEvent) -> String {
    match e {
        ControllerEvent::NamespaceAttached(ns) => format!("attached {}", ns.id()),
        ControllerEvent::NamespaceDetached { nsid } => format!("detached {nsid}"),
        ControllerEvent::NamespaceChanged {
            old_blocks,
            namespace,
        } => format!(
            "resized {} {old_blocks}->{}",
            namespace.id(),
            namespace.blocks()
        ),
        other => format!("{other}"),
    }
}

#[test]
fn attach_resize_and_detach_invoke_the_callback_once_each_in_order() {
    let (ctrl, emu) = up();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    assert!(ctrl.set_event_callback(move |e| sink.lock().unwrap().push(name(e))));

    let nsid = emu
        .attach_namespace(EmuNamespaceConfig::ram(512, 64))
        .unwrap();
    ctrl.process_events();
    emu.resize_namespace(nsid, 128).unwrap();
    ctrl.process_events();
    emu.detach_namespace(nsid).unwrap();
    ctrl.process_events();
    // Nothing more arrives later.
    ctrl.process_events();

    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            format!("attached {nsid}"),
            format!("resized {nsid} 64->128"),
            format!("detached {nsid}"),
        ]
    );
    assert!(ctrl.events().is_empty(), "delivered events are not queued");
    let s = ctrl.event_stats();
    assert_eq!((s.callback_events, s.namespace_changes), (3, 3));
    assert!(ctrl.active_namespace(nsid).is_none());

    // Without the callback, events are queued again.
    assert!(ctrl.clear_event_callback());
    let again = emu
        .attach_namespace(EmuNamespaceConfig::ram(512, 32))
        .unwrap();
    ctrl.process_events();
    assert_eq!(seen.lock().unwrap().len(), 3, "the old callback is gone");
    match ctrl.events().as_slice() {
        [ControllerEvent::NamespaceAttached(ns)] => assert_eq!(ns.id(), again),
        other => panic!("expected the attach queued, got {other:?}"),
    }
}

#[test]
fn inside_the_callback_polling_and_registration_refuse_and_admin_commands_work() {
    let (ctrl, emu) = up();
    let calls = Arc::new(AtomicUsize::new(0));
    let found = Arc::new(Mutex::new(Vec::new()));
    let (c2, n2, f2) = (
        Arc::downgrade(&ctrl),
        Arc::clone(&calls),
        Arc::clone(&found),
    );
    assert!(ctrl.set_event_callback(move |_| {
        n2.fetch_add(1, Ordering::SeqCst);
        let Some(ctrl) = c2.upgrade() else { return };
        // The callback may run on the admin worker: record, assert later.
        let polled = ctrl.process_events();
        let replaced = ctrl.set_event_callback(|_| {});
        let cleared = ctrl.clear_event_callback();
        // The admin lock is not held while the callback runs.
        let admin = ctrl.get_features(FeatureId::NUMBER_OF_QUEUES, 0).is_ok();
        f2.lock().unwrap().push((polled, replaced, cleared, admin));
    }));
    emu.attach_namespace(EmuNamespaceConfig::ram(512, 64))
        .unwrap();
    ctrl.process_events();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        *found.lock().unwrap(),
        vec![(0, false, false, true)],
        "(events polled, replaced, cleared, admin command done) inside the callback"
    );
    assert_eq!(ctrl.event_stats().callback_panics, 0);
    // Still registered: the next event reaches it too.
    emu.attach_namespace(EmuNamespaceConfig::ram(512, 64))
        .unwrap();
    ctrl.process_events();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn a_panicking_callback_is_removed_and_later_events_are_queued() {
    let (ctrl, emu) = up();
    assert!(ctrl.set_event_callback(|_| panic!("the application's bug")));
    let first = emu
        .attach_namespace(EmuNamespaceConfig::ram(512, 64))
        .unwrap();
    ctrl.process_events();
    assert_eq!(ctrl.event_stats().callback_panics, 1);
    let second = emu
        .attach_namespace(EmuNamespaceConfig::ram(512, 64))
        .unwrap();
    ctrl.process_events();
    match ctrl.events().as_slice() {
        [ControllerEvent::NamespaceAttached(ns)] => assert_eq!(ns.id(), second),
        other => panic!("expected the second attach queued, got {other:?}"),
    }
    assert!(
        ctrl.active_namespace(first).is_some(),
        "the first was handled"
    );
}

#[test]
fn without_process_events_the_admin_worker_runs_the_callback() {
    let (ctrl, emu) = up();
    let threads = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&threads);
    assert!(ctrl.set_event_callback(move |_| {
        let name = std::thread::current().name().map(str::to_string);
        sink.lock().unwrap().push(name);
    }));
    emu.attach_namespace(EmuNamespaceConfig::ram(512, 64))
        .unwrap();
    // The worker looks every admin_poll_interval (10 ms); the bound only
    // guards against a worker that never does.
    let start = std::time::Instant::now();
    while threads.lock().unwrap().is_empty() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "the admin worker never delivered the event"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let seen = threads.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let name = seen[0].clone().unwrap_or_default();
    assert!(name.starts_with("nvme-admin"), "ran on {name:?}");
    assert!(ctrl.events().is_empty());
}
