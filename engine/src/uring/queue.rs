//! A queue of the io_uring passthrough transport with the engine's I/O API:
//! the same [`Namespace`] checks, [`IoCompletion`]s, [`IoError`]s and
//! deadlines as a PCIe queue pair, over one [`UringTransport`]. Tags carry
//! a slot index and a generation, so a completion is matched to exactly one
//! submission. Dropping (or [`UringQueue::close_with`]) cancels what is in
//! flight and reaps every completion before a buffer is released.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::dma::{DmaBuf, DmaPool};
use crate::driver::{
    DeviceGone, IoCompletion, IoError, Namespace, SubmitError, SubmitErrorKind, SyncError,
};
use crate::spec::command::CDW12_FUA;
use crate::spec::command::{Command, NvmOpcode};

use super::device::{UringDevice, kernel_timeout_ms};
use super::error::UringError;
use super::kernel::{KernelVersion, io_uring_disabled};
use super::ring::{BufferMode, CompletionMode, RingSetupError, RingStats, UringTransport};
use super::transport::{
    CancelRequest, CommandTransport, DataDirection, DataRef, SubmitRefusal, outcome_to_result,
};

/// Options for one queue.
#[derive(Clone, Copy, Debug)]
pub struct UringQueueOptions {
    /// Commands in flight at once (1..=4096).
    pub entries: u16,
    /// Use `IORING_SETUP_IOPOLL` when the namespace has poll queues.
    pub polled: bool,
    /// Fail instead of falling back to interrupts when polling is not possible.
    pub require_polled: bool,
    /// Register pools as fixed buffers (Linux 6.1+).
    pub fixed_buffers: bool,
    /// Deadline of each command; past it the command is cancelled and, when
    /// it then completes cancelled, reported as [`IoError::TimedOut`].
    pub timeout: Duration,
    /// Timeout the kernel's NVMe driver enforces per command (abort, then
    /// controller reset); `None` leaves its default (`nvme_core.io_timeout`).
    pub kernel_timeout: Option<Duration>,
    /// How long dropping the queue waits for commands that never complete
    /// before giving their buffers up as quarantined.
    pub close_timeout: Duration,
}

impl Default for UringQueueOptions {
    fn default() -> Self {
        UringQueueOptions {
            entries: 128,
            polled: true,
            require_polled: false,
            fixed_buffers: true,
            timeout: Duration::from_secs(30),
            kernel_timeout: None,
            close_timeout: Duration::from_secs(120),
        }
    }
}

/// Counters of one queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UringQueueStats {
    /// Commands submitted.
    pub submitted: u64,
    /// Commands completed (any outcome).
    pub completed: u64,
    /// Commands completed with an error.
    pub failed: u64,
    /// Commands whose deadline passed.
    pub timeouts: u64,
    /// Completions whose tag named no command in flight (never expected).
    pub unknown_completions: u64,
    /// Ring counters.
    pub ring: RingStats,
}

struct Slot {
    token: u64,
    buf: Option<DmaBuf>,
    deadline: Instant,
    generation: u16,
    in_flight: bool,
    timed_out: bool,
}

/// One queue (one ring) on one namespace, owned by one thread.
pub struct UringQueue {
    ring: UringTransport,
    ns: Namespace,
    slots: Vec<Slot>,
    free: Vec<u16>,
    index_bits: u32,
    timeout: Duration,
    close_timeout: Duration,
    completion_mode: CompletionMode,
    buffer_mode: BufferMode,
    /// Fixed buffers were asked for and the kernel has them.
    fixed_allowed: bool,
    /// Largest transfer (a power of two): the fixed buffer chunk size.
    max_transfer: usize,
    /// Held while this queue polls on a kernel that allows one polling
    /// ring at a time; declared after the ring so it is released after
    /// the ring is closed.
    _poll_slot: Option<PolledRingSlot>,
    /// One small buffer of every registered pool: keeps its memory mapped
    /// for as long as the ring may reach it.
    keepalive: Vec<DmaBuf>,
    stats: UringQueueStats,
}

