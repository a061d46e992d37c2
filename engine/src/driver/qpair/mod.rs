//! I/O queue pairs (NVMe Base 2.0 §3.3.1, §5.3–§5.6 queue creation and
//! deletion; NVM Command Set 1.0 §3 for the commands).
//!
//! One completion queue (physically contiguous, interrupts disabled) and one
//! submission queue, driven by a single thread: the type is `Send` but not
//! `Sync`. Submissions write the SQE and advance the tail; the SQ doorbell is
//! written once per batch. `process_completions` reaps a bounded number of
//! entries and writes the CQ head doorbell once. Nothing on this path
//! allocates, locks or makes a system call.
//!
//! Reliability (timeouts, aborts, retries, controller resets, surprise
//! removal) is split out: `timeouts.rs` scans deadlines, `recover` below
//! re-creates the queues after a reset on the owning thread.

#![forbid(unsafe_code)]

mod requeue;
mod sync;
pub(crate) mod timeouts;

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zerocopy::IntoBytes;

use crate::device::Device;
use crate::dma::{self, DmaBuf};
use crate::spec::command::{CDW12_DEAC, CDW12_FUA, DSM_ATTR_DEALLOCATE};
use crate::spec::registers::{cq_head_doorbell, sq_tail_doorbell};
use crate::spec::status::generic;
use crate::spec::{AdminOpcode, Command, NvmOpcode, Status, StatusCodeType};

use crate::dma::DmaWindow;
use crate::driver::admin::{AdminData, WindowSink, pages};
use crate::driver::controller::Inner;
use crate::driver::error::{DriverError, IoError, SubmitError, SubmitErrorKind};
use crate::driver::namespace::{LbaRange, Namespace};
use crate::driver::prp::{self, PAGE_SIZE};
use crate::driver::qpair::requeue::idempotent;
use crate::driver::ring::{CQE_BYTES, CqRing, SQE_BYTES, SqRing};
use crate::driver::shared::dbbuf::{ShadowPair, keep_if_configured, shadow_slots};
use crate::driver::shared::recovery::{Health, generation_of, health_of, live_word};
use crate::driver::tracker::{CidError, Tracker};

/// Largest I/O queue the driver creates: keeps at least four generation
/// bits in every CID.
pub const MAX_IO_QUEUE_ENTRIES: u16 = 4096;

/// Options for one I/O queue pair.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueuePairOptions {
    /// Queue entries (SQ and CQ); `None` uses [`crate::driver::ControllerOptions::io_queue_entries`].
    /// Clamped to CAP.MQES+1 and [`MAX_IO_QUEUE_ENTRIES`].
    pub entries: Option<u16>,
}

/// Counters of one queue pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueuePairStats {
    /// Commands submitted (SQ entries written).
    pub submitted: u64,
    /// Commands completed (with any status).
    pub completed: u64,
    /// Commands completed with an error status.
    pub failed: u64,
    /// Submissions refused because the queue was full.
    pub queue_full: u64,
    /// Completions whose CID generation was not the slot's current one.
    pub stale_completions: u64,
    /// Completions for a slot that was not in flight.
    pub duplicate_completions: u64,
    /// Completions whose CID names no slot.
    pub unknown_completions: u64,
    /// Completions whose SQHD was outside the ring or ahead of the tail.
    pub invalid_sqhd: u64,
    /// Completions naming another submission queue (SQID).
    pub wrong_sqid: u64,
    /// SQ tail doorbell MMIO writes.
    pub sq_doorbell_writes: u64,
    /// CQ head doorbell MMIO writes.
    pub cq_doorbell_writes: u64,
    /// SQ tail updates published in the shadow doorbell only (the device's
    /// EventIdx did not ask for an MMIO write).
    pub sq_shadow_updates: u64,
    /// CQ head updates published in the shadow doorbell only.
    pub cq_shadow_updates: u64,
    /// Commands resubmitted after an error status with DNR=0.
    pub retries: u64,
    /// Commands whose deadline passed.
    pub timeouts: u64,
    /// Abort commands sent for timed-out commands.
    pub aborts_sent: u64,
    /// Controller resets this queue pair requested (timeouts, fatal status,
    /// registers reading all ones).
    pub resets_requested: u64,
    /// Times this queue pair re-created its queues after a controller reset.
    pub recreated: u64,
    /// Commands resubmitted after a controller reset.
    pub resubmitted: u64,
}

