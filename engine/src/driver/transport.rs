//! The command-level transport seam: what a queue pair needs from whatever
//! carries NVMe commands to one queue of a controller and brings their
//! completions back.
//!
//! [`crate::driver::QueuePair`] keeps everything that does not depend on the
//! carrier — the CID slab with generations, buffers held until completion,
//! namespace checks, deadlines and what to do when one passes, retries of
//! DNR=0 errors and resubmission after a reset, the synchronous helpers and
//! the exactly-once teardown — and reaches the carrier only through
//! [`CommandTransport`]. The queue pair is monomorphised per transport: no
//! call on the I/O path is virtual, and PCIe compiles to the same code it
//! did before the seam existed.
//!
//! # Implementations
//!
//! **PCIe** ([`crate::driver::PcieQueue`]; VFIO, uio and the emulated
//! controller): `map_data` builds PRPs in the slot's preallocated list
//! pages; `send` copies the SQE to the tail; `flush` rings the SQ doorbell
//! once per batch (or only the shadow doorbell when EventIdx allows);
//! `next_completion` walks the CQ by phase tag, checks SQHD and SQID, and
//! `end_reap` writes the CQ head doorbell once. `cancel` sends an Abort;
//! `reset` resets the controller; `begin_reap` follows the controller's
//! health/generation word and `recover` re-creates the queues after a
//! reset. Queue creation and deletion are admin commands of the controller.
//!
//! **io_uring passthrough** ([`crate::uring::UringTransport`]): `send` turns
//! the same 64-byte command into `struct nvme_uring_cmd` in a 128-byte SQE
//! (the kernel picks its own CID and builds PRPs) with `user_data` = tag and,
//! when the buffer lies in registered memory, a fixed-buffer index; `flush`
//! is one `io_uring_enter` per batch; `begin_reap` polls the driver's poll
//! queue (`IOPOLL`) and `next_completion` reads 32-byte CQEs (`res` < 0
//! errno, > 0 NVMe status, big CQE dword 0 = DW0); `cancel` is
//! `IORING_OP_ASYNC_CANCEL` on the tag, and `reset` cancels everything in
//! flight (the kernel driver owns the controller and resets it itself).
//!
//! **NVMe/TCP** ([`crate::tcp::TcpTransport`], without changing the seam):
//! `send` puts the SQE in a CapsuleCmd PDU with an SGL — in-capsule data
//! for small writes (copied from [`DataRef::addr`]), a Transport SGL Data
//! Block otherwise — and keeps the [`DataRef`] by tag, because data moves
//! later in H2CData PDUs (after the controller's R2T, answered while the
//! socket is read in `begin_reap`) and C2HData PDUs, all naming the CID =
//! tag. `flush` writes the queued PDUs; `next_completion` reports
//! CapsuleResp CQEs by CID; a dropped connection becomes
//! [`CommandOutcome::Failed`] for every tag in flight (`ECONNRESET`).
//! `cancel` posts an Abort to the association's thread, which sends it on
//! the admin queue; `reset` ends the association (the target then drops every queue), which
//! `begin_reap` reports like a PCIe reset; `recover` Connects the queue
//! again once the association is back. Keep Alive belongs to the
//! association, as queue creation belongs to the controller on PCIe.

use std::time::Duration;

use crate::dma::DmaBuf;
use crate::spec::command::Command;
use crate::spec::status::Status;

use super::error::{DeviceGone, DriverError, IoError, SubmitErrorKind};
use super::namespace::LbaRange;
use super::stats::QueuePairStats;

/// How the data of a command is described to a PCIe controller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DataPointer {
    /// PRPs for one buffer; for several segments an SGL when the
    /// controller reports SGL support, else PRPs when the segments allow.
    #[default]
    Auto,
    /// PRPs only: segments must be page-aligned where they meet.
    Prp,
    /// An SGL (Data Block descriptors, a Last Segment list in the slot's
    /// list pages for several segments); refused when SGLS reports none.
    Sgl,
}

