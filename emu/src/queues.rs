//! Submission and completion queue state as the device sees it (NVMe Base
//! 2.0 §3.3): ring indices, the completion phase tag, CQ head tracking from
//! the host's doorbell, and completions held back while the CQ is full.

#![forbid(unsafe_code)]

use std::collections::VecDeque;

use crate::guest_memory::{self, DmaGuard, TranslationCache};
use nvme_engine::spec::completion::Completion;

/// Bytes per submission queue entry.
pub(crate) const SQE_BYTES: u64 = 64;
/// Bytes per completion queue entry.
pub(crate) const CQE_BYTES: u64 = 16;

/// A submission queue.
pub(crate) struct Sq {
    /// IOVA of entry 0.
    pub(crate) iova: u64,
    /// Entries.
    pub(crate) size: u32,
    /// Next entry the device fetches.
    pub(crate) head: u32,
    /// Completion queue this SQ posts to.
    pub(crate) cqid: u16,
    /// One bit per CID ever fetched from this queue (for invented CIDs).
    seen: Box<[u64]>,
    /// The tail last read from the shadow doorbell (when shadowed).
    pub(crate) shadow_seen: u32,
    /// Translation of the ring's memory.
    pub(crate) cache: TranslationCache,
}

/// `(a - b) mod size` for ring indices `a, b < size`, without a division.
#[inline]
fn ring_distance(a: u32, b: u32, size: u32) -> u32 {
    if a >= b { a - b } else { a + size - b }
}

impl Sq {
    pub(crate) fn new(iova: u64, size: u32, cqid: u16) -> Self {
        Sq {
            iova,
            size,
            head: 0,
            cqid,
            seen: vec![0u64; 1024].into_boxed_slice(),
            shadow_seen: 0,
            cache: TranslationCache::default(),
        }
    }

    /// Entries between the device's head and `tail`.
    pub(crate) fn pending(&self, tail: u32) -> u32 {
        ring_distance(tail, self.head, self.size)
    }

    /// Record that `cid` was fetched.
    #[inline]
    pub(crate) fn mark_seen(&mut self, cid: u16) {
        self.seen[cid as usize >> 6] |= 1 << (cid & 63);
    }

    /// A CID for an invented completion: one never fetched from this queue
    /// that the host cannot submit later either, or the entry, if the host
    /// reaps it late, completes a command the device has not run. A CID
    /// merely not fetched yet is often the very next one a host issues
    /// (this driver puts a slot index in the low bits and a generation
    /// above). So prefer CIDs whose low 12 bits are all ones: a host that
    /// numbers at most 4095 outstanding commands by slot index in those
    /// bits never uses one. Otherwise any CID not fetched, searching upward
    /// from `from`.
    pub(crate) fn unseen_cid(&self, from: u16) -> u16 {
        let unseen = |c: u16| self.seen[c as usize >> 6] & (1 << (c & 63)) == 0;
        (1..=16u16)
            .map(|d| (from >> 12).wrapping_add(d) << 12 | 0x0FFF)
            .chain((1..=u16::MAX as u32 + 1).map(|d| from.wrapping_add(d as u16)))
            .find(|&c| unseen(c))
            .unwrap_or(from.wrapping_add(1))
    }
}

/// A completion queue.
pub(crate) struct Cq {
    /// IOVA of entry 0.
    pub(crate) iova: u64,
    /// Entries.
    pub(crate) size: u32,
    /// Next slot the device writes.
    pub(crate) tail: u32,
    /// Head as last reported by the host.
    pub(crate) head: u32,
    /// Last value seen in the head doorbell (valid or not).
    pub(crate) last_doorbell: u32,
    /// Phase tag of the current pass; starts at 1.
    pub(crate) phase: bool,
    /// Submission queues posting here.
    pub(crate) sqs: u32,
    /// Completions waiting for a free slot, in order.
    pub(crate) held: VecDeque<Completion>,
    /// Translation of the ring's memory.
    cache: TranslationCache,
}

/// Why a completion could not be written.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CqDmaFault;

impl Cq {
    pub(crate) fn new(iova: u64, size: u32) -> Self {
        Cq {
            iova,
            size,
            tail: 0,
            head: 0,
            last_doorbell: 0,
            phase: true,
            sqs: 0,
            held: VecDeque::with_capacity(size as usize),
            cache: TranslationCache::default(),
        }
    }

    /// Entries posted and not yet released by the host.
    pub(crate) fn used(&self) -> u32 {
        ring_distance(self.tail, self.head, self.size)
    }

