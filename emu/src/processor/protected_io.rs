//! Reads, writes, Compare and Verify on namespaces formatted with metadata
//! (NVM Command Set 1.0 §3.3, §5.2, §5.3): extended LBAs (metadata after
//! each block in the data buffer) or a separate metadata buffer (MPTR),
//! protection information inserted and stripped for PRACT and checked for
//! PRCHK, and the statuses for each failure (End-to-end Guard, Application
//! Tag and Reference Tag Check Errors, Invalid Protection Information,
//! Compare Failure, Unrecovered Read Error).
//!
//! Compare and Verify on namespaces without metadata come here too. Plain
//! reads and writes never do: they stay on `nvm_set.rs`'s fast path.

#![forbid(unsafe_code)]

use super::CommandProcessor;
use super::nvm_set::{media_err, null_transfer, read_only};
use crate::command_outcome::{Done, generic_err, specific_err};
use crate::config::ProtectionType;
use crate::data_pointer;
use crate::device_state::DeviceState;
use crate::guest_memory::DmaGuard;
use crate::protection::PiCommand;
use nvme_engine::spec::command::CDW12_FUA;
use nvme_engine::spec::command::{Command, NvmOpcode};
use nvme_engine::spec::status::{generic, media};

/// Invalid Protection Information (NVM command set specific status 81h).
const INVALID_PROTECTION_INFORMATION: u8 = 0x81;

/// What a read-side command does with the blocks it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Transfer them to the host.
    Read,
    /// Compare them with the host's buffers.
    Compare,
    /// Check them (uncorrectable, protection information); move nothing.
    Verify,
}

fn grow(v: &mut Vec<u8>, n: usize) -> &mut [u8] {
    if v.len() < n {
        v.resize(n, 0);
    }
    &mut v[..n]
}

/// A command's shape on its namespace.
struct Shape {
    nlb: u64,
    lbs: usize,
    ms: usize,
    extended: bool,
    /// Metadata bytes the host transfers (none when PRACT strips 8-byte PI).
    host_meta: usize,
    pic: PiCommand,
}

impl CommandProcessor {
    /// Check the range and transfer size of `cmd` and describe it.
    fn shape(
        &mut self,
        idx: usize,
        cmd: &Command,
        moves: bool,
    ) -> Result<(u64, usize, Shape), Done> {
        let max = self.limits.max_transfer;
        let (off, len) = self.extent(idx, cmd, false)?;
        let ns = self.ns(idx);
        let nlb = cmd.nlb_z() as u64 + 1;
        let ms = ns.ms as usize;
        let pic = PiCommand::from_dwords(cmd.cdw12, cmd.cdw14, cmd.cdw15);
        let strip = ns.pi.is_some_and(|p| p.pract_strips()) && pic.pract;
        let host_meta = if strip { 0 } else { nlb as usize * ms };
        // MDTS covers the metadata that travels inside the data buffer.
        let xfer = len + if ns.extended { host_meta } else { 0 };
        if moves && xfer > max {
            return Err(Done::err(generic_err(generic::INVALID_FIELD)));
        }
        if let Some(p) = ns.pi
            && p.kind == ProtectionType::Type1
            && pic.check_ref
            && cmd.slba() as u32 != pic.ref_tag
        {
            // Type 1 reference tags are the LBA: a mismatched EILBRT is a bad command.
            return Err(Done::err(specific_err(INVALID_PROTECTION_INFORMATION)));
        }
        let shape = Shape {
            nlb,
            lbs: 1 << ns.lba_shift,
            ms,
            extended: ns.extended,
            host_meta,
            pic,
        };
        Ok((off, len, shape))
    }

