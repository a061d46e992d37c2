//! The one way to touch DMA memory: a bounds-checked, volatile view.
//!
//! Memory a device can read or write is shared with an agent outside the
//! program, so no Rust reference (`&T`, `&mut T`, `&[u8]`) ever points at
//! it. [`DmaView`] is an address range reached only through raw-pointer
//! operations that check their bounds first:
//! - bounded copies in and out ([`DmaView::read`], [`DmaView::write`],
//!   [`DmaView::read_obj`], [`DmaView::write_obj`], [`DmaView::fill`]);
//! - volatile loads and stores of whole words ([`DmaView::read_u32`],
//!   [`DmaView::read_u64`], [`DmaView::write_u32`], [`DmaView::write_u64`]),
//!   which the compiler may neither drop, merge nor hoist out of a loop;
//! - atomic loads and stores of aligned dwords with a caller-chosen
//!   ordering ([`DmaView::load_u32`], [`DmaView::store_u32`]), for the words
//!   that publish something: a completion's phase tag, a shadow doorbell,
//!   an EventIdx.
//!
//! Concurrent access by the device (or, for the emulated controller, by the
//! thread playing the device) yields whatever bytes were there, never
//! undefined behaviour: the memory is treated as foreign, like a guest's
//! memory in a hypervisor, and ordering is established only by the atomic
//! accesses and fences the callers argue for.
//!
//! A view over memory the program owns ([`HostMemory`], [`DmaRegion`]) is
//! made safely and borrows it. A view over memory kept alive by another
//! protocol (an emulated IOMMU's registration, held by a guard) is made
//! with the `unsafe` [`DmaView::from_raw_parts`], whose caller argues the
//! lifetime. [`DmaWindow`] is the owning form the driver keeps in its queue
//! pairs and buffers: a range of a region it holds alive.
//!
//! [`DmaAddress`] is the start of DMA memory as its owner ([`HostMemory`])
//! keeps it: an address that may cross threads because it grants nothing
//! by itself.
//!
//! [`DataBuf`] is the other side of the same coin: host memory that no
//! device reaches while a transport that copies by address (NVMe/TCP)
//! holds it, so it may hand out plain slices, bounds-checked, and a socket
//! read lands in a command's buffer with no copy in between.
//!
//! This file is the only place in `dma/` with `unsafe` blocks or impls;
//! `region.rs` and `pool.rs` only declare contracts (`unsafe fn` with a
//! `# Safety` section) for their callers.

#![allow(unsafe_code)]

use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::memory::HostMemory;
use super::region::DmaRegion;
use crate::driver::transport::DataRef;

/// A bounds-checked range of DMA memory, valid for `'a`. Every accessor
/// checks its offset and length against the range and fails (false or
/// `None`) instead of touching anything outside it.
#[derive(Clone, Copy)]
pub struct DmaView<'a> {
    ptr: NonNull<u8>,
    len: usize,
    _mem: PhantomData<&'a HostMemory>,
}

impl<'a> DmaView<'a> {
    /// The whole of `memory`.
    pub fn new(memory: &'a HostMemory) -> Self {
        // Invariant of HostMemory: `len` bytes from its start are mapped
        // and writable for as long as it lives, and it hands out no
        // reference into them.
        DmaView {
            ptr: memory.non_null(),
            len: memory.len(),
            _mem: PhantomData,
        }
    }

    /// A view of `len` bytes at `ptr`, for memory whose lifetime another
    /// protocol guarantees (an emulated IOMMU hands out host memory it
    /// registered, and keeps it mapped while a guard lives).
    ///
    /// # Safety
    ///
    /// For all of `'a`, the `len` bytes from `ptr` are mapped, readable and
    /// writable, and are never accessed through a Rust reference (only by
    /// raw-pointer, volatile or atomic operations, or by a device).
    pub unsafe fn from_raw_parts(ptr: NonNull<u8>, len: usize) -> Self {
        DmaView {
            ptr,
            len,
            _mem: PhantomData,
        }
    }

