//! Synchronous conveniences on an I/O queue pair: submit one command, ring
//! the doorbell and poll until it completes, for programs that do not need a
//! queue depth above one. The helpers run the queue pair's timeout scan
//! while they wait, so a lost completion ends in [`IoError::TimedOut`] with
//! the buffer once the command was aborted (or the controller reset).
//! The twins of the requests with metadata, protection information,
//! segments, Compare, Verify, Write Uncorrectable and fused Compare and
//! Write are in `sync_ext.rs`.

#![forbid(unsafe_code)]

use std::time::Instant;

use crate::dma::DmaBuf;
use crate::spec::command::Command;

use crate::driver::error::{IoError, SubmitError, SubmitErrorKind, SyncError};
use crate::driver::namespace::{LbaRange, Namespace};
use crate::driver::qpair::{IoCompletion, QueuePair};
use crate::driver::request::IoData;
use crate::driver::transport::CommandTransport;

/// The token synchronous helpers use for their own command (and, less one,
/// for the first of a fused pair).
pub(super) const SYNC_TOKEN: u64 = u64::MAX;

impl<T: CommandTransport> QueuePair<T> {
    /// Poll until `count` commands complete, handing each to `done`
    /// (bounded by `ControllerOptions::io_timeout`: the commands' own
    /// deadlines end the wait through abort or reset; `Err(TimedOut)` only
    /// when a controller hangs the abort and the reset too, and then the
    /// commands not reaped keep their buffers, which the device may still
    /// write).
    pub(super) fn wait_sync(
        &mut self,
        count: usize,
        mut done: impl FnMut(IoCompletion),
    ) -> Result<(), IoError> {
        let timeout = self.timeout();
        let limit = timeout
            .saturating_mul(2)
            .saturating_add(self.admin_timeout().saturating_mul(4));
        let start = Instant::now();
        let mut left = count;
        let mut spins = 0u32;
        loop {
            self.process_completions(left, |c| {
                left -= 1;
                done(c);
            });
            if left == 0 {
                return Ok(());
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) {
                let now = Instant::now();
                self.check_timeouts(now);
                if now.saturating_duration_since(start) > limit {
                    return Err(IoError::TimedOut(timeout));
                }
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// Submit `data` through `submit` with a private token and poll until
    /// that command completes; returns completion DW0 and every buffer.
    /// Refuses with [`IoError::Busy`] when other commands are in flight.
    pub(super) fn run_sync_data(
        &mut self,
        data: IoData,
        submit: impl FnOnce(&mut Self, IoData, u64) -> Result<(), SubmitError>,
    ) -> Result<(u32, IoData), SyncError> {
        if self.outstanding() > 0 {
            return Err(SyncError {
                error: IoError::Busy(self.outstanding()),
                buf: data.buf,
                extra: data.extra,
            });
        }
        submit(self, data, SYNC_TOKEN).map_err(|e| SyncError {
            error: IoError::Rejected(e.kind),
            buf: e.buf,
            extra: e.extra,
        })?;
        let mut done = None;
        self.wait_sync(1, |c| done = Some(c))
            .map_err(|e| SyncError::new(e, None))?;
        let Some(c) = done else {
            // wait_sync returns Ok only once the command completed.
            return Err(SyncError::new(IoError::Busy(0), None));
        };
        let back = IoData {
            buf: c.buf,
            extra: c.extra,
        };
        match c.result {
            Ok(dw0) => Ok((dw0, back)),
            Err(error) => Err(SyncError {
                error,
                buf: back.buf,
                extra: back.extra,
            }),
        }
    }

    /// [`Self::run_sync_data`] for a command with at most one buffer.
    fn run_sync(
        &mut self,
        buf: Option<DmaBuf>,
        submit: impl FnOnce(&mut Self, Option<DmaBuf>, u64) -> Result<(), SubmitError>,
    ) -> Result<(u32, Option<DmaBuf>), SyncError> {
        let data = IoData { buf, extra: None };
        self.run_sync_data(data, |q, d, t| submit(q, d.buf, t))
            .map(|(dw0, d)| (dw0, d.buf))
    }

    /// Read `buf.len()` bytes at `lba` and wait for it.
    pub fn read_sync(
        &mut self,
        ns: &Namespace,
        lba: u64,
        buf: DmaBuf,
    ) -> Result<DmaBuf, SyncError> {
        self.run_sync(Some(buf), |q, b, t| match b {
            Some(b) => q.read(ns, lba, b, t),
            None => Err(SubmitError::new(SubmitErrorKind::ZeroLength, None)),
        })
        .and_then(|(_, b)| b.ok_or(SyncError::new(IoError::Busy(0), None)))
    }

    /// Write `buf` at `lba` and wait for it.
    pub fn write_sync(
        &mut self,
        ns: &Namespace,
        lba: u64,
        buf: DmaBuf,
        fua: bool,
    ) -> Result<DmaBuf, SyncError> {
        self.run_sync(Some(buf), |q, b, t| match b {
            Some(b) => q.write(ns, lba, b, fua, t),
            None => Err(SubmitError::new(SubmitErrorKind::ZeroLength, None)),
        })
        .and_then(|(_, b)| b.ok_or(SyncError::new(IoError::Busy(0), None)))
    }

    /// Flush and wait for it.
    pub fn flush_sync(&mut self, ns: &Namespace) -> Result<(), SyncError> {
        self.run_sync(None, |q, _, t| q.flush(ns, t)).map(|_| ())
    }

    /// Write Zeroes and wait for it.
    pub fn write_zeroes_sync(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        deallocate: bool,
    ) -> Result<(), SyncError> {
        self.run_sync(None, |q, _, t| {
            q.write_zeroes(ns, lba, blocks, deallocate, t)
        })
        .map(|_| ())
    }

    /// Deallocate `ranges` and wait for it.
    pub fn deallocate_sync(
        &mut self,
        ns: &Namespace,
        ranges: &[LbaRange],
    ) -> Result<(), SyncError> {
        self.run_sync(None, |q, _, t| q.deallocate(ns, ranges, t))
            .map(|_| ())
    }

    /// Submit a raw command and wait for it; returns completion DW0 and the buffer.
    pub fn raw_sync(
        &mut self,
        cmd: Command,
        buf: Option<DmaBuf>,
    ) -> Result<(u32, Option<DmaBuf>), SyncError> {
        self.run_sync(buf, |q, b, t| q.submit_raw(cmd, b, t))
    }
}
