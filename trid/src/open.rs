//! Opening the controller a transport ID names: a real controller through
//! vfio-pci or uio_pci_generic, or a new emulated controller configured as
//! the ID says (namespaces, backing, execution mode, injected faults); then
//! bring-up, and the namespaces the ID selects. The tools supply their own
//! policy through [`OpenOptions`] (queue counts, where the device thread
//! runs, whether backing files may be written).

#![forbid(unsafe_code)]

use std::path::PathBuf;

use nvme_emu::{EmuConfig, EmuController, EmuError, EmuHandle, EmuMode, EmuNamespaceConfig};
use nvme_engine::MAX_IO_QUEUE_ENTRIES;
use nvme_engine::dma::{DmaError, DmaRegion, HostMemory};
use nvme_engine::uring::{UringDevice, UringError, UringQueueOptions};
use nvme_engine::vfio::{PciAddress, RealDevice, VfioError, VfioOptions};
use nvme_engine::{Controller, ControllerOptions, Device, DriverError, Namespace};

use crate::inject::{InjectKind, Installed};
use crate::parse::{ControllerId, EmuRunMode, EmuSpec};
use crate::size::format_size;
use crate::syntax::Syntax;

/// Either kind of controller behind one [`Device`], for tools that need no
/// device type of their own.
#[derive(Debug)]
pub enum AnyDevice {
    /// The built-in emulated controller.
    Emu(EmuController),
    /// A real controller (vfio-pci or uio_pci_generic).
    Real(RealDevice),
}

impl From<EmuController> for AnyDevice {
    fn from(d: EmuController) -> Self {
        AnyDevice::Emu(d)
    }
}

impl From<RealDevice> for AnyDevice {
    fn from(d: RealDevice) -> Self {
        AnyDevice::Real(d)
    }
}

impl Device for AnyDevice {
    #[inline]
    fn read32(&self, offset: usize) -> u32 {
        match self {
            AnyDevice::Emu(d) => d.read32(offset),
            AnyDevice::Real(d) => d.read32(offset),
        }
    }

    #[inline]
    fn write32(&self, offset: usize, value: u32) {
        match self {
            AnyDevice::Emu(d) => d.write32(offset, value),
            AnyDevice::Real(d) => d.write32(offset, value),
        }
    }

    fn map_dma(&self, memory: HostMemory) -> Result<DmaRegion, DmaError> {
        match self {
            AnyDevice::Emu(d) => d.map_dma(memory),
            AnyDevice::Real(d) => d.map_dma(memory),
        }
    }

    fn allows_plain_memory(&self) -> bool {
        match self {
            AnyDevice::Emu(d) => d.allows_plain_memory(),
            AnyDevice::Real(d) => d.allows_plain_memory(),
        }
    }

    fn name(&self) -> String {
        match self {
            AnyDevice::Emu(d) => d.name(),
            AnyDevice::Real(d) => d.name(),
        }
    }
}

/// Where an emulated controller's device thread runs (threaded mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmuThread {
    /// The CPU the device thread is pinned to.
    pub core: usize,
    /// The core is also used by a busy host thread: the device thread
    /// yields when idle instead of spinning.
    pub shared: bool,
}

/// What an emulated controller may do with its backing files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileAccess {
    /// Opened read-only: they must exist and are never written.
    ReadOnly,
    /// Created if missing, written; an existing file smaller than the
    /// namespace is refused.
    ReadWrite,
    /// As `ReadWrite`, and an existing smaller file is extended.
    ReadWriteGrow,
}

/// How a tool wants its controller opened.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct OpenOptions {
    /// Driver options for bring-up (queue counts and sizes, timeouts).
    pub controller: ControllerOptions,
    /// Where an emulated controller's device thread runs; `None`: on the
    /// ID's `core`, or wherever the scheduler puts it.
    pub emu_thread: Option<EmuThread>,
    /// What an emulated controller may do with its backing files.
    pub files: FileAccess,
    /// Seed of the injected faults (`None`: the emulator's own).
    pub fault_seed: Option<u64>,
    /// How the ID was written (for the keys messages suggest).
    pub syntax: Syntax,
}

impl OpenOptions {
    /// Default driver options, a writable backing, no placement.
    pub fn new(syntax: Syntax) -> Self {
        OpenOptions {
            controller: ControllerOptions::default(),
            emu_thread: None,
            files: FileAccess::ReadWrite,
            fault_seed: None,
            syntax,
        }
    }
}