    /// Length of the range in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of the first byte (for address arithmetic and for
    /// handing the range to code that speaks raw pointers; this view
    /// promises nothing about accesses made through it).
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The `len` bytes at `off`, or `None` when they do not fit.
    #[inline]
    pub fn subview(&self, off: usize, len: usize) -> Option<DmaView<'a>> {
        self.at(off, len)?;
        Some(DmaView {
            // `at` checked off + len <= self.len, so this stays inside (or
            // one past the end of) the range.
            ptr: self.ptr.map_addr(|a| a.saturating_add(off)),
            len,
            _mem: PhantomData,
        })
    }

    /// The part of `off..off + len` that lies inside the range (empty when
    /// none does).
    #[inline]
    pub fn clamped(&self, off: usize, len: usize) -> DmaView<'a> {
        let off = off.min(self.len);
        DmaView {
            ptr: self.ptr.map_addr(|a| a.saturating_add(off)),
            len: len.min(self.len - off),
            _mem: PhantomData,
        }
    }

    /// Pointer to byte `off` when `n` bytes from it lie inside the range.
    #[inline(always)]
    fn at(&self, off: usize, n: usize) -> Option<*mut u8> {
        if off > self.len || n > self.len - off {
            return None;
        }
        // SAFETY: off <= len, so the result is inside the range or one
        // past its end, within the same mapping.
        Some(unsafe { self.ptr.as_ptr().add(off) })
    }

    /// Pointer to byte `off` when `n` bytes from it fit and it is aligned
    /// to `n` (a power of two).
    #[inline(always)]
    fn aligned(&self, off: usize, n: usize) -> Option<*mut u8> {
        let p = self.at(off, n)?;
        (p as usize).is_multiple_of(n).then_some(p)
    }

    /// The `N` bytes at `off` as one fixed-size entry (a queue entry), or
    /// `None` when they do not fit or `off` is not 8-byte aligned. One
    /// check here; the entry's accessors take constant dword indices, so
    /// theirs fold away when inlined.
    #[inline(always)]
    pub fn entry<const N: usize>(&self, off: usize) -> Option<DmaEntry<'a, N>> {
        let p = self.at(off, N)?;
        if !(p as usize).is_multiple_of(8) {
            return None;
        }
        Some(DmaEntry {
            // `at` returned a pointer into the range, which is not null.
            ptr: NonNull::new(p)?,
            _mem: PhantomData,
        })
    }

    /// Copy `out.len()` bytes from `off` into `out`. False (and nothing
    /// copied) when the source does not fit.
    #[inline]
    pub fn read(&self, off: usize, out: &mut [u8]) -> bool {
        let Some(p) = self.at(off, out.len()) else {
            return false;
        };
        // SAFETY: the source lies inside the range (checked), which is
        // mapped for 'a; `out` is ordinary memory the caller holds
        // exclusively, so the two cannot overlap. A raw copy forms no
        // reference to DMA memory.
        unsafe { ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len()) };
        true
    }

    /// Copy `data` to `off`. False (and nothing written) when it does not
    /// fit.
    #[inline]
    pub fn write(&self, off: usize, data: &[u8]) -> bool {
        let Some(p) = self.at(off, data.len()) else {
            return false;
        };
        // SAFETY: the destination lies inside the range (checked); `data`
        // is ordinary memory, disjoint from DMA memory.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
        true
    }

    /// Set `len` bytes at `off` to `byte`. False when they do not fit.
    #[inline]
    pub fn fill(&self, off: usize, len: usize, byte: u8) -> bool {
        let Some(p) = self.at(off, len) else {
            return false;
        };
        // SAFETY: the range written lies inside the view (checked).
        unsafe { ptr::write_bytes(p, byte, len) };
        true
    }

    /// Zero the whole range.
    pub fn zero(&self) {
        self.fill(0, self.len, 0);
    }

    /// A copy of the `T` at `off` (any alignment), or `None` when it does
    /// not fit.
    #[inline]
    pub fn read_obj<T: FromBytes>(&self, off: usize) -> Option<T> {
        let p = self.at(off, size_of::<T>())?;
        // SAFETY: size_of::<T>() bytes inside the range (checked); T is
        // valid for any bit pattern (FromBytes), and read_unaligned copies
        // without forming a reference or requiring alignment.
        Some(unsafe { ptr::read_unaligned(p.cast::<T>()) })
    }

    /// Copy `value` to `off` (any alignment). False when it does not fit.
    #[inline(always)]
    pub fn write_obj<T: IntoBytes + Immutable>(&self, off: usize, value: &T) -> bool {
        let Some(p) = self.at(off, size_of::<T>()) else {
            return false;
        };
        // SAFETY: size_of::<T>() bytes inside the range (checked); `value`
        // is ordinary memory and its bytes are all initialized (IntoBytes).
        // A plain copy (not volatile) lets the compiler move a whole queue
        // entry with wide stores instead of staging it on the stack;
        // callers order it before the device may look with a fence.
        unsafe { ptr::copy_nonoverlapping(ptr::from_ref(value).cast::<u8>(), p, size_of::<T>()) };
        true
    }

    /// Volatile load of the little-endian u32 at `off` (4-byte aligned).
    #[inline(always)]
    pub fn read_u32(&self, off: usize) -> Option<u32> {
        let p = self.aligned(off, 4)?;
        // SAFETY: 4 aligned bytes inside the range (checked).
        Some(u32::from_le(unsafe { ptr::read_volatile(p.cast::<u32>()) }))
    }

    /// Volatile load of the little-endian u64 at `off` (8-byte aligned).
    #[inline]
    pub fn read_u64(&self, off: usize) -> Option<u64> {
        let p = self.aligned(off, 8)?;
        // SAFETY: 8 aligned bytes inside the range (checked).
        Some(u64::from_le(unsafe { ptr::read_volatile(p.cast::<u64>()) }))
    }

    /// Volatile store of `value` as a little-endian u32 at `off` (4-byte
    /// aligned). False when out of range or misaligned.
    #[inline]
    pub fn write_u32(&self, off: usize, value: u32) -> bool {
        let Some(p) = self.aligned(off, 4) else {
            return false;
        };
        // SAFETY: 4 aligned bytes inside the range (checked).
        unsafe { ptr::write_volatile(p.cast::<u32>(), value.to_le()) };
        true
    }

    /// Volatile store of `value` as a little-endian u64 at `off` (8-byte
    /// aligned). False when out of range or misaligned.
    #[inline]
    pub fn write_u64(&self, off: usize, value: u64) -> bool {
        let Some(p) = self.aligned(off, 8) else {
            return false;
        };
        // SAFETY: 8 aligned bytes inside the range (checked).
        unsafe { ptr::write_volatile(p.cast::<u64>(), value.to_le()) };
        true
    }

    /// Atomic load of the little-endian u32 at `off` (4-byte aligned) with
    /// `order`: for a dword the other side publishes atomically (a
    /// completion's DW3, a shadow doorbell, an EventIdx).
    #[inline(always)]
    pub fn load_u32(&self, off: usize, order: Ordering) -> Option<u32> {
        let p = self.aligned(off, 4)?;
        // SAFETY: 4 aligned bytes inside the range (checked), mapped for
        // 'a; the other side accesses this dword whole, so viewing it as an
        // atomic for the duration of this one load is sound.
        let v = unsafe { AtomicU32::from_ptr(p.cast::<u32>()) }.load(order);
        Some(u32::from_le(v))
    }

    /// Atomic store of `value` as a little-endian u32 at `off` (4-byte
    /// aligned) with `order`. False when out of range or misaligned.
    #[inline]
    pub fn store_u32(&self, off: usize, value: u32, order: Ordering) -> bool {
        let Some(p) = self.aligned(off, 4) else {
            return false;
        };
        // SAFETY: as in `load_u32`.
        unsafe { AtomicU32::from_ptr(p.cast::<u32>()) }.store(value.to_le(), order);
        true
    }
}

