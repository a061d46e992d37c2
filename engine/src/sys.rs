//! The engine's boundary with the kernel and the processor, and the one
//! file outside `dma/view.rs` where the engine's own code (io_uring and
//! NVMe/TCP aside) may use `unsafe`:
//! - VFIO ioctls (`linux/vfio.h`, API version 0), each behind a typed
//!   wrapper that fixes its request number and argument type;
//! - shared mappings of device regions and the BAR they hold ([`Bar`]),
//!   reached only by volatile, bounds-checked 32-bit accesses;
//! - DMA regions whose IOVAs a mapping made here vouches for: the VFIO
//!   IOMMU map ([`map_dma_region`]) and physical addresses for the
//!   no-IOMMU paths ([`physical_region`]);
//! - the memory-lock limit, and the processor's time-stamp counter
//!   ([`tsc`]).
//!
//! Every `unsafe` block carries the argument for it in a `SAFETY` comment.

#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use crate::dma::{DmaError, DmaRegion, HostMemory, Unmap};

use vfio_bindings::bindings::vfio::{
    vfio_group_status, vfio_iommu_type1_dma_map, vfio_iommu_type1_dma_unmap, vfio_iommu_type1_info,
    vfio_region_info,
};

/// `_IO(';', 100 + n)` from `linux/vfio.h`: VFIO encodes no size or direction
/// in its request numbers.
const fn vfio_io(n: u32) -> u32 {
    ((b';' as u32) << 8) | (100 + n)
}

/// VFIO request numbers (`VFIO_TYPE` ';', `VFIO_BASE` 100).
mod nr {
    use super::vfio_io;
    /// VFIO_GET_API_VERSION.
    pub const GET_API_VERSION: u32 = vfio_io(0);
    /// VFIO_CHECK_EXTENSION.
    pub const CHECK_EXTENSION: u32 = vfio_io(1);
    /// VFIO_SET_IOMMU.
    pub const SET_IOMMU: u32 = vfio_io(2);
    /// VFIO_GROUP_GET_STATUS.
    pub const GROUP_GET_STATUS: u32 = vfio_io(3);
    /// VFIO_GROUP_SET_CONTAINER.
    pub const GROUP_SET_CONTAINER: u32 = vfio_io(4);
    /// VFIO_GROUP_UNSET_CONTAINER.
    pub const GROUP_UNSET_CONTAINER: u32 = vfio_io(5);
    /// VFIO_GROUP_GET_DEVICE_FD.
    pub const GROUP_GET_DEVICE_FD: u32 = vfio_io(6);
    /// VFIO_DEVICE_GET_INFO.
    pub const DEVICE_GET_INFO: u32 = vfio_io(7);
    /// VFIO_DEVICE_GET_REGION_INFO.
    pub const DEVICE_GET_REGION_INFO: u32 = vfio_io(8);
    /// VFIO_DEVICE_RESET.
    pub const DEVICE_RESET: u32 = vfio_io(11);
    /// VFIO_IOMMU_GET_INFO.
    pub const IOMMU_GET_INFO: u32 = vfio_io(12);
    /// VFIO_IOMMU_MAP_DMA.
    pub const IOMMU_MAP_DMA: u32 = vfio_io(13);
    /// VFIO_IOMMU_UNMAP_DMA.
    pub const IOMMU_UNMAP_DMA: u32 = vfio_io(14);
}