/// Why a controller could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The emulated controller's configuration or backing was refused.
    #[error("cannot create the emulated controller")]
    CreateEmu(#[source] EmuError),
    /// The PCI device could not be opened.
    #[error("cannot open PCIe controller {addr}{hint}")]
    OpenPcie {
        /// The device.
        addr: PciAddress,
        /// How to fix it in the transport ID, when that is the fix.
        hint: String,
        /// What VFIO or uio said.
        #[source]
        source: VfioError,
    },
    /// Bring-up failed.
    #[error("bring-up of {what} failed")]
    BringUp {
        /// Which controller.
        what: String,
        /// The driver's reason.
        #[source]
        source: DriverError,
    },
    /// The ID names an io_uring passthrough namespace, which has no
    /// register-level controller to bring up.
    #[error(
        "{path} is a namespace left with the kernel's nvme driver (trtype:nvme-io_uring), which \
         this tool cannot drive yet: it brings up PCIe and emulated controllers only; programs \
         reach the namespace through nvme_engine::uring::UringDevice (nvme_trid::open_uring)"
    )]
    NotAController {
        /// The generic node.
        path: PathBuf,
    },
    /// The ID names a controller over NVMe/TCP, which has no registers to
    /// bring up through this path.
    #[error(
        "{addr} is an NVMe/TCP controller (trtype:TCP), which this tool drives through its own \
         path: programs open it with nvme_engine::tcp::TcpDevice (nvme_trid::open_tcp)"
    )]
    NotPcieTcp {
        /// The target address.
        addr: std::net::SocketAddr,
    },
    /// The NVMe/TCP controller could not be brought up.
    #[error("cannot bring up {subnqn} at {addr} over NVMe/TCP")]
    OpenTcp {
        /// The target address.
        addr: std::net::SocketAddr,
        /// The subsystem.
        subnqn: String,
        /// Why (refused, unreachable, Connect rejected, ...).
        #[source]
        source: Box<nvme_engine::tcp::TcpError>,
    },
    /// The generic node could not be opened (what, and how to fix it).
    #[error("cannot open {path} for NVMe passthrough over io_uring")]
    OpenUring {
        /// The node.
        path: PathBuf,
        /// Why (no such path, a block device, permissions, kernel support).
        #[source]
        source: UringError,
    },
    /// The selected namespace is not active or was skipped.
    #[error(
        "namespace {nsid} is not usable on {ctrl}: usable namespaces are [{usable}]{skipped}; pick one of them with {pick}"
    )]
    NotUsable {
        /// The NSID asked for.
        nsid: u32,
        /// The controller.
        ctrl: String,
        /// The active NSIDs.
        usable: String,
        /// `, skipped: 3 (reason)`, or nothing.
        skipped: String,
        /// The key to write (`ns:<id>` or `ns=<id>`).
        pick: String,
    },
    /// No namespace at all.
    #[error("{ctrl} has no usable namespace; create one with nvme-cli (nvme create-ns)")]
    NoNamespace {
        /// The controller.
        ctrl: String,
    },
}

/// A brought-up controller and what a tool reports about it.
pub struct Opened<D: Device> {
    /// The controller.
    pub ctrl: Controller<D>,
    /// `emulated (RAM, threaded, spinning, 1 x 1 GiB, 512-byte blocks)` or
    /// `PCIe 0000:04:00.0 (vfio-pci)`.
    pub description: String,
    /// Reads return no data (null backing): verification cannot pass.
    pub null_data: bool,
    /// The emulated controller's handle (`None` for a real one).
    pub emu: Option<EmuHandle>,
    /// Fault rules installed from the ID.
    pub faults: Installed,
    /// The PCI address, or the description of an emulated controller.
    label: String,
    syntax: Syntax,
}

impl<D: Device> Opened<D> {
    /// How often each injected fault fired.
    pub fn fault_hits(&self) -> Vec<(InjectKind, u64)> {
        match &self.emu {
            Some(h) => self.faults.hits(h),
            None => Vec::new(),
        }
    }

    /// The namespaces to use: `nsid` alone, or every active one.
    pub fn namespaces(&self, nsid: Option<u32>) -> Result<Vec<Namespace>, OpenError> {
        let namespaces = match nsid {
            None => self.ctrl.namespaces().to_vec(),
            Some(n) => vec![self.namespace(n)?],
        };
        if namespaces.is_empty() {
            return Err(OpenError::NoNamespace {
                ctrl: self.label.clone(),
            });
        }
        Ok(namespaces)
    }

    /// Namespace `nsid`, if it is active and usable.
    pub fn namespace(&self, nsid: u32) -> Result<Namespace, OpenError> {
        self.ctrl
            .namespace(nsid)
            .cloned()
            .ok_or_else(|| self.not_usable(nsid))
    }