/// `N` bytes of DMA memory, at least 4-byte aligned, valid for `'a`: one
/// queue entry or doorbell slot. Accessors address dwords by index and
/// check it against `N`.
#[derive(Clone, Copy)]
pub struct DmaEntry<'a, const N: usize> {
    ptr: NonNull<u8>,
    _mem: PhantomData<&'a HostMemory>,
}

impl<const N: usize> DmaEntry<'_, N> {
    /// Pointer to dword `i` when it lies inside the entry.
    #[inline(always)]
    fn dword(&self, i: usize) -> Option<*mut u32> {
        if i >= N / 4 {
            return None;
        }
        // SAFETY: i * 4 + 4 <= N, inside the entry; the entry is 4-byte
        // aligned (checked where it is made), so the dword is aligned.
        Some(unsafe { self.ptr.as_ptr().add(i * 4) }.cast::<u32>())
    }

    /// Atomic load of little-endian dword `i` with `order` (a completion's
    /// DW3, loaded with Acquire before the rest).
    #[inline(always)]
    pub fn load_u32(&self, i: usize, order: Ordering) -> Option<u32> {
        let p = self.dword(i)?;
        // SAFETY: an aligned dword inside the entry (checked by `dword`),
        // mapped for 'a; the other side accesses it whole.
        let v = unsafe { AtomicU32::from_ptr(p) }.load(order);
        Some(u32::from_le(v))
    }

    /// Atomic store of `value` as little-endian dword `i` with `order` (a
    /// completion's DW3, published with Release after the rest).
    #[inline(always)]
    pub fn store_u32(&self, i: usize, value: u32, order: Ordering) -> bool {
        let Some(p) = self.dword(i) else {
            return false;
        };
        // SAFETY: as in `load_u32`.
        unsafe { AtomicU32::from_ptr(p) }.store(value.to_le(), order);
        true
    }

    /// Volatile load of little-endian dword `i`.
    #[inline(always)]
    pub fn read_u32(&self, i: usize) -> Option<u32> {
        let p = self.dword(i)?;
        // SAFETY: an aligned dword inside the entry (checked by `dword`).
        Some(u32::from_le(unsafe { ptr::read_volatile(p) }))
    }

    /// Volatile store of `value` as little-endian dword `i`.
    #[inline(always)]
    pub fn write_u32(&self, i: usize, value: u32) -> bool {
        let Some(p) = self.dword(i) else {
            return false;
        };
        // SAFETY: as in `read_u32`.
        unsafe { ptr::write_volatile(p, value.to_le()) };
        true
    }

    /// Copy `value` to the start of the entry; false when it is larger
    /// than the entry. A plain copy, as [`DmaView::write_obj`] argues.
    #[inline(always)]
    pub fn write_obj<T: IntoBytes + Immutable>(&self, value: &T) -> bool {
        if size_of::<T>() > N {
            return false;
        }
        // SAFETY: size_of::<T>() <= N bytes from the entry's start, inside
        // the range it was cut from; `value` is ordinary, initialized memory.
        unsafe {
            ptr::copy_nonoverlapping(
                ptr::from_ref(value).cast::<u8>(),
                self.ptr.as_ptr(),
                size_of::<T>(),
            )
        };
        true
    }

    /// A copy of the `T` at the start of the entry, or `None` when it is
    /// larger than the entry.
    #[inline(always)]
    pub fn read_obj<T: FromBytes>(&self) -> Option<T> {
        if size_of::<T>() > N {
            return None;
        }
        // SAFETY: size_of::<T>() <= N bytes inside the entry; T is valid
        // for any bit pattern and read_unaligned forms no reference.
        Some(unsafe { ptr::read_unaligned(self.ptr.as_ptr().cast::<T>()) })
    }
}

