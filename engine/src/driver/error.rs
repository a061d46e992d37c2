//! Driver errors: controller bring-up and admin failures ([`DriverError`]),
//! requests refused before submission ([`SubmitError`]) and failed I/O
//! ([`IoError`]). Device status codes display with their specification names
//! (NVMe Base 2.0 §4.6.1.2).

#![forbid(unsafe_code)]

use std::fmt;
use std::time::Duration;

use crate::dma::{DmaBuf, DmaError};
use crate::spec::protection::MetadataFormat;
use crate::spec::status::Status;

use super::prp::PrpError;
use super::tracker::IoExtra;

/// Why a controller takes no more commands: the one error for "device
/// removed" and "controller failed", shared by every layer that reports it
/// ([`SubmitErrorKind::Gone`] before submission, [`IoError::Gone`] for
/// commands in flight, and the reactor's request error). Commands in flight
/// when it happened may or may not have taken effect; later ones are refused
/// without reaching the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceGone {
    /// The device is gone: its registers read all ones, or the kernel's
    /// node answers ENODEV (surprise removal, a PCI error, or a reset or
    /// unbind from outside this process).
    #[error(
        "the device is gone (removed, a PCI error, or reset or unbound from outside); commands \
         in flight may or may not have taken effect and new ones are refused — stop sending to it, \
         check `lspci` and `dmesg`, bind it again (scripts/setup.sh) and create a new Controller \
         once it is back"
    )]
    Removed,
    /// A controller reset failed: the controller is unusable until a later
    /// [`Controller::reset`](super::Controller::reset) succeeds.
    #[error(
        "the controller failed and a reset did not bring it back; commands in flight may or may \
         not have taken effect and new ones are refused — check `dmesg` and the controller's \
         error log, then call Controller::reset() or create a new Controller"
    )]
    Failed,
}

