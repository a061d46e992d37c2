//! Memory needs are checked against what the machine (MemAvailable) and the
//! cgroup (memory.max / memory.limit_in_bytes) have left before anything is
//! mapped: an oversized emulated controller or DMA pool fails at once with
//! needed and available bytes, instead of being killed by the OOM killer.

use nvme_emu::{EmuConfig, EmuController, EmuError, EmuNamespaceConfig};
use nvme_engine::dma::{DmaError, memory_budget};
use nvme_engine::{Controller, ControllerOptions, DriverError};

#[test]
fn emulated_controller_larger_than_memory_is_refused_naming_needed_and_available() {
    let budget = memory_budget().expect("this machine reports its memory");
    // 64 namespaces of 1/32 of what is available: twice too much in total.
    let per_ns = (budget.available / 32).max(1 << 20) / 512 * 512;
    let mut cfg = EmuConfig::ram(per_ns);
    for _ in 1..64 {
        cfg = cfg.namespace(EmuNamespaceConfig::ram(512, per_ns / 512));
    }
    let e = EmuController::new(cfg).unwrap_err();
    assert!(
        matches!(e, EmuError::Memory(DmaError::MemoryShort { .. })),
        "{e}"
    );
    let m = e.to_string();
    assert!(
        m.contains("the emulated controller's RAM namespaces needs")
            && m.contains("are available")
            && m.contains("back the namespaces with a file or null media"),
        "{m}"
    );
}

#[test]
fn null_namespaces_of_any_size_need_no_memory() {
    let cfg = EmuConfig::ram(1 << 20)
        .without_namespaces()
        .namespace(EmuNamespaceConfig::null(4096, 1 << 40));
    assert!(EmuController::new(cfg).is_ok());
}

#[test]
fn dma_pool_larger_than_memory_is_refused_before_mapping() {
    let ctrl = Controller::new(
        EmuController::new(EmuConfig::ram(1 << 20)).unwrap(),
        ControllerOptions::default(),
    )
    .unwrap();
    let budget = memory_budget().unwrap();
    let too_big = (budget.available as usize).saturating_mul(2);
    let e = ctrl.create_pool(too_big).unwrap_err();
    let DriverError::Dma { source, .. } = &e else {
        panic!("{e}")
    };
    // Ordinary memory (no hugepages reserved) is checked against the
    // budget; with hugepages reserved the hugepage count refuses it.
    assert!(
        matches!(
            source,
            DmaError::MemoryShort { .. } | DmaError::HugepagesMissing { .. }
        ),
        "{source}"
    );
}
