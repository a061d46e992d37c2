//! A host mapping made reachable by one device, with the IOVA of every page.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::DmaError;
use super::memory::{HostMemory, KeptMapping, PageSize};
use super::view::DmaView;
use crate::device::Device;

/// Undoes a device mapping when dropped (VFIO unmap, emulator unregister).
pub trait Unmap: Send + Sync {}

impl<T: Send + Sync> Unmap for T {}

/// Host memory mapped for DMA by one device.
///
/// The IOVA of byte `off` is `iovas[off >> chunk_shift] + (off & chunk_mask)`:
/// each chunk (a hugepage, or the whole region when the device gave it one
/// contiguous IOVA range) is contiguous for the device; two chunks need not be.
///
/// The IOVAs are trusted: a device given a buffer of this region transfers
/// to and from them. That is why the constructors are `unsafe`; the
/// transports (`Device::map_dma`) make regions from the mappings they set up.
pub struct DmaRegion {
    // Dropped before `memory` (fields drop in declaration order, and `Drop`
    // takes it first anyway): the device mapping goes before the pages.
    unmap: Option<Box<dyn Unmap>>,
    // Released on drop unless the region was quarantined, in which case
    // `Drop` parks its mapping in `QUARANTINE` first.
    memory: HostMemory,
    chunk_shift: u32,
    iovas: Box<[u64]>,
    /// A device may still write somewhere in the region: never unmap it.
    quarantined: AtomicBool,
}

/// Bytes of DMA regions kept mapped forever because a device could not be
/// proven to have stopped writing them (see [`DmaRegion::quarantine`]).
static QUARANTINED_BYTES: AtomicU64 = AtomicU64::new(0);

/// Quarantined memory and its device mappings, held until the process
/// exits.
#[allow(clippy::type_complexity)]
static QUARANTINE: std::sync::Mutex<Vec<(KeptMapping, Option<Box<dyn Unmap>>)>> =
    std::sync::Mutex::new(Vec::new());

/// Bytes of DMA memory this process has quarantined so far: regions a
/// device might still write, deliberately never unmapped or reused.
pub fn quarantined_bytes() -> u64 {
    QUARANTINED_BYTES.load(Ordering::Relaxed)
}

impl DmaRegion {
    /// A region whose chunk `i` (of `1 << chunk_shift` bytes) starts at
    /// `iovas[i]`. `unmap` is dropped before the memory is released.
    ///
    /// Returns `None` when `iovas` does not cover the memory exactly or the
    /// chunk size is smaller than 4 KiB.
    ///
    /// # Safety
    ///
    /// Every byte of `memory` is reachable by the device this region is for
    /// at the IOVA the table gives it, and stays so until `unmap` is dropped
    /// (or for the rest of the process when there is none): a buffer of the
    /// region handed to that device makes it transfer to and from these
    /// addresses, so a wrong one lets it write memory the program does not
    /// own. A region no device ever sees may carry any IOVAs.
    #[allow(unsafe_code)] // A contract for the caller; no unsafe operation.
    pub unsafe fn new(
        memory: HostMemory,
        chunk_shift: u32,
        iovas: Vec<u64>,
        unmap: Option<Box<dyn Unmap>>,
    ) -> Option<Self> {
        Self::checked(memory, chunk_shift, iovas, unmap)
    }

    /// [`DmaRegion::new`]'s shape checks, then the region.
    fn checked(
        memory: HostMemory,
        chunk_shift: u32,
        iovas: Vec<u64>,
        unmap: Option<Box<dyn Unmap>>,
    ) -> Option<Self> {
        if !(12..=63).contains(&chunk_shift) {
            return None;
        }
        let chunks = memory
            .len()
            .div_ceil(1usize << chunk_shift.min(usize::BITS - 1));
        if iovas.len() != chunks {
            return None;
        }
        Some(Self::build(memory, chunk_shift, iovas, unmap))
    }

