//! A single-owner DMA pool: power-of-two blocks from 4 KiB up to one
//! IOVA-contiguous chunk, carved from one [`DmaRegion`].
//!
//! Allocation and release are O(1) in the common case (pop or push on a
//! per-size free list whose capacity is reserved up front) and never take a
//! lock or make a system call. A block is aligned to its own size, so it
//! never straddles a hugepage and its IOVA range is contiguous.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::Arc;

use super::DmaError;
use super::region::DmaRegion;
use super::view::{DmaView, DmaWindow};

const MIN_SHIFT: u32 = 12;

/// A pool of DMA buffers owned by one thread (it is `Send`, not `Sync`;
/// every operation takes `&mut self`).
pub struct DmaPool {
    /// Makes the pool `!Sync`, as documented: it is one thread's, and
    /// sharing `&DmaPool` between threads has no use.
    _one_thread: PhantomData<Cell<()>>,
    region: Arc<DmaRegion>,
    max_shift: u32,
    /// `free[k]` holds offsets of free blocks of `4096 << k` bytes.
    free: Vec<Vec<usize>>,
    bump: usize,
    used: usize,
    /// Bytes of blocks given back quarantined and kept out of reuse.
    quarantined: usize,
}

impl DmaPool {
    /// A pool over all of `region`.
    pub fn new(region: DmaRegion) -> Self {
        let len = region.len();
        let largest_pow2 = if len == 0 {
            MIN_SHIFT
        } else {
            usize::BITS - 1 - len.leading_zeros()
        };
        let max_shift = region.chunk_shift().min(largest_pow2).max(MIN_SHIFT);
        let classes = (max_shift - MIN_SHIFT + 1) as usize;
        let free = (0..classes)
            .map(|k| Vec::with_capacity(len >> (MIN_SHIFT as usize + k)))
            .collect();
        DmaPool {
            _one_thread: PhantomData,
            region: Arc::new(region),
            max_shift,
            free,
            bump: 0,
            used: 0,
            quarantined: 0,
        }
    }

