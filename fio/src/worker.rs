//! The I/O path of one fio thread: its queue pair, the DMA block fio lays
//! its buffers out in, and the queue / commit / getevents / event cycle.
//!
//! fio's buffers are one block from the thread's DMA pool (handed to fio
//! by the iomem hooks). Each io_u gets an alias of that block
//! ([`DmaBuf::alias`]) once; every I/O only moves the alias's window onto the
//! io_u's buffer, submits it, and gets it back with the completion. Queue
//! writes the SQ entry; commit rings the doorbell once per batch; getevents
//! polls completions without sleeping. io_u pointers are fio's: they are
//! only stored here, never dereferenced.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nvme_engine::dma::{DmaBuf, DmaPool};
use nvme_engine::{DeviceGone, IoError, IoQueuePair, LbaRange, QueuePairOptions, SubmitErrorKind};
use nvme_trid::AnyDevice;

use crate::error::{EngineError, chain};
use crate::job::FileCtx;
use crate::registry::Shared;

/// fio's I/O directions as the C side passes them.
pub mod ddir {
    /// Read.
    pub const READ: i32 = 0;
    /// Write.
    pub const WRITE: i32 = 1;
    /// Trim (Dataset Management deallocate).
    pub const TRIM: i32 = 2;
    /// fsync / fdatasync (Flush).
    pub const SYNC: i32 = 3;
}

/// What `queue` tells fio.
#[derive(Debug, PartialEq, Eq)]
pub enum Queued {
    /// In the SQ; it completes through getevents.
    Queued,
    /// The queue is full: fio commits, reaps and queues it again.
    Busy,
    /// Refused: fio completes it at once with this errno.
    Failed(i32),
}

/// Empty polls between two timeout scans (a clock read each).
const POLLS_PER_TIMEOUT_SCAN: u32 = 256;

struct Slot {
    /// This io_u's alias of the buffer block, while it is not in flight.
    buf: Option<DmaBuf>,
    /// The io_u (fio's pointer), while in flight.
    io_u: usize,
    /// Why its last I/O failed, for fio's errdetails.
    error: Option<String>,
}

/// One fio thread's queue pair and buffers.
pub struct Worker {
    job: String,
    shared: Arc<Shared>,
    qp: Option<IoQueuePair<AnyDevice>>,
    pool: Option<DmaPool>,
    /// The block fio's buffers live in.
    block: Option<DmaBuf>,
    base: usize,
    capacity: usize,
    slots: Vec<Slot>,
    /// Completions of the current getevents: (io_u, errno).
    done: Vec<(usize, i32)>,
    idle_polls: u32,
    warned: bool,
}

impl Worker {
    /// A queue pair for `depth` commands and one DMA block of at least
    /// `bytes` for fio's buffers.
    pub fn new(
        job: &str,
        shared: &Arc<Shared>,
        depth: usize,
        bytes: usize,
    ) -> Result<Self, EngineError> {
        let ctrl = &shared.ctrl;
        let entries = (depth + 1).clamp(2, nvme_engine::MAX_IO_QUEUE_ENTRIES as usize);
        let qp = ctrl
            .create_io_qpair(QueuePairOptions::default().with_entries(entries as u16))
            .map_err(|e| EngineError::QueuePair {
                job: job.into(),
                ctrl: shared.description.clone(),
                reason: chain(&e),
            })?;
        // A block is a power of two: ask for the pool that holds exactly one.
        let block_len = bytes.next_power_of_two().max(4096);
        let memory = |e: &dyn std::error::Error| EngineError::Memory {
            job: job.into(),
            bytes: block_len,
            reason: chain(e),
        };
        let mut pool = ctrl.create_pool(block_len).map_err(|e| memory(&e))?;
        if pool.max_block() < block_len {
            return Err(EngineError::BuffersTooLarge {
                job: job.into(),
                bytes,
                max: pool.max_block(),
            });
        }
        let block = pool.alloc(block_len).map_err(|e| memory(&e))?;
        Ok(Worker {
            job: job.into(),
            shared: Arc::clone(shared),
            base: block.as_ptr() as usize,
            capacity: block.capacity(),
            block: Some(block),
            pool: Some(pool),
            qp: Some(qp),
            slots: (0..depth)
                .map(|_| Slot {
                    buf: None,
                    io_u: 0,
                    error: None,
                })
                .collect(),
            done: Vec::with_capacity(depth),
            idle_polls: 0,
            warned: false,
        })
    }

    /// fio's iomem_alloc: the start of the block, which must hold `len`.
    pub fn buffer(&self, len: usize) -> Result<*mut u8, EngineError> {
        match &self.block {
            Some(b) if len <= b.capacity() => Ok(b.as_ptr()),
            _ => Err(EngineError::BuffersTooLarge {
                job: self.job.clone(),
                bytes: len,
                max: self.capacity,
            }),
        }
    }

