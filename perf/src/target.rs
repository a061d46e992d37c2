//! Opening the controllers named by `-r` (or the default emulated one) and
//! choosing their namespaces, through nvme-trid's one open path with
//! nvme-perf's policy: queue counts from the run, the device thread where
//! placement put it, backing files written only by writing runs.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use nvme_emu::EmuHandle;
use nvme_engine::spec::identify::IdentifyController;
use nvme_engine::{Controller, ControllerOptions, DriverError, Health, Namespace};
use nvme_trid::{ControllerId, FileAccess, Syntax, TransportId};
use nvme_trid::{InjectKind, Installed};

use crate::device::PerfDevice;
use crate::placement::EmuPlacement;
use crate::uring::UringTarget;

/// How nvme-perf reaches one controller: a register-level controller it
/// brought up itself, or a namespace left with the kernel and reached by
/// NVMe passthrough over io_uring.
#[derive(Clone, Debug)]
pub enum Link {
    /// The emulated controller or a PCIe one (VFIO, uio).
    Pcie(Controller<PerfDevice>),
    /// A generic NVMe node (`trtype:nvme-io_uring`).
    Uring(Arc<UringTarget>),
}

impl Link {
    /// Identify Controller data.
    pub fn identify(&self) -> &IdentifyController {
        match self {
            Link::Pcie(c) => c.identify(),
            Link::Uring(u) => u.device().identify(),
        }
    }
    /// Largest transfer of one command.
    pub fn max_transfer_bytes(&self) -> usize {
        match self {
            Link::Pcie(c) => c.max_transfer_bytes(),
            Link::Uring(u) => u.device().max_transfer_bytes(),
        }
    }
    /// I/O queues the run may create (a ring per queue has no device limit).
    pub fn io_queues_granted(&self) -> u16 {
        match self {
            Link::Pcie(c) => c.io_queues_granted(),
            Link::Uring(_) => u16::MAX,
        }
    }
    /// Largest I/O queue (CAP.MQES + 1, or the ring's limit).
    pub fn max_queue_entries(&self) -> u32 {
        match self {
            Link::Pcie(c) => c.cap().max_queue_entries(),
            Link::Uring(_) => crate::uring::MAX_RING_ENTRIES,
        }
    }
    /// Shadow doorbells in use (PCIe only).
    pub fn shadow_doorbells_active(&self) -> bool {
        match self {
            Link::Pcie(c) => c.shadow_doorbells_active(),
            Link::Uring(_) => false,
        }
    }
    /// Controller resets this process made (the kernel's own are not seen).
    pub fn resets(&self) -> u64 {
        match self {
            Link::Pcie(c) => c.resets(),
            Link::Uring(_) => 0,
        }
    }
    /// The controller's state (a kernel-owned one is live while its node works).
    pub fn health(&self) -> Health {
        match self {
            Link::Pcie(c) => c.health(),
            Link::Uring(_) => Health::Live,
        }
    }
    /// Shut the controller down (CC.SHN); the kernel keeps its own.
    pub fn shutdown(&self) -> Result<(), DriverError> {
        match self {
            Link::Pcie(c) => c.shutdown(),
            Link::Uring(_) => Ok(()),
        }
    }
}

/// One opened controller and the namespaces to drive on it.
pub struct Target {
    /// The brought-up controller, or the kernel-owned namespace.
    pub ctrl: Link,
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

    /// `emu:0`, the PCI address or the generic node.
    pub fn name(&self) -> String {
        use nvme_engine::Device;
        match &self.ctrl {
            Link::Pcie(c) => c.device().name(),
            Link::Uring(u) => u.device().path().display().to_string(),
        }
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

/// Open and bring up one controller (or open an io_uring namespace).
pub fn open(id: &TransportId, opts: OpenOptions) -> Result<Target> {
    if let Some(u) = crate::uring::open(id, &opts)? {
        return Ok(Target {
            transport: u.describe(),
            namespaces: vec![u.device().namespace().clone()],
            null_data: false,
            emu: None,
            faults: Installed::default(),
            ctrl: Link::Uring(Arc::new(u)),
        });
    }
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
        ctrl: Link::Pcie(opened.ctrl),
    })
}
