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
//! on an emulated controller of your own, `-r 'trtype:nvme-io_uring
//! path:/dev/ng0n1'` on a namespace the kernel's nvme driver keeps, through
//! NVMe passthrough over io_uring (the reactor then owns a ring per
//! namespace instead of a queue pair; `poll:0` and `fixed:0` turn polling
//! and fixed buffers off), `-r 'trtype:TCP adrfam:IPv4 traddr:192.0.2.7
//! trsvcid:4420 subnqn:nqn.2026-12.io.example:disk'` on a controller of
//! an NVMe over Fabrics target over TCP (each reactor connects its own I/O
//! queue; `hdgst:1`/`ddgst:1` ask for digests, `hostnqn:` names the host,
//! `ns:N` picks the namespace). A target on this machine (loopback) gets
//! the examples' threads yielding when idle, as on a shared core: its work
//! runs in kernel threads that need a CPU too.

#![forbid(unsafe_code)]

pub mod baseline;

use anyhow::{Context, Result, bail};
use nvme_emu::EmuHandle;
use nvme_engine::Device;
use nvme_engine::spec::identify::IdentifyController;
use nvme_engine::tcp::TcpDeviceOptions;
use nvme_engine::uring::{BufferMode, CompletionMode};
use nvme_engine::{Controller, Namespace};
use nvme_reactor::{
    AllowedCores, Attach, CorePlan, DevicePlacement, Tcp, TcpController, Uring, UringNamespace,
};
use nvme_trid::{
    AnyDevice, ControllerId, EmuRunMode, EmuSpec, EmuThread, OpenOptions, Syntax, TransportId,
};

/// A program body that works on any device, over either transport.
pub trait Example {
    /// How many threads the program keeps busy polling (application
    /// threads and reactors); they get the first cores of the plan.
    fn busy_threads(&self) -> usize;
    /// Run on `handle` (a controller, or an io_uring namespace when `A` is
    /// [`Uring`]), with its threads on `setup.plan.threads`.
    fn run<A: Attach>(self, handle: A::Handle, setup: &Setup) -> Result<()>
    where
        A::Handle: Handle;
}

/// What the programs read from an opened device, over either transport.
pub trait Handle {
    /// Identify Controller data.
    fn identify(&self) -> &IdentifyController;
    /// The usable namespaces.
    fn namespaces(&self) -> Vec<Namespace>;
    /// Largest transfer of one command.
    fn max_transfer_bytes(&self) -> usize;
    /// How the device is reached, in lines (registers and queues for a
    /// controller; nodes and ring modes for an io_uring namespace).
    fn transport_lines(&self) -> Vec<String>;
    /// Namespaces that were skipped, and why.
    fn skipped(&self) -> Vec<String>;
}

impl<D: Device> Handle for Controller<D> {
    fn identify(&self) -> &IdentifyController {
        Controller::identify(self)
    }
    fn namespaces(&self) -> Vec<Namespace> {
        Controller::namespaces(self).to_vec()
    }
    fn max_transfer_bytes(&self) -> usize {
        Controller::max_transfer_bytes(self)
    }
    fn transport_lines(&self) -> Vec<String> {
        let (cap, vs) = (self.cap(), self.version());
        vec![
            format!("device    : {}", self.device().name()),
            format!(
                "cap       : {:#018x} (max queue entries {}, cqr {}, to {} ms, dstrd {}, css {:#x}, mpsmin {} KiB, mpsmax {} KiB)",
                u64::from(cap),
                cap.max_queue_entries(),
                u8::from(cap.cqr()),
                cap.timeout_ms(),
                cap.dstrd(),
                cap.css(),
                4u32 << cap.mpsmin(),
                4u32 << cap.mpsmax()
            ),
            format!("version   : {}.{}.{}", vs.mjr(), vs.mnr(), vs.ter()),
            format!(
                "I/O queues granted: {}, max transfer: {} bytes",
                self.io_queues_granted(),
                Controller::max_transfer_bytes(self)
            ),
        ]
    }
    fn skipped(&self) -> Vec<String> {
        self.skipped_namespaces()
            .iter()
            .map(|s| format!("namespace {} skipped: {}", s.id, s.reason))
            .collect()
    }
}

impl Handle for UringNamespace {
    fn identify(&self) -> &IdentifyController {
        self.device().identify()
    }
    fn namespaces(&self) -> Vec<Namespace> {
        vec![self.device().namespace().clone()]
    }
    fn max_transfer_bytes(&self) -> usize {
        self.device().max_transfer_bytes()
    }
    fn transport_lines(&self) -> Vec<String> {
        let d = self.device();
        let o = self.options();
        vec![
            format!(
                "device    : {} (NVMe passthrough over io_uring; admin commands through {})",
                d.path().display(),
                d.admin_path().display()
            ),
            format!(
                "rings     : polling {} ({}), fixed buffers {}",
                if o.polled {
                    "asked for"
                } else {
                    "off (poll:0)"
                },
                d.poll_support().detail,
                if o.fixed_buffers {
                    "on"
                } else {
                    "off (fixed:0)"
                }
            ),
            format!("max transfer: {} bytes", d.max_transfer_bytes()),
        ]
    }
    fn skipped(&self) -> Vec<String> {
        Vec::new()
    }
}

