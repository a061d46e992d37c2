//! The NVM command set handler (NVM Command Set 1.0 §3): Read, Write (with
//! FUA), Flush, Write Zeroes (with DEAC), Dataset Management (deallocate),
//! and their error statuses: Invalid Namespace or Format, LBA Out of Range,
//! transfers beyond MDTS (Invalid Field), writes to a write-protected
//! namespace (Attempted Write to Read Only Range).

#![forbid(unsafe_code)]

use zerocopy::FromBytes;

use super::CommandProcessor;
use crate::command_outcome::{Done, generic_err, specific_err};
use crate::device_state::DeviceState;
use crate::guest_memory::DmaGuard;
use crate::prp_walker;
use nvme_engine::spec::command::{CDW12_FUA, DSM_ATTR_DEALLOCATE, DsmRange};
use nvme_engine::spec::status::{command_specific, generic, media};
use nvme_engine::spec::{
    command::{Command, NvmOpcode},
    status::{Status, StatusCodeType},
};

fn media_err(sc: u8) -> Done {
    Done::err(Status::new(StatusCodeType::MEDIA, sc))
}

fn lba_out_of_range() -> Done {
    Done::err(generic_err(generic::LBA_OUT_OF_RANGE))
}

fn read_only() -> Done {
    Done::err(specific_err(command_specific::WRITE_TO_READ_ONLY_RANGE))
}

impl CommandProcessor {
    /// Execute an I/O command.
    pub(crate) fn io(&mut self, sh: &DeviceState, g: &DmaGuard<'_>, cmd: &Command) -> Done {
        let op = NvmOpcode(cmd.opcode());
        if !matches!(
            op,
            NvmOpcode::READ
                | NvmOpcode::WRITE
                | NvmOpcode::FLUSH
                | NvmOpcode::WRITE_ZEROES
                | NvmOpcode::DATASET_MANAGEMENT
        ) {
            return Done::err(generic_err(generic::INVALID_OPCODE));
        }
        if cmd.psdt() != 0 || cmd.fuse() != 0 {
            return Done::err(generic_err(generic::INVALID_FIELD));
        }
        if op == NvmOpcode::FLUSH && cmd.nsid == u32::MAX && self.limits.vwc {
            for ns in &mut self.nss {
                if ns.backend.flush().is_err() {
                    return media_err(media::WRITE_FAULT);
                }
            }
            return Done::ok(0);
        }
        let idx = cmd.nsid.wrapping_sub(1) as usize;
        if idx >= self.nss.len() {
            return Done::err(generic_err(generic::INVALID_NAMESPACE));
        }
        match op {
            NvmOpcode::READ => self.read(sh, g, idx, cmd),
            NvmOpcode::WRITE => self.write(sh, g, idx, cmd),
            NvmOpcode::FLUSH => match self.nss[idx].backend.flush() {
                Ok(()) => Done::ok(0),
                Err(_) => media_err(media::WRITE_FAULT),
            },
            NvmOpcode::WRITE_ZEROES => self.write_zeroes(idx, cmd),
            _ => self.dataset_management(sh, g, idx, cmd),
        }
    }

    /// Byte offset and length of the command's LBA range, or the status that rejects it.
    fn extent(&self, idx: usize, cmd: &Command, limit: bool) -> Result<(u64, usize), Done> {
        let ns = &self.nss[idx];
        let nlb = cmd.nlb_z() as u64 + 1;
        let slba = cmd.slba();
        if slba.checked_add(nlb).is_none_or(|end| end > ns.blocks) {
            return Err(lba_out_of_range());
        }
        let len = (nlb << ns.lba_shift) as usize;
        if limit && len > self.limits.max_transfer {
            return Err(Done::err(generic_err(generic::INVALID_FIELD)));
        }
        Ok((slba << ns.lba_shift, len))
    }