impl UringQueue {
    pub(super) fn new(dev: &UringDevice, opts: UringQueueOptions) -> Result<Self, UringError> {
        if !(1..=4096).contains(&opts.entries) {
            return Err(UringError::InvalidOption {
                name: "entries",
                value: opts.entries as u64,
                hint: "a queue holds 1 to 4096 commands",
            });
        }
        let kernel = dev.kernel();
        let new_enough = kernel.is_none_or(|k| k.at_least(KernelVersion::IOPOLL_AND_FIXED));
        let release = super::kernel::release();
        let poll = dev.poll_support();
        let mut poll_slot = None;
        let completion_mode = if !opts.polled {
            CompletionMode::Interrupts {
                reason: "polling not asked for".into(),
            }
        } else if !new_enough {
            CompletionMode::Interrupts {
                reason: format!("kernel {release} predates polled uring commands (Linux 6.1)"),
            }
        } else if poll.available == Some(true) {
            match PolledRingSlot::take(kernel) {
                Some(slot) => {
                    poll_slot = Some(slot);
                    CompletionMode::Polled
                }
                None => CompletionMode::Interrupts {
                    reason: format!(
                        "another queue of this process already polls; on kernel {release} \
                         (before Linux 6.5) several rings polling one NVMe device can crash \
                         the kernel (the polled request's bio may be freed while another ring \
                         polls it), so only one queue at a time polls"
                    ),
                },
            }
        } else {
            CompletionMode::Interrupts {
                reason: format!(
                    "no poll queues ({}); set nvme.poll_queues=N to poll",
                    poll.detail
                ),
            }
        };
        if opts.require_polled && completion_mode != CompletionMode::Polled {
            return Err(UringError::NoPollQueues {
                path: dev.path().display().to_string(),
                detail: match &completion_mode {
                    CompletionMode::Interrupts { reason } => reason.clone(),
                    CompletionMode::Polled => String::new(),
                },
            });
        }
        let buffer_mode = if !opts.fixed_buffers {
            BufferMode::Unregistered {
                reason: "fixed buffers not asked for".into(),
            }
        } else if !new_enough {
            BufferMode::Unregistered {
                reason: format!(
                    "kernel {release} predates fixed buffers for uring commands (Linux 6.1)"
                ),
            }
        } else {
            BufferMode::Unregistered {
                reason: "no pool registered yet (UringQueue::register_pool)".into(),
            }
        };
        let capacity = opts.entries as usize;
        let ring = UringTransport::new(
            dev.ns_fd(),
            capacity,
            completion_mode == CompletionMode::Polled,
            opts.fixed_buffers && new_enough,
            dev.max_transfer_bytes(),
            kernel_timeout_ms(opts.kernel_timeout),
        )
        .map_err(|e| setup_error(e, opts.entries as u32))?;
        let index_bits = usize::BITS - (capacity - 1).leading_zeros();
        let now = Instant::now();
        Ok(UringQueue {
            ring,
            ns: dev.namespace().clone(),
            slots: (0..capacity)
                .map(|_| Slot {
                    token: 0,
                    buf: None,
                    deadline: now,
                    generation: 0,
                    in_flight: false,
                    timed_out: false,
                })
                .collect(),
            free: (0..capacity as u16).rev().collect(),
            index_bits: index_bits.max(1),
            timeout: opts.timeout,
            close_timeout: opts.close_timeout,
            completion_mode,
            buffer_mode,
            fixed_allowed: opts.fixed_buffers && new_enough,
            max_transfer: dev.max_transfer_bytes(),
            _poll_slot: poll_slot,
            keepalive: Vec::new(),
            stats: UringQueueStats::default(),
        })
    }