/// The start address of a piece of DMA memory, as the owner of the memory
/// keeps it. It is only an address: reaching the bytes takes a [`DmaView`],
/// made by that owner for as long as it keeps them mapped.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DmaAddress(NonNull<u8>);

// SAFETY: a `DmaAddress` grants no access by itself (there is no method
// that reads or writes through it); the memory's owner decides who reaches
// it, through `DmaView`s whose accesses are raw, volatile or atomic. Moving
// the address to another thread moves no reference.
unsafe impl Send for DmaAddress {}
// SAFETY: as for Send: `&DmaAddress` yields only the address.
unsafe impl Sync for DmaAddress {}

impl DmaAddress {
    /// The address `ptr`.
    pub(crate) fn new(ptr: NonNull<u8>) -> Self {
        DmaAddress(ptr)
    }
    /// The address.
    #[inline(always)]
    pub(crate) fn get(self) -> NonNull<u8> {
        self.0
    }
}

impl std::fmt::Debug for DmaView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaView")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}

/// An owned window `offset..offset + len` of a [`DmaRegion`], which it
/// keeps alive: the form queue rings, PRP-list pages and buffers hold.
/// [`DmaWindow::view`] is one load away (the start address is kept).
pub(crate) struct DmaWindow {
    region: Arc<DmaRegion>,
    /// Byte `offset()` of the region (kept as an address: a view is then
    /// one load away).
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: `base` is an address inside the region the Arc keeps alive
// (`DmaRegion` is Send and Sync); the window grants nothing beyond
// `DmaView`'s raw, bounds-checked accesses, so moving it to another thread
// moves no reference.
unsafe impl Send for DmaWindow {}
// SAFETY: as for Send: `&DmaWindow` only yields `DmaView`s, whose accesses
// are raw, volatile or atomic, never references; DMA memory is shared with
// the device anyway, so two threads reaching it through one window are no
// different from a thread and the device. Who writes what when is the
// owner's protocol (the doorbell buffer's pages are shared by a
// controller's queue pairs, each writing only its own slots).
unsafe impl Sync for DmaWindow {}

impl DmaWindow {
    /// The window `offset..offset + len` of `region`, or `None` when it is
    /// empty, does not fit, or `offset` is not 8-byte aligned.
    pub(crate) fn new(region: Arc<DmaRegion>, offset: usize, len: usize) -> Option<Self> {
        if len == 0 || !offset.is_multiple_of(8) {
            return None;
        }
        let base = region.view().subview(offset, len)?.ptr;
        Some(DmaWindow { region, base, len })
    }

