//! Controller bring-up as a bounded, polled state machine (NVMe Base 2.0
//! §3.5.1): disable, admin queue, enable, Identify (§5.17), namespace
//! discovery and Number of Queues (§5.27.1.5). Every wait is bounded by
//! CAP.TO and measured with a clock.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64};
use std::time::{Duration, Instant};

use crate::device::Device;
use crate::dma;
use crate::spec::command::cns;
use crate::spec::command::{AdminOpcode, Command};
use crate::spec::features::{FeatureId, number_of_queues_cdw11, number_of_queues_granted};
use crate::spec::identify::{IdentifyController, IdentifyNamespace, NamespaceList};
use crate::spec::registers::{self, Aqa, Cap, Cc, Csts, Version, offset};

use super::Inner;
use super::dbbuf::DoorbellBuffer;
use crate::driver::admin::{AdminData, AdminQueue};
use crate::driver::bounds;
use crate::driver::error::DriverError;
use crate::driver::namespace::{Namespace, SkippedNamespace};
use crate::driver::options::{ControllerOptions, MAX_TRANSFER_CAP};

/// Poll CSTS until `done` holds, bounded by CAP.TO (at least 500 ms).
pub(crate) fn wait_csts<D: Device>(
    device: &D,
    cap: Cap,
    what: &'static str,
    check_fatal: bool,
    done: impl Fn(Csts) -> bool,
) -> Result<(), DriverError> {
    let limit = Duration::from_millis(cap.timeout_ms().max(500));
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let raw = device.read32(offset::CSTS);
        if raw == registers::ALL_ONES {
            return Err(DriverError::DeviceGone {
                device: device.name(),
                during: what,
            });
        }
        let csts = Csts::from(raw);
        if check_fatal && csts.cfs() {
            return Err(DriverError::ControllerFatal {
                device: device.name(),
                during: what,
            });
        }
        if done(csts) {
            return Ok(());
        }
        let waited = start.elapsed();
        if waited > limit {
            return Err(DriverError::ReadyTimeout {
                device: device.name(),
                what,
                waited_ms: waited.as_millis() as u64,
                cap_to_ms: cap.timeout_ms(),
            });
        }
        spins = spins.wrapping_add(1);
        if spins < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// Program AQA/ASQ/ACQ for `admin`, set CC.EN = 1 and wait for CSTS.RDY = 1.
pub(crate) fn enable<D: Device>(
    device: &D,
    cap: Cap,
    admin: &AdminQueue,
    entries: u16,
) -> Result<(), DriverError> {
    let (asq, acq) = admin.ring_iovas();
    let aqa = Aqa::new().with_asqs_z(entries - 1).with_acqs_z(entries - 1);
    device.write32(offset::AQA, u32::from(aqa));
    device.write64(offset::ASQ, asq);
    device.write64(offset::ACQ, acq);
    device.write32(offset::CC, u32::from(enabled_cc()));
    wait_csts(device, cap, "CSTS.RDY=1 after setting CC.EN", true, |c| {
        c.rdy()
    })
}

/// The CC value the driver runs a controller with: 64-byte SQEs, 16-byte
/// CQEs, 4 KiB pages, NVM command set, round robin, enabled. CC is always
/// written from this, never read back and modified: a failing device may
/// return anything.
pub(crate) fn enabled_cc() -> Cc {
    Cc::new()
        .with_iosqes(6)
        .with_iocqes(4)
        .with_mps(0)
        .with_css(0)
        .with_ams(0)
        .with_en(true)
}

/// CC.EN = 0 and wait for CSTS.RDY = 0.
pub(crate) fn disable<D: Device>(device: &D, cap: Cap) -> Result<(), DriverError> {
    device.write32(offset::CC, 0);
    wait_csts(device, cap, "CSTS.RDY=0 after clearing CC.EN", false, |c| {
        !c.rdy()
    })
}

impl<D: Device> Inner<D> {
    /// Bring the controller up: reset, admin queue, enable, Identify,
    /// namespaces and Number of Queues. On failure the controller is left
    /// disabled.
    pub(crate) fn bring_up(device: D, opts: ControllerOptions) -> Result<Self, DriverError> {
        let name = device.name();
        if !(2..=4096).contains(&opts.admin_queue_entries) {
            return Err(DriverError::InvalidOption {
                name: "admin_queue_entries",
                value: opts.admin_queue_entries as u64,
                hint: "use 2..=4096",
            });
        }
        if opts.io_queues == 0 || opts.io_queues == u16::MAX {
            return Err(DriverError::InvalidOption {
                name: "io_queues",
                value: opts.io_queues as u64,
                hint: "use 1..=65534",
            });
        }
        if opts.max_transfer_bytes < 4096 || opts.max_transfer_bytes > MAX_TRANSFER_CAP {
            return Err(DriverError::InvalidOption {
                name: "max_transfer_bytes",
                value: opts.max_transfer_bytes as u64,
                hint: "use 4 KiB..=32 MiB",
            });
        }
        let cap = Cap::from(device.read64(offset::CAP));
        if device.read32(offset::CSTS) == registers::ALL_ONES {
            return Err(DriverError::DeviceGone {
                device: name,
                during: "reading CAP/CSTS",
            });
        }
        let version = Version::from(device.read32(offset::VS));

        // Step 1: disable if enabled or still ready.
        let cc = Cc::from(device.read32(offset::CC));
        let csts = Csts::from(device.read32(offset::CSTS));
        if cc.en() || csts.rdy() {
            disable(&device, cap)?;
        }
        // Step 2: command set and page size.
        bounds::check_cap(&name, cap)?;
        if !cap.supports_nvm() {
            return Err(DriverError::NoNvmCommandSet { device: name });
        }
        if cap.mpsmin() > 0 || cap.mpsmax() < cap.mpsmin() {
            return Err(DriverError::PageSizeUnsupported {
                device: name,
                min_bytes: 4096u64 << cap.mpsmin(),
                max_bytes: 4096u64 << cap.mpsmax(),
            });
        }
        // Step 3: admin queue.
        let entries = opts
            .admin_queue_entries
            .min(cap.max_queue_entries().min(4096) as u16);
        let stride = cap.doorbell_stride();
        let region = dma::allocate(
            &device,
            AdminQueue::region_bytes(entries, opts.max_transfer_bytes),
        )
        .map_err(|source| DriverError::Dma {
            what: "the admin queue",
            source,
        })?;
        let admin = AdminQueue::new(
            region,
            entries,
            stride,
            opts.max_transfer_bytes,
            opts.admin_timeout,
        )?;
        // Step 4: enable.
        if let Err(e) = enable(&device, cap, &admin, entries) {
            let _ = disable(&device, cap);
            return Err(e);
        }
        let mut admin = admin;
        match Self::discover(&device, &mut admin, &opts) {
            Ok((identify, namespaces, skipped, granted, max_transfer)) => {
                // Optional: without DMA memory for it, or when the device
                // refuses the command, I/O queues ring MMIO doorbells.
                let dbbuf = DoorbellBuffer::allocate(
                    &device,
                    identify.oacs.get(),
                    opts.shadow_doorbells,
                    stride,
                )
                .ok()
                .flatten();
                if let Some(b) = &dbbuf {
                    let _ = b.configure(&device, &mut admin, 0);
                }
                let events = super::events::EventState::new(
                    &identify,
                    entries,
                    opts.async_events,
                    namespaces.clone(),
                );
                let inner = Inner {
                    events,
                    name,
                    cap,
                    version,
                    stride,
                    identify,
                    namespaces,
                    skipped,
                    admin: Mutex::new(admin),
                    free_qids: Mutex::new((1..=granted).rev().collect()),
                    granted,
                    max_transfer,
                    opts,
                    shut_down: AtomicBool::new(false),
                    state: AtomicU64::new(0),
                    resets: AtomicU64::new(0),
                    admin_entries: entries,
                    dbbuf,
                    fence: AtomicU8::new(crate::driver::shared::fence::OPEN),
                    fence_reason: Mutex::new(None),
                    work: super::worker::AdminWork::new(),
                    device,
                };
                Ok(inner)
            }
            Err(e) => {
                // Nothing else was created yet: disabling the controller
                // releases the admin queue before its memory goes away.
                let _ = disable(&device, cap);
                drop(admin);
                Err(e)
            }
        }
    }

    /// Steps 5–7: Identify Controller, namespaces, Number of Queues.
    #[allow(clippy::type_complexity)]
    fn discover(
        device: &D,
        admin: &mut AdminQueue,
        opts: &ControllerOptions,
    ) -> Result<
        (
            Box<IdentifyController>,
            Vec<Namespace>,
            Vec<SkippedNamespace>,
            u16,
            usize,
        ),
        DriverError,
    > {
        let bad = |what: String| DriverError::BadDeviceData {
            device: device.name(),
            what,
        };
        let mut cmd = Command::new(AdminOpcode::IDENTIFY.0, 0);
        cmd.cdw10 = cns::CONTROLLER as u32;
        admin.execute(device, cmd, AdminData::Scratch)?;
        let identify: Box<IdentifyController> = Box::new(
            admin
                .scratch()
                .ok_or_else(|| bad("Identify Controller data unreadable".into()))?,
        );
        bounds::check_entry_sizes(&device.name(), &identify)?;
        // MDTS is in units of CAP.MPSMIN pages, which is 4 KiB here.
        let max_transfer = bounds::mdts_bytes(identify.mdts, opts.max_transfer_bytes);

        let nn = identify.nn.get();
        let mut scan = active_namespace_ids(device, admin, nn)?;
        let ids = std::mem::take(&mut scan.ids);
        let mut namespaces = Vec::new();
        let mut skipped = Vec::new();
        for id in ids {
            match identify_namespace(device, admin, id, &identify, max_transfer)? {
                Ok(ns) => namespaces.push(ns),
                Err(reason) => skipped.push(SkippedNamespace { id, reason }),
            }
        }

        if let Some(id) = scan.truncated_at {
            skipped.push(SkippedNamespace {
                id,
                reason: format!(
                    "this and later active namespaces were not scanned: the driver uses at most {} (NN reports {nn})",
                    bounds::MAX_ACTIVE_NAMESPACES
                ),
            });
        }

        let mut cmd = Command::new(AdminOpcode::SET_FEATURES.0, 0);
        cmd.cdw10 = FeatureId::NUMBER_OF_QUEUES.0 as u32;
        cmd.cdw11 = number_of_queues_cdw11(opts.io_queues, opts.io_queues);
        let c = admin.execute(device, cmd, AdminData::None)?;
        let (sqs, cqs) = number_of_queues_granted(c.dw0);
        let granted = bounds::queues_granted(sqs, cqs, opts.io_queues);
        Ok((identify, namespaces, skipped, granted, max_transfer))
    }
}

/// The Active Namespace ID list (CNS 02h), bounded by NN, by the list's
/// own end (a zero entry or a short page) and by
/// [`bounds::MAX_ACTIVE_NAMESPACES`].
pub(crate) fn active_namespace_ids<D: Device>(
    device: &D,
    admin: &mut AdminQueue,
    nn: u32,
) -> Result<bounds::NamespaceScan, DriverError> {
    let mut scan = bounds::NamespaceScan::default();
    let mut after = 0u32;
    loop {
        let mut cmd = Command::new(AdminOpcode::IDENTIFY.0, after);
        cmd.cdw10 = cns::ACTIVE_NAMESPACES as u32;
        admin.execute(device, cmd, AdminData::Scratch)?;
        let list: NamespaceList = admin.scratch().ok_or_else(|| DriverError::BadDeviceData {
            device: device.name(),
            what: "active namespace list unreadable".into(),
        })?;
        match scan.page(&device.name(), nn, list.active())? {
            bounds::Next::After(last) => after = last,
            bounds::Next::Done => return Ok(scan),
        }
    }
}

/// Identify Namespace `id` (CNS 00h): the namespace, or why the driver
/// cannot use it.
pub(crate) fn identify_namespace<D: Device>(
    device: &D,
    admin: &mut AdminQueue,
    id: u32,
    ctrl: &IdentifyController,
    max_transfer: usize,
) -> Result<Result<Namespace, String>, DriverError> {
    let mut cmd = Command::new(AdminOpcode::IDENTIFY.0, id);
    cmd.cdw10 = cns::NAMESPACE as u32;
    admin.execute(device, cmd, AdminData::Scratch)?;
    let data: IdentifyNamespace = admin.scratch().ok_or_else(|| DriverError::BadDeviceData {
        device: device.name(),
        what: format!("Identify Namespace {id} unreadable"),
    })?;
    Ok(Namespace::from_identify(id, data, ctrl, max_transfer))
}