    /// Register `pool`'s memory with this ring as fixed buffers, so its
    /// buffers need no page pinning per I/O. Falls back (and says why in
    /// [`UringQueue::buffer_mode`]) when the kernel cannot; only an
    /// allocation failure of the pool is an error. Call while nothing is
    /// in flight. Takes one 4 KiB block of the pool to keep it mapped.
    pub fn register_pool(&mut self, pool: &mut DmaPool) -> Result<&BufferMode, UringError> {
        if !self.fixed_allowed {
            return Ok(&self.buffer_mode);
        }
        let keep = pool.alloc(4096).map_err(UringError::Dma)?;
        let (addr, len) = (pool.region().as_ptr() as u64, pool.region().len());
        // SAFETY: `keep` holds the pool's region alive (its Arc) until the
        // queue, and so the ring, is dropped: the registered memory stays
        // mapped and belongs to this pool for the ring's whole life.
        match unsafe { self.ring.register(addr, len, self.max_transfer) } {
            Ok(()) => {
                self.keepalive.push(keep);
                self.buffer_mode = BufferMode::Fixed;
            }
            Err(e) => {
                let _ = pool.free(keep);
                let hint = if e.raw_os_error() == Some(libc::ENOMEM) {
                    " — raise RLIMIT_MEMLOCK (ulimit -l) or run with CAP_IPC_LOCK"
                } else {
                    ""
                };
                self.buffer_mode = BufferMode::Unregistered {
                    reason: format!("registering {len} bytes failed: {e}{hint}"),
                };
            }
        }
        Ok(&self.buffer_mode)
    }