impl std::ops::AddAssign<&QueuePairStats> for QueuePairStats {
    /// Sum counters, e.g. over the queue pairs of one thread. Destructuring
    /// makes a new counter a compile error here until it is summed too.
    fn add_assign(&mut self, other: &QueuePairStats) {
        let QueuePairStats {
            submitted,
            completed,
            failed,
            queue_full,
            stale_completions,
            duplicate_completions,
            unknown_completions,
            invalid_sqhd,
            wrong_sqid,
            sq_doorbell_writes,
            cq_doorbell_writes,
            sq_shadow_updates,
            cq_shadow_updates,
            retries,
            timeouts,
            aborts_sent,
            resets_requested,
            recreated,
            resubmitted,
        } = *other;
        self.submitted += submitted;
        self.completed += completed;
        self.failed += failed;
        self.queue_full += queue_full;
        self.stale_completions += stale_completions;
        self.duplicate_completions += duplicate_completions;
        self.unknown_completions += unknown_completions;
        self.invalid_sqhd += invalid_sqhd;
        self.wrong_sqid += wrong_sqid;
        self.sq_doorbell_writes += sq_doorbell_writes;
        self.cq_doorbell_writes += cq_doorbell_writes;
        self.sq_shadow_updates += sq_shadow_updates;
        self.cq_shadow_updates += cq_shadow_updates;
        self.retries += retries;
        self.timeouts += timeouts;
        self.aborts_sent += aborts_sent;
        self.resets_requested += resets_requested;
        self.recreated += recreated;
        self.resubmitted += resubmitted;
    }
}

/// One finished command.
#[derive(Debug)]
pub struct IoCompletion {
    /// The token given at submission.
    pub token: u64,
    /// Completion DW0 on success, or why the command failed.
    pub result: Result<u32, IoError>,
    /// The command's data buffer, handed back.
    pub buf: Option<DmaBuf>,
}

/// What `IoQueuePair::build` makes: rings, PRP-list pages, pages per slot,
/// the generation the queues were created in, and the shadow slots.
type Built = (SqRing, CqRing, DmaWindow, usize, u64, Option<ShadowPair>);

/// One I/O submission/completion queue pair, owned by one thread.
pub struct IoQueuePair<D: Device> {
    pub(super) ctrl: Arc<Inner<D>>,
    pub(super) qid: u16,
    pub(super) sq: SqRing,
    pub(super) cq: CqRing,
    pub(super) tracker: Tracker,
    lists: DmaWindow,
    pages_per_slot: usize,
    sq_doorbell: usize,
    cq_doorbell: usize,
    /// Shadow doorbell slots (SQ tail, CQ head) while the controller has the
    /// buffers configured in `generation`.
    pub(super) shadow: Option<ShadowPair>,
    pub(super) stats: QueuePairStats,
    live: bool,
    /// Reset generation the SQ/CQ exist in.
    pub(super) generation: u64,
    /// The queues could not be re-created in `generation`.
    pub(super) dead: bool,
    /// `live_word(generation)`: the state word while the queues exist.
    live_state: u64,
    /// `live_state`, or a value no state word takes when `dead`: one
    /// compare tells a submission whether anything needs a closer look.
    submit_state: u64,
    /// Per-command deadline.
    pub(super) timeout: Duration,
    pub(super) retry_limit: u8,
    pub(super) scan_interval: Duration,
    pub(super) next_scan: Option<Instant>,
    /// Since when commands have waited with no completion (timeout scans).
    pub(super) idle_since: Option<Instant>,
    _not_sync: PhantomData<Cell<()>>,
}

