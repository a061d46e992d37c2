//! Configuration of the emulated controller: namespaces and their backing
//! stores, metadata formats and protection information, the optimal I/O
//! boundary, controller limits (MDTS, queue counts, CAP.MQES, SGL support,
//! the Asynchronous Event Request limit, namespace slots for attaching at
//! run time), identity strings, and the execution mode; plus the errors a
//! bad configuration produces.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

/// Where a namespace keeps its blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backing {
    /// Zero-filled anonymous memory of the namespace's size (pages are
    /// allocated lazily by the kernel, so a large, mostly unused namespace is cheap).
    Ram,
    /// A file, created at the namespace's size if missing. An existing file
    /// smaller than the namespace is refused unless
    /// [`EmuNamespaceConfig::grow_file`] allows extending it; a read-only
    /// namespace opens it read-only. Data survives the controller; a Flush,
    /// a FUA write and shutdown call `fdatasync`.
    File(PathBuf),
    /// No storage: reads leave the host buffer untouched, writes are
    /// discarded and no data is moved at all. For measuring the driver alone.
    Null,
}

/// End-to-end data protection type of a namespace (Identify Namespace DPS
/// bits 2:0; NVM Command Set 1.0 §5.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProtectionType {
    /// No protection information.
    #[default]
    None,
    /// Type 1: the reference tag is the low 32 bits of the LBA (checked
    /// against EILBRT + block index).
    Type1,
    /// Type 2: the reference tag starts at the command's (E)ILBRT and
    /// advances by one per block.
    Type2,
    /// Type 3: the reference tag is opaque and the same for every block of
    /// a command; the escape needs both tags all ones.
    Type3,
}

impl ProtectionType {
    /// The DPS type value (0 = none, 1..=3).
    pub fn dps(self) -> u8 {
        match self {
            ProtectionType::None => 0,
            ProtectionType::Type1 => 1,
            ProtectionType::Type2 => 2,
            ProtectionType::Type3 => 3,
        }
    }
}

/// One namespace. NSIDs are assigned in order, starting at 1.
///
/// Metadata and protection mirror QEMU's `nvme-ns` properties:
/// [`metadata_size`](Self::metadata_size) is `ms`,
/// [`extended_lba`](Self::extended_lba) is `mset`,
/// [`protection`](Self::protection) is `pi` and
/// [`pi_first`](Self::pi_first) is `pil`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EmuNamespaceConfig {
    /// Logical block size in bytes: 512 or 4096.
    pub lba_size: u32,
    /// Size in logical blocks (NSZE).
    pub blocks: u64,
    /// Backing store.
    pub backing: Backing,
    /// Report the namespace write protected (NSATTR bit 0) and fail writes
    /// with Attempted Write to Read Only Range. A backing file is opened
    /// read-only (and neither created nor extended).
    pub read_only: bool,
    /// Extend an existing backing file smaller than the namespace (default:
    /// refused, so a typo in a size never silently grows someone's file).
    pub grow: bool,
    /// Metadata bytes per logical block (LBAF MS): 0 (none) or a multiple of
    /// 8 up to 256. A RAM namespace keeps it in memory beside the data, a
    /// file namespace in a second file named after the first with `.meta`
    /// appended (created or extended as needed), a null namespace nowhere.
    pub metadata_size: u16,
    /// Metadata transferred at the end of each block in the data buffer
    /// (FLBAS bit 4, "extended LBA") instead of a separate buffer at MPTR.
    pub extended_lba: bool,
    /// Protection information type; needs at least 8 bytes of metadata.
    pub protection: ProtectionType,
    /// Protection information in the first 8 bytes of the metadata (DPS
    /// bit 3) instead of the last 8.
    pub pi_first: bool,
    /// NOIOB — optimal I/O boundary in blocks (0: none reported). Commands
    /// crossing it still work; a driver splits at it for speed.
    pub optimal_io_boundary: u16,
}

