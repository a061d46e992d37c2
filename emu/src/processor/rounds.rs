//! When the controller looks at its queues: a polling round (CQ head
//! doorbells, then every SQ, then delayed completions), an inline doorbell
//! write, and fetching submission queue entries in batches up to the room
//! left in the completion queue (NVMe Base 2.0 §3.3.1: a controller fetches
//! what lies between the SQ head and the tail doorbell; CQ-full
//! back-pressure keeps the entries in the SQ until the host frees room).
//! What a fetched command does is `execution.rs`'s.

#![forbid(unsafe_code)]

use super::{CommandProcessor, FETCH_BATCH};
use crate::device_state::DeviceState;
use crate::event_state::{EVENT_ERROR, INFO_INVALID_DOORBELL_VALUE};
use crate::guest_memory::DmaGuard;
use crate::queues::SQE_BYTES;
use nvme_engine::spec::command::Command;

impl CommandProcessor {
    /// One polling round: CQ head doorbells, then every SQ (up to `batch`
    /// commands each), then delayed completions. Returns the work done.
    /// `armed`: shadowed queues ask for MMIO doorbells (see `shadow_doorbells.rs`).
    pub(crate) fn poll_round(
        &mut self,
        sh: &DeviceState,
        g: &DmaGuard<'_>,
        batch: u32,
        armed: bool,
    ) -> usize {
        if !self.enabled || self.halted {
            return 0;
        }
        self.armed = armed;
        let mut work = 0;
        let mut i = 0;
        while i < self.active_cqs.len() {
            work += self.cq_doorbell(sh, g, self.active_cqs[i]);
            i += 1;
        }
        let mut i = 0;
        while i < self.active_sqs.len() && !self.halted {
            work += self.service_sq(sh, g, self.active_sqs[i], batch);
            i += 1;
        }
        work + self.tick(sh, g)
    }

    /// Whether rounds must continue without new doorbells (completions
    /// delayed by a fault rule count rounds).
    pub(crate) fn needs_rounds(&self) -> bool {
        !self.delayed.is_empty()
    }

    /// An inline doorbell write: process the queue it names.
    pub(crate) fn doorbell(&mut self, sh: &DeviceState, g: &DmaGuard<'_>, qid: u16, is_cq: bool) {
        if !self.enabled || self.halted {
            return;
        }
        // Nothing runs between doorbells: always ask for the next one.
        self.armed = true;
        if !is_cq && self.shadowed(qid) {
            // The CQ head may have moved in its shadow slot only.
            if let Some(cqid) = self.sqs[qid as usize].as_ref().map(|s| s.cqid) {
                self.cq_doorbell(sh, g, cqid);
            }
        }
        if is_cq {
            self.cq_doorbell(sh, g, qid);
            // SQs that stalled on this CQ may continue.
            let mut i = 0;
            while i < self.active_sqs.len() && !self.halted {
                let sqid = self.active_sqs[i];
                if self.sqs[sqid as usize]
                    .as_ref()
                    .is_some_and(|s| s.cqid == qid)
                {
                    self.service_sq(sh, g, sqid, u32::MAX);
                }
                i += 1;
            }
        } else {
            self.service_sq(sh, g, qid, u32::MAX);
        }
        self.tick(sh, g);
    }

    /// Apply a changed CQ head doorbell (or shadow doorbell); post held
    /// completions.
    pub(super) fn cq_doorbell(&mut self, sh: &DeviceState, g: &DmaGuard<'_>, qid: u16) -> usize {
        let mut v = self.cq_head(sh, g, qid);
        let mut work = 0;
        loop {
            work += self.apply_cq_head(sh, g, qid, v);
            if !self.shadowed(qid) {
                return work;
            }
            let size = self.cqs[qid as usize].as_ref().map_or(0, |c| c.size);
            match self.cq_event(sh, g, qid, v, size) {
                Some(again) if again != v => v = again,
                _ => return work,
            }
        }
    }

