//! The reactor's table of requests between leaving their ring (or a local
//! poller) and being answered: one slot per request, reserved up front
//! (`local_capacity` at start, a producer's credit when it attaches), so
//! taking and releasing a slot never allocates.
//!
//! A slot is the only record the reactor keeps of a request. The driver's
//! token for the command is the slot's [`Tag`]: its index in the low 32
//! bits and, in the high 32, the slot's generation. The generation
//! advances when the slot is taken (to an odd value) and again when it is
//! released (to an even one), so it is odd exactly while a request holds
//! the slot, and a tag matches only the use of the slot it was made for:
//! a token from an earlier use, or one answered already (never expected:
//! the driver already rejects stale and duplicate completions by CID),
//! answers nothing and cannot free a slot twice.

#![forbid(unsafe_code)]

use crate::request::Request;

/// The link index of a request from a local poller (not from a ring).
pub(crate) const LOCAL_LINK: u32 = u32::MAX;

/// The driver token of a request: slot index (low 32 bits) and the slot's
/// generation (high 32 bits).
pub(crate) type Tag = u64;

/// One request between being taken and being answered.
#[derive(Default)]
struct Slot {
    /// The application's token.
    token: u64,
    /// Index of the producer link, or [`LOCAL_LINK`].
    link: u32,
    /// Odd while a request holds the slot (the high half of its tag),
    /// even while it is free.
    generation: u32,
    /// Index of the controller whose queue the request is for.
    controller: u32,
    /// The request itself while it waits in a backlog for queue room.
    parked: Option<Request>,
}

/// Who asked for a request and what it is called: what answering it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    /// Index of the producer link, or [`LOCAL_LINK`].
    pub(crate) link: u32,
    /// The application's token.
    pub(crate) token: u64,
}

/// A request the slot table still held after its queue pair was deleted.
pub(crate) struct Unanswered {
    pub(crate) owner: Owner,
    pub(crate) controller: usize,
    /// The request, when it was still waiting for queue room (never
    /// reached the device).
    pub(crate) parked: Option<Request>,
}

/// The slot table and its free list.
#[derive(Default)]
pub(crate) struct Slots {
    slots: Vec<Slot>,
    /// Indices of free slots (a stack: the most recently freed, still in
    /// cache, is taken first).
    free: Vec<u32>,
}

impl Slots {
    /// Reserve `more` slots.
    pub(crate) fn grow(&mut self, more: usize) {
        let base = self.slots.len();
        self.slots.reserve(more);
        self.slots.extend((0..more).map(|_| Slot::default()));
        self.free.reserve(more);
        self.free
            .extend((base..base + more).rev().map(|i| i as u32));
    }

    /// Free slots.
    #[inline]
    pub(crate) fn available(&self) -> usize {
        self.free.len()
    }

    /// Take a slot for a request of `owner` to controller `controller`.
    #[inline(always)]
    pub(crate) fn take(&mut self, owner: Owner, controller: usize) -> Option<Tag> {
        let index = self.free.pop()?;
        let s = &mut self.slots[index as usize];
        s.generation = s.generation.wrapping_add(1);
        s.token = owner.token;
        s.link = owner.link;
        s.controller = controller as u32;
        Some(((s.generation as u64) << 32) | index as u64)
    }

    /// Give back a slot taken by [`Slots::take`] whose request was not
    /// submitted after all (answered at once, or handed back).
    #[inline]
    pub(crate) fn put_back(&mut self, tag: Tag) {
        let _ = self.finish(tag);
    }

    /// The request of `tag` is answered: release its slot and return its
    /// owner. `None` (nothing released) for a tag that names no taken slot
    /// of this generation.
    #[inline(always)]
    pub(crate) fn finish(&mut self, tag: Tag) -> Option<Owner> {
        let index = tag as u32;
        let s = self.slots.get_mut(index as usize)?;
        // Tags are issued with odd generations only; a free slot's is even.
        let generation = (tag >> 32) as u32;
        if s.generation != generation || generation.is_multiple_of(2) {
            return None;
        }
        s.generation = s.generation.wrapping_add(1);
        self.free.push(index);
        Some(Owner {
            link: s.link,
            token: s.token,
        })
    }

    /// Keep `request` in its slot while it waits for queue room.
    pub(crate) fn park(&mut self, tag: Tag, request: Request) {
        if let Some(s) = self.slots.get_mut(tag as u32 as usize) {
            s.parked = Some(request);
        }
    }

    /// The parked request of `tag`, taken out of its slot (`None` when it
    /// has none).
    pub(crate) fn unpark(&mut self, tag: Tag) -> Option<Request> {
        self.slots.get_mut(tag as u32 as usize)?.parked.take()
    }

    /// Release every slot still taken and return what each held.
    pub(crate) fn drain_taken(&mut self) -> impl Iterator<Item = Unanswered> + '_ {
        let free = &mut self.free;
        self.slots
            .iter_mut()
            .enumerate()
            .filter(|(_, s)| !s.generation.is_multiple_of(2))
            .map(move |(i, s)| {
                s.generation = s.generation.wrapping_add(1);
                free.push(i as u32);
                Unanswered {
                    owner: Owner {
                        link: s.link,
                        token: s.token,
                    },
                    controller: s.controller as usize,
                    parked: s.parked.take(),
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Owner = Owner { link: 3, token: 77 };

    #[test]
    fn a_tag_is_answered_once_and_a_reused_slot_rejects_the_old_tag() {
        let mut slots = Slots::default();
        slots.grow(1);
        let first = slots.take(A, 0).expect("one slot");
        assert_eq!(slots.take(A, 0), None, "only one slot");
        assert_eq!(slots.finish(first), Some(A));
        assert_eq!(slots.finish(first), None, "answered twice");
        let b = Owner { link: 4, token: 5 };
        let second = slots.take(b, 0).expect("slot freed");
        assert_eq!(second as u32, first as u32, "same slot");
        assert_ne!(second, first, "new generation");
        assert_eq!(slots.finish(first), None, "stale tag freed the new request");
        assert_eq!(slots.finish(second), Some(b));
        assert_eq!(slots.available(), 1);
    }

    #[test]
    fn a_tag_naming_no_slot_answers_nothing() {
        let mut slots = Slots::default();
        slots.grow(2);
        assert_eq!(slots.finish(1 << 32 | 9), None);
        // Slot 0 is free: a tag of generation 0 (even, never issued) or 1
        // (not issued yet) matches nothing.
        assert_eq!(slots.finish(0), None);
        assert_eq!(slots.finish(1 << 32), None);
        assert_eq!(slots.available(), 2);
    }

    #[test]
    fn draining_returns_every_taken_slot_with_its_parked_request() {
        let mut slots = Slots::default();
        slots.grow(3);
        let a = slots.take(A, 1).expect("slot");
        let b = slots.take(Owner { link: 1, token: 2 }, 0).expect("slot");
        slots.park(b, Request::flush(0, 1, 2));
        let _ = a;
        let mut left: Vec<_> = slots
            .drain_taken()
            .map(|u| (u.owner.token, u.controller, u.parked.map(|r| r.token)))
            .collect();
        left.sort();
        assert_eq!(left, vec![(2, 0, Some(2)), (77, 1, None)]);
        assert_eq!(slots.available(), 3);
        assert_eq!(slots.drain_taken().count(), 0);
    }
}
