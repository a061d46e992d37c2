//! The admin queue (NVMe Base 2.0 §3.5.1 step 3, §5): synchronous admin
//! commands with a timeout. Admin commands are rare, so the queue lives behind
//! the controller's `Mutex` and runs one command at a time.
//!
//! Every command gets a fresh CID from a rolling counter; a completion with
//! any other CID (a late answer to a timed-out command, or a device bug) is
//! counted and ignored.
//!
//! Asynchronous Event Requests (§5.2) are the exception to "one at a time":
//! up to [`MAX_ASYNC_EVENT_REQUESTS`] of them stay outstanding, each under a
//! CID of its own from a reserved range the rolling counter never hands
//! out. Their completions are set aside wherever they are reaped — while a
//! synchronous command waits, or by [`AdminQueue::reap_idle`] — for the
//! controller to act on later; they never count as ignored. A controller
//! reset drops them without a completion, which [`AdminQueue::reinit`]
//! records.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use zerocopy::FromBytes;

use crate::device::Device;
use crate::dma::{DmaBuf, DmaRegion};
use crate::spec::registers::{self, Csts, cq_head_doorbell, sq_tail_doorbell};
use crate::spec::{
    command::{AdminOpcode, Command},
    completion::Completion,
};

use super::error::DriverError;
use super::prp::{self, PAGE_SIZE, WindowSink, pages};
use super::ring::{CQE_BYTES, CqRing, SQE_BYTES, SqRing};
use crate::dma::DmaWindow;

/// Where an admin command's data goes.
pub(crate) enum AdminData<'a> {
    /// No data transfer.
    None,
    /// The admin queue's own 4 KiB scratch page.
    Scratch,
    /// A caller's buffer (its whole window). Mutable so a buffer the device
    /// may still write after a failed recovery can be quarantined.
    Buf(&'a mut DmaBuf),
}

/// Counters of completions the admin queue refused to trust.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct AdminStats {
    /// Commands completed.
    pub completed: u64,
    /// Completions whose CID matched no outstanding command.
    pub ignored_completions: u64,
    /// Completions whose SQHD was outside the ring or ahead of the tail.
    pub invalid_sqhd: u64,
    /// Asynchronous Event Requests submitted (including re-arms).
    pub async_requests_sent: u64,
    /// Asynchronous Event Requests completed (events and errors).
    pub async_requests_completed: u64,
}

/// Most Asynchronous Event Requests the driver keeps outstanding at once,
/// whatever AERL allows.
pub const MAX_ASYNC_EVENT_REQUESTS: usize = 16;

/// The first CID of the reserved range for Asynchronous Event Requests;
/// request `i` uses `AER_CID_BASE + i`.
const AER_CID_BASE: u16 = 0xFFF0;

/// The admin submission/completion queue pair and its scratch memory.
pub(crate) struct AdminQueue {
    sq: SqRing,
    cq: CqRing,
    scratch: DmaWindow,
    list: DmaWindow,
    list_pages: usize,
    next_cid: u16,
    /// CID of the last command submitted (the one to abort on a timeout).
    pub(crate) last_cid: u16,
    sq_doorbell: usize,
    cq_doorbell: usize,
    timeout: Duration,
    pub(crate) stats: AdminStats,
    /// Bit `i`: the Asynchronous Event Request with CID `AER_CID_BASE + i`
    /// is outstanding.
    aer_outstanding: u16,
    /// Asynchronous Event Request completions reaped but not acted on yet.
    aer_completions: Vec<Completion>,
}

impl AdminQueue {
    /// Empty both rings after the controller was disabled, before it is
    /// enabled again with the same queue memory.
    pub(crate) fn reinit(&mut self) {
        self.sq.reset();
        self.cq.reset();
        // A disabled controller forgets its Asynchronous Event Requests
        // without completing them; they are sent again once it is enabled.
        self.aer_outstanding = 0;
    }

