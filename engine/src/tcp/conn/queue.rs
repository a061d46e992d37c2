//! The per-command state of one connection and what the receive machine
//! does with each PDU: CID slots with their buffers, the completions ready
//! to be polled, the H2CData owed on R2Ts, and the SQ head reported by the
//! target (SQ flow control).

use std::collections::VecDeque;

use super::{Direction, TcpCompletion, TcpFailure, TcpOutcome};
use crate::spec::{completion::Completion, status::Status};
use crate::tcp::buf::DataBuf;
use crate::tcp::pdu::{DataHeader, IcResp, R2t};
use crate::tcp::rx::{RxError, RxSink};

#[derive(Debug, Default)]
pub(super) struct Slot {
    pub(super) busy: bool,
    /// The full CID the command was submitted with (the slot is its low bits).
    pub(super) cid: u16,
    pub(super) dir: Option<Direction>,
    pub(super) buf: Option<DataBuf>,
    /// C2HData bytes received (reads) or R2T bytes asked for (writes).
    pub(super) moved: u32,
    pub(super) failed: Option<TcpFailure>,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct H2cWork {
    pub(super) cid: u16,
    pub(super) ttag: u16,
    pub(super) offset: u32,
    pub(super) left: u32,
}

/// Everything the receive machine's sink touches.
#[derive(Debug)]
pub(super) struct Queue {
    /// Indexed by the CID's low bits (`cid & mask`): the submitter's CIDs
    /// may carry a generation in their high bits.
    pub(super) slots: Vec<Slot>,
    pub(super) mask: u16,
    pub(super) in_flight: usize,
    pub(super) done: VecDeque<TcpCompletion>,
    pub(super) h2c: VecDeque<H2cWork>,
    /// SQ entries (SQSIZE + 1), tail (commands sent) and head (last SQHD).
    pub(super) sq_entries: u16,
    pub(super) sq_tail: u16,
    pub(super) sq_head: u16,
    pub(super) flow_control: bool,
    pub(super) ic_resp: Option<IcResp>,
    /// Responses for a CID not in flight, counted and dropped.
    pub(super) stray: u64,
}

impl Queue {
    /// The slot of the command in flight under `cid`, if there is one.
    pub(super) fn slot_mut(&mut self, cid: u16) -> Option<&mut Slot> {
        self.slots
            .get_mut((cid & self.mask) as usize)
            .filter(|s| s.busy && s.cid == cid)
    }

    /// The slot of the command in flight under `cid`, if there is one.
    pub(super) fn slot(&self, cid: u16) -> Option<&Slot> {
        self.slots
            .get((cid & self.mask) as usize)
            .filter(|s| s.busy && s.cid == cid)
    }

    pub(super) fn complete(&mut self, cid: u16, outcome: TcpOutcome) {
        let Some(slot) = self.slot_mut(cid) else {
            return;
        };
        let outcome = match (slot.failed.take(), outcome) {
            (Some(f), _) => TcpOutcome::Failed(f),
            (None, o) => o,
        };
        *slot = Slot::default();
        self.in_flight -= 1;
        // Queued H2CData for it was copied into the send buffer already or
        // is dropped here: the buffer is the caller's again.
        self.h2c.retain(|w| w.cid != cid);
        self.done.push_back(TcpCompletion { cid, outcome });
    }

    fn busy_slot(&mut self, cid: u16, what: &str) -> Result<&mut Slot, RxError> {
        match self.slot_mut(cid) {
            Some(s) => Ok(s),
            None => Err(RxError::Protocol(format!(
                "{what} for CID {cid}, which is not in flight"
            ))),
        }
    }

    pub(super) fn fail_all(&mut self, failure: TcpFailure) -> usize {
        let mut n = 0;
        for i in 0..self.slots.len() {
            if self.slots[i].busy {
                let cid = self.slots[i].cid;
                self.slots[i].failed = Some(failure);
                self.complete(cid, TcpOutcome::Failed(failure));
                n += 1;
            }
        }
        n
    }
}

impl RxSink for Queue {
    fn ic_resp(&mut self, r: IcResp) -> Result<(), RxError> {
        if self.ic_resp.is_some() {
            return Err(RxError::Protocol("a second ICResp".into()));
        }
        self.ic_resp = Some(r);
        Ok(())
    }

