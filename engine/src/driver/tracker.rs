//! Command trackers: a slab of in-flight commands indexed by command
//! identifier (CID, NVMe Base 2.0 §4.2 CDW0.CID).
//!
//! The CID's low bits are the slot index (log2 of the queue capacity, rounded
//! up); the high bits carry a rolling generation that advances every time the
//! slot is reused. A completion whose index is out of range ("unknown"), whose
//! generation is not the slot's current one ("stale"), or whose slot is not in
//! flight ("duplicate") is reported as such and never completes anything.
//! Free slots form an intrusive stack threaded through the slab: no per-I/O
//! allocation, no capacity checks.
//!
//! Each slot also keeps what recovery needs: the submission queue entry as
//! last sent (for a retry or a resubmission after a controller reset), how
//! often it was resubmitted, when a timeout scan first saw it in flight, and
//! whether it timed out (its buffer stays here until the device is proven
//! done with it). Starting a command writes only the slot's hot words (CID,
//! flags, token, retry count, buffer) and builds the entry in place; the
//! timeout bookkeeping is valid only once a scan stamped the slot.

#![forbid(unsafe_code)]

use std::time::Instant;

use crate::dma::DmaBuf;
use crate::spec::command::Command;

/// Why a completion's CID was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CidError {
    /// The index bits name no slot.
    Unknown,
    /// The slot was reused since this CID was issued.
    Stale,
    /// The slot is not in flight: this command already completed.
    Duplicate,
}

/// What one in-flight command carries until it completes.
#[derive(Debug)]
pub(crate) struct Request {
    /// The caller's token.
    pub token: u64,
    /// The data buffer, handed back on completion.
    pub buf: Option<DmaBuf>,
    /// The command's opcode (for diagnostics).
    #[allow(dead_code)]
    pub opcode: u8,
    /// Whether the command had timed out.
    pub timed_out: bool,
    /// The separate metadata buffer and data segments, if any.
    pub extra: Option<Box<IoExtra>>,
}

impl Request {
    /// Mark every buffer of the request quarantined (the device may still
    /// write it).
    pub(crate) fn quarantine(&mut self) {
        if let Some(b) = self.buf.as_mut() {
            b.quarantine();
        }
        if let Some(e) = self.extra.as_mut() {
            e.quarantine();
        }
    }
}

/// The buffers of a request besides its one data buffer: a separate
/// metadata buffer (MPTR) or several metadata segments, and the segments
/// of a vectored request. Boxed
/// inside [`IoData`](crate::IoData) and handed back whole in
/// [`IoCompletion::extra`](crate::IoCompletion) (and with a refusal), so a
/// caller that puts it into its next request allocates nothing per I/O.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct IoExtra {
    /// The separate metadata buffer.
    pub meta: Option<DmaBuf>,
    /// The data segments of a vectored request, in order (empty otherwise).
    pub segments: Vec<DmaBuf>,
    /// The separate metadata as several segments, in order, described to
    /// the controller by an SGL at MPTR (empty otherwise; exclusive with
    /// `meta`).
    pub meta_segments: Vec<DmaBuf>,
}

impl IoExtra {
    /// Whether it holds no buffer.
    pub fn is_empty(&self) -> bool {
        self.meta.is_none() && self.segments.is_empty() && self.meta_segments.is_empty()
    }
    /// Every buffer it holds, marked quarantined (the device may still
    /// write them).
    pub(crate) fn quarantine(&mut self) {
        let all = self.meta.iter_mut().chain(self.segments.iter_mut());
        for b in all.chain(self.meta_segments.iter_mut()) {
            b.quarantine();
        }
    }
}

/// Slot flag: a command is in the slot.
const IN_FLIGHT: u8 = 1;
/// Slot flag: no timeout scan has seen this command yet (`seen` is unset).
const FRESH: u8 = 2;
/// Slot flag: the deadline passed; an Abort was (or is about to be) sent.
const TIMED_OUT: u8 = 4;
/// Slot flag: the command holds buffers in the attached table.
const ATTACHED: u8 = 8;

/// End of the free-slot stack (larger than any index, see [`Tracker::new`]).
const NO_SLOT: u16 = u16::MAX;

/// One command slot.
pub(crate) struct Slot {
    /// The caller's token.
    token: u64,
    /// The CID this slot was last issued under (index in the low bits).
    cid: u16,
    /// `IN_FLIGHT`, `FRESH`, `TIMED_OUT`.
    flags: u8,
    /// Resubmissions so far (retries and resubmissions after a reset).
    pub(crate) retries: u8,
    /// Next free slot while this one is free.
    next_free: u16,
    /// The entry as last submitted (CID included).
    pub(crate) cmd: Command,
    buf: Option<DmaBuf>,
    /// When a timeout scan first saw this command (valid unless `FRESH`).
    seen: Option<Instant>,
    /// After a timeout: when to stop waiting for the aborted command and
    /// reset the controller instead (valid while `TIMED_OUT`).
    abort_deadline: Option<Instant>,
}

