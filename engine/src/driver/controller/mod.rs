//! The controller handle: bring-up ([`Controller::new`]), what Identify and
//! namespace discovery found, I/O queue pair and pool creation, admin
//! passthrough, log pages and features ([`log`]), reset and orderly shutdown
//! (NVMe Base 2.0 §3.6.1). The work itself is done by the shared state in
//! `shared/`; this is the top layer of the driver.

#![forbid(unsafe_code)]

mod events;
mod log;

use std::sync::Arc;

use crate::device::Device;
use crate::dma::{self, DmaBuf, DmaPool};
use crate::spec::identify::IdentifyController;
use crate::spec::registers::{Cap, Version};
use crate::spec::{command::Command, completion::Completion};

use crate::driver::admin::{AdminData, AdminStats};
use crate::driver::error::DriverError;
use crate::driver::namespace::{Namespace, SkippedNamespace};
use crate::driver::options::ControllerOptions;
use crate::driver::qpair::{IoQueuePair, QueuePairOptions};
use crate::driver::shared::Inner;
use crate::driver::shared::hold::UserHold;

/// A brought-up NVMe controller. Cheap to clone; `Send + Sync`.
pub struct Controller<D: Device> {
    pub(super) inner: UserHold<D>,
}

impl<D: Device> Clone for Controller<D> {
    fn clone(&self) -> Self {
        Controller {
            inner: self.inner.clone(),
        }
    }
}

impl<D: Device> std::fmt::Debug for Controller<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("device", &self.inner.name())
            .field("namespaces", &self.inner.namespaces().len())
            .field("io_queues_granted", &self.inner.granted())
            .field("max_transfer_bytes", &self.inner.max_transfer())
            .finish()
    }
}
impl<D: Device> Controller<D> {
    /// Bring the controller up: reset, admin queue, enable, Identify,
    /// namespaces and Number of Queues. On failure the controller is left
    /// disabled.
    pub fn new(device: D, opts: ControllerOptions) -> Result<Self, DriverError> {
        let inner = Arc::new(Inner::bring_up(device, opts)?);
        inner.arm_async_events(&mut inner.admin(), false);
        inner.start_admin_worker();
        Ok(Controller {
            inner: UserHold::new(inner),
        })
    }

    /// The device this controller drives.
    pub fn device(&self) -> &D {
        self.inner.device()
    }
    /// CAP as read at bring-up.
    pub fn cap(&self) -> Cap {
        self.inner.cap()
    }
    /// VS as read at bring-up.
    pub fn version(&self) -> Version {
        self.inner.version()
    }
    /// Identify Controller data.
    pub fn identify(&self) -> &IdentifyController {
        self.inner.identify()
    }
    /// Active, usable namespaces in NSID order, as bring-up found them
    /// ([`Controller::active_namespaces`] follows attach, detach and resize
    /// at run time).
    pub fn namespaces(&self) -> &[Namespace] {
        self.inner.namespaces()
    }
    /// The usable namespace `nsid`.
    pub fn namespace(&self, nsid: u32) -> Option<&Namespace> {
        self.inner.namespaces().iter().find(|n| n.id() == nsid)
    }
    /// Active namespaces the driver does not use, with the reason.
    pub fn skipped_namespaces(&self) -> &[SkippedNamespace] {
        self.inner.skipped()
    }
    /// I/O queue pairs the controller granted (the smaller of SQs and CQs).
    pub fn io_queues_granted(&self) -> u16 {
        self.inner.granted()
    }
    /// Most bytes one command may transfer (MDTS and the driver's PRP-list cap).
    pub fn max_transfer_bytes(&self) -> usize {
        self.inner.max_transfer()
    }
    /// The options the controller was brought up with.
    pub fn options(&self) -> &ControllerOptions {
        self.inner.opts()
    }
    /// Admin queue counters.
    pub fn admin_stats(&self) -> AdminStats {
        self.inner.admin().stats
    }

    /// Create an I/O completion queue (interrupts disabled) and submission
    /// queue; the returned pair belongs to the calling thread.
    pub fn create_io_qpair(&self, opts: QueuePairOptions) -> Result<IoQueuePair<D>, DriverError> {
        IoQueuePair::create(self.inner.clone(), opts)
    }

    /// A DMA pool of `bytes` for this device.
    pub fn create_pool(&self, bytes: usize) -> Result<DmaPool, DriverError> {
        let region =
            dma::allocate(self.inner.device(), bytes).map_err(|source| DriverError::Dma {
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
        self.inner.shadow_configured_in(generation)
    }
    /// Times the controller accepted the shadow doorbell buffers (once at
    /// bring-up and once after each reset).
    pub fn shadow_doorbell_configurations(&self) -> u64 {
        self.inner.shadow_configurations()
    }
    /// Controller resets completed so far (explicit and automatic).
    pub fn resets(&self) -> u64 {
        self.inner.resets()
    }
    /// Whether the device was found surprise-removed.
    pub fn is_removed(&self) -> bool {
        self.inner.health() == crate::driver::shared::recovery::Health::Removed
    }
    /// The controller's health now.
    pub fn health(&self) -> crate::driver::shared::recovery::Health {
        self.inner.health()
    }

    /// Wait until the aborts and resets queue pairs asked for so far have
    /// been carried out, at most `limit`; returns whether they were. Queue
    /// pairs post that work from their deadline scans
    /// ([`IoQueuePair::check_timeouts`]) and go on polling; the
    /// controller's admin worker runs it. Their outcome reaches the queue
    /// pairs on their next `process_completions`. For tests and tools that
    /// want to look at the result of a scan; the I/O path never waits.
    pub fn wait_for_admin_work(&self, limit: std::time::Duration) -> bool {
        self.inner.wait_admin_work(limit)
    }

    /// Keep the controller's admin worker (the thread that runs aborts and
    /// resets) off `cpus`, typically the cores of polling threads: it moves
    /// to the first CPU this process may use that no call named, if any.
    pub fn keep_admin_work_off(&self, cpus: &[usize]) {
        self.inner.keep_admin_work_off(cpus)
    }

    /// Orderly shutdown: CC.SHN = 01b, then wait for CSTS.SHST = 10b,
    /// bounded by CAP.TO. Later admin commands fail with [`DriverError::ShutDown`].
    pub fn shutdown(&self) -> Result<(), DriverError> {
        self.inner.shutdown()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dma::{DmaError, DmaRegion, HostMemory};
    use crate::spec::registers::{Cc, offset};
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU32;
    use std::sync::atomic::Ordering;

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