/// How a separate metadata buffer is described to a PCIe controller
/// (CDW0.PSDT and MPTR, NVMe Base 2.0 §4.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MetadataPointer {
    /// MPTR holds the address of one contiguous metadata buffer, except
    /// where an SGL is needed or cheap: several metadata segments go as an
    /// SGL (the data then goes as one too), and a metadata buffer beside
    /// data that already goes as an SGL is described by one SGL Data Block
    /// descriptor when the controller reports SGLs at MPTR (Identify SGLS
    /// bit 19).
    #[default]
    Auto,
    /// MPTR holds the address of one contiguous buffer (PSDT 00b with
    /// PRPs, 01b with an SGL for the data); several metadata segments are
    /// refused.
    Contiguous,
    /// MPTR holds the address of one SGL descriptor (PSDT 10b): a Data
    /// Block for one metadata buffer, a Last Segment naming one Data Block
    /// per segment for several. The data then goes as an SGL too. Refused
    /// when the controller does not report SGLS bit 19.
    Sgl,
}

/// Which way a command's data moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataDirection {
    /// Host memory to the controller (Write, Dataset Management ranges).
    ToDevice,
    /// Controller to host memory (Read, Identify).
    FromDevice,
}

/// A command's data as every transport needs it: the host address (io_uring
/// passes it to the kernel, TCP copies from and to it), the I/O virtual
/// address (PCIe builds PRPs from it), the length and the direction.
///
/// Only the queue pair makes one, from a buffer it holds until the
/// command's completion: that is what lets transports hand the address to
/// a device or a kernel from safe code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataRef {
    pub(crate) addr: *mut u8,
    pub(crate) iova: u64,
    pub(crate) len: u32,
    pub(crate) direction: DataDirection,
}

impl DataRef {
    /// Describe `buf`, which the caller keeps until the command completes.
    #[inline(always)]
    pub(crate) fn of(buf: &DmaBuf, direction: DataDirection) -> Self {
        DataRef {
            addr: buf.as_ptr(),
            iova: buf.iova(),
            len: buf.len() as u32,
            direction,
        }
    }
    /// Host virtual address of the first byte.
    pub fn addr(&self) -> *mut u8 {
        self.addr
    }
    /// The device's address of the first byte (IOVA).
    pub fn iova(&self) -> u64 {
        self.iova
    }
    /// Bytes.
    pub fn len(&self) -> u32 {
        self.len
    }
    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Direction.
    pub fn direction(&self) -> DataDirection {
        self.direction
    }
}

/// What became of one command, as the transport saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandOutcome {
    /// The controller completed it: completion DW0 and the status field.
    Completed {
        /// Completion DW0.
        dw0: u32,
        /// Status (success or the device's error).
        status: Status,
    },
    /// The transport failed it without a controller status.
    Failed(TransportFailure),
}

/// A failure below the NVMe layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportFailure {
    /// The kernel failed the command with this errno (positive value).
    Errno(i32),
    /// The command was cancelled before the controller completed it
    /// (`-ECANCELED` from io_uring; `-EINTR`, a request the kernel's NVMe
    /// driver cancelled after its own timeout, abort or reset).
    Cancelled,
    /// The connection carrying the queue was lost (NVMe/TCP).
    Disconnected,
}

/// One completion: the tag given at submission and the outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportCompletion {
    /// The tag given at submission (the driver's CID: slot index and
    /// generation, so a stale or invented completion is caught above the
    /// seam).
    pub tag: u16,
    /// What happened.
    pub outcome: CommandOutcome,
}

/// A submission the transport refused; nothing was queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitRefusal {
    /// No room for another command: reap completions first.
    Full,
    /// The data description cannot be carried (too long, misaligned).
    BadData(&'static str),
    /// The transport is gone (device removed, ring or connection closed).
    Gone,
}

impl SubmitRefusal {
    /// The submission error a caller sees.
    pub(crate) fn kind(self, capacity: usize) -> SubmitErrorKind {
        match self {
            SubmitRefusal::Full => SubmitErrorKind::QueueFull { capacity },
            SubmitRefusal::BadData(why) => SubmitErrorKind::InvalidCommand(why),
            SubmitRefusal::Gone => SubmitErrorKind::Gone(DeviceGone::Removed),
        }
    }
}

/// What a cancellation request did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelRequest {
    /// A cancellation was sent; the command's own completion still arrives
    /// through [`CommandTransport::next_completion`] (cancelled, or
    /// completed anyway).
    Sent,
    /// The tag is not in flight.
    NotInFlight,
    /// It could not be sent (no room, or the controller refused the
    /// Abort): the queue pair escalates to [`CommandTransport::reset`].
    Failed,
}