impl Slot {
    /// The buffer of the command in this slot.
    #[inline]
    pub(crate) fn buf(&self) -> Option<&DmaBuf> {
        self.buf.as_ref()
    }
    /// Whether the slot holds a command in flight.
    #[inline]
    pub(crate) fn in_flight(&self) -> bool {
        self.flags & IN_FLIGHT != 0
    }
    /// Whether the command's deadline passed.
    #[inline]
    pub(crate) fn timed_out(&self) -> bool {
        self.flags & TIMED_OUT != 0
    }
    /// Neither timed out nor holding attached buffers: its completion
    /// takes the plain path.
    #[inline]
    pub(crate) fn plain(&self) -> bool {
        self.flags & (TIMED_OUT | ATTACHED) == 0
    }
    /// When a timeout scan first saw this command in flight.
    pub(crate) fn seen(&self) -> Option<Instant> {
        if self.flags & FRESH != 0 {
            None
        } else {
            self.seen
        }
    }
    /// Stamp the command as seen by a timeout scan at `now`.
    pub(crate) fn set_seen(&mut self, now: Instant) {
        self.seen = Some(now);
        self.flags &= !FRESH;
    }
    /// Mark the command timed out; `abort_deadline` is when to give up on
    /// its Abort.
    pub(crate) fn set_timed_out(&mut self, abort_deadline: Option<Instant>) {
        self.flags |= TIMED_OUT;
        self.abort_deadline = abort_deadline;
    }
    /// After a timeout: when to stop waiting for the aborted command.
    pub(crate) fn abort_deadline(&self) -> Option<Instant> {
        self.abort_deadline
    }
}

/// The slab of command slots of one queue.
pub(crate) struct Tracker {
    slots: Box<[Slot]>,
    /// Per slot: the buffers beside the data buffer (set while `ATTACHED`).
    attached: Box<[Option<Box<IoExtra>>]>,
    /// Top of the free-slot stack, or `NO_SLOT`.
    free_head: u16,
    in_flight: usize,
    /// Added to a slot's CID to advance its generation: `1 << index_bits`.
    /// The u16 wrap keeps the generation within its bits.
    generation_step: u16,
    index_mask: u16,
}