/// Errors from the controller, the admin queue and queue pair management.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// A register read returned all ones: the device is gone (surprise removal,
    /// a PCI error, or a reset in another process).
    #[error(
        "{device}: CSTS reads 0xFFFFFFFF while {during}: {}",
        DeviceGone::Removed
    )]
    DeviceGone {
        /// Device name.
        device: String,
        /// What the driver was doing.
        during: &'static str,
    },
    /// CSTS.CFS is set: the controller hit a fatal error.
    #[error(
        "{device}: controller fatal status (CSTS.CFS) while {during}; the controller needs a \
         reset — re-create the Controller, and check the device's error log if it persists"
    )]
    ControllerFatal {
        /// Device name.
        device: String,
        /// What the driver was doing.
        during: &'static str,
    },
    /// A CSTS transition did not happen within the controller's timeout.
    #[error(
        "{device}: timed out after {waited_ms} ms waiting for {what} (CAP.TO allows {cap_to_ms} ms); \
         the controller is not responding — check its firmware/power state or reset it"
    )]
    ReadyTimeout {
        /// Device name.
        device: String,
        /// What was awaited.
        what: &'static str,
        /// Milliseconds waited.
        waited_ms: u64,
        /// CAP.TO in milliseconds.
        cap_to_ms: u64,
    },
    /// CAP.CSS does not list the NVM command set.
    #[error(
        "{device}: CAP.CSS does not advertise the NVM command set; this driver supports only NVM controllers"
    )]
    NoNvmCommandSet {
        /// Device name.
        device: String,
    },
    /// The controller cannot use 4 KiB memory pages.
    #[error(
        "{device}: 4 KiB host pages are outside the controller's supported range \
         (CAP.MPSMIN {min_bytes} .. CAP.MPSMAX {max_bytes} bytes); this driver needs 4 KiB"
    )]
    PageSizeUnsupported {
        /// Device name.
        device: String,
        /// Smallest page size supported.
        min_bytes: u64,
        /// Largest page size supported.
        max_bytes: u64,
    },
    /// DMA memory could not be allocated or mapped.
    #[error("DMA memory for {what}")]
    Dma {
        /// What the memory was for.
        what: &'static str,
        /// The allocation error.
        #[source]
        source: DmaError,
    },
    /// Queue memory came back without a contiguous IOVA range.
    #[error(
        "{what} memory is not IOVA-contiguous for {bytes} bytes; use fewer queue entries \
         so the ring fits in one hugepage"
    )]
    QueueMemory {
        /// Which queue.
        what: &'static str,
        /// Bytes needed.
        bytes: usize,
    },
    /// An admin command did not complete in time.
    #[error(
        "admin command {command} got no completion within {timeout:?}; the controller may be \
         hung — raise ControllerOptions::admin_timeout or reset the controller"
    )]
    AdminTimeout {
        /// Command name.
        command: &'static str,
        /// The timeout.
        timeout: Duration,
    },
    /// An admin command with a data buffer timed out; the driver made sure
    /// the device can no longer write the buffer before returning.
    #[error(
        "admin command {command} got no completion within {timeout:?}; {recovery}. Its buffer \
         is safe to reuse; if this repeats the controller is hung — check its firmware and \
         error log, or raise ControllerOptions::admin_timeout"
    )]
    AdminDataTimeout {
        /// Command name.
        command: &'static str,
        /// The timeout.
        timeout: Duration,
        /// What made the buffer safe (abort and reset, or quiesce).
        recovery: &'static str,
    },
    /// The device could not be proven to have stopped DMA; the memory it
    /// may still write is quarantined.
    #[error(
        "{device}: {during} failed and the device could not be stopped from writing to memory \
         ({reason}); the buffers it may still write ({bytes} bytes of caller buffer, plus the \
         queues' own memory) are quarantined: never reused or unmapped while the process runs. \
         Re-create the Controller after a power cycle or PCI remove/rescan; with vfio-pci and an \
         IOMMU a device can never write outside its mappings"
    )]
    DmaQuarantined {
        /// Device name.
        device: String,
        /// What failed.
        during: &'static str,
        /// Why quiescing failed.
        reason: String,
        /// Bytes of caller buffer quarantined.
        bytes: usize,
    },
    /// The device was quiesced (bus mastering off) after a failed recovery.
    #[error(
        "{device}: refused {during}: the controller could not be reset, so its DMA was stopped \
         (bus mastering off / function reset); re-create the Controller (reopen the device) to \
         use it again"
    )]
    Quiesced {
        /// Device name.
        device: String,
        /// What was refused.
        during: &'static str,
    },
    /// The admin submission queue is full (only possible after timeouts).
    #[error(
        "the admin submission queue is full of commands that never completed; reset the controller"
    )]
    AdminQueueFull,
    /// An admin command completed with an error status.
    #[error("admin command {command} failed: {status}")]
    AdminFailed {
        /// Command name.
        command: &'static str,
        /// The device's status.
        status: Status,
    },
    /// The device returned data the driver cannot use.
    #[error("{device}: {what}")]
    BadDeviceData {
        /// Device name.
        device: String,
        /// What is wrong with it.
        what: String,
    },
    /// Every granted I/O queue pair is in use.
    #[error(
        "no free I/O queue: all {granted} queue pairs the controller granted are in use; \
         delete a queue pair first or ask for more with ControllerOptions::io_queues"
    )]
    QueuesExhausted {
        /// Queue pairs granted by Set Features Number of Queues.
        granted: u16,
    },
    /// A caller-supplied option is invalid.
    #[error("invalid option {name} = {value}: {hint}")]
    InvalidOption {
        /// Option name.
        name: &'static str,
        /// Its value.
        value: u64,
        /// What is allowed.
        hint: &'static str,
    },
    /// A data buffer could not be described to the device.
    #[error("data buffer cannot be used for DMA")]
    Buffer(#[source] PrpError),
    /// A data buffer is smaller than the command needs.
    #[error(
        "buffer of {len} bytes is too small: the command needs {needed} bytes; allocate a larger DmaBuf"
    )]
    BufferTooSmall {
        /// Buffer length.
        len: usize,
        /// Bytes needed.
        needed: usize,
    },
    /// The controller was shut down; create a new one to continue.
    #[error("the controller is shut down; create a new Controller to use the device again")]
    ShutDown,
    /// The controller is resetting, removed or failed.
    #[error(
        "the controller is not usable right now ({health:?}); wait for a reset to finish, \
         call Controller::reset(), or re-create the Controller if the device was removed"
    )]
    NotLive {
        /// Its health.
        health: crate::driver::health::Health,
    },
    /// A synchronous I/O helper failed.
    #[error("I/O failed")]
    Io(#[source] IoError),
}

