//! Submission: the NVM I/O commands (NVM Command Set 1.0 §3: Read, Write,
//! Flush, Write Zeroes, Dataset Management) and raw passthrough, from the
//! checks against the namespace through the slot and the data mapping to
//! the transport. The batch goes to the controller when the caller calls
//! [`QueuePair::ring_doorbell`] (or reaps).

use crate::dma::DmaBuf;
use crate::spec::command::{CDW12_DEAC, CDW12_FUA, DSM_ATTR_DEALLOCATE};
use crate::spec::command::{Command, NvmOpcode};

use crate::driver::error::{SubmitError, SubmitErrorKind};
use crate::driver::namespace::{LbaRange, Namespace};
use crate::driver::request::{IoData, IoOptions};
use crate::driver::transport::{CommandTransport, DataDirection, SubmitRefusal};

use super::QueuePair;

/// The direction of a command's data, from its opcode (bits 1:0, NVMe Base
/// 2.0 §4.3 Figure 91: 01b host to controller, 10b controller to host).
pub(super) fn direction_of(opcode: u8) -> Option<DataDirection> {
    match opcode & 3 {
        1 => Some(DataDirection::ToDevice),
        2 => Some(DataDirection::FromDevice),
        _ => None,
    }
}

impl<T: CommandTransport> QueuePair<T> {
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
        let dir = if write {
            DataDirection::ToDevice
        } else {
            DataDirection::FromDevice
        };
        let nlb_z = match ns.check_rw(lba, buf.len(), buf.iova(), write) {
            Ok(n) => n,
            Err(kind) => return self.rw_refused::<OPCODE, CDW12>(ns, lba, buf, token, kind),
        };
        let index = match self.reserve() {
            Ok(i) => i,
            Err(kind) => return Err(SubmitError::new(kind, Some(buf))),
        };
        // `check_rw` proved the length non-zero and the start dword aligned.
        let mapped = match self.t.map_data(index, &buf, dir) {
            Ok(p) => p,
            Err(kind) => return Err(SubmitError::new(kind, Some(buf))),
        };
        let nsid = ns.id();
        let (prp1, prp2) = T::prps(&mapped);
        self.push_with(Some(buf), Some(mapped), token, |cmd, cid| {
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

    /// `check_rw` refused: on a namespace formatted with metadata the
    /// request takes the metadata-aware path (the buffer holds what the
    /// format interleaves); otherwise `kind` is the answer.
    #[cold]
    #[inline(never)]
    fn rw_refused<const OPCODE: u8, const CDW12: u32>(
        &mut self,
        ns: &Namespace,
        lba: u64,
        buf: DmaBuf,
        token: u64,
        kind: SubmitErrorKind,
    ) -> Result<(), SubmitError> {
        if ns.metadata().is_none() {
            return Err(SubmitError::new(kind, Some(buf)));
        }
        let opts = IoOptions::default().fua(CDW12 & CDW12_FUA != 0);
        self.data_command(NvmOpcode(OPCODE), ns, lba, IoData::new(buf), &opts, token)
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
    /// list is written into the slot's preallocated memory: no allocation.
    pub fn deallocate(
        &mut self,
        ns: &Namespace,
        ranges: &[LbaRange],
        token: u64,
    ) -> Result<(), SubmitError> {
        ns.check_deallocate(ranges)
            .map_err(|k| SubmitError::new(k, None))?;
        let index = self.reserve().map_err(|k| SubmitError::new(k, None))?;
        let mapped = self
            .t
            .map_ranges(index, ranges)
            .map_err(|k| SubmitError::new(k, None))?;
        let mut cmd = Command::new(NvmOpcode::DATASET_MANAGEMENT.0, ns.id());
        cmd.cdw10 = ranges.len() as u32 - 1;
        cmd.cdw11 = DSM_ATTR_DEALLOCATE;
        T::encode(&mapped, &mut cmd);
        self.push(cmd, None, Some(mapped), token)
    }

    /// Queue any command. With `buf`, the driver fills the data pointer
    /// for the buffer's whole window (PRP1/PRP2 on PCIe); without, the
    /// command's own PRP fields are sent as given. The CID is always the
    /// driver's.
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
    #[inline(always)]
    pub(super) fn reserve(&mut self) -> Result<usize, SubmitErrorKind> {
        self.t.admit(&mut self.stats)?;
        match self.tracker.next_free() {
            Some(index) => Ok(index),
            None => Err(self.queue_full()),
        }
    }

    #[cold]
    pub(super) fn queue_full(&mut self) -> SubmitErrorKind {
        self.stats.queue_full += 1;
        SubmitErrorKind::QueueFull {
            capacity: self.capacity(),
        }
    }

    /// Map `buf` (if any) and queue the command.
    pub(super) fn submit(
        &mut self,
        mut cmd: Command,
        buf: Option<DmaBuf>,
        token: u64,
    ) -> Result<(), SubmitError> {
        let index = match self.reserve() {
            Ok(i) => i,
            Err(kind) => return Err(SubmitError::new(kind, buf)),
        };
        let mapped = match &buf {
            Some(b) => {
                // A buffer with an opcode that names no direction goes as
                // host-to-controller: the PRPs are the same either way.
                let dir = direction_of(cmd.opcode()).unwrap_or(DataDirection::ToDevice);
                match self.t.map_data(index, b, dir) {
                    Ok(m) => {
                        T::encode(&m, &mut cmd);
                        Some(m)
                    }
                    Err(kind) => return Err(SubmitError::new(kind, buf)),
                }
            }
            None => None,
        };
        self.push(cmd, buf, mapped, token)
    }

    /// Give the command a CID and queue it (room was checked).
    fn push(
        &mut self,
        cmd: Command,
        buf: Option<DmaBuf>,
        mapped: Option<T::Data>,
        token: u64,
    ) -> Result<(), SubmitError> {
        self.push_with(buf, mapped, token, |c, cid| {
            *c = cmd;
            c.set_cid(cid);
        })
    }

    /// Take the tracker slot `reserve` returned, build the entry in it with
    /// `fill`, and hand it to the transport (room was checked).
    #[inline(always)]
    fn push_with(
        &mut self,
        buf: Option<DmaBuf>,
        mapped: Option<T::Data>,
        token: u64,
        fill: impl FnOnce(&mut Command, u16),
    ) -> Result<(), SubmitError> {
        let cmd = match self.tracker.start_with(token, buf, fill) {
            Ok(cmd) => cmd,
            Err(buf) => return Err(self.unreachable_full(buf)),
        };
        let cid = cmd.cid();
        match self.t.send(cmd, mapped, &mut self.stats) {
            Ok(()) => {
                self.stats.submitted += 1;
                Ok(())
            }
            Err(refusal) => Err(self.refused(cid, refusal)),
        }
    }

    /// The transport refused a command the tracker already holds: take it
    /// back out and return its buffer with the error.
    #[cold]
    #[inline(never)]
    pub(super) fn refused(&mut self, cid: u16, refusal: SubmitRefusal) -> SubmitError {
        let req = self.tracker.complete(self.tracker.index_of(cid));
        if refusal == SubmitRefusal::Full {
            self.stats.queue_full += 1;
        }
        let kind = refusal.kind(self.capacity());
        SubmitError::with_all(kind, req.buf, req.extra)
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
