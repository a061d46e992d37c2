//! Opening the controllers named by `-r` (or the default emulated one) and
//! choosing their namespaces.

#![forbid(unsafe_code)]

use std::time::Duration;

use anyhow::{Context, Result, bail};
use nvme_engine::driver::MAX_IO_QUEUE_ENTRIES;
use nvme_engine::emu::{EmuConfig, EmuController, EmuHandle, EmuMode, EmuNamespaceConfig};
use nvme_engine::vfio::{RealDevice, VfioOptions};
use nvme_engine::{Controller, ControllerOptions, Namespace};

use crate::device::PerfDevice;
use crate::inject::{InjectKind, Installed};
use crate::placement::EmuPlacement;
use crate::precheck::ns_file;
use crate::transport::{EmuRunMode, EmuSpec, TransportId};
use crate::units::format_size;

/// One opened controller and the namespaces to drive on it.
pub struct Target {
    /// The brought-up controller.
    pub ctrl: Controller<PerfDevice>,
    /// Transport description (`emu (RAM, threaded)`, `PCIe 0000:04:00.0 (vfio-pci)`).
    pub transport: String,
    /// Namespaces to drive, in NSID order.
    pub namespaces: Vec<Namespace>,
    /// Whether reads return no data (null backing): --verify cannot work.
    pub null_data: bool,
    /// Fault rules installed on an emulated controller.
    pub faults: Option<(EmuHandle, Installed)>,
}

impl Target {
    /// How often each injected fault fired (emulated controllers).
    pub fn fault_hits(&self) -> Vec<(InjectKind, u64)> {
        match &self.faults {
            Some((h, i)) => i.hits(h),
            None => Vec::new(),
        }
    }

    /// `emu:0` or the PCI address.
    pub fn name(&self) -> String {
        use nvme_engine::Device;
        self.ctrl.device().name()
    }
}

/// What bring-up asks of each controller.
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions {
    /// I/O queue pairs needed.
    pub io_queues: u16,
    /// Entries wanted per I/O queue.
    pub queue_entries: u16,
    /// Where an emulated controller's device thread runs (threaded mode).
    pub emu_placement: Option<EmuPlacement>,
    /// Per-command deadline.
    pub io_timeout: Duration,
    /// Seed of the fault rules.
    pub seed: u64,
    /// The run writes (file backings are opened read-only otherwise).
    pub writes: bool,
}

fn emu_config(spec: &EmuSpec, place: Option<EmuPlacement>, writes: bool) -> EmuConfig {
    let blocks = spec.size / spec.lba_size as u64;
    let mut cfg = EmuConfig::ram(spec.size).without_namespaces();
    for n in 1..=spec.namespaces {
        let ns = match (&spec.file, spec.null) {
            (_, true) => EmuNamespaceConfig::null(spec.lba_size, blocks),
            (Some(path), false) => {
                let ns = EmuNamespaceConfig::file(ns_file(path, n), spec.lba_size, blocks);
                // Read workloads open the file read-only; an existing file
                // is extended only to a size asked for explicitly.
                match (writes, spec.size_given) {
                    (false, _) => ns.read_only(),
                    (true, true) => ns.grow_file(),
                    (true, false) => ns,
                }
            }
            (None, false) => EmuNamespaceConfig::ram(spec.lba_size, blocks),
        };
        cfg = cfg.namespace(ns);
    }
    cfg.mdts = 9;
    cfg.io_queues = 1024;
    cfg.max_queue_entries = MAX_IO_QUEUE_ENTRIES as u32;
    cfg.mode = match (spec.mode, place) {
        (EmuRunMode::Inline, _) => EmuMode::Inline,
        (_, Some(p)) if p.shared => EmuMode::threaded_cooperative().on_core(p.core),
        (EmuRunMode::Threaded { spin: true }, p) => with_core(EmuMode::threaded_spin(), p),
        (EmuRunMode::Threaded { spin: false }, p) => with_core(EmuMode::threaded(), p),
    };
    cfg
}

fn with_core(mode: EmuMode, place: Option<EmuPlacement>) -> EmuMode {
    match place {
        Some(p) => mode.on_core(p.core),
        None => mode,
    }
}