impl<D: Device> IoQueuePair<D> {
    pub(crate) fn create(ctrl: Arc<Inner<D>>, opts: QueuePairOptions) -> Result<Self, DriverError> {
        if ctrl.is_shut_down() {
            return Err(DriverError::ShutDown);
        }
        let asked = opts.entries.unwrap_or(ctrl.opts.io_queue_entries);
        if asked < 2 {
            return Err(DriverError::InvalidOption {
                name: "entries",
                value: asked as u64,
                hint: "an I/O queue needs at least 2 entries",
            });
        }
        let limit = ctrl
            .cap
            .max_queue_entries()
            .min(MAX_IO_QUEUE_ENTRIES as u32) as u16;
        let entries = asked.min(limit);
        let qid = ctrl.take_qid()?;
        match Self::build(&ctrl, qid, entries) {
            Ok((sq, cq, lists, pages_per_slot, generation, shadow)) => {
                let stride = ctrl.stride;
                let (timeout, retry_limit, scan_interval) = (
                    ctrl.opts.io_timeout,
                    ctrl.opts.io_retry_limit,
                    ctrl.opts.timeout_scan_interval,
                );
                Ok(IoQueuePair {
                    ctrl,
                    qid,
                    sq,
                    cq,
                    tracker: Tracker::new(entries as usize - 1),
                    lists,
                    pages_per_slot,
                    sq_doorbell: sq_tail_doorbell(qid, stride),
                    cq_doorbell: cq_head_doorbell(qid, stride),
                    shadow,
                    stats: QueuePairStats::default(),
                    live: true,
                    generation,
                    dead: false,
                    live_state: live_word(generation),
                    submit_state: live_word(generation),
                    timeout,
                    retry_limit,
                    scan_interval,
                    next_scan: None,
                    idle_since: None,
                    _not_sync: PhantomData,
                })
            }
            Err(e) => {
                ctrl.return_qid(qid);
                Err(e)
            }
        }
    }

    /// Allocate the rings and PRP-list pages, then Create I/O CQ and SQ.
    fn build(ctrl: &Inner<D>, qid: u16, entries: u16) -> Result<Built, DriverError> {
        let sq_pages = pages(entries as usize * SQE_BYTES);
        let cq_pages = pages(entries as usize * CQE_BYTES);
        // At least one page per slot: a Dataset Management range list needs it.
        let pages_per_slot = prp::list_pages_for_transfer(ctrl.max_transfer).max(1);
        let list_pages = (entries as usize - 1) * pages_per_slot;
        let bytes = (sq_pages + cq_pages + list_pages) * PAGE_SIZE;
        let region =
            Arc::new(
                dma::allocate(&ctrl.device, bytes).map_err(|source| DriverError::Dma {
                    what: "an I/O queue pair",
                    source,
                })?,
            );
        let memory_error = |what| DriverError::QueueMemory { what, bytes };
        let win = |page: usize, n: usize| {
            DmaWindow::new(Arc::clone(&region), page * PAGE_SIZE, n * PAGE_SIZE)
        };
        let sq = win(0, sq_pages)
            .and_then(|m| SqRing::new(m, entries))
            .ok_or(memory_error("I/O submission queue"))?;
        let cq = win(sq_pages, cq_pages)
            .and_then(|m| CqRing::new(m, entries))
            .ok_or(memory_error("I/O completion queue"))?;
        let lists = win(sq_pages + cq_pages, list_pages).ok_or(memory_error("PRP lists"))?;
        if !sq.is_contiguous() {
            return Err(memory_error("I/O submission queue"));
        }
        if !cq.is_contiguous() {
            return Err(memory_error("I/O completion queue"));
        }
        let shadow = shadow_slots(ctrl, qid);
        let generation = ctrl
            .create_io_queues(qid, entries, sq.iova(), cq.iova(), None)
            .inspect_err(|e| {
                // The device may still hold the CQ in this memory.
                if matches!(e, DriverError::DmaQuarantined { .. }) {
                    lists.quarantine();
                }
            })?;
        let shadow = keep_if_configured(ctrl, shadow, generation);
        Ok((sq, cq, lists, pages_per_slot, generation, shadow))
    }

    /// Record the generation the queues exist in (or, `dead`, could not be
    /// re-created in).
    pub(super) fn set_generation(&mut self, generation: u64, dead: bool) {
        self.generation = generation;
        self.dead = dead;
        self.live_state = live_word(generation);
        // The health byte of a real state word is 0..=3, never 0xff.
        self.submit_state = if dead { u64::MAX } else { self.live_state };
    }

