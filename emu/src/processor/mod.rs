//! The command processor: the device-side state behind the device lock
//! and what a controller does with it — enable and reset (NVMe Base 2.0
//! §3.5), SQ fetching in batches, fault actions, completion posting with
//! CQ-full back-pressure, shadow doorbell reads, and the Error Information
//! log. The child modules extend it and this file imports none of them:
//! the admin command set (`admin_set.rs`), the NVM command set
//! (`nvm_set.rs`), commands on namespaces with metadata and protection
//! information (`protected_io.rs`), fused Compare and Write (`fused.rs`),
//! asynchronous events and the error log (`async_events.rs`), namespaces
//! changed at run time (`namespace_changes.rs`), and where doorbell values
//! are read (`doorbell_values.rs`).
//!
//! The processor is owned by one thread at a time (the device lock): the
//! polling thread once per round, or a host thread for an inline doorbell
//! or a CC write.

#![forbid(unsafe_code)]

use std::sync::atomic::Ordering;

use crate::backend::Backend;
use crate::block_ranges::BlockRanges;
use crate::command_outcome::{Done, generic_err, specific_err};
use crate::config::{EmuConfig, EmuError, EmuNamespaceConfig, ProtectionType};
use crate::device_state::DeviceState;
use crate::event_state::{EVENT_ERROR, EventState, INFO_INVALID_DOORBELL_VALUE};
use crate::faults::FaultAction;
use crate::guest_memory::{DmaGuard, TranslationCache};
use crate::identify_data::{self, ERROR_LOG_ENTRIES};
use crate::protection::PiFormat;
use crate::prp_walker::XferError;
use crate::queues::{Cq, SQE_BYTES, Sq};
use crate::shadow_doorbells::ShadowDoorbells;
use nvme_engine::spec::identify::{IdentifyController, IdentifyNamespace};
use nvme_engine::spec::log::ErrorInformation;
use nvme_engine::spec::registers::{Aqa, Cc};
use nvme_engine::spec::status::{command_specific, generic};
use nvme_engine::spec::{
    command::Command,
    completion::Completion,
    status::{Status, StatusCodeType},
};

mod admin_set;
mod async_events;
mod doorbell_values;
mod fused;
mod held;
mod namespace_changes;
mod nvm_set;
mod protected_io;

/// Most commands fetched from one SQ in one go.
const FETCH_BATCH: usize = 32;

/// One namespace as the processor keeps it.
pub(crate) struct DeviceNamespace {
    pub(crate) lba_shift: u32,
    pub(crate) blocks: u64,
    pub(crate) read_only: bool,
    pub(crate) backend: Backend,
    pub(crate) identify: Box<IdentifyNamespace>,
    /// Metadata bytes per block (0: none; every command takes the plain path).
    pub(crate) ms: u32,
    /// Metadata interleaved with the data in the host buffer.
    pub(crate) extended: bool,
    /// Protection information settings.
    pub(crate) pi: Option<PiFormat>,
    /// Blocks marked by Write Uncorrectable and not written since.
    pub(crate) uncorrectable: BlockRanges,
}

impl DeviceNamespace {
    /// Namespace `nsid` as `ns` configures it.
    pub(crate) fn open(
        cfg: &EmuConfig,
        nsid: u32,
        ns: &EmuNamespaceConfig,
        max_transfer: usize,
    ) -> Result<Self, EmuError> {
        let pi = (ns.protection != ProtectionType::None).then_some(PiFormat {
            kind: ns.protection,
            first: ns.pi_first,
            ms: ns.metadata_size as usize,
        });
        Ok(DeviceNamespace {
            lba_shift: ns.lba_size.trailing_zeros(),
            blocks: ns.blocks,
            read_only: ns.read_only,
            backend: Backend::open(nsid, ns, max_transfer)?,
            identify: identify_data::identify_namespace(cfg, nsid, ns),
            ms: ns.metadata_size as u32,
            extended: ns.extended_lba,
            pi,
            uncorrectable: BlockRanges::default(),
        })
    }

    /// The Identify Namespace bytes, writable (fuzzing hooks).
    pub(crate) fn identify_bytes_mut(&mut self) -> &mut [u8] {
        use zerocopy::IntoBytes;
        self.identify.as_mut_bytes()
    }
}

