//! No buffer goes back while the device may still write it.
//!
//! A controller stops all DMA when CC.EN goes 1→0 and CSTS.RDY reads 0
//! (NVMe Base 2.0 §3.7.2), so a successful reset makes every buffer the
//! device held ours again. When that cannot be had — an admin command with
//! a data buffer that times out and whose reset fails, a reset that leaves
//! CSTS.RDY at 1, a queue deletion that gives up — the device is quiesced
//! through its transport ([`Device::quiesce`]: bus mastering off in the PCI
//! command register, VFIO device reset or function-level reset). Where even
//! that cannot be proven, the memory is quarantined: its blocks are never
//! handed out again and its regions never unmapped
//! ([`crate::dma::quarantined_bytes`] counts them), and the error says so.
//!
//! The fence state is per controller and only ever moves forward:
//! `OPEN` → `QUIESCED` (DMA proven stopped; the controller is unusable and
//! must be re-created) or `UNPROVEN` (memory the device held is quarantined).

#![forbid(unsafe_code)]

use std::sync::atomic::Ordering;

use crate::device::Device;
use crate::spec::command::{AdminOpcode, Command};

use super::Inner;
use crate::driver::admin::{AdminData, AdminQueue};
use crate::driver::error::DriverError;

/// DMA was never stopped by the driver (the normal state).
pub(crate) const OPEN: u8 = 0;
/// The device was quiesced: proven to do no more DMA.
pub(crate) const QUIESCED: u8 = 1;
/// Quiescing failed: memory the device held is quarantined.
pub(crate) const UNPROVEN: u8 = 2;

/// What the driver could prove after giving up on a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fence {
    /// Quiesced: no DMA can follow.
    Quiesced,
    /// Not proven: quarantine; the reason names what failed.
    Unproven(String),
}

impl<D: Device> Inner<D> {
    /// The fence state (`OPEN`, `QUIESCED` or `UNPROVEN`).
    pub(crate) fn fence_state(&self) -> u8 {
        self.fence.load(Ordering::Acquire)
    }

    /// Stop the device's DMA through the transport, once. Later calls
    /// return what the first one found.
    pub(crate) fn fence_dma(&self) -> Fence {
        let mut reason = self.fence_reason.lock().unwrap_or_else(|p| p.into_inner());
        match self.fence_state() {
            QUIESCED => return Fence::Quiesced,
            UNPROVEN => return Fence::Unproven(reason.clone().unwrap_or_default()),
            _ => {}
        }
        match self.device.quiesce() {
            Ok(()) => {
                self.fence.store(QUIESCED, Ordering::Release);
                Fence::Quiesced
            }
            Err(e) => {
                let why = e.to_string();
                *reason = Some(why.clone());
                self.fence.store(UNPROVEN, Ordering::Release);
                Fence::Unproven(why)
            }
        }
    }

    /// The error for a controller whose DMA was stopped by the driver.
    pub(crate) fn quiesced_error(&self, during: &'static str) -> DriverError {
        DriverError::Quiesced {
            device: self.name.clone(),
            during,
        }
    }

    /// Creating an I/O queue failed with `error`. When the controller may
    /// still hold a queue in the caller's memory (`lingering`: a create
    /// that timed out, or a CQ whose deletion failed), a reset removes it,
    /// and the device is quiesced when the reset fails; if even that is
    /// unproven, the error says the memory must be quarantined.
    pub(crate) fn release_failed_create(
        &self,
        admin: &mut AdminQueue,
        error: DriverError,
        lingering: bool,
    ) -> DriverError {
        // A create that ended without a completion may still be carried
        // out later, pointing the device at memory the caller releases.
        let lingering = lingering
            || matches!(
                error,
                DriverError::AdminTimeout { .. }
                    | DriverError::DeviceGone { .. }
                    | DriverError::ControllerFatal { .. }
            );
        if lingering {
            let _ = self.reset_holding(admin, None);
            if self.fence_state() == UNPROVEN {
                return self.quarantined_error("creating an I/O queue pair");
            }
        }
        error
    }

    /// The error for memory quarantined because quiescing failed.
    pub(crate) fn quarantined_error(&self, during: &'static str) -> DriverError {
        let reason = self
            .fence_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        DriverError::DmaQuarantined {
            device: self.name.clone(),
            during,
            reason,
            bytes: 0,
        }
    }

    /// An admin command carrying data (or pointing the controller at host
    /// memory, like Create I/O CQ/SQ) ended without a completion — it timed
    /// out, or the controller turned fatal or stopped answering — so the
    /// device may still write the memory (the admin lock is held). A
    /// timed-out command is aborted first; then the controller is reset,
    /// and if that fails it is quiesced; the caller's buffer and the admin
    /// queue's memory are quarantined when nothing could be proven. Returns
    /// the error to report.
    pub(crate) fn recover_admin_data_failure(
        &self,
        admin: &mut AdminQueue,
        data: &mut AdminData<'_>,
        error: DriverError,
    ) -> DriverError {
        let timeout = match error {
            DriverError::AdminTimeout { command, timeout } => Some((command, timeout)),
            DriverError::DeviceGone { .. } | DriverError::ControllerFatal { .. } => None,
            other => return other,
        };
        let command = match &error {
            DriverError::AdminTimeout { command, .. } => *command,
            DriverError::DeviceGone { during, .. }
            | DriverError::ControllerFatal { during, .. } => during,
            _ => "an admin command",
        };
        if timeout.is_some() {
            // Abort (§5.1) first: a controller that honours it completes
            // the command with Command Abort Requested and stops its
            // transfer.
            let mut abort = Command::new(AdminOpcode::ABORT.0, 0);
            abort.cdw10 = u32::from(admin.last_cid) << 16;
            let _ = admin.execute(&self.device, abort, AdminData::None);
        }
        // A late completion cannot prove the device is done with the
        // memory: only a reset (or quiesce) can.
        let fence = match self.reset_holding(admin, None) {
            Ok(()) => {
                return match timeout {
                    Some((command, timeout)) => DriverError::AdminDataTimeout {
                        command,
                        timeout,
                        recovery: "it was aborted and the controller was reset, which stops all DMA",
                    },
                    None => error,
                };
            }
            // A reset that got CSTS.RDY to 0 stopped all DMA even though it
            // failed later; the fence state says whether it was proven.
            Err(_) => match self.fence_state() {
                OPEN => return error,
                _ => self.fence_dma(),
            },
        };
        match fence {
            Fence::Quiesced => match timeout {
                Some((command, timeout)) => DriverError::AdminDataTimeout {
                    command,
                    timeout,
                    recovery: "the controller could not be reset, so it was quiesced \
                               (bus mastering off); re-create the Controller",
                },
                None => error,
            },
            Fence::Unproven(reason) => {
                let bytes = match data {
                    AdminData::Buf(b) => {
                        b.quarantine();
                        b.capacity()
                    }
                    _ => 0,
                };
                admin.quarantine();
                if let Some(b) = &self.dbbuf {
                    b.quarantine();
                }
                DriverError::DmaQuarantined {
                    device: self.name.clone(),
                    during: command,
                    reason,
                    bytes,
                }
            }
        }
    }
}
