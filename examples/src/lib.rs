//! Shared plumbing for the example programs: open the device a transport
//! ID names (through nvme-trid, as nvme-perf does) and place the threads.
//!
//! The programs (`cargo run --release -p nvme-engine-examples --bin NAME`;
//! `--help` on each lists its options, and unknown arguments are refused):
//! - `hello_world [-r TRID]` — write a block through a reactor, read it
//!   back, compare.
//! - `identify [-r TRID]` — controller and namespace Identify data, laid
//!   out like `nvme id-ctrl` / `nvme id-ns`.
//! - `journal [-r TRID] [--mode auto|ring|local] [--records N]
//!   [--record-bytes B] [--depth D] [--fail-writes P]` — an append-only
//!   journal committing FUA writes through a pinned reactor, from the
//!   application thread through the reactor's rings or (on a one-CPU
//!   process) on the reactor's own thread; prints p50/p99/p99.9 commit
//!   latency, where a commit's time goes against direct mode, and reads
//!   every committed record back.
//!
//! Without `-r` an example runs on the built-in emulated controller
//! (RAM-backed), placed to fit the machine ([`CorePlan`]): a device thread
//! spinning on a core none of the example's busy threads uses when one is
//! free, otherwise the inline device (commands execute in the doorbell
//! write, on the polling thread). The first line of output says which.
//! `-r` takes nvme-perf's transport IDs: `-r 'trtype:PCIe
//! traddr:0000:04:00.0'` runs on that controller through VFIO (bind it
//! first with `scripts/setup.sh`; `noiommu:1` opts in to the no-IOMMU
//! paths; `ns:N` picks the namespace), `-r 'trtype:emu size:256M lba:4096'`
//! on an emulated controller of your own.

#![forbid(unsafe_code)]

pub mod baseline;

use anyhow::{Context, Result, bail};
use nvme_emu::EmuHandle;
use nvme_engine::Device;
use nvme_engine::{Controller, Namespace};
use nvme_reactor::{AllowedCores, CorePlan, DevicePlacement};
use nvme_trid::{
    AnyDevice, ControllerId, EmuRunMode, EmuSpec, EmuThread, OpenOptions, Syntax, TransportId,
};

/// A program body that works on any device.
pub trait Example {
    /// How many threads the program keeps busy polling (application
    /// threads and reactors); they get the first cores of the plan.
    fn busy_threads(&self) -> usize;
    /// Run on `controller`, with its threads on `setup.plan.threads`.
    fn run<D: Device>(self, controller: Controller<D>, setup: &Setup) -> Result<()>;
}

/// Where an example's threads and device run.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Cores for the busy threads, and the built-in device's placement.
    pub plan: CorePlan,
    /// `Some` when the device is an emulated controller: where it executes
    /// commands (`Inline`, or a device thread).
    pub builtin: Option<DevicePlacement>,
    /// The emulated controller's fault-injection handle.
    pub emu: Option<EmuHandle>,
    /// The namespace `ns:` selected (checked to be usable).
    pub nsid: Option<u32>,
}

impl Setup {
    /// The namespace to work on: the one `ns:` selected, else the first
    /// active one.
    pub fn namespace<D: Device>(&self, controller: &Controller<D>) -> Result<Namespace> {
        let ns = match self.nsid {
            Some(n) => controller.namespace(n),
            None => controller.namespaces().first(),
        };
        ns.cloned()
            .context("the controller has no active namespace")
    }
}

/// Size of the built-in emulated controller's RAM namespace.
pub const EMU_BYTES: u64 = 64 << 20;

/// The device argument every example takes.
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceArgs {
    /// Transport ID of the controller, spelled as for nvme-perf:
    /// 'trtype:PCIe traddr:0000:04:00.0' (bound to vfio-pci with
    /// scripts/setup.sh; noiommu:1 opts in to the no-IOMMU path) or
    /// 'trtype:emu size:256M' (an emulated controller); with PCIe, ns:N
    /// picks the namespace. Without it the example runs on the built-in
    /// emulated controller (64 MiB of RAM).
    #[arg(short = 'r', long = "transport-id", value_name = "TRID")]
    pub transport: Option<TransportId>,
    /// A bare PCI address (the old spelling): refused with the -r to use.
    #[arg(hide = true)]
    pub pci: Option<String>,
}

