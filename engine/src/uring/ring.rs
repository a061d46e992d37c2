//! The io_uring side of the command seam: one ring (128-byte SQEs, 32-byte
//! CQEs) per queue, owned by one thread, carrying `NVME_URING_CMD_IO`
//! commands to one namespace node. [`UringTransport`] implements
//! [`CommandTransport`]: submissions only fill SQEs, `flush` makes one
//! `io_uring_enter` for the whole batch (none when nothing is queued), and
//! `poll` reaps without blocking — from the shared completion ring alone
//! when the kernel completes by interrupt, with one non-blocking
//! `io_uring_enter(GETEVENTS)` per call when the ring is polled
//! (`IORING_SETUP_IOPOLL`), which is what drives the driver's poll queue.
//! On a polled ring the batch's `io_uring_enter` also polls
//! (`min_complete` 0: it never waits), and the reap that follows reads what
//! it found without entering again: one system call per loop turn that
//! submits and reaps, not two.
//! Data buffers inside memory registered with the ring go out as fixed
//! buffers (`IORING_URING_CMD_FIXED` + buffer index): the kernel pins
//! nothing per I/O. The ring keeps a sparse table of fixed buffers
//! (`fixed.rs`) and registers memory into it, or releases it, at any time,
//! also with commands in flight (`IORING_REGISTER_BUFFERS_UPDATE` needs no
//! quiescing): the memory of each pool whose buffers may reach the ring.
//!
//! This is the transport's one file with `unsafe` code (every other file of
//! `uring/` forbids it): the ring's buffer registration, SQE pushes and
//! `io_uring_enter`, the two NVMe ioctls (admin passthrough and the NSID),
//! and the DMA region of a pool the kernel maps by virtual address. Each
//! block argues why it is sound where it stands.

use std::cell::Cell;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::{IoUring, Probe, cqueue, opcode, squeue, types};

use super::abi::{NVME_IOCTL_ADMIN_CMD, NVME_IOCTL_ID, NVME_URING_CMD_IO, PassthruCmd, UringCmd};
use super::fixed::{FixedRegion, FixedTable, NoRoom};
use super::modes::{BufferMode, CompletionMode, RingStats};
use super::queue::PolledRingSlot;
use super::transport::uring_outcome;
use crate::dma::{DmaBuf, DmaRegion, HostMemory, RegionHold};
use crate::driver::transport::{
    CancelRequest, Closed, CommandTransport, DataDirection, DataRef, Reap, Recovery, SubmitRefusal,
    TransportCompletion,
};
use crate::driver::{IoError, LbaRange, QueuePairStats, SubmitErrorKind};
use crate::spec::command::Command;
use zerocopy::IntoBytes;

/// Bytes of one slot's Dataset Management range list (256 ranges).
const RANGE_LIST_BYTES: usize = 4096;

/// `IORING_ENTER_GETEVENTS`: reap (and, on a polled ring, poll) completions.
const IORING_ENTER_GETEVENTS: u32 = 1;
/// Marks the user data of a cancellation SQE (command tags are 16 bits).
const CANCEL_MARK: u64 = 1 << 63;
/// Most fixed buffers one ring's table holds (the kernel's limit,
/// `IORING_MAX_REG_BUFFERS`).
pub(super) const MAX_FIXED_SLOTS: u32 = 1 << 14;
/// Largest fixed buffer the kernel registers (1 GiB).
const MAX_FIXED_SHIFT: u32 = 30;