    /// Slots the device may still fill (one always stays empty).
    pub(crate) fn free(&self) -> u32 {
        self.size - 1 - self.used()
    }

    /// Whether new completions must wait.
    pub(crate) fn blocked(&self) -> bool {
        !self.held.is_empty() || self.free() == 0
    }

    /// Apply a head doorbell value. False when it is out of range or frees
    /// entries that were never posted (an invalid doorbell write).
    pub(crate) fn set_head(&mut self, head: u32) -> bool {
        if head >= self.size {
            return false;
        }
        let advance = ring_distance(head, self.head, self.size);
        if advance > self.used() {
            return false;
        }
        self.head = head;
        true
    }

    /// Write `c` into the next slot with the current phase, or hold it when
    /// the queue is full.
    pub(crate) fn complete(&mut self, g: &DmaGuard<'_>, c: Completion) -> Result<(), CqDmaFault> {
        if self.blocked() {
            self.held.push_back(c);
            return Ok(());
        }
        self.post(g, c)
    }

    /// Post held completions while there is room. Returns how many.
    pub(crate) fn drain_held(&mut self, g: &DmaGuard<'_>) -> Result<usize, CqDmaFault> {
        let mut n = 0;
        while self.free() > 0 {
            let Some(c) = self.held.pop_front() else {
                break;
            };
            self.post(g, c)?;
            n += 1;
        }
        Ok(n)
    }

    fn post(&mut self, g: &DmaGuard<'_>, mut c: Completion) -> Result<(), CqDmaFault> {
        c.status_phase = (c.status_phase & !1) | self.phase as u16;
        let at = self.iova + self.tail as u64 * CQE_BYTES;
        let ok = g
            .translate_cached(&mut self.cache, at, CQE_BYTES as usize)
            .is_some_and(|s| guest_memory::publish_completion(&s, 0, &c));
        // The slot is consumed even on a fault, as on hardware: the host's
        // view of the ring stays consistent.
        self.tail += 1;
        if self.tail == self.size {
            self.tail = 0;
            self.phase = !self.phase;
        }
        if ok { Ok(()) } else { Err(CqDmaFault) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_memory::Iommu;
    use nvme_engine::dma::HostMemory;
    use nvme_engine::spec::status::Status;

    #[test]
    fn phase_flips_on_wrap_and_full_queue_holds_completions() {
        let iommu = Iommu::new("t".into());
        let region = iommu.map(HostMemory::plain(4096).unwrap()).unwrap();
        let mut cq = Cq::new(region.iova(0).unwrap(), 4);
        let g = iommu.guard();
        let c = |cid| Completion::new(0, 0, 1, cid, Status::SUCCESS, false);
        for cid in 0..5 {
            cq.complete(&g, c(cid)).unwrap();
        }
        assert_eq!(cq.used(), 3, "one slot stays empty");
        assert_eq!(cq.held.len(), 2);
        assert!(!cq.set_head(3 + 1), "beyond the ring");
        assert!(cq.set_head(2));
        assert_eq!(cq.drain_held(&g).unwrap(), 2);
        assert_eq!(cq.tail, 1);
        assert!(!cq.phase, "wrapped once");
        let s = g.translate(region.iova(0).unwrap(), 64).unwrap();
        let mut raw = [0u8; 4];
        s.read(12, &mut raw);
        let dw3 = u32::from_le_bytes(raw);
        assert_eq!(dw3 & 0xffff, 4, "cid 4 landed in slot 0 on the second pass");
        assert_eq!(dw3 >> 16 & 1, 0, "with phase 0");
        assert!(!cq.set_head(0) || cq.used() <= 3);
    }

    #[test]
    fn head_cannot_pass_the_tail() {
        let mut cq = Cq::new(0, 8);
        cq.tail = 3;
        assert!(!cq.set_head(4));
        assert!(cq.set_head(3));
        assert_eq!(cq.free(), 7);
    }

    #[test]
    fn unseen_cid_skips_fetched_ones() {
        let mut sq = Sq::new(0, 4, 1);
        sq.mark_seen(0x1FFF);
        assert_eq!(
            sq.unseen_cid(4),
            0x2FFF,
            "low 12 bits all ones, not fetched"
        );
        for hi in 0..16u16 {
            sq.mark_seen(hi << 12 | 0x0FFF);
        }
        sq.mark_seen(5);
        sq.mark_seen(6);
        assert_eq!(sq.unseen_cid(4), 7, "then any CID not fetched");
        assert_eq!(sq.pending(2), 2);
    }
}