// The numbers as the kernel header spells them out.
const _: () = {
    assert!(nr::GET_API_VERSION == 0x3B64);
    assert!(nr::CHECK_EXTENSION == 0x3B65);
    assert!(nr::SET_IOMMU == 0x3B66);
    assert!(nr::GROUP_GET_STATUS == 0x3B67);
    assert!(nr::GROUP_SET_CONTAINER == 0x3B68);
    assert!(nr::GROUP_UNSET_CONTAINER == 0x3B69);
    assert!(nr::GROUP_GET_DEVICE_FD == 0x3B6A);
    assert!(nr::DEVICE_GET_INFO == 0x3B6B);
    assert!(nr::DEVICE_GET_REGION_INFO == 0x3B6C);
    assert!(nr::DEVICE_RESET == 0x3B6F);
    assert!(nr::IOMMU_GET_INFO == 0x3B70);
    assert!(nr::IOMMU_MAP_DMA == 0x3B71);
    assert!(nr::IOMMU_UNMAP_DMA == 0x3B72);
    // Layouts the ioctls below depend on (`linux/vfio.h`).
    assert!(size_of::<vfio_group_status>() == 8);
    assert!(size_of::<vfio_region_info>() == 32);
    assert!(size_of::<vfio_iommu_type1_info>() == 24);
    assert!(size_of::<vfio_iommu_type1_dma_map>() == 32);
    assert!(size_of::<vfio_iommu_type1_dma_unmap>() == 24);
};

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// An ioctl whose argument is passed by value. Returns the ioctl's
/// non-negative result.
///
/// # Safety
/// `request` must be a request that takes an integer argument (or none) and
/// never dereferences it, so that no value of `arg` makes the kernel read or
/// write memory; the typed wrappers below are the only callers.
unsafe fn ioctl_value(fd: BorrowedFd<'_>, request: u32, arg: libc::c_ulong) -> io::Result<i32> {
    // SAFETY: the caller guarantees the request never treats `arg` as a
    // pointer; `fd` is a live descriptor for the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), request as libc::Ioctl, arg) })
}

/// VFIO_GET_API_VERSION on a container.
pub(crate) fn api_version(container: BorrowedFd<'_>) -> io::Result<i32> {
    // SAFETY: VFIO_GET_API_VERSION takes no argument.
    unsafe { ioctl_value(container, nr::GET_API_VERSION, 0) }
}

/// VFIO_CHECK_EXTENSION: whether the container supports IOMMU type
/// `extension` (positive when it does).
pub(crate) fn check_extension(container: BorrowedFd<'_>, extension: u32) -> io::Result<i32> {
    // SAFETY: VFIO_CHECK_EXTENSION takes the extension number by value.
    unsafe { ioctl_value(container, nr::CHECK_EXTENSION, extension.into()) }
}

/// VFIO_SET_IOMMU: give the container IOMMU type `backend` (its groups must
/// be attached first).
pub(crate) fn set_iommu(container: BorrowedFd<'_>, backend: u32) -> io::Result<()> {
    // SAFETY: VFIO_SET_IOMMU takes the IOMMU type by value.
    unsafe { ioctl_value(container, nr::SET_IOMMU, backend.into()) }.map(drop)
}

/// VFIO_DEVICE_RESET: a function-level or bus reset, chosen by vfio-pci.
pub(crate) fn device_reset(device: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: VFIO_DEVICE_RESET takes no argument.
    unsafe { ioctl_value(device, nr::DEVICE_RESET, 0) }.map(drop)
}

/// VFIO_GROUP_GET_STATUS: the group's flags (`VFIO_GROUP_FLAGS_VIABLE`, ...).
pub(crate) fn group_status(group: BorrowedFd<'_>) -> io::Result<u32> {
    let mut status = vfio_group_status {
        argsz: size_of::<vfio_group_status>() as u32,
        flags: 0,
    };
    // SAFETY: the kernel writes at most `argsz` bytes into `status`, which is
    // a live, properly laid out `struct vfio_group_status` for the call.
    check(unsafe {
        libc::ioctl(
            group.as_raw_fd(),
            nr::GROUP_GET_STATUS as libc::Ioctl,
            &mut status as *mut vfio_group_status,
        )
    })?;
    Ok(status.flags)
}

/// VFIO_GROUP_SET_CONTAINER: attach `group` to `container`.
pub(crate) fn group_set_container(
    group: BorrowedFd<'_>,
    container: BorrowedFd<'_>,
) -> io::Result<()> {
    let fd: libc::c_int = container.as_raw_fd();
    // SAFETY: the kernel reads one `int` (the container descriptor) through
    // the pointer, which points at a live local for the whole call.
    check(unsafe {
        libc::ioctl(
            group.as_raw_fd(),
            nr::GROUP_SET_CONTAINER as libc::Ioctl,
            &fd as *const libc::c_int,
        )
    })?;
    Ok(())
}

