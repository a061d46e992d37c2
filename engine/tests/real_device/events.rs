//! Asynchronous events from a real NVMe controller (the QEMU guest's, or a
//! real SSD). Skipped, saying why, unless `NVME_ENGINE_TEST_PCI` names a
//! controller that `scripts/setup.sh` bound to vfio-pci (or
//! uio_pci_generic, with `NVME_ENGINE_TEST_NOIOMMU=1`), and
//! `NVME_ENGINE_TEST_WRITE=1` allows changing its state: the test sets the
//! composite temperature's over-temperature threshold (Set Features 04h)
//! below the current temperature, which makes the controller raise a SMART /
//! Health Temperature Threshold event; the driver's outstanding request
//! completes, the driver reads the SMART log and reports the event. The
//! threshold is restored afterwards. It also checks that the requests are
//! outstanding from bring-up and again after a reset.

use std::time::{Duration, Instant};

use nvme_engine::spec::events::{AsyncEventType, smart_info};
use nvme_engine::spec::features::FeatureId;
use nvme_engine::vfio::{RealDevice, VfioOptions};
use nvme_engine::{Controller, ControllerEvent, ControllerOptions};

fn flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1" || v == "yes")
}

fn address(test: &str) -> Option<String> {
    let a = std::env::var("NVME_ENGINE_TEST_PCI").ok().and_then(|v| {
        v.split([' ', ','])
            .find(|s| !s.is_empty())
            .map(str::to_string)
    });
    if a.is_none() || !flag("NVME_ENGINE_TEST_WRITE") {
        eprintln!(
            "{test}: SKIPPED: set NVME_ENGINE_TEST_PCI=<bdf> to a controller bound by \
             `sudo scripts/setup.sh` and NVME_ENGINE_TEST_WRITE=1 (the test changes its \
             temperature threshold, then restores it)"
        );
        return None;
    }
    a
}

// Field by field: the options types are not built with struct literals
// outside their crate.
#[allow(clippy::field_reassign_with_default)]
fn open(addr: &str) -> Controller<RealDevice> {
    let mut o = VfioOptions::default();
    o.no_iommu = flag("NVME_ENGINE_TEST_NOIOMMU") || flag("NVME_ENGINE_TEST_NO_IOMMU");
    let dev = RealDevice::open(addr, o).unwrap_or_else(|e| panic!("opening {addr}: {e}"));
    Controller::new(dev, ControllerOptions::default())
        .unwrap_or_else(|e| panic!("bring-up of {addr}: {e}"))
}

/// Events until one matches `want`, within a generous bound (a real
/// controller posts the completion on its own time). Also used by the
/// namespace attachment test.
pub(super) fn wait_for(
    ctrl: &Controller<RealDevice>,
    want: impl Fn(&ControllerEvent) -> bool,
) -> ControllerEvent {
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < Duration::from_secs(30) {
        ctrl.process_events();
        for e in ctrl.events() {
            eprintln!("event: {e}");
            if want(&e) {
                return e;
            }
            seen.push(e);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("no matching event within 30 s; saw {seen:?}");
}

#[test]
fn real_controller_reports_a_temperature_threshold_event_with_the_smart_log() {
    let test = "real_controller_reports_a_temperature_threshold_event_with_the_smart_log";
    let Some(addr) = address(test) else { return };
    let ctrl = open(&addr);
    let aerl = ctrl.identify().async_event_limit();
    let s = ctrl.event_stats();
    eprintln!("{addr}: AERL+1 = {aerl}; {s:?}");
    assert!(
        s.requests_outstanding > 0,
        "requests outstanding from bring-up"
    );
    assert_eq!(s.requests_outstanding, s.requests_wanted);

    let smart = ctrl.smart_log().expect("SMART log");
    let kelvin = smart.composite_temperature.get();
    // TMPSEL 0 (composite), THSEL 0 (over-temperature): TMPTH in bits 15:0.
    let original = ctrl
        .get_features(FeatureId::TEMPERATURE_THRESHOLD, 0)
        .expect("Get Features Temperature Threshold");
    eprintln!(
        "{addr}: composite temperature {kelvin} K, over-temperature threshold {} K",
        original & 0xffff
    );
    assert!(kelvin > 1, "the controller reports no temperature");
    ctrl.set_features(FeatureId::TEMPERATURE_THRESHOLD, u32::from(kelvin - 1))
        .expect("Set Features Temperature Threshold below the temperature");
    let event = wait_for(&ctrl, |e| matches!(e, ControllerEvent::Health { .. }));
    // Restore before asserting, so a failure leaves the device as it was.
    ctrl.set_features(FeatureId::TEMPERATURE_THRESHOLD, original & 0xffff)
        .expect("restoring the threshold");
    let ControllerEvent::Health { event, log } = event else {
        unreachable!()
    };
    assert_eq!(event.kind, AsyncEventType::SMART_HEALTH);
    assert_eq!(event.info, smart_info::TEMPERATURE_THRESHOLD, "{event}");
    assert_eq!(
        log.critical_warning & 0x02,
        0x02,
        "the SMART log read for the event shows the temperature warning"
    );
    let s = ctrl.event_stats();
    assert_eq!((s.health, s.log_read_failures), (1, 0));
    assert_eq!(s.requests_outstanding, s.requests_wanted, "re-armed");
    assert_eq!(ctrl.admin_stats().ignored_completions, 0);

    // A reset drops the requests; the driver sends them again.
    ctrl.reset().expect("reset");
    let after = ctrl.event_stats();
    assert_eq!(after.requests_outstanding, after.requests_wanted);
    assert_eq!(after.rearmed_after_reset, 1);
    ctrl.shutdown().expect("shutdown with requests outstanding");
}
