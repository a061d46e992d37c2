//! Controller recovery: health and reset generation, controller reset
//! (NVMe Base 2.0 §3.7.2: CC.EN 1→0 deletes every queue and stops all DMA,
//! then the host re-initializes as in §3.5.1), Abort (§5.1) of timed-out
//! commands. Queue pairs re-create their own queues after a reset
//! (`qpair/requeue.rs`) through [`Inner::create_io_queues`]. Aborts and
//! resets a queue pair asks for run on the controller's admin worker
//! ([`super::worker`]), not on the queue pair's thread.
//!
//! The generation invariant, kept here and nowhere else: one `AtomicU64`
//! per controller holds the health (low 8 bits) and the
//! reset generation (the rest). Queue pairs load it once per
//! `process_completions` call and once per submission: no lock on the I/O
//! path. A reset runs under the admin lock: health goes to `Resetting`, the
//! controller is disabled and enabled again, and the generation is bumped
//! with health `Live`. Each queue pair then re-creates its own SQ/CQ (same
//! queue id and memory) on its owning thread.

#![forbid(unsafe_code)]

use std::sync::atomic::Ordering;

use crate::device::Device;
use crate::spec::command::{AdminOpcode, Command};
use crate::spec::features::{FeatureId, number_of_queues_cdw11};
use crate::spec::registers::{self, offset};

use super::Inner;
use super::bringup::{enable, wait_csts};
use crate::driver::admin::{AdminData, AdminQueue};
use crate::driver::error::DriverError;

pub use crate::driver::health::Health;

const LIVE: u64 = 0;
const RESETTING: u64 = 1;
const REMOVED: u64 = 2;
const FAILED: u64 = 3;

/// Decode a state word.
pub(crate) fn health_of(state: u64) -> Health {
    match state & 0xff {
        LIVE => Health::Live,
        RESETTING => Health::Resetting,
        REMOVED => Health::Removed,
        _ => Health::Failed,
    }
}

/// The reset generation of a state word.
pub(crate) fn generation_of(state: u64) -> u64 {
    state >> 8
}

fn word(generation: u64, health: u64) -> u64 {
    generation << 8 | health
}

/// The state word of a live controller in `generation`.
#[inline]
pub(crate) fn live_word(generation: u64) -> u64 {
    word(generation, LIVE)
}

/// What a reset waits for while disabling the controller.
const DISABLE_WAIT: &str = "CSTS.RDY=0 during a reset";

/// Whether a failed reset got as far as a disabled controller (CSTS.RDY
/// read 0), which stops all DMA: only a timeout of the disable step or a
/// device that stopped answering leaves that unproven.
fn disabled(e: &DriverError) -> bool {
    match e {
        DriverError::ReadyTimeout { what, .. } => *what != DISABLE_WAIT,
        DriverError::DeviceGone { .. } => false,
        _ => true,
    }
}

impl<D: Device> Inner<D> {
    /// The state word (health and generation).
    #[inline]
    pub(crate) fn state(&self) -> u64 {
        // Acquire: a queue pair that sees a new generation also sees the
        // re-initialized controller behind it.
        self.state.load(Ordering::Acquire)
    }

    /// Current health.
    pub(crate) fn health(&self) -> Health {
        health_of(self.state())
    }

    fn set_state(&self, generation: u64, health: u64) {
        // Release: pairs with the acquire in `state`.
        self.state
            .store(word(generation, health), Ordering::Release);
    }

    /// Reset the controller. With `observed`, skip the reset when the
    /// generation already moved past it (another thread reset meanwhile).
    pub(crate) fn reset(&self, observed: Option<u64>) -> Result<(), DriverError> {
        let mut admin = self.admin();
        self.reset_holding(&mut admin, observed)
    }

    /// [`Self::reset`] with the admin lock already held.
    pub(crate) fn reset_holding(
        &self,
        admin: &mut AdminQueue,
        observed: Option<u64>,
    ) -> Result<(), DriverError> {
        if self.is_shut_down() {
            return Err(DriverError::ShutDown);
        }
        if self.fence_state() == crate::driver::shared::fence::QUIESCED {
            return Err(self.quiesced_error("a reset"));
        }
        let generation = generation_of(self.state());
        if observed.is_some_and(|g| g != generation) {
            return Ok(());
        }
        self.set_state(generation, RESETTING);
        if let Some(b) = &self.dbbuf {
            b.invalidate();
        }
        match self.reset_locked(admin, generation + 1) {
            Ok(()) => {
                self.resets.fetch_add(1, Ordering::Relaxed);
                // The reset dropped the event configuration and requests.
                self.arm_async_events(admin, true);
                self.set_state(generation + 1, LIVE);
                Ok(())
            }
            Err(e) => {
                let health = if matches!(e, DriverError::DeviceGone { .. }) {
                    REMOVED
                } else {
                    FAILED
                };
                // CSTS.RDY never went to 0 (or the device stopped
                // answering): nothing proves DMA stopped. Quiesce the device
                // before queue pairs hand their buffers back.
                if !disabled(&e) {
                    let _ = self.fence_dma();
                }
                // The generation moves on so queue pairs notice the failure
                // and release what they hold.
                self.set_state(generation + 1, health);
                Err(e)
            }
        }
    }

    fn reset_locked(&self, admin: &mut AdminQueue, next: u64) -> Result<(), DriverError> {
        let device = &self.device;
        // Write CC outright: a vanished device reads all ones, and
        // read-modify-write would set reserved and shutdown bits.
        device.write32(offset::CC, 0);
        wait_csts(device, self.cap, DISABLE_WAIT, false, |c| !c.rdy())?;
        if device.read32(offset::CSTS) == registers::ALL_ONES {
            return Err(DriverError::DeviceGone {
                device: self.name.clone(),
                during: "a reset",
            });
        }
        // The controller is disabled: it no longer reads or writes the
        // admin queue, so the rings can be emptied in place.
        admin.reinit();
        enable(device, self.cap, admin, self.admin_entries)?;
        let mut cmd = Command::new(AdminOpcode::SET_FEATURES.0, 0);
        cmd.cdw10 = FeatureId::NUMBER_OF_QUEUES.0 as u32;
        cmd.cdw11 = number_of_queues_cdw11(self.opts.io_queues, self.opts.io_queues);
        admin.execute(device, cmd, AdminData::None)?;
        // The reset dropped the shadow doorbell buffers: configure them
        // again (zeroed) before queue pairs re-create their queues. A
        // refusal leaves the queues on MMIO doorbells.
        if let Some(b) = &self.dbbuf {
            let _ = b.configure(device, admin, next);
        }
        Ok(())
    }

    /// Abort command `cid` of SQ `qid`. `Ok(true)` when the controller says
    /// it aborted it (DW0 bit 0 clear).
    pub(crate) fn abort(&self, qid: u16, cid: u16) -> Result<bool, DriverError> {
        let mut cmd = Command::new(AdminOpcode::ABORT.0, 0);
        cmd.cdw10 = (cid as u32) << 16 | qid as u32;
        let c = self.admin_execute(cmd, AdminData::None)?;
        Ok(c.dw0 & 1 == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_word_round_trips() {
        for (h, health) in [
            (LIVE, Health::Live),
            (RESETTING, Health::Resetting),
            (REMOVED, Health::Removed),
            (FAILED, Health::Failed),
        ] {
            let w = word(12345, h);
            assert_eq!(health_of(w), health);
            assert_eq!(generation_of(w), 12345);
        }
    }
}
