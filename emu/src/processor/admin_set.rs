//! The admin command set handler of the emulated controller (NVMe Base
//! 2.0 §5):
//! Identify (CNS 00h/01h/02h), Create/Delete I/O SQ and CQ with the spec's
//! validation, Get Log Page (Error Information, SMART / Health, Firmware
//! Slot, Changed Namespace List; Retain Asynchronous Event), Set/Get Features, Abort, Asynchronous Event Request, Keep Alive,
//! Doorbell Buffer Config.

#![forbid(unsafe_code)]

use std::sync::atomic::Ordering;

use zerocopy::IntoBytes;
use zerocopy::little_endian::U16;

use super::{CommandProcessor, Features};
use crate::command_outcome::{Done, generic_err, specific_err};
use crate::device_state::DeviceState;
use crate::event_state::LOG_CHANGED_NAMESPACES;
use crate::guest_memory::{DmaGuard, TranslationCache};
use crate::identify_data::ERROR_LOG_ENTRIES;
use crate::prp_walker;
use crate::queues::{CQE_BYTES, Cq, SQE_BYTES, Sq};
use crate::shadow_doorbells::ShadowDoorbells;
use nvme_engine::spec::command::{CREATE_CQ_IEN, CREATE_Q_PC, cns};
use nvme_engine::spec::features::FeatureId;
use nvme_engine::spec::log::{LogId, SmartHealth, to_u128_le};
use nvme_engine::spec::status::{command_specific as cs, generic};
use nvme_engine::spec::{
    command::{AdminOpcode, Command},
    completion::Completion,
    status::{Status, StatusCodeType},
};

fn invalid_field() -> Done {
    Done::err(generic_err(generic::INVALID_FIELD))
}

impl CommandProcessor {
    /// Execute an admin command. `None`: no completion now (AER).
    pub(crate) fn admin(
        &mut self,
        sh: &DeviceState,
        g: &DmaGuard<'_>,
        cmd: &Command,
    ) -> Option<Done> {
        if cmd.psdt() != 0 || cmd.fuse() != 0 {
            return Some(invalid_field());
        }
        Some(match AdminOpcode(cmd.opcode()) {
            AdminOpcode::IDENTIFY => self.identify(sh, g, cmd),
            AdminOpcode::CREATE_IO_CQ => self.create_cq(sh, g, cmd),
            AdminOpcode::CREATE_IO_SQ => self.create_sq(sh, g, cmd),
            AdminOpcode::DELETE_IO_SQ => self.delete_sq(sh, g, cmd),
            AdminOpcode::DELETE_IO_CQ => self.delete_cq(sh, cmd),
            AdminOpcode::GET_LOG_PAGE => self.get_log_page(sh, g, cmd),
            AdminOpcode::SET_FEATURES => self.set_features(cmd),
            AdminOpcode::GET_FEATURES => self.get_features(cmd),
            AdminOpcode::ABORT => self.abort(sh, g, cmd),
            AdminOpcode::KEEP_ALIVE => Done::ok(0),
            AdminOpcode::DOORBELL_BUFFER_CONFIG if self.limits.doorbell_buffer => {
                self.dbbuf_config(sh, g, cmd)
            }
            AdminOpcode::ASYNC_EVENT_REQUEST => {
                if self.aers.len() >= self.limits.aer_limit {
                    // Asynchronous Event Request Limit Exceeded.
                    Done::err(specific_err(0x05))
                } else {
                    self.aers.push(cmd.cid());
                    self.deliver_events(sh, g);
                    return None;
                }
            }
            _ => Done::err(generic_err(generic::INVALID_OPCODE)),
        })
    }

