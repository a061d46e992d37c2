//! Host memory as the TCP transport sees it: a command's data buffer (a raw
//! host address and length whose owner promised to leave it alone until the
//! command completes) and the DMA pools TCP queues take buffers from. The
//! only module of the TCP transport with `unsafe`: every access is
//! bounds-checked here, and each way of making a [`DataBuf`] argues its
//! aliasing promise here:
//! - `DataBuf::of`: from a [`DataRef`], which only the queue pair makes,
//!   from a buffer it holds until the transport reports the command done;
//! - `lend`: a borrowed slice for one blocking exchange, taken back from
//!   the connection (by failing it) if the command is still in flight when
//!   the exchange returns.

use crate::dma::{DmaError, DmaPool, DmaRegion, HostMemory, PageSize};
use crate::driver::transport::DataRef;

use super::conn::Connection;

/// A command's data buffer (host memory; TCP copies to and from it).
#[derive(Debug)]
pub struct DataBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a DataBuf is the exclusive right to the bytes it names while its
// command is in flight (see the constructors); moving a connection, and with
// it that right, to another thread is what a queue pair created on one
// thread and driven on another does. DataBuf is not `Sync` and not `Clone`.
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

    /// A buffer over `v` for unit tests, which keep `v` alive and untouched
    /// until the command's completion has been polled.
    #[cfg(test)]
    pub(crate) fn for_test(v: &mut [u8]) -> Self {
        DataBuf {
            ptr: v.as_mut_ptr(),
            len: v.len(),
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

    fn start(&self) -> *mut u8 {
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
        // SAFETY: in bounds (checked above); the constructors give this
        // connection exclusive use of the memory while the command is in
        // flight, and the borrow lives no longer than `&self`.
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

/// Lend `b` to `conn` for one exchange: `f` gets a [`DataBuf`] over it to
/// submit. When `f` returns, a command still holding the buffer (it timed
/// out, or `f` returned early) is taken back by failing the connection,
/// which drops every buffer it holds: nothing writes `b` after this
/// returns. `f` must hand the DataBuf only to `conn` (crate-internal use:
/// the blocking bring-up and admin commands).
pub(crate) fn lend<R>(
    conn: &mut Connection,
    b: Option<&mut [u8]>,
    f: impl FnOnce(&mut Connection, Option<DataBuf>) -> R,
) -> R {
    let lent = b.map(|b| DataBuf {
        ptr: b.as_mut_ptr(),
        len: b.len(),
    });
    let start = lent.as_ref().map(DataBuf::start);
    let r = f(conn, lent);
    if let Some(p) = start
        && conn.holds(p)
    {
        conn.fail("a command outlived the exchange that lent its buffer".into());
    }
    r
}

/// Whether `buf` starts at `p`.
pub(crate) fn starts_at(buf: &DataBuf, p: *mut u8) -> bool {
    buf.start() == p
}

/// A pool of `bytes` for the buffers of TCP queues: 2 MiB hugepages when
/// reserved, ordinary memory otherwise. No device reaches it: the
/// connection copies to and from it by virtual address.
pub fn host_pool(bytes: usize) -> Result<DmaPool, DmaError> {
    let memory = match HostMemory::hugepages(bytes, PageSize::Huge2M) {
        Ok(m) => m,
        Err(DmaError::HugepagesMissing { .. }) => {
            crate::dma::check_memory(bytes as u64, "NVMe/TCP buffer pool")?;
            HostMemory::plain(bytes)?
        }
        Err(e) => return Err(e),
    };
    let va = memory.as_ptr() as u64;
    // SAFETY: no device is given these buffers: the TCP transport copies to
    // and from them through their virtual address, which is what the
    // "IOVA" is set to (keeping alignment checks true), and `memory` lives
    // as long as the region.
    Ok(DmaPool::new(unsafe {
        DmaRegion::contiguous(memory, va, None)
    }))
}