/// What `begin_reap` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reap {
    /// The queue is live: read completions.
    Ready,
    /// The transport's state changed (a controller reset, removal or
    /// failure; a reconnection): `state` goes to
    /// [`CommandTransport::recover`].
    Changed(u64),
}

/// What `recover` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Not settled yet (a reset in progress): nothing to do now.
    Wait,
    /// The queue exists again and holds nothing: commands in flight are
    /// resubmitted (idempotent, retries left) or fail with
    /// [`IoError::ControllerReset`].
    Recreated,
    /// The queue is gone for good: every command in flight fails with this.
    FailAll(IoError),
}

/// What closing the queue left for the commands still held.
#[derive(Debug)]
pub struct Closed {
    /// The result of the close itself.
    pub result: Result<(), DriverError>,
    /// The error every command still held completes with.
    pub leftover: IoError,
    /// Whether the device (or kernel) may still write their buffers: they
    /// come back quarantined.
    pub quarantine: bool,
}

/// A carrier of NVMe commands to one queue of one controller, owned by one
/// thread (see the [module documentation](self)).
///
/// Methods on the I/O path are called once per command or once per reap;
/// implementations mark them `#[inline]` so the monomorphised queue pair
/// has no call left where the PCIe code had none.
pub trait CommandTransport {
    /// What `map_data` derives from a buffer and `send` consumes (PRP
    /// entries on PCIe; the [`DataRef`] on io_uring and TCP).
    type Data: Copy;

    /// Commands that can be in flight at once (entries − 1 on PCIe).
    fn capacity(&self) -> usize;
    /// The queue id (PCIe SQ/CQ id, TCP queue id; io_uring: the ring's
    /// number in this process, 1, 2, …).
    fn queue_id(&self) -> u16;
    /// Largest data transfer one command may carry, in bytes.
    fn max_transfer(&self) -> usize;
    /// Bound for admin work the queue pair waits on (its sync helpers).
    fn admin_timeout(&self) -> Duration;

    /// May a command be queued now? A removed or failed controller refuses;
    /// a full submission queue refuses with `QueueFull`.
    fn admit(&mut self, stats: &mut QueuePairStats) -> Result<(), SubmitErrorKind>;
    /// The data of the command in tracker slot `slot`: `buf`, moving in
    /// `direction` (PRP lists live in per-slot pages). Transports that need
    /// the host address take it with `DataRef::of`.
    fn map_data(
        &mut self,
        slot: usize,
        buf: &DmaBuf,
        direction: DataDirection,
    ) -> Result<Self::Data, SubmitErrorKind>;
    /// The data of slot `slot` as several segments, or one buffer that must
    /// go as an SGL (`how`). Returns the data and whether it is an SGL
    /// (CDW0.PSDT 01b). Transports without this refuse.
    fn map_segments(
        &mut self,
        _slot: usize,
        _segments: &[DmaBuf],
        _direction: DataDirection,
        _how: DataPointer,
    ) -> Result<(Self::Data, bool), SubmitErrorKind> {
        Err(SubmitErrorKind::TransportUnsupported(
            "vectored requests and SGLs",
        ))
    }
    /// MPTR for the separate metadata buffer `meta` of slot `slot`, which
    /// the queue pair holds until the command completes. Transports without
    /// this refuse.
    fn map_metadata(&mut self, _slot: usize, _meta: &DmaBuf) -> Result<u64, SubmitErrorKind> {
        Err(SubmitErrorKind::TransportUnsupported(
            "a separate metadata buffer",
        ))
    }
    /// Whether MPTR may hold an SGL descriptor (PSDT 10b) on this queue;
    /// the refusal says why not. Transports without this refuse.
    fn metadata_sgl_support(&self) -> Result<(), SubmitErrorKind> {
        Err(SubmitErrorKind::TransportUnsupported(
            "metadata described by an SGL",
        ))
    }
    /// MPTR for the separate metadata `meta` (one or more segments, in
    /// order) of slot `slot` as an SGL (PSDT 10b): the address of one
    /// descriptor in transport memory. `data_segments` is how many Data
    /// Block descriptors the slot's data took (its list pages are shared).
    /// Transports without this refuse.
    fn map_metadata_sgl(
        &mut self,
        _slot: usize,
        _meta: &[DmaBuf],
        _data_segments: usize,
    ) -> Result<u64, SubmitErrorKind> {
        Err(SubmitErrorKind::TransportUnsupported(
            "metadata described by an SGL",
        ))
    }
    /// May two commands be queued back to back now, to reach the controller
    /// adjacent and with one `flush` (a fused pair)? Like `admit`, for two.
    /// Transports that cannot keep two commands together refuse.
    fn admit_pair(&mut self, _stats: &mut QueuePairStats) -> Result<(), SubmitErrorKind> {
        Err(SubmitErrorKind::TransportUnsupported(
            "fused commands (two commands kept adjacent)",
        ))
    }
    /// A Dataset Management range list for slot `slot`, written into
    /// transport-owned memory.
    fn map_ranges(
        &mut self,
        slot: usize,
        ranges: &[LbaRange],
    ) -> Result<Self::Data, SubmitErrorKind>;
    /// PRP1 and PRP2 for `data` (zeros for transports that carry the data
    /// description beside the command).
    fn prps(data: &Self::Data) -> (u64, u64);
    /// Put `data` into the command (PRP1/PRP2; nothing for transports that
    /// carry the data description beside the command).
    #[inline(always)]
    fn encode(data: &Self::Data, cmd: &mut Command) {
        (cmd.prp1, cmd.prp2) = Self::prps(data);
    }
    /// Queue `cmd` (its CID is the tag) with its data, after `admit`
    /// succeeded. Nothing reaches the controller before `flush`.
    fn send(
        &mut self,
        cmd: &Command,
        data: Option<Self::Data>,
        stats: &mut QueuePairStats,
    ) -> Result<(), SubmitRefusal>;
    /// Queue `cmd` again (a retry or a resubmission after a reset); its
    /// data, if any, is `data` as held by the queue pair. `false`: no room.
    fn resend(&mut self, cmd: &Command, data: Option<DataRef>, stats: &mut QueuePairStats) -> bool;
    /// Hand everything queued since the last flush to the controller in one
    /// doorbell write or one system call; nothing when nothing is queued.
    fn flush(&mut self, stats: &mut QueuePairStats);

