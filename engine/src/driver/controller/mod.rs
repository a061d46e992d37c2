//! The controller: bring-up as a bounded, polled state machine (NVMe Base 2.0
//! §3.5.1), Identify (§5.17), namespace discovery, Number of Queues (§5.27.1.5),
//! I/O queue id allocation, admin passthrough and orderly shutdown (§3.6.1).

#![forbid(unsafe_code)]

mod log;

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::device::Device;
use crate::dma::{self, DmaBuf, DmaPool};
use crate::spec::command::cns;
use crate::spec::features::{FeatureId, number_of_queues_cdw11, number_of_queues_granted};
use crate::spec::identify::{IdentifyController, IdentifyNamespace, NamespaceList};
use crate::spec::registers::{
    self, Aqa, Cap, Cc, Csts, SHN_NORMAL, SHST_COMPLETE, Version, offset,
};
use crate::spec::{AdminOpcode, Command, Completion};

use crate::driver::admin::{AdminData, AdminQueue, AdminStats};
use crate::driver::bounds;
use crate::driver::error::DriverError;
use crate::driver::namespace::{Namespace, SkippedNamespace};
use crate::driver::qpair::{IoQueuePair, QueuePairOptions};
use crate::driver::shared::dbbuf::DoorbellBuffer;

/// Options for bring-up.
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// Admin SQ and CQ entries (equal sizes), 2..=4096. Default 32.
    pub admin_queue_entries: u16,
    /// I/O queue pairs to ask for with Set Features Number of Queues. Default 64.
    pub io_queues: u16,
    /// Default entries of an I/O queue pair, clamped to CAP.MQES+1 and 4096. Default 1024.
    pub io_queue_entries: u16,
    /// How long one admin command may take. Default 5 s.
    pub admin_timeout: Duration,
    /// How long a synchronous I/O helper waits for its completion. Default 30 s.
    pub io_timeout: Duration,
    /// The driver's own cap on bytes per command (also bounded by MDTS).
    /// Every queue slot preallocates PRP-list pages for this much. Default 2 MiB.
    pub max_transfer_bytes: usize,
    /// How often a command is resubmitted after an error status with DNR=0
    /// or after a controller reset, before it fails. Default 3.
    pub io_retry_limit: u8,
    /// Least time between two timeout scans of a queue pair
    /// ([`IoQueuePair::check_timeouts`]); also the granularity of I/O
    /// deadlines. Default 10 ms.
    pub timeout_scan_interval: Duration,
    /// Use shadow doorbells (Doorbell Buffer Config) on I/O queues when the
    /// controller supports them (OACS bit 8): MMIO doorbell writes only when
    /// the device asks for them. Default true; false always writes MMIO.
    pub shadow_doorbells: bool,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            admin_queue_entries: 32,
            io_queues: 64,
            io_queue_entries: 1024,
            admin_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(30),
            max_transfer_bytes: 2 << 20,
            io_retry_limit: 3,
            timeout_scan_interval: Duration::from_millis(10),
            shadow_doorbells: true,
        }
    }
}

/// Largest per-command transfer the driver accepts as a cap (65536 blocks of 512 B).
const MAX_TRANSFER_CAP: usize = 32 << 20;

/// Shared state of one brought-up controller.
pub(crate) struct Inner<D: Device> {
    pub(crate) device: D,
    pub(crate) name: String,
    pub(crate) cap: Cap,
    version: Version,
    pub(crate) stride: usize,
    identify: Box<IdentifyController>,
    namespaces: Vec<Namespace>,
    skipped: Vec<SkippedNamespace>,
    admin: Mutex<AdminQueue>,
    free_qids: Mutex<Vec<u16>>,
    granted: u16,
    pub(crate) max_transfer: usize,
    pub(crate) opts: ControllerOptions,
    shut_down: AtomicBool,
    /// Health and reset generation, see [`crate::driver::shared::recovery`].
    pub(crate) state: AtomicU64,
    /// Controller resets completed.
    pub(crate) resets: AtomicU64,
    /// Admin queue entries (for re-enabling after a reset).
    pub(crate) admin_entries: u16,
    /// Shadow doorbell pages, when supported and wanted.
    pub(crate) dbbuf: Option<DoorbellBuffer>,
    /// Whether the driver stopped the device's DMA, see [`crate::driver::shared::fence`].
    pub(crate) fence: AtomicU8,
    /// Why quiescing failed, once it did.
    pub(crate) fence_reason: Mutex<Option<String>>,
}

