//! Opening the controllers named by `-r` (or the default emulated one) and
//! choosing their namespaces, through nvme-trid's one open path with
//! nvme-perf's policy: queue counts from the run, the device thread where
//! placement put it, backing files written only by writing runs.

#![forbid(unsafe_code)]

use std::time::Duration;

use anyhow::Result;
use nvme_emu::EmuHandle;
use nvme_engine::{Controller, ControllerOptions, Namespace};
use nvme_trid::{ControllerId, FileAccess, Syntax, TransportId};
use nvme_trid::{InjectKind, Installed};

use crate::device::PerfDevice;
use crate::placement::EmuPlacement;

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
    /// The emulated controller's handle, to read fault counts.
    emu: Option<EmuHandle>,
    /// Fault rules installed on an emulated controller.
    faults: Installed,
}

impl Target {
    /// How often each injected fault fired (emulated controllers).
    pub fn fault_hits(&self) -> Vec<(InjectKind, u64)> {
        match &self.emu {
            Some(h) => self.faults.hits(h),
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

fn driver_options(opts: OpenOptions) -> ControllerOptions {
    let d = ControllerOptions::default();
    // Deadlines are at most a quarter of the timeout late.
    let scan = d
        .timeout_scan_interval
        .min(opts.io_timeout / 4)
        .max(Duration::from_millis(1));
    d.with_io_queues(opts.io_queues.max(1))
        .with_io_queue_entries(opts.queue_entries)
        .with_io_timeout(opts.io_timeout)
        .with_timeout_scan_interval(scan)
}

/// Open and bring up one controller.
pub fn open(id: &TransportId, opts: OpenOptions) -> Result<Target> {
    let files = match (&id.controller, opts.writes) {
        (_, false) => FileAccess::ReadOnly,
        // An existing file is extended only to a size asked for explicitly.
        (ControllerId::Emu(s), true) if s.size_given => FileAccess::ReadWriteGrow,
        (_, true) => FileAccess::ReadWrite,
    };
    let mut options = nvme_trid::OpenOptions::new(Syntax::Cli);
    options.controller = driver_options(opts);
    options.emu_thread = opts.emu_placement;
    options.files = files;
    options.fault_seed = Some(opts.seed);
    let opened = nvme_trid::open::<PerfDevice>(&id.controller, &options)?;
    let namespaces = opened.namespaces(id.nsid)?;
    Ok(Target {
        namespaces,
        transport: opened.description,
        null_data: opened.null_data,
        emu: opened.emu,
        faults: opened.faults,
        ctrl: opened.ctrl,
    })
}