/// VFIO_GROUP_GET_DEVICE_FD for the device named `name` (`0000:bb:dd.f`).
pub(crate) fn group_device_fd(group: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: the kernel reads a NUL-terminated string through the pointer;
    // `name` is a valid C string that outlives the call.
    let fd = check(unsafe {
        libc::ioctl(
            group.as_raw_fd(),
            nr::GROUP_GET_DEVICE_FD as libc::Ioctl,
            name.as_ptr(),
        )
    })?;
    // SAFETY: on success the ioctl returns a new descriptor that nothing else
    // owns; wrapping it makes it closed exactly once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// VFIO_DEVICE_GET_REGION_INFO for region `index`.
pub(crate) fn region_info(device: BorrowedFd<'_>, index: u32) -> io::Result<vfio_region_info> {
    let mut info = vfio_region_info {
        argsz: size_of::<vfio_region_info>() as u32,
        flags: 0,
        index,
        cap_offset: 0,
        size: 0,
        offset: 0,
    };
    // SAFETY: the kernel writes at most `argsz` bytes into `info`, a live
    // `struct vfio_region_info`; capability chains beyond `argsz` are only
    // reported (through a larger argsz), never written.
    check(unsafe {
        libc::ioctl(
            device.as_raw_fd(),
            nr::DEVICE_GET_REGION_INFO as libc::Ioctl,
            &mut info as *mut vfio_region_info,
        )
    })?;
    Ok(info)
}

/// VFIO_IOMMU_GET_INFO with its capability chain: the raw bytes of
/// `struct vfio_iommu_type1_info` followed by the capabilities.
pub(crate) fn iommu_info(container: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut argsz = size_of::<vfio_iommu_type1_info>() as u32;
    // Two rounds at most: the first call reports how large the buffer must be
    // to hold the capabilities; the kernel may grow it once more in theory,
    // so loop a few times rather than trust one answer.
    for _ in 0..4 {
        // u64 elements keep the buffer 8-byte aligned like the struct.
        let words = (argsz as usize).div_ceil(8);
        let mut buf = vec![0u64; words];
        let header = vfio_iommu_type1_info {
            argsz: (words * 8) as u32,
            flags: 0,
            iova_pgsizes: 0,
            cap_offset: 0,
            pad: 0,
        };
        // SAFETY: `buf` holds at least `size_of::<vfio_iommu_type1_info>()`
        // bytes (argsz never shrinks below it) and is 8-byte aligned, so the
        // header fits at its start.
        unsafe {
            buf.as_mut_ptr()
                .cast::<vfio_iommu_type1_info>()
                .write(header)
        };
        // SAFETY: the kernel writes at most `argsz` (= the buffer's byte
        // length) bytes into `buf`, which stays alive for the call.
        check(unsafe {
            libc::ioctl(
                container.as_raw_fd(),
                nr::IOMMU_GET_INFO as libc::Ioctl,
                buf.as_mut_ptr(),
            )
        })?;
        let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let needed = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if needed as usize <= words * 8 {
            return Ok(bytes);
        }
        argsz = needed;
    }
    Err(io::Error::other(
        "VFIO_IOMMU_GET_INFO kept asking for a larger buffer",
    ))
}

/// VFIO_IOMMU_MAP_DMA: map `size` bytes at `vaddr` for device reads and
/// writes at `iova`.
pub(crate) fn map_dma(
    container: BorrowedFd<'_>,
    vaddr: u64,
    iova: u64,
    size: u64,
) -> io::Result<()> {
    use vfio_bindings::bindings::vfio::{VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE};
    let map = vfio_iommu_type1_dma_map {
        argsz: size_of::<vfio_iommu_type1_dma_map>() as u32,
        flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        vaddr,
        iova,
        size,
    };
    // SAFETY: the kernel only reads `map`. It pins the pages at `vaddr`; the
    // caller keeps that memory mapped until the matching unmap.
    check(unsafe {
        libc::ioctl(
            container.as_raw_fd(),
            nr::IOMMU_MAP_DMA as libc::Ioctl,
            &map as *const vfio_iommu_type1_dma_map,
        )
    })?;
    Ok(())
}

/// [`map_dma`] of all of `memory` at `iova`, as the region a device of the
/// container reaches there; `unmap` (made only once the mapping exists)
/// undoes it when the region drops.
pub(crate) fn map_dma_region(
    container: BorrowedFd<'_>,
    memory: HostMemory,
    iova: u64,
    unmap: impl FnOnce() -> Box<dyn Unmap>,
) -> io::Result<DmaRegion> {
    map_dma(container, memory.as_ptr() as u64, iova, memory.len() as u64)?;
    // SAFETY: the kernel just mapped every byte of `memory` for the
    // container's devices at `iova + offset`, and `unmap` removes that
    // mapping when the region drops, before the memory is released.
    Ok(unsafe { DmaRegion::contiguous(memory, iova, Some(unmap())) })
}

/// VFIO_IOMMU_UNMAP_DMA for a range mapped by [`map_dma`].
pub(crate) fn unmap_dma(container: BorrowedFd<'_>, iova: u64, size: u64) -> io::Result<()> {
    let mut unmap = vfio_iommu_type1_dma_unmap {
        argsz: size_of::<vfio_iommu_type1_dma_unmap>() as u32,
        flags: 0,
        iova,
        size,
        data: Default::default(),
    };
    // SAFETY: the kernel reads `unmap` and writes back the unmapped size into
    // it; no dirty-bitmap flag is set, so it touches nothing past `argsz`.
    check(unsafe {
        libc::ioctl(
            container.as_raw_fd(),
            nr::IOMMU_UNMAP_DMA as libc::Ioctl,
            &mut unmap as *mut vfio_iommu_type1_dma_unmap,
        )
    })?;
    Ok(())
}

/// The soft RLIMIT_MEMLOCK in bytes, `None` when unlimited.
pub(crate) fn memlock_limit() -> io::Result<Option<u64>> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `struct rlimit` into the live local.
    check(unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) })?;
    Ok((lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur))
}