/// Why a request was refused before it reached the device. Each variant says
/// what to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitErrorKind {
    /// Every queue slot is in flight.
    #[error(
        "queue full: {capacity} commands in flight; reap completions with process_completions \
         and retry, or create the queue pair with more entries"
    )]
    QueueFull {
        /// Commands the queue holds.
        capacity: usize,
    },
    /// The buffer (or block count) is zero.
    #[error("zero-length request: the buffer window or block count must be at least one block")]
    ZeroLength,
    /// The buffer length is not a whole number of blocks.
    #[error(
        "buffer length {len} is not a multiple of the namespace block size {block_size}; \
         set the DmaBuf window to a whole number of blocks"
    )]
    NotBlockMultiple {
        /// Buffer length.
        len: usize,
        /// Namespace block size.
        block_size: u32,
    },
    /// The buffer does not start on a dword boundary.
    #[error(
        "buffer IOVA {iova:#x} is not dword aligned; NVMe needs 4-byte alignment — \
         move the DmaBuf window start to a multiple of 4"
    )]
    Misaligned {
        /// The buffer's IOVA.
        iova: u64,
    },
    /// The LBA range runs past the end of the namespace.
    #[error(
        "LBA range {lba}..{lba}+{blocks} is past the end of namespace {nsid} \
         ({namespace_blocks} blocks); use LBAs below {namespace_blocks}"
    )]
    LbaOutOfRange {
        /// Namespace id.
        nsid: u32,
        /// Starting LBA.
        lba: u64,
        /// Blocks requested.
        blocks: u64,
        /// Namespace size in blocks.
        namespace_blocks: u64,
    },
    /// The transfer is larger than one command may move.
    #[error(
        "transfer of {len} bytes exceeds the maximum of {max} bytes per command; \
         split the I/O (Controller::max_transfer_bytes)"
    )]
    TooLarge {
        /// Requested bytes.
        len: usize,
        /// Maximum bytes.
        max: usize,
    },
    /// A split request needs more child commands than the queue pair
    /// holds at all ([`crate::Splitter`]).
    #[error(
        "transfer of {len} bytes needs {children} commands (maximum transfer and optimal I/O \
         boundary), more than the queue pair's {capacity} slots; create the queue pair with more \
         entries or submit smaller requests"
    )]
    TooManyChildren {
        /// Requested bytes.
        len: usize,
        /// Child commands the request needs.
        children: usize,
        /// Commands the queue pair holds.
        capacity: usize,
    },
    /// A token in the range [`crate::Splitter`] keeps for its child commands.
    #[error(
        "token {token:#x} is reserved for split child commands (tokens at or above \
         0xC000000000000000); use a smaller token"
    )]
    ReservedToken {
        /// The token.
        token: u64,
    },
    /// More blocks than one command can address (NLB is 16 bits).
    #[error("{blocks} blocks exceed the {max} blocks one command can address; split the request")]
    TooManyBlocks {
        /// Blocks requested.
        blocks: u64,
        /// Maximum.
        max: u64,
    },
    /// A write to a write-protected namespace.
    #[error(
        "namespace {nsid} is write protected (NSATTR); writes, write zeroes and deallocate are refused"
    )]
    ReadOnly {
        /// Namespace id.
        nsid: u32,
    },
    /// The controller lacks an optional command.
    #[error("{0} is not supported by this controller (Identify Controller ONCS)")]
    Unsupported(&'static str),
    /// Protection information was asked for (PRACT or PRCHK) on a
    /// namespace formatted without it.
    #[error(
        "namespace {nsid} is formatted {}; PRACT and PRCHK need a format with protection \
         information — clear IoOptions::pi, or reformat the namespace with a PI type \
         (nvme format --pi=1)",
        match format { Some(f) => format!("with {f}"), None => "without metadata".to_string() }
    )]
    ProtectionNotEnabled {
        /// Namespace id.
        nsid: u32,
        /// The namespace's metadata format, if any.
        format: Option<MetadataFormat>,
    },
    /// An extended-LBA buffer is not a whole number of blocks with their metadata.
    #[error(
        "buffer length {len} is not a multiple of {unit} bytes: the namespace interleaves \
         metadata with {block_size}-byte blocks (extended LBA), so each block takes {unit} bytes \
         of the buffer — size it to blocks × {unit}"
    )]
    NotExtendedBlockMultiple {
        /// Buffer length.
        len: usize,
        /// Bytes per block in the buffer (data + metadata).
        unit: usize,
        /// Block data size.
        block_size: u32,
    },
    /// The namespace keeps metadata in a separate buffer and none was given.
    #[error(
        "namespace {nsid} is formatted with {format}: the command needs a metadata buffer of \
         {bytes} bytes — pass it with IoData::with_metadata (or set PRACT on a format whose \
         metadata is the 8-byte tuple alone)"
    )]
    MetadataBufferMissing {
        /// Namespace id.
        nsid: u32,
        /// The namespace's metadata format.
        format: MetadataFormat,
        /// Bytes the metadata buffer needs.
        bytes: usize,
    },
    /// A metadata buffer was given where none travels.
    #[error("namespace {nsid}: a separate metadata buffer was given but {why}; drop it")]
    MetadataBufferUnused {
        /// Namespace id.
        nsid: u32,
        /// Why nothing would be moved through it.
        why: &'static str,
    },
    /// The metadata buffer does not match the data's block count.
    #[error(
        "metadata buffer of {len} bytes for {blocks} blocks: it must be exactly {expected} \
         bytes (blocks × metadata size) — set its DmaBuf window to that length"
    )]
    MetadataLength {
        /// The metadata buffer's length.
        len: usize,
        /// The length the command needs.
        expected: usize,
        /// Blocks the data covers.
        blocks: usize,
    },
    /// Segments that PRPs cannot describe, on a controller without SGLs.
    #[error(
        "segment {index} (IOVA {iova:#x}, {len} bytes) cannot be described with PRPs: {why}; \
         the controller reports no SGL support (Identify SGLS), so align the segments to 4 KiB \
         pages where they meet, or copy them into one buffer"
    )]
    SegmentsNeedSgl {
        /// Index of the segment.
        index: usize,
        /// Its IOVA.
        iova: u64,
        /// Its length.
        len: usize,
        /// What PRPs would need.
        why: &'static str,
    },
    /// An SGL was asked for but cannot be used.
    #[error("an SGL cannot describe this request: {0}")]
    Sgl(&'static str),
    /// The separate metadata cannot go as an SGL at MPTR (PSDT 10b).
    #[error("the metadata cannot be described by an SGL: {0}")]
    MetadataSgl(&'static str),
    /// More metadata segments than fit beside the data's descriptors.
    #[error(
        "{count} metadata segments given but this command's list pages hold at most {max} beside \
         its data descriptors; merge metadata segments (or data segments)"
    )]
    TooManyMetadataSegments {
        /// Metadata segments given.
        count: usize,
        /// The limit for this request.
        max: usize,
    },
    /// More segments than one command's list pages hold.
    #[error(
        "{count} segments given but one command describes at most {max}; merge segments or \
         split the request"
    )]
    TooManySegments {
        /// Segments given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The transport carrying the queue pair cannot carry this request.
    #[error(
        "{0} cannot be carried by this queue pair's transport; use a PCIe queue pair \
         (VFIO, uio or the emulated controller)"
    )]
    TransportUnsupported(&'static str),
    /// A fused pair's two halves do not match.
    #[error("fused Compare and Write: {0}")]
    FusedMismatch(&'static str),
    /// More Dataset Management ranges than one command carries.
    #[error(
        "{count} ranges given but one Dataset Management command carries at most {max}; split the list"
    )]
    TooManyRanges {
        /// Ranges given.
        count: usize,
        /// The limit (256).
        max: usize,
    },
    /// An empty range list.
    #[error("no ranges given: deallocate needs at least one LbaRange")]
    NoRanges,
    /// One Dataset Management range is empty or past the namespace end.
    #[error(
        "range {index} (LBA {lba}, {blocks} blocks) is empty or past the end of the namespace \
         ({namespace_blocks} blocks)"
    )]
    RangeOutOfRange {
        /// Position in the list.
        index: usize,
        /// Its starting LBA.
        lba: u64,
        /// Its length in blocks.
        blocks: u32,
        /// Namespace size in blocks.
        namespace_blocks: u64,
    },
    /// The buffer could not be described with PRPs.
    #[error("buffer cannot be described to the device: {0}")]
    Buffer(PrpError),
    /// A raw command's data direction or data pointer cannot be honoured.
    #[error("raw command rejected: {0}")]
    InvalidCommand(&'static str),
    /// The device was removed or the controller failed: nothing more can
    /// be submitted.
    #[error(transparent)]
    Gone(DeviceGone),
}

