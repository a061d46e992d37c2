//! The side door into a running emulated controller: fault injection,
//! counters, events a real drive would raise on its own (namespaces
//! attached, detached and resized, SMART critical warnings, internal
//! errors), and (inline mode) manual polling rounds. An [`EmuHandle`] is
//! taken from the controller before the controller is handed to a driver.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::config::{EmuError, EmuNamespaceConfig};
use crate::counters::EmuStats;
use crate::device_state::DeviceState;
use crate::faults::{FaultId, FaultRule};
use crate::guest_memory::DmaGuard;
use crate::processor::CommandProcessor;
use crate::shared::Shared;
use nvme_engine::spec::command::{AdminOpcode, NvmOpcode};

/// Fault injection and counters of an emulated controller. Cheap to clone;
/// stays valid (but inert) after the controller is dropped.
#[derive(Clone)]
pub struct EmuHandle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for EmuHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmuHandle")
            .field("device", &self.shared.state.name)
            .finish()
    }
}

impl EmuHandle {
    /// Install a fault rule; it applies to commands fetched from now on.
    pub fn add_fault(&self, rule: FaultRule) -> FaultId {
        self.shared.state.faults.add(rule)
    }
    /// Remove a rule. False if it was not installed.
    pub fn remove_fault(&self, id: FaultId) -> bool {
        self.shared.state.faults.remove(id)
    }
    /// Remove every rule.
    pub fn clear_faults(&self) {
        self.shared.state.faults.clear()
    }
    /// How many times a rule fired.
    pub fn fault_hits(&self, id: FaultId) -> u64 {
        self.shared.state.faults.fired(id)
    }
    /// Seed the generator behind probabilistic rules.
    pub fn seed_faults(&self, seed: u64) {
        self.shared.state.faults.seed(seed)
    }

    /// Set CSTS.CFS now, as a failing controller does.
    pub fn trigger_fatal(&self) {
        self.shared.state.regs.set_fatal();
        self.shared.with_processor(|e| e.halted = true);
    }
    /// Surprise removal now: register reads return all ones, no more DMA.
    pub fn trigger_vanish(&self) {
        self.shared.state.vanish();
        self.shared.with_processor(|e| e.halted = true);
    }

    /// Whether a vanished controller comes back when the host resets it
    /// (clears CC.EN). Default false: a surprise removal is permanent.
    pub fn set_vanish_recovers_on_reset(&self, recovers: bool) {
        self.shared
            .vanish_recovers
            .store(recovers, Ordering::Release);
    }
    /// Whether fatal status (CSTS.CFS) survives a controller reset. Default
    /// false: a reset clears it and the controller can be enabled again, as
    /// the specification describes.
    pub fn set_fatal_survives_reset(&self, sticky: bool) {
        self.shared
            .state
            .fatal_sticky
            .store(sticky, Ordering::Release);
    }
    /// Whether clearing CC.EN is ignored, so CSTS.RDY stays 1 and nothing
    /// the device holds is dropped: a controller that cannot be reset.
    pub fn set_ignores_disable(&self, ignores: bool) {
        self.shared
            .ignores_disable
            .store(ignores, Ordering::Release);
    }
    /// Hold controller resets (`true`) or let them through: while held, a
    /// host write that clears CC.EN does not return until the hold is
    /// released, as a controller whose reset takes long. Releasing lets
    /// every held write finish; the reset then proceeds normally. For
    /// tests that must act while a reset is in progress, without timing.
    pub fn hold_resets(&self, hold: bool) {
        self.shared.reset_gate.set_closed(hold);
    }
    /// Host writes clearing CC.EN waiting on [`Self::hold_resets`] now.
    pub fn resets_held(&self) -> usize {
        self.shared.reset_gate.waiting()
    }
    /// Whether [`nvme_engine::Device::quiesce`] fails, as on a transport without
    /// access to the PCI command register.
    pub fn set_quiesce_fails(&self, fails: bool) {
        self.shared.quiesce_fails.store(fails, Ordering::Release);
    }
    /// Whether the device was quiesced (bus mastering off).
    pub fn is_quiesced(&self) -> bool {
        !self.shared.state.iommu.is_mastering()
    }
    /// Write `data` at `iova` as the device's DMA engine would, now.
    /// Returns whether it landed: false when the memory is not mapped for
    /// the device or the device was quiesced. Lets a test play a device
    /// that writes a buffer late, after the host gave up on the command.
    pub fn dma_write(&self, iova: u64, data: &[u8]) -> bool {
        let g = self.shared.state.iommu.guard();
        match g.translate(iova, data.len()) {
            Some(slice) => slice.write(0, data),
            None => false,
        }
    }
    /// The shadow doorbell and EventIdx pages (IOVAs) the host configured
    /// with Doorbell Buffer Config, while the device uses them.
    pub fn doorbell_buffer_pages(&self) -> Option<(u64, u64)> {
        self.shared
            .with_processor(|e| e.dbbuf.as_ref().map(|d| (d.shadow, d.event)))
    }
    /// Whether the controller currently reads as removed (all ones).
    pub fn is_vanished(&self) -> bool {
        self.shared.state.vanished()
    }