    /// Read, Compare or Verify.
    #[inline(never)]
    pub(crate) fn read_blocks(
        &mut self,
        sh: &DeviceState,
        g: &DmaGuard<'_>,
        idx: usize,
        cmd: &Command,
        kind: Kind,
    ) -> Done {
        let (off, len, s) = match self.shape(idx, cmd, kind != Kind::Verify) {
            Ok(x) => x,
            Err(d) => return d,
        };
        let slba = cmd.slba();
        if kind == Kind::Read {
            self.smart.read_cmds += 1;
            self.smart.read_512 += len as u64 / 512;
        }
        let Some(ns) = self.nss[idx].as_mut() else {
            return Done::err(generic_err(generic::INVALID_NAMESPACE));
        };
        if ns.uncorrectable.overlaps(slba, slba + s.nlb) {
            return media_err(media::UNRECOVERED_READ_ERROR);
        }
        if ns.backend.is_null() {
            return null_transfer(cmd);
        }
        let sc = &mut self.scratch;
        let data = grow(&mut sc.data, len);
        match ns.backend.load(off, len) {
            Ok(d) => data.copy_from_slice(d),
            Err(_) => return media_err(media::UNRECOVERED_READ_ERROR),
        }
        let mlen = s.nlb as usize * s.ms;
        let meta = grow(&mut sc.meta, mlen);
        if let Some(m) = ns.backend.meta() {
            match m.load(slba * s.ms as u64, mlen) {
                Ok(d) => meta.copy_from_slice(d),
                Err(_) => return media_err(media::UNRECOVERED_READ_ERROR),
            }
        }
        if let Some(p) = ns.pi {
            for i in 0..s.nlb as usize {
                let d = &data[i * s.lbs..(i + 1) * s.lbs];
                let m = &meta[i * s.ms..(i + 1) * s.ms];
                if let Err(code) = p.check(&s.pic, i as u64, d, m) {
                    return media_err(code);
                }
            }
        }
        if kind == Kind::Verify {
            return Done::ok(0);
        }
        // The host's view: data with metadata interleaved, or data alone
        // (and the metadata buffer apart, unless PRACT strips it).
        let image: &[u8] = if s.extended && s.host_meta > 0 {
            let host = grow(&mut sc.host, len + s.host_meta);
            let step = s.lbs + s.ms;
            for i in 0..s.nlb as usize {
                host[i * step..i * step + s.lbs].copy_from_slice(&data[i * s.lbs..(i + 1) * s.lbs]);
                host[i * step + s.lbs..(i + 1) * step]
                    .copy_from_slice(&meta[i * s.ms..(i + 1) * s.ms]);
            }
            host
        } else {
            data
        };
        let separate_meta: &[u8] = if !s.extended && s.host_meta > 0 {
            meta
        } else {
            &[]
        };
        if kind == Kind::Read {
            let r =
                data_pointer::to_host(g, &mut self.data_cache, cmd.cdw0, cmd.prp1, cmd.prp2, image)
                    .and_then(|()| {
                        data_pointer::meta_to_host(g, cmd.cdw0, cmd.mptr, separate_meta)
                    });
            return match r {
                Ok(()) => Done::ok(0),
                Err(e) => Done::err(CommandProcessor::xfer_status(sh, e)),
            };
        }
        let theirs = grow(&mut sc.host_meta, image.len() + separate_meta.len());
        let (td, tm) = theirs.split_at_mut(image.len());
        let r = data_pointer::from_host(g, &mut self.data_cache, cmd.cdw0, cmd.prp1, cmd.prp2, td)
            .and_then(|()| data_pointer::meta_from_host(g, cmd.cdw0, cmd.mptr, tm));
        match r {
            Err(e) => Done::err(CommandProcessor::xfer_status(sh, e)),
            Ok(()) if td != image || tm != separate_meta => media_err(media::COMPARE_FAILURE),
            Ok(()) => Done::ok(0),
        }
    }

