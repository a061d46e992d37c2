//! Controllers shared by the fio jobs of one process: the first job that
//! names a controller opens and brings it up; every other job (and thread)
//! naming it gets the same one; the last to let go shuts it down.

#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex, Weak};

use nvme_engine::driver::MAX_IO_QUEUE_ENTRIES;
use nvme_engine::emu::{
    EmuConfig, EmuController, EmuMode, EmuNamespaceConfig, FaultAction, FaultRule,
};
use nvme_engine::spec::status::media;
use nvme_engine::spec::{NvmOpcode, Status, StatusCodeType};
use nvme_engine::vfio::{RealDevice, VfioError, VfioOptions};
use nvme_engine::{Controller, ControllerOptions};

use crate::device::FioDevice;
use crate::error::{EngineError, chain};
use crate::filename::{ControllerSpec, EmuRun, EmuSpec};

/// One brought-up controller and what the jobs need to know about it.
pub struct Shared {
    /// The controller.
    pub ctrl: Controller<FioDevice>,
    /// `emulated (RAM, threaded)` or `PCIe 0000:04:00.0 (vfio-pci)`.
    pub description: String,
    /// Reads return no data (null backing): verify cannot pass.
    pub null_data: bool,
}

static OPEN: Mutex<Vec<(String, Weak<Shared>)>> = Mutex::new(Vec::new());

/// The controller `spec` names, opened on first use.
pub fn get(spec: &ControllerSpec) -> Result<Arc<Shared>, EngineError> {
    let key = spec.key();
    // Held while opening: two threads naming one controller must not both
    // bring it up. A poisoned lock only means another job panicked while
    // holding it; the list itself is still consistent.
    let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
    open.retain(|(_, w)| w.strong_count() > 0);
    if let Some(shared) = open
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, w)| w.upgrade())
    {
        return Ok(shared);
    }
    let shared = Arc::new(bring_up(spec)?);
    open.push((key, Arc::downgrade(&shared)));
    Ok(shared)
}

fn driver_options() -> ControllerOptions {
    ControllerOptions {
        // Queue pairs are created per fio thread; ask for many.
        io_queues: 1024,
        ..ControllerOptions::default()
    }
}

fn bring_up(spec: &ControllerSpec) -> Result<Shared, EngineError> {
    match spec {
        ControllerSpec::Emu(e) => {
            let dev = EmuController::new(emu_config(e)).map_err(|err| EngineError::Open {
                what: "the emulated controller".into(),
                reason: chain(&err),
            })?;
            if e.fail > 0.0 {
                // DNR: the driver retries failures without it.
                let status = Status::new(StatusCodeType::MEDIA, media::UNRECOVERED_READ_ERROR)
                    .with_dnr(true);
                let rule = FaultRule::new(FaultAction::CompleteWithStatus(status))
                    .io()
                    .opcode(NvmOpcode::READ.0)
                    .probability(e.fail);
                dev.handle().add_fault(rule);
            }
            let ctrl = Controller::new(FioDevice::Emu(dev), driver_options()).map_err(|err| {
                EngineError::Open {
                    what: "the emulated controller".into(),
                    reason: chain(&err),
                }
            })?;
            Ok(Shared {
                ctrl,
                description: describe_emu(e),
                null_data: e.null,
            })
        }
        ControllerSpec::Pcie { addr, no_iommu } => {
            let opts = VfioOptions {
                no_iommu: *no_iommu,
                ..VfioOptions::default()
            };
            let what = format!("PCIe controller {addr}");
            let dev = RealDevice::open(&addr.to_string(), opts).map_err(|err| {
                let mut reason = chain(&err);
                if matches!(err, VfioError::NoIommuNotAllowed { .. }) {
                    reason.push_str(" (in a fio filename the opt-in is the key noiommu=1)");
                }
                EngineError::Open {
                    what: what.clone(),
                    reason,
                }
            })?;
            let how = match &dev {
                RealDevice::Vfio(_) => "vfio-pci",
                RealDevice::Uio(_) => "uio_pci_generic",
            };
            let ctrl = Controller::new(FioDevice::Real(dev), driver_options()).map_err(|err| {
                EngineError::Open {
                    what: what.clone(),
                    reason: chain(&err),
                }
            })?;
            Ok(Shared {
                ctrl,
                description: format!("PCIe {addr} ({how})"),
                null_data: false,
            })
        }
    }
}

fn emu_config(spec: &EmuSpec) -> EmuConfig {
    let blocks = spec.size / spec.lba_size as u64;
    let mut cfg = EmuConfig::ram(spec.size).without_namespaces();
    for n in 1..=spec.namespaces {
        let ns = match (&spec.file, spec.null) {
            (_, true) => EmuNamespaceConfig::null(spec.lba_size, blocks),
            (Some(path), false) => {
                let path = if n == 1 {
                    path.clone()
                } else {
                    let mut p = path.clone().into_os_string();
                    p.push(format!(".{n}"));
                    p.into()
                };
                EmuNamespaceConfig::file(path, spec.lba_size, blocks)
            }
            (None, false) => EmuNamespaceConfig::ram(spec.lba_size, blocks),
        };
        cfg = cfg.namespace(ns);
    }
    // As nvme-perf configures it: 2 MiB transfers, many deep queues.
    cfg.mdts = 9;
    cfg.io_queues = 1024;
    cfg.max_queue_entries = MAX_IO_QUEUE_ENTRIES as u32;
    cfg.mode = match spec.run {
        EmuRun::Inline => EmuMode::Inline,
        EmuRun::Threaded { spin, core } => {
            let mode = if spin {
                EmuMode::threaded_spin()
            } else {
                EmuMode::threaded()
            };
            match core {
                Some(c) => mode.on_core(c),
                None => mode,
            }
        }
    };
    cfg
}

fn describe_emu(spec: &EmuSpec) -> String {
    let backing = match (&spec.file, spec.null) {
        (_, true) => "null".to_string(),
        (Some(p), false) => format!("file {}", p.display()),
        (None, false) => "RAM".to_string(),
    };
    let run = match spec.run {
        EmuRun::Inline => "inline".to_string(),
        EmuRun::Threaded { spin, core } => format!(
            "threaded{}, {}",
            core.map(|c| format!(" on core {c}")).unwrap_or_default(),
            if spin { "spinning" } else { "back-off" }
        ),
    };
    format!(
        "emulated ({backing}, {run}, {} x {} MiB, {}-byte blocks)",
        spec.namespaces,
        spec.size >> 20,
        spec.lba_size
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filename::parse;

    #[test]
    fn jobs_naming_one_controller_share_it_until_the_last_lets_go() {
        let spec = parse("trtype=emu size=4M mode=inline").unwrap().controller;
        let a = get(&spec).unwrap();
        let b = get(&spec).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let other = get(&parse("trtype=emu size=8M mode=inline").unwrap().controller).unwrap();
        assert!(!Arc::ptr_eq(&a, &other));
        let weak = Arc::downgrade(&a);
        drop((a, b));
        assert!(weak.upgrade().is_none(), "the last job's drop closes it");
        let c = get(&spec).unwrap();
        assert_eq!(c.ctrl.namespaces().len(), 1);
    }
}
