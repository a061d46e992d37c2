//! The command processor: the device-side state behind the device lock,
//! enable and reset (NVMe Base 2.0 §3.5), and queue creation. The child
//! modules extend it and this file imports none of them: polling rounds,
//! doorbells and SQ fetching in batches (`rounds.rs`), running a fetched
//! command, fault actions and completion posting (`execution.rs`), the
//! admin command set (`admin_set.rs`), the NVM command set
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
use crate::command_outcome::{generic_err, specific_err};
use crate::config::{EmuConfig, EmuError, EmuNamespaceConfig, ProtectionType};
use crate::device_state::DeviceState;
use crate::event_state::EventState;
use crate::guest_memory::TranslationCache;
use crate::identify_data::{self, ERROR_LOG_ENTRIES};
use crate::protection::PiFormat;
use crate::prp_walker::XferError;
use crate::queues::{Cq, Sq};
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
mod execution;
mod fused;
mod held;
mod namespace_changes;
mod nvm_set;
mod protected_io;
mod rounds;

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