    /// A region with one contiguous IOVA range starting at `iova`.
    ///
    /// # Safety
    ///
    /// As for [`DmaRegion::new`]: the device this region is for reaches byte
    /// `i` of `memory` at `iova + i` until `unmap` is dropped.
    #[allow(unsafe_code)] // A contract for the caller; no unsafe operation.
    pub unsafe fn contiguous(memory: HostMemory, iova: u64, unmap: Option<Box<dyn Unmap>>) -> Self {
        let shift = memory.len().next_power_of_two().trailing_zeros().max(12);
        Self::build(memory, shift, vec![iova], unmap)
    }

    /// A region no device reaches, for a transport that copies to and from
    /// its buffers by virtual address (NVMe/TCP's pools): each byte's
    /// "IOVA" is its address in this process, which keeps the pool's
    /// alignment checks true. Its buffers must not be handed to a PCIe
    /// queue pair (the crate's one caller, `tcp::host_pool`, documents it).
    pub(crate) fn host_only(memory: HostMemory) -> Self {
        let va = memory.as_ptr() as u64;
        let shift = memory.len().next_power_of_two().trailing_zeros().max(12);
        Self::build(memory, shift, vec![va], None)
    }

    /// A region of ordinary memory with made-up IOVAs starting at `iova`,
    /// for unit tests whose fake devices never transfer anything.
    #[cfg(test)]
    pub(crate) fn unmapped_for_tests(memory: HostMemory, iova: u64) -> Self {
        let shift = memory.len().next_power_of_two().trailing_zeros().max(12);
        Self::build(memory, shift, vec![iova], None)
    }

    fn build(
        memory: HostMemory,
        chunk_shift: u32,
        iovas: Vec<u64>,
        unmap: Option<Box<dyn Unmap>>,
    ) -> Self {
        DmaRegion {
            unmap,
            memory,
            chunk_shift,
            iovas: iovas.into_boxed_slice(),
            quarantined: AtomicBool::new(false),
        }
    }

    /// Start of the region in this process.
    pub fn as_ptr(&self) -> *mut u8 {
        self.memory.as_ptr()
    }
    /// The region's bytes, for bounds-checked volatile access.
    pub fn view(&self) -> DmaView<'_> {
        DmaView::new(&self.memory)
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.memory.len()
    }
    /// Always false.
    pub fn is_empty(&self) -> bool {
        self.memory.is_empty()
    }
    /// The host memory behind the region.
    pub fn memory(&self) -> &HostMemory {
        &self.memory
    }
    /// log2 of the IOVA-contiguous chunk size.
    pub fn chunk_shift(&self) -> u32 {
        self.chunk_shift
    }
    /// The IOVA of every chunk.
    pub fn chunk_iovas(&self) -> &[u64] {
        &self.iovas
    }
    /// Keep the region mapped for the device and its memory allocated for
    /// the rest of the process: a device that could not be stopped may
    /// still write into it, and without an IOMMU a released page would be
    /// reused by the kernel for something else. Counted in
    /// [`quarantined_bytes`] when the region is dropped.
    pub fn quarantine(&self) {
        self.quarantined.store(true, Ordering::Release);
    }
    /// Whether the region was quarantined.
    pub fn is_quarantined(&self) -> bool {
        self.quarantined.load(Ordering::Acquire)
    }
    /// IOVA of the byte at `offset`, or `None` past the end.
    #[inline]
    pub fn iova(&self, offset: usize) -> Option<u64> {
        if offset >= self.len() {
            return None;
        }
        let base = *self.iovas.get(offset >> self.chunk_shift)?;
        Some(base + (offset & ((1usize << self.chunk_shift) - 1)) as u64)
    }
    /// Bytes from `offset` to the end of its IOVA-contiguous chunk.
    pub fn contiguous_len(&self, offset: usize) -> usize {
        let chunk = 1usize << self.chunk_shift;
        (chunk - (offset & (chunk - 1))).min(self.len().saturating_sub(offset))
    }
}