    /// Pool capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.region.len()
    }
    /// Bytes currently handed out (rounded up to block sizes).
    pub fn used(&self) -> usize {
        self.used
    }
    /// Bytes of blocks that came back quarantined (a device might still
    /// write them) and are never handed out again.
    pub fn quarantined(&self) -> usize {
        self.quarantined
    }
    /// The largest block this pool can hand out.
    pub fn max_block(&self) -> usize {
        1 << self.max_shift
    }
    /// The region behind the pool.
    pub fn region(&self) -> &DmaRegion {
        &self.region
    }

    /// A buffer of at least `len` bytes, 4 KiB aligned, IOVA-contiguous.
    /// Its window is `0..len`. The contents are whatever the last user left.
    pub fn alloc(&mut self, len: usize) -> Result<DmaBuf, DmaError> {
        if len == 0 {
            return Err(DmaError::ZeroLength);
        }
        if len > self.max_block() {
            return Err(DmaError::TooLarge {
                len,
                max: self.max_block(),
            });
        }
        let shift = len.next_power_of_two().trailing_zeros().max(MIN_SHIFT);
        let offset = self.take_block(shift).ok_or(DmaError::PoolExhausted {
            len,
            class: 1 << shift,
            used: self.used,
            capacity: self.capacity(),
        })?;
        self.used += 1 << shift;
        let iova = self.region.iova(offset).ok_or(DmaError::PoolExhausted {
            len,
            class: 1 << shift,
            used: self.used,
            capacity: self.capacity(),
        })?;
        // take_block only hands out blocks inside the region, aligned to
        // their size, so the window always exists.
        let block = DmaWindow::new(Arc::clone(&self.region), offset, 1 << shift).ok_or(
            DmaError::PoolExhausted {
                len,
                class: 1 << shift,
                used: self.used,
                capacity: self.capacity(),
            },
        )?;
        Ok(DmaBuf {
            block,
            iova,
            start_state: BufState::Owned.with_start(0),
            len,
            _one_owner: PhantomData,
        })
    }

    /// Return a buffer to the pool. A quarantined buffer (see
    /// [`DmaBuf::is_quarantined`]) is accepted but its block is never
    /// handed out again and the region is never unmapped.
    pub fn free(&mut self, buf: DmaBuf) -> Result<(), DmaError> {
        if !Arc::ptr_eq(buf.block.region(), &self.region) || buf.state().is_alias() {
            return Err(DmaError::ForeignBuffer);
        }
        let size = buf.capacity();
        self.used -= size;
        if buf.state().is_quarantined() {
            self.quarantined += size;
            self.region.quarantine();
            return Ok(());
        }
        self.put_block(buf.block.offset(), size.trailing_zeros());
        Ok(())
    }

    fn class(shift: u32) -> usize {
        (shift - MIN_SHIFT) as usize
    }

    fn put_block(&mut self, offset: usize, shift: u32) {
        // Capacity was reserved for every block of this size the region
        // holds, so this push never reallocates.
        self.free[Self::class(shift)].push(offset);
    }

    fn take_block(&mut self, shift: u32) -> Option<usize> {
        if let Some(off) = self.free[Self::class(shift)].pop() {
            return Some(off);
        }
        let size = 1usize << shift;
        let aligned = self.bump.next_multiple_of(size);
        if aligned.checked_add(size)? <= self.region.len() {
            self.release_gap(self.bump, aligned);
            self.bump = aligned + size;
            return Some(aligned);
        }
        // Split the smallest larger free block.
        for bigger in shift + 1..=self.max_shift {
            if let Some(off) = self.free[Self::class(bigger)].pop() {
                for s in (shift..bigger).rev() {
                    self.put_block(off + (1 << s), s);
                }
                return Some(off);
            }
        }
        None
    }

    /// Hand the alignment gap `[from, to)` back as naturally aligned blocks.
    fn release_gap(&mut self, mut from: usize, to: usize) {
        while from < to {
            let align = if from == 0 {
                usize::BITS - 1
            } else {
                from.trailing_zeros()
            };
            let mut shift = align.min(self.max_shift);
            while from + (1 << shift) > to {
                shift -= 1;
            }
            self.put_block(from, shift);
            from += 1 << shift;
        }
    }
}

impl DmaPool {
    /// A hold on the pool's memory: it stays mapped, at the same address,
    /// for as long as any hold, the pool or one of its buffers lives. For a
    /// transport that registers the memory with the kernel (io_uring fixed
    /// buffers), which must not outlive the mapping it names.
    pub fn hold(&self) -> RegionHold {
        RegionHold {
            region: Arc::clone(&self.region),
        }
    }
}

/// Keeps a pool's memory mapped ([`DmaPool::hold`]) and says when nothing
/// else can reach it any more.
#[derive(Clone)]
pub struct RegionHold {
    region: Arc<DmaRegion>,
}

impl RegionHold {
    /// The memory's first byte (a process virtual address).
    pub fn addr(&self) -> u64 {
        self.region.as_ptr() as u64
    }
    /// Bytes of memory.
    pub fn len(&self) -> usize {
        self.region.len()
    }
    /// Whether the memory is empty (never, for a pool's).
    pub fn is_empty(&self) -> bool {
        self.region.len() == 0
    }
    /// Whether this is the only hold left: the pool is gone and none of its
    /// buffers exists any more (so none is in any I/O), and no other hold
    /// remains. Once true it stays true, since nothing else can make a new
    /// reference to the memory.
    pub fn is_last(&self) -> bool {
        Arc::strong_count(&self.region) == 1
    }
}

impl std::fmt::Debug for RegionHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionHold")
            .field("addr", &format_args!("{:#x}", self.addr()))
            .field("len", &self.len())
            .finish()
    }
}

impl std::fmt::Debug for DmaPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaPool")
            .field("capacity", &self.capacity())
            .field("used", &self.used)
            .field("max_block", &self.max_block())
            .finish()
    }
}

