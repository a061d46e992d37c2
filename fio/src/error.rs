//! What can go wrong between fio and the driver, each message saying what
//! to do, and the errno fio reports for it.

#![forbid(unsafe_code)]

use nvme_trid::{OpenError, TransportIdError};

/// A setup, init or buffer failure of one job.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// fio runs jobs as processes unless told otherwise.
    #[error(
        "job '{job}': the nvme-engine ioengine needs thread=1 (each fio thread gets its own \
         queue pair on a controller the whole process shares; forked jobs cannot share it): \
         add thread=1 to the job file or --thread to the command line"
    )]
    NeedsThread {
        /// Job name.
        job: String,
    },
    /// A filename that names no controller.
    #[error("job '{job}': {source}")]
    Filename {
        /// Job name.
        job: String,
        /// The parse error (boxed: it is large, and rare).
        #[source]
        source: Box<TransportIdError>,
    },
    /// A job without files.
    #[error("job '{job}': no filename; name a controller, e.g. filename=trtype=emu size=64M")]
    NoFile {
        /// Job name.
        job: String,
    },
    /// The controller could not be opened or brought up.
    #[error("{reason}")]
    Open {
        /// What failed, with the chain of causes.
        reason: String,
    },
    /// The namespace is not there.
    #[error("job '{job}': {source}")]
    Namespace {
        /// Job name.
        job: String,
        /// Which namespaces there are (boxed: it is large, and rare).
        #[source]
        source: Box<OpenError>,
    },
    /// A job whose files are on two controllers.
    #[error(
        "job '{job}': its files are on two controllers ({first} and {second}); one fio thread \
         drives one controller (its I/O buffers are mapped for that device): split the job, \
         one job per controller"
    )]
    TwoControllers {
        /// Job name.
        job: String,
        /// The first controller.
        first: String,
        /// The other one.
        second: String,
    },
    /// A block size the namespace cannot take.
    #[error(
        "job '{job}': {option} is not a multiple of the {lba}-byte LBA size of namespace \
         {nsid} on {ctrl}; use a multiple of {lba} (e.g. bs=4k)"
    )]
    BlockSize {
        /// Job name.
        job: String,
        /// `bs` (read), `bs` (write) ...
        option: String,
        /// The value.
        value: u64,
        /// LBA size.
        lba: u32,
        /// NSID.
        nsid: u32,
        /// Controller.
        ctrl: String,
    },
    /// A block size above the controller's largest transfer.
    #[error(
        "job '{job}': {option} is larger than one command may transfer on {ctrl} \
         ({max} bytes, bounded by MDTS); use bs={max} or less"
    )]
    TransferTooLarge {
        /// Job name.
        job: String,
        /// Option name.
        option: String,
        /// The value.
        value: u64,
        /// Largest transfer.
        max: usize,
        /// Controller.
        ctrl: String,
    },
    /// The queue pair could not be created.
    #[error("job '{job}': cannot create an I/O queue pair on {ctrl}: {reason}")]
    QueuePair {
        /// Job name.
        job: String,
        /// Controller.
        ctrl: String,
        /// The chain of causes.
        reason: String,
    },
    /// DMA memory for the job's buffers.
    #[error("job '{job}': cannot allocate {bytes} bytes of DMA memory for I/O buffers: {reason}")]
    Memory {
        /// Job name.
        job: String,
        /// Bytes asked for.
        bytes: usize,
        /// The chain of causes.
        reason: String,
    },
    /// fio asked for more buffer memory than one IOVA-contiguous block.
    #[error(
        "job '{job}': fio's I/O buffers ({bytes} bytes: iodepth x largest bs) do not fit in one \
         IOVA-contiguous block ({max} bytes here; no-IOMMU mode has one per 2 MiB hugepage): \
         lower iodepth or bs, or use vfio-pci with an IOMMU"
    )]
    BuffersTooLarge {
        /// Job name.
        job: String,
        /// Bytes asked for.
        bytes: usize,
        /// Largest block.
        max: usize,
    },
    /// A hook was called out of order (a fio change or a bug here).
    #[error("{hook} was called before the job was set up (an unexpected fio call order)")]
    NotReady {
        /// The hook.
        hook: &'static str,
    },
    /// A panic inside the engine, caught at the FFI boundary.
    #[error("internal error in {hook}: {message}")]
    Panic {
        /// The hook.
        hook: &'static str,
        /// The panic message.
        message: String,
    },
}

impl EngineError {
    /// The errno fio reports for this error.
    pub fn errno(&self) -> i32 {
        match self {
            EngineError::Open { .. } | EngineError::Namespace { .. } => libc::ENODEV,
            EngineError::Memory { .. } | EngineError::BuffersTooLarge { .. } => libc::ENOMEM,
            EngineError::QueuePair { .. } | EngineError::Panic { .. } => libc::EIO,
            _ => libc::EINVAL,
        }
    }
}

/// An error and all its sources, joined by ": ".
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}