    /// The queue id (SQ and CQ share it).
    pub fn qid(&self) -> u16 {
        self.qid
    }
    /// Most commands in flight at once (entries − 1).
    pub fn capacity(&self) -> usize {
        self.tracker.capacity()
    }
    /// Commands submitted and not yet completed.
    pub fn outstanding(&self) -> usize {
        self.tracker.in_flight()
    }
    /// The tokens of the commands submitted and not yet completed (not a
    /// hot-path call: for teardown and diagnostics).
    pub fn outstanding_tokens(&self) -> impl Iterator<Item = u64> + '_ {
        self.tracker.tokens_in_flight()
    }
    /// Counters.
    pub fn stats(&self) -> &QueuePairStats {
        &self.stats
    }
    /// The per-command deadline (default `ControllerOptions::io_timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
    /// Set the per-command deadline for commands checked from now on.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }
    /// Set how often a command is resubmitted (after DNR=0 errors and
    /// controller resets) before it fails.
    pub fn set_retry_limit(&mut self, limit: u8) {
        self.retry_limit = limit;
    }
    /// The controller's admin timeout (bounds for synchronous helpers).
    pub(crate) fn admin_timeout(&self) -> Duration {
        self.ctrl.opts.admin_timeout
    }
    /// Most bytes one command may transfer.
    pub fn max_transfer_bytes(&self) -> usize {
        self.ctrl.max_transfer
    }

    /// Queue a read of `buf.len()` bytes at `lba` into `buf`.
    #[inline(always)]
    pub fn read(
        &mut self,
        ns: &Namespace,
        lba: u64,
        buf: DmaBuf,
        token: u64,
    ) -> Result<(), SubmitError> {
        self.rw::<{ NvmOpcode::READ.0 }, 0>(ns, lba, buf, token)
    }

    /// Queue a write of `buf` at `lba`; `fua` forces it to media.
    #[inline(always)]
    pub fn write(
        &mut self,
        ns: &Namespace,
        lba: u64,
        buf: DmaBuf,
        fua: bool,
        token: u64,
    ) -> Result<(), SubmitError> {
        if fua {
            self.rw::<{ NvmOpcode::WRITE.0 }, CDW12_FUA>(ns, lba, buf, token)
        } else {
            self.rw::<{ NvmOpcode::WRITE.0 }, 0>(ns, lba, buf, token)
        }
    }

    /// Queue a read or write (`OPCODE`) with `CDW12` flags. The opcode and
    /// flags are constants so each variant gets a straight-line body.
    /// Always inlined into the caller: a call costs a register save and
    /// restore, the buffer copied into the argument and a result written
    /// through memory (`scripts/bench.sh` section 2); plain `#[inline]` left
    /// it out of line in nvme-perf's loop.
    #[inline(always)]
    fn rw<const OPCODE: u8, const CDW12: u32>(
        &mut self,
        ns: &Namespace,
        lba: u64,
        buf: DmaBuf,
        token: u64,
    ) -> Result<(), SubmitError> {
        let write = OPCODE == NvmOpcode::WRITE.0;
        let (len, iova) = (buf.len(), buf.iova());
        let nlb_z = match ns.check_rw(lba, len, iova, write) {
            Ok(n) => n,
            Err(kind) => return Err(SubmitError::new(kind, Some(buf))),
        };
        let index = match self.reserve() {
            Ok(i) => i,
            Err(kind) => return Err(SubmitError::new(kind, Some(buf))),
        };
        // `check_rw` proved the length non-zero and the start dword aligned.
        let (prp1, prp2) = if (iova as usize & (PAGE_SIZE - 1)) + len <= PAGE_SIZE {
            (iova, prp::PRP_UNUSED)
        } else {
            match self.list_prps(index, &buf) {
                Ok(p) => p,
                Err(kind) => return Err(SubmitError::new(kind, Some(buf))),
            }
        };
        let nsid = ns.id;
        self.push_with(Some(buf), token, |cmd, cid| {
            // Every field in one literal: no zero fill then rewrite.
            *cmd = Command {
                cdw0: OPCODE as u32 | (cid as u32) << 16,
                nsid,
                cdw2: 0,
                cdw3: 0,
                mptr: 0,
                prp1,
                prp2,
                // SLBA, CDW10 low and CDW11 high.
                cdw10: lba as u32,
                cdw11: (lba >> 32) as u32,
                cdw12: nlb_z as u32 | CDW12,
                cdw13: 0,
                cdw14: 0,
                cdw15: 0,
            };
        })
    }

    /// Queue a Flush of the namespace's volatile write cache.
    pub fn flush(&mut self, ns: &Namespace, token: u64) -> Result<(), SubmitError> {
        self.submit(Command::new(NvmOpcode::FLUSH.0, ns.id), None, token)
    }

    /// Queue a Write Zeroes of `blocks` at `lba`; `deallocate` lets the
    /// device deallocate the blocks instead of writing them.
    pub fn write_zeroes(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        deallocate: bool,
        token: u64,
    ) -> Result<(), SubmitError> {
        let nlb_z = ns
            .check_write_zeroes(lba, blocks)
            .map_err(|k| SubmitError::new(k, None))?;
        let mut cmd = Command::new(NvmOpcode::WRITE_ZEROES.0, ns.id);
        cmd.set_slba(lba);
        cmd.cdw12 = nlb_z as u32 | if deallocate { CDW12_DEAC } else { 0 };
        self.submit(cmd, None, token)
    }

    /// Queue a Dataset Management deallocate of up to 256 ranges. The range
    /// list is written into the slot's preallocated page: no allocation.
    pub fn deallocate(
        &mut self,
        ns: &Namespace,
        ranges: &[LbaRange],
        token: u64,
    ) -> Result<(), SubmitError> {
        ns.check_deallocate(ranges)
            .map_err(|k| SubmitError::new(k, None))?;
        let index = self.reserve().map_err(|k| SubmitError::new(k, None))?;
        let base = index * self.pages_per_slot * PAGE_SIZE;
        for (i, r) in ranges.iter().enumerate() {
            self.lists
                .view()
                .write(base + i * 16, r.to_dsm().as_bytes());
        }
        let mut cmd = Command::new(NvmOpcode::DATASET_MANAGEMENT.0, ns.id);
        cmd.prp1 = self.lists.iova(base).unwrap_or(prp::PRP_UNUSED);
        cmd.prp2 = prp::PRP_UNUSED;
        cmd.cdw10 = ranges.len() as u32 - 1;
        cmd.cdw11 = DSM_ATTR_DEALLOCATE;
        self.push(cmd, None, token)
    }

    /// Queue any command. With `buf`, the driver fills PRP1/PRP2 for the
    /// buffer's whole window; without, the command's own PRP fields are sent
    /// as given. The CID is always the driver's.
    pub fn submit_raw(
        &mut self,
        cmd: Command,
        buf: Option<DmaBuf>,
        token: u64,
    ) -> Result<(), SubmitError> {
        if buf.is_some() && cmd.psdt() != 0 {
            return Err(SubmitError::new(
                SubmitErrorKind::InvalidCommand(
                    "PSDT selects SGLs but the driver builds PRPs; clear CDW0.PSDT",
                ),
                buf,
            ));
        }
        self.submit(cmd, buf, token)
    }

    /// Check there is room; returns the free slot's index.
    #[inline]
    fn reserve(&mut self) -> Result<usize, SubmitErrorKind> {
        // One atomic load: new work fails fast on a removed or failed
        // controller; during a reset it is held in the slot and sent once
        // the queues are re-created.
        let state = self.ctrl.state();
        if state != self.submit_state {
            self.check_health(state)?;
        }
        if self.sq.is_full() {
            return Err(self.queue_full());
        }
        match self.tracker.next_free() {
            Some(index) => Ok(index),
            None => Err(self.queue_full()),
        }
    }

    #[cold]
    fn queue_full(&mut self) -> SubmitErrorKind {
        self.stats.queue_full += 1;
        SubmitErrorKind::QueueFull {
            capacity: self.capacity(),
        }
    }

    /// Whether new work may be queued in controller state `state` (not
    /// live in this queue's generation, or the queue is dead).
    #[cold]
    fn check_health(&self, state: u64) -> Result<(), SubmitErrorKind> {
        match health_of(state) {
            Health::Removed => Err(SubmitErrorKind::DeviceRemoved),
            Health::Failed => Err(SubmitErrorKind::ControllerFailed),
            _ if self.dead && generation_of(state) == self.generation => {
                Err(SubmitErrorKind::ControllerFailed)
            }
            _ => Ok(()),
        }
    }

    /// PRP2 for a buffer that does not fit in PRP1's page: the next page,
    /// or a list in slot `index`'s list pages.
    #[inline(never)]
    fn list_prps(&self, index: usize, buf: &DmaBuf) -> Result<(u64, u64), SubmitErrorKind> {
        let mut sink = WindowSink {
            mem: &self.lists,
            first_page: index * self.pages_per_slot,
            pages: self.pages_per_slot,
        };
        let (base, len) = (buf.iova(), buf.len());
        // A DmaBuf's window is IOVA-contiguous.
        prp::build(len, |off| (off < len).then(|| base + off as u64), &mut sink).map_err(
            |e| match e {
                prp::PrpError::ZeroLength => SubmitErrorKind::ZeroLength,
                e => SubmitErrorKind::Buffer(e),
            },
        )
    }

    /// Fill the PRPs for `buf` (if any) and queue the command.
    fn submit(
        &mut self,
        mut cmd: Command,
        buf: Option<DmaBuf>,
        token: u64,
    ) -> Result<(), SubmitError> {
        let index = match self.reserve() {
            Ok(i) => i,
            Err(kind) => return Err(SubmitError::new(kind, buf)),
        };
        if let Some(b) = &buf {
            match self.list_prps(index, b) {
                Ok((p1, p2)) => {
                    cmd.prp1 = p1;
                    cmd.prp2 = p2;
                }
                Err(kind) => return Err(SubmitError::new(kind, buf)),
            }
        }
        self.push(cmd, buf, token)
    }

    /// Give the command a CID and write it to the SQ (room was checked).
    fn push(&mut self, cmd: Command, buf: Option<DmaBuf>, token: u64) -> Result<(), SubmitError> {
        self.push_with(buf, token, |c, cid| {
            *c = cmd;
            c.set_cid(cid);
        })
    }

    /// Take the tracker slot `reserve` returned, build the entry in it with
    /// `fill`, and copy it to the SQ (room was checked).
    #[inline]
    fn push_with(
        &mut self,
        buf: Option<DmaBuf>,
        token: u64,
        fill: impl FnOnce(&mut Command, u16),
    ) -> Result<(), SubmitError> {
        let cmd = match self.tracker.start_with(token, buf, fill) {
            Ok(cmd) => cmd,
            Err(buf) => return Err(self.unreachable_full(buf)),
        };
        // `reserve` saw room in the SQ and nothing pushed since.
        self.sq.push_checked(cmd);
        self.stats.submitted += 1;
        Ok(())
    }

    /// `reserve` checked for a free slot, so this does not happen; should
    /// it, the buffer goes back with the error.
    #[cold]
    fn unreachable_full(&mut self, buf: Option<DmaBuf>) -> SubmitError {
        SubmitError::new(
            SubmitErrorKind::QueueFull {
                capacity: self.capacity(),
            },
            buf,
        )
    }

    /// Write the SQ tail doorbell if the tail moved since the last write.
    #[inline]
    pub fn ring_doorbell(&mut self) {
        // Not while the controller resets or after it: the queue does not
        // exist on the device; recovery re-sends what is in flight.
        if self.ctrl.state() != self.live_state {
            return;
        }
        self.ring_doorbell_live();
    }

    #[inline]
    pub(super) fn ring_doorbell_live(&mut self) {
        if let Some(tail) = self.sq.doorbell_value() {
            let mmio = match &mut self.shadow {
                Some((sq, _)) => sq.update(tail),
                None => true,
            };
            if mmio {
                self.ctrl.device.write32(self.sq_doorbell, tail as u32);
                self.stats.sq_doorbell_writes += 1;
            } else {
                self.stats.sq_shadow_updates += 1;
            }
        }
    }

    /// Publish the CQ head (after consuming entries).
    #[inline]
    fn ring_cq_doorbell(&mut self) {
        let head = self.cq.head();
        let mmio = match &mut self.shadow {
            Some((_, cq)) => cq.update(head),
            None => true,
        };
        if mmio {
            self.ctrl.device.write32(self.cq_doorbell, head as u32);
            self.stats.cq_doorbell_writes += 1;
        } else {
            self.stats.cq_shadow_updates += 1;
        }
    }

    /// Ring the SQ doorbell, then reap up to `max` completions (looking at no
    /// more than one ring's worth of entries), calling `f` for each. Writes
    /// the CQ head doorbell once if anything was consumed. Completions with
    /// unknown, stale or duplicate CIDs are counted and skipped.
    ///
    /// This is also where the queue pair follows the controller: after a
    /// reset it re-creates its queues and resubmits or fails what it had in
    /// flight; after a removal everything in flight completes with
    /// [`IoError::DeviceRemoved`]. A command that timed out completes with
    /// [`IoError::TimedOut`] once the device is done with it. A command that
    /// fails with DNR=0 is resubmitted up to the retry limit instead of
    /// being delivered.
    pub fn process_completions<F: FnMut(IoCompletion)>(&mut self, max: usize, mut f: F) -> usize {
        // The one load of the controller's state word per call.
        let state = self.ctrl.state();
        let mut delivered = 0;
        if state != self.live_state {
            delivered = self.recover(state, &mut f);
            if self.ctrl.state() != self.live_state || self.dead {
                return delivered;
            }
        }
        self.ring_doorbell_live();
        let ring = self.sq.entries() as usize;
        let mut consumed = 0usize;
        let mut retried = false;
        while delivered < max && consumed < ring {
            let Some(c) = self.cq.peek() else { break };
            self.cq.advance();
            consumed += 1;
            if c.sqid != self.qid {
                self.stats.wrong_sqid += 1;
            }
            if !self.sq.update_head(c.sqhd) {
                self.stats.invalid_sqhd += 1;
            }
            let index = match self.tracker.lookup(c.cid) {
                Ok(index) => index,
                Err(e) => {
                    self.count_rejected(e);
                    continue;
                }
            };
            let status = c.status();
            if !status.is_success() || self.tracker.slot(index).timed_out() {
                match self.complete_unusual(index, status) {
                    Some(done) => {
                        delivered += 1;
                        f(done);
                    }
                    None => retried = true,
                }
                continue;
            }
            let req = self.tracker.complete(index);
            self.stats.completed += 1;
            delivered += 1;
            f(IoCompletion {
                token: req.token,
                result: Ok(c.dw0),
                buf: req.buf,
            });
        }
        if consumed > 0 {
            self.ring_cq_doorbell();
            self.idle_since = None;
        }
        if retried {
            self.ring_doorbell_live();
        }
        delivered
    }

    /// Count a completion whose CID was not accepted.
    #[cold]
    fn count_rejected(&mut self, e: CidError) {
        match e {
            CidError::Stale => self.stats.stale_completions += 1,
            CidError::Duplicate => self.stats.duplicate_completions += 1,
            CidError::Unknown => self.stats.unknown_completions += 1,
        }
    }

    /// The in-flight command in slot `index` completed with an error status
    /// or after its deadline: resubmit it (returns `None`) or complete it.
    #[cold]
    #[inline(never)]
    fn complete_unusual(&mut self, index: usize, status: Status) -> Option<IoCompletion> {
        let slot = self.tracker.slot(index);
        if !slot.timed_out()
            && !status.dnr()
            && slot.retries < self.retry_limit
            && idempotent(slot.cmd.opcode())
            && !self.sq.is_full()
        {
            let cmd = self.tracker.reissue(index);
            if self.sq.push(&cmd) {
                self.stats.retries += 1;
                return None;
            }
        }
        let req = self.tracker.complete(index);
        self.stats.completed += 1;
        self.stats.failed += 1;
        let result = if req.timed_out {
            Err(IoError::TimedOut(self.timeout))
        } else {
            Err(IoError::Status(status))
        };
        Some(IoCompletion {
            token: req.token,
            result,
            buf: req.buf,
        })
    }

    /// Reap what is outstanding (bounded by the admin timeout), then delete
    /// the SQ and the CQ. Completions reaped here, and buffers of commands
    /// that never completed, are dropped; use [`Self::delete_with`] to receive
    /// them. Also done, best effort, on drop.
    pub fn delete(mut self) -> Result<(), DriverError> {
        self.teardown(&mut |_| {})
    }

    /// Like [`Self::delete`], but every command still outstanding completes
    /// exactly once through `f`: those the device finishes while the queue
    /// drains with their own result, and, once the SQ is gone (deleted by
    /// the controller, which aborts whatever it still held, or already lost
    /// to a reset, shutdown or removal), the rest with `Command Aborted due
    /// to SQ Deletion` and their buffers. When the deletion fails the device
    /// may still own those buffers, so they are not handed back.
    pub fn delete_with<F: FnMut(IoCompletion)>(mut self, mut f: F) -> Result<(), DriverError> {
        self.teardown(&mut f)
    }

    fn teardown(&mut self, sink: &mut dyn FnMut(IoCompletion)) -> Result<(), DriverError> {
        if !self.live {
            return Ok(());
        }
        self.live = false;
        let start = Instant::now();
        while self.outstanding() > 0
            && !self.ctrl.is_shut_down()
            && start.elapsed() < self.ctrl.opts.admin_timeout
        {
            if self.process_completions(usize::MAX, &mut *sink) == 0 {
                std::thread::yield_now();
            }
        }
        let result = if self.ctrl.is_shut_down()
            || self.dead
            || self.ctrl.state() != live_word(self.generation)
        {
            // Nothing to delete: the controller is gone or was reset and
            // this queue was never re-created.
            Ok(())
        } else {
            let mut delete_sq = Command::new(AdminOpcode::DELETE_IO_SQ.0, 0);
            delete_sq.cdw10 = self.qid as u32;
            let mut delete_cq = Command::new(AdminOpcode::DELETE_IO_CQ.0, 0);
            delete_cq.cdw10 = self.qid as u32;
            self.ctrl
                .admin_execute(delete_sq, AdminData::None)
                .and_then(|_| self.ctrl.admin_execute(delete_cq, AdminData::None))
                .map(|_| ())
        };
        // A device that could not be proven stopped may still use these
        // queues, whatever the deletion said.
        let unproven = self.ctrl.fence_state() == crate::driver::shared::fence::UNPROVEN;
        if unproven {
            self.quarantine_rings();
        }
        if result.is_ok() {
            let aborted = Status::new(StatusCodeType::GENERIC, generic::ABORTED_SQ_DELETION);
            for mut req in self.tracker.drain() {
                if unproven && let Some(b) = req.buf.as_mut() {
                    b.quarantine();
                }
                sink(IoCompletion {
                    token: req.token,
                    result: Err(IoError::Status(aborted)),
                    buf: req.buf,
                });
            }
            self.ctrl.return_qid(self.qid);
        } else if let Err(e) = result {
            // The device may still own the queues and every buffer in them.
            return self.after_failed_delete(e, sink);
        }
        result
    }

    /// Keep this pair's rings and PRP-list pages mapped for good (the
    /// device could not be stopped, see `fence`).
    pub(super) fn quarantine_rings(&self) {
        self.lists.quarantine();
    }
}