impl EmuNamespaceConfig {
    /// A RAM namespace of `blocks` blocks of `lba_size` bytes.
    pub fn ram(lba_size: u32, blocks: u64) -> Self {
        EmuNamespaceConfig {
            lba_size,
            blocks,
            backing: Backing::Ram,
            read_only: false,
            grow: false,
            metadata_size: 0,
            extended_lba: false,
            protection: ProtectionType::None,
            pi_first: false,
            optimal_io_boundary: 0,
        }
    }
    /// A namespace backed by the file at `path`.
    pub fn file(path: impl Into<PathBuf>, lba_size: u32, blocks: u64) -> Self {
        EmuNamespaceConfig {
            backing: Backing::File(path.into()),
            ..Self::ram(lba_size, blocks)
        }
    }
    /// A namespace that moves no data.
    pub fn null(lba_size: u32, blocks: u64) -> Self {
        EmuNamespaceConfig {
            backing: Backing::Null,
            ..Self::ram(lba_size, blocks)
        }
    }
    /// This namespace, write protected.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }
    /// Allow extending an existing backing file to the namespace's size.
    pub fn grow_file(mut self) -> Self {
        self.grow = true;
        self
    }
    /// Format with `ms` bytes of metadata per block, interleaved with the
    /// data (`extended`) or in a separate buffer.
    pub fn metadata(mut self, ms: u16, extended: bool) -> Self {
        self.metadata_size = ms;
        self.extended_lba = extended;
        self
    }
    /// Protection information of `kind`, in the first (`first`) or last 8
    /// bytes of the metadata (8 bytes of metadata are added if none was set).
    pub fn protection(mut self, kind: ProtectionType, first: bool) -> Self {
        self.protection = kind;
        self.pi_first = first;
        if self.metadata_size == 0 && kind != ProtectionType::None {
            self.metadata_size = 8;
        }
        self
    }
    /// Report an optimal I/O boundary of `blocks` (NOIOB).
    pub fn optimal_io_boundary(mut self, blocks: u16) -> Self {
        self.optimal_io_boundary = blocks;
        self
    }
    /// Namespace size in bytes.
    pub fn bytes(&self) -> u64 {
        self.blocks.saturating_mul(self.lba_size as u64)
    }
}

impl EmuNamespaceConfig {
    /// Check this namespace's configuration as namespace `nsid`, naming
    /// the first problem.
    pub fn validate(&self, nsid: u32) -> Result<(), EmuError> {
        if self.lba_size != 512 && self.lba_size != 4096 {
            return Err(EmuError::BadLbaSize {
                nsid,
                lba_size: self.lba_size,
            });
        }
        if self.blocks == 0 {
            return Err(EmuError::ZeroBlocks { nsid });
        }
        self.validate_format(nsid)?;
        if self.backing == Backing::Ram && usize::try_from(self.bytes()).is_err() {
            return Err(EmuError::RamTooLarge {
                nsid,
                bytes: self.bytes(),
            });
        }
        Ok(())
    }

    /// Check the format fields of namespace `nsid`.
    fn validate_format(&self, nsid: u32) -> Result<(), EmuError> {
        let ms = self.metadata_size;
        if ms > 256 || !ms.is_multiple_of(8) {
            return Err(EmuError::BadMetadataSize { nsid, ms });
        }
        if self.protection != ProtectionType::None && ms < 8 {
            return Err(EmuError::ProtectionNeedsMetadata { nsid });
        }
        if self.extended_lba && ms == 0 {
            return Err(EmuError::ExtendedWithoutMetadata { nsid });
        }
        if self.pi_first && self.protection == ProtectionType::None {
            return Err(EmuError::PiLocationWithoutProtection { nsid });
        }
        Ok(())
    }
}

/// What the threaded poller does when it finds no work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdlePolicy {
    /// Busy-poll forever (lowest latency; one core is always at 100 %). For benchmarks.
    Spin,
    /// Spin for `spin_polls` idle rounds, then `yield_now` for `yield_polls`
    /// rounds, then sleep up to `sleep` between rounds (a doorbell write wakes
    /// the poller at once). Keeps tests on small machines from starving.
    Backoff {
        /// Idle rounds spent busy-polling with `spin_loop` hints.
        spin_polls: u32,
        /// Further idle rounds that yield the CPU.
        yield_polls: u32,
        /// Longest sleep between idle rounds after that.
        sleep: Duration,
    },
}

impl Default for IdlePolicy {
    fn default() -> Self {
        IdlePolicy::Backoff {
            spin_polls: 4096,
            yield_polls: 4096,
            sleep: Duration::from_micros(200),
        }
    }
}

