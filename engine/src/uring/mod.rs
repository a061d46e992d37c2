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
//! - [`UringQueue`]: the driver's [`crate::driver::QueuePair`] over one
//!   ring, owned by one thread — the same I/O API as a PCIe queue pair
//!   ([`crate::Namespace`] checks, [`crate::IoCompletion`],
//!   [`crate::IoError`]), deadlines, cancellation, retries and teardown.
//! - [`UringTransport`]: the ring itself, implementing the command-level
//!   seam [`crate::transport::CommandTransport`].
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
//! queue reports which mode it uses ([`UringTransport::completion_mode`],
//! [`UringTransport::buffer_mode`]).
//!
//! # The command-level seam
//!
//! [`crate::driver::transport`] describes the seam and how PCIe, this
//! transport and NVMe/TCP implement it. Here, the tag of a command is the
//! queue pair's CID (slot index + generation) carried in the SQE's
//! `user_data`; the kernel picks its own CID and builds PRPs itself. A
//! negative `res` is an errno ([`crate::IoError::Transport`]), except
//! `-ECANCELED`/`-EINTR`, a cancellation: [`crate::IoError::TimedOut`] past
//! the deadline. The kernel enforces its own per-command timeout (abort,
//! then reset), so a command the cancellation cannot stop still completes.

#![deny(unsafe_code)]

mod abi;
mod device;
mod error;
mod fixed;
mod kernel;
mod modes;
mod path;
mod queue;
#[allow(unsafe_code)] // the transport's one unsafe file: see its module doc.
mod ring;
mod transport;

pub use abi::{
    NVME_IOCTL_ADMIN_CMD, NVME_IOCTL_ID, NVME_URING_CMD_ADMIN, NVME_URING_CMD_IO, PassthruCmd,
    URING_CMD_AREA, UringCmd,
};
pub use device::{PollSupport, UringDevice};
pub use error::{UringError, permission_requirement};
pub use kernel::{KernelVersion, io_uring_disabled};
pub use modes::{BufferMode, CompletionMode, RingStats};
pub use path::{NamespaceNodes, NodeName};
pub use queue::{UringQueue, UringQueueOptions};
pub use ring::UringTransport;
pub use transport::uring_outcome;
