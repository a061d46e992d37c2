//! Event counters of one emulated controller (commands fetched per
//! opcode, completions posted, doorbell writes, DMA faults) and the
//! [`EmuStats`] snapshot a handle reads. Device-side counters are written
//! only under the device lock; the doorbell counters by host threads.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};

/// A value on its own cache lines (adjacent-line prefetch included).
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Event counters of one controller. Device-side counters and the doorbell
/// counters that host threads bump live on separate cache lines.
pub(crate) struct Counters {
    admin: Box<[AtomicU64]>,
    io: Box<[AtomicU64]>,
    dma_faults: AtomicU64,
    completions: AtomicU64,
    doorbell_writes: Padded<AtomicU64>,
    invalid_doorbell_writes: AtomicU64,
}

// Relaxed everywhere: counters are statistics, read without ordering needs.
impl Counters {
    pub(crate) fn new() -> Self {
        let zeros = || (0..256).map(|_| AtomicU64::new(0)).collect();
        Counters {
            admin: zeros(),
            io: zeros(),
            dma_faults: AtomicU64::new(0),
            completions: AtomicU64::new(0),
            doorbell_writes: Padded(AtomicU64::new(0)),
            invalid_doorbell_writes: AtomicU64::new(0),
        }
    }
    /// Count a fetched command. Called only with the device lock held (one
    /// writer), so a plain load and store replace a locked read-modify-write.
    #[inline]
    pub(crate) fn command(&self, admin: bool, opcode: u8) {
        let table = if admin { &self.admin } else { &self.io };
        bump(&table[opcode as usize], 1);
    }
    #[inline]
    pub(crate) fn dma_fault(&self) {
        self.dma_faults.fetch_add(1, Ordering::Relaxed);
    }
    #[inline]
    pub(crate) fn doorbell(&self) {
        self.doorbell_writes.fetch_add(1, Ordering::Relaxed);
    }
    #[inline]
    pub(crate) fn invalid_doorbell(&self) {
        self.invalid_doorbell_writes.fetch_add(1, Ordering::Relaxed);
    }
    /// Count posted completions; device lock held (see [`Counters::command`]).
    #[inline]
    pub(crate) fn completions(&self, n: u64) {
        bump(&self.completions, n);
    }
}

/// Add `n` to a counter that only the device lock holder writes.
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// A snapshot of a controller's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EmuStats {
    /// DMA accesses outside registered memory (each failed a command, a
    /// queue creation or a completion).
    pub dma_faults: u64,
    /// Doorbell writes.
    pub doorbell_writes: u64,
    /// Doorbell writes the controller ignored: nonexistent queue, value out
    /// of range, or a CQ head freeing entries never posted (the spec reports
    /// these as an asynchronous event; the emulator counts them).
    pub invalid_doorbell_writes: u64,
    /// Completion queue entries written.
    pub completions_posted: u64,
    /// Admin commands fetched.
    pub admin_commands: u64,
    /// I/O commands fetched.
    pub io_commands: u64,
}

impl Counters {
    /// A snapshot of every counter.
    pub(crate) fn snapshot(&self) -> EmuStats {
        let sum = |t: &[AtomicU64]| t.iter().map(|x| x.load(Ordering::Relaxed)).sum();
        EmuStats {
            dma_faults: self.dma_faults(),
            doorbell_writes: self.doorbell_writes.load(Ordering::Relaxed),
            invalid_doorbell_writes: self.invalid_doorbell_writes.load(Ordering::Relaxed),
            completions_posted: self.completions.load(Ordering::Relaxed),
            admin_commands: sum(&self.admin),
            io_commands: sum(&self.io),
        }
    }
    /// Commands fetched with `opcode`, from the admin or the I/O queues.
    pub(crate) fn commands(&self, admin: bool, opcode: u8) -> u64 {
        let table = if admin { &self.admin } else { &self.io };
        table[opcode as usize].load(Ordering::Relaxed)
    }
    /// DMA accesses outside registered memory so far.
    pub(crate) fn dma_faults(&self) -> u64 {
        self.dma_faults.load(Ordering::Relaxed)
    }
}