/// A brought-up NVMe controller. Cheap to clone; `Send + Sync`.
pub struct Controller<D: Device> {
    pub(super) inner: Arc<Inner<D>>,
}

impl<D: Device> Clone for Controller<D> {
    fn clone(&self) -> Self {
        Controller {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<D: Device> std::fmt::Debug for Controller<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("device", &self.inner.name)
            .field("namespaces", &self.inner.namespaces.len())
            .field("io_queues_granted", &self.inner.granted)
            .field("max_transfer_bytes", &self.inner.max_transfer)
            .finish()
    }
}

/// Poll CSTS until `done` holds, bounded by CAP.TO (at least 500 ms).
pub(super) fn wait_csts<D: Device>(
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
pub(super) fn enable<D: Device>(
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
pub(super) fn enabled_cc() -> Cc {
    Cc::new()
        .with_iosqes(6)
        .with_iocqes(4)
        .with_mps(0)
        .with_css(0)
        .with_ams(0)
        .with_en(true)
}

/// CC.EN = 0 and wait for CSTS.RDY = 0.
fn disable<D: Device>(device: &D, cap: Cap) -> Result<(), DriverError> {
    device.write32(offset::CC, 0);
    wait_csts(device, cap, "CSTS.RDY=0 after clearing CC.EN", false, |c| {
        !c.rdy()
    })
}

impl<D: Device> Controller<D> {
    /// Bring the controller up: reset, admin queue, enable, Identify,
    /// namespaces and Number of Queues. On failure the controller is left
    /// disabled.
    pub fn new(device: D, opts: ControllerOptions) -> Result<Self, DriverError> {
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
                let inner = Inner {
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
                    device,
                };
                Ok(Controller {
                    inner: Arc::new(inner),
                })
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

        // Bounded by NN, by the list's own end (a zero entry or a short
        // page) and by MAX_ACTIVE_NAMESPACES.
        let nn = identify.nn.get();
        let mut scan = bounds::NamespaceScan::default();
        let mut after = 0u32;
        loop {
            let mut cmd = Command::new(AdminOpcode::IDENTIFY.0, after);
            cmd.cdw10 = cns::ACTIVE_NAMESPACES as u32;
            admin.execute(device, cmd, AdminData::Scratch)?;
            let list: NamespaceList = admin
                .scratch()
                .ok_or_else(|| bad("active namespace list unreadable".into()))?;
            match scan.page(&device.name(), nn, list.active())? {
                bounds::Next::After(last) => after = last,
                bounds::Next::Done => break,
            }
        }
        let ids = std::mem::take(&mut scan.ids);
        let mut namespaces = Vec::new();
        let mut skipped = Vec::new();
        for id in ids {
            let mut cmd = Command::new(AdminOpcode::IDENTIFY.0, id);
            cmd.cdw10 = cns::NAMESPACE as u32;
            admin.execute(device, cmd, AdminData::Scratch)?;
            let data: IdentifyNamespace = admin
                .scratch()
                .ok_or_else(|| bad(format!("Identify Namespace {id} unreadable")))?;
            match Namespace::from_identify(id, data, &identify, max_transfer) {
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

    /// The device this controller drives.
    pub fn device(&self) -> &D {
        &self.inner.device
    }
    /// CAP as read at bring-up.
    pub fn cap(&self) -> Cap {
        self.inner.cap
    }
    /// VS as read at bring-up.
    pub fn version(&self) -> Version {
        self.inner.version
    }
    /// Identify Controller data.
    pub fn identify(&self) -> &IdentifyController {
        &self.inner.identify
    }
    /// Active, usable namespaces in NSID order.
    pub fn namespaces(&self) -> &[Namespace] {
        &self.inner.namespaces
    }
    /// The usable namespace `nsid`.
    pub fn namespace(&self, nsid: u32) -> Option<&Namespace> {
        self.inner.namespaces.iter().find(|n| n.id == nsid)
    }
    /// Active namespaces the driver does not use, with the reason.
    pub fn skipped_namespaces(&self) -> &[SkippedNamespace] {
        &self.inner.skipped
    }
    /// I/O queue pairs the controller granted (the smaller of SQs and CQs).
    pub fn io_queues_granted(&self) -> u16 {
        self.inner.granted
    }
    /// Most bytes one command may transfer (MDTS and the driver's PRP-list cap).
    pub fn max_transfer_bytes(&self) -> usize {
        self.inner.max_transfer
    }
    /// The options the controller was brought up with.
    pub fn options(&self) -> &ControllerOptions {
        &self.inner.opts
    }
    /// Admin queue counters.
    pub fn admin_stats(&self) -> AdminStats {
        self.inner.admin().stats
    }

    /// Create an I/O completion queue (interrupts disabled) and submission
    /// queue; the returned pair belongs to the calling thread.
    pub fn create_io_qpair(&self, opts: QueuePairOptions) -> Result<IoQueuePair<D>, DriverError> {
        IoQueuePair::create(Arc::clone(&self.inner), opts)
    }

    /// A DMA pool of `bytes` for this device.
    pub fn create_pool(&self, bytes: usize) -> Result<DmaPool, DriverError> {
        let region =
            dma::allocate(&self.inner.device, bytes).map_err(|source| DriverError::Dma {
                what: "a buffer pool",
                source,
            })?;
        Ok(DmaPool::new(region))
    }

    /// Raw admin passthrough: the driver fills the CID and, from `buf`, the PRPs.
    pub fn admin_command(
        &self,
        cmd: Command,
        buf: Option<&mut DmaBuf>,
    ) -> Result<Completion, DriverError> {
        let data = match buf {
            Some(b) => AdminData::Buf(b),
            None => AdminData::None,
        };
        self.inner.admin_execute(cmd, data)
    }

    /// Reset the controller and bring it back: CC.EN = 0 (wait for RDY = 0,
    /// bounded by CAP.TO), re-initialize the admin queue, CC.EN = 1, and
    /// Number of Queues again. I/O queue pairs notice the new generation on
    /// their next `process_completions` and re-create their queues on their
    /// own threads; commands they had in flight are resubmitted (up to the
    /// retry limit) or fail with [`crate::driver::IoError::ControllerReset`]. A
    /// device that still reads all ones is marked removed
    /// ([`DriverError::DeviceGone`]); any other failure leaves the
    /// controller failed until a later reset succeeds.
    pub fn reset(&self) -> Result<(), DriverError> {
        self.inner.reset(None)
    }
    /// Whether I/O queues use shadow doorbells now: the controller supports
    /// Doorbell Buffer Config, [`ControllerOptions::shadow_doorbells`] is on,
    /// and the controller accepted the buffers since its last reset.
    pub fn shadow_doorbells_active(&self) -> bool {
        let generation = crate::driver::shared::recovery::generation_of(self.inner.state());
        self.inner
            .dbbuf
            .as_ref()
            .is_some_and(|b| b.configured_in(generation))
    }
    /// Times the controller accepted the shadow doorbell buffers (once at
    /// bring-up and once after each reset).
    pub fn shadow_doorbell_configurations(&self) -> u64 {
        self.inner.dbbuf.as_ref().map_or(0, |b| b.configurations())
    }
    /// Controller resets completed so far (explicit and automatic).
    pub fn resets(&self) -> u64 {
        self.inner.resets.load(Ordering::Relaxed)
    }
    /// Whether the device was found surprise-removed.
    pub fn is_removed(&self) -> bool {
        self.inner.health() == crate::driver::shared::recovery::Health::Removed
    }
    /// The controller's health now.
    pub fn health(&self) -> crate::driver::shared::recovery::Health {
        self.inner.health()
    }

    /// Orderly shutdown: CC.SHN = 01b, then wait for CSTS.SHST = 10b,
    /// bounded by CAP.TO. Later admin commands fail with [`DriverError::ShutDown`].
    pub fn shutdown(&self) -> Result<(), DriverError> {
        self.inner.shutdown()
    }
}

impl<D: Device> Inner<D> {
    pub(crate) fn admin(&self) -> MutexGuard<'_, AdminQueue> {
        // A panic while holding the lock cannot leave the queue in a state
        // worse than a timed-out command, which the CID check tolerates.
        self.admin.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn admin_execute(
        &self,
        cmd: Command,
        data: AdminData<'_>,
    ) -> Result<Completion, DriverError> {
        let mut admin = self.admin();
        self.admin_execute_locked(&mut admin, cmd, data)
    }

    /// [`Self::admin_execute`] with the admin lock held (so the caller can
    /// read the scratch page afterwards).
    pub(crate) fn admin_execute_locked(
        &self,
        admin: &mut AdminQueue,
        cmd: Command,
        data: AdminData<'_>,
    ) -> Result<Completion, DriverError> {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(DriverError::ShutDown);
        }
        if self.health() == crate::driver::shared::recovery::Health::Removed {
            return Err(DriverError::DeviceGone {
                device: self.name.clone(),
                during: "an admin command (the device was removed)",
            });
        }
        if self.fence_state() == crate::driver::shared::fence::QUIESCED {
            return Err(self.quiesced_error("an admin command"));
        }
        let mut data = data;
        let carries_data = !matches!(data, AdminData::None);
        let r = match &mut data {
            AdminData::None => admin.execute(&self.device, cmd, AdminData::None),
            AdminData::Scratch => admin.execute(&self.device, cmd, AdminData::Scratch),
            AdminData::Buf(b) => admin.execute(&self.device, cmd, AdminData::Buf(b)),
        };
        match r {
            Err(
                e @ (DriverError::AdminTimeout { .. }
                | DriverError::DeviceGone { .. }
                | DriverError::ControllerFatal { .. }),
            ) if carries_data => Err(self.recover_admin_data_failure(admin, &mut data, e)),
            other => other,
        }
    }

    pub(crate) fn take_qid(&self) -> Result<u16, DriverError> {
        let mut free = self.free_qids.lock().unwrap_or_else(|p| p.into_inner());
        free.pop().ok_or(DriverError::QueuesExhausted {
            granted: self.granted,
        })
    }

    pub(crate) fn return_qid(&self, qid: u16) {
        let mut free = self.free_qids.lock().unwrap_or_else(|p| p.into_inner());
        free.push(qid);
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }

    fn shutdown(&self) -> Result<(), DriverError> {
        // Hold the admin lock so no admin command races the shutdown.
        let _admin = self.admin();
        if self.health() == crate::driver::shared::recovery::Health::Removed {
            self.shut_down.store(true, Ordering::Release);
            return Ok(());
        }
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // A controller that is not running (disabled after a failed reset,
        // fatal, or gone) has nothing to shut down and would never report
        // SHST complete.
        let csts = self.device.read32(offset::CSTS);
        if csts == registers::ALL_ONES {
            return Err(DriverError::DeviceGone {
                device: self.name.clone(),
                during: "shutdown",
            });
        }
        let csts = Csts::from(csts);
        if csts.cfs() {
            return Err(DriverError::ControllerFatal {
                device: self.name.clone(),
                during: "shutdown",
            });
        }
        if !csts.rdy() {
            return Ok(());
        }
        self.device
            .write32(offset::CC, u32::from(enabled_cc().with_shn(SHN_NORMAL)));
        wait_csts(
            &self.device,
            self.cap,
            "CSTS.SHST=10b after CC.SHN=01b",
            false,
            |c| c.shst() == SHST_COMPLETE,
        )
    }
}

impl<D: Device> Drop for Inner<D> {
    fn drop(&mut self) {
        // Best effort: nothing can be reported from a destructor. Disabling
        // afterwards guarantees the controller stops using the admin queue
        // before its memory is released.
        let _ = self.shutdown();
        if disable(&self.device, self.cap).is_err()
            && self.fence_state() == crate::driver::shared::fence::OPEN
        {
            // The controller may still use the admin queue: stop it through
            // the transport, or keep the admin memory mapped for good.
            if let crate::driver::shared::fence::Fence::Unproven(_) = self.fence_dma() {
                self.admin().quarantine();
                if let Some(b) = &self.dbbuf {
                    b.quarantine();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::dma::{DmaError, DmaRegion, HostMemory};
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// Registers only: enough to drive the bring-up state machine into
    /// each of its failure paths without an admin queue behind it.
    struct RegisterMock {
        cap: u64,
        cc: AtomicU32,
        /// What CSTS reads; `None` = follow CC.EN into RDY.
        csts: Option<u32>,
        /// Set CFS together with RDY once enabled.
        fatal_on_enable: bool,
        cc_writes: Mutex<Vec<u32>>,
    }

    impl RegisterMock {
        fn new(cap: Cap) -> Self {
            RegisterMock {
                cap: u64::from(cap),
                cc: AtomicU32::new(0),
                csts: None,
                fatal_on_enable: false,
                cc_writes: Mutex::new(Vec::new()),
            }
        }
    }

    impl Device for RegisterMock {
        fn read32(&self, off: usize) -> u32 {
            match off {
                offset::CAP => self.cap as u32,
                o if o == offset::CAP + 4 => (self.cap >> 32) as u32,
                offset::VS => 0x0002_0000,
                offset::CC => self.cc.load(Ordering::SeqCst),
                offset::CSTS => self.csts.unwrap_or_else(|| {
                    let en = self.cc.load(Ordering::SeqCst) & 1;
                    en | if self.fatal_on_enable && en == 1 {
                        2
                    } else {
                        0
                    }
                }),
                _ => 0,
            }
        }
        fn write32(&self, off: usize, value: u32) {
            if off == offset::CC {
                self.cc.store(value, Ordering::SeqCst);
                self.cc_writes.lock().unwrap().push(value);
            }
        }
        fn map_dma(&self, memory: HostMemory) -> Result<DmaRegion, DmaError> {
            Ok(DmaRegion::unmapped_for_tests(memory, 0x1000_0000))
        }
        fn allows_plain_memory(&self) -> bool {
            true
        }
        fn name(&self) -> String {
            "mock".into()
        }
    }

    fn good_cap() -> Cap {
        Cap::new()
            .with_mqes_z(1023)
            .with_to(1)
            .with_css(1)
            .with_mpsmin(0)
            .with_mpsmax(4)
    }

    fn err(dev: RegisterMock) -> DriverError {
        match Controller::new(dev, ControllerOptions::default()) {
            Ok(_) => panic!("bring-up unexpectedly succeeded"),
            Err(e) => e,
        }
    }

    #[test]
    fn controller_without_nvm_command_set_is_refused() {
        let e = err(RegisterMock::new(good_cap().with_css(0x40)));
        assert!(matches!(e, DriverError::NoNvmCommandSet { .. }), "{e}");
    }

    #[test]
    fn controller_without_4k_pages_is_refused() {
        let e = err(RegisterMock::new(good_cap().with_mpsmin(1)));
        assert!(
            matches!(
                e,
                DriverError::PageSizeUnsupported {
                    min_bytes: 8192,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn all_ones_csts_means_device_gone() {
        let mut dev = RegisterMock::new(good_cap());
        dev.csts = Some(u32::MAX);
        let e = err(dev);
        assert!(matches!(e, DriverError::DeviceGone { .. }), "{e}");
        assert!(e.to_string().contains("0xFFFFFFFF"));
    }

    #[test]
    fn never_ready_times_out_naming_cap_to_and_leaves_controller_disabled() {
        let mut dev = RegisterMock::new(good_cap());
        dev.csts = Some(0);
        let dev = Arc::new(dev);
        struct Shared(Arc<RegisterMock>);
        impl Device for Shared {
            fn read32(&self, o: usize) -> u32 {
                self.0.read32(o)
            }
            fn write32(&self, o: usize, v: u32) {
                self.0.write32(o, v)
            }
            fn map_dma(&self, m: HostMemory) -> Result<DmaRegion, DmaError> {
                self.0.map_dma(m)
            }
            fn allows_plain_memory(&self) -> bool {
                true
            }
            fn name(&self) -> String {
                self.0.name()
            }
        }
        let e = match Controller::new(Shared(Arc::clone(&dev)), ControllerOptions::default()) {
            Ok(_) => panic!("bring-up unexpectedly succeeded"),
            Err(e) => e,
        };
        assert!(
            matches!(e, DriverError::ReadyTimeout { cap_to_ms: 500, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("CAP.TO allows 500 ms"));
        let writes = dev.cc_writes.lock().unwrap().clone();
        let enable = Cc::from(writes[0]);
        assert!(enable.en());
        assert_eq!(
            (enable.iosqes(), enable.iocqes(), enable.mps(), enable.css()),
            (6, 4, 0, 0)
        );
        assert!(
            !Cc::from(*writes.last().unwrap()).en(),
            "undone: {writes:x?}"
        );
    }

    #[test]
    fn fatal_status_on_enable_is_reported() {
        let mut dev = RegisterMock::new(good_cap());
        dev.fatal_on_enable = true;
        let e = err(dev);
        assert!(matches!(e, DriverError::ControllerFatal { .. }), "{e}");
    }

    #[test]
    fn invalid_options_are_named() {
        let opts = ControllerOptions {
            admin_queue_entries: 1,
            ..Default::default()
        };
        match Controller::new(RegisterMock::new(good_cap()), opts) {
            Err(DriverError::InvalidOption { name, .. }) => assert_eq!(name, "admin_queue_entries"),
            other => panic!("{:?}", other.err()),
        }
    }
}