/// Controller limits fixed at creation.
pub(crate) struct Limits {
    pub(crate) io_queues: u16,
    pub(crate) max_entries: u32,
    pub(crate) max_transfer: usize,
    pub(crate) vwc: bool,
    /// Doorbell Buffer Config supported.
    pub(crate) doorbell_buffer: bool,
    /// SGLs supported (PSDT 01b and 10b accepted).
    pub(crate) sgl: bool,
    /// Outstanding Asynchronous Event Requests allowed (AERL + 1).
    pub(crate) aer_limit: usize,
}

/// A first fused command waiting for its second (`fused.rs`).
pub(crate) struct FusedFirst {
    pub(crate) sqid: u16,
    pub(crate) cqid: u16,
    pub(crate) sqhd: u16,
    pub(crate) cmd: Command,
}

/// Staging for commands on namespaces with metadata (`protected_io.rs`):
/// grown to the largest command seen, never shrunk.
#[derive(Default)]
pub(crate) struct Scratch {
    pub(crate) data: Vec<u8>,
    pub(crate) meta: Vec<u8>,
    pub(crate) host: Vec<u8>,
    pub(crate) host_meta: Vec<u8>,
}

/// A completion waiting some rounds before it is posted.
struct Delayed {
    cqid: u16,
    rounds: u32,
    c: Completion,
}

/// A fetched command that is not executed (NeverComplete).
pub(crate) struct Stuck {
    pub(crate) sqid: u16,
    pub(crate) cid: u16,
    /// The command itself: a real controller holding it may still move
    /// its data (see `held.rs`).
    pub(crate) cmd: Command,
}

/// Mutable feature values (Set/Get Features).
pub(crate) struct Features {
    pub(crate) wce: bool,
    pub(crate) arbitration: u32,
    pub(crate) power: u32,
    pub(crate) temp_threshold: u32,
    pub(crate) coalescing: u32,
    pub(crate) async_config: u32,
    /// Granted I/O (SQs, CQs), one-based, once Number of Queues was set.
    pub(crate) queues_granted: Option<(u16, u16)>,
}

impl Features {
    pub(crate) fn new(vwc: bool) -> Self {
        Features {
            wce: vwc,
            arbitration: 0,
            power: 0,
            temp_threshold: 343,
            coalescing: 0,
            async_config: 0,
            queues_granted: None,
        }
    }
}

/// SMART counters.
#[derive(Default)]
pub(crate) struct Smart {
    pub(crate) read_cmds: u64,
    pub(crate) write_cmds: u64,
    pub(crate) read_512: u64,
    pub(crate) write_512: u64,
}

/// The device-side state behind the device lock.
pub(crate) struct CommandProcessor {
    pub(crate) limits: Limits,
    /// The configuration the controller was made from (namespaces attached
    /// at run time take their identity from it).
    pub(crate) config: EmuConfig,
    /// Namespaces by NSID - 1, up to Identify NN; `None`: not attached.
    pub(crate) nss: Vec<Option<DeviceNamespace>>,
    pub(crate) identify: Box<IdentifyController>,
    pub(crate) sqs: Vec<Option<Sq>>,
    pub(crate) cqs: Vec<Option<Cq>>,
    pub(crate) active_sqs: Vec<u16>,
    pub(crate) active_cqs: Vec<u16>,
    pub(crate) enabled: bool,
    /// Fatal status or vanished: nothing is processed until reset.
    pub(crate) halted: bool,
    pub(crate) features: Features,
    pub(crate) smart: Smart,
    /// Error log, oldest first; `error_count` numbers them.
    pub(crate) errors: Vec<ErrorInformation>,
    pub(crate) error_count: u64,
    delayed: Vec<Delayed>,
    pub(crate) stuck: Vec<Stuck>,
    /// (sqid, cid) of commands to abort when fetched.
    pub(crate) abort_on_fetch: Vec<(u16, u16)>,
    /// CIDs of outstanding Asynchronous Event Requests.
    pub(crate) aers: Vec<u16>,
    /// Events raised and not yet reported, which log pages mask them, the
    /// Changed Namespace List and the SMART critical warning.
    pub(crate) events: EventState,
    /// First commands of fused pairs waiting for their second.
    pub(crate) fused: Vec<FusedFirst>,
    /// Staging for commands on namespaces with metadata (grown once, reused).
    pub(crate) scratch: Scratch,
    /// Translation of the last data buffer region the controller touched.
    pub(crate) data_cache: TranslationCache,
    /// Shadow doorbell buffers, once configured.
    pub(crate) dbbuf: Option<ShadowDoorbells>,
    /// EventIdx values ask for MMIO doorbells (inline processing, or the
    /// device thread's last round before it parks); otherwise the device
    /// thread polls the shadows and asks for none.
    pub(crate) armed: bool,
    /// A hostile controller's claim: the active namespace list runs up to
    /// this NSID (full pages), namespaces past the real ones read as empty.
    pub(crate) claimed_namespaces: Option<u32>,
}