/// A DMA buffer from a [`DmaPool`]: an IOVA-contiguous block and a window
/// inside it that I/O commands transfer.
///
/// It keeps its region alive. Reads and writes go through raw-pointer copies;
/// no Rust reference into the buffer is ever created, since the device may
/// write it while an I/O is in flight.
pub struct DmaBuf {
    /// The whole block (`capacity` bytes); keeps the region alive.
    block: DmaWindow,
    iova: u64,
    /// The window's start (low bits) and the [`BufState`] (top two bits):
    /// with the state in a word of its own the buffer has seven bytes of
    /// tail padding, which every move copies too, and a buffer moves four
    /// times per I/O (free list, tracker slot, completion, free list).
    /// `start <= capacity`, far below 2^62.
    start_state: usize,
    len: usize,
    /// `Send`, not `Sync`: a buffer belongs to one I/O at a time.
    _one_owner: PhantomData<Cell<()>>,
}

/// Who may give a buffer back and whether its block may be reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
enum BufState {
    /// From the pool, reusable.
    Owned = 0,
    /// From the pool; a device may still write the block: never reused.
    OwnedQuarantined = 1,
    /// An alias: names no block the pool could take back.
    Alias = 2,
    /// A quarantined alias.
    AliasQuarantined = 3,
}

/// Where [`BufState`] sits in [`DmaBuf::start_state`].
const STATE_SHIFT: u32 = usize::BITS - 2;
/// The window start's bits of [`DmaBuf::start_state`].
const START_MASK: usize = (1 << STATE_SHIFT) - 1;

impl BufState {
    /// This state packed with a window start (`start <= START_MASK`).
    fn with_start(self, start: usize) -> usize {
        debug_assert!(start <= START_MASK);
        (self as usize) << STATE_SHIFT | (start & START_MASK)
    }
    /// The state packed in `start_state`.
    fn of(start_state: usize) -> BufState {
        match start_state >> STATE_SHIFT {
            0 => BufState::Owned,
            1 => BufState::OwnedQuarantined,
            2 => BufState::Alias,
            _ => BufState::AliasQuarantined,
        }
    }
    fn is_alias(self) -> bool {
        matches!(self, BufState::Alias | BufState::AliasQuarantined)
    }
    fn is_quarantined(self) -> bool {
        matches!(
            self,
            BufState::OwnedQuarantined | BufState::AliasQuarantined
        )
    }
    fn quarantined(self) -> BufState {
        if self.is_alias() {
            BufState::AliasQuarantined
        } else {
            BufState::OwnedQuarantined
        }
    }
    fn alias(self) -> BufState {
        if self.is_quarantined() {
            BufState::AliasQuarantined
        } else {
            BufState::Alias
        }
    }
}

/// Six words and no padding, and `Option<DmaBuf>` no larger (the region's
/// `Arc` is the niche): what a move per I/O copies.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<DmaBuf>() == 6 * 8);
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Option<DmaBuf>>() == 6 * 8);

/// `DmaPool` is `Send` and not `Sync`; `DmaBuf` is `Send` (a buffer moves
/// with its I/O) and not `Sync`.
const _: () = {
    const fn send<T: Send>() {}
    send::<DmaPool>();
    send::<DmaBuf>();
};
/// ... and neither is `Sync`: with `T: Sync` the call below would have two
/// candidate impls and not compile.
const _: fn() = || {
    trait AmbiguousIfSync<A> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfSync<()> for T {}
    struct IsSync;
    impl<T: ?Sized + Sync> AmbiguousIfSync<IsSync> for T {}
    <DmaPool as AmbiguousIfSync<_>>::check();
    <DmaBuf as AmbiguousIfSync<_>>::check();
};