    /// Doorbell Buffer Config: shadow page in PRP1, EventIdx page in PRP2.
    fn dbbuf_config(&mut self, sh: &DeviceState, g: &DmaGuard<'_>, cmd: &Command) -> Done {
        // Existing I/O queues carry on from their current doorbell values.
        // Acquire: pairs with the host's release of its doorbell write.
        let sq_tails: Vec<(u16, u32)> = (self.active_sqs.iter())
            .map(|&qid| {
                (
                    qid,
                    sh.doorbells[qid as usize].sq_tail.load(Ordering::Acquire),
                )
            })
            .collect();
        let cqs = &self.cqs;
        let cq_heads = (self.active_cqs.iter())
            .filter_map(|&qid| cqs[qid as usize].as_ref().map(|cq| (qid, cq.head)));
        let b = match ShadowDoorbells::configure(
            sh,
            g,
            cmd.prp1,
            cmd.prp2,
            sq_tails.iter().copied(),
            cq_heads,
        ) {
            Ok(b) => b,
            Err(_) => return Done::err(generic_err(generic::INVALID_FIELD)),
        };
        for &(qid, tail) in &sq_tails {
            if ShadowDoorbells::covers(qid)
                && let Some(sq) = self.sqs[qid as usize].as_mut()
            {
                sq.shadow_seen = tail;
            }
        }
        self.dbbuf = Some(b);
        sh.set_shadow_doorbells(true);
        Done::ok(0)
    }

    fn send(sh: &DeviceState, g: &DmaGuard<'_>, cmd: &Command, data: &[u8]) -> Done {
        let mut cache = TranslationCache::default();
        match prp_walker::write_to_host(g, &mut cache, cmd.prp1, cmd.prp2, data) {
            Ok(()) => Done::ok(0),
            Err(e) => Done::err(CommandProcessor::xfer_status(sh, e)),
        }
    }

    fn identify(&mut self, sh: &DeviceState, g: &DmaGuard<'_>, cmd: &Command) -> Done {
        let real = self.nss.len() as u32;
        let nn = self.claimed_namespaces.unwrap_or(real);
        let attached =
            |n: u32| n > real || self.nss.get(n as usize - 1).is_some_and(|x| x.is_some());
        match cmd.cdw10 as u8 {
            cns::CONTROLLER => Self::send(sh, g, cmd, self.identify.as_bytes()),
            cns::NAMESPACE => match cmd.nsid {
                n @ 1.. if n <= real && attached(n) => match &self.nss[n as usize - 1] {
                    Some(ns) => Self::send(sh, g, cmd, ns.identify.as_bytes()),
                    None => Self::send(sh, g, cmd, &[0u8; 4096]),
                },
                // Not attached, or claimed but not real: an all-zero
                // (inactive) namespace.
                n @ 1.. if n <= nn => Self::send(sh, g, cmd, &[0u8; 4096]),
                _ => Done::err(generic_err(generic::INVALID_NAMESPACE)),
            },
            cns::ACTIVE_NAMESPACES => {
                if cmd.nsid >= 0xFFFF_FFFE {
                    return Done::err(generic_err(generic::INVALID_NAMESPACE));
                }
                let mut list = [0u8; 4096];
                for (slot, id) in list.chunks_exact_mut(4).zip(
                    (cmd.nsid.saturating_add(1)..=nn)
                        .filter(|&n| attached(n))
                        .take(1024),
                ) {
                    slot.copy_from_slice(&id.to_le_bytes());
                }
                Self::send(sh, g, cmd, &list)
            }
            _ => invalid_field(),
        }
    }

    fn max_qid(&self, sq: bool) -> u16 {
        match self.features.queues_granted {
            Some((s, c)) => {
                if sq {
                    s
                } else {
                    c
                }
            }
            None => self.limits.io_queues,
        }
    }