impl DeviceArgs {
    /// Whether the device is a real (PCIe) controller.
    pub fn is_pcie(&self) -> bool {
        self.pci.is_some()
            || self
                .transport
                .as_ref()
                .is_some_and(|t| matches!(t.controller, ControllerId::Pcie { .. }))
    }
}

/// Open the controller `device` names (or the built-in emulated one) and
/// run `example` on it.
pub fn run<E: Example>(device: &DeviceArgs, example: E) -> Result<()> {
    if let Some(addr) = &device.pci {
        bail!(
            "unexpected argument '{addr}': name the controller with -r, e.g. -r 'trtype:PCIe traddr:{addr}' (see --help)"
        );
    }
    let allowed = AllowedCores::current().context("reading the CPUs this process may use")?;
    let plan = CorePlan::new(allowed.cores(), example.busy_threads().max(1));
    let id = match &device.transport {
        Some(id) => with_env_no_iommu(id.clone()),
        None => builtin(&plan),
    };
    let thread = device_thread(&id.controller, &plan);
    let mut options = OpenOptions::new(Syntax::Cli);
    options.emu_thread = thread;
    let opened = nvme_trid::open::<AnyDevice>(&id.controller, &options)?;
    let nsid = match id.nsid {
        Some(n) => Some(opened.namespace(n)?.id()),
        None => None,
    };
    if device.transport.is_none() {
        println!(
            "device: built-in emulated controller ({} MiB RAM namespace); {}",
            EMU_BYTES >> 20,
            plan.device
        );
    } else {
        println!("device: {}", opened.description);
    }
    let builtin = match &id.controller {
        ControllerId::Emu(spec) => Some(placement(spec, thread, &plan)),
        ControllerId::Pcie { .. } | ControllerId::UringPassthrough { .. } => None,
    };
    let setup = Setup {
        builtin,
        emu: opened.emu.clone(),
        nsid,
        plan,
    };
    example.run(opened.ctrl, &setup)
}

/// The built-in emulated controller placed as `plan` says: 64 MiB of RAM,
/// on a spinning device thread of its own core or inline.
fn builtin(plan: &CorePlan) -> TransportId {
    let mode = match plan.device {
        DevicePlacement::Thread { .. } => EmuRunMode::Threaded { spin: true },
        DevicePlacement::Inline => EmuRunMode::Inline,
    };
    TransportId {
        controller: ControllerId::Emu(EmuSpec {
            size: EMU_BYTES,
            mode,
            ..EmuSpec::default()
        }),
        nsid: None,
    }
}

/// Where a threaded emulated controller's device thread goes when the ID
/// names no core: the plan's free core, or else shared with the last busy
/// thread (it then yields when idle rather than fight for the core).
fn device_thread(id: &ControllerId, plan: &CorePlan) -> Option<EmuThread> {
    match id {
        ControllerId::Emu(spec) if spec.mode != EmuRunMode::Inline && spec.core.is_none() => {
            match plan.device {
                DevicePlacement::Thread { core } => Some(EmuThread {
                    core,
                    shared: false,
                }),
                DevicePlacement::Inline => plan
                    .threads
                    .last()
                    .map(|&core| EmuThread { core, shared: true }),
            }
        }
        _ => None,
    }
}

/// Where an emulated controller executes commands.
fn placement(spec: &EmuSpec, thread: Option<EmuThread>, plan: &CorePlan) -> DevicePlacement {
    match (spec.mode, thread.map(|t| t.core).or(spec.core)) {
        (EmuRunMode::Inline, _) => DevicePlacement::Inline,
        (_, Some(core)) => DevicePlacement::Thread { core },
        (_, None) => plan.device,
    }
}

/// `NVME_ENGINE_NO_IOMMU=1` (the opt-in the engine's VFIO errors name for the
/// examples) turns on the no-IOMMU path of a PCIe transport ID, as
/// `noiommu:1` does.
fn with_env_no_iommu(mut id: TransportId) -> TransportId {
    if let ControllerId::Pcie { no_iommu, .. } = &mut id.controller
        && std::env::var_os("NVME_ENGINE_NO_IOMMU").is_some_and(|v| v == "1")
    {
        *no_iommu = true;
    }
    id
}