impl DmaBuf {
    /// Mark the buffer as one a device may still write (it could not be
    /// stopped): its pool never hands the block out again and its region is
    /// never unmapped. Contents read from it are not trustworthy.
    pub fn quarantine(&mut self) {
        self.start_state = self.state().quarantined().with_start(self.start());
        self.block.quarantine();
    }
    /// Whether the buffer was quarantined: a device may still write it.
    pub fn is_quarantined(&self) -> bool {
        self.state().is_quarantined()
    }
    /// Alias or not, quarantined or not.
    #[inline]
    fn state(&self) -> BufState {
        BufState::of(self.start_state)
    }
    /// The window's offset in the block.
    #[inline]
    fn start(&self) -> usize {
        self.start_state & START_MASK
    }
    /// Size of the whole block.
    pub fn capacity(&self) -> usize {
        self.block.len()
    }
    /// Length of the window.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Offset of the window in the block.
    pub fn window_start(&self) -> usize {
        self.start()
    }
    /// Set the window to `len` bytes at `start`. Returns false (and leaves
    /// the window) when it would not fit in the block.
    pub fn set_window(&mut self, start: usize, len: usize) -> bool {
        match start.checked_add(len) {
            Some(end) if end <= self.capacity() => {
                // `end <= capacity` keeps `start` within START_MASK.
                self.start_state = self.state().with_start(start);
                self.len = len;
                true
            }
            _ => false,
        }
    }
    /// Address of the start of the window (for programs that lay out
    /// their own memory; access it through [`DmaBuf::view`] or the copy
    /// methods, never through a reference).
    pub fn as_ptr(&self) -> *mut u8 {
        self.block.view().as_ptr().wrapping_add(self.start())
    }
    /// The window's bytes, for bounds-checked volatile access.
    #[inline]
    pub fn view(&self) -> DmaView<'_> {
        // `set_window` keeps start + len <= capacity, the block's length,
        // so the clamp never cuts anything.
        self.block.view().clamped(self.start(), self.len)
    }
    /// IOVA of the start of the window.
    #[inline]
    pub fn iova(&self) -> u64 {
        self.iova + self.start() as u64
    }
    /// Another handle on this buffer's block, with the same window, for
    /// memory that someone else lays out: e.g. one block holding the I/O
    /// buffers of a program that hands the driver pointers into it (fio's
    /// ioengine). Each handle moves its own window and can be submitted on
    /// its own. An alias is never taken back by [`DmaPool::free`]
    /// (`ForeignBuffer`); dropping it is enough. Cost: one reference count.
    ///
    /// # Safety
    ///
    /// The handles share memory. While more than one lives, the caller
    /// makes sure that no two of them are accessed at overlapping bytes at
    /// the same time where one access writes (through their methods, or by
    /// the device through I/O submitted with them), and that this buffer is
    /// not returned to its pool (which would hand the block out again)
    /// until every alias is dropped.
    #[allow(unsafe_code)] // A contract for the caller; no unsafe operation.
    pub unsafe fn alias(&self) -> DmaBuf {
        DmaBuf {
            block: self.block.share(),
            iova: self.iova,
            start_state: self.state().alias().with_start(self.start()),
            len: self.len,
            _one_owner: PhantomData,
        }
    }
    /// An alias of this buffer's block with the window `start..start+len`
    /// (block offsets), for `split.rs` only, which keeps the windows it
    /// cuts disjoint and this buffer unused and unreturned until every one
    /// is back: the contract of [`DmaBuf::alias`], kept inside `dma/`.
    pub(super) fn piece(&self, start: usize, len: usize) -> Option<DmaBuf> {
        let end = start.checked_add(len)?;
        if end > self.capacity() {
            return None;
        }
        Some(DmaBuf {
            block: self.block.share(),
            iova: self.iova,
            start_state: self.state().alias().with_start(start),
            len,
            _one_owner: PhantomData,
        })
    }
    /// Copy `data` into the window at `offset`. Returns false when it does not fit.
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> bool {
        self.view().write(offset, data)
    }
    /// Copy from the window at `offset` into `out`. Returns false when out of range.
    pub fn read_at(&self, offset: usize, out: &mut [u8]) -> bool {
        self.view().read(offset, out)
    }
    /// Set every byte of the window to `byte`.
    pub fn fill(&mut self, byte: u8) {
        let v = self.view();
        v.fill(0, v.len(), byte);
    }
    /// A copy of the window.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len];
        self.read_at(0, &mut v);
        v
    }
}