    fn not_usable(&self, nsid: u32) -> OpenError {
        let usable: Vec<String> = self
            .ctrl
            .namespaces()
            .iter()
            .map(|n| n.id().to_string())
            .collect();
        let skipped: Vec<String> = self
            .ctrl
            .skipped_namespaces()
            .iter()
            .map(|s| format!("{} ({})", s.id, s.reason))
            .collect();
        OpenError::NotUsable {
            nsid,
            ctrl: self.label.clone(),
            usable: usable.join(", "),
            skipped: if skipped.is_empty() {
                String::new()
            } else {
                format!(", skipped: {}", skipped.join("; "))
            },
            pick: self.syntax.kv("ns", "<id>"),
        }
    }
}

impl EmuSpec {
    /// The backing file of namespace `n` (1-based): the `file` path for
    /// namespace 1, `path.N` for the others.
    pub fn namespace_file(&self, n: u32) -> Option<PathBuf> {
        let path = self.file.as_ref()?;
        Some(if n == 1 {
            path.clone()
        } else {
            let mut p = path.as_os_str().to_owned();
            p.push(format!(".{n}"));
            p.into()
        })
    }

    /// Where the device thread runs: `thread` when the tool placed it, else
    /// the ID's `core`.
    fn thread(&self, thread: Option<EmuThread>) -> Option<EmuThread> {
        thread.or(self.core.map(|core| EmuThread {
            core,
            shared: false,
        }))
    }
}

/// The emulator configuration `spec` describes: its namespaces' metadata
/// format and protection, its MDTS (default 9: 2 MiB transfers), SGL
/// support and event request limit, up to 1024 I/O queues of the driver's
/// largest size.
pub fn emu_config(spec: &EmuSpec, thread: Option<EmuThread>, files: FileAccess) -> EmuConfig {
    let blocks = spec.size / spec.lba_size as u64;
    let mut cfg = EmuConfig::ram(spec.size).without_namespaces();
    for n in 1..=spec.namespaces {
        let ns = match (spec.namespace_file(n), spec.null) {
            (_, true) => EmuNamespaceConfig::null(spec.lba_size, blocks),
            (Some(path), false) => {
                let ns = EmuNamespaceConfig::file(path, spec.lba_size, blocks);
                match files {
                    FileAccess::ReadOnly => ns.read_only(),
                    FileAccess::ReadWrite => ns,
                    FileAccess::ReadWriteGrow => ns.grow_file(),
                }
            }
            (None, false) => EmuNamespaceConfig::ram(spec.lba_size, blocks),
        };
        let f = &spec.features;
        let ns = ns
            .metadata(f.metadata_size, f.extended_lba)
            .protection(f.protection, f.pi_first)
            .optimal_io_boundary(f.optimal_io_boundary);
        cfg = cfg.namespace(ns);
    }
    cfg.mdts = spec.features.mdts;
    cfg.sgl = spec.features.sgl;
    cfg.sgl_metadata = spec.features.sgl_metadata;
    cfg.async_event_limit = spec.features.aerl_z + 1;
    cfg.io_queues = 1024;
    cfg.max_queue_entries = MAX_IO_QUEUE_ENTRIES as u32;
    cfg.mode = match (spec.mode, spec.thread(thread)) {
        (EmuRunMode::Inline, _) => EmuMode::Inline,
        (_, Some(t)) if t.shared => EmuMode::threaded_cooperative().on_core(t.core),
        (EmuRunMode::Threaded { spin }, t) => {
            let mode = if spin {
                EmuMode::threaded_spin()
            } else {
                EmuMode::threaded()
            };
            match t {
                Some(t) => mode.on_core(t.core),
                None => mode,
            }
        }
    };
    cfg
}

/// `emulated (RAM, threaded on core 1, spinning, 2 x 64 MiB, 512-byte blocks)`.
pub fn describe_emu(spec: &EmuSpec, thread: Option<EmuThread>) -> String {
    let backing = match (&spec.file, spec.null) {
        (_, true) => "null".to_string(),
        (Some(p), false) => format!("file {}", p.display()),
        (None, false) => "RAM".to_string(),
    };
    let mode = match (spec.mode, spec.thread(thread)) {
        (EmuRunMode::Inline, _) => "inline".to_string(),
        (_, Some(t)) if t.shared => {
            format!("threaded on core {}, shared: yields when idle", t.core)
        }
        (EmuRunMode::Threaded { spin }, t) => format!(
            "threaded{}, {}",
            t.map(|t| format!(" on core {}", t.core))
                .unwrap_or_default(),
            if spin { "spinning" } else { "back-off" }
        ),
    };
    let f = &spec.features;
    let metadata = match (f.metadata_size, f.protection.dps()) {
        (0, _) => String::new(),
        (ms, pi) => format!(
            " + {ms} bytes of {} metadata{}",
            if f.extended_lba {
                "extended"
            } else {
                "separate"
            },
            match pi {
                0 => String::new(),
                t => format!(
                    ", PI type {t} in the {} 8 bytes",
                    if f.pi_first { "first" } else { "last" }
                ),
            }
        ),
    };
    format!(
        "emulated ({backing}, {mode}, {} x {}, {}-byte blocks{metadata})",
        spec.namespaces,
        format_size(spec.size),
        spec.lba_size
    )
}