impl CommandProcessor {
    pub(crate) fn new(cfg: &EmuConfig) -> Result<Self, EmuError> {
        let max_transfer = cfg.max_transfer_bytes();
        let mut nss = Vec::with_capacity(cfg.namespace_slots() as usize);
        for (i, ns) in cfg.namespaces.iter().enumerate() {
            let nsid = i as u32 + 1;
            nss.push(Some(DeviceNamespace::open(cfg, nsid, ns, max_transfer)?));
        }
        nss.resize_with(cfg.namespace_slots() as usize, || None);
        let qn = cfg.io_queues as usize + 1;
        Ok(CommandProcessor {
            config: cfg.clone(),
            limits: Limits {
                io_queues: cfg.io_queues,
                max_entries: cfg.max_queue_entries,
                max_transfer,
                vwc: cfg.volatile_write_cache,
                doorbell_buffer: cfg.doorbell_buffer,
                sgl: cfg.sgl,
                aer_limit: cfg.async_event_limit as usize,
            },
            nss,
            identify: identify_data::identify_controller(cfg),
            sqs: (0..qn).map(|_| None).collect(),
            cqs: (0..qn).map(|_| None).collect(),
            active_sqs: Vec::with_capacity(qn),
            active_cqs: Vec::with_capacity(qn),
            enabled: false,
            halted: false,
            features: Features::new(cfg.volatile_write_cache),
            smart: Smart::default(),
            errors: Vec::with_capacity(ERROR_LOG_ENTRIES),
            error_count: 0,
            delayed: Vec::with_capacity(64),
            stuck: Vec::with_capacity(64),
            abort_on_fetch: Vec::with_capacity(8),
            aers: Vec::with_capacity(cfg.async_event_limit as usize),
            events: EventState::default(),
            fused: Vec::new(),
            scratch: Scratch::default(),
            data_cache: TranslationCache::default(),
            dbbuf: None,
            armed: true,
            claimed_namespaces: None,
        })
    }

    /// CC.EN 0→1: read AQA/ASQ/ACQ, create the admin queues and report
    /// ready, or report fatal status for an invalid configuration.
    pub(crate) fn enable(&mut self, sh: &DeviceState, cc: Cc) {
        self.reset(sh);
        if self.halted {
            return;
        }
        let aqa = Aqa::from(sh.regs.aqa.load(Ordering::Acquire));
        let (asq, acq) = (sh.regs.asq(), sh.regs.acq());
        let sq_size = aqa.asqs_z() as u32 + 1;
        let cq_size = aqa.acqs_z() as u32 + 1;
        let valid = cc.css() == 0
            && cc.mps() == 0
            && cc.ams() == 0
            && cc.iosqes() == 6
            && cc.iocqes() == 4
            && sq_size >= 2
            && cq_size >= 2
            && asq & 0xfff == 0
            && acq & 0xfff == 0;
        let mem_ok = {
            let g = sh.iommu.guard();
            g.translate(asq, sq_size as usize * 64).is_some()
                && g.translate(acq, cq_size as usize * 16).is_some()
        };
        if !mem_ok {
            sh.counters.dma_fault();
        }
        if !valid || !mem_ok {
            sh.regs.set_fatal();
            self.halted = true;
            return;
        }
        self.add_cq(sh, 0, Cq::new(acq, cq_size));
        self.add_sq(sh, 0, Sq::new(asq, sq_size, 0));
        self.enabled = true;
        sh.regs.update_csts(|c| c.with_rdy(true).with_shst(0));
    }