/// How the controller executes commands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum EmuMode {
    /// A doorbell write processes its queue synchronously on the writing
    /// thread: deterministic, no extra thread.
    #[default]
    Inline,
    /// A device thread polls the doorbells, like real hardware. The thread
    /// exits when the controller is dropped.
    Threaded {
        /// Behaviour when there is nothing to do.
        idle: IdlePolicy,
        /// Most commands taken from one submission queue per polling round.
        batch: u32,
        /// Pin the device thread to this CPU (`None`: wherever the scheduler
        /// puts it). A spinning device thread that shares a core with a
        /// spinning host thread gets only scheduler time slices: give it a
        /// core of its own, or use a [`IdlePolicy::Backoff`] that yields.
        core: Option<usize>,
    },
}

impl EmuMode {
    /// Threaded mode with the default idle back-off and batch size.
    pub fn threaded() -> Self {
        EmuMode::Threaded {
            idle: IdlePolicy::default(),
            batch: 64,
            core: None,
        }
    }
    /// Threaded mode that never stops spinning (benchmarks).
    pub fn threaded_spin() -> Self {
        EmuMode::Threaded {
            idle: IdlePolicy::Spin,
            batch: 64,
            core: None,
        }
    }
    /// Threaded mode for a device thread that shares its CPU with a busy
    /// host thread: a short spin, then it yields the CPU on every idle round
    /// (and sleeps only after a long idle stretch).
    pub fn threaded_cooperative() -> Self {
        EmuMode::Threaded {
            idle: IdlePolicy::Backoff {
                spin_polls: 16,
                yield_polls: 1 << 20,
                sleep: Duration::from_micros(200),
            },
            batch: 64,
            core: None,
        }
    }
    /// The same mode with the device thread pinned to `core` (no effect in
    /// inline mode, which has no device thread).
    pub fn on_core(self, core: usize) -> Self {
        match self {
            EmuMode::Threaded { idle, batch, .. } => EmuMode::Threaded {
                idle,
                batch,
                core: Some(core),
            },
            EmuMode::Inline => EmuMode::Inline,
        }
    }
}

/// Configuration of an emulated controller.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EmuConfig {
    /// Namespaces, NSID 1 first. At least one.
    pub namespaces: Vec<EmuNamespaceConfig>,
    /// MDTS: largest transfer is 2^mdts × 4 KiB, 1..=12 (default 7: 512 KiB;
    /// 10 and above need chained PRP lists).
    pub mdts: u8,
    /// I/O queue pairs supported (what Set Features Number of Queues grants at most), 1..=1024.
    pub io_queues: u16,
    /// Largest queue in entries (CAP.MQES + 1), 2..=65536.
    pub max_queue_entries: u32,
    /// Whether a volatile write cache is reported (Identify VWC, feature 06h).
    pub volatile_write_cache: bool,
    /// Serial number (up to 20 ASCII characters).
    pub serial: String,
    /// Model number (up to 40 ASCII characters).
    pub model: String,
    /// Firmware revision (up to 8 ASCII characters).
    pub firmware: String,
    /// Execution mode.
    pub mode: EmuMode,
    /// Whether Doorbell Buffer Config (shadow doorbells, OACS bit 8) is
    /// supported. Default true, as on QEMU 7.1 and later.
    pub doorbell_buffer: bool,
    /// Whether SGLs are supported (Identify SGLS: Data Block, Segment, Last
    /// Segment and Bit Bucket descriptors, and an SGL at MPTR). Default
    /// true, as on QEMU. Without it a command with PSDT other than 0 fails
    /// with Invalid Field.
    pub sgl: bool,
    /// Whether MPTR may hold an SGL descriptor (Identify SGLS bit 19: the
    /// metadata described by an SGL, PSDT 10b), when `sgl` is set. Default
    /// true. Without it a command with PSDT 10b fails with Invalid Field.
    pub sgl_metadata: bool,
    /// Asynchronous Event Requests the controller keeps outstanding at most
    /// (Identify AERL + 1), 1..=16; default 4, as QEMU. One more fails with
    /// Asynchronous Event Request Limit Exceeded.
    pub async_event_limit: u8,
    /// Largest NSID (Identify NN), so namespaces can be attached at run time
    /// (`EmuHandle::attach_namespace`): 0 (default) means the number of
    /// configured namespaces; otherwise at least that many, at most 1024.
    pub max_namespaces: u32,
}