/// The tool's driver options, with shadow doorbells as the transport ID
/// says (`shadow:1` on, `shadow:0` or nothing off).
fn controller_options(opts: &OpenOptions, shadow_doorbells: bool) -> ControllerOptions {
    let mut c = opts.controller.clone();
    c.shadow_doorbells = shadow_doorbells;
    c
}

/// Open the namespace an `nvme-io_uring` ID names, with the queue options
/// the ID selects (polling, fixed buffers); `None` when `id` names another
/// transport.
pub fn open_uring(
    id: &ControllerId,
) -> Option<Result<(UringDevice, UringQueueOptions), OpenError>> {
    let ControllerId::UringPassthrough {
        path,
        polled,
        fixed_buffers,
    } = id
    else {
        return None;
    };
    let mut opts = UringQueueOptions::default();
    opts.polled = *polled;
    opts.fixed_buffers = *fixed_buffers;
    Some(
        UringDevice::open(path)
            .map(|dev| (dev, opts))
            .map_err(|source| OpenError::OpenUring {
                path: path.clone(),
                source,
            }),
    )
}

/// Open and bring up the controller `id` names.
pub fn open<D>(id: &ControllerId, opts: &OpenOptions) -> Result<Opened<D>, OpenError>
where
    D: Device + From<EmuController> + From<RealDevice>,
{
    match id {
        ControllerId::UringPassthrough { path, .. } => {
            Err(OpenError::NotAController { path: path.clone() })
        }
        ControllerId::Tcp(t) => Err(OpenError::NotPcieTcp { addr: t.addr }),
        ControllerId::Emu(spec) => {
            let dev = EmuController::new(emu_config(spec, opts.emu_thread, opts.files))
                .map_err(OpenError::CreateEmu)?;
            let handle = dev.handle();
            handle.set_vanish_recovers_on_reset(spec.vanish_recovers);
            handle.set_fatal_survives_reset(spec.fatal_sticky);
            let faults =
                Installed::install(&handle, &spec.faults, spec.delay_rounds, opts.fault_seed);
            let ctrl = Controller::new(
                D::from(dev),
                controller_options(opts, spec.shadow_doorbells),
            )
            .map_err(|source| OpenError::BringUp {
                what: "the emulated controller".into(),
                source,
            })?;
            let description = describe_emu(spec, opts.emu_thread);
            Ok(Opened {
                ctrl,
                label: description.clone(),
                description,
                null_data: spec.null,
                emu: Some(handle),
                faults,
                syntax: opts.syntax,
            })
        }
        ControllerId::Pcie {
            addr,
            no_iommu,
            shadow_doorbells,
        } => {
            let vopts = VfioOptions::default().with_no_iommu(*no_iommu);
            let dev = RealDevice::open(&addr.to_string(), vopts).map_err(|source| {
                let hint = match &source {
                    VfioError::NoIommuNotAllowed { .. } => format!(
                        " (in a {} the opt-in is the key {})",
                        opts.syntax.what(),
                        opts.syntax.kv("noiommu", "1")
                    ),
                    _ => String::new(),
                };
                OpenError::OpenPcie {
                    addr: *addr,
                    hint,
                    source,
                }
            })?;
            let how = match &dev {
                RealDevice::Vfio(_) => "vfio-pci",
                RealDevice::Uio(_) => "uio_pci_generic",
            };
            let ctrl = Controller::new(D::from(dev), controller_options(opts, *shadow_doorbells))
                .map_err(|source| OpenError::BringUp {
                what: format!("PCIe controller {addr}"),
                source,
            })?;
            Ok(Opened {
                ctrl,
                description: format!("PCIe {addr} ({how})"),
                label: addr.to_string(),
                null_data: false,
                emu: None,
                faults: Installed::default(),
                syntax: opts.syntax,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::TransportId;

    fn emu_spec(s: &str) -> EmuSpec {
        match s.parse::<TransportId>().unwrap().controller {
            ControllerId::Emu(spec) => spec,
            other => panic!("not emu: {other:?}"),
        }
    }

    fn open_cli(s: &str) -> Result<Opened<AnyDevice>, OpenError> {
        let id: TransportId = s.parse().unwrap();
        open(&id.controller, &OpenOptions::new(Syntax::Cli))
    }

    #[test]
    fn an_io_uring_id_is_refused_as_a_controller_and_its_missing_node_is_named() {
        let e = open_cli("trtype:nvme-io_uring path:/dev/ng97n3")
            .err()
            .unwrap();
        assert!(matches!(e, OpenError::NotAController { .. }), "{e}");
        assert!(e.to_string().contains("/dev/ng97n3"), "{e}");
        let id: TransportId = "trtype:nvme-io_uring path:/dev/ng97n3".parse().unwrap();
        let e = open_uring(&id.controller).unwrap().err().unwrap();
        assert!(matches!(e, OpenError::OpenUring { .. }), "{e}");
        let why = std::error::Error::source(&e).unwrap().to_string();
        assert!(why.contains("/dev/ng97n3"), "{why}");
        let emu: TransportId = "trtype:emu".parse().unwrap();
        assert!(open_uring(&emu.controller).is_none());
    }

    #[test]
    fn shadow_1_turns_shadow_doorbells_on_and_they_are_off_by_default() {
        let off = open_cli("trtype:emu mode:inline size:1M").unwrap();
        assert!(!off.ctrl.shadow_doorbells_active());
        let on = open_cli("trtype:emu mode:inline size:1M shadow:1").unwrap();
        assert!(on.ctrl.shadow_doorbells_active());
        let off = open_cli("trtype:emu mode:inline size:1M shadow:0").unwrap();
        assert!(!off.ctrl.shadow_doorbells_active());
        let e = "trtype:emu shadow:2".parse::<TransportId>().unwrap_err();
        assert!(e.to_string().contains("'shadow'"), "{e}");
        let pcie: TransportId = "trtype:PCIe traddr:0000:04:00.0 shadow:0".parse().unwrap();
        assert!(matches!(
            pcie.controller,
            ControllerId::Pcie {
                shadow_doorbells: false,
                ..
            }
        ));
    }

    #[test]
    fn an_emulated_id_opens_a_controller_with_its_namespaces_and_faults() {
        let o = open_cli("trtype:emu mode:inline size:4M ns:3 lba:4096 fail:1").unwrap();
        assert_eq!(o.ctrl.namespaces().len(), 3);
        assert_eq!(o.ctrl.namespaces()[0].block_size(), 4096);
        assert_eq!(
            o.description,
            "emulated (RAM, inline, 3 x 4 MiB, 4096-byte blocks)"
        );
        assert_eq!(o.namespaces(None).unwrap().len(), 3);
        assert_eq!(o.namespaces(Some(2)).unwrap()[0].id(), 2);
        assert_eq!(o.fault_hits(), [(InjectKind::ReadError, 0)]);
        let e = o.namespaces(Some(4)).unwrap_err().to_string();
        assert!(
            e.contains("namespace 4 is not usable")
                && e.contains("[1, 2, 3]")
                && e.contains("ns:<id>"),
            "{e}"
        );
    }

    #[test]
    fn a_placed_device_thread_is_described_where_it_runs() {
        let spec = emu_spec("trtype:emu idle:backoff core:0");
        assert!(describe_emu(&spec, None).contains("threaded on core 0, back-off"));
        let shared = Some(EmuThread {
            core: 1,
            shared: true,
        });
        assert!(describe_emu(&spec, shared).contains("on core 1, shared: yields when idle"));
        assert!(matches!(
            emu_config(&spec, shared, FileAccess::ReadWrite).mode,
            EmuMode::Threaded { core: Some(1), .. }
        ));
    }

    #[test]
    fn a_missing_pci_device_names_the_address_and_the_reason() {
        let e = open_cli("trtype:PCIe traddr:0000:ff:1f.7").err().unwrap();
        assert!(matches!(e, OpenError::OpenPcie { .. }));
        assert!(
            e.to_string()
                .contains("cannot open PCIe controller 0000:ff:1f.7"),
            "{e}"
        );
    }

    #[test]
    fn namespace_files_after_the_first_take_a_suffix() {
        let spec = emu_spec("trtype:emu file:/tmp/x.img");
        assert_eq!(spec.namespace_file(1), Some(PathBuf::from("/tmp/x.img")));
        assert_eq!(spec.namespace_file(3), Some(PathBuf::from("/tmp/x.img.3")));
        assert_eq!(EmuSpec::default().namespace_file(1), None);
    }
}
