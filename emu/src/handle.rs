//! The side door into a running emulated controller: fault injection,
//! counters, and (inline mode) manual polling rounds. An [`EmuHandle`] is
//! taken from the controller before the controller is handed to a driver.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::controller::Shared;
use super::faults::{FaultId, FaultRule};
use nvme_engine::spec::{AdminOpcode, NvmOpcode};

/// A value on its own cache lines (adjacent-line prefetch included).
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Event counters of one controller. Device-side counters and the doorbell
/// counters that host threads bump live on separate cache lines.
pub(crate) struct Counters {
    admin: Box<[AtomicU64]>,
    io: Box<[AtomicU64]>,
    dma_faults: AtomicU64,
    completions: AtomicU64,
    doorbell_writes: Padded<AtomicU64>,
    invalid_doorbell_writes: AtomicU64,
}

// Relaxed everywhere: counters are statistics, read without ordering needs.
impl Counters {
    pub(crate) fn new() -> Self {
        let zeros = || (0..256).map(|_| AtomicU64::new(0)).collect();
        Counters {
            admin: zeros(),
            io: zeros(),
            dma_faults: AtomicU64::new(0),
            completions: AtomicU64::new(0),
            doorbell_writes: Padded(AtomicU64::new(0)),
            invalid_doorbell_writes: AtomicU64::new(0),
        }
    }
    /// Count a fetched command. Called only with the device lock held (one
    /// writer), so a plain load and store replace a locked read-modify-write.
    #[inline]
    pub(crate) fn command(&self, admin: bool, opcode: u8) {
        let table = if admin { &self.admin } else { &self.io };
        bump(&table[opcode as usize], 1);
    }
    #[inline]
    pub(crate) fn dma_fault(&self) {
        self.dma_faults.fetch_add(1, Ordering::Relaxed);
    }
    #[inline]
    pub(crate) fn doorbell(&self) {
        self.doorbell_writes.fetch_add(1, Ordering::Relaxed);
    }
    #[inline]
    pub(crate) fn invalid_doorbell(&self) {
        self.invalid_doorbell_writes.fetch_add(1, Ordering::Relaxed);
    }
    /// Count posted completions; device lock held (see [`Counters::command`]).
    #[inline]
    pub(crate) fn completions(&self, n: u64) {
        bump(&self.completions, n);
    }
}

/// Add `n` to a counter that only the device lock holder writes.
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// A snapshot of a controller's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmuStats {
    /// DMA accesses outside registered memory (each failed a command, a
    /// queue creation or a completion).
    pub dma_faults: u64,
    /// Doorbell writes.
    pub doorbell_writes: u64,
    /// Doorbell writes the controller ignored: nonexistent queue, value out
    /// of range, or a CQ head freeing entries never posted (the spec reports
    /// these as an asynchronous event; the emulator counts them).
    pub invalid_doorbell_writes: u64,
    /// Completion queue entries written.
    pub completions_posted: u64,
    /// Admin commands fetched.
    pub admin_commands: u64,
    /// I/O commands fetched.
    pub io_commands: u64,
}

/// Fault injection and counters of an emulated controller. Cheap to clone;
/// stays valid (but inert) after the controller is dropped.
#[derive(Clone)]
pub struct EmuHandle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for EmuHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmuHandle")
            .field("device", &self.shared.name)
            .finish()
    }
}

impl EmuHandle {
    /// Install a fault rule; it applies to commands fetched from now on.
    pub fn add_fault(&self, rule: FaultRule) -> FaultId {
        self.shared.faults.add(rule)
    }
    /// Remove a rule. False if it was not installed.
    pub fn remove_fault(&self, id: FaultId) -> bool {
        self.shared.faults.remove(id)
    }
    /// Remove every rule.
    pub fn clear_faults(&self) {
        self.shared.faults.clear()
    }
    /// How many times a rule fired.
    pub fn fault_hits(&self, id: FaultId) -> u64 {
        self.shared.faults.fired(id)
    }
    /// Seed the generator behind probabilistic rules.
    pub fn seed_faults(&self, seed: u64) {
        self.shared.faults.seed(seed)
    }