impl Default for EmuConfig {
    /// One 64 MiB RAM namespace of 512-byte blocks, inline mode.
    fn default() -> Self {
        EmuConfig::ram(64 << 20)
    }
}

impl EmuConfig {
    /// A controller with one RAM namespace of `bytes` (rounded down to whole
    /// 512-byte blocks), inline mode and default limits.
    pub fn ram(bytes: u64) -> Self {
        EmuConfig {
            namespaces: vec![EmuNamespaceConfig::ram(512, bytes / 512)],
            mdts: 7,
            io_queues: 64,
            max_queue_entries: 1024,
            volatile_write_cache: true,
            serial: "EMU0001".into(),
            model: "nvme-engine emulated controller".into(),
            firmware: "1.0".into(),
            mode: EmuMode::Inline,
            doorbell_buffer: true,
            sgl: true,
            sgl_metadata: true,
            async_event_limit: 4,
            max_namespaces: 0,
        }
    }
    /// The same configuration with no namespaces (add them with [`EmuConfig::namespace`]).
    pub fn without_namespaces(mut self) -> Self {
        self.namespaces.clear();
        self
    }
    /// Append a namespace.
    pub fn namespace(mut self, ns: EmuNamespaceConfig) -> Self {
        self.namespaces.push(ns);
        self
    }
    /// Set the execution mode.
    pub fn mode(mut self, mode: EmuMode) -> Self {
        self.mode = mode;
        self
    }
    /// Largest transfer in bytes (2^MDTS pages of 4 KiB).
    pub fn max_transfer_bytes(&self) -> usize {
        4096usize << self.mdts.min(20)
    }
    /// The largest NSID the controller reports (Identify NN).
    pub fn namespace_slots(&self) -> u32 {
        if self.max_namespaces == 0 {
            self.namespaces.len() as u32
        } else {
            self.max_namespaces
        }
    }

    /// Check the configuration, naming the first problem.
    pub fn validate(&self) -> Result<(), EmuError> {
        if self.namespaces.is_empty() {
            return Err(EmuError::NoNamespaces);
        }
        if self.namespaces.len() > 1024 {
            return Err(EmuError::TooManyNamespaces {
                count: self.namespaces.len(),
            });
        }
        for (i, ns) in self.namespaces.iter().enumerate() {
            ns.validate(i as u32 + 1)?;
        }
        if !(1..=12).contains(&self.mdts) {
            return Err(EmuError::BadMdts { mdts: self.mdts });
        }
        if !(1..=1024).contains(&self.io_queues) {
            return Err(EmuError::BadQueueCount {
                io_queues: self.io_queues,
            });
        }
        if !(2..=65536).contains(&self.max_queue_entries) {
            return Err(EmuError::BadQueueEntries {
                entries: self.max_queue_entries,
            });
        }
        if !(1..=16).contains(&self.async_event_limit) {
            return Err(EmuError::BadAsyncEventLimit {
                limit: self.async_event_limit,
            });
        }
        let n = self.namespaces.len() as u32;
        if self.max_namespaces != 0 && !(n..=1024).contains(&self.max_namespaces) {
            return Err(EmuError::BadMaxNamespaces {
                max: self.max_namespaces,
                configured: n,
            });
        }
        if let EmuMode::Threaded { batch: 0, .. } = self.mode {
            return Err(EmuError::ZeroBatch);
        }
        Ok(())
    }
}