    /// Controller reset (CC.EN 1→0): delete every queue, drop everything
    /// in flight, clear CSTS.
    pub(crate) fn reset(&mut self, sh: &DeviceState) {
        let fatal =
            nvme_engine::spec::registers::Csts::from(sh.regs.csts.load(Ordering::Acquire)).cfs();
        let sticky =
            fatal && (self.halted || !self.enabled) && sh.fatal_sticky.load(Ordering::Acquire);
        for qid in 0..self.sqs.len() {
            self.sqs[qid] = None;
            self.cqs[qid] = None;
            if let Some(db) = sh.doorbells.get(qid) {
                db.sq_size.store(0, Ordering::Release);
                db.cq_size.store(0, Ordering::Release);
                db.sq_tail.store(0, Ordering::Release);
                db.cq_head.store(0, Ordering::Release);
            }
        }
        self.active_sqs.clear();
        self.active_cqs.clear();
        self.delayed.clear();
        self.stuck.clear();
        self.abort_on_fetch.clear();
        // Outstanding AERs end with their queue, without a completion;
        // events not yet reported wait for the AERs the host sends next.
        self.aers.clear();
        self.events.reset();
        self.fused.clear();
        self.features = Features::new(self.limits.vwc);
        self.dbbuf_reset(sh);
        self.enabled = false;
        self.halted = sh.vanished() || sticky;
        let csts = if sticky {
            u32::from(nvme_engine::spec::registers::Csts::new().with_cfs(true))
        } else {
            0
        };
        sh.regs.csts.store(csts, Ordering::Release);
    }

    /// Normal or abrupt shutdown: make data durable and report SHST complete.
    pub(crate) fn shutdown(&mut self, sh: &DeviceState) {
        for ns in self.nss.iter_mut().flatten() {
            // A failed sync cannot be reported through SHST; the data stays
            // in the page cache and a later flush may succeed.
            let _ = ns.backend.flush();
        }
        sh.regs.set_shutdown_complete();
    }

    pub(crate) fn add_cq(&mut self, sh: &DeviceState, qid: u16, cq: Cq) {
        let db = &sh.doorbells[qid as usize];
        db.cq_head.store(0, Ordering::Release);
        db.cq_size.store(cq.size, Ordering::Release);
        self.cqs[qid as usize] = Some(cq);
        self.active_cqs.push(qid);
        sh.note_queue(qid);
    }

    pub(crate) fn add_sq(&mut self, sh: &DeviceState, qid: u16, sq: Sq) {
        let db = &sh.doorbells[qid as usize];
        if let Some(cq) = self.cqs[sq.cqid as usize].as_mut() {
            cq.sqs += 1;
        }
        db.sq_tail.store(0, Ordering::Release);
        db.sq_size.store(sq.size, Ordering::Release);
        self.sqs[qid as usize] = Some(sq);
        self.active_sqs.push(qid);
        sh.note_queue(qid);
    }

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
    fn cq_doorbell(&mut self, sh: &DeviceState, g: &DmaGuard<'_>, qid: u16) -> usize {
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
    fn apply_cq_head(&mut self, sh: &DeviceState, g: &DmaGuard<'_>, qid: u16, v: u32) -> usize {
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
    fn fetch_sq(
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

    /// Execute one fetched command and post its completion.
    fn run(
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
    fn tick(&mut self, sh: &DeviceState, g: &DmaGuard<'_>) -> usize {
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

    /// Status for a failed data transfer (and count DMA faults).
    pub(crate) fn xfer_status(sh: &DeviceState, e: XferError) -> Status {
        match e {
            XferError::Offset => generic_err(generic::INVALID_PRP_OFFSET),
            XferError::Sgl(sc) => generic_err(sc),
            XferError::Dma => {
                sh.counters.dma_fault();
                Status::new(StatusCodeType::GENERIC, generic::DATA_TRANSFER_ERROR)
            }
        }
    }

    /// Invalid Queue Identifier.
    pub(crate) fn invalid_qid() -> Status {
        specific_err(command_specific::INVALID_QUEUE_ID)
    }
}