impl std::fmt::Debug for DmaBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaBuf")
            .field("iova", &format_args!("{:#x}", self.iova()))
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dma::HostMemory;

    fn pool(len: usize) -> DmaPool {
        let mem = HostMemory::plain(len).unwrap();
        DmaPool::new(DmaRegion::unmapped_for_tests(mem, 0x4000_0000))
    }

    #[test]
    fn blocks_are_aligned_to_their_size_and_disjoint() {
        let mut p = pool(1 << 20);
        let a = p.alloc(4096).unwrap();
        let b = p.alloc(64 << 10).unwrap();
        let c = p.alloc(5000).unwrap();
        assert_eq!(b.iova() % (64 << 10), 0);
        assert_eq!(c.capacity(), 8192);
        assert_eq!(c.iova() % 8192, 0);
        let ranges = [
            (a.iova(), a.capacity()),
            (b.iova(), b.capacity()),
            (c.iova(), c.capacity()),
        ];
        for (i, x) in ranges.iter().enumerate() {
            for y in &ranges[i + 1..] {
                assert!(
                    x.0 + x.1 as u64 <= y.0 || y.0 + y.1 as u64 <= x.0,
                    "{ranges:x?}"
                );
            }
        }
        // The alignment gap before `b` was handed back and serves small requests.
        assert_eq!(p.used(), 4096 + (64 << 10) + 8192);
    }

    #[test]
    fn freed_blocks_are_reused_and_exhaustion_is_an_error() {
        let mut p = pool(64 << 10);
        let bufs: Vec<_> = (0..16).map(|_| p.alloc(4096).unwrap()).collect();
        assert!(matches!(p.alloc(1), Err(DmaError::PoolExhausted { .. })));
        let first = bufs[3].iova();
        for b in bufs {
            p.free(b).unwrap();
        }
        assert_eq!(p.used(), 0);
        let again = p.alloc(4096).unwrap();
        assert!(again.iova() >= 0x4000_0000 && again.iova() < 0x4000_0000 + (64 << 10));
        let _ = first;
    }

    #[test]
    fn larger_free_blocks_are_split_when_bump_space_runs_out() {
        let mut p = pool(32 << 10);
        let big = p.alloc(32 << 10).unwrap();
        p.free(big).unwrap();
        let small: Vec<_> = (0..8).map(|_| p.alloc(4096).unwrap()).collect();
        assert_eq!(small.len(), 8);
        assert_eq!(p.used(), 32 << 10);
    }

    #[test]
    fn invalid_requests_get_named_errors() {
        let mut p = pool(16 << 10);
        assert!(matches!(p.alloc(0), Err(DmaError::ZeroLength)));
        assert!(matches!(p.alloc(1 << 20), Err(DmaError::TooLarge { .. })));
        let mut other = pool(16 << 10);
        let b = other.alloc(4096).unwrap();
        assert!(matches!(p.free(b), Err(DmaError::ForeignBuffer)));
    }

    #[test]
    fn window_bounds_reads_and_writes() {
        let mut p = pool(16 << 10);
        let mut b = p.alloc(4096).unwrap();
        b.fill(0xAA);
        assert!(b.write_at(10, b"hello"));
        assert!(!b.write_at(4094, b"xyz"));
        assert!(b.set_window(8, 16));
        assert_eq!(b.iova(), b.iova() & !0xfff | 8);
        let mut out = [0u8; 7];
        assert!(b.read_at(0, &mut out));
        assert_eq!(&out, b"\xAA\xAAhello");
        assert!(!b.set_window(4000, 200));
        assert_eq!(b.len(), 16);
    }

    #[test]
    fn quarantined_block_is_never_handed_out_again_and_keeps_its_region() {
        let mut p = pool(16 << 10);
        let mut b = p.alloc(4096).unwrap();
        let iova = b.iova();
        b.quarantine();
        assert!(b.is_quarantined());
        p.free(b).unwrap();
        assert_eq!((p.used(), p.quarantined()), (0, 4096));
        assert!(p.region().is_quarantined());
        let mut rest = Vec::new();
        while let Ok(b) = p.alloc(4096) {
            assert_ne!(b.iova(), iova, "the quarantined block came back");
            rest.push(b);
        }
        assert_eq!(rest.len(), 3, "the other blocks are still usable");
    }
}