impl Handle for TcpController {
    fn identify(&self) -> &IdentifyController {
        self.device().identify()
    }
    fn namespaces(&self) -> Vec<Namespace> {
        self.device().namespaces().to_vec()
    }
    fn max_transfer_bytes(&self) -> usize {
        self.device().max_transfer_bytes()
    }
    fn transport_lines(&self) -> Vec<String> {
        let d = self.device();
        let p = d.params();
        let t = d.target();
        let digest = |on: bool| if on { "on" } else { "off" };
        let (cap, vs) = (p.cap, p.version);
        vec![
            format!("device    : NVMe/TCP {} subsystem {}", t.addr, t.subnqn),
            format!("host      : {}", t.hostnqn),
            format!(
                "association: CNTLID {}, KATO {} ms, header digest {}, data digest {}",
                p.cntlid,
                p.kato.as_millis(),
                digest(p.digests.header),
                digest(p.digests.data)
            ),
            format!(
                "capsules  : IOCCSZ {} bytes ({} bytes of write data in the capsule), IORCSZ {} bytes, MAXH2CDATA {} bytes",
                p.ioccsz_bytes,
                p.ioccsz_bytes.saturating_sub(64),
                p.iorcsz_bytes,
                p.maxh2cdata
            ),
            format!(
                "cap       : {cap:#018x} (max queue entries {}, to {} ms, css {:#x}), read with Property Get",
                (cap & 0xffff) + 1,
                ((cap >> 24) & 0xff) * 500,
                (cap >> 37) & 0xff
            ),
            format!(
                "version   : {}.{}.{}",
                vs >> 16,
                (vs >> 8) & 0xff,
                vs & 0xff
            ),
            format!(
                "I/O queues: one TCP connection each, max transfer {} bytes",
                d.max_transfer_bytes()
            ),
        ]
    }
    fn skipped(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A ring's modes in words (`polled, fixed buffers`, or why not).
pub fn ring_modes(completion: &CompletionMode, buffers: &BufferMode) -> String {
    let c = match completion {
        CompletionMode::Polled => "completions polled (IOPOLL)".to_string(),
        CompletionMode::Interrupts { reason } => format!("completions by interrupt ({reason})"),
    };
    let b = match buffers {
        BufferMode::Fixed => "fixed buffers".to_string(),
        BufferMode::Unregistered { reason } => format!("buffers pinned per I/O ({reason})"),
    };
    format!("{c}, {b}")
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
    pub fn namespace<H: Handle>(&self, handle: &H) -> Result<Namespace> {
        let all = handle.namespaces();
        let ns = match self.nsid {
            Some(n) => all.into_iter().find(|ns| ns.id() == n),
            None => all.into_iter().next(),
        };
        ns.context("the controller has no active namespace")
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
    /// 'trtype:emu size:256M' (an emulated controller) or
    /// 'trtype:nvme-io_uring path:/dev/ng0n1' (a namespace left with the
    /// kernel, through io_uring passthrough) or 'trtype:TCP adrfam:IPv4
    /// traddr:127.0.0.1 trsvcid:4420 subnqn:NQN' (NVMe over TCP); with
    /// PCIe and TCP, ns:N picks the namespace. Without it the example runs on the built-in
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
    if let ControllerId::Tcp(spec) = &id.controller {
        if spec.is_discovery() {
            bail!(
                "{} names the discovery subsystem, which has no namespaces: list what the portal \
                 at {} offers with nvme-perf -r 'trtype:TCP adrfam:IPv4 traddr:{} trsvcid:{} \
                 subnqn:{}', then name one of its subsystems with subnqn:",
                spec.subnqn,
                spec.addr,
                spec.addr.ip(),
                spec.addr.port(),
                spec.subnqn
            );
        }
        let Some(opened) = nvme_trid::open_tcp(&id.controller, TcpDeviceOptions::default()) else {
            bail!("not an NVMe/TCP transport ID");
        };
        let device = opened?;
        let nsid = match id.nsid {
            Some(n) if device.namespaces().iter().any(|ns| ns.id() == n) => Some(n),
            Some(n) => bail!(
                "namespace {n} is not usable on {}: usable namespaces are [{}]; pick one with ns:N",
                device.name(),
                device
                    .namespaces()
                    .iter()
                    .map(|ns| ns.id().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => None,
        };
        println!(
            "device: NVMe/TCP controller {} at {} (CNTLID {})",
            spec.subnqn,
            spec.addr,
            device.cntlid()
        );
        let mut plan = plan;
        // A loopback target's work runs in kernel threads on this machine:
        // the busy threads yield when idle, as on a shared core.
        plan.shared |= spec.addr.ip().is_loopback();
        let setup = Setup {
            builtin: None,
            emu: None,
            nsid,
            plan,
        };
        return example.run::<Tcp>(TcpController::new(device), &setup);
    }
    if let Some(opened) = nvme_trid::open_uring(&id.controller) {
        let (device, options) = opened?;
        println!(
            "device: {} (NVMe passthrough over io_uring, the controller stays with the kernel)",
            device.path().display()
        );
        let setup = Setup {
            builtin: None,
            emu: None,
            nsid: Some(device.namespace().id()),
            plan,
        };
        return example.run::<Uring>(UringNamespace::new(device, options), &setup);
    }
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
        ControllerId::Pcie { .. }
        | ControllerId::UringPassthrough { .. }
        | ControllerId::Tcp(_) => None,
    };
    let setup = Setup {
        builtin,
        emu: opened.emu.clone(),
        nsid,
        plan,
    };
    example.run::<AnyDevice>(opened.ctrl, &setup)
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
