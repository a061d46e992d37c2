//! The NVM command set handler (NVM Command Set 1.0 §3): Read, Write (with
//! FUA), Flush, Write Zeroes (with DEAC), Dataset Management (deallocate),
//! Write Uncorrectable, and their error statuses: Invalid Namespace or
//! Format, LBA Out of Range, transfers beyond MDTS (Invalid Field), writes
//! to a write-protected namespace (Attempted Write to Read Only Range),
//! reads of uncorrectable blocks (Unrecovered Read Error). Read and Write
//! on namespaces with metadata, Compare and Verify go to `protected_io.rs`;
//! plain reads and writes stay here, on the fast path.

#![forbid(unsafe_code)]

use zerocopy::FromBytes;

use super::{CommandProcessor, DeviceNamespace};
use crate::command_outcome::{Done, generic_err, specific_err};
use crate::data_pointer;
use crate::device_state::DeviceState;
use crate::guest_memory::DmaGuard;
use crate::protection::{CDW12_PRACT, PiCommand};
use nvme_engine::spec::command::{CDW12_FUA, DSM_ATTR_DEALLOCATE, DsmRange};
use nvme_engine::spec::status::{command_specific, generic, media};
use nvme_engine::spec::{
    command::{Command, NvmOpcode},
    status::{Status, StatusCodeType},
};

/// Verify (NVM Command Set 1.0 §3.3.4).
pub(crate) const VERIFY: NvmOpcode = NvmOpcode(0x0C);

pub(crate) fn media_err(sc: u8) -> Done {
    Done::err(Status::new(StatusCodeType::MEDIA, sc))
}

fn lba_out_of_range() -> Done {
    Done::err(generic_err(generic::LBA_OUT_OF_RANGE))
}

pub(crate) fn read_only() -> Done {
    Done::err(specific_err(command_specific::WRITE_TO_READ_ONLY_RANGE))
}

impl CommandProcessor {
    /// Execute an I/O command. A plain Read or Write (no fusing, PRPs or an
    /// SGL, a namespace without metadata) is decided here, inlined into the
    /// fetch loop; everything else goes through [`Self::io_other`].
    #[inline(always)]
    pub(crate) fn io(&mut self, sh: &DeviceState, g: &DmaGuard<'_>, cmd: &Command) -> Done {
        let op = NvmOpcode(cmd.opcode());
        let plain = (op == NvmOpcode::READ || op == NvmOpcode::WRITE)
            && cmd.fuse() == 0
            && (cmd.psdt() == 0 || (self.limits.sgl && cmd.psdt() == 1));
        if plain {
            let idx = cmd.nsid.wrapping_sub(1) as usize;
            if let Some(Some(ns)) = self.nss.get(idx)
                && ns.ms == 0
            {
                return if op == NvmOpcode::READ {
                    self.read(sh, g, idx, cmd)
                } else {
                    self.write(sh, g, idx, cmd)
                };
            }
        }
        self.io_other(sh, g, cmd)
    }