/// Why an emulated controller could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmuError {
    /// The configuration has no namespace.
    #[error(
        "the emulated controller needs at least one namespace; add one with EmuConfig::namespace"
    )]
    NoNamespaces,
    /// More namespaces than one Identify namespace list can name.
    #[error("{count} namespaces configured; the emulated controller supports at most 1024")]
    TooManyNamespaces {
        /// Namespaces configured.
        count: usize,
    },
    /// An LBA size other than 512 or 4096.
    #[error("namespace {nsid}: LBA size {lba_size} is not supported; use 512 or 4096")]
    BadLbaSize {
        /// The namespace.
        nsid: u32,
        /// The size asked for.
        lba_size: u32,
    },
    /// A namespace of zero blocks.
    #[error("namespace {nsid} has zero blocks; give it a size of at least one block")]
    ZeroBlocks {
        /// The namespace.
        nsid: u32,
    },
    /// A RAM namespace larger than the address space.
    #[error(
        "namespace {nsid}: {bytes} bytes of RAM cannot be mapped; use a smaller size or a File backing"
    )]
    RamTooLarge {
        /// The namespace.
        nsid: u32,
        /// Bytes asked for.
        bytes: u64,
    },
    /// Anonymous memory for a RAM namespace could not be mapped.
    #[error(
        "namespace {nsid}: mapping {bytes} bytes of RAM failed; use a smaller size or a File backing"
    )]
    RamMap {
        /// The namespace.
        nsid: u32,
        /// Bytes asked for.
        bytes: u64,
        /// The mmap error.
        #[source]
        source: std::io::Error,
    },
    /// The RAM namespaces need more memory than the machine has left.
    #[error("{0}; or back the namespaces with a file or null media")]
    Memory(#[source] nvme_engine::dma::DmaError),
    /// A backing file could not be opened or created.
    #[error(
        "namespace {nsid}: cannot open or create backing file {path}; check the directory exists and is writable"
    )]
    FileOpen {
        /// The namespace.
        nsid: u32,
        /// The file.
        path: PathBuf,
        /// The open error.
        #[source]
        source: std::io::Error,
    },
    /// An existing backing file is smaller than the namespace and growing
    /// it was not asked for.
    #[error(
        "namespace {nsid}: backing file {path} holds {file_bytes} bytes, less than the {bytes} bytes asked for; \
         ask for at most {file_bytes} bytes, or allow extending the file (EmuNamespaceConfig::grow_file)"
    )]
    FileTooSmall {
        /// The namespace.
        nsid: u32,
        /// The file.
        path: PathBuf,
        /// Its size.
        file_bytes: u64,
        /// Size needed.
        bytes: u64,
    },
    /// A backing file could not be extended to the namespace size.
    #[error(
        "namespace {nsid}: cannot extend backing file {path} to {bytes} bytes; check free space and permissions"
    )]
    FileExtend {
        /// The namespace.
        nsid: u32,
        /// The file.
        path: PathBuf,
        /// Size needed.
        bytes: u64,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// MDTS outside 1..=12.
    #[error("MDTS {mdts} is not supported; use 1..=12 (8 KiB .. 16 MiB per command)")]
    BadMdts {
        /// The value asked for.
        mdts: u8,
    },
    /// I/O queue pair count outside 1..=1024.
    #[error("{io_queues} I/O queue pairs is not supported; use 1..=1024")]
    BadQueueCount {
        /// The value asked for.
        io_queues: u16,
    },
    /// Queue size limit outside 2..=65536.
    #[error("max_queue_entries {entries} is not supported; use 2..=65536")]
    BadQueueEntries {
        /// The value asked for.
        entries: u32,
    },
    /// A metadata size the emulator does not format.
    #[error(
        "namespace {nsid}: metadata size {ms} is not supported; use 0 or a multiple of 8 up to 256 (8, 16 and 64 are common)"
    )]
    BadMetadataSize {
        /// The namespace.
        nsid: u32,
        /// The size asked for.
        ms: u16,
    },
    /// Protection information without room for it.
    #[error(
        "namespace {nsid}: protection information needs at least 8 bytes of metadata per block; set a metadata size of 8 or more"
    )]
    ProtectionNeedsMetadata {
        /// The namespace.
        nsid: u32,
    },
    /// Extended LBAs asked for with no metadata to interleave.
    #[error(
        "namespace {nsid}: extended LBA (metadata interleaved with data) needs a metadata size; set one or turn extended LBA off"
    )]
    ExtendedWithoutMetadata {
        /// The namespace.
        nsid: u32,
    },
    /// A protection information location without protection information.
    #[error(
        "namespace {nsid}: the protection information location (first 8 bytes) is set but no protection type is; pick type 1, 2 or 3"
    )]
    PiLocationWithoutProtection {
        /// The namespace.
        nsid: u32,
    },
    /// An Asynchronous Event Request limit outside 1..=16.
    #[error("async_event_limit {limit} is not supported; use 1..=16 outstanding requests")]
    BadAsyncEventLimit {
        /// The value asked for.
        limit: u8,
    },
    /// A namespace slot count below the configured namespaces or above 1024.
    #[error(
        "max_namespaces {max} is not supported; use 0 (the {configured} configured) or {configured}..=1024"
    )]
    BadMaxNamespaces {
        /// The value asked for.
        max: u32,
        /// Namespaces configured.
        configured: u32,
    },
    /// Attaching a namespace with no free NSID left.
    #[error("no free namespace ID: all {slots} are attached; raise EmuConfig::max_namespaces")]
    NoFreeNamespaceId {
        /// Identify NN.
        slots: u32,
    },
    /// A namespace operation on an NSID that is not attached.
    #[error("namespace {nsid} is not attached; attached namespaces are listed by Identify CNS 02h")]
    NotAttached {
        /// The namespace.
        nsid: u32,
    },
    /// Threaded mode with a batch of zero.
    #[error("threaded mode needs a batch of at least one command per round")]
    ZeroBatch,
    /// The device thread could not be started.
    #[error("cannot start the emulated controller's device thread")]
    Thread(#[source] std::io::Error),
    /// The device thread could not be pinned to the CPU asked for.
    #[error(
        "cannot pin the emulated controller's device thread to CPU {core}; pick an online CPU this process may run on (taskset -p $$ shows them)"
    )]
    Pin {
        /// The CPU asked for.
        core: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        EmuConfig::default().validate().unwrap();
        assert_eq!(EmuConfig::ram(1 << 20).namespaces[0].blocks, 2048);
        assert_eq!(EmuConfig::default().max_transfer_bytes(), 512 << 10);
    }

    #[test]
    fn bad_configs_name_the_problem() {
        let e = EmuConfig::ram(4096).without_namespaces().validate();
        assert!(matches!(e, Err(EmuError::NoNamespaces)));
        let e = EmuConfig::ram(4096)
            .without_namespaces()
            .namespace(EmuNamespaceConfig::ram(1024, 8))
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("use 512 or 4096"), "{e}");
        let e = EmuConfig::ram(4096)
            .without_namespaces()
            .namespace(EmuNamespaceConfig::null(512, 0))
            .validate()
            .unwrap_err();
        assert!(matches!(e, EmuError::ZeroBlocks { nsid: 1 }));
        let mut c = EmuConfig::ram(4096);
        c.mdts = 0;
        assert!(matches!(c.validate(), Err(EmuError::BadMdts { mdts: 0 })));
        let mut c = EmuConfig::ram(4096);
        c.max_queue_entries = 1;
        assert!(c.validate().is_err());
    }

    #[test]
    fn event_limit_namespace_slots_and_formats_are_checked() {
        let mut c = EmuConfig::ram(4096);
        c.async_event_limit = 0;
        assert!(matches!(
            c.validate(),
            Err(EmuError::BadAsyncEventLimit { limit: 0 })
        ));
        c.async_event_limit = 17;
        assert!(c.validate().is_err());
        let mut c = EmuConfig::ram(4096);
        c.max_namespaces = 1025;
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("1..=1024"), "{e}");
        c.max_namespaces = 8;
        c.validate().unwrap();
        assert_eq!(c.namespace_slots(), 8);
        assert_eq!(EmuConfig::ram(4096).namespace_slots(), 1);
        let ns = EmuNamespaceConfig::ram(512, 8).protection(ProtectionType::Type3, true);
        assert_eq!(ns.metadata_size, 8, "protection brings its 8 bytes");
        ns.validate(1).unwrap();
        let mut ns = EmuNamespaceConfig::ram(512, 8).metadata(16, false);
        ns.pi_first = true;
        assert!(matches!(
            ns.validate(2),
            Err(EmuError::PiLocationWithoutProtection { nsid: 2 })
        ));
    }

    #[test]
    fn on_core_pins_threaded_modes_only() {
        assert!(matches!(
            EmuMode::threaded_spin().on_core(3),
            EmuMode::Threaded {
                idle: IdlePolicy::Spin,
                core: Some(3),
                ..
            }
        ));
        assert_eq!(EmuMode::Inline.on_core(3), EmuMode::Inline);
        assert!(matches!(
            EmuMode::threaded_cooperative(),
            EmuMode::Threaded {
                idle: IdlePolicy::Backoff { .. },
                core: None,
                ..
            }
        ));
    }
}
