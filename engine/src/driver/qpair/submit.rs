//! Submission: the NVM I/O commands (NVM Command Set 1.0 §3: Read, Write,
//! Flush, Write Zeroes, Dataset Management) and raw passthrough, from the
//! checks against the namespace through the slot, the PRPs and the SQ entry.
//! The SQ doorbell is rung by the caller, once per batch
//! ([`IoQueuePair::ring_doorbell`]).

use crate::device::Device;

use zerocopy::IntoBytes;

use crate::dma::DmaBuf;
use crate::spec::command::{CDW12_DEAC, CDW12_FUA, DSM_ATTR_DEALLOCATE};
use crate::spec::command::{Command, NvmOpcode};

use crate::driver::error::{DeviceGone, SubmitError, SubmitErrorKind};
use crate::driver::namespace::{LbaRange, Namespace};
use crate::driver::prp::WindowSink;
use crate::driver::prp::{self, PAGE_SIZE};
use crate::driver::shared::recovery::{Health, generation_of, health_of};

use super::IoQueuePair;

impl<D: Device> IoQueuePair<D> {
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
        let nsid = ns.id();
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
        self.submit(Command::new(NvmOpcode::FLUSH.0, ns.id()), None, token)
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
        let mut cmd = Command::new(NvmOpcode::WRITE_ZEROES.0, ns.id());
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
        let mut cmd = Command::new(NvmOpcode::DATASET_MANAGEMENT.0, ns.id());
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
            Health::Removed => Err(SubmitErrorKind::Gone(DeviceGone::Removed)),
            Health::Failed => Err(SubmitErrorKind::Gone(DeviceGone::Failed)),
            _ if self.dead && generation_of(state) == self.generation => {
                Err(SubmitErrorKind::Gone(DeviceGone::Failed))
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
}