    /// Every I/O command but a plain Read or Write, and their errors.
    #[inline(never)]
    fn io_other(&mut self, sh: &DeviceState, g: &DmaGuard<'_>, cmd: &Command) -> Done {
        let op = NvmOpcode(cmd.opcode());
        if !matches!(
            op,
            NvmOpcode::READ
                | NvmOpcode::WRITE
                | NvmOpcode::FLUSH
                | NvmOpcode::WRITE_ZEROES
                | NvmOpcode::DATASET_MANAGEMENT
                | NvmOpcode::COMPARE
                | NvmOpcode::WRITE_UNCORRECTABLE
                | VERIFY
        ) {
            return Done::err(generic_err(generic::INVALID_OPCODE));
        }
        if cmd.fuse() != 0 || (cmd.psdt() != 0 && (!self.limits.sgl || cmd.psdt() == 3)) {
            return Done::err(generic_err(generic::INVALID_FIELD));
        }
        // PSDT 10b (an SGL descriptor at MPTR) only where SGLS bit 19 says so.
        if cmd.psdt() == 2 && !self.config.sgl_metadata {
            return Done::err(generic_err(generic::INVALID_FIELD));
        }
        if op == NvmOpcode::FLUSH && cmd.nsid == u32::MAX && self.limits.vwc {
            for ns in self.nss.iter_mut().flatten() {
                if ns.backend.flush().is_err() {
                    return media_err(media::WRITE_FAULT);
                }
            }
            return Done::ok(0);
        }
        let idx = cmd.nsid.wrapping_sub(1) as usize;
        let Some(ns) = self.nss.get_mut(idx).and_then(|n| n.as_mut()) else {
            return Done::err(generic_err(generic::INVALID_NAMESPACE));
        };
        match op {
            NvmOpcode::READ if ns.ms == 0 => self.read(sh, g, idx, cmd),
            NvmOpcode::WRITE if ns.ms == 0 => self.write(sh, g, idx, cmd),
            NvmOpcode::READ => self.read_blocks(sh, g, idx, cmd, super::protected_io::Kind::Read),
            NvmOpcode::COMPARE => {
                self.read_blocks(sh, g, idx, cmd, super::protected_io::Kind::Compare)
            }
            VERIFY => self.read_blocks(sh, g, idx, cmd, super::protected_io::Kind::Verify),
            NvmOpcode::WRITE => self.write_blocks(sh, g, idx, cmd),
            NvmOpcode::FLUSH => match ns.backend.flush() {
                Ok(()) => Done::ok(0),
                Err(_) => media_err(media::WRITE_FAULT),
            },
            NvmOpcode::WRITE_ZEROES => self.write_zeroes(idx, cmd),
            NvmOpcode::WRITE_UNCORRECTABLE => self.write_uncorrectable(idx, cmd),
            _ => self.dataset_management(sh, g, idx, cmd),
        }
    }

    /// The namespace at index `idx` (the caller checked it is attached).
    #[inline]
    pub(crate) fn ns(&mut self, idx: usize) -> &mut DeviceNamespace {
        match self.nss[idx].as_mut() {
            Some(ns) => ns,
            None => unreachable!("namespace {idx} checked attached by the dispatcher"),
        }
    }

    /// Write Uncorrectable: later reads of the blocks fail until they are written.
    #[inline(never)]
    fn write_uncorrectable(&mut self, idx: usize, cmd: &Command) -> Done {
        if let Err(d) = self.extent(idx, cmd, false) {
            return d;
        }
        let ns = self.ns(idx);
        if ns.read_only {
            return read_only();
        }
        let start = cmd.slba();
        ns.uncorrectable
            .insert(start, start + cmd.nlb_z() as u64 + 1);
        Done::ok(0)
    }

    /// Byte offset and length of the command's LBA range, or the status that rejects it.
    #[inline]
    pub(crate) fn extent(
        &mut self,
        idx: usize,
        cmd: &Command,
        limit: bool,
    ) -> Result<(u64, usize), Done> {
        let max = self.limits.max_transfer;
        let ns = self.ns(idx);
        let nlb = cmd.nlb_z() as u64 + 1;
        let slba = cmd.slba();
        if slba.checked_add(nlb).is_none_or(|end| end > ns.blocks) {
            return Err(lba_out_of_range());
        }
        let len = (nlb << ns.lba_shift) as usize;
        if limit && len > max {
            return Err(Done::err(generic_err(generic::INVALID_FIELD)));
        }
        Ok((slba << ns.lba_shift, len))
    }

    #[inline(always)]
    fn read(&mut self, sh: &DeviceState, g: &DmaGuard<'_>, idx: usize, cmd: &Command) -> Done {
        let (off, len) = match self.extent(idx, cmd, true) {
            Ok(x) => x,
            Err(d) => return d,
        };
        self.smart.read_cmds += 1;
        self.smart.read_512 += len as u64 / 512;
        let Some(ns) = self.nss[idx].as_mut() else {
            return Done::err(generic_err(generic::INVALID_NAMESPACE));
        };
        if !ns.uncorrectable.is_empty()
            && ns
                .uncorrectable
                .overlaps(off >> ns.lba_shift, (off + len as u64) >> ns.lba_shift)
        {
            return media_err(media::UNRECOVERED_READ_ERROR);
        }
        let backend = &mut ns.backend;
        if backend.is_null() {
            return null_transfer(cmd);
        }
        let data = match backend.load(off, len) {
            Ok(d) => d,
            Err(_) => return media_err(media::UNRECOVERED_READ_ERROR),
        };
        match data_pointer::to_host(g, &mut self.data_cache, cmd.cdw0, cmd.prp1, cmd.prp2, data) {
            Ok(()) => Done::ok(0),
            Err(e) => Done::err(CommandProcessor::xfer_status(sh, e)),
        }
    }

