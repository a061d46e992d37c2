//! What the controller holds and may still act on: commands fetched and
//! neither executed nor completed (a NeverComplete fault, a first fused
//! command waiting for its second), and entries the host made visible
//! with the SQ Tail Doorbell that the controller has not fetched yet
//! (NVMe Base 2.0 §3.3.1: everything between the SQ head and the tail),
//! except those an Abort already caught (§5.1: they complete without
//! running when fetched).
//!
//! A real controller may move the data of any of these until it completes
//! them, deletes their queue or is reset; the fuzzing harnesses ask for
//! this list to check that the host never hands back a buffer one of them
//! still points at. Not used by the controller itself.

#![forbid(unsafe_code)]

use std::sync::atomic::Ordering;

use super::CommandProcessor;
use crate::device_state::DeviceState;
use crate::guest_memory::DmaGuard;
use crate::queues::SQE_BYTES;
use nvme_engine::spec::command::Command;

impl CommandProcessor {
    /// Every command the controller holds, with its SQ id. Unfetched
    /// entries are read at the MMIO doorbell's tail (a shadowed queue's
    /// unfetched entries are not listed).
    pub(crate) fn held_commands(&self, sh: &DeviceState, g: &DmaGuard<'_>) -> Vec<(u16, Command)> {
        let mut out: Vec<(u16, Command)> = self.stuck.iter().map(|s| (s.sqid, s.cmd)).collect();
        out.extend(self.fused.iter().map(|f| (f.sqid, f.cmd)));
        for (qid, sq) in self.sqs.iter().enumerate() {
            let (Some(sq), Some(db)) = (sq, sh.doorbells.get(qid)) else {
                continue;
            };
            // Acquire: the entries the host wrote before ringing are visible.
            let tail = db.sq_tail.load(Ordering::Acquire);
            if tail >= sq.size {
                continue;
            }
            let mut at = sq.head;
            while at != tail {
                let entry = g
                    .translate(sq.iova + at as u64 * SQE_BYTES, SQE_BYTES as usize)
                    .and_then(|v| v.read_obj::<Command>(0));
                // An entry aborted before it was fetched completes with
                // Abort Requested when fetched, without running.
                if let Some(cmd) = entry
                    && !self.abort_on_fetch.contains(&(qid as u16, cmd.cid()))
                {
                    out.push((qid as u16, cmd));
                }
                at = (at + 1) % sq.size;
            }
        }
        out
    }
}