/// A refused request; the buffers, if any, come back.
#[non_exhaustive]
pub struct SubmitError {
    /// What was wrong.
    pub kind: SubmitErrorKind,
    /// The caller's buffer, returned untouched.
    pub buf: Option<DmaBuf>,
    /// The separate metadata buffer and data segments, returned untouched.
    pub extra: Option<Box<IoExtra>>,
}

impl SubmitError {
    pub(crate) fn new(kind: SubmitErrorKind, buf: Option<DmaBuf>) -> Self {
        SubmitError {
            kind,
            buf,
            extra: None,
        }
    }
    /// A refusal handing back every buffer of a request.
    #[cold]
    pub(crate) fn with_all(
        kind: SubmitErrorKind,
        buf: Option<DmaBuf>,
        extra: Option<Box<IoExtra>>,
    ) -> Self {
        SubmitError { kind, buf, extra }
    }
    /// Take the separate metadata buffer of the refused request back.
    pub fn take_meta(&mut self) -> Option<DmaBuf> {
        self.extra.as_mut().and_then(|m| m.meta.take())
    }
    /// Take the metadata segments of a refused request back.
    pub fn take_meta_segments(&mut self) -> Vec<DmaBuf> {
        self.extra
            .as_mut()
            .map(|m| std::mem::take(&mut m.meta_segments))
            .unwrap_or_default()
    }
    /// Take the data segments of a refused vectored request back.
    pub fn take_segments(&mut self) -> Vec<DmaBuf> {
        self.extra
            .as_mut()
            .map(|m| std::mem::take(&mut m.segments))
            .unwrap_or_default()
    }
}

