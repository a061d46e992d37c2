//! DMA memory: hugepage-backed host memory, regions mapped for a device with
//! an I/O virtual address (IOVA) per page, and a single-owner pool that
//! carves PRP-list pages and data buffers out of a region.
//!
//! Hugepage regions are mapped with `memmap2`'s huge-page support
//! (`MAP_HUGETLB | MAP_POPULATE`, then `MADV_DONTFORK`) and, where physical
//! addresses are needed (no-IOMMU mode), translated per page through
//! `/proc/self/pagemap`. A per-allocation hugepage crate such as
//! `hugepage-rs` does not fit: it maps every allocation separately, cannot
//! pre-fault, has no 1 GiB pages and gives no physical addresses, while a pool
//! needs one large, populated, pinned mapping.
//!
//! Nothing in this module hands out a Rust reference into DMA memory: the
//! device may write it at any time, so all access goes through [`DmaView`]
//! (`view.rs`), the one bounds-checked, volatile accessor. `view.rs` is the
//! only file here with unsafe operations; `region.rs` and `pool.rs` declare
//! contracts (`unsafe fn`) for their callers.

mod budget;
mod memory;
mod pool;
mod region;
pub(crate) mod split;
pub(crate) mod view;

pub use budget::{MemoryBudget, check_fits, check_memory, memory_budget};

pub use memory::{HostMemory, PageSize, hugepage_status};
pub use pool::{DmaBuf, DmaPool, RegionHold};
pub use region::{DmaRegion, Unmap, allocate, quarantined_bytes};
pub(crate) use view::{DmaArray, DmaWindow};
pub use view::{DmaEntry, DmaView};

use std::io;

/// Errors from DMA memory allocation and mapping.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DmaError {
    /// Not enough hugepages are reserved for the requested memory.
    #[error(
        "not enough {page_kib} KiB hugepages: need {needed} free, {free} of {total} reserved are free. \
         Reserve more with `echo {suggest} | sudo tee {sysfs}` or `sudo HUGEMEM={suggest_mib} scripts/setup.sh`"
    )]
    HugepagesMissing {
        /// Hugepage size in KiB.
        page_kib: usize,
        /// Pages this allocation needs.
        needed: usize,
        /// Pages free now.
        free: usize,
        /// Pages reserved in total.
        total: usize,
        /// Suggested total reservation in pages.
        suggest: usize,
        /// Suggested total reservation in MiB.
        suggest_mib: usize,
        /// The sysfs file that sets the reservation.
        sysfs: String,
    },
    /// The kernel refused the mapping for another reason.
    #[error("mapping {len} bytes of {what} failed")]
    Map {
        /// Bytes requested.
        len: usize,
        /// What kind of memory.
        what: &'static str,
        /// The errno from mmap/madvise.
        #[source]
        source: io::Error,
    },
    /// A physical address could not be read from /proc/self/pagemap.
    #[error(
        "cannot read physical addresses from /proc/self/pagemap ({reason}); \
         no-IOMMU mode needs root (CAP_SYS_ADMIN)"
    )]
    Pagemap {
        /// What went wrong.
        reason: String,
    },
    /// The device could not map the memory.
    #[error("mapping {len} bytes for DMA by {device} failed: {reason}")]
    DeviceMap {
        /// Device name.
        device: String,
        /// Bytes requested.
        len: usize,
        /// What the device reported.
        reason: String,
    },
    /// A pool has no free block large enough.
    #[error(
        "DMA pool exhausted: no free {class} byte block for a {len} byte request \
         ({used} of {capacity} bytes in use); create the pool larger or free buffers sooner"
    )]
    PoolExhausted {
        /// Bytes requested.
        len: usize,
        /// The block size the request needs.
        class: usize,
        /// Bytes handed out.
        used: usize,
        /// Pool size.
        capacity: usize,
    },
    /// A request larger than any block the pool can hand out.
    #[error("a {len} byte DMA buffer is larger than the pool's largest block ({max} bytes)")]
    TooLarge {
        /// Bytes requested.
        len: usize,
        /// Largest block.
        max: usize,
    },
    /// Zero bytes requested.
    #[error("a DMA buffer of zero bytes was requested")]
    ZeroLength,
    /// More memory was asked for than the machine or the cgroup has left.
    #[error(
        "{what} needs {needed} bytes ({} MiB) but only {available} bytes ({} MiB) are available \
         ({limit}); ask for less, free memory, or raise the limit",
        .needed >> 20,
        .available >> 20
    )]
    MemoryShort {
        /// What the memory is for.
        what: &'static str,
        /// Bytes requested.
        needed: u64,
        /// Bytes that may still be used.
        available: u64,
        /// Where the limit comes from.
        limit: String,
    },
    /// A buffer was returned to a pool that did not hand it out.
    #[error("DMA buffer returned to a pool that did not allocate it")]
    ForeignBuffer,
}