    /// Write on a namespace with metadata.
    #[inline(never)]
    pub(crate) fn write_blocks(
        &mut self,
        sh: &DeviceState,
        g: &DmaGuard<'_>,
        idx: usize,
        cmd: &Command,
    ) -> Done {
        let (off, len, s) = match self.shape(idx, cmd, true) {
            Ok(x) => x,
            Err(d) => return d,
        };
        let slba = cmd.slba();
        let Some(ns) = self.nss[idx].as_mut() else {
            return Done::err(generic_err(generic::INVALID_NAMESPACE));
        };
        if ns.read_only {
            return read_only();
        }
        self.smart.write_cmds += 1;
        self.smart.write_512 += len as u64 / 512;
        if ns.backend.is_null() {
            ns.uncorrectable.remove(slba, slba + s.nlb);
            return null_transfer(cmd);
        }
        let sc = &mut self.scratch;
        let data = grow(&mut sc.data, len);
        let mlen = s.nlb as usize * s.ms;
        let meta = grow(&mut sc.meta, mlen);
        let r = if s.extended && s.host_meta > 0 {
            let host = grow(&mut sc.host, len + s.host_meta);
            let r = data_pointer::from_host(
                g,
                &mut self.data_cache,
                cmd.cdw0,
                cmd.prp1,
                cmd.prp2,
                host,
            );
            let step = s.lbs + s.ms;
            for i in 0..s.nlb as usize {
                data[i * s.lbs..(i + 1) * s.lbs].copy_from_slice(&host[i * step..i * step + s.lbs]);
                meta[i * s.ms..(i + 1) * s.ms]
                    .copy_from_slice(&host[i * step + s.lbs..(i + 1) * step]);
            }
            r
        } else {
            data_pointer::from_host(g, &mut self.data_cache, cmd.cdw0, cmd.prp1, cmd.prp2, data)
                .and_then(|()| {
                    let theirs = if s.host_meta > 0 {
                        &mut meta[..]
                    } else {
                        &mut [][..]
                    };
                    data_pointer::meta_from_host(g, cmd.cdw0, cmd.mptr, theirs)
                })
        };
        if let Err(e) = r {
            return Done::err(CommandProcessor::xfer_status(sh, e));
        }
        if s.host_meta == 0 {
            meta.fill(0);
        }
        if let Some(p) = ns.pi {
            for i in 0..s.nlb as usize {
                let d = &data[i * s.lbs..(i + 1) * s.lbs];
                let m = &mut meta[i * s.ms..(i + 1) * s.ms];
                if s.pic.pract {
                    p.generate(&s.pic, i as u64, d, m);
                } else if let Err(code) = p.check(&s.pic, i as u64, d, m) {
                    return media_err(code);
                }
            }
        }
        let fua = cmd.cdw12 & CDW12_FUA != 0;
        let stored = ns
            .backend
            .stage(off, len)
            .map(|b| b.copy_from_slice(data))
            .and_then(|()| ns.backend.commit(off, len, fua));
        let stored = stored.and_then(|()| match ns.backend.meta() {
            Some(m) => {
                let moff = slba * s.ms as u64;
                m.stage(moff, mlen)
                    .map(|b| b.copy_from_slice(meta))
                    .and_then(|()| m.commit(moff, mlen, fua))
            }
            None => Ok(()),
        });
        if stored.is_err() {
            return media_err(media::WRITE_FAULT);
        }
        ns.uncorrectable.remove(slba, slba + s.nlb);
        Done::ok(0)
    }

    /// Run an I/O command under a fault that corrupts stored protection
    /// information: after a write, before anything else.
    #[inline(never)]
    pub(crate) fn io_corrupting(
        &mut self,
        sh: &DeviceState,
        g: &DmaGuard<'_>,
        cmd: &Command,
        reference: bool,
    ) -> Done {
        let write = NvmOpcode(cmd.opcode()) == NvmOpcode::WRITE;
        if !write {
            self.corrupt_stored(cmd, reference);
        }
        let done = self.io(sh, g, cmd);
        if write && done.status.is_success() {
            self.corrupt_stored(cmd, reference);
        }
        done
    }

    /// Damage the stored tuple of every block of `cmd`'s range.
    fn corrupt_stored(&mut self, cmd: &Command, reference: bool) {
        let Some(ns) = self
            .nss
            .get_mut(cmd.nsid.wrapping_sub(1) as usize)
            .and_then(|n| n.as_mut())
        else {
            return;
        };
        let Some(p) = ns.pi else {
            return;
        };
        let ms = ns.ms as u64;
        let start = cmd.slba();
        let end = start.saturating_add(cmd.nlb_z() as u64 + 1).min(ns.blocks);
        let Some(m) = ns.backend.meta() else {
            return;
        };
        let mut tuple = [0u8; 256];
        for lba in start..end {
            let t = &mut tuple[..ms as usize];
            let ok = m
                .load(lba * ms, ms as usize)
                .map(|b| t.copy_from_slice(b))
                .is_ok();
            if ok {
                p.corrupt(t, reference);
                let _ = m
                    .stage(lba * ms, ms as usize)
                    .map(|b| b.copy_from_slice(t))
                    .and_then(|()| m.commit(lba * ms, ms as usize, false));
            }
        }
    }
}