    /// Commands in flight.
    pub fn outstanding(&self) -> usize {
        self.qp.as_ref().map_or(0, |q| q.outstanding())
    }

    fn refuse(&mut self, index: usize, errno: i32, why: String) -> Queued {
        if !self.warned {
            self.warned = true;
            crate::hooks::log(&format!("nvme-engine: job '{}': {why}", self.job));
        }
        if let Some(s) = self.slots.get_mut(index) {
            s.error = Some(why);
        }
        Queued::Failed(errno)
    }

    /// fio's queue hook for io_u number `index` (fio's pointer `io_u`).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn queue(
        &mut self,
        file: &FileCtx,
        io_u: usize,
        index: usize,
        dir: i32,
        offset: u64,
        len: u64,
        buf: usize,
    ) -> Queued {
        let Some(qp) = self.qp.as_mut() else {
            return self.refuse(index, libc::EIO, "the queue pair is already deleted".into());
        };
        if index >= self.slots.len() {
            return self.refuse(
                index,
                libc::EINVAL,
                format!("io_u {index} is beyond iodepth {}", self.slots.len()),
            );
        }
        let ns = &file.ns;
        let mask = (1u64 << file.lba_shift) - 1;
        let lba = offset >> file.lba_shift;
        let result = match dir {
            ddir::READ | ddir::WRITE => {
                if (offset | len) & mask != 0 {
                    return self.refuse(
                        index,
                        libc::EINVAL,
                        format!(
                            "I/O at offset {offset}, {len} bytes is not aligned to the {}-byte LBA size \
                             of namespace {}; keep offset, size and bs multiples of it",
                            ns.block_size(), ns.id()
                        ),
                    );
                }
                let start = buf.wrapping_sub(self.base);
                if buf < self.base || start.saturating_add(len as usize) > self.capacity {
                    return self.refuse(
                        index,
                        libc::EFAULT,
                        "fio handed a buffer outside the engine's DMA memory (mem= or iomem= \
                         conflicts with this engine; remove it)"
                            .into(),
                    );
                }
                let slot = &mut self.slots[index];
                let mut view = match slot.buf.take() {
                    Some(v) => v,
                    None => match &self.block {
                        Some(b) => crate::hooks::io_u_alias(b),
                        None => {
                            return self.refuse(
                                index,
                                libc::EIO,
                                "I/O after the buffers were freed".into(),
                            );
                        }
                    },
                };
                // In bounds: checked against the block's capacity above.
                view.set_window(start, len as usize);
                if dir == ddir::READ {
                    qp.read(ns, lba, view, index as u64)
                } else {
                    qp.write(ns, lba, view, false, index as u64)
                }
            }
            ddir::TRIM => {
                let blocks = len >> file.lba_shift;
                match u32::try_from(blocks) {
                    Ok(blocks) if len & mask == 0 && offset & mask == 0 => {
                        qp.deallocate(ns, &[LbaRange { lba, blocks }], index as u64)
                    }
                    _ => {
                        return self.refuse(
                            index,
                            libc::EINVAL,
                            format!(
                                "trim of {len} bytes at {offset} is not whole blocks of one range"
                            ),
                        );
                    }
                }
            }
            ddir::SYNC => qp.flush(ns, index as u64),
            _ => {
                return self.refuse(
                    index,
                    libc::EINVAL,
                    "this I/O direction has no NVMe command here".into(),
                );
            }
        };
        match result {
            Ok(()) => {
                self.slots[index].io_u = io_u;
                Queued::Queued
            }
            Err(e) => {
                if e.buf.is_some() {
                    self.slots[index].buf = e.buf;
                }
                match e.kind {
                    SubmitErrorKind::QueueFull { .. } => Queued::Busy,
                    kind => {
                        let errno = match kind {
                            SubmitErrorKind::Gone(DeviceGone::Removed) => libc::ENODEV,
                            SubmitErrorKind::Gone(DeviceGone::Failed) => libc::EIO,
                            _ => libc::EINVAL,
                        };
                        self.refuse(index, errno, chain(&kind))
                    }
                }
            }
        }
    }

    /// fio's commit hook: one doorbell write for everything queued.
    #[inline]
    pub fn commit(&mut self) {
        if let Some(qp) = self.qp.as_mut() {
            qp.ring_doorbell();
        }
    }

    /// fio's getevents hook: poll until at least `min` I/Os completed
    /// (at most `max`), or `timeout` passed. Never sleeps.
    pub fn getevents(&mut self, min: usize, max: usize, timeout: Option<Duration>) -> usize {
        self.done.clear();
        let Some(qp) = self.qp.as_mut() else {
            return 0;
        };
        let max = max.max(min).max(1);
        let start = timeout.map(|t| (Instant::now(), t));
        let (slots, done) = (&mut self.slots, &mut self.done);
        loop {
            let n = qp.process_completions(max - done.len(), |c| {
                let Some(slot) = slots.get_mut(c.token as usize) else {
                    return;
                };
                if c.buf.is_some() {
                    slot.buf = c.buf;
                }
                let errno = match &c.result {
                    Ok(_) => 0,
                    Err(e) => {
                        slot.error = Some(chain(e));
                        match e {
                            IoError::Gone(DeviceGone::Removed) => libc::ENODEV,
                            IoError::TimedOut(_) => libc::ETIMEDOUT,
                            _ => libc::EIO,
                        }
                    }
                };
                done.push((std::mem::take(&mut slot.io_u), errno));
            });
            if done.len() >= min || qp.outstanding() == 0 {
                break;
            }
            if n == 0 {
                self.idle_polls += 1;
                if self.idle_polls >= POLLS_PER_TIMEOUT_SCAN {
                    self.idle_polls = 0;
                    let now = Instant::now();
                    qp.check_timeouts(now);
                    if start.is_some_and(|(s, t)| now.duration_since(s) >= t) {
                        break;
                    }
                }
                std::hint::spin_loop();
            }
        }
        self.done.len()
    }

    /// fio's event hook: the `i`th io_u of the last getevents and its errno.
    #[inline]
    pub fn event(&self, i: usize) -> Option<(usize, i32)> {
        self.done.get(i).copied()
    }

    /// Why io_u `index` failed last (fio's errdetails).
    pub fn error_of(&self, index: usize) -> Option<&str> {
        self.slots.get(index)?.error.as_deref()
    }

    /// fio's iomem_free (before cleanup): every I/O still in flight
    /// completes first (fio normally reaped them all; after an error it may
    /// not have), then the block goes back to the pool. When the device
    /// does not give its buffers back, the memory stays mapped for good.
    pub fn release_buffers(&mut self) {
        let drained = self.delete_queue_pair();
        for s in &mut self.slots {
            s.buf = None;
        }
        if !drained {
            // The device may still write into the block: keep it mapped.
            std::mem::forget(self.block.take());
            std::mem::forget(self.pool.take());
            return;
        }
        if let (Some(pool), Some(block)) = (self.pool.as_mut(), self.block.take()) {
            // Every alias is gone (the slots' above, the in-flight ones
            // handed back by the deletion): the block can be reused.
            let _ = pool.free(block);
        }
    }

    /// Complete whatever is in flight, then delete the queue pair. False
    /// when the controller refused the deletion.
    fn delete_queue_pair(&mut self) -> bool {
        let Some(qp) = self.qp.take() else {
            return true;
        };
        let in_flight = qp.outstanding();
        let slots = &mut self.slots;
        let result = qp.delete_with(|c| {
            if let Some(slot) = slots.get_mut(c.token as usize) {
                slot.io_u = 0;
                if c.buf.is_some() {
                    slot.buf = c.buf;
                }
            }
        });
        match result {
            Ok(()) => true,
            Err(e) => {
                crate::hooks::log(&format!(
                    "nvme-engine: job '{}': deleting the queue pair on {} failed with {in_flight} I/O \
                     in flight; their buffers stay mapped: {}",
                    self.job,
                    self.shared.description,
                    chain(&e)
                ));
                false
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.release_buffers();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filename::parse;
    use crate::registry;

    const BS: u64 = 4096;

    /// A worker on its own inline emulated controller (commands execute in
    /// the doorbell write), and fio's buffer start.
    fn setup(depth: usize, size: &str) -> (FileCtx, Worker, usize) {
        let spec = parse(&format!("trtype=emu size={size} mode=inline"))
            .unwrap()
            .controller;
        let shared = registry::get(&spec).unwrap();
        let ns = shared.ctrl.namespace(1).unwrap().clone();
        let file = FileCtx {
            lba_shift: ns.block_size().trailing_zeros(),
            ns,
        };
        let w = Worker::new("t", &shared, depth, depth * BS as usize).unwrap();
        let base = w.buffer(depth * BS as usize).unwrap() as usize;
        (file, w, base)
    }

    /// Set block `slot` of the worker's buffer to `byte` (no I/O uses it now).
    fn fill(w: &Worker, slot: usize, byte: u8) {
        let v = w.block.as_ref().unwrap().view();
        assert!(v.fill(slot * BS as usize, BS as usize, byte));
    }

    /// The first byte of block `slot` of the worker's buffer.
    fn byte_at(w: &Worker, slot: usize) -> u8 {
        let v = w.block.as_ref().unwrap().view();
        v.read_obj::<u8>(slot * BS as usize).unwrap()
    }

    /// Queue each `(io_u, slot, offset)` of `ios` in direction `dir`: one
    /// block through slot `slot`'s buffer (the slot-th block after `base`).
    /// Every one must be accepted.
    fn queue_all(
        w: &mut Worker,
        file: &FileCtx,
        dir: i32,
        base: usize,
        ios: impl IntoIterator<Item = (usize, usize, u64)>,
    ) {
        for (io_u, slot, offset) in ios {
            let q = w.queue(file, io_u, slot, dir, offset, BS, base + slot * BS as usize);
            assert_eq!(q, Queued::Queued, "io_u {io_u}");
        }
    }

    #[test]
    fn io_through_each_io_us_buffer_lands_at_its_offset_and_reads_back() {
        let (file, mut w, base) = setup(4, "1M");
        for i in 0..4 {
            fill(&w, i, 0xA0 + i as u8);
        }
        // io_u 1000 + i writes block 8i from buffer slot i.
        let writes = (0..4).map(|i| (1000 + i, i, i as u64 * 8 * BS));
        queue_all(&mut w, &file, ddir::WRITE, base, writes);
        w.commit();
        assert_eq!(w.getevents(4, 4, None), 4);
        let mut seen: Vec<_> = (0..4).map(|i| w.event(i).unwrap()).collect();
        seen.sort();
        assert_eq!(seen, vec![(1000, 0), (1001, 0), (1002, 0), (1003, 0)]);
        for i in 0..4 {
            fill(&w, i, 0);
        }
        // Read block 8i's data into io_u (3 - i)'s buffer.
        let reads = (0..4).map(|i| (2000 + 3 - i, 3 - i, i as u64 * 8 * BS));
        queue_all(&mut w, &file, ddir::READ, base, reads);
        w.commit();
        assert_eq!(w.getevents(4, 4, None), 4);
        for i in 0..4 {
            assert_eq!(byte_at(&w, 3 - i), 0xA0 + i as u8);
        }
    }

    #[test]
    fn a_full_queue_says_busy_and_the_io_goes_through_after_reaping() {
        let (file, mut w, base) = setup(3, "1M");
        queue_all(
            &mut w,
            &file,
            ddir::READ,
            base,
            (0..3).map(|i| (1 + i, i, 0)),
        );
        // The queue pair holds iodepth commands; one more (fio requeues an
        // io_u after a Busy) must wait.
        assert_eq!(w.queue(&file, 9, 0, ddir::READ, 0, BS, base), Queued::Busy);
        assert_eq!(w.outstanding(), 3);
        w.commit();
        assert_eq!(w.getevents(3, 3, None), 3);
        assert_eq!(
            w.queue(&file, 9, 0, ddir::READ, 0, BS, base),
            Queued::Queued
        );
        w.commit();
        assert_eq!(w.getevents(1, 3, None), 1);
        assert_eq!(w.event(0), Some((9, 0)));
        assert_eq!(w.outstanding(), 0);
    }

    #[test]
    fn unaligned_io_and_foreign_buffers_fail_with_errno_and_details() {
        let (file, mut w, base) = setup(2, "1M");
        assert_eq!(
            w.queue(&file, 1, 0, ddir::READ, 100, BS, base),
            Queued::Failed(libc::EINVAL)
        );
        assert!(
            w.error_of(0).unwrap().contains("not aligned"),
            "{:?}",
            w.error_of(0)
        );
        let outside = vec![0u8; BS as usize];
        assert_eq!(
            w.queue(&file, 1, 1, ddir::READ, 0, BS, outside.as_ptr() as usize),
            Queued::Failed(libc::EFAULT)
        );
        assert_eq!(w.outstanding(), 0);
    }

    #[test]
    fn io_in_flight_at_release_completes_before_the_queue_pair_goes() {
        let (file, mut w, base) = setup(4, "1M");
        queue_all(
            &mut w,
            &file,
            ddir::WRITE,
            base,
            (0..4).map(|i| (1 + i, i, 0)),
        );
        // Never committed nor reaped: the doorbell was not rung.
        assert_eq!(w.outstanding(), 4);
        w.release_buffers();
        assert_eq!(w.outstanding(), 0);
        assert!(w.qp.is_none(), "the queue pair was deleted");
        assert!(
            w.block.is_none() && w.pool.is_some(),
            "the block went back to the pool"
        );
        assert_eq!(w.pool.as_ref().unwrap().used(), 0);
        assert_eq!(
            w.queue(&file, 1, 0, ddir::READ, 0, BS, base),
            Queued::Failed(libc::EIO)
        );
    }
}
