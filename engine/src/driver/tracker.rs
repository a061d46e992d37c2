//! Command trackers: a slab of in-flight commands indexed by command
//! identifier (CID, NVMe Base 2.0 §4.2 CDW0.CID).
//!
//! The CID's low bits are the slot index (log2 of the queue capacity, rounded
//! up); the high bits carry a rolling generation that advances every time the
//! slot is reused. A completion whose index is out of range ("unknown"), whose
//! generation is not the slot's current one ("stale"), or whose slot is not in
//! flight ("duplicate") is reported as such and never completes anything.
//! Slots are allocated from a free-list stack reserved up front: no per-I/O
//! allocation.
//!
//! Each slot also keeps what recovery needs: the submission queue entry as
//! last sent (for a retry or a resubmission after a controller reset), how
//! often it was resubmitted, when a timeout scan first saw it in flight, and
//! whether it timed out (its buffer stays here until the device is proven
//! done with it).

#![forbid(unsafe_code)]

use std::time::Instant;

use crate::dma::DmaBuf;
use crate::spec::Command;

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
}

/// One command slot.
pub(crate) struct Slot {
    generation: u16,
    in_flight: bool,
    token: u64,
    opcode: u8,
    buf: Option<DmaBuf>,
    /// The entry as last submitted (CID included).
    pub(crate) cmd: Command,
    /// Resubmissions so far (retries and resubmissions after a reset).
    pub(crate) retries: u8,
    /// When a timeout scan first saw this command in flight.
    pub(crate) seen: Option<Instant>,
    /// The deadline passed; an Abort was (or is about to be) sent.
    pub(crate) timed_out: bool,
    /// After a timeout: when to stop waiting for the aborted command and
    /// reset the controller instead.
    pub(crate) abort_deadline: Option<Instant>,
}

impl Slot {
    /// Whether a command is in this slot.
    pub(crate) fn in_flight(&self) -> bool {
        self.in_flight
    }
}

/// The slab of command slots of one queue.
pub(crate) struct Tracker {
    slots: Box<[Slot]>,
    free: Vec<u16>,
    index_bits: u32,
    generation_mask: u16,
}

impl Tracker {
    /// A tracker for `capacity` concurrent commands (1..=4096).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, 4096);
        let index_bits = capacity.next_power_of_two().trailing_zeros().max(1);
        let generation_mask = ((1u32 << (16 - index_bits)) - 1) as u16;
        let slots = (0..capacity)
            .map(|_| Slot {
                generation: 0,
                in_flight: false,
                token: 0,
                opcode: 0,
                buf: None,
                cmd: Command::default(),
                retries: 0,
                seen: None,
                timed_out: false,
                abort_deadline: None,
            })
            .collect();
        // Pop order hands out slot 0 first.
        let free = (0..capacity as u16).rev().collect();
        Tracker {
            slots,
            free,
            index_bits,
            generation_mask,
        }
    }

    /// Maximum commands in flight.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }
    /// Commands in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }
    /// Whether every slot is in flight.
    pub(crate) fn is_full(&self) -> bool {
        self.free.is_empty()
    }

    fn cid(&self, index: u16, generation: u16) -> u16 {
        (generation << self.index_bits) | index
    }

    /// Index of the slot the next `start` will use.
    pub(crate) fn next_free(&self) -> Option<usize> {
        self.free.last().map(|&i| i as usize)
    }

    /// Take a slot for `cmd`: gives it a CID (written into `cmd`) and keeps
    /// a copy. Gives the buffer back when every slot is in flight.
    pub(crate) fn start(
        &mut self,
        token: u64,
        cmd: &mut Command,
        buf: Option<DmaBuf>,
    ) -> Result<u16, Option<DmaBuf>> {
        let Some(index) = self.free.pop() else {
            return Err(buf);
        };
        let slot = &mut self.slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1) & self.generation_mask;
        slot.in_flight = true;
        slot.token = token;
        slot.opcode = cmd.opcode();
        slot.buf = buf;
        slot.retries = 0;
        slot.seen = None;
        slot.timed_out = false;
        slot.abort_deadline = None;
        let generation = slot.generation;
        let cid = self.cid(index, generation);
        cmd.set_cid(cid);
        self.slots[index as usize].cmd = *cmd;
        Ok(cid)
    }

    /// Index of the slot a CID names, if any slot does.
    pub(crate) fn index_of(&self, cid: u16) -> Option<usize> {
        let index = (cid & ((1u16 << self.index_bits) - 1)) as usize;
        (index < self.slots.len()).then_some(index)
    }

    /// The in-flight slot `cid` names, checking generation and state.
    pub(crate) fn lookup(&self, cid: u16) -> Result<usize, CidError> {
        let index = self.index_of(cid).ok_or(CidError::Unknown)?;
        let slot = &self.slots[index];
        if slot.generation != cid >> self.index_bits {
            return Err(CidError::Stale);
        }
        if !slot.in_flight {
            return Err(CidError::Duplicate);
        }
        Ok(index)
    }

    /// Slot `index` (any state).
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
        let mask = self.generation_mask;
        let index_bits = self.index_bits;
        let slot = &mut self.slots[index];
        slot.generation = slot.generation.wrapping_add(1) & mask;
        slot.retries = slot.retries.saturating_add(1);
        slot.seen = None;
        slot.timed_out = false;
        slot.abort_deadline = None;
        slot.cmd
            .set_cid((slot.generation << index_bits) | index as u16);
        slot.cmd
    }

    /// Release the in-flight slot `index`.
    pub(crate) fn complete(&mut self, index: usize) -> Request {
        let slot = &mut self.slots[index];
        slot.in_flight = false;
        let req = Request {
            token: slot.token,
            buf: slot.buf.take(),
            opcode: slot.opcode,
            timed_out: slot.timed_out,
        };
        // Capacity for every slot was reserved in `new`: never reallocates.
        self.free.push(index as u16);
        req
    }

    /// Complete the command `cid` names, releasing its slot.
    pub(crate) fn finish(&mut self, cid: u16) -> Result<Request, CidError> {
        let index = self.lookup(cid)?;
        Ok(self.complete(index))
    }

    /// Release every in-flight slot (queue teardown), yielding the buffers.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Request> + '_ {
        let free = &mut self.free;
        self.slots
            .iter_mut()
            .enumerate()
            .filter(|(_, s)| s.in_flight)
            .map(move |(i, s)| {
                s.in_flight = false;
                free.push(i as u16);
                Request {
                    token: s.token,
                    buf: s.buf.take(),
                    opcode: s.opcode,
                    timed_out: s.timed_out,
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