    fn create_cq(&mut self, sh: &DeviceState, g: &DmaGuard<'_>, cmd: &Command) -> Done {
        let qid = cmd.cdw10 as u16;
        let size = (cmd.cdw10 >> 16) + 1;
        if qid == 0 || qid > self.max_qid(false) || self.cqs[qid as usize].is_some() {
            return Done::err(CommandProcessor::invalid_qid());
        }
        if size < 2 || size > self.limits.max_entries {
            return Done::err(specific_err(cs::INVALID_QUEUE_SIZE));
        }
        if cmd.cdw11 & CREATE_Q_PC == 0 || cmd.prp1 & 0xfff != 0 {
            return invalid_field();
        }
        if cmd.cdw11 & CREATE_CQ_IEN != 0 && cmd.cdw11 >> 16 != 0 {
            // Only vector 0 exists; it never fires.
            return Done::err(specific_err(0x08));
        }
        if g.translate(cmd.prp1, size as usize * CQE_BYTES as usize)
            .is_none()
        {
            sh.counters.dma_fault();
            return invalid_field();
        }
        self.add_cq(sh, qid, Cq::new(cmd.prp1, size));
        Done::ok(0)
    }

    fn create_sq(&mut self, sh: &DeviceState, g: &DmaGuard<'_>, cmd: &Command) -> Done {
        let qid = cmd.cdw10 as u16;
        let size = (cmd.cdw10 >> 16) + 1;
        let cqid = (cmd.cdw11 >> 16) as u16;
        if qid == 0 || qid > self.max_qid(true) || self.sqs[qid as usize].is_some() {
            return Done::err(CommandProcessor::invalid_qid());
        }
        if size < 2 || size > self.limits.max_entries {
            return Done::err(specific_err(cs::INVALID_QUEUE_SIZE));
        }
        if cqid == 0 || self.cqs.get(cqid as usize).is_none_or(|c| c.is_none()) {
            return Done::err(specific_err(cs::INVALID_CQ));
        }
        if cmd.cdw11 & CREATE_Q_PC == 0 || cmd.prp1 & 0xfff != 0 {
            return invalid_field();
        }
        if g.translate(cmd.prp1, size as usize * SQE_BYTES as usize)
            .is_none()
        {
            sh.counters.dma_fault();
            return invalid_field();
        }
        self.add_sq(sh, qid, Sq::new(cmd.prp1, size, cqid));
        Done::ok(0)
    }

    fn delete_sq(&mut self, sh: &DeviceState, g: &DmaGuard<'_>, cmd: &Command) -> Done {
        let qid = cmd.cdw10 as u16;
        if qid == 0 || self.sqs.get(qid as usize).is_none_or(|s| s.is_none()) {
            return Done::err(CommandProcessor::invalid_qid());
        }
        let aborted = Status::new(StatusCodeType::GENERIC, generic::ABORTED_SQ_DELETION);
        self.flush_held_for_sq(sh, g, qid, aborted);
        // Commands submitted but not yet fetched are aborted too.
        let db = &sh.doorbells[qid as usize];
        let tail = self.sq_tail(sh, g, qid);
        if let Some(sq) = self.sqs[qid as usize].take() {
            if tail < sq.size {
                let mut head = sq.head;
                while head != tail {
                    let at = sq.iova + head as u64 * SQE_BYTES;
                    head = (head + 1) % sq.size;
                    if let Some(c) = g.translate(at, 64).and_then(|s| s.read_obj::<Command>(0)) {
                        let cqe = Completion::new(0, head as u16, qid, c.cid(), aborted, false);
                        self.post(sh, g, sq.cqid, cqe);
                    }
                }
            }
            if let Some(cq) = self.cqs[sq.cqid as usize].as_mut() {
                cq.sqs = cq.sqs.saturating_sub(1);
            }
        }
        db.sq_size.store(0, std::sync::atomic::Ordering::Release);
        self.active_sqs.retain(|&q| q != qid);
        self.abort_on_fetch.retain(|&(s, _)| s != qid);
        Done::ok(0)
    }