    /// Lay out an admin queue of `entries` (SQ and CQ equal) in `region`,
    /// with PRP-list pages for transfers of up to `max_transfer` bytes.
    pub(crate) fn new(
        region: DmaRegion,
        entries: u16,
        stride: usize,
        max_transfer: usize,
        timeout: Duration,
    ) -> Result<Self, DriverError> {
        let region = Arc::new(region);
        let sq_pages = pages(entries as usize * SQE_BYTES);
        let cq_pages = pages(entries as usize * CQE_BYTES);
        let list_pages = prp::list_pages_for_transfer(max_transfer).max(1);
        let win = |page: usize, n: usize, what: &'static str| {
            DmaWindow::new(Arc::clone(&region), page * PAGE_SIZE, n * PAGE_SIZE).ok_or(
                DriverError::QueueMemory {
                    what,
                    bytes: n * PAGE_SIZE,
                },
            )
        };
        let sq_mem = win(0, sq_pages, "admin submission queue")?;
        let cq_mem = win(sq_pages, cq_pages, "admin completion queue")?;
        let scratch = win(sq_pages + cq_pages, 1, "admin data page")?;
        let list = win(sq_pages + cq_pages + 1, list_pages, "admin PRP list")?;
        let sq = SqRing::new(sq_mem, entries).ok_or(DriverError::QueueMemory {
            what: "admin submission queue",
            bytes: sq_pages * PAGE_SIZE,
        })?;
        let cq = CqRing::new(cq_mem, entries).ok_or(DriverError::QueueMemory {
            what: "admin completion queue",
            bytes: cq_pages * PAGE_SIZE,
        })?;
        if !sq.is_contiguous() || !cq.is_contiguous() {
            return Err(DriverError::QueueMemory {
                what: "admin queue",
                bytes: (sq_pages + cq_pages) * PAGE_SIZE,
            });
        }
        Ok(AdminQueue {
            sq,
            cq,
            scratch,
            list,
            list_pages,
            next_cid: 0,
            last_cid: 0,
            sq_doorbell: sq_tail_doorbell(0, stride),
            cq_doorbell: cq_head_doorbell(0, stride),
            timeout,
            stats: AdminStats::default(),
            aer_outstanding: 0,
            aer_completions: Vec::new(),
        })
    }

    /// Bytes of memory an admin queue of `entries` needs.
    pub(crate) fn region_bytes(entries: u16, max_transfer: usize) -> usize {
        (pages(entries as usize * SQE_BYTES)
            + pages(entries as usize * CQE_BYTES)
            + 1
            + prp::list_pages_for_transfer(max_transfer).max(1))
            * PAGE_SIZE
    }

    /// Keep the admin queue's memory (rings, data page, PRP lists) mapped
    /// for the rest of the process: the device could not be stopped.
    pub(crate) fn quarantine(&self) {
        self.scratch.quarantine();
    }

    /// IOVAs of the submission and completion rings (for ASQ/ACQ).
    pub(crate) fn ring_iovas(&self) -> (u64, u64) {
        (
            self.sq.iova().unwrap_or(prp::PRP_UNUSED),
            self.cq.iova().unwrap_or(prp::PRP_UNUSED),
        )
    }

    /// Read the scratch page as a `T`.
    pub(crate) fn scratch<T: FromBytes>(&self) -> Option<T> {
        self.scratch_at(0)
    }

    /// Read a `T` at byte `off` of the scratch page.
    pub(crate) fn scratch_at<T: FromBytes>(&self, off: usize) -> Option<T> {
        let mut bytes = vec![0u8; size_of::<T>()];
        if !self.scratch.view().read(off, &mut bytes) {
            return None;
        }
        T::read_from_bytes(&bytes).ok()
    }

    /// Asynchronous Event Requests outstanding now.
    pub(crate) fn async_requests_outstanding(&self) -> usize {
        self.aer_outstanding.count_ones() as usize
    }

    /// Submit one Asynchronous Event Request without waiting for it (it
    /// completes when the controller has an event). False when all
    /// [`MAX_ASYNC_EVENT_REQUESTS`] CIDs are in use or the ring is full.
    pub(crate) fn submit_async_request<D: Device>(&mut self, device: &D) -> bool {
        let free = !self.aer_outstanding;
        if free == 0 {
            return false;
        }
        let slot = free.trailing_zeros() as u16;
        let mut cmd = Command::new(AdminOpcode::ASYNC_EVENT_REQUEST.0, 0);
        cmd.set_cid(AER_CID_BASE + slot);
        if !self.sq.push(&cmd) {
            return false;
        }
        self.aer_outstanding |= 1 << slot;
        self.stats.async_requests_sent += 1;
        if let Some(tail) = self.sq.doorbell_value() {
            device.write32(self.sq_doorbell, tail as u32);
        }
        true
    }

    /// Reap what the completion queue holds with no command waiting:
    /// Asynchronous Event Request completions are set aside, anything else
    /// is a late answer and counted as ignored. Returns the entries reaped.
    pub(crate) fn reap_idle<D: Device>(&mut self, device: &D) -> usize {
        let mut n = 0;
        while let Some(c) = self.cq.peek() {
            self.cq.advance();
            n += 1;
            if !self.sq.update_head(c.sqhd) {
                self.stats.invalid_sqhd += 1;
            }
            self.set_aside(c);
        }
        if n > 0 {
            device.write32(self.cq_doorbell, self.cq.head() as u32);
        }
        n
    }

    /// Take the Asynchronous Event Request completions set aside so far.
    pub(crate) fn take_async_completions(&mut self) -> Vec<Completion> {
        std::mem::take(&mut self.aer_completions)
    }

    /// Keep a completion that is not the awaited command's: an outstanding
    /// Asynchronous Event Request's is kept for the controller, any other
    /// counted and dropped.
    fn set_aside(&mut self, c: Completion) {
        let slot = c.cid.wrapping_sub(AER_CID_BASE);
        if c.cid >= AER_CID_BASE && self.aer_outstanding & (1 << slot) != 0 {
            self.aer_outstanding &= !(1 << slot);
            self.stats.async_requests_completed += 1;
            // Bounded by the number of requests that can be outstanding
            // between two takes (at most 16 per re-arm round).
            self.aer_completions.push(c);
        } else {
            self.stats.ignored_completions += 1;
        }
    }

    /// Run one admin command to completion. Returns the completion on
    /// success; a device error status becomes [`DriverError::AdminFailed`].
    pub(crate) fn execute<D: Device>(
        &mut self,
        device: &D,
        mut cmd: Command,
        data: AdminData<'_>,
    ) -> Result<Completion, DriverError> {
        let command = AdminOpcode(cmd.opcode())
            .name()
            .unwrap_or("(vendor specific)");
        let has_data = !matches!(data, AdminData::None);
        let (prp1, prp2) = match data {
            AdminData::None => (0, 0),
            AdminData::Scratch => {
                self.scratch.view().zero();
                (
                    self.scratch.iova(0).unwrap_or(prp::PRP_UNUSED),
                    prp::PRP_UNUSED,
                )
            }
            AdminData::Buf(buf) => {
                let mut sink = WindowSink {
                    mem: &self.list,
                    first_page: 0,
                    pages: self.list_pages,
                };
                let base = buf.iova();
                let len = buf.len();
                prp::build(len, |off| (off < len).then(|| base + off as u64), &mut sink)
                    .map_err(DriverError::Buffer)?
            }
        };
        if has_data {
            cmd.prp1 = prp1;
            cmd.prp2 = prp2;
        }
        let cid = self.next_cid;
        // Skip the range reserved for Asynchronous Event Requests.
        self.next_cid = match self.next_cid.wrapping_add(1) {
            AER_CID_BASE.. => 0,
            n => n,
        };
        self.last_cid = cid;
        cmd.set_cid(cid);
        if !self.sq.push(&cmd) {
            return Err(DriverError::AdminQueueFull);
        }
        if let Some(tail) = self.sq.doorbell_value() {
            device.write32(self.sq_doorbell, tail as u32);
        }
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if let Some(c) = self.cq.peek() {
                self.cq.advance();
                device.write32(self.cq_doorbell, self.cq.head() as u32);
                if !self.sq.update_head(c.sqhd) {
                    self.stats.invalid_sqhd += 1;
                }
                if c.cid != cid {
                    self.set_aside(c);
                    continue;
                }
                self.stats.completed += 1;
                let status = c.status();
                if !status.is_success() {
                    return Err(DriverError::AdminFailed { command, status });
                }
                return Ok(c);
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) {
                let csts = device.read32(registers::offset::CSTS);
                if csts == registers::ALL_ONES {
                    return Err(DriverError::DeviceGone {
                        device: device.name(),
                        during: command,
                    });
                }
                if Csts::from(csts).cfs() {
                    return Err(DriverError::ControllerFatal {
                        device: device.name(),
                        during: command,
                    });
                }
                if start.elapsed() > self.timeout {
                    return Err(DriverError::AdminTimeout {
                        command,
                        timeout: self.timeout,
                    });
                }
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}