/// One ring carrying NVMe commands to one namespace node.
pub struct UringTransport {
    /// The ring's number in this process (its queue id).
    id: u16,
    ring: IoUring<squeue::Entry128, cqueue::Entry32>,
    fd: i32,
    capacity: usize,
    in_flight: usize,
    /// SQEs queued since the last `io_uring_enter`.
    pending: u32,
    /// The last submission also polled (polled ring): the next reap reads
    /// the completion ring without entering the kernel again.
    polled_ahead: bool,
    polled: bool,
    /// The sparse table of fixed buffers and the memory registered in it
    /// (holds that memory mapped; dropped after the ring).
    fixed: FixedTable,
    /// Why the ring has no fixed-buffer table, when it has none.
    fixed_unavailable: Option<String>,
    /// A registration failed: [`BufferMode`] keeps saying why.
    registration_failed: bool,
    pub(super) max_transfer: usize,
    timeout_ms: u32,
    stats: RingStats,
    /// Polled or interrupt-driven completion, and why.
    pub(super) completion_mode: CompletionMode,
    /// Fixed buffers or per-I/O pinning, and why.
    pub(super) buffer_mode: BufferMode,
    /// How long closing waits for commands that do not complete.
    pub(super) close_timeout: Duration,
    /// Held while this ring polls on a kernel that allows one polling ring
    /// at a time; declared after the ring so it is released after the ring
    /// is closed.
    pub(super) poll_slot: Option<PolledRingSlot>,
    /// Regions whose slots could not be emptied: their memory stays
    /// mapped until the ring is gone (dropped after the ring).
    retired: Vec<FixedRegion>,
    /// Dataset Management range lists, one page per slot (allocated on
    /// first use, never moved afterwards).
    ranges: Vec<u8>,
    _not_sync: PhantomData<Cell<()>>,
}

/// Why a ring could not be created.
#[derive(Debug)]
pub(super) enum RingSetupError {
    /// io_uring_setup failed.
    Setup(io::Error),
    /// The kernel has no `IORING_OP_URING_CMD`.
    NoUringCmd(String),
}

/// Rings made by this process so far: each ring's number (its queue id).
static RINGS: AtomicU16 = AtomicU16::new(0);

/// The next ring number, 1 to 65535 (0 is skipped when it wraps).
fn next_ring_id() -> u16 {
    loop {
        // Relaxed: a number only has to be unique, it orders nothing.
        let n = RINGS.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        if n != 0 {
            return n;
        }
    }
}

impl UringTransport {
    /// A ring for up to `capacity` commands on the namespace node `fd`.
    /// The SQ has room for a cancellation per command, the CQ twice that.
    /// With `fixed_slots` > 0, a sparse table of that many fixed buffers
    /// (at most [`MAX_FIXED_SLOTS`]) is registered; when the kernel
    /// refuses it, the ring works without fixed buffers and says why.
    pub(super) fn new(
        fd: i32,
        capacity: usize,
        polled: bool,
        fixed_slots: u32,
        max_transfer: usize,
        timeout_ms: u32,
    ) -> Result<Self, RingSetupError> {
        let sq_entries = (capacity * 2).next_power_of_two().max(4) as u32;
        let mut b = IoUring::<squeue::Entry128, cqueue::Entry32>::builder();
        if polled {
            b.setup_iopoll();
        }
        let ring = b.build(sq_entries).map_err(RingSetupError::Setup)?;
        let mut probe = Probe::new();
        match ring.submitter().register_probe(&mut probe) {
            Ok(()) if !probe.is_supported(opcode::UringCmd80::CODE) => {
                return Err(RingSetupError::NoUringCmd(
                    "IORING_OP_URING_CMD is not in the ring's opcode probe".into(),
                ));
            }
            _ => {}
        }
        let slots = fixed_slots.min(MAX_FIXED_SLOTS);
        let (fixed, fixed_unavailable) = if slots == 0 {
            (FixedTable::new(0), Some("fixed buffers not in use".into()))
        } else {
            match ring.submitter().register_buffers_sparse(slots) {
                Ok(()) => (FixedTable::new(slots), None),
                Err(e) => (
                    FixedTable::new(0),
                    Some(format!(
                        "the kernel refused a table of {slots} fixed buffers \
                         (IORING_REGISTER_BUFFERS2, sparse; Linux 5.19+): {e}"
                    )),
                ),
            }
        };
        Ok(UringTransport {
            id: next_ring_id(),
            ring,
            fd,
            capacity,
            in_flight: 0,
            pending: 0,
            polled_ahead: false,
            polled,
            fixed,
            fixed_unavailable,
            registration_failed: false,
            max_transfer,
            timeout_ms,
            stats: RingStats::default(),
            completion_mode: CompletionMode::Polled,
            buffer_mode: BufferMode::Unregistered {
                reason: "no pool registered".into(),
            },
            close_timeout: Duration::from_secs(120),
            poll_slot: None,
            retired: Vec::new(),
            ranges: Vec::new(),
            _not_sync: PhantomData,
        })
    }

