//! NVMe passthrough over io_uring: a second way to reach an NVMe namespace,
//! leaving the controller with the kernel's `nvme` driver and sending the
//! engine's own 64-byte commands through the namespace's generic character
//! device (`/dev/ngXnY`) with `IORING_OP_URING_CMD` (NVMe Base 2.0 command
//! set; Linux's `nvme_uring_cmd` ABI). No unbinding, no hugepage
//! reservation, no IOMMU set-up, and the disk stays visible to the system.
//!
//! - [`UringDevice`]: open by path (node classification, controller node
//!   and NSID), Identify Controller/Namespace and other admin commands
//!   through the admin passthrough ioctl, poll-queue and transfer limits,
//!   DMA pools.
//! - [`UringQueue`]: one ring per queue, owned by one thread, with the
//!   engine's I/O API ([`crate::Namespace`] checks, [`crate::IoCompletion`],
//!   [`crate::IoError`]), deadlines and cancellation.
//! - [`UringTransport`]: the ring itself, implementing the command-level
//!   seam [`CommandTransport`].
//! - [`UringError`]: what went wrong and how to fix it.
//!
//! # Kernel requirements
//!
//! | feature | Linux | fallback |
//! |---|---|---|
//! | `IORING_OP_URING_CMD`, `SQE128`/`CQE32`, `NVME_URING_CMD_IO` | 5.19 | none: [`UringError::NoUringCmd`] / [`UringError::KernelTooOld`] |
//! | `IORING_SETUP_IOPOLL` for uring commands | 6.1 | interrupt completion, reaped without a system call |
//! | `IORING_URING_CMD_FIXED` (registered buffers) | 6.1 | the kernel pins each I/O's pages |
//! | several rings polling one device at once | 6.5 | one polling queue per process, the others interrupt-driven |
//! | `IORING_OP_ASYNC_CANCEL` on a polled ring | newer than 6.1 | refused (EINVAL, counted); the kernel driver's own timeout ends the command |
//! | passthrough without CAP_SYS_ADMIN (read/write access to the node) | 6.2 | [`UringError::PermissionDenied`] names what to grant |
//! | `kernel.io_uring_disabled` | 6.6 | [`UringError::IoUringDisabled`] |
//!
//! Polling also needs the driver's poll queues (`nvme.poll_queues=N`); the
//! queue reports which mode it uses ([`UringQueue::completion_mode`],
//! [`UringQueue::buffer_mode`]).
//!
//! # The command-level seam
//!
//! Today the driver is generic over a register-level [`crate::Device`]
//! (BAR reads and writes, doorbells, DMA mapping), so only PCIe fits. The
//! queue pair's logic that does not care how a command travels — the CID
//! slab with generations, buffers held until completion, deadlines and the
//! abort/reset policy, retries of DNR=0 errors, namespace checks, the
//! synchronous helpers, and above it the reactor and nvme-perf — becomes
//! generic over [`CommandTransport`]:
//!
//! ```text
//! capacity()                          commands in flight at once
//! in_flight(), max_transfer()
//! unsafe submit(&Command, Option<DataRef>, tag: u16)   queue one command
//! flush()                             hand the batch over: one doorbell / one syscall
//! poll(max, FnMut(TransportCompletion { tag, outcome }))   reap, never block
//! cancel(tag)                         the command still completes via poll
//! ```
//!
//! The tag is the driver's CID (slot index + generation), so a stale or
//! invented completion is still caught above the seam. A [`DataRef`]
//! carries the host address, the IOVA, the length and the direction: each
//! transport takes what it needs. An outcome is either the controller's
//! completion (DW0 and status) or a transport failure (an errno, a
//! cancellation); [`outcome_to_result`] maps both onto [`crate::IoError`],
//! so callers see one error type whatever the transport.
//!
//! **PCIe** (VFIO, uio, the emulated controller): `submit` sets the CID to
//! the tag, builds PRPs from the IOVA into the slot's preallocated list
//! pages and writes the SQE at the tail; `flush` rings the SQ doorbell once
//! (or only the shadow doorbell when EventIdx allows); `poll` walks the CQ
//! by phase tag, checks SQHD/SQID, writes the CQ head doorbell once per
//! call and reports (CID, DW0, status); `cancel` sends an Abort on the
//! admin queue (controller reset stays above the seam, as a policy of the
//! controller object). Queue creation and deletion are admin commands of
//! the PCIe controller, not of the seam. Nothing on the path adds a
//! virtual call: the queue pair is monomorphised per transport.
//!
//! **io_uring passthrough** ([`UringTransport`]): `submit` turns the same
//! 64-byte command into `struct nvme_uring_cmd` (the kernel picks CID and
//! builds PRPs itself) in a 128-byte SQE with `user_data` = tag and, when
//! the buffer lies in memory registered with the ring, a fixed-buffer
//! index; `flush` is one `io_uring_enter` for the batch; `poll` reads
//! 32-byte CQEs (`res` < 0 errno, > 0 NVMe status, big CQE dword 0 = DW0),
//! polling the driver with `GETEVENTS` when the ring is `IOPOLL`; `cancel`
//! is `IORING_OP_ASYNC_CANCEL` on the tag. The kernel enforces its own
//! per-command timeout (abort, then reset) so a command that the cancel
//! cannot stop still completes.
//!
//! **NVMe/TCP** (next): `submit` puts the SQE in a CapsuleCmd PDU with an
//! SGL (in-capsule data for small writes, a Transport SGL Data Block
//! otherwise) and keeps the [`DataRef`] by tag, because data moves later in
//! H2CData (after R2T) and C2HData PDUs that name the CID; `flush` writes
//! the queued PDUs with one `sendmsg`; `poll` reads what the socket has
//! without blocking, copies C2HData into the tagged buffer, answers R2T
//! and reports CapsuleResp CQEs (and connection loss as a transport
//! failure for every tag in flight); `cancel` sends Abort on the admin
//! connection. Connect, Property Get/Set and Keep Alive belong to the
//! controller object, as queue creation does for PCIe. What TCP needs from
//! the seam is therefore exactly: the host address and length of the data
//! with its direction (in `DataRef`), the tag as CID, and a failure
//! outcome that is not an NVMe status — all present.

mod abi;
mod device;
mod error;
mod kernel;
mod path;
mod queue;
mod ring;
mod transport;

pub use abi::{
    NVME_IOCTL_ADMIN_CMD, NVME_IOCTL_ID, NVME_URING_CMD_ADMIN, NVME_URING_CMD_IO, PassthruCmd,
    URING_CMD_AREA, UringCmd,
};
pub use device::{PollSupport, UringDevice};
pub use error::{UringError, permission_requirement};
pub use kernel::{KernelVersion, io_uring_disabled};
pub use path::{NamespaceNodes, NodeName};
pub use queue::{UringQueue, UringQueueOptions, UringQueueStats};
pub use ring::{BufferMode, CompletionMode, RingStats, UringTransport};
pub use transport::{
    CancelRequest, CommandOutcome, CommandTransport, DataDirection, DataRef, SubmitRefusal,
    TransportCompletion, TransportFailure, errno_to_io_error, outcome_to_result, uring_outcome,
};