    fn delete_cq(&mut self, sh: &DeviceState, cmd: &Command) -> Done {
        let qid = cmd.cdw10 as u16;
        let Some(cq) = self.cqs.get(qid as usize).and_then(|c| c.as_ref()) else {
            return Done::err(CommandProcessor::invalid_qid());
        };
        if qid == 0 {
            return Done::err(CommandProcessor::invalid_qid());
        }
        if cq.sqs > 0 {
            return Done::err(specific_err(cs::INVALID_QUEUE_DELETION));
        }
        self.cqs[qid as usize] = None;
        sh.doorbells[qid as usize]
            .cq_size
            .store(0, std::sync::atomic::Ordering::Release);
        self.active_cqs.retain(|&q| q != qid);
        Done::ok(0)
    }

    fn get_log_page(&mut self, sh: &DeviceState, g: &DmaGuard<'_>, cmd: &Command) -> Done {
        let lid = LogId(cmd.cdw10 as u8);
        let dwords = ((cmd.cdw10 >> 16) as u64 | (cmd.cdw11 as u64 & 0xffff) << 16) + 1;
        let len = (dwords * 4) as usize;
        let offset = cmd.cdw12 as u64 | (cmd.cdw13 as u64) << 32;
        if len > self.limits.max_transfer || offset & 3 != 0 {
            return invalid_field();
        }
        let page: Vec<u8> = match lid {
            LogId::ERROR_INFORMATION => {
                // Newest entry first.
                let mut v = Vec::with_capacity(ERROR_LOG_ENTRIES * 64);
                for e in self.errors.iter().rev() {
                    v.extend_from_slice(e.as_bytes());
                }
                v.resize(ERROR_LOG_ENTRIES * 64, 0);
                v
            }
            LogId::SMART_HEALTH => self.smart_page().as_bytes().to_vec(),
            LogId(LOG_CHANGED_NAMESPACES) => self.changed_namespaces_page(),
            LogId::FIRMWARE_SLOT => {
                let mut v = vec![0u8; 512];
                v[0] = 1; // active slot 1
                v[8..16].copy_from_slice(&self.identify.fr);
                v
            }
            _ => return Done::err(specific_err(cs::INVALID_LOG_PAGE)),
        };
        if offset > page.len() as u64 {
            return invalid_field();
        }
        let mut out = vec![0u8; len];
        let src = &page[offset as usize..];
        let n = src.len().min(len);
        out[..n].copy_from_slice(&src[..n]);
        let done = Self::send(sh, g, cmd, &out);
        if done.status.is_success() {
            // CDW10 bit 15: Retain Asynchronous Event.
            self.log_page_read(sh, g, lid.0, cmd.cdw10 & (1 << 15) != 0);
        }
        done
    }

    fn smart_page(&self) -> SmartHealth {
        let mut s = SmartHealth::zeroed();
        s.composite_temperature = U16::new(310);
        s.available_spare = 100;
        s.available_spare_threshold = 10;
        s.critical_warning = self.events.critical_warning;
        s.data_units_read = to_u128_le(self.smart.read_512.div_ceil(1000) as u128);
        s.data_units_written = to_u128_le(self.smart.write_512.div_ceil(1000) as u128);
        s.host_read_commands = to_u128_le(self.smart.read_cmds as u128);
        s.host_write_commands = to_u128_le(self.smart.write_cmds as u128);
        s.power_cycles = to_u128_le(1);
        s.error_log_entries = to_u128_le(self.error_count as u128);
        s
    }

    fn set_features(&mut self, cmd: &Command) -> Done {
        if cmd.cdw10 & (1 << 31) != 0 {
            return Done::err(specific_err(cs::FEATURE_NOT_SAVEABLE));
        }
        let v = cmd.cdw11;
        let f = &mut self.features;
        match FeatureId(cmd.cdw10 as u8) {
            FeatureId::NUMBER_OF_QUEUES => {
                if self.active_sqs.len() > 1 || self.active_cqs.len() > 1 {
                    return Done::err(generic_err(generic::COMMAND_SEQUENCE_ERROR));
                }
                let (nsqr, ncqr) = (v & 0xffff, v >> 16);
                if nsqr == 0xffff || ncqr == 0xffff {
                    return invalid_field();
                }
                let max = self.limits.io_queues as u32;
                let sq = (nsqr + 1).min(max) as u16;
                let cq = (ncqr + 1).min(max) as u16;
                f.queues_granted = Some((sq, cq));
                return Done::ok((sq as u32 - 1) | (cq as u32 - 1) << 16);
            }
            FeatureId::VOLATILE_WRITE_CACHE if self.limits.vwc => f.wce = v & 1 != 0,
            FeatureId::ARBITRATION => f.arbitration = v,
            FeatureId::POWER_MANAGEMENT if v & 0x1f == 0 => f.power = v,
            FeatureId::TEMPERATURE_THRESHOLD => f.temp_threshold = v,
            FeatureId::INTERRUPT_COALESCING => f.coalescing = v,
            FeatureId::ASYNC_EVENT_CONFIG => f.async_config = v,
            _ => return invalid_field(),
        }
        Done::ok(0)
    }