    /// The window's bytes.
    #[inline(always)]
    pub(crate) fn view(&self) -> DmaView<'_> {
        DmaView {
            // Made in `new` from a subview of the region, which this window
            // keeps alive for as long as the borrow.
            ptr: self.base,
            len: self.len,
            _mem: PhantomData,
        }
    }

    /// Another window on the same bytes, for a buffer alias. Both may
    /// access them (every access is raw, like the device's); whoever
    /// shares a window decides who writes what when.
    pub(crate) fn share(&self) -> DmaWindow {
        DmaWindow {
            region: Arc::clone(&self.region),
            base: self.base,
            len: self.len,
        }
    }

    /// Length in bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The region behind the window.
    pub(crate) fn region(&self) -> &Arc<DmaRegion> {
        &self.region
    }

    /// Offset of the window in its region.
    #[inline]
    pub(crate) fn offset(&self) -> usize {
        self.base.as_ptr() as usize - self.region.as_ptr() as usize
    }

    /// Never unmap or release the region behind this window (a device that
    /// could not be stopped may still write it).
    pub(crate) fn quarantine(&self) {
        self.region.quarantine();
    }

    /// IOVA of byte `off` of the window.
    #[inline]
    pub(crate) fn iova(&self, off: usize) -> Option<u64> {
        if off >= self.len {
            return None;
        }
        self.region.iova(self.offset() + off)
    }

