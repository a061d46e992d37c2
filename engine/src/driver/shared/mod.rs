//! The state a controller's handles and its queue pairs share: the device,
//! the admin queue behind its mutex, I/O queue ids, the health and reset
//! generation word ([`recovery`]), the DMA fence ([`fence`]) and the shadow
//! doorbell pages ([`dbbuf`]), and the admin worker that runs aborts and
//! resets off the polling threads ([`worker`]), and the asynchronous event
//! requests with what they reported ([`events`]). Its fields are private to this folder; the
//! controller handle and queue pairs use its methods.
//!
//! Layer: above `admin`, `ring`, `prp`, `bounds`, `namespace`, `error`,
//! `options`; below `qpair` and `controller`, which it never imports.

mod bringup;
pub(crate) mod dbbuf;
pub(crate) mod events;
pub(crate) mod fence;
pub(crate) mod hold;
mod queues;
pub(crate) mod recovery;
pub(crate) mod worker;

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::device::Device;
use crate::spec::identify::IdentifyController;
use crate::spec::registers::{self, Cap, Csts, SHN_NORMAL, SHST_COMPLETE, Version, offset};
use crate::spec::{command::Command, completion::Completion};

use crate::driver::admin::{AdminData, AdminQueue};
use crate::driver::error::DriverError;
use crate::driver::namespace::{Namespace, SkippedNamespace};
use crate::driver::options::ControllerOptions;
use bringup::{disable, enabled_cc, wait_csts};
use dbbuf::DoorbellBuffer;
use worker::AdminWork;

/// Shared state of one brought-up controller.
pub(crate) struct Inner<D: Device> {
    device: D,
    name: String,
    cap: Cap,
    version: Version,
    stride: usize,
    identify: Box<IdentifyController>,
    namespaces: Vec<Namespace>,
    skipped: Vec<SkippedNamespace>,
    admin: Mutex<AdminQueue>,
    free_qids: Mutex<Vec<u16>>,
    granted: u16,
    max_transfer: usize,
    opts: ControllerOptions,
    shut_down: AtomicBool,
    /// Health and reset generation, see [`crate::driver::shared::recovery`].
    state: AtomicU64,
    /// Controller resets completed.
    resets: AtomicU64,
    /// Admin queue entries (for re-enabling after a reset).
    admin_entries: u16,
    /// Shadow doorbell pages, when supported and wanted.
    dbbuf: Option<DoorbellBuffer>,
    /// Whether the driver stopped the device's DMA, see [`crate::driver::shared::fence`].
    fence: AtomicU8,
    /// Why quiescing failed, once it did.
    fence_reason: Mutex<Option<String>>,
    /// Aborts and resets posted by queue pairs, see [`worker`].
    work: AdminWork,
    /// Asynchronous events, see [`events`].
    events: events::EventState,
}

impl<D: Device> Inner<D> {
    /// The transport.
    #[inline]
    pub(crate) fn device(&self) -> &D {
        &self.device
    }
    /// The device's name, for errors.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }
    /// CAP as read at bring-up.
    pub(crate) fn cap(&self) -> Cap {
        self.cap
    }
    /// VS as read at bring-up.
    pub(crate) fn version(&self) -> Version {
        self.version
    }
    /// Doorbell stride in bytes (CAP.DSTRD).
    pub(crate) fn stride(&self) -> usize {
        self.stride
    }
    /// Identify Controller data.
    pub(crate) fn identify(&self) -> &IdentifyController {
        &self.identify
    }
    /// Usable namespaces in NSID order.
    pub(crate) fn namespaces(&self) -> &[Namespace] {
        &self.namespaces
    }
    /// Active namespaces not used, with the reason.
    pub(crate) fn skipped(&self) -> &[SkippedNamespace] {
        &self.skipped
    }
    /// I/O queue pairs granted.
    pub(crate) fn granted(&self) -> u16 {
        self.granted
    }
    /// Most bytes one command may transfer.
    pub(crate) fn max_transfer(&self) -> usize {
        self.max_transfer
    }
    /// The bring-up options.
    pub(crate) fn opts(&self) -> &ControllerOptions {
        &self.opts
    }
    /// Controller resets completed.
    pub(crate) fn resets(&self) -> u64 {
        self.resets.load(Ordering::Relaxed)
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

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }

    pub(crate) fn shutdown(&self) -> Result<(), DriverError> {
        // First the worker, which may be waiting for the admin lock.
        self.stop_admin_worker();
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
