//! Host memory as the TCP transport sees it: lending a caller's slice to
//! the connection for one blocking exchange, and the pools TCP queues take
//! buffers from. A command's data buffer is a [`DataBuf`], made and
//! bounds-checked by the DMA layer (`dma/view.rs`, which argues its
//! aliasing promise); this module keeps the promise `DataBuf::lent` relies
//! on: a lent buffer is taken back from the connection (by failing it) if
//! its command is still in flight when the exchange returns.

#![forbid(unsafe_code)]

pub use crate::dma::view::DataBuf;
use crate::dma::{DmaError, DmaPool, DmaRegion, HostMemory, PageSize};

use super::conn::Connection;

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
    let lent = b.map(DataBuf::lent);
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
/// connection copies to and from it by virtual address, which is what its
/// buffers give as their IOVA — so they are for TCP queues only (a PCIe
/// device given one would transfer to a meaningless address).
pub fn host_pool(bytes: usize) -> Result<DmaPool, DmaError> {
    let memory = match HostMemory::hugepages(bytes, PageSize::Huge2M) {
        Ok(m) => m,
        Err(DmaError::HugepagesMissing { .. }) => {
            crate::dma::check_memory(bytes as u64, "NVMe/TCP buffer pool")?;
            HostMemory::plain(bytes)?
        }
        Err(e) => return Err(e),
    };
    Ok(DmaPool::new(DmaRegion::host_only(memory)))
}
