//! Host memory for DMA: one anonymous mapping, of hugepages or (for the
//! emulated controller only) ordinary pages, pre-faulted and excluded from
//! `fork`, plus the per-page physical address lookup of no-IOMMU mode.
//!
//! No `unsafe` here: the mapping is memmap2's, and its start address is a
//! [`DmaAddress`], the view module's `Send + Sync` address of DMA memory.

#![forbid(unsafe_code)]

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::ptr::NonNull;

use memmap2::{Advice, MmapMut, MmapOptions};

use super::DmaError;
use super::view::DmaAddress;

/// Size of the pages backing a [`HostMemory`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    /// 4 KiB ordinary pages (not pinned by the kernel; emulated controller only).
    Base4K,
    /// 2 MiB hugepages.
    Huge2M,
    /// 1 GiB hugepages.
    Huge1G,
}

impl PageSize {
    /// log2 of the page size in bytes.
    pub const fn shift(self) -> u32 {
        match self {
            PageSize::Base4K => 12,
            PageSize::Huge2M => 21,
            PageSize::Huge1G => 30,
        }
    }
    /// The page size in bytes.
    pub const fn bytes(self) -> usize {
        1 << self.shift()
    }
    fn sysfs_dir(self) -> String {
        format!(
            "/sys/kernel/mm/hugepages/hugepages-{}kB",
            self.bytes() / 1024
        )
    }
}

/// One anonymous host mapping meant for DMA. The memory is zeroed, populated
/// and marked `MADV_DONTFORK` so a child process never shares pinned pages.
pub struct HostMemory {
    ptr: DmaAddress,
    len: usize,
    page: PageSize,
    // Keeps the mapping alive; never dereferenced (DMA memory is reached only
    // through `ptr`).
    _map: Keep,
}

/// What owns the memory behind a [`HostMemory`].
enum Keep {
    /// An anonymous mapping (always, outside Miri).
    Map(#[allow(dead_code)] MmapMut),
    /// Handed to [`HostMemory::keep_forever`]'s caller: nothing to release.
    Kept,
    /// Zeroed, page-aligned heap pages: Miri cannot run `mmap`, so its
    /// runs of the ring and pool tests use these instead.
    #[cfg(miri)]
    Heap(#[allow(dead_code)] Vec<HeapPage>),
}

/// The owner of a mapping taken by [`HostMemory::keep_forever`].
pub(super) struct KeptMapping(#[allow(dead_code)] Keep);

/// One zeroed 4 KiB page of heap memory, page aligned (Miri only).
#[cfg(miri)]
#[repr(C, align(4096))]
struct HeapPage([u8; 4096]);

impl HostMemory {
    /// Map `len` bytes (rounded up to whole pages) of hugepages of `page` size.
    /// Fails with [`DmaError::HugepagesMissing`], naming the command that
    /// fixes it, when too few hugepages are free.
    pub fn hugepages(len: usize, page: PageSize) -> Result<Self, DmaError> {
        if page == PageSize::Base4K {
            return Self::plain(len);
        }
        if cfg!(miri) {
            return Err(hugepages_missing(page, len.div_ceil(page.bytes())));
        }
        let len = round_up(len.max(1), page.bytes());
        let mut opts = MmapOptions::new();
        opts.len(len).huge(Some(page.shift() as u8)).populate();
        match opts.map_anon() {
            Ok(map) => Self::finish(map, len, page, "hugepage memory"),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOMEM) | Some(libc::EINVAL)) => {
                Err(hugepages_missing(page, len / page.bytes()))
            }
            Err(source) => Err(DmaError::Map {
                len,
                what: "hugepage memory",
                source,
            }),
        }
    }

    /// Map `len` bytes (rounded up to 4 KiB) of ordinary memory. Ordinary
    /// pages can move and are not usable for real DMA; the emulated
    /// controller accepts them.
    pub fn plain(len: usize) -> Result<Self, DmaError> {
        let len = round_up(len.max(1), 4096);
        #[cfg(miri)]
        {
            let mut pages: Vec<HeapPage> = (0..len / 4096).map(|_| HeapPage([0; 4096])).collect();
            // The vector's buffer never moves: it is neither grown nor
            // shrunk, and moving the vector moves only its handle.
            let ptr =
                NonNull::new(pages.as_mut_ptr().cast::<u8>()).ok_or_else(|| DmaError::Map {
                    len,
                    what: "ordinary memory",
                    source: io::Error::other("the allocator returned null"),
                })?;
            return Ok(HostMemory {
                ptr: DmaAddress::new(ptr),
                len,
                page: PageSize::Base4K,
                _map: Keep::Heap(pages),
            });
        }
        #[cfg(not(miri))]
        {
            let map = MmapOptions::new()
                .len(len)
                .populate()
                .map_anon()
                .map_err(|source| DmaError::Map {
                    len,
                    what: "ordinary memory",
                    source,
                })?;
            Self::finish(map, len, PageSize::Base4K, "ordinary memory")
        }
    }

    fn finish(
        mut map: MmapMut,
        len: usize,
        page: PageSize,
        what: &'static str,
    ) -> Result<Self, DmaError> {
        map.advise(Advice::DontFork)
            .map_err(|source| DmaError::Map { len, what, source })?;
        let ptr = NonNull::new(map.as_mut_ptr()).ok_or_else(|| DmaError::Map {
            len,
            what,
            source: io::Error::other("mmap returned a null pointer"),
        })?;
        Ok(HostMemory {
            ptr: DmaAddress::new(ptr),
            len,
            page,
            _map: Keep::Map(map),
        })
    }

    /// Start of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.get().as_ptr()
    }
    /// Start of the mapping, never null.
    pub(super) fn non_null(&self) -> NonNull<u8> {
        self.ptr.get()
    }
    /// Take the mapping out of this value so that dropping it releases
    /// nothing: the returned owner keeps the pages mapped for as long as
    /// it lives (a quarantined region keeps it until the process exits).
    /// The memory must not be accessed through `self` afterwards.
    pub(super) fn keep_forever(&mut self) -> KeptMapping {
        KeptMapping(std::mem::replace(&mut self._map, Keep::Kept))
    }
    /// Length in bytes (a whole number of pages).
    pub fn len(&self) -> usize {
        self.len
    }
    /// Always false: a mapping has at least one page.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The backing page size.
    pub fn page_size(&self) -> PageSize {
        self.page
    }
    /// Whether the memory is hugepage-backed (and therefore never moves).
    pub fn is_hugepage(&self) -> bool {
        self.page != PageSize::Base4K
    }