    /// Post `c` (any CID, SQ head, SQ id and status; the phase tag is set
    /// correctly) on completion queue `cqid` as if the device wrote it.
    /// Returns false when that queue does not exist. For fuzzing and
    /// adversarial tests: the host must survive whatever arrives.
    #[doc(hidden)]
    pub fn inject_completion(
        &self,
        cqid: u16,
        c: nvme_engine::spec::completion::Completion,
    ) -> bool {
        let sh = &*self.shared;
        if !sh.state.iommu.is_mastering() {
            // A quiesced device cannot write anything.
            return false;
        }
        sh.with_processor(|e| {
            if !e.cqs.get(cqid as usize).is_some_and(|q| q.is_some()) {
                return false;
            }
            let g = sh.state.iommu.guard();
            e.post(&sh.state, &g, cqid, c);
            true
        })
    }
    /// Every command the controller holds and may still act on, with its SQ
    /// id: fetched and neither executed nor completed, or made visible by
    /// the SQ Tail Doorbell and not fetched yet. A real controller may move
    /// the data of any of them until it completes them, deletes their queue
    /// or is reset. For the fuzzing harnesses: the host must not hand back a
    /// buffer one of them points at.
    #[doc(hidden)]
    pub fn held_commands(&self) -> Vec<(u16, nvme_engine::spec::command::Command)> {
        let sh = &*self.shared;
        sh.with_processor(|e| {
            let g = sh.state.iommu.guard();
            e.held_commands(&sh.state, &g)
        })
    }
    /// Overwrite byte `offset` (mod 4096) of the Identify Controller data the
    /// device reports. For fuzzing the host's parsing.
    #[doc(hidden)]
    pub fn patch_identify_controller(&self, offset: usize, value: u8) {
        use zerocopy::IntoBytes;
        self.shared.with_processor(|e| {
            let bytes = e.identify.as_mut_bytes();
            let n = bytes.len();
            bytes[offset % n] = value;
        })
    }
    /// Claim `nn` namespaces: Identify Controller NN reads `nn` and the
    /// active namespace list enumerates every NSID up to it in full pages of
    /// 1024; the ones past the configured namespaces read as all-zero
    /// Identify Namespace data. A hostile controller for bounds tests.
    #[doc(hidden)]
    pub fn claim_namespaces(&self, nn: u32) {
        self.shared.with_processor(|e| {
            e.identify.nn = zerocopy::little_endian::U32::new(nn);
            e.claimed_namespaces = Some(nn);
        })
    }
    /// Overwrite byte `offset` (mod 4096) of namespace `nsid`'s Identify
    /// Namespace data. For fuzzing the host's parsing.
    #[doc(hidden)]
    pub fn patch_identify_namespace(&self, nsid: u32, offset: usize, value: u8) {
        self.shared.with_processor(|e| {
            if let Some(Some(ns)) = e.nss.get_mut(nsid.wrapping_sub(1) as usize) {
                let bytes = ns.identify_bytes_mut();
                let n = bytes.len();
                bytes[offset % n] = value;
            }
        })
    }