impl fmt::Debug for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubmitError")
            .field("kind", &self.kind)
            .field("buf", &self.buf)
            .field("extra", &self.extra)
            .finish()
    }
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)
    }
}

impl std::error::Error for SubmitError {}

/// A refused fused Compare and Write: neither command was queued, and each
/// half's buffers come back in its own [`SubmitError`] (same kind).
#[derive(Debug)]
#[non_exhaustive]
pub struct FusedSubmitError {
    /// The Compare's buffers.
    pub compare: SubmitError,
    /// The Write's buffers.
    pub write: SubmitError,
}

impl fmt::Display for FusedSubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fused Compare and Write refused: {}", self.compare.kind)
    }
}

impl std::error::Error for FusedSubmitError {}

/// A fused Compare and Write that did not succeed, from
/// [`QueuePair::compare_and_write_sync`](crate::QueuePair::compare_and_write_sync):
/// each half's outcome, with its buffers.
#[derive(Debug)]
#[non_exhaustive]
pub struct FusedSyncError {
    /// The Compare: its buffers, or why it failed (with them).
    pub compare: Result<crate::IoData, SyncError>,
    /// The Write: its buffers, or why it failed (with them).
    pub write: Result<crate::IoData, SyncError>,
}

impl FusedSyncError {
    /// The error that explains the outcome: the Compare's if it failed,
    /// else the Write's.
    pub fn error(&self) -> IoError {
        match (&self.compare, &self.write) {
            (Err(e), _) | (Ok(_), Err(e)) => e.error,
            // Not built with both halves successful.
            (Ok(_), Ok(_)) => IoError::Busy(0),
        }
    }
    /// Whether the blocks did not match the compare data (Compare Failure,
    /// SCT 2h SC 85h): the write did not happen, and the pair may be
    /// retried with fresh compare data.
    pub fn miscompare(&self) -> bool {
        matches!(
            &self.compare,
            Err(SyncError { error: IoError::Status(s), .. })
                if s.sct() == crate::spec::status::StatusCodeType::MEDIA
                    && s.sc() == crate::spec::status::media::COMPARE_FAILURE
        )
    }
}