    fn get_features(&self, cmd: &Command) -> Done {
        let sel = (cmd.cdw10 >> 8) & 7;
        // SEL 01b reports defaults; saved values (10b) equal current ones.
        let defaults = Features::new(self.limits.vwc);
        let f = if sel == 1 { &defaults } else { &self.features };
        let value = match FeatureId(cmd.cdw10 as u8) {
            FeatureId::NUMBER_OF_QUEUES => {
                let n = self.limits.io_queues;
                let (s, c) = f.queues_granted.unwrap_or((n, n));
                (s as u32 - 1) | (c as u32 - 1) << 16
            }
            FeatureId::VOLATILE_WRITE_CACHE if self.limits.vwc => f.wce as u32,
            FeatureId::ARBITRATION => f.arbitration,
            FeatureId::POWER_MANAGEMENT => f.power,
            FeatureId::TEMPERATURE_THRESHOLD => f.temp_threshold,
            FeatureId::INTERRUPT_COALESCING => f.coalescing,
            FeatureId::ASYNC_EVENT_CONFIG => f.async_config,
            _ => return invalid_field(),
        };
        match sel {
            3 => Done::ok(0b100), // changeable, not saveable, not namespace specific
            4.. => invalid_field(),
            _ => Done::ok(value),
        }
    }

    fn abort(&mut self, sh: &DeviceState, g: &DmaGuard<'_>, cmd: &Command) -> Done {
        let sqid = cmd.cdw10 as u16;
        let cid = (cmd.cdw10 >> 16) as u16;
        let requested = Status::new(StatusCodeType::GENERIC, generic::ABORT_REQUESTED);
        let Some(sq) = self.sqs.get(sqid as usize).and_then(|s| s.as_ref()) else {
            return Done::ok(1);
        };
        let (cqid, sqhd, head, size, iova) = (sq.cqid, sq.head as u16, sq.head, sq.size, sq.iova);
        if let Some(i) = self
            .stuck
            .iter()
            .position(|s| s.sqid == sqid && s.cid == cid)
        {
            self.stuck.swap_remove(i);
            let c = Completion::new(0, sqhd, sqid, cid, requested, false);
            self.post(sh, g, cqid, c);
            return Done::ok(0);
        }
        if sqid == 0 {
            if let Some(i) = self.aers.iter().position(|&c| c == cid) {
                self.aers.swap_remove(i);
                let c = Completion::new(0, sqhd, 0, cid, requested, false);
                self.post(sh, g, 0, c);
                return Done::ok(0);
            }
            return Done::ok(1);
        }
        // Submitted but not yet fetched: abort it when it is fetched.
        let tail = self.sq_tail(sh, g, sqid);
        if tail < size {
            let mut at = head;
            while at != tail {
                let c = g
                    .translate(iova + at as u64 * SQE_BYTES, 64)
                    .and_then(|s| s.read_obj::<Command>(0));
                if c.is_some_and(|c| c.cid() == cid) {
                    self.abort_on_fetch.push((sqid, cid));
                    return Done::ok(0);
                }
                at = (at + 1) % size;
            }
        }
        Done::ok(1)
    }
}
