//! A mapped PCI BAR and its 32-bit register accesses (NVMe 2.0 §3.1: the
//! controller registers are accessed as naturally aligned dwords).
//!
//! The BAR is reached only through volatile accesses on raw pointers: the
//! device changes its registers behind the compiler's back, so no Rust
//! reference ever points into it. Offsets outside the BAR (or not 4-byte
//! aligned) never touch memory: reads return all-ones, the value a PCI read
//! of a missing device returns, and writes are dropped.

use std::io;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;

use super::sys;

/// A shared mapping of one BAR.
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
        let ptr = sys::mmap_shared(fd, len, offset)?;
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
        unsafe { sys::munmap(self.ptr, self.len) };
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

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