/// A shared read/write mapping of `len` bytes of `fd` at `offset`.
pub(crate) fn mmap_shared(fd: BorrowedFd<'_>, len: usize, offset: u64) -> io::Result<NonNull<u8>> {
    let offset = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::other(format!("region offset {offset:#x} is out of range")))?;
    // SAFETY: a fresh shared mapping chosen by the kernel (null hint) cannot
    // overlap any existing Rust object; the result is checked below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            offset,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned a null pointer"))
}

/// Undo [`mmap_shared`].
///
/// # Safety
/// `ptr`/`len` must be exactly a mapping returned by [`mmap_shared`] that is
/// not used afterwards.
pub(crate) unsafe fn munmap(ptr: NonNull<u8>, len: usize) {
    // SAFETY: the caller guarantees this is a mapping of ours that nothing
    // touches afterwards. A failure leaves a mapping behind, nothing unsound.
    unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
}

/// A shared mapping of one BAR and its 32-bit register accesses (NVMe 2.0
/// §3.1: the controller registers are accessed as naturally aligned dwords).
///
/// The BAR is reached only through volatile accesses on raw pointers: the
/// device changes its registers behind the compiler's back, so no Rust
/// reference ever points into it. Offsets outside the BAR (or not 4-byte
/// aligned) never touch memory: reads return all-ones, the value a PCI read
/// of a missing device returns, and writes are dropped.
pub(crate) struct Bar {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by this object and only ever accessed with
// volatile 32-bit loads and stores, which are atomic on the PCI bus; any
// thread may issue them (the device serialises register accesses itself).
unsafe impl Send for Bar {}
// SAFETY: as above; `&Bar` only allows volatile register accesses, which need
// no synchronisation between threads.
unsafe impl Sync for Bar {}

impl Bar {
    /// Map `len` bytes of `fd` starting at `offset` (a VFIO region offset, or
    /// 0 for a sysfs `resourceN` file).
    pub(crate) fn map(fd: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<Bar> {
        if len == 0 {
            return Err(io::Error::other("the BAR has zero length"));
        }
        let ptr = mmap_shared(fd, len, offset)?;
        Ok(Bar { ptr, len })
    }

    /// Length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The register at `offset`, when it lies wholly inside the BAR and is
    /// dword aligned.
    #[inline]
    fn reg(&self, offset: usize) -> Option<*mut u32> {
        if !offset.is_multiple_of(4) || offset > self.len.checked_sub(4)? {
            return None;
        }
        // `wrapping_add` keeps this safe code; the bounds check above makes
        // the result an in-bounds pointer into the mapping.
        Some(self.ptr.as_ptr().wrapping_add(offset).cast::<u32>())
    }

    /// Volatile 32-bit read; all-ones for an offset outside the BAR.
    #[inline]
    pub(crate) fn read32(&self, offset: usize) -> u32 {
        match self.reg(offset) {
            // SAFETY: `reg` checked that the dword lies inside the live
            // mapping and is 4-byte aligned (the mapping is page aligned).
            Some(p) => unsafe { p.read_volatile() },
            None => u32::MAX,
        }
    }

    /// Volatile 32-bit write; dropped for an offset outside the BAR.
    #[inline]
    pub(crate) fn write32(&self, offset: usize, value: u32) {
        if let Some(p) = self.reg(offset) {
            // SAFETY: as in `read32`; a device register write through a
            // shared mapping does not alias any Rust object.
            unsafe { p.write_volatile(value) }
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` came from `mmap_shared` in `map`, and the
        // mapping is not used after drop.
        unsafe { munmap(self.ptr, self.len) };
    }
}

impl std::fmt::Debug for Bar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bar")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}

/// `memory` as a region addressed by physical address, one IOVA-contiguous
/// chunk per hugepage: what a device sees without an IOMMU (VFIO no-IOMMU,
/// uio). Hugepages are contiguous inside; two of them usually are not, so
/// each gets its own address. Ordinary pages are refused: they can move, so
/// their physical address is no promise.
pub fn physical_region(memory: HostMemory, device: &str) -> Result<DmaRegion, DmaError> {
    let len = memory.len();
    let err = |reason: &str| DmaError::DeviceMap {
        device: device.to_string(),
        len,
        reason: reason.to_string(),
    };
    if !memory.is_hugepage() {
        return Err(err(
            "ordinary memory can move and cannot be used for DMA by a real device; reserve hugepages with `sudo scripts/setup.sh`",
        ));
    }
    let phys = memory.physical_addresses()?;
    let shift = memory.page_size().shift();
    // SAFETY: without an IOMMU a device addresses host memory by its
    // physical address; `phys` holds that of every hugepage (from pagemap,
    // checked present and non-zero), and hugepages are pinned: they keep
    // these addresses until the memory is released.
    let region = unsafe { DmaRegion::new(memory, shift, phys, None) };
    region.ok_or_else(|| err("the physical address table does not cover the memory"))
}

/// The processor's time-stamp counter (x86_64): a cheap clock for per-I/O
/// latency, invariant on every CPU this engine targets; calibrate it
/// against [`std::time::Instant`] before converting ticks to time.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn tsc() -> u64 {
    // SAFETY: RDTSC has no memory effects and is available on every x86_64
    // CPU; user-space access is only disabled by CR4.TSD, which Linux leaves clear.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    #[test]
    fn memlock_limit_is_readable() {
        // Either unlimited or a concrete number; the call itself must work.
        let lim = memlock_limit().unwrap();
        if let Some(bytes) = lim {
            assert_eq!(bytes % 1024, 0, "limits are set in KiB");
        }
    }

    #[test]
    fn vfio_ioctls_on_a_non_vfio_file_fail_cleanly() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let e = group_status(f.as_fd()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTTY));
        assert!(api_version(f.as_fd()).is_err());
        assert!(device_reset(f.as_fd()).is_err());
    }

    fn file_bar(len: usize) -> (std::fs::File, Bar) {
        let path =
            std::env::temp_dir().join(format!("nvme-engine-bar-{}-{len}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let mut bytes = vec![0u8; len];
        bytes[8..12].copy_from_slice(&0x0001_0400u32.to_le_bytes());
        f.write_all(&bytes).unwrap();
        std::fs::remove_file(&path).unwrap();
        let bar = Bar::map(f.as_fd(), 0, len).unwrap();
        (f, bar)
    }

    #[test]
    fn registers_read_and_write_through_the_mapping() {
        let (f, bar) = file_bar(8192);
        assert_eq!(bar.read32(8), 0x0001_0400);
        bar.write32(0x1000, 0xdead_beef);
        assert_eq!(bar.read32(0x1000), 0xdead_beef);
        // The write reached the file, so it went through the shared mapping.
        use std::os::unix::fs::FileExt;
        let mut back = [0u8; 4];
        f.read_at(&mut back, 0x1000).unwrap();
        assert_eq!(u32::from_le_bytes(back), 0xdead_beef);
    }

    #[test]
    fn out_of_bounds_and_misaligned_offsets_never_touch_memory() {
        let (_f, bar) = file_bar(4096);
        assert_eq!(bar.read32(4092), 0);
        for off in [4093, 4094, 4096, 1 << 20, usize::MAX - 2, usize::MAX, 2] {
            assert_eq!(bar.read32(off), u32::MAX, "offset {off}");
            bar.write32(off, 7);
        }
        assert_eq!(bar.read32(0), 0, "a misaligned write must not land");
    }
}