impl Tracker {
    /// A tracker for `capacity` concurrent commands (1..=4096).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, 4096);
        let index_bits = capacity.next_power_of_two().trailing_zeros().max(1);
        let slots = (0..capacity)
            .map(|i| Slot {
                token: 0,
                cid: i as u16,
                flags: 0,
                retries: 0,
                // Pop order hands out slot 0 first.
                next_free: if i + 1 < capacity {
                    i as u16 + 1
                } else {
                    NO_SLOT
                },
                cmd: Command::default(),
                buf: None,
                seen: None,
                abort_deadline: None,
            })
            .collect();
        Tracker {
            slots,
            attached: (0..capacity).map(|_| None).collect(),
            free_head: 0,
            in_flight: 0,
            generation_step: 1 << index_bits,
            index_mask: ((1u32 << index_bits) - 1) as u16,
        }
    }

    /// Maximum commands in flight.
    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }
    /// Commands in flight.
    #[inline]
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }
    /// The tokens of the commands in flight, in slot order.
    pub(crate) fn tokens_in_flight(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots.iter().filter(|s| s.in_flight()).map(|s| s.token)
    }
    /// Whether every slot is in flight.
    #[cfg(test)]
    pub(crate) fn is_full(&self) -> bool {
        self.free_head == NO_SLOT
    }

    /// Index of the slot the next `start` will use. One compare against
    /// the slab's length covers both "none free" (`NO_SLOT` is past the
    /// end) and the bounds, and is the same one `start_with` makes, which
    /// the compiler then folds away.
    #[inline]
    pub(crate) fn next_free(&self) -> Option<usize> {
        let head = self.free_head as usize;
        (head < self.slots.len()).then_some(head)
    }

    /// Take a slot for `cmd`: gives it a CID (written into `cmd`) and keeps
    /// a copy. Gives the buffer back when every slot is in flight.
    #[cfg(test)]
    pub(crate) fn start(
        &mut self,
        token: u64,
        cmd: &mut Command,
        buf: Option<DmaBuf>,
    ) -> Result<u16, Option<DmaBuf>> {
        let sent = self.start_with(token, buf, |c, cid| {
            *c = *cmd;
            c.set_cid(cid);
        })?;
        *cmd = *sent;
        Ok(sent.cid())
    }

    /// Take the slot [`Tracker::next_free`] names: `fill` builds the entry
    /// in the slot and must give it the CID it is passed. Returns the entry
    /// to send, or gives the buffer back when every slot is in flight.
    #[inline]
    pub(crate) fn start_with(
        &mut self,
        token: u64,
        buf: Option<DmaBuf>,
        fill: impl FnOnce(&mut Command, u16),
    ) -> Result<&Command, Option<DmaBuf>> {
        // `NO_SLOT` is past the end, so one check covers both "no free
        // slot" and the bounds.
        let Some(slot) = self.slots.get_mut(self.free_head as usize) else {
            return Err(buf);
        };
        self.free_head = slot.next_free;
        self.in_flight += 1;
        slot.cid = slot.cid.wrapping_add(self.generation_step);
        slot.flags = IN_FLIGHT | FRESH;
        slot.retries = 0;
        slot.token = token;
        // A free slot holds no buffer (`complete` takes it), so there is
        // nothing to drop; forgetting the `None` spares a drop check and
        // lets the buffer move straight into the slot.
        std::mem::forget(std::mem::replace(&mut slot.buf, buf));
        fill(&mut slot.cmd, slot.cid);
        debug_assert_eq!(slot.cmd.cid(), slot.cid);
        Ok(&slot.cmd)
    }

    /// The in-flight slot `cid` names, checking generation and state.
    #[inline]
    pub(crate) fn lookup(&self, cid: u16) -> Result<usize, CidError> {
        let index = (cid & self.index_mask) as usize;
        let Some(slot) = self.slots.get(index) else {
            return Err(CidError::Unknown);
        };
        // Same index bits, so equal CIDs mean equal generations.
        if slot.cid != cid {
            return Err(CidError::Stale);
        }
        if slot.flags & IN_FLIGHT == 0 {
            return Err(CidError::Duplicate);
        }
        Ok(index)
    }

    /// The slot index `cid` carries.
    #[inline]
    pub(crate) fn index_of(&self, cid: u16) -> usize {
        (cid & self.index_mask) as usize
    }

    /// Index of the free slot after [`Tracker::next_free`]'s: the one the
    /// second of two starts in a row will use.
    pub(crate) fn second_free(&self) -> Option<usize> {
        let first = self.slots.get(self.free_head as usize)?;
        let second = first.next_free;
        (second != NO_SLOT).then_some(second as usize)
    }

    /// Give the in-flight slot `index` the buffers in `attached`, handed
    /// back with its completion.
    pub(crate) fn attach(&mut self, index: usize, extra: Option<Box<IoExtra>>) {
        if extra.is_none() {
            return;
        }
        self.slots[index].flags |= ATTACHED;
        self.attached[index] = extra;
    }

    /// Slot `index` (any state).
    #[inline]
    pub(crate) fn slot(&self, index: usize) -> &Slot {
        &self.slots[index]
    }
    /// Slot `index`, mutably.
    pub(crate) fn slot_mut(&mut self, index: usize) -> &mut Slot {
        &mut self.slots[index]
    }

    /// Give the in-flight slot `index` a new CID for a resubmission and
    /// return the entry to send. Completions for the old CID become stale.
    pub(crate) fn reissue(&mut self, index: usize) -> Command {
        let step = self.generation_step;
        let slot = &mut self.slots[index];
        slot.cid = slot.cid.wrapping_add(step);
        slot.retries = slot.retries.saturating_add(1);
        slot.flags = IN_FLIGHT | FRESH | (slot.flags & ATTACHED);
        slot.cmd.set_cid(slot.cid);
        slot.cmd
    }

    /// Release the in-flight slot `index`.
    #[inline]
    pub(crate) fn complete(&mut self, index: usize) -> Request {
        let slot = &mut self.slots[index];
        let extra = if slot.flags & ATTACHED != 0 {
            self.attached[index].take()
        } else {
            None
        };
        let req = Request {
            token: slot.token,
            buf: slot.buf.take(),
            opcode: slot.cmd.opcode(),
            timed_out: slot.flags & TIMED_OUT != 0,
            extra,
        };
        slot.flags = 0;
        slot.next_free = self.free_head;
        self.free_head = index as u16;
        self.in_flight -= 1;
        req
    }

    /// Release the in-flight slot `index`, which [`Slot::plain`] says
    /// holds no attached buffers.
    #[inline]
    pub(crate) fn complete_plain(&mut self, index: usize) -> (u64, Option<DmaBuf>) {
        let slot = &mut self.slots[index];
        debug_assert!(slot.flags & ATTACHED == 0);
        let out = (slot.token, slot.buf.take());
        slot.flags = 0;
        slot.next_free = self.free_head;
        self.free_head = index as u16;
        self.in_flight -= 1;
        out
    }

    /// Complete the command `cid` names, releasing its slot.
    #[cfg(test)]
    pub(crate) fn finish(&mut self, cid: u16) -> Result<Request, CidError> {
        let index = self.lookup(cid)?;
        Ok(self.complete(index))
    }

    /// Release every in-flight slot (queue teardown), yielding the buffers.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Request> + '_ {
        (0..self.slots.len()).filter_map(move |i| {
            if self.slots[i].in_flight() {
                Some(self.complete(i))
            } else {
                None
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cid_carries_index_low_and_generation_high() {
        let mut t = Tracker::new(1023);
        let a = t.start(1, &mut Command::new(2, 1), None).unwrap();
        assert_eq!(a & 0x3ff, 0);
        assert_eq!(a >> 10, 1);
        let r = t.finish(a).unwrap();
        assert_eq!(r.token, 1);
        let b = t.start(2, &mut Command::new(2, 1), None).unwrap();
        assert_eq!(b & 0x3ff, 0, "the freed slot is reused first");
        assert_eq!(b >> 10, 2, "with the next generation");
        assert_ne!(a, b);
    }

    #[test]
    fn stale_duplicate_and_unknown_cids_are_rejected() {
        let mut t = Tracker::new(3);
        let a = t.start(10, &mut Command::new(1, 1), None).unwrap();
        assert_eq!(t.finish(a).unwrap().token, 10);
        assert_eq!(t.finish(a).unwrap_err(), CidError::Duplicate);
        let b = t.start(11, &mut Command::new(1, 1), None).unwrap();
        assert_eq!(t.finish(a).unwrap_err(), CidError::Stale);
        assert_eq!(t.in_flight(), 1);
        // Index 3 is beyond 3 slots (index bits = 2).
        assert_eq!(t.finish(3).unwrap_err(), CidError::Unknown);
        assert_eq!(t.finish(b).unwrap().token, 11);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn reissue_gives_a_new_cid_and_makes_the_old_one_stale() {
        let mut t = Tracker::new(7);
        let mut cmd = Command::new(2, 1);
        let a = t.start(5, &mut cmd, None).unwrap();
        let index = t.lookup(a).unwrap();
        let again = t.reissue(index);
        assert_ne!(again.cid(), a);
        assert_eq!(again.opcode(), 2);
        assert_eq!(t.slot(index).retries, 1);
        assert_eq!(t.lookup(a).unwrap_err(), CidError::Stale);
        assert_eq!(t.finish(again.cid()).unwrap().token, 5);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn timeout_state_resets_when_a_slot_is_reused_or_reissued() {
        let mut t = Tracker::new(1);
        let now = Instant::now();
        let a = t.start(1, &mut Command::new(2, 1), None).unwrap();
        let i = t.lookup(a).unwrap();
        assert_eq!(t.slot(i).seen(), None, "not yet seen by a scan");
        t.slot_mut(i).set_seen(now);
        assert_eq!(t.slot(i).seen(), Some(now));
        t.slot_mut(i).set_timed_out(Some(now));
        assert!(t.slot(i).timed_out());
        assert_eq!(t.slot(i).abort_deadline(), Some(now));
        let again = t.reissue(i);
        assert!(!t.slot(i).timed_out());
        assert_eq!(
            t.slot(i).seen(),
            None,
            "a resubmission starts a new deadline"
        );
        t.slot_mut(i).set_seen(now);
        t.slot_mut(i).set_timed_out(None);
        let r = t.finish(again.cid()).unwrap();
        assert!(r.timed_out);
        let b = t.start(2, &mut Command::new(2, 1), None).unwrap();
        let j = t.lookup(b).unwrap();
        assert_eq!(j, i);
        assert!(!t.slot(j).timed_out());
        assert_eq!(t.slot(j).seen(), None);
        assert_eq!(t.slot(j).retries, 0);
    }

    #[test]
    fn generation_wraps_within_its_bits() {
        let mut t = Tracker::new(4096);
        let mut seen = std::collections::HashSet::new();
        for i in 0..20 {
            let c = t.start(i, &mut Command::new(0, 1), None).unwrap();
            assert_eq!(c & 0xfff, 0);
            seen.insert(c >> 12);
            t.finish(c).unwrap();
        }
        assert_eq!(seen.len(), 16, "4 generation bits cycle through 16 values");
    }

    #[test]
    fn full_tracker_returns_the_buffer_and_drain_frees_all() {
        let mut t = Tracker::new(2);
        t.start(1, &mut Command::new(0, 1), None).unwrap();
        t.start(2, &mut Command::new(0, 1), None).unwrap();
        assert!(t.is_full());
        assert!(t.start(3, &mut Command::new(0, 1), None).is_err());
        let tokens: Vec<u64> = t.drain().map(|r| r.token).collect();
        assert_eq!(tokens, vec![1, 2]);
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.capacity(), 2);
    }
}