impl<D: Device> Drop for IoQueuePair<D> {
    fn drop(&mut self) {
        let _ = self.teardown(&mut |_| {});
    }
}

impl<D: Device> std::fmt::Debug for IoQueuePair<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoQueuePair")
            .field("qid", &self.qid)
            .field("capacity", &self.capacity())
            .field("outstanding", &self.outstanding())
            .field("stats", &self.stats)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::dma::{DmaError, DmaRegion, HostMemory};
    use crate::driver::Controller;
    use super::*;

    struct Nothing;
    impl Device for Nothing {
        fn read32(&self, _: usize) -> u32 {
            0
        }
        fn write32(&self, _: usize, _: u32) {}
        fn map_dma(&self, m: HostMemory) -> Result<DmaRegion, DmaError> {
            Ok(DmaRegion::unmapped_for_tests(m, 0))
        }
        fn name(&self) -> String {
            "nothing".into()
        }
    }

    /// Resolves only when `T` is not `Sync`: with a `Sync` type both impls
    /// apply and the call below is ambiguous, which fails to compile.
    trait AmbiguousIfSync<A> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfSync<()> for T {}
    impl<T: ?Sized + Sync> AmbiguousIfSync<u8> for T {}

    #[test]
    fn queue_pair_is_send_not_sync_and_controller_is_send_sync() {
        fn send<T: Send>() {}
        fn sync<T: Sync>() {}
        send::<IoQueuePair<Nothing>>();
        <IoQueuePair<Nothing> as AmbiguousIfSync<_>>::check();
        send::<Controller<Nothing>>();
        sync::<Controller<Nothing>>();
    }
}
