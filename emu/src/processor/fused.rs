//! Fused operations (NVMe Base 2.0 §4.2, NVM Command Set 1.0 §3.3.1):
//! Compare and Write as one atomic operation. The first command (FUSE 01b,
//! a Compare) waits for the second (FUSE 10b, a Write) from the same
//! submission queue; the pair then runs without any other command on the
//! namespace in between (the processor runs one command at a time). A failed
//! compare completes the Write with Command Aborted due to Failed Fused
//! Command; a first command followed by anything else, or a second command
//! with no first, completes with Command Aborted due to Missing Fused
//! Command.

#![forbid(unsafe_code)]

use super::{CommandProcessor, FusedFirst};
use crate::command_outcome::{Done, generic_err};
use crate::device_state::DeviceState;
use crate::guest_memory::DmaGuard;
use nvme_engine::spec::status::generic;
use nvme_engine::spec::{
    command::{Command, NvmOpcode},
    status::{Status, StatusCodeType},
};

/// Command Aborted due to Failed Fused Command (generic 09h).
pub(crate) const ABORTED_FAILED_FUSED: u8 = 0x09;
/// Command Aborted due to Missing Fused Command (generic 0Ah).
pub(crate) const ABORTED_MISSING_FUSED: u8 = 0x0A;

const FUSE_FIRST: u8 = 0b01;
const FUSE_SECOND: u8 = 0b10;

fn aborted(sc: u8) -> Done {
    Done::err(Status::new(StatusCodeType::GENERIC, sc))
}

/// The command without its FUSE bits, to run as a plain one.
fn unfused(cmd: &Command) -> Command {
    let mut c = *cmd;
    c.cdw0 &= !(3 << 8);
    c
}

impl CommandProcessor {
    /// Handle fusing for an I/O command fetched from `sqid`. Returns whether
    /// the command was dealt with (completed or held); false: run it as usual.
    #[cold]
    #[inline(never)]
    pub(crate) fn fused_intercept(
        &mut self,
        sh: &DeviceState,
        g: &DmaGuard<'_>,
        sqid: u16,
        cqid: u16,
        sqhd: u16,
        cmd: &Command,
    ) -> bool {
        if let Some(i) = self.fused.iter().position(|f| f.sqid == sqid) {
            let first = self.fused.swap_remove(i);
            if cmd.fuse() == FUSE_SECOND {
                self.run_pair(sh, g, first, sqhd, cmd);
                return true;
            }
            let missing = aborted(ABORTED_MISSING_FUSED);
            self.finish(
                sh, g, sqid, first.cqid, first.sqhd, &first.cmd, missing, None,
            );
        }
        match cmd.fuse() {
            0 => false,
            FUSE_FIRST if NvmOpcode(cmd.opcode()) == NvmOpcode::COMPARE => {
                self.fused.push(FusedFirst {
                    sqid,
                    cqid,
                    sqhd,
                    cmd: *cmd,
                });
                true
            }
            FUSE_SECOND => {
                let missing = aborted(ABORTED_MISSING_FUSED);
                self.finish(sh, g, sqid, cqid, sqhd, cmd, missing, None);
                true
            }
            // Only Compare and Write fuse; FUSE 11b is reserved.
            _ => {
                let bad = Done::err(generic_err(generic::INVALID_FIELD));
                self.finish(sh, g, sqid, cqid, sqhd, cmd, bad, None);
                true
            }
        }
    }

    /// Compare, then Write only if the compare succeeded.
    fn run_pair(
        &mut self,
        sh: &DeviceState,
        g: &DmaGuard<'_>,
        first: FusedFirst,
        sqhd: u16,
        second: &Command,
    ) {
        let (c, w) = (&first.cmd, second);
        let matched = NvmOpcode(w.opcode()) == NvmOpcode::WRITE
            && w.nsid == c.nsid
            && w.slba() == c.slba()
            && w.nlb_z() == c.nlb_z();
        let (cmp, write) = if !matched {
            (
                Done::err(generic_err(generic::INVALID_FIELD)),
                aborted(ABORTED_FAILED_FUSED),
            )
        } else {
            let cmp = self.io(sh, g, &unfused(c));
            if cmp.status.is_success() {
                (cmp, self.io(sh, g, &unfused(w)))
            } else {
                (cmp, aborted(ABORTED_FAILED_FUSED))
            }
        };
        self.finish(sh, g, first.sqid, first.cqid, first.sqhd, c, cmp, None);
        self.finish(sh, g, first.sqid, first.cqid, sqhd, w, write, None);
    }
}
