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

#![forbid(unsafe_code)]

use crate::dma::DmaBuf;

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
}

struct Slot {
    generation: u16,
    in_flight: bool,
    token: u64,
    opcode: u8,
    buf: Option<DmaBuf>,
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

    /// Take a slot for a new command; returns its CID, or gives the buffer
    /// back when every slot is in flight.
    pub(crate) fn start(
        &mut self,
        token: u64,
        opcode: u8,
        buf: Option<DmaBuf>,
    ) -> Result<u16, Option<DmaBuf>> {
        let Some(index) = self.free.pop() else {
            return Err(buf);
        };
        let slot = &mut self.slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1) & self.generation_mask;
        slot.in_flight = true;
        slot.token = token;
        slot.opcode = opcode;
        slot.buf = buf;
        let generation = slot.generation;
        Ok(self.cid(index, generation))
    }

    /// Index of the slot a CID names, if any slot does.
    pub(crate) fn index_of(&self, cid: u16) -> Option<usize> {
        let index = (cid & ((1u16 << self.index_bits) - 1)) as usize;
        (index < self.slots.len()).then_some(index)
    }

    /// Complete the command `cid` names, releasing its slot.
    pub(crate) fn finish(&mut self, cid: u16) -> Result<Request, CidError> {
        let index = self.index_of(cid).ok_or(CidError::Unknown)?;
        let generation = cid >> self.index_bits;
        let slot = &mut self.slots[index];
        if slot.generation != generation {
            return Err(CidError::Stale);
        }
        if !slot.in_flight {
            return Err(CidError::Duplicate);
        }
        slot.in_flight = false;
        let req = Request {
            token: slot.token,
            buf: slot.buf.take(),
            opcode: slot.opcode,
        };
        // Capacity for every slot was reserved in `new`: never reallocates.
        self.free.push(index as u16);
        Ok(req)
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
        let a = t.start(1, 2, None).unwrap();
        assert_eq!(a & 0x3ff, 0);
        assert_eq!(a >> 10, 1);
        let r = t.finish(a).unwrap();
        assert_eq!(r.token, 1);
        let b = t.start(2, 2, None).unwrap();
        assert_eq!(b & 0x3ff, 0, "the freed slot is reused first");
        assert_eq!(b >> 10, 2, "with the next generation");
        assert_ne!(a, b);
    }

    #[test]
    fn stale_duplicate_and_unknown_cids_are_rejected() {
        let mut t = Tracker::new(3);
        let a = t.start(10, 1, None).unwrap();
        assert_eq!(t.finish(a).unwrap().token, 10);
        assert_eq!(t.finish(a).unwrap_err(), CidError::Duplicate);
        let b = t.start(11, 1, None).unwrap();
        assert_eq!(t.finish(a).unwrap_err(), CidError::Stale);
        assert_eq!(t.in_flight(), 1);
        // Index 3 is beyond 3 slots (index bits = 2).
        assert_eq!(t.finish(3).unwrap_err(), CidError::Unknown);
        assert_eq!(t.finish(b).unwrap().token, 11);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn generation_wraps_within_its_bits() {
        let mut t = Tracker::new(4096);
        let mut seen = std::collections::HashSet::new();
        for i in 0..20 {
            let c = t.start(i, 0, None).unwrap();
            assert_eq!(c & 0xfff, 0);
            seen.insert(c >> 12);
            t.finish(c).unwrap();
        }
        assert_eq!(seen.len(), 16, "4 generation bits cycle through 16 values");
    }

    #[test]
    fn full_tracker_returns_the_buffer_and_drain_frees_all() {
        let mut t = Tracker::new(2);
        t.start(1, 0, None).unwrap();
        t.start(2, 0, None).unwrap();
        assert!(t.is_full());
        assert!(t.start(3, 0, None).is_err());
        let tokens: Vec<u64> = t.drain().map(|r| r.token).collect();
        assert_eq!(tokens, vec![1, 2]);
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.capacity(), 2);
    }
}