    /// Whether completions are polled.
    pub fn polled(&self) -> bool {
        self.polled
    }
    /// Counters.
    pub fn stats(&self) -> &RingStats {
        &self.stats
    }
    /// Polled or interrupt-driven completion, and why.
    pub fn completion_mode(&self) -> &CompletionMode {
        &self.completion_mode
    }
    /// Fixed buffers or per-I/O pinning, and why.
    pub fn buffer_mode(&self) -> &BufferMode {
        &self.buffer_mode
    }
    /// Whether any memory is registered as fixed buffers.
    pub fn has_fixed_buffers(&self) -> bool {
        !self.fixed.is_empty()
    }
    /// Memory regions registered as fixed buffers now.
    pub fn fixed_regions(&self) -> usize {
        self.fixed.regions()
    }
    /// Slots of the ring's fixed-buffer table (0: none).
    pub fn fixed_slots(&self) -> u32 {
        self.fixed.slots()
    }
    /// Why the ring has no fixed-buffer table, when it has none.
    pub(super) fn fixed_unavailable(&self) -> Option<&str> {
        self.fixed_unavailable.as_deref()
    }

    /// The fixed buffer holding `[addr, addr + len)`, if any.
    #[inline]
    fn buffer_index(&self, addr: u64, len: u32) -> Option<u16> {
        self.fixed.find(addr, len)
    }

    /// Empty slots `first..first + count` of the table (the kernel drops
    /// its page references once no command uses them any more).
    fn clear_slots(&mut self, first: u32, count: u32) -> io::Result<()> {
        if count == 0 {
            return Ok(());
        }
        let empty = vec![
            libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            };
            count as usize
        ];
        // SAFETY: an empty iovec (null base, length 0) names no memory: it
        // turns the slot back into an empty one.
        unsafe {
            self.ring
                .submitter()
                .register_buffers_update(first, &empty, None)
        }
    }

    /// Push one SQE; the caller checked there is room.
    fn push(&mut self, sqe: &squeue::Entry128) -> Result<(), SubmitRefusal> {
        let mut sq = self.ring.submission();
        // SAFETY: the SQE's command area and addresses describe memory the
        // caller of `submit` keeps valid until the completion (the seam's
        // contract); a cancellation SQE names only user data.
        unsafe { sq.push(sqe) }.map_err(|_| SubmitRefusal::Full)?;
        drop(sq);
        self.pending += 1;
        Ok(())
    }

    /// One `io_uring_enter`: submit what is pending and, with `reap` on a
    /// polled ring, poll for completions without waiting.
    fn enter(&mut self, reap: bool) -> io::Result<()> {
        let flags = if reap { IORING_ENTER_GETEVENTS } else { 0 };
        self.stats.enter_calls += 1;
        self.stats.reap_calls += reap as u64;
        // SAFETY: no argument struct is passed (None), and the SQEs being
        // submitted were pushed by `push` under the seam's contract.
        let r = unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(self.pending, 0, flags, None)
        };
        match r {
            Ok(n) => {
                self.pending -= (n as u32).min(self.pending);
                Ok(())
            }
            Err(e) => {
                self.stats.enter_errors += 1;
                Err(e)
            }
        }
    }

    /// Ask the kernel to cancel everything in flight on this ring.
    pub(super) fn cancel_all(&mut self) -> CancelRequest {
        if self.in_flight == 0 {
            return CancelRequest::NotInFlight;
        }
        let sqe: squeue::Entry128 = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(CANCEL_MARK)
            .into();
        if self.push(&sqe).is_err() {
            return CancelRequest::Failed;
        }
        self.stats.cancels_sent += 1;
        CancelRequest::Sent
    }

    /// Block until at least one completion is ready, or `ms` milliseconds
    /// pass (teardown only: never called from the polling path).
    pub(super) fn wait(&mut self, ms: u64) {
        let ts = types::Timespec::new().nsec((ms.min(999) * 1_000_000) as u32);
        let args = types::SubmitArgs::new().timespec(&ts);
        self.stats.enter_calls += 1;
        let pending = self.pending;
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(n) => self.pending -= (n as u32).min(pending),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR)) => {}
            Err(_) => {
                self.stats.enter_errors += 1;
                std::thread::sleep(std::time::Duration::from_millis(ms.min(10)));
            }
        }
    }
}