    /// Physical address of every page, from `/proc/self/pagemap`, for
    /// no-IOMMU mode. Needs CAP_SYS_ADMIN (otherwise the kernel reports 0).
    pub(crate) fn physical_addresses(&self) -> Result<Vec<u64>, DmaError> {
        let pagemap_err = |reason: String| DmaError::Pagemap { reason };
        let mut f =
            fs::File::open("/proc/self/pagemap").map_err(|e| pagemap_err(format!("open: {e}")))?;
        let base_page = 4096usize;
        let pages = self.len / self.page.bytes();
        let mut out = Vec::with_capacity(pages);
        for i in 0..pages {
            let vaddr = self.as_ptr() as usize + i * self.page.bytes();
            f.seek(SeekFrom::Start((vaddr / base_page * 8) as u64))
                .map_err(|e| pagemap_err(format!("seek: {e}")))?;
            let mut entry = [0u8; 8];
            f.read_exact(&mut entry)
                .map_err(|e| pagemap_err(format!("read: {e}")))?;
            let entry = u64::from_le_bytes(entry);
            if entry & (1 << 63) == 0 {
                return Err(pagemap_err(format!("page at {vaddr:#x} is not present")));
            }
            let pfn = entry & ((1 << 55) - 1);
            if pfn == 0 {
                return Err(pagemap_err("the kernel hid the frame numbers".into()));
            }
            out.push(pfn * base_page as u64);
        }
        Ok(out)
    }
}

impl std::fmt::Debug for HostMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostMemory")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("page", &self.page)
            .finish()
    }
}

pub(crate) const fn round_up(v: usize, to: usize) -> usize {
    v.div_ceil(to) * to
}

/// Total and free hugepages of `page` size, summed over NUMA nodes, or `None`
/// when the kernel has no such pool.
pub fn hugepage_status(page: PageSize) -> Option<(usize, usize)> {
    let dir = page.sysfs_dir();
    let read = |name: &str| -> Option<usize> {
        fs::read_to_string(format!("{dir}/{name}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some((read("nr_hugepages")?, read("free_hugepages")?))
}

fn hugepages_missing(page: PageSize, needed: usize) -> DmaError {
    let (total, free) = hugepage_status(page).unwrap_or((0, 0));
    let suggest = total + needed.saturating_sub(free);
    DmaError::HugepagesMissing {
        page_kib: page.bytes() / 1024,
        needed,
        free,
        total,
        suggest,
        suggest_mib: suggest * page.bytes() / (1 << 20),
        sysfs: format!("{}/nr_hugepages", page.sysfs_dir()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_memory_rounds_up_to_pages() {
        let m = HostMemory::plain(5000).unwrap();
        assert_eq!(m.len(), 8192);
        assert!(!m.is_hugepage());
        assert_eq!(m.as_ptr() as usize % 4096, 0);
    }

    #[test]
    fn missing_hugepages_error_names_the_fix() {
        let e = hugepages_missing(PageSize::Huge2M, 3);
        let msg = e.to_string();
        assert!(msg.contains("need 3 free"), "{msg}");
        assert!(
            msg.contains("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"),
            "{msg}"
        );
        assert!(msg.contains("scripts/setup.sh"), "{msg}");
    }

    #[test]
    fn hugepages_map_or_explain() {
        // Whether hugepages are reserved depends on the machine; either way
        // the result must be a mapping of the right size or the named error.
        match HostMemory::hugepages(1, PageSize::Huge2M) {
            Ok(m) => {
                assert_eq!(m.len(), 2 << 20);
                assert_eq!(m.as_ptr() as usize % (2 << 20), 0);
            }
            Err(DmaError::HugepagesMissing { needed, .. }) => assert_eq!(needed, 1),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
}
