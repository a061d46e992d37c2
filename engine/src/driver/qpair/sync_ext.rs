//! Synchronous twins of the requests in `extended.rs` (NVM Command Set 1.0
//! §3.2: Read and Write with metadata, protection information or several
//! segments, Compare, Verify, Write Uncorrectable; NVMe Base 2.0 §3.4.2 the
//! fused Compare and Write): submit, ring the doorbell and poll until done,
//! like the helpers in `sync.rs`, with every buffer handed back.
//!
//! Each refuses with [`IoError::Busy`] when other commands are in flight
//! (their completions would be consumed here), and a refusal before
//! submission comes back as [`IoError::Rejected`] with the buffers.

#![forbid(unsafe_code)]

use crate::dma::DmaBuf;

use crate::driver::error::{FusedSyncError, IoError, SyncError};
use crate::driver::namespace::Namespace;
use crate::driver::qpair::QueuePair;
use crate::driver::request::{IoData, IoOptions};
use crate::driver::transport::CommandTransport;

use super::sync::SYNC_TOKEN;

impl<T: CommandTransport> QueuePair<T> {
    /// [`Self::read_ext`] and wait for it: the data (and metadata) read
    /// come back in the returned [`IoData`] — [`IoData::buf`] or
    /// [`IoData::segments`], [`IoData::meta`] or [`IoData::meta_segments`].
    pub fn read_ext_sync(
        &mut self,
        ns: &Namespace,
        lba: u64,
        data: IoData,
        opts: &IoOptions,
    ) -> Result<IoData, SyncError> {
        self.run_sync_data(data, |q, d, t| q.read_ext(ns, lba, d, opts, t))
            .map(|(_, d)| d)
    }

    /// [`Self::write_ext`] and wait for it; the buffers come back.
    pub fn write_ext_sync(
        &mut self,
        ns: &Namespace,
        lba: u64,
        data: IoData,
        opts: &IoOptions,
    ) -> Result<IoData, SyncError> {
        self.run_sync_data(data, |q, d, t| q.write_ext(ns, lba, d, opts, t))
            .map(|(_, d)| d)
    }

    /// Read into `segments`, in order, as one command (an SGL where the
    /// controller has them, else PRPs where the segments allow) and wait
    /// for it.
    pub fn read_vectored_sync(
        &mut self,
        ns: &Namespace,
        lba: u64,
        segments: Vec<DmaBuf>,
    ) -> Result<Vec<DmaBuf>, SyncError> {
        let opts = IoOptions::default();
        self.read_ext_sync(ns, lba, IoData::vectored(segments), &opts)
            .map(take_segments)
    }

    /// Write `segments`, in order, as one command and wait for it.
    pub fn write_vectored_sync(
        &mut self,
        ns: &Namespace,
        lba: u64,
        segments: Vec<DmaBuf>,
        fua: bool,
    ) -> Result<Vec<DmaBuf>, SyncError> {
        let opts = IoOptions::default().fua(fua);
        self.write_ext_sync(ns, lba, IoData::vectored(segments), &opts)
            .map(take_segments)
    }

    /// [`Self::compare`] and wait for it. A mismatch is an error:
    /// [`IoError::Status`] with Compare Failure (SCT 2h, SC 85h).
    pub fn compare_sync(
        &mut self,
        ns: &Namespace,
        lba: u64,
        data: IoData,
        opts: &IoOptions,
    ) -> Result<IoData, SyncError> {
        self.run_sync_data(data, |q, d, t| q.compare(ns, lba, d, opts, t))
            .map(|(_, d)| d)
    }

    /// [`Self::verify`] and wait for it.
    pub fn verify_sync(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        opts: &IoOptions,
    ) -> Result<(), SyncError> {
        self.run_sync_data(IoData::none(), |q, _, t| q.verify(ns, lba, blocks, opts, t))
            .map(|_| ())
    }

    /// [`Self::write_uncorrectable`] and wait for it.
    pub fn write_uncorrectable_sync(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
    ) -> Result<(), SyncError> {
        self.run_sync_data(IoData::none(), |q, _, t| {
            q.write_uncorrectable(ns, lba, blocks, t)
        })
        .map(|_| ())
    }

    /// [`Self::compare_and_write`] and wait for both halves: `Ok` with the
    /// compare and write buffers when the blocks matched and were written.
    /// On a mismatch [`FusedSyncError::miscompare`] is true (the Compare
    /// failed with Compare Failure, the Write with Command Aborted due to
    /// Failed Fused Command, and nothing was written); every buffer comes
    /// back in the error.
    // The error carries both halves' buffers; this is not a per-I/O path.
    #[allow(clippy::result_large_err)]
    pub fn compare_and_write_sync(
        &mut self,
        ns: &Namespace,
        lba: u64,
        compare: IoData,
        write: IoData,
        opts: &IoOptions,
    ) -> Result<(IoData, IoData), FusedSyncError> {
        let busy = self.outstanding();
        if busy > 0 {
            let e = |d: IoData| Err(sync_error(IoError::Busy(busy), d));
            return Err(FusedSyncError {
                compare: e(compare),
                write: e(write),
            });
        }
        let tokens = [SYNC_TOKEN - 1, SYNC_TOKEN];
        if let Err(r) = self.compare_and_write(ns, lba, compare, write, opts, tokens) {
            let e = |s: crate::SubmitError| {
                Err(SyncError {
                    error: IoError::Rejected(s.kind),
                    buf: s.buf,
                    extra: s.extra,
                })
            };
            return Err(FusedSyncError {
                compare: e(r.compare),
                write: e(r.write),
            });
        }
        let (mut c, mut w) = (None, None);
        let waited = self.wait_sync(2, |done| {
            if done.token == tokens[0] {
                c = Some(done);
            } else {
                w = Some(done);
            }
        });
        // A half not reaped (the wait gave up) keeps its buffers: the
        // device may still use them.
        let lost = waited.err().unwrap_or(IoError::TimedOut(self.timeout()));
        let half = |d: Option<crate::IoCompletion>| match d {
            Some(d) => {
                let back = IoData {
                    buf: d.buf,
                    extra: d.extra,
                };
                match d.result {
                    Ok(_) => Ok(back),
                    Err(e) => Err(sync_error(e, back)),
                }
            }
            None => Err(SyncError::new(lost, None)),
        };
        match (half(c), half(w)) {
            (Ok(c), Ok(w)) => Ok((c, w)),
            (compare, write) => Err(FusedSyncError { compare, write }),
        }
    }
}

/// A synchronous failure handing back every buffer of `data`.
fn sync_error(error: IoError, data: IoData) -> SyncError {
    SyncError {
        error,
        buf: data.buf,
        extra: data.extra,
    }
}

/// The data segments handed back in `data`.
fn take_segments(data: IoData) -> Vec<DmaBuf> {
    data.extra.map(|e| e.segments).unwrap_or_default()
}