/// Send admin command `cmd` with `data` through `NVME_IOCTL_ADMIN_CMD` on
/// `fd` (a controller or namespace node); the kernel decides the transfer
/// direction from the opcode. Returns the ioctl's result (0, or the NVMe
/// status field when positive) and completion DW0; `Err` is the errno.
pub(super) fn admin_passthru(
    fd: BorrowedFd<'_>,
    cmd: &Command,
    data: Option<&mut [u8]>,
) -> io::Result<(i32, u32)> {
    let (addr, len) = match data {
        Some(d) => (
            d.as_mut_ptr() as u64,
            u32::try_from(d.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
        ),
        None => (0, 0),
    };
    let mut pt = PassthruCmd::from_command(cmd, addr, len, 0);
    // SAFETY: NVME_IOCTL_ADMIN_CMD reads and writes back one
    // `struct nvme_passthru_cmd`, which `pt` is (its layout is checked in
    // abi.rs); the kernel moves at most `len` bytes at `addr`, which is the
    // exclusively borrowed `data` slice of that length (or nothing), alive
    // for the whole call since the ioctl is synchronous; `fd` is borrowed,
    // so it stays open.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            NVME_IOCTL_ADMIN_CMD as _,
            pt.as_mut_bytes().as_mut_ptr(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((rc, pt.result))
}

/// The NSID of the namespace node `fd` (`NVME_IOCTL_ID`).
pub(super) fn namespace_id_ioctl(fd: BorrowedFd<'_>) -> io::Result<i32> {
    // SAFETY: NVME_IOCTL_ID takes no argument (no memory is read or
    // written) and returns the NSID or -1; `fd` is borrowed, so it is open
    // for the whole call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), NVME_IOCTL_ID as _) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// The DMA region of `memory` for this transport: the kernel reaches a
/// buffer by its virtual address (it pins and maps the pages itself, per
/// command or once for fixed buffers), so the region's "IOVA" of byte `i`
/// is the virtual address of byte `i`, which keeps alignment checks true.
pub(super) fn kernel_mapped_region(memory: HostMemory) -> DmaRegion {
    let va = memory.as_ptr() as u64;
    // SAFETY: `DmaRegion::contiguous` needs byte `i` of `memory` to be
    // reachable by the device at `va + i` for as long as the region lives:
    // for passthrough the "device address" is the process's virtual
    // address, which the kernel translates itself, and the region owns
    // `memory`, so the mapping outlives every address taken from it.
    unsafe { DmaRegion::contiguous(memory, va, None) }
}

impl UringTransport {
    /// Register the memory `hold` keeps mapped (a pool's) with this ring
    /// as fixed buffers, so buffers inside it need no page pinning per I/O,
    /// and say so (or why not) in [`UringTransport::buffer_mode`]. Memory
    /// that cannot be registered still works: its I/O is pinned by the
    /// kernel per command and counted in [`RingStats::unregistered_io`].
    /// Allowed with commands in flight. Memory registered before is a
    /// no-op; the registration is released by
    /// [`UringTransport::release_unused`] once nothing but it holds the
    /// memory.
    ///
    /// Chunks, not one buffer per region: Linux 6.1 hands the block layer
    /// every page from the I/O's start to the end of its registered buffer
    /// and refuses the command (EINVAL) when those are more than the queue's
    /// `max_segments`. A chunk no larger than the largest transfer, which
    /// is capped by `max_segments` pages, keeps every I/O inside one chunk
    /// (pool blocks are aligned to their size) and under that count.
    pub(super) fn register_memory(&mut self, hold: RegionHold) -> Result<(), String> {
        let r = self.try_register(hold);
        match &r {
            Ok(()) => {
                if !self.registration_failed {
                    self.buffer_mode = BufferMode::Fixed;
                }
            }
            Err(reason) => {
                self.stats.registration_failures += 1;
                self.registration_failed = true;
                self.buffer_mode = BufferMode::Unregistered {
                    reason: reason.clone(),
                };
            }
        }
        r
    }

    fn try_register(&mut self, hold: RegionHold) -> Result<(), String> {
        if let Some(why) = &self.fixed_unavailable {
            return Err(why.clone());
        }
        self.release_unused();
        let (base, len) = (hold.addr(), hold.len());
        // The largest power of two no larger than the largest transfer.
        let shift = (usize::BITS - 1 - self.max_transfer.max(4096).leading_zeros())
            .clamp(12, MAX_FIXED_SHIFT);
        let first = match self.fixed.reserve(base, len, shift) {
            Ok(first) => first,
            Err(NoRoom::Registered) => return Ok(()),
            Err(NoRoom::Overlaps) => {
                return Err(format!(
                    "{len} bytes at {base:#x} overlap memory already registered with the ring"
                ));
            }
            Err(NoRoom::Full { needed, slots }) => {
                return Err(format!(
                    "the ring's table of {slots} fixed buffers has no {needed} consecutive free \
                     slots for {len} more bytes (buffers of {} KiB); raise \
                     UringQueueOptions::fixed_slots (up to {MAX_FIXED_SLOTS})",
                    1usize << (shift - 10)
                ));
            }
        };
        let mut region = FixedRegion {
            base,
            len,
            first,
            count: len.div_ceil(1 << shift) as u32,
            shift,
            hold: None,
        };
        for i in 0..region.count {
            let (addr, chunk_len) = region.chunk(i);
            let iov = libc::iovec {
                iov_base: addr as *mut libc::c_void,
                iov_len: chunk_len,
            };
            // SAFETY: the iovec lies inside the memory `hold` keeps mapped;
            // the hold goes into the table with the region and is dropped
            // only after the slots are emptied (`release_unused`) or the
            // ring is closed (the `ring` field drops before `fixed` and
            // `retired`), so the kernel's table never names unmapped or
            // reused memory.
            let r = unsafe {
                self.ring
                    .submitter()
                    .register_buffers_update(first + i, &[iov], None)
            };
            if let Err(e) = r {
                if self.clear_slots(first, i).is_ok() {
                    self.fixed.unreserve(first, region.count);
                } else {
                    region.hold = Some(hold);
                    self.retired.push(region);
                }
                let hint = if e.raw_os_error() == Some(libc::ENOMEM) {
                    " — raise RLIMIT_MEMLOCK (ulimit -l) or run with CAP_IPC_LOCK"
                } else {
                    ""
                };
                return Err(format!("registering {len} bytes failed: {e}{hint}"));
            }
        }
        region.hold = Some(hold);
        self.fixed.insert(region);
        self.stats.regions_registered += 1;
        Ok(())
    }

    /// Release the registrations whose memory nothing else holds any more
    /// (its pool is dropped and none of its buffers exists, so no command
    /// uses it): the slots are emptied and the memory may be unmapped.
    /// Returns how many were released. Off the I/O path: a system call per
    /// region released, none otherwise.
    pub fn release_unused(&mut self) -> usize {
        let gone = self.fixed.take_unused();
        let mut released = 0;
        for r in gone {
            if self.clear_slots(r.first, r.count).is_ok() {
                self.fixed.unreserve(r.first, r.count);
                self.stats.regions_released += 1;
                released += 1;
                // `r` drops here, and its hold with it: the memory unmaps.
            } else {
                self.fixed.restore(r);
            }
        }
        released
    }
}

impl UringTransport {
    /// Queue one `NVME_URING_CMD_IO` SQE for `cmd` with `data`.
    fn submit_cmd(&mut self, cmd: &Command, data: Option<DataRef>) -> Result<(), SubmitRefusal> {
        if self.in_flight >= self.capacity {
            return Err(SubmitRefusal::Full);
        }
        let (addr, len) = data.map_or((0, 0), |d| (d.addr as u64, d.len));
        if len as usize > self.max_transfer {
            return Err(SubmitRefusal::BadData(
                "transfer larger than the kernel accepts for this namespace",
            ));
        }
        let area = UringCmd::from_command(cmd, addr, len, self.timeout_ms).to_area();
        let mut op = opcode::UringCmd80::new(types::Fd(self.fd), NVME_URING_CMD_IO).cmd(area);
        if len != 0 {
            match self.buffer_index(addr, len) {
                Some(i) => {
                    op = op.buf_index(Some(i));
                    self.stats.fixed_buffer_io += 1;
                }
                None => self.stats.unregistered_io += 1,
            }
        }
        // The tag is the queue pair's CID: the user data names the command.
        let sqe = op.build().user_data(cmd.cid() as u64);
        self.push(&sqe)?;
        self.in_flight += 1;
        Ok(())
    }

    fn flush_pending(&mut self) -> Result<(), SubmitRefusal> {
        if self.pending == 0 {
            return Ok(());
        }
        // A polled ring polls in the same call (never waiting): the reap
        // that follows then needs no call of its own.
        match self.enter(self.polled) {
            Ok(()) => {
                self.polled_ahead = self.polled;
                Ok(())
            }
            // Transient: the SQEs stay queued and go with the next enter.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::EINTR)
                ) =>
            {
                Ok(())
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENXIO) | Some(libc::EBADF)) => {
                Err(SubmitRefusal::Gone)
            }
            Err(_) => Ok(()),
        }
    }

    /// Ask the kernel to cancel the command with `tag`.
    fn cancel_tag(&mut self, tag: u16) -> CancelRequest {
        if self.in_flight == 0 {
            return CancelRequest::NotInFlight;
        }
        let sqe: squeue::Entry128 = opcode::AsyncCancel::new(tag as u64)
            .build()
            .user_data(CANCEL_MARK | tag as u64)
            .into();
        if self.push(&sqe).is_err() {
            return CancelRequest::Failed;
        }
        self.stats.cancels_sent += 1;
        CancelRequest::Sent
    }
}

/// The ring as the transport of a [`crate::driver::QueuePair`]: the queue
/// pair keeps CIDs, buffers, deadlines and retries; the ring carries the
/// commands (see [`crate::driver::transport`]).
impl CommandTransport for UringTransport {
    type Data = DataRef;

    fn capacity(&self) -> usize {
        self.capacity
    }
    fn queue_id(&self) -> u16 {
        self.id
    }
    fn max_transfer(&self) -> usize {
        self.max_transfer
    }
    fn admin_timeout(&self) -> Duration {
        // The kernel's own default admin timeout (nvme_core.admin_timeout).
        Duration::from_secs(60)
    }

    #[inline]
    fn admit(&mut self, stats: &mut QueuePairStats) -> Result<(), SubmitErrorKind> {
        if self.in_flight >= self.capacity {
            stats.queue_full += 1;
            return Err(SubmitErrorKind::QueueFull {
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    #[inline]
    fn map_data(
        &mut self,
        _slot: usize,
        buf: &DmaBuf,
        direction: DataDirection,
    ) -> Result<DataRef, SubmitErrorKind> {
        let data = DataRef::of(buf, direction);
        if data.len as usize > self.max_transfer {
            return Err(SubmitErrorKind::InvalidCommand(
                "transfer larger than the kernel accepts for this namespace",
            ));
        }
        Ok(data)
    }

    fn map_ranges(&mut self, slot: usize, ranges: &[LbaRange]) -> Result<DataRef, SubmitErrorKind> {
        if self.ranges.is_empty() {
            // Sized once for every slot, so it never moves while the
            // kernel may read a list from it.
            self.ranges = vec![0; self.capacity * RANGE_LIST_BYTES];
        }
        let base = slot * RANGE_LIST_BYTES;
        let Some(page) = self.ranges.get_mut(base..base + RANGE_LIST_BYTES) else {
            return Err(SubmitErrorKind::InvalidCommand(
                "no range-list page for this slot",
            ));
        };
        for (i, r) in ranges.iter().enumerate().take(RANGE_LIST_BYTES / 16) {
            page[i * 16..i * 16 + 16].copy_from_slice(zerocopy::IntoBytes::as_bytes(&r.to_dsm()));
        }
        let addr = page.as_mut_ptr();
        Ok(DataRef {
            addr,
            iova: addr as u64,
            len: (ranges.len() * 16) as u32,
            direction: DataDirection::ToDevice,
        })
    }

    #[inline]
    fn prps(_data: &DataRef) -> (u64, u64) {
        // The kernel builds the data pointer from the address and length
        // carried beside the command.
        (0, 0)
    }

    #[inline]
    fn send(
        &mut self,
        cmd: &Command,
        data: Option<DataRef>,
        _stats: &mut QueuePairStats,
    ) -> Result<(), SubmitRefusal> {
        self.submit_cmd(cmd, data)
    }

    fn resend(
        &mut self,
        cmd: &Command,
        data: Option<DataRef>,
        _stats: &mut QueuePairStats,
    ) -> bool {
        self.submit_cmd(cmd, data).is_ok()
    }

    #[inline]
    fn flush(&mut self, _stats: &mut QueuePairStats) {
        // A ring that is gone fails its commands through their completions.
        let _ = self.flush_pending();
    }

    #[inline]
    fn begin_reap(&mut self, _stats: &mut QueuePairStats) -> Reap {
        if self.polled {
            // The submission just polled: what it found is in the
            // completion ring already.
            if std::mem::take(&mut self.polled_ahead) {
                return Reap::Ready;
            }
            if self.in_flight != 0 || self.pending != 0 {
                // Errors here are transient (EAGAIN/EBUSY/EINTR): the next
                // call polls again.
                let _ = self.enter(true);
            }
        } else if self.pending != 0 {
            let _ = self.enter(false);
        }
        Reap::Ready
    }

    #[inline]
    fn next_completion(&mut self, _stats: &mut QueuePairStats) -> Option<TransportCompletion> {
        loop {
            let cqe = self.ring.completion().next()?;
            let ud = cqe.user_data();
            if ud & CANCEL_MARK != 0 {
                match -cqe.result() {
                    0 => self.stats.cancels_done += 1,
                    libc::ENOENT | libc::EALREADY => self.stats.cancels_refused += 1,
                    e => self.stats.cancel_last_errno = e,
                }
                continue;
            }
            if cqe.result() < 0 {
                self.stats.last_errno = -cqe.result();
            }
            self.in_flight = self.in_flight.saturating_sub(1);
            return Some(TransportCompletion {
                tag: ud as u16,
                outcome: uring_outcome(cqe.result(), cqe.big_cqe()[0]),
            });
        }
    }

    #[inline]
    fn end_reap(&mut self, _consumed: usize, _stats: &mut QueuePairStats) {}

    fn recover(&mut self, _state: u64, _stats: &mut QueuePairStats) -> Recovery {
        // The kernel owns the controller: its resets are invisible here,
        // and `begin_reap` never reports a change.
        Recovery::Wait
    }

    fn live(&self) -> Option<u64> {
        Some(0)
    }
    fn stalled(&mut self) -> bool {
        false
    }

    fn cancel(&mut self, tag: u16) -> CancelRequest {
        let r = self.cancel_tag(tag);
        let _ = self.flush_pending();
        r
    }

    fn reset(&mut self, _state: u64) {
        // The kernel resets the controller itself (after its own timeout);
        // from here, the last resort is cancelling everything in flight.
        self.cancel_all();
        let _ = self.flush_pending();
    }

    fn dma_unproven(&self) -> bool {
        false
    }
    fn quarantine(&self) {}

    fn close_begin(&mut self) {
        self.cancel_all();
        let _ = self.flush_pending();
    }
    fn close_wait(&self) -> Option<Duration> {
        Some(self.close_timeout)
    }
    fn close_idle(&mut self) {
        if self.polled {
            std::thread::yield_now();
        } else {
            self.wait(100);
        }
    }
    fn close(&mut self) -> Closed {
        // What is still held did not complete within the close timeout:
        // the kernel may still write those buffers.
        Closed {
            result: Ok(()),
            leftover: IoError::TimedOut(self.close_timeout),
            quarantine: true,
        }
    }
}

#[cfg(test)]
#[path = "ring_tests.rs"]
mod tests;