    /// Set CSTS.CFS now, as a failing controller does.
    pub fn trigger_fatal(&self) {
        self.shared.regs.set_fatal();
        self.shared.with_engine(|e| e.halted = true);
    }
    /// Surprise removal now: register reads return all ones, no more DMA.
    pub fn trigger_vanish(&self) {
        self.shared.vanish();
        self.shared.with_engine(|e| e.halted = true);
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
        self.shared.fatal_sticky.store(sticky, Ordering::Release);
    }
    /// Whether clearing CC.EN is ignored, so CSTS.RDY stays 1 and nothing
    /// the device holds is dropped: a controller that cannot be reset.
    pub fn set_ignores_disable(&self, ignores: bool) {
        self.shared
            .ignores_disable
            .store(ignores, Ordering::Release);
    }
    /// Whether [`nvme_engine::Device::quiesce`] fails, as on a transport without
    /// access to the PCI command register.
    pub fn set_quiesce_fails(&self, fails: bool) {
        self.shared.quiesce_fails.store(fails, Ordering::Release);
    }
    /// Whether the device was quiesced (bus mastering off).
    pub fn is_quiesced(&self) -> bool {
        !self.shared.iommu.is_mastering()
    }
    /// Write `data` at `iova` as the device's DMA engine would, now.
    /// Returns whether it landed: false when the memory is not mapped for
    /// the device or the device was quiesced. Lets a test play a device
    /// that writes a buffer late, after the host gave up on the command.
    pub fn dma_write(&self, iova: u64, data: &[u8]) -> bool {
        let g = self.shared.iommu.guard();
        match g.translate(iova, data.len()) {
            Some(slice) => slice.write(0, data),
            None => false,
        }
    }
    /// The shadow doorbell and EventIdx pages (IOVAs) the host configured
    /// with Doorbell Buffer Config, while the device uses them.
    pub fn doorbell_buffer_pages(&self) -> Option<(u64, u64)> {
        self.shared
            .with_engine(|e| e.dbbuf.as_ref().map(|d| (d.shadow, d.event)))
    }
    /// Whether the controller currently reads as removed (all ones).
    pub fn is_vanished(&self) -> bool {
        self.shared.vanished()
    }

    /// Post `c` (any CID, SQ head, SQ id and status; the phase tag is set
    /// correctly) on completion queue `cqid` as if the device wrote it.
    /// Returns false when that queue does not exist. For fuzzing and
    /// adversarial tests: the host must survive whatever arrives.
    #[doc(hidden)]
    pub fn inject_completion(&self, cqid: u16, c: nvme_engine::spec::Completion) -> bool {
        let sh = &*self.shared;
        if !sh.iommu.is_mastering() {
            // A quiesced device cannot write anything.
            return false;
        }
        sh.with_engine(|e| {
            if !e.cqs.get(cqid as usize).is_some_and(|q| q.is_some()) {
                return false;
            }
            let g = sh.iommu.guard();
            e.post(sh, &g, cqid, c);
            true
        })
    }
    /// Overwrite byte `offset` (mod 4096) of the Identify Controller data the
    /// device reports. For fuzzing the host's parsing.
    #[doc(hidden)]
    pub fn patch_identify_controller(&self, offset: usize, value: u8) {
        use zerocopy::IntoBytes;
        self.shared.with_engine(|e| {
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
        self.shared.with_engine(|e| {
            e.identify.nn = zerocopy::little_endian::U32::new(nn);
            e.claimed_namespaces = Some(nn);
        })
    }
    /// Overwrite byte `offset` (mod 4096) of namespace `nsid`'s Identify
    /// Namespace data. For fuzzing the host's parsing.
    #[doc(hidden)]
    pub fn patch_identify_namespace(&self, nsid: u32, offset: usize, value: u8) {
        self.shared.with_engine(|e| {
            if let Some(ns) = e.nss.get_mut(nsid.wrapping_sub(1) as usize) {
                let bytes = ns.identify_bytes_mut();
                let n = bytes.len();
                bytes[offset % n] = value;
            }
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
        let c = &self.shared.counters;
        let sum = |t: &[AtomicU64]| t.iter().map(|x| x.load(Ordering::Relaxed)).sum();
        EmuStats {
            dma_faults: c.dma_faults.load(Ordering::Relaxed),
            doorbell_writes: c.doorbell_writes.load(Ordering::Relaxed),
            invalid_doorbell_writes: c.invalid_doorbell_writes.load(Ordering::Relaxed),
            completions_posted: c.completions.load(Ordering::Relaxed),
            admin_commands: sum(&c.admin),
            io_commands: sum(&c.io),
        }
    }
    /// Admin commands fetched with this opcode.
    pub fn admin_commands(&self, opcode: AdminOpcode) -> u64 {
        self.shared.counters.admin[opcode.0 as usize].load(Ordering::Relaxed)
    }
    /// I/O commands fetched with this opcode.
    pub fn io_commands(&self, opcode: NvmOpcode) -> u64 {
        self.shared.counters.io[opcode.0 as usize].load(Ordering::Relaxed)
    }
    /// DMA accesses outside registered memory so far.
    pub fn dma_faults(&self) -> u64 {
        self.shared.counters.dma_faults.load(Ordering::Relaxed)
    }
}
