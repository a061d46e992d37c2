//! Configuration of the emulated controller: namespaces and their backing
//! stores, controller limits (MDTS, queue counts, CAP.MQES), identity
//! strings, and the execution mode; plus the errors a bad configuration
//! produces.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

/// Where a namespace keeps its blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// One namespace. NSIDs are assigned in order, starting at 1.
#[derive(Clone, Debug, PartialEq, Eq)]
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
        }
    }
    /// A namespace backed by the file at `path`.
    pub fn file(path: impl Into<PathBuf>, lba_size: u32, blocks: u64) -> Self {
        EmuNamespaceConfig {
            lba_size,
            blocks,
            backing: Backing::File(path.into()),
            read_only: false,
            grow: false,
        }
    }
    /// A namespace that moves no data.
    pub fn null(lba_size: u32, blocks: u64) -> Self {
        EmuNamespaceConfig {
            lba_size,
            blocks,
            backing: Backing::Null,
            read_only: false,
            grow: false,
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
    /// Namespace size in bytes.
    pub fn bytes(&self) -> u64 {
        self.blocks.saturating_mul(self.lba_size as u64)
    }
}

/// What the threaded poller does when it finds no work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
            let nsid = i as u32 + 1;
            if ns.lba_size != 512 && ns.lba_size != 4096 {
                return Err(EmuError::BadLbaSize {
                    nsid,
                    lba_size: ns.lba_size,
                });
            }
            if ns.blocks == 0 {
                return Err(EmuError::ZeroBlocks { nsid });
            }
            if ns.backing == Backing::Ram && usize::try_from(ns.bytes()).is_err() {
                return Err(EmuError::RamTooLarge {
                    nsid,
                    bytes: ns.bytes(),
                });
            }
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
        if let EmuMode::Threaded { batch: 0, .. } = self.mode {
            return Err(EmuError::ZeroBatch);
        }
        Ok(())
    }
}

/// Why an emulated controller could not be created.
#[derive(Debug, thiserror::Error)]
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