    fn read(&mut self, sh: &DeviceState, g: &DmaGuard<'_>, idx: usize, cmd: &Command) -> Done {
        let (off, len) = match self.extent(idx, cmd, true) {
            Ok(x) => x,
            Err(d) => return d,
        };
        self.smart.read_cmds += 1;
        self.smart.read_512 += len as u64 / 512;
        let backend = &mut self.nss[idx].backend;
        if backend.is_null() {
            return null_transfer(cmd);
        }
        let data = match backend.load(off, len) {
            Ok(d) => d,
            Err(_) => return media_err(media::UNRECOVERED_READ_ERROR),
        };
        match prp_walker::write_to_host(g, &mut self.data_cache, cmd.prp1, cmd.prp2, data) {
            Ok(()) => Done::ok(0),
            Err(e) => Done::err(CommandProcessor::xfer_status(sh, e)),
        }
    }

    fn write(&mut self, sh: &DeviceState, g: &DmaGuard<'_>, idx: usize, cmd: &Command) -> Done {
        let (off, len) = match self.extent(idx, cmd, true) {
            Ok(x) => x,
            Err(d) => return d,
        };
        if self.nss[idx].read_only {
            return read_only();
        }
        self.smart.write_cmds += 1;
        self.smart.write_512 += len as u64 / 512;
        let backend = &mut self.nss[idx].backend;
        if backend.is_null() {
            return null_transfer(cmd);
        }
        let buf = match backend.stage(off, len) {
            Ok(b) => b,
            Err(_) => return media_err(media::WRITE_FAULT),
        };
        if let Err(e) = prp_walker::read_from_host(g, &mut self.data_cache, cmd.prp1, cmd.prp2, buf)
        {
            return Done::err(CommandProcessor::xfer_status(sh, e));
        }
        let fua = cmd.cdw12 & CDW12_FUA != 0;
        match backend.commit(off, len, fua) {
            Ok(()) => Done::ok(0),
            Err(_) => media_err(media::WRITE_FAULT),
        }
    }

    fn write_zeroes(&mut self, idx: usize, cmd: &Command) -> Done {
        let (off, len) = match self.extent(idx, cmd, false) {
            Ok(x) => x,
            Err(d) => return d,
        };
        if self.nss[idx].read_only {
            return read_only();
        }
        // With or without DEAC the blocks read back as zeroes afterwards.
        match self.nss[idx].backend.zero(off, len as u64) {
            Ok(()) => Done::ok(0),
            Err(_) => media_err(media::WRITE_FAULT),
        }
    }

    fn dataset_management(
        &mut self,
        sh: &DeviceState,
        g: &DmaGuard<'_>,
        idx: usize,
        cmd: &Command,
    ) -> Done {
        let nr = (cmd.cdw10 & 0xff) as usize + 1;
        let mut raw = [0u8; 256 * 16];
        let raw = &mut raw[..nr * 16];
        if let Err(e) = prp_walker::read_from_host(g, &mut self.data_cache, cmd.prp1, cmd.prp2, raw)
        {
            return Done::err(CommandProcessor::xfer_status(sh, e));
        }
        let deallocate = cmd.cdw11 & DSM_ATTR_DEALLOCATE != 0;
        let ns = &mut self.nss[idx];
        let ranges = raw
            .chunks_exact(16)
            .filter_map(|b| DsmRange::read_from_bytes(b).ok());
        for r in ranges.clone() {
            if r.slba
                .checked_add(r.nlb as u64)
                .is_none_or(|end| end > ns.blocks)
            {
                return lba_out_of_range();
            }
        }
        if !deallocate {
            return Done::ok(0);
        }
        if ns.read_only {
            return read_only();
        }
        for r in ranges {
            let off = r.slba << ns.lba_shift;
            let len = (r.nlb as u64) << ns.lba_shift;
            if ns.backend.zero(off, len).is_err() {
                return media_err(media::WRITE_FAULT);
            }
        }
        Done::ok(0)
    }
}

/// A null namespace moves no data but still rejects a misaligned PRP1.
fn null_transfer(cmd: &Command) -> Done {
    if cmd.prp1 & 3 != 0 {
        Done::err(generic_err(generic::INVALID_PRP_OFFSET))
    } else {
        Done::ok(0)
    }
}