    /// Attach a namespace at run time, at the lowest free NSID (up to
    /// [`crate::EmuConfig::max_namespaces`]), and return that NSID. The
    /// Changed Namespace List names it and, if the host enabled Namespace
    /// Attribute Notices, an outstanding Asynchronous Event Request
    /// completes with a Namespace Attribute Changed notice.
    pub fn attach_namespace(&self, ns: EmuNamespaceConfig) -> Result<u32, EmuError> {
        self.with_events(|e, sh, g| e.attach_namespace(sh, g, &ns))
    }
    /// Detach namespace `nsid`; commands to it fail with Invalid Namespace
    /// or Format from now on. Reported as for an attach.
    pub fn detach_namespace(&self, nsid: u32) -> Result<(), EmuError> {
        self.with_events(|e, sh, g| e.detach_namespace(sh, g, nsid))
    }
    /// Resize namespace `nsid` to `blocks` blocks (NSZE, NCAP and NUSE
    /// change; data is kept up to the smaller size). Reported as for an attach.
    pub fn resize_namespace(&self, nsid: u32, blocks: u64) -> Result<(), EmuError> {
        self.with_events(|e, sh, g| e.resize_namespace(sh, g, nsid, blocks))
    }
    /// Set the SMART / Health critical warning bits (log page 02h byte 0:
    /// bit 0 spare below threshold, 1 temperature, 2 reliability degraded,
    /// 3 read only, 4 volatile memory backup failed). Bits newly set that the
    /// host enabled with Set Features Asynchronous Event Configuration raise
    /// a SMART / Health event.
    pub fn set_critical_warning(&self, bits: u8) {
        self.with_events(|e, sh, g| e.set_critical_warning(sh, g, bits))
    }
    /// Report an error not tied to a command: an Error Information log
    /// entry and an Error event (Persistent Internal Error when
    /// `persistent`, else Transient Internal Error), always enabled.
    pub fn report_internal_error(&self, persistent: bool) {
        self.with_events(|e, sh, g| e.report_internal_error(sh, g, persistent))
    }

    fn with_events<R>(
        &self,
        f: impl FnOnce(&mut CommandProcessor, &DeviceState, &DmaGuard<'_>) -> R,
    ) -> R {
        let sh = &*self.shared;
        sh.with_processor(|e| {
            let g = sh.state.iommu.guard();
            f(e, &sh.state, &g)
        })
    }

    /// Run one device round now: apply doorbells, fetch and execute
    /// commands, release delayed completions. Inline mode does this on every
    /// doorbell write; a test uses it to advance `DelayPolls` and stale
    /// completions without ringing a doorbell. In threaded mode it only adds
    /// a round to those the device thread runs.
    pub fn poll(&self) -> usize {
        self.shared.poll_round(u32::MAX, true).0
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> EmuStats {
        self.shared.state.counters.snapshot()
    }
    /// Admin commands fetched with this opcode.
    pub fn admin_commands(&self, opcode: AdminOpcode) -> u64 {
        self.shared.state.counters.commands(true, opcode.0)
    }
    /// I/O commands fetched with this opcode.
    pub fn io_commands(&self, opcode: NvmOpcode) -> u64 {
        self.shared.state.counters.commands(false, opcode.0)
    }
    /// DMA accesses outside registered memory so far.
    pub fn dma_faults(&self) -> u64 {
        self.shared.state.counters.dma_faults()
    }
}