    fn response(&mut self, cqe: Completion) -> Result<(), RxError> {
        if self.flow_control {
            if cqe.sqhd >= self.sq_entries {
                return Err(RxError::Protocol(format!(
                    "SQHD {} outside the {}-entry queue",
                    cqe.sqhd, self.sq_entries
                )));
            }
            self.sq_head = cqe.sqhd;
        }
        let cid = cqe.cid;
        let Some(slot) = self.slot_mut(cid) else {
            self.stray += 1;
            return Ok(());
        };
        let status = cqe.status();
        if status.is_success()
            && slot.dir == Some(Direction::FromController)
            && slot.moved as usize != slot.buf.as_ref().map_or(0, DataBuf::len)
        {
            slot.failed.get_or_insert(TcpFailure::ShortTransfer);
        }
        self.complete(
            cid,
            TcpOutcome::Completed {
                dw0: cqe.dw0,
                dw1: cqe.dw1,
                status,
            },
        );
        Ok(())
    }

    fn r2t(&mut self, r: R2t) -> Result<(), RxError> {
        let slot = self.busy_slot(r.cccid, "R2T")?;
        check_transfer(slot, &R2T_TRANSFER, r.cccid, r.offset, r.len)?;
        slot.moved += r.len;
        self.h2c.push_back(H2cWork {
            cid: r.cccid,
            ttag: r.ttag,
            offset: r.offset,
            left: r.len,
        });
        Ok(())
    }

    fn c2h_begin(&mut self, d: &DataHeader) -> Result<(), RxError> {
        let slot = self.busy_slot(d.cccid, "C2HData")?;
        check_transfer(slot, &C2H_TRANSFER, d.cccid, d.offset, d.len)?;
        Ok(())
    }

    fn c2h_data(&mut self, cccid: u16, offset: u32, bytes: &[u8]) {
        // c2h_begin checked the range; a miss here cannot happen.
        if let Some(dst) = self
            .slot_mut(cccid)
            .and_then(|s| s.buf.as_mut())
            .and_then(|b| b.slice_mut(offset as usize, bytes.len()))
        {
            dst.copy_from_slice(bytes);
        }
    }

    fn c2h_end(&mut self, d: &DataHeader, digest_ok: bool) {
        // c2h_begin checked that the command is in flight.
        let Some(slot) = self.slot_mut(d.cccid) else {
            return;
        };
        slot.moved += d.len;
        if !digest_ok {
            slot.failed.get_or_insert(TcpFailure::DataDigest);
        }
        if d.success {
            self.complete(
                d.cccid,
                TcpOutcome::Completed {
                    dw0: 0,
                    dw1: 0,
                    status: Status::SUCCESS,
                },
            );
        }
    }
}

/// How one kind of data PDU names itself in the errors of [`check_transfer`].
struct TransferKind {
    pdu: &'static str,
    dir: Direction,
    not_dir: &'static str,
    verb: &'static str,
    before: &'static str,
}

const R2T_TRANSFER: TransferKind = TransferKind {
    pdu: "R2T",
    dir: Direction::ToController,
    not_dir: "no write",
    verb: "asks",
    before: "were asked before",
};

const C2H_TRANSFER: TransferKind = TransferKind {
    pdu: "C2HData",
    dir: Direction::FromController,
    not_dir: "no read",
    verb: "carries",
    before: "arrived before",
};

/// Check that a data PDU for `cid` moves the bytes `offset..offset + len`
/// the slot expects next, in the slot's direction and inside its buffer.
fn check_transfer(
    slot: &Slot,
    kind: &TransferKind,
    cid: u16,
    offset: u32,
    len: u32,
) -> Result<(), RxError> {
    let buf_len = slot.buf.as_ref().map_or(0, DataBuf::len) as u64;
    if slot.dir != Some(kind.dir) {
        return Err(RxError::Protocol(format!(
            "{} for CID {cid}, which is {}",
            kind.pdu, kind.not_dir
        )));
    }
    let end = offset as u64 + len as u64;
    if offset != slot.moved || end > buf_len {
        return Err(RxError::Protocol(format!(
            "{} for CID {cid} {} bytes {offset}..{end} of {buf_len}, {} {}",
            kind.pdu, kind.verb, slot.moved, kind.before
        )));
    }
    Ok(())
}