    /// Start a reap: flush, and say whether the queue is live.
    fn begin_reap(&mut self, stats: &mut QueuePairStats) -> Reap;
    /// The next completion, without blocking.
    fn next_completion(&mut self, stats: &mut QueuePairStats) -> Option<TransportCompletion>;
    /// End a reap that consumed `consumed` (at least one) completions (CQ
    /// head doorbell).
    fn end_reap(&mut self, consumed: usize, stats: &mut QueuePairStats);
    /// Follow the state `begin_reap` reported.
    fn recover(&mut self, state: u64, stats: &mut QueuePairStats) -> Recovery;

    /// `Some(state)` while the queue is live in `state` (timeout scans run
    /// only then); `None` while it is not (recovery follows in
    /// `begin_reap`).
    fn live(&self) -> Option<u64>;
    /// Outstanding commands saw no completion for a while: look for a dead
    /// device. `true` asks for [`CommandTransport::reset`].
    fn stalled(&mut self) -> bool;
    /// Ask for the command with `tag` to be cancelled (it passed its
    /// deadline). It still completes through `next_completion`, exactly
    /// once, or by `recover` / `close`.
    fn cancel(&mut self, tag: u16) -> CancelRequest;
    /// Last resort for commands that do not come back: a controller reset
    /// (PCIe), cancelling every command (io_uring), a reconnect (TCP).
    /// `state` is what `live` returned.
    fn reset(&mut self, state: u64);
    /// Whether buffers handed back now must be quarantined (the device
    /// could not be proven stopped).
    fn dma_unproven(&self) -> bool;
    /// Keep the transport's own device-visible memory mapped for good.
    fn quarantine(&self);

    /// Teardown starts: stop new work, cancel what can be cancelled.
    fn close_begin(&mut self);
    /// How long teardown waits for outstanding commands (`None`: not at
    /// all, the controller is gone).
    fn close_wait(&self) -> Option<Duration>;
    /// Teardown found nothing to reap: wait a little (yield or block).
    fn close_idle(&mut self);
    /// Delete the queue; every command still held then completes with
    /// [`Closed::leftover`].
    fn close(&mut self) -> Closed;
}