impl Drop for DmaRegion {
    fn drop(&mut self) {
        if self.is_quarantined() {
            // Kept for the rest of the process on purpose: neither the
            // device mapping nor the host pages are released, so a late
            // write lands in memory nobody else will ever be given.
            QUARANTINED_BYTES.fetch_add(self.len() as u64, Ordering::Relaxed);
            let memory = self.memory.keep_forever();
            let unmap = self.unmap.take();
            QUARANTINE
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((memory, unmap));
            return;
        }
        // Unmap from the device before the host pages go away (when
        // `memory` drops, right after this).
        drop(self.unmap.take());
    }
}

impl std::fmt::Debug for DmaRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaRegion")
            .field("memory", &self.memory)
            .field("chunk_shift", &self.chunk_shift)
            .field("chunks", &self.iovas.len())
            .finish()
    }
}

static PLAIN_WARNING: Once = Once::new();

/// Allocate `len` bytes of DMA memory for `device`: 2 MiB hugepages, or, for
/// a device that allows it (the emulated controller), ordinary memory with a
/// one-line warning when no hugepages are reserved.
pub fn allocate<D: Device + ?Sized>(device: &D, len: usize) -> Result<DmaRegion, DmaError> {
    let memory = match HostMemory::hugepages(len, PageSize::Huge2M) {
        Ok(m) => m,
        Err(DmaError::HugepagesMissing { .. }) if device.allows_plain_memory() => {
            super::check_memory(len as u64, "DMA memory in ordinary pages")?;
            PLAIN_WARNING.call_once(|| {
                eprintln!(
                    "nvme-engine: warning: no free 2 MiB hugepages; {} uses ordinary memory \
                     (fine for the emulated controller; reserve hugepages with `sudo scripts/setup.sh`)",
                    device.name()
                );
            });
            HostMemory::plain(len)?
        }
        Err(e) => return Err(e),
    };
    device.map_dma(memory)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iova_lookup_follows_chunks() {
        let mem = HostMemory::plain(3 * 4096).unwrap();
        let r = DmaRegion::checked(mem, 12, vec![0x10_0000, 0x50_0000, 0x20_0000], None).unwrap();
        assert_eq!(r.iova(0), Some(0x10_0000));
        assert_eq!(r.iova(4095), Some(0x10_0fff));
        assert_eq!(r.iova(4096), Some(0x50_0000));
        assert_eq!(r.iova(2 * 4096 + 8), Some(0x20_0008));
        assert_eq!(r.iova(3 * 4096), None);
        assert_eq!(r.contiguous_len(4000), 96);
    }

    #[test]
    fn region_rejects_iova_tables_of_the_wrong_length() {
        let mem = HostMemory::plain(2 * 4096).unwrap();
        assert!(DmaRegion::checked(mem, 12, vec![0], None).is_none());
    }

    #[test]
    fn contiguous_region_is_one_chunk() {
        let mem = HostMemory::plain(5 * 4096).unwrap();
        let r = DmaRegion::unmapped_for_tests(mem, 0x1000_0000);
        assert_eq!(r.iova(5 * 4096 - 1), Some(0x1000_0000 + 5 * 4096 - 1));
        assert_eq!(r.contiguous_len(0), 5 * 4096);
    }

    #[test]
    fn quarantined_region_is_never_unmapped_and_is_counted() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        struct Guard(Arc<AtomicBool>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = Arc::new(AtomicBool::new(false));
        let mem = HostMemory::plain(8192).unwrap();
        let r = DmaRegion::build(
            mem,
            12,
            vec![0, 0x1000],
            Some(Box::new(Guard(flag.clone()))),
        );
        let before = quarantined_bytes();
        r.quarantine();
        drop(r);
        assert!(
            !flag.load(Ordering::SeqCst),
            "a quarantined region was unmapped"
        );
        assert!(quarantined_bytes() >= before + 8192);
    }

    #[test]
    fn unmap_guard_runs_on_drop() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        struct Guard(Arc<AtomicBool>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = Arc::new(AtomicBool::new(false));
        let mem = HostMemory::plain(4096).unwrap();
        let r = DmaRegion::build(mem, 12, vec![0], Some(Box::new(Guard(flag.clone()))));
        assert!(!flag.load(Ordering::SeqCst));
        drop(r);
        assert!(flag.load(Ordering::SeqCst));
    }
}