    /// Polled or interrupt-driven completion, and why.
    pub fn completion_mode(&self) -> &CompletionMode {
        &self.completion_mode
    }
    /// Fixed buffers or per-I/O pinning, and why.
    pub fn buffer_mode(&self) -> &BufferMode {
        &self.buffer_mode
    }
    /// The namespace this queue reaches.
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }
    /// Commands the queue holds.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }
    /// Commands in flight.
    pub fn outstanding(&self) -> usize {
        self.slots.len() - self.free.len()
    }
    /// Counters.
    pub fn stats(&self) -> UringQueueStats {
        UringQueueStats {
            ring: *self.ring.stats(),
            ..self.stats
        }
    }
    /// Per-command deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
    /// Change the per-command deadline (commands submitted from now on).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Read `buf.len()` bytes at `lba` into `buf`.
    pub fn read(&mut self, lba: u64, buf: DmaBuf, token: u64) -> Result<(), SubmitError> {
        self.rw(NvmOpcode::READ, lba, buf, 0, token)
    }

    /// Write `buf` at `lba` (`fua`: Force Unit Access).
    pub fn write(
        &mut self,
        lba: u64,
        buf: DmaBuf,
        fua: bool,
        token: u64,
    ) -> Result<(), SubmitError> {
        self.rw(
            NvmOpcode::WRITE,
            lba,
            buf,
            if fua { CDW12_FUA } else { 0 },
            token,
        )
    }

    fn rw(
        &mut self,
        op: NvmOpcode,
        lba: u64,
        buf: DmaBuf,
        cdw12: u32,
        token: u64,
    ) -> Result<(), SubmitError> {
        let nlb = match self
            .ns
            .check_rw(lba, buf.len(), buf.iova(), op == NvmOpcode::WRITE)
        {
            Ok(n) => n,
            Err(kind) => return Err(SubmitError::new(kind, Some(buf))),
        };
        let mut cmd = Command::new(op.0, self.ns.id());
        cmd.set_slba(lba);
        cmd.cdw12 = nlb as u32 | cdw12;
        let dir = if op == NvmOpcode::WRITE {
            DataDirection::ToDevice
        } else {
            DataDirection::FromDevice
        };
        self.submit(&cmd, Some((buf, dir)), token)
    }

    /// Flush the volatile write cache.
    pub fn flush(&mut self, token: u64) -> Result<(), SubmitError> {
        let cmd = Command::new(NvmOpcode::FLUSH.0, self.ns.id());
        self.submit(&cmd, None, token)
    }

    /// Write Zeroes over `blocks` blocks at `lba`.
    pub fn write_zeroes(&mut self, lba: u64, blocks: u32, token: u64) -> Result<(), SubmitError> {
        let nlb = self
            .ns
            .check_write_zeroes(lba, blocks)
            .map_err(|k| SubmitError::new(k, None))?;
        let mut cmd = Command::new(NvmOpcode::WRITE_ZEROES.0, self.ns.id());
        cmd.set_slba(lba);
        cmd.cdw12 = nlb as u32;
        self.submit(&cmd, None, token)
    }

    /// Submit any NVM command on this namespace (NSID is set to it); the
    /// kernel decides the data direction from the opcode (bit 0: to the
    /// device, bit 1: from it).
    pub fn submit_raw(
        &mut self,
        mut cmd: Command,
        buf: Option<DmaBuf>,
        token: u64,
    ) -> Result<(), SubmitError> {
        cmd.nsid = self.ns.id();
        let data = match buf {
            Some(b) => {
                let dir = match cmd.opcode() & 3 {
                    1 => DataDirection::ToDevice,
                    2 => DataDirection::FromDevice,
                    _ => {
                        return Err(SubmitError::new(
                            SubmitErrorKind::InvalidCommand(
                                "a data buffer needs an opcode with a data direction \
                                 (bit 0 to the device or bit 1 from it, not both or neither)",
                            ),
                            Some(b),
                        ));
                    }
                };
                Some((b, dir))
            }
            None => None,
        };
        self.submit(&cmd, data, token)
    }

    fn submit(
        &mut self,
        cmd: &Command,
        data: Option<(DmaBuf, DataDirection)>,
        token: u64,
    ) -> Result<(), SubmitError> {
        let Some(index) = self.free.pop() else {
            return Err(SubmitError::new(
                SubmitErrorKind::QueueFull {
                    capacity: self.slots.len(),
                },
                data.map(|d| d.0),
            ));
        };
        let slot = &mut self.slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        let tag = index | (slot.generation << self.index_bits);
        let dref = data.as_ref().map(|(b, dir)| DataRef {
            addr: b.as_ptr(),
            iova: b.iova(),
            len: b.len() as u32,
            direction: *dir,
        });
        // SAFETY: the buffer moves into the slot below and stays there,
        // untouched, until the completion with this tag is reaped (or the
        // queue's teardown has reaped it), as the seam requires.
        match unsafe { self.ring.submit(cmd, dref, tag) } {
            Ok(()) => {
                let slot = &mut self.slots[index as usize];
                slot.token = token;
                slot.buf = data.map(|d| d.0);
                slot.deadline = Instant::now() + self.timeout;
                slot.in_flight = true;
                slot.timed_out = false;
                self.stats.submitted += 1;
                Ok(())
            }
            Err(r) => {
                self.free.push(index);
                let kind = match r {
                    SubmitRefusal::Full => SubmitErrorKind::QueueFull {
                        capacity: self.slots.len(),
                    },
                    SubmitRefusal::BadData(why) => SubmitErrorKind::InvalidCommand(why),
                    SubmitRefusal::Gone => SubmitErrorKind::Gone(DeviceGone::Removed),
                };
                Err(SubmitError::new(kind, data.map(|d| d.0)))
            }
        }
    }

    /// Hand every command queued since the last call to the kernel, in one
    /// `io_uring_enter` (none when nothing is queued).
    pub fn ring_doorbell(&mut self) {
        let _ = self.ring.flush();
    }

    /// Reap at most `max` completions without blocking; each goes to `f`
    /// with its token and buffer. Returns how many.
    pub fn process_completions<F: FnMut(IoCompletion)>(&mut self, max: usize, mut f: F) -> usize {
        let mask = (1u16 << self.index_bits) - 1;
        let (slots, free, stats, timeout) = (
            &mut self.slots,
            &mut self.free,
            &mut self.stats,
            self.timeout,
        );
        self.ring.poll(max, |c| {
            let index = (c.tag & mask) as usize;
            let generation = c.tag >> slots_bits(mask);
            let Some(slot) = slots.get_mut(index) else {
                stats.unknown_completions += 1;
                return;
            };
            if !slot.in_flight || slot.generation & (u16::MAX >> slots_bits(mask)) != generation {
                stats.unknown_completions += 1;
                return;
            }
            slot.in_flight = false;
            free.push(index as u16);
            let result = outcome_to_result(c.outcome, slot.timed_out.then_some(timeout));
            stats.completed += 1;
            if result.is_err() {
                stats.failed += 1;
            }
            f(IoCompletion {
                token: slot.token,
                result,
                buf: slot.buf.take(),
            });
        })
    }

    /// Cancel every command past its deadline at `now` (each once); they
    /// still complete through [`UringQueue::process_completions`], as
    /// [`IoError::TimedOut`] when the cancellation took effect. Returns how
    /// many deadlines passed in this call.
    pub fn check_timeouts(&mut self, now: Instant) -> usize {
        let mut n = 0;
        let mask = (1u16 << self.index_bits) - 1;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.in_flight && !slot.timed_out && now >= slot.deadline {
                let tag = i as u16 | (slot.generation << slots_bits(mask));
                if self.ring.cancel(tag) == CancelRequest::Busy {
                    break;
                }
                slot.timed_out = true;
                self.stats.timeouts += 1;
                n += 1;
            }
        }
        if n != 0 {
            let _ = self.ring.flush();
        }
        n
    }

    /// Wait for the one outstanding command to complete, checking its
    /// deadline (synchronous helpers; spins on the poll loop).
    fn wait_one(&mut self) -> IoCompletion {
        let mut out = None;
        loop {
            self.process_completions(1, |c| out = Some(c));
            if let Some(c) = out {
                return c;
            }
            self.check_timeouts(Instant::now());
            std::hint::spin_loop();
        }
    }

    fn sync(
        &mut self,
        submit: impl FnOnce(&mut Self) -> Result<(), SubmitError>,
    ) -> Result<Option<DmaBuf>, SyncError> {
        if self.outstanding() != 0 {
            return Err(SyncError {
                error: IoError::Busy(self.outstanding()),
                buf: None,
            });
        }
        submit(self).map_err(|e| SyncError {
            error: IoError::Rejected(e.kind),
            buf: e.buf,
        })?;
        self.ring_doorbell();
        let c = self.wait_one();
        match c.result {
            Ok(_) => Ok(c.buf),
            Err(error) => Err(SyncError { error, buf: c.buf }),
        }
    }

    /// Read and wait. Needs an otherwise idle queue.
    pub fn read_sync(&mut self, lba: u64, buf: DmaBuf) -> Result<DmaBuf, SyncError> {
        self.sync(|q| q.read(lba, buf, 0))
            .map(|b| b.unwrap_or_else(|| unreachable!("a read carries its buffer")))
    }
    /// Write and wait. Needs an otherwise idle queue.
    pub fn write_sync(&mut self, lba: u64, buf: DmaBuf, fua: bool) -> Result<DmaBuf, SyncError> {
        self.sync(|q| q.write(lba, buf, fua, 0))
            .map(|b| b.unwrap_or_else(|| unreachable!("a write carries its buffer")))
    }
    /// Flush and wait. Needs an otherwise idle queue.
    pub fn flush_sync(&mut self) -> Result<(), SyncError> {
        self.sync(|q| q.flush(0)).map(|_| ())
    }

    /// Cancel everything in flight and hand every command's completion to
    /// `f` — the ones the kernel cancelled as errors — before returning.
    /// Commands that do not complete within the close timeout come back
    /// as [`IoError::TimedOut`] with their buffers quarantined (the
    /// kernel may still write them; they are never reused).
    pub fn close_with<F: FnMut(IoCompletion)>(mut self, f: F) {
        self.drain(f);
    }

    fn drain<F: FnMut(IoCompletion)>(&mut self, mut f: F) {
        if self.outstanding() == 0 {
            return;
        }
        self.ring.cancel_all();
        let _ = self.ring.flush();
        let give_up = Instant::now() + self.close_timeout;
        while self.outstanding() != 0 && Instant::now() < give_up {
            if self.process_completions(usize::MAX, &mut f) == 0 {
                if self.ring.polled() {
                    std::thread::yield_now();
                } else {
                    self.ring.wait(100);
                }
            }
        }
        for slot in self.slots.iter_mut().filter(|s| s.in_flight) {
            slot.in_flight = false;
            let mut buf = slot.buf.take();
            if let Some(b) = buf.as_mut() {
                b.quarantine();
            }
            f(IoCompletion {
                token: slot.token,
                result: Err(IoError::TimedOut(self.close_timeout)),
                buf,
            });
        }
    }
}

