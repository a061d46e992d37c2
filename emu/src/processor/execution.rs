//! What the controller does with a fetched command: an Abort caught before
//! it ran, fused commands, fault actions (NeverComplete, fatal status,
//! vanish, corrupted protection information), the admin or I/O command
//! set; then the completion — logged when it failed (Error Information log,
//! NVMe Base 2.0 §5.16.1.2), posted, duplicated, delayed or given a bogus
//! SQHD as a fault rule says — and the completion of everything the
//! controller still holds for a queue that goes away (Abort, SQ deletion).

#![forbid(unsafe_code)]

use super::{CommandProcessor, Delayed, Stuck};
use crate::command_outcome::Done;
use crate::device_state::DeviceState;
use crate::faults::FaultAction;
use crate::guest_memory::DmaGuard;
use nvme_engine::spec::status::generic;
use nvme_engine::spec::{
    command::Command,
    completion::Completion,
    status::{Status, StatusCodeType},
};

impl CommandProcessor {
    /// Execute one fetched command and post its completion.
    pub(super) fn run(
        &mut self,
        sh: &DeviceState,
        g: &DmaGuard<'_>,
        sqid: u16,
        cqid: u16,
        sqhd: u16,
        cmd: &Command,
    ) {
        let admin = sqid == 0;
        sh.counters.command(admin, cmd.opcode());
        let cid = cmd.cid();
        if let Some(i) = self
            .abort_on_fetch
            .iter()
            .position(|&(s, c)| s == sqid && c == cid)
        {
            self.abort_on_fetch.swap_remove(i);
            let st = Status::new(StatusCodeType::GENERIC, generic::ABORT_REQUESTED);
            self.finish(sh, g, sqid, cqid, sqhd, cmd, Done::err(st), None);
            return;
        }
        if !admin
            && (cmd.fuse() != 0 || !self.fused.is_empty())
            && self.fused_intercept(sh, g, sqid, cqid, sqhd, cmd)
        {
            return;
        }
        let action = sh.faults.check(admin, sqid, cmd);
        let done = match action {
            Some(FaultAction::CompleteWithStatus(st)) => Some(Done::err(st)),
            Some(FaultAction::NeverComplete) => {
                self.stuck.push(Stuck {
                    sqid,
                    cid,
                    cmd: *cmd,
                });
                None
            }
            Some(FaultAction::FatalStatus) => {
                sh.regs.set_fatal();
                self.halted = true;
                None
            }
            Some(FaultAction::Vanish) => {
                sh.vanish();
                self.halted = true;
                None
            }
            _ if admin => self.admin(sh, g, cmd),
            Some(FaultAction::CorruptGuard) => Some(self.io_corrupting(sh, g, cmd, false)),
            Some(FaultAction::CorruptReferenceTag) => Some(self.io_corrupting(sh, g, cmd, true)),
            _ => Some(self.io(sh, g, cmd)),
        };
        if let Some(done) = done {
            self.finish(sh, g, sqid, cqid, sqhd, cmd, done, action);
        }
    }

    /// Log a failure, build the completion and post it as `action` says.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(crate) fn finish(
        &mut self,
        sh: &DeviceState,
        g: &DmaGuard<'_>,
        sqid: u16,
        cqid: u16,
        sqhd: u16,
        cmd: &Command,
        done: Done,
        action: Option<FaultAction>,
    ) {
        if !done.status.is_success() {
            self.log_error(sqid, cmd, done.status);
        }
        let mut c = Completion::new(done.dw0, sqhd, sqid, cmd.cid(), done.status, false);
        match action {
            Some(FaultAction::DuplicateCompletion) => {
                self.post(sh, g, cqid, c);
                self.post(sh, g, cqid, c);
            }
            Some(FaultAction::CompleteWithUnknownCid) => {
                self.post(sh, g, cqid, c);
                if let Some(sq) = self.sqs[sqid as usize].as_ref() {
                    c.cid = sq.unseen_cid(c.cid);
                }
                self.post(sh, g, cqid, c);
            }
            Some(FaultAction::StaleCompletion) => {
                self.post(sh, g, cqid, c);
                self.delayed.push(Delayed { cqid, rounds: 1, c });
            }
            Some(FaultAction::DelayPolls(n)) if n > 0 => {
                self.delayed.push(Delayed { cqid, rounds: n, c });
            }
            Some(FaultAction::BogusSqhd) => {
                let size = self.sqs[sqid as usize].as_ref().map_or(0, |s| s.size);
                c.sqhd = if size > u16::MAX as u32 {
                    u16::MAX
                } else {
                    size as u16
                };
                self.post(sh, g, cqid, c);
            }
            _ => self.post(sh, g, cqid, c),
        }
    }

    /// Post (or hold) a completion on CQ `cqid`.
    pub(crate) fn post(&mut self, sh: &DeviceState, g: &DmaGuard<'_>, cqid: u16, c: Completion) {
        let Some(cq) = self.cqs.get_mut(cqid as usize).and_then(|q| q.as_mut()) else {
            return;
        };
        match cq.complete(g, c) {
            Ok(()) => sh.counters.completions(1),
            Err(_) => sh.counters.dma_fault(),
        }
    }

    /// Count down delayed completions and post those that are due.
    pub(super) fn tick(&mut self, sh: &DeviceState, g: &DmaGuard<'_>) -> usize {
        if self.delayed.is_empty() {
            return 0;
        }
        let mut posted = 0;
        let mut i = 0;
        while i < self.delayed.len() {
            let d = &mut self.delayed[i];
            d.rounds = d.rounds.saturating_sub(1);
            if d.rounds == 0 {
                let mut d = self.delayed.remove(i);
                // SQHD is the head when the entry is posted, not when the
                // command ran (a bogus-SQHD fault keeps its bogus value).
                if let Some(sq) = self.sqs.get(d.c.sqid as usize).and_then(|q| q.as_ref())
                    && (d.c.sqhd as u32) < sq.size
                {
                    d.c.sqhd = sq.head as u16;
                }
                self.post(sh, g, d.cqid, d.c);
                posted += 1;
            } else {
                i += 1;
            }
        }
        posted
    }

    /// Complete every command of SQ `sqid` the device still holds with
    /// `status` (Abort, SQ deletion).
    pub(crate) fn flush_held_for_sq(
        &mut self,
        sh: &DeviceState,
        g: &DmaGuard<'_>,
        sqid: u16,
        status: Status,
    ) {
        let Some(sq) = self.sqs[sqid as usize].as_ref() else {
            return;
        };
        let (cqid, sqhd) = (sq.cqid, sq.head as u16);
        let mut i = 0;
        while i < self.fused.len() {
            if self.fused[i].sqid == sqid {
                let f = self.fused.swap_remove(i);
                let c = Completion::new(0, sqhd, sqid, f.cmd.cid(), status, false);
                self.post(sh, g, cqid, c);
            } else {
                i += 1;
            }
        }
        let mut i = 0;
        while i < self.stuck.len() {
            if self.stuck[i].sqid == sqid {
                let s = self.stuck.swap_remove(i);
                let c = Completion::new(0, sqhd, sqid, s.cid, status, false);
                self.post(sh, g, cqid, c);
            } else {
                i += 1;
            }
        }
        let mut i = 0;
        while i < self.delayed.len() {
            if self.delayed[i].c.sqid == sqid {
                let mut d = self.delayed.remove(i);
                d.c.status_phase = status.field() << 1;
                self.post(sh, g, d.cqid, d.c);
            } else {
                i += 1;
            }
        }
    }
}