fn describe_emu(spec: &EmuSpec, place: Option<EmuPlacement>) -> String {
    let backing = match (&spec.file, spec.null) {
        (_, true) => "null".to_string(),
        (Some(p), false) => format!("file {}", p.display()),
        (None, false) => "RAM".to_string(),
    };
    let mode = match (spec.mode, place) {
        (EmuRunMode::Inline, _) => "inline".to_string(),
        (_, Some(p)) if p.shared => {
            format!("threaded on core {}, shared: yields when idle", p.core)
        }
        (EmuRunMode::Threaded { spin }, p) => format!(
            "threaded{}, {}",
            p.map(|p| format!(" on core {}", p.core))
                .unwrap_or_default(),
            if spin { "spinning" } else { "back-off" }
        ),
    };
    format!(
        "emulated ({backing}, {mode}, {} x {})",
        spec.namespaces,
        format_size(spec.size)
    )
}

fn driver_options(opts: OpenOptions) -> ControllerOptions {
    let d = ControllerOptions::default();
    ControllerOptions {
        io_queues: opts.io_queues.max(1),
        io_queue_entries: opts.queue_entries,
        io_timeout: opts.io_timeout,
        // Deadlines are at most a quarter of the timeout late.
        timeout_scan_interval: d
            .timeout_scan_interval
            .min(opts.io_timeout / 4)
            .max(Duration::from_millis(1)),
        ..d
    }
}

/// Open and bring up one controller.
pub fn open(id: &TransportId, opts: OpenOptions) -> Result<Target> {
    match id {
        TransportId::Emu(spec) => {
            let dev = EmuController::new(emu_config(spec, opts.emu_placement, opts.writes))
                .context("cannot create the emulated controller")?;
            let handle = dev.handle();
            handle.set_vanish_recovers_on_reset(spec.vanish_recovers);
            handle.set_fatal_survives_reset(spec.fatal_sticky);
            let installed = Installed::install(&handle, &spec.faults, spec.delay_rounds, opts.seed);
            let ctrl = Controller::new(PerfDevice::Emu(dev), driver_options(opts))
                .context("bring-up of the emulated controller failed")?;
            let namespaces = ctrl.namespaces().to_vec();
            Ok(Target {
                ctrl,
                transport: describe_emu(spec, opts.emu_placement),
                namespaces,
                null_data: spec.null,
                faults: Some((handle, installed)),
            })
        }
        TransportId::Pcie {
            addr,
            nsid,
            no_iommu,
        } => {
            let vopts = VfioOptions {
                no_iommu: *no_iommu,
                ..VfioOptions::default()
            };
            let dev = RealDevice::open(&addr.to_string(), vopts)
                .with_context(|| format!("cannot open PCIe controller {addr}"))?;
            let how = match &dev {
                RealDevice::Vfio(_) => "vfio-pci",
                RealDevice::Uio(_) => "uio_pci_generic",
            };
            let ctrl = Controller::new(PerfDevice::Real(dev), driver_options(opts))
                .with_context(|| format!("bring-up of PCIe controller {addr} failed"))?;
            let namespaces = match nsid {
                None => ctrl.namespaces().to_vec(),
                Some(n) => match ctrl.namespace(*n) {
                    Some(ns) => vec![ns.clone()],
                    None => {
                        let active: Vec<String> =
                            ctrl.namespaces().iter().map(|n| n.id.to_string()).collect();
                        let skipped: Vec<String> = ctrl
                            .skipped_namespaces()
                            .iter()
                            .map(|s| format!("{} ({})", s.id, s.reason))
                            .collect();
                        bail!(
                            "namespace {n} is not usable on {addr}: usable namespaces are [{}]{}; pick one of them with ns:<id>",
                            active.join(", "),
                            if skipped.is_empty() {
                                String::new()
                            } else {
                                format!(", skipped: {}", skipped.join("; "))
                            }
                        );
                    }
                },
            };
            if namespaces.is_empty() {
                bail!("{addr} has no usable namespace; create one with nvme-cli (nvme create-ns)");
            }
            Ok(Target {
                ctrl,
                transport: format!("PCIe {addr} ({how})"),
                namespaces,
                null_data: false,
                faults: None,
            })
        }
    }
}