/// Polling rings of this process on kernels where only one may poll.
static POLLED_RINGS: AtomicUsize = AtomicUsize::new(0);

/// The right to poll on a kernel before Linux 6.5, where the NVMe
/// driver's uring command polling dereferences the polled request's bio,
/// which a concurrent poller on another ring may already have completed
/// and freed (a kernel crash seen on 6.1 with several threads polling one
/// device). From 6.5 the driver polls by request and any number of rings
/// may poll.
struct PolledRingSlot {
    counted: bool,
}

impl PolledRingSlot {
    fn take(kernel: Option<KernelVersion>) -> Option<Self> {
        if kernel.is_some_and(|k| k.at_least(KernelVersion::CONCURRENT_POLL)) {
            return Some(PolledRingSlot { counted: false });
        }
        POLLED_RINGS
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| PolledRingSlot { counted: true })
    }
}

impl Drop for PolledRingSlot {
    fn drop(&mut self) {
        if self.counted {
            POLLED_RINGS.store(0, Ordering::Release);
        }
    }
}

/// Bits of the tag that hold the slot index, from its mask.
fn slots_bits(mask: u16) -> u32 {
    16 - mask.leading_zeros()
}

impl Drop for UringQueue {
    fn drop(&mut self) {
        self.drain(|_| {});
    }
}

