//! A command's data buffer as the connection sees it: a raw host address
//! and length that the submitter promised to leave alone until the command
//! completes. The only module of the TCP transport with `unsafe`: every
//! access is bounds-checked here and the aliasing promise is made once, at
//! [`DataBuf::new`].

/// A command's data buffer (host memory; TCP copies to and from it).
#[derive(Debug)]
pub struct DataBuf {
    ptr: *mut u8,
    len: usize,
}

impl DataBuf {
    /// Describe `len` bytes at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr..ptr+len` is valid for reads and writes, and nothing else reads
    /// or writes it, until the connection has returned the command's
    /// completion (or has been dropped).
    pub unsafe fn new(ptr: *mut u8, len: usize) -> Self {
        DataBuf { ptr, len }
    }

    /// Bytes in the buffer.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `len` bytes at `offset`, read-only; `None` when out of bounds.
    pub fn slice(&self, offset: usize, len: usize) -> Option<&[u8]> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        // SAFETY: in bounds (checked above); `new`'s contract gives this
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
        // SAFETY: in bounds (checked above); exclusive per `new`'s contract,
        // and `&mut self` keeps this the only slice handed out.
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr.add(offset), len) })
    }
}
