//! Shared plumbing for the example programs: pick the device to run on.
//!
//! The programs (`cargo run --release -p nvme-engine-examples --bin NAME`;
//! `--help` on each lists its options, and unknown arguments are refused):
//! - `hello_world [PCI]` — write a block through a reactor, read it back,
//!   compare.
//! - `identify [PCI]` — controller and namespace Identify data, laid out
//!   like `nvme id-ctrl` / `nvme id-ns`.
//! - `journal [PCI] [--records N] [--record-bytes B] [--depth D]
//!   [--fail-writes P]` — an append-only journal committing FUA writes
//!   through a pinned reactor; prints p50/p99/p99.9 commit latency, where
//!   a commit's time goes against direct mode, and reads every committed
//!   record back.
//!
//! With no argument an example runs on the built-in emulated controller
//! (RAM-backed), placed to fit the machine ([`CorePlan`]): a device thread
//! spinning on a core none of the example's busy threads uses when one is
//! free, otherwise the inline device (commands execute in the doorbell
//! write, on the polling thread). The first line of output says which. With a PCI address (`0000:04:00.0`) it runs on that
//! controller through VFIO (bind it first with `scripts/setup.sh`); set
//! `NVME_ENGINE_NO_IOMMU=1` to opt in to the no-IOMMU paths.

#![forbid(unsafe_code)]

pub mod baseline;

use anyhow::{Context, Result};
use nvme_emu::{EmuConfig, EmuController, EmuHandle};
use nvme_engine::Device;
use nvme_engine::driver::{Controller, ControllerOptions};
use nvme_engine::vfio::{RealDevice, VfioOptions};
use nvme_reactor::{AllowedCores, CorePlan, DevicePlacement};

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
    /// Cores for the busy threads, and the emulated device's placement.
    pub plan: CorePlan,
    /// `Some` when the device is the built-in emulated controller.
    pub builtin: Option<DevicePlacement>,
    /// The built-in controller's fault-injection handle.
    pub emu: Option<EmuHandle>,
}

/// Size of the emulated controller's RAM namespace.
pub const EMU_BYTES: u64 = 64 << 20;

/// The device argument every example takes.
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceArgs {
    /// PCI address of an NVMe controller bound to vfio-pci (for example
    /// 0000:04:00.0; bind it with scripts/setup.sh). Without it the example
    /// runs on the built-in emulated controller. Set NVME_ENGINE_NO_IOMMU=1
    /// to opt in to the no-IOMMU paths.
    pub pci: Option<String>,
}

/// Bring up the controller named by `pci` (or the emulated one) and run `example` on it.
pub fn run<E: Example>(pci: Option<&str>, example: E) -> Result<()> {
    let allowed = AllowedCores::current().context("reading the CPUs this process may use")?;
    let plan = CorePlan::new(allowed.cores(), example.busy_threads().max(1));
    match pci {
        None => {
            println!(
                "device: built-in emulated controller ({} MiB RAM namespace); {}",
                EMU_BYTES >> 20,
                plan.device
            );
            let device = EmuController::new(EmuConfig::ram(EMU_BYTES).mode(plan.device.mode()))
                .context("creating the emulated controller")?;
            let emu = Some(device.handle());
            let controller = Controller::new(device, ControllerOptions::default())
                .context("bringing up the emulated controller")?;
            let setup = Setup {
                builtin: Some(plan.device),
                emu,
                plan,
            };
            example.run(controller, &setup)
        }
        Some(addr) => {
            let no_iommu = std::env::var_os("NVME_ENGINE_NO_IOMMU").is_some_and(|v| v == "1");
            let opts = if no_iommu {
                VfioOptions::no_iommu()
            } else {
                VfioOptions::default()
            };
            let device = RealDevice::open(addr, opts)
                .with_context(|| format!("opening the NVMe controller at {addr}"))?;
            println!("device: {}", device.name());
            let controller = Controller::new(device, ControllerOptions::default())
                .with_context(|| format!("bringing up the NVMe controller at {addr}"))?;
            let setup = Setup {
                builtin: None,
                emu: None,
                plan,
            };
            example.run(controller, &setup)
        }
    }
}