impl std::fmt::Debug for UringQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringQueue")
            .field("nsid", &self.ns.id())
            .field("capacity", &self.capacity())
            .field("outstanding", &self.outstanding())
            .field("completion_mode", &self.completion_mode)
            .field("buffer_mode", &self.buffer_mode)
            .finish()
    }
}

fn setup_error(e: RingSetupError, entries: u32) -> UringError {
    let release = super::kernel::release();
    match e {
        RingSetupError::NoUringCmd(detail) => UringError::NoUringCmd { release, detail },
        RingSetupError::Setup(source) => match source.raw_os_error() {
            Some(libc::EPERM) if io_uring_disabled().is_some_and(|v| v != 0) => {
                UringError::IoUringDisabled {
                    value: io_uring_disabled().unwrap_or(2),
                }
            }
            Some(libc::ENOSYS) | Some(libc::EPERM) => UringError::IoUringUnavailable { source },
            Some(libc::EINVAL)
                if KernelVersion::running()
                    .is_some_and(|k| !k.at_least(KernelVersion::URING_CMD)) =>
            {
                UringError::NoUringCmd {
                    release,
                    detail: "io_uring_setup rejected IORING_SETUP_SQE128 | IORING_SETUP_CQE32"
                        .into(),
                }
            }
            _ => UringError::RingSetup { entries, source },
        },
    }
}