impl fmt::Display for FusedSyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let half = if self.compare.is_err() {
            "compare"
        } else {
            "write"
        };
        write!(
            f,
            "fused Compare and Write failed ({half}): {}",
            self.error()
        )
    }
}

impl std::error::Error for FusedSyncError {}

/// Why an I/O did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IoError {
    /// The device completed the command with an error status.
    #[error("device returned {0}")]
    Status(Status),
    /// The request was refused before submission (synchronous helpers).
    #[error("request refused: {0}")]
    Rejected(SubmitErrorKind),
    /// The command did not complete within its deadline. It was aborted
    /// (or the controller reset) and the device is done with the buffer,
    /// which comes back with this error. The command may or may not have
    /// taken effect: re-read or rewrite the blocks it touched.
    #[error(
        "no completion within {0:?}; the command was aborted (or the controller reset) and may \
         or may not have taken effect — retry it, and raise the queue pair's timeout if the \
         device is merely slow"
    )]
    TimedOut(Duration),
    /// The device was removed, or the controller failed and could not be
    /// reset, while the command was in flight.
    #[error(transparent)]
    Gone(DeviceGone),
    /// The command was in flight across controller resets and ran out of
    /// retries, or is not safe to resubmit (raw, non-idempotent commands).
    #[error(
        "the controller was reset while the command was in flight and it was not resubmitted \
         (retry limit reached or not idempotent); it may or may not have taken effect — retry it"
    )]
    ControllerReset,
    /// The transport failed the command without an NVMe status: the kernel
    /// returned this errno for a passthrough command (io_uring). The
    /// command may or may not have reached the device.
    #[error(
        "the transport failed the command with errno {errno} ({}) and no NVMe status; it may \
         or may not have taken effect — retry it, and check the kernel log (dmesg) for the \
         device",
        std::io::Error::from_raw_os_error(*errno)
    )]
    Transport {
        /// The errno (positive).
        errno: i32,
    },
    /// A synchronous helper was called while other commands are in flight.
    #[error(
        "{0} commands are already in flight on this queue pair; reap them with \
         process_completions before using a synchronous helper"
    )]
    Busy(usize),
}

/// A failed synchronous I/O; the buffer, if any, comes back.
#[non_exhaustive]
pub struct SyncError {
    /// What went wrong.
    pub error: IoError,
    /// The caller's buffer (absent only after a timeout, when the device may
    /// still write it).
    pub buf: Option<DmaBuf>,
    /// The request's other buffers — separate metadata, data or metadata
    /// segments — from the helpers that take an [`IoData`](crate::IoData)
    /// (absent after a timeout, like `buf`).
    pub extra: Option<Box<IoExtra>>,
}

impl SyncError {
    /// A failure handing back `buf` alone.
    pub(crate) fn new(error: IoError, buf: Option<DmaBuf>) -> Self {
        SyncError {
            error,
            buf,
            extra: None,
        }
    }
    /// Every buffer handed back, as the request data they came in.
    pub fn into_data(self) -> crate::IoData {
        crate::IoData {
            buf: self.buf,
            extra: self.extra,
        }
    }
}

impl fmt::Debug for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncError")
            .field("error", &self.error)
            .field("buf", &self.buf)
            .field("extra", &self.extra)
            .finish()
    }
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for SyncError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_and_failed_read_the_same_at_every_layer_and_say_what_to_do() {
        for kind in [DeviceGone::Removed, DeviceGone::Failed] {
            let text = kind.to_string();
            assert_eq!(SubmitErrorKind::Gone(kind).to_string(), text);
            assert_eq!(IoError::Gone(kind).to_string(), text);
            assert!(text.contains("may or may not have taken effect"), "{text}");
            assert!(text.contains("dmesg"), "{text}");
        }
        assert!(DeviceGone::Removed.to_string().contains("scripts/setup.sh"));
        assert!(
            DeviceGone::Failed
                .to_string()
                .contains("Controller::reset()")
        );
        let bring_up = DriverError::DeviceGone {
            device: "0000:01:00.0".into(),
            during: "enabling the controller",
        }
        .to_string();
        assert!(
            bring_up.contains(&DeviceGone::Removed.to_string()),
            "{bring_up}"
        );
    }
}