    /// Apply head value `v` to CQ `qid`.
    pub(super) fn apply_cq_head(
        &mut self,
        sh: &DeviceState,
        g: &DmaGuard<'_>,
        qid: u16,
        v: u32,
    ) -> usize {
        let Some(cq) = self.cqs[qid as usize].as_mut() else {
            return 0;
        };
        if v == cq.last_doorbell {
            return 0;
        }
        cq.last_doorbell = v;
        if !cq.set_head(v) {
            sh.counters.invalid_doorbell();
            self.raise_event(sh, g, EVENT_ERROR, INFO_INVALID_DOORBELL_VALUE, 0x01);
            return 0;
        }
        match cq.drain_held(g) {
            Ok(n) => {
                sh.counters.completions(n as u64);
                n + 1
            }
            Err(_) => {
                sh.counters.dma_fault();
                1
            }
        }
    }

    /// Fetch and execute up to `budget` commands from SQ `qid`; for a
    /// shadowed queue, then write its EventIdx (and, armed, look again).
    pub(crate) fn service_sq(
        &mut self,
        sh: &DeviceState,
        g: &DmaGuard<'_>,
        qid: u16,
        budget: u32,
    ) -> usize {
        let mut tail = self.sq_tail(sh, g, qid);
        let mut done = 0;
        loop {
            done += self.fetch_sq(sh, g, qid, tail, budget.saturating_sub(done as u32));
            if self.halted || !self.shadowed(qid) {
                return done;
            }
            let Some(sq) = self.sqs[qid as usize].as_mut() else {
                return done;
            };
            sq.shadow_seen = tail;
            let size = sq.size;
            match self.sq_event(sh, g, qid, tail, size) {
                Some(again) if again != tail && (done as u32) < budget => tail = again,
                _ => return done,
            }
        }
    }

    /// Fetch and execute up to `budget` commands from SQ `qid` whose tail
    /// is `tail`.
    pub(super) fn fetch_sq(
        &mut self,
        sh: &DeviceState,
        g: &DmaGuard<'_>,
        qid: u16,
        tail: u32,
        budget: u32,
    ) -> usize {
        match self.sqs[qid as usize].as_ref() {
            Some(sq) if tail < sq.size && tail != sq.head => {}
            _ => return 0, // idle: the common case of a polling round
        }
        let mut budget = budget as usize;
        let mut done = 0;
        let mut cmds = [Command::default(); FETCH_BATCH];
        while budget > 0 && !self.halted {
            let Some(sq) = self.sqs[qid as usize].as_mut() else {
                break;
            };
            if tail >= sq.size {
                break;
            }
            let cqid = sq.cqid;
            let room = match self.cqs[cqid as usize].as_ref() {
                Some(cq) if !cq.blocked() => cq.free() as usize,
                _ => 0,
            };
            let pending = sq.pending(tail) as usize;
            let n = pending
                .min((sq.size - sq.head) as usize)
                .min(room)
                .min(budget)
                .min(FETCH_BATCH);
            if n == 0 {
                break;
            }
            let at = sq.iova + sq.head as u64 * SQE_BYTES;
            let Some(slice) = g.translate_cached(&mut sq.cache, at, n * SQE_BYTES as usize) else {
                // The queue's memory is gone: a real controller cannot fetch
                // and reports a fatal error.
                sh.counters.dma_fault();
                sh.regs.set_fatal();
                self.halted = true;
                break;
            };
            for (i, c) in cmds[..n].iter_mut().enumerate() {
                *c = slice
                    .read_obj::<Command>(i * SQE_BYTES as usize)
                    .unwrap_or_default();
                sq.mark_seen(c.cid());
            }
            sq.head += n as u32;
            if sq.head == sq.size {
                sq.head = 0;
            }
            let sqhd = sq.head as u16;
            for c in &cmds[..n] {
                self.run(sh, g, qid, cqid, sqhd, c);
                if self.halted {
                    break;
                }
            }
            budget -= n;
            done += n;
        }
        done
    }
}