    /// Bytes from `off` that are IOVA-contiguous inside the window.
    pub(crate) fn contiguous_len(&self, off: usize) -> usize {
        if off >= self.len {
            return 0;
        }
        self.region
            .contiguous_len(self.offset() + off)
            .min(self.len - off)
    }
}

/// An owned array of `count` entries of `N` bytes in DMA memory (a queue
/// ring, a doorbell slot), 4-byte aligned. Reaching entry `i` costs one
/// comparison with `count`: the bounds and alignment of the whole array
/// were checked once, in [`DmaArray::new`].
pub(crate) struct DmaArray<const N: usize> {
    window: DmaWindow,
    count: usize,
}

impl<const N: usize> DmaArray<N> {
    /// `count` entries of `N` bytes at `offset` of `region`, or `None`
    /// when they do not fit, `N` is not a multiple of 4, or the start is
    /// not aligned to 4 (or to 8, when `offset` is: the window's rule).
    pub(crate) fn new(region: Arc<DmaRegion>, offset: usize, count: usize) -> Option<Self> {
        if N == 0 || !N.is_multiple_of(4) || count == 0 || !offset.is_multiple_of(4) {
            return None;
        }
        let len = N.checked_mul(count)?;
        let base = region.view().subview(offset, len)?.ptr;
        if !(base.as_ptr() as usize).is_multiple_of(4) {
            return None;
        }
        Some(DmaArray {
            window: DmaWindow { region, base, len },
            count,
        })
    }

    /// The first `count` entries of `window`, or `None` when they do not
    /// fit or `N` is not a multiple of 4 (the window is 8-byte aligned).
    pub(crate) fn from_window(window: DmaWindow, count: usize) -> Option<Self> {
        let len = N.checked_mul(count)?;
        if N == 0 || !N.is_multiple_of(4) || count == 0 || len > window.len {
            return None;
        }
        Some(DmaArray { window, count })
    }

    /// Entry `i`, or `None` past the end.
    #[inline(always)]
    pub(crate) fn get(&self, i: usize) -> Option<DmaEntry<'_, N>> {
        if i >= self.count {
            return None;
        }
        Some(DmaEntry {
            // SAFETY: i < count, so i * N + N <= count * N = the window's
            // length (checked in `new`): the entry is inside the window,
            // which keeps its memory alive for the borrow, and it is
            // 4-byte aligned (base aligned, N a multiple of 4).
            ptr: unsafe { self.window.base.add(i * N) },
            _mem: PhantomData,
        })
    }

    /// Number of entries.
    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// The whole array as a window (zeroing, IOVAs, quarantine).
    pub(crate) fn window(&self) -> &DmaWindow {
        &self.window
    }
}

/// The bytes of a command's data buffer as a transport that copies by
/// address sees them (NVMe/TCP reads sockets into them and encodes PDUs from
/// them): a host address and a length whose owner promised to leave them
/// alone while the command is in flight. Unlike [`DmaView`], it hands out
/// plain slices, so a socket read lands in the buffer with no extra copy;
/// that is sound because nothing else writes the bytes meanwhile:
/// - `DataBuf::of` takes a [`DataRef`], which only a queue pair makes,
///   from a buffer it holds (and no device is given) until the transport
///   reports the command done;
/// - `DataBuf::lent` takes a borrowed slice for one blocking exchange; its
///   one caller (the TCP transport's `lend`) takes it back from the
///   connection, by failing the connection, if the command is still in
///   flight when the exchange returns.
///
/// Every access is bounds-checked; a `DataBuf` is neither `Clone` nor
/// `Sync`.
#[derive(Debug)]
pub struct DataBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a DataBuf is the exclusive right to the bytes it names while its
// command is in flight (see the constructors); moving a connection, and with
// it that right, to another thread is what a queue pair created on one
// thread and driven on another does. DataBuf is not `Sync` and not `Clone`,
// so the right is never held twice.
unsafe impl Send for DataBuf {}