    #[inline(always)]
    fn write(&mut self, sh: &DeviceState, g: &DmaGuard<'_>, idx: usize, cmd: &Command) -> Done {
        let (off, len) = match self.extent(idx, cmd, true) {
            Ok(x) => x,
            Err(d) => return d,
        };
        self.smart.write_cmds += 1;
        self.smart.write_512 += len as u64 / 512;
        let Some(ns) = self.nss[idx].as_mut() else {
            return Done::err(generic_err(generic::INVALID_NAMESPACE));
        };
        if ns.read_only {
            return read_only();
        }
        if !ns.uncorrectable.is_empty() {
            let start = off >> ns.lba_shift;
            ns.uncorrectable
                .remove(start, (off + len as u64) >> ns.lba_shift);
        }
        let backend = &mut ns.backend;
        if backend.is_null() {
            return null_transfer(cmd);
        }
        let buf = match backend.stage(off, len) {
            Ok(b) => b,
            Err(_) => return media_err(media::WRITE_FAULT),
        };
        if let Err(e) =
            data_pointer::from_host(g, &mut self.data_cache, cmd.cdw0, cmd.prp1, cmd.prp2, buf)
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
        let ns = self.ns(idx);
        if ns.read_only {
            return read_only();
        }
        let start = off >> ns.lba_shift;
        ns.written(start, (off + len as u64) >> ns.lba_shift);
        // With or without DEAC the blocks read back as zeroes afterwards,
        // and their metadata as zeroes too; with PRACT on a namespace with
        // protection information the device writes each block's tuple.
        if ns.backend.zero(off, len as u64).is_err() {
            return media_err(media::WRITE_FAULT);
        }
        if let Some(p) = ns.pi
            && cmd.cdw12 & CDW12_PRACT != 0
        {
            let pic = PiCommand::from_dwords(cmd.cdw12, cmd.cdw14, cmd.cdw15);
            let nlb = (len >> ns.lba_shift) as u64;
            let zero_block = vec![0u8; 1 << ns.lba_shift];
            let mut meta = vec![0u8; nlb as usize * p.ms];
            for (i, m) in meta.chunks_exact_mut(p.ms).enumerate() {
                p.generate(&pic, i as u64, &zero_block, m);
            }
            let moff = start * p.ms as u64;
            let stored = match ns.backend.meta() {
                Some(m) => m
                    .stage(moff, meta.len())
                    .map(|b| b.copy_from_slice(&meta))
                    .and_then(|()| m.commit(moff, meta.len(), false)),
                None => Ok(()),
            };
            if stored.is_err() {
                return media_err(media::WRITE_FAULT);
            }
        }
        Done::ok(0)
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
        if let Err(e) =
            data_pointer::from_host(g, &mut self.data_cache, cmd.cdw0, cmd.prp1, cmd.prp2, raw)
        {
            return Done::err(CommandProcessor::xfer_status(sh, e));
        }
        let deallocate = cmd.cdw11 & DSM_ATTR_DEALLOCATE != 0;
        let ns = self.ns(idx);
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
            ns.written(r.slba, r.slba + r.nlb as u64);
            if ns.backend.zero(off, len).is_err() {
                return media_err(media::WRITE_FAULT);
            }
        }
        Done::ok(0)
    }
}

/// A null namespace moves no data but still rejects a misaligned PRP1.
pub(crate) fn null_transfer(cmd: &Command) -> Done {
    if cmd.prp1 & 3 != 0 {
        Done::err(generic_err(generic::INVALID_PRP_OFFSET))
    } else {
        Done::ok(0)
    }
}

impl DeviceNamespace {
    /// Blocks `[start, end)` were written (or zeroed): no longer uncorrectable,
    /// and their metadata zeroed with them.
    pub(crate) fn written(&mut self, start: u64, end: u64) {
        if !self.uncorrectable.is_empty() {
            self.uncorrectable.remove(start, end);
        }
        let ms = self.ms as u64;
        if let Some(m) = self.backend.meta() {
            // A failure here shows as a media error on the data's own zeroing.
            let _ = m.zero(start * ms, (end - start) * ms);
        }
    }
}