impl DataBuf {
    /// The buffer a queue pair described in `d`.
    pub(crate) fn of(d: &DataRef) -> Self {
        // The invariant of DataRef (made only by the queue pair, from a
        // buffer it holds until the transport reports the command complete,
        // or from transport-owned memory that lives as long) is the promise
        // this type needs.
        DataBuf {
            ptr: d.addr(),
            len: d.len() as usize,
        }
    }

    /// The buffer `b`, lent for one exchange: only the TCP transport's
    /// `lend` calls this, and it fails the connection (dropping every
    /// buffer it holds) before `b`'s borrow ends if the command still holds
    /// this one.
    pub(crate) fn lent(b: &mut [u8]) -> Self {
        DataBuf {
            ptr: b.as_mut_ptr(),
            len: b.len(),
        }
    }

    /// Bytes in the buffer.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of the first byte (compared, never dereferenced, by the
    /// transport to find who holds a lent buffer).
    pub(crate) fn start(&self) -> *mut u8 {
        self.ptr
    }

    /// `len` bytes at `offset`, read-only; `None` when out of bounds.
    pub fn slice(&self, offset: usize, len: usize) -> Option<&[u8]> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        if len == 0 {
            return Some(&[]);
        }
        // SAFETY: in bounds (checked above) of a range the constructors
        // vouch is mapped and left alone by everyone else while the command
        // is in flight, and the borrow lives no longer than `&self`, which
        // `slice_mut` cannot overlap.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.add(offset), len) })
    }

    /// `len` bytes at `offset`, writable; `None` when out of bounds.
    pub fn slice_mut(&mut self, offset: usize, len: usize) -> Option<&mut [u8]> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        if len == 0 {
            return Some(&mut []);
        }
        // SAFETY: in bounds (checked above); exclusive per the constructors'
        // promise, and `&mut self` keeps this the only slice handed out.
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr.add(offset), len) })
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod alias_tests {
    use super::*;
    use crate::dma::DmaPool;

    // A buffer alias is a second `DmaWindow` on the same block
    // (`DmaWindow::share`); its `unsafe` contract is exercised here, in the
    // one file of `dma/` that may use `unsafe`.
    #[test]
    fn alias_shares_the_block_with_its_own_window_and_is_never_freed() {
        let mut p = DmaPool::new(DmaRegion::unmapped_for_tests(
            HostMemory::plain(64 << 10).unwrap(),
            0x4000_0000,
        ));
        let mut block = p.alloc(16 << 10).unwrap();
        block.fill(0);
        // SAFETY: the handles below are used one at a time on this thread.
        let mut a = unsafe { block.alias() };
        assert!(a.set_window(4096, 8));
        assert_eq!(a.iova(), block.iova() + 4096);
        assert_eq!(a.capacity(), block.capacity());
        assert!(a.write_at(0, b"aliasing"));
        let mut out = [0u8; 8];
        assert!(block.set_window(4096, 8));
        assert!(block.read_at(0, &mut out));
        assert_eq!(&out, b"aliasing");
        assert!(
            !a.set_window(16 << 10, 1),
            "a window stays inside the block"
        );
        let used = p.used();
        assert!(matches!(
            p.free(a),
            Err(crate::dma::DmaError::ForeignBuffer)
        ));
        assert_eq!(
            p.used(),
            used,
            "freeing an alias must not release the block"
        );
        p.free(block).unwrap();
        assert_eq!(p.used(), 0);
    }
}
