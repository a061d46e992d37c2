//! One NVMe/TCP I/O queue as the driver's command transport
//! ([`crate::driver::transport`]): a [`QueuePair`] over [`TcpTransport`]
//! has the same [`crate::Namespace`] checks, [`crate::IoCompletion`]s,
//! errors, deadlines, retries, synchronous helpers and exactly-once
//! teardown as a PCIe queue pair.
//!
//! - `send` queues a command capsule on the queue's [`Connection`] with the
//!   tag as CID (in-capsule data for small writes, a transport SGL
//!   otherwise); `flush` writes what the socket takes.
//! - `begin_reap` sends and receives without blocking (R2T answered with
//!   H2CData, C2HData placed in the command's buffer); `next_completion`
//!   hands out the responses.
//! - A failed connection completes every command it held once, with a
//!   transport error (`ECONNRESET`; a data digest mismatch `EBADMSG`, a
//!   short transfer `EIO`), then `begin_reap` reports the change and
//!   `recover` picks up the queue's new connection, made by the
//!   association's thread once the association is back (see
//!   [`super::assoc`]; the polling thread never waits on the network);
//!   commands submitted meanwhile wait in the queue pair and are sent after
//!   the reconnection.
//! - A command past its deadline is aborted as on PCIe: `cancel` posts an
//!   Abort (SQID, CID) to the association's thread, which sends it on the
//!   admin queue; a controller that honours it answers the command on this
//!   connection (Command Abort Requested) and it completes once, timed
//!   out, with nothing reconnected. When the Abort fails or the command is
//!   still in flight a grace period later, the queue pair's last resort,
//!   `reset`, fails the connection and with it the association (what the
//!   Linux host does on a timeout): the command completes once, timed out.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use crate::dma::DmaBuf;
use crate::driver::QueuePair;
use crate::driver::transport::{
    CancelRequest, Closed, CommandOutcome, CommandTransport, DataDirection, DataRef, Reap,
    Recovery, SubmitRefusal, TransportCompletion, TransportFailure,
};
use crate::driver::{DeviceGone, IoError, LbaRange, QueuePairStats, SubmitErrorKind};
use crate::spec::command::Command;

use super::assoc::{Association, Quick};
use super::buf::DataBuf;
use super::conn::{self, Connection, Direction, TcpFailure, TcpOutcome};

/// A queue pair over NVMe/TCP.
pub type TcpQueue = QueuePair<TcpTransport>;

/// Bytes of one Dataset Management range list (256 ranges of 16 bytes).
const RANGE_LIST_BYTES: usize = 4096;

/// Counters of one TCP queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpQueueStats {
    /// Times the queue's connection failed.
    pub connection_failures: u64,
    /// Times the queue connected again after a failure.
    pub reconnects: u64,
    /// Attempts to connect it again that failed.
    pub failed_reconnects: u64,
    /// Commands held while the queue was disconnected (sent after the
    /// reconnection).
    pub held: u64,
}

/// One NVMe/TCP I/O queue as the driver's command transport (a
/// [`TcpQueue`] is a queue pair over it): commands leave as capsules on the
/// queue's connection, completions come from its response PDUs, and a lost
/// connection fails every command in flight exactly once.
pub struct TcpTransport {
    assoc: Arc<Association>,
    conn: Connection,
    generation: u64,
    qid: u16,
    depth: u16,
    max_transfer: usize,
    /// Set once the association failed for good.
    gone: bool,
    /// Commands the queue pair holds as sent (on the connection, or held
    /// while it is down) and this transport has not completed.
    outstanding: usize,
    ranges: Vec<u8>,
    close_timeout: Duration,
    stats: TcpQueueStats,
}

impl std::fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport")
            .field("qid", &self.qid)
            .field("peer", &self.conn.peer())
            .field("generation", &self.generation)
            .field("stats", &self.stats)
            .finish()
    }
}

impl TcpTransport {
    pub(super) fn new(
        assoc: Arc<Association>,
        conn: Connection,
        generation: u64,
        qid: u16,
        depth: u16,
        close_timeout: Duration,
    ) -> Self {
        TcpTransport {
            max_transfer: conn.max_transfer() as usize,
            assoc,
            conn,
            generation,
            qid,
            depth,
            gone: false,
            outstanding: 0,
            ranges: Vec::new(),
            close_timeout,
            stats: TcpQueueStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &TcpQueueStats {
        &self.stats
    }

    /// The queue's connection (digests, limits, why it failed).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn connected(&self) -> bool {
        self.conn.failure().is_none()
    }

    fn submit(&mut self, cmd: &Command, data: Option<DataRef>) -> Result<(), SubmitRefusal> {
        if self.outstanding >= self.depth as usize {
            return Err(SubmitRefusal::Full);
        }
        if !self.connected() {
            // Held by the queue pair; `recover` sends it after reconnecting.
            self.stats.held += 1;
            self.outstanding += 1;
            return Ok(());
        }
        let data = data.map(|d| {
            let dir = match d.direction() {
                DataDirection::ToDevice => Direction::ToController,
                DataDirection::FromDevice => Direction::FromController,
            };
            (DataBuf::of(&d), dir)
        });
        match self.conn.submit(cmd, data, cmd.cid()) {
            Ok(()) => {}
            Err(conn::SubmitRefusal::Full) => return Err(SubmitRefusal::Full),
            Err(conn::SubmitRefusal::BadData(why)) => return Err(SubmitRefusal::BadData(why)),
            Err(conn::SubmitRefusal::Gone) => self.stats.held += 1,
        }
        self.outstanding += 1;
        Ok(())
    }

    /// Fail the connection (every command it holds completes once) and end
    /// the association it belongs to.
    fn fail(&mut self, why: &str) {
        if self.connected() {
            self.conn.fail(why.to_string());
        }
        self.assoc.report_failure(self.generation, why);
    }

    /// Follow the association after this queue's connection failed,
    /// without blocking: the association's thread re-establishes it and
    /// makes this queue's new connection, which is picked up here.
    #[cold]
    fn reconnect(&mut self) -> Recovery {
        if self.gone {
            self.outstanding = 0;
            return Recovery::FailAll(IoError::Gone(DeviceGone::Failed));
        }
        match self.assoc.quick_standing() {
            Quick::Failed => {
                // The queue pair fails everything it holds.
                self.gone = true;
                self.outstanding = 0;
                Recovery::FailAll(IoError::Gone(DeviceGone::Failed))
            }
            Quick::Reconnecting => Recovery::Wait,
            Quick::Live(g) if g == self.generation => {
                // Only this connection failed: end the association, as the
                // Linux host does; its thread re-establishes it.
                let why = self
                    .conn
                    .failure()
                    .unwrap_or("connection failed")
                    .to_string();
                self.assoc.report_failure(g, &why);
                Recovery::Wait
            }
            Quick::Live(g) => match self.assoc.poll_io_queue(g, self.qid, self.depth) {
                None => Recovery::Wait,
                Some(Ok(conn)) => {
                    self.conn = conn;
                    self.generation = g;
                    self.stats.reconnects += 1;
                    // The queue pair resends what it holds (or fails it).
                    self.outstanding = 0;
                    Recovery::Recreated
                }
                Some(Err(e)) => {
                    self.stats.failed_reconnects += 1;
                    self.assoc
                        .report_failure(g, &format!("I/O queue {}: {e}", self.qid));
                    Recovery::Wait
                }
            },
        }
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.assoc.forget_io_queue(self.qid);
        self.assoc.release_qid(self.qid);
    }
}

fn outcome(o: TcpOutcome) -> CommandOutcome {
    match o {
        TcpOutcome::Completed { dw0, status, .. } => CommandOutcome::Completed { dw0, status },
        TcpOutcome::Failed(f) => CommandOutcome::Failed(TransportFailure::Errno(match f {
            TcpFailure::ConnectionLost => libc::ECONNRESET,
            TcpFailure::DataDigest => libc::EBADMSG,
            TcpFailure::ShortTransfer => libc::EIO,
        })),
    }
}

impl CommandTransport for TcpTransport {
    type Data = DataRef;

    fn capacity(&self) -> usize {
        self.depth as usize
    }
    fn queue_id(&self) -> u16 {
        self.qid
    }
    fn max_transfer(&self) -> usize {
        self.max_transfer
    }
    fn admin_timeout(&self) -> Duration {
        self.assoc.session().command_timeout
    }

    #[inline]
    fn admit(&mut self, stats: &mut QueuePairStats) -> Result<(), SubmitErrorKind> {
        if self.gone {
            return Err(SubmitErrorKind::Gone(DeviceGone::Failed));
        }
        if self.outstanding >= self.depth as usize {
            stats.queue_full += 1;
            return Err(SubmitErrorKind::QueueFull {
                capacity: self.depth as usize,
            });
        }
        Ok(())
    }

    #[inline]
    fn map_data(
        &mut self,
        _slot: usize,
        buf: &DmaBuf,
        direction: DataDirection,
    ) -> Result<DataRef, SubmitErrorKind> {
        let data = DataRef::of(buf, direction);
        if data.len() as usize > self.max_transfer {
            return Err(SubmitErrorKind::TooLarge {
                len: data.len() as usize,
                max: self.max_transfer,
            });
        }
        Ok(data)
    }

    fn map_ranges(&mut self, slot: usize, ranges: &[LbaRange]) -> Result<DataRef, SubmitErrorKind> {
        if self.ranges.is_empty() {
            // Sized once for every slot, so it never moves while a
            // connection holds a list.
            self.ranges = vec![0; self.depth as usize * RANGE_LIST_BYTES];
        }
        let base = slot * RANGE_LIST_BYTES;
        let Some(page) = self.ranges.get_mut(base..base + RANGE_LIST_BYTES) else {
            return Err(SubmitErrorKind::InvalidCommand(
                "no range-list page for this slot",
            ));
        };
        for (i, r) in ranges.iter().enumerate().take(RANGE_LIST_BYTES / 16) {
            page[i * 16..i * 16 + 16].copy_from_slice(zerocopy::IntoBytes::as_bytes(&r.to_dsm()));
        }
        let addr = page.as_mut_ptr();
        Ok(DataRef {
            addr,
            iova: addr as u64,
            len: (ranges.len().min(RANGE_LIST_BYTES / 16) * 16) as u32,
            direction: DataDirection::ToDevice,
        })
    }

    #[inline]
    fn prps(_data: &DataRef) -> (u64, u64) {
        // The connection puts an SGL descriptor in DPTR.
        (0, 0)
    }

    #[inline]
    fn send(
        &mut self,
        cmd: &Command,
        data: Option<DataRef>,
        _stats: &mut QueuePairStats,
    ) -> Result<(), SubmitRefusal> {
        self.submit(cmd, data)
    }

    fn resend(
        &mut self,
        cmd: &Command,
        data: Option<DataRef>,
        _stats: &mut QueuePairStats,
    ) -> bool {
        self.submit(cmd, data).is_ok()
    }

    #[inline]
    fn flush(&mut self, _stats: &mut QueuePairStats) {
        // A failure shows at the next reap.
        let _ = self.conn.flush();
    }

    #[inline]
    fn begin_reap(&mut self, _stats: &mut QueuePairStats) -> Reap {
        if self.assoc.generation() != self.generation && self.connected() {
            self.stats.connection_failures += 1;
            self.conn
                .fail("the association was reset (another queue or the admin queue failed)".into());
        }
        self.conn.progress(self.depth as usize);
        if !self.connected() && !self.conn.has_done() {
            return Reap::Changed(self.generation);
        }
        Reap::Ready
    }

    #[inline]
    fn next_completion(&mut self, _stats: &mut QueuePairStats) -> Option<TransportCompletion> {
        let c = self.conn.next_done()?;
        self.outstanding = self.outstanding.saturating_sub(1);
        Some(TransportCompletion {
            tag: c.cid,
            outcome: outcome(c.outcome),
        })
    }

    #[inline]
    fn end_reap(&mut self, _consumed: usize, _stats: &mut QueuePairStats) {}

    fn recover(&mut self, _state: u64, _stats: &mut QueuePairStats) -> Recovery {
        self.reconnect()
    }

    fn live(&self) -> Option<u64> {
        self.connected().then_some(self.generation)
    }
    fn stalled(&mut self) -> bool {
        // Deadlines catch a stalled target; a quiet connection is no sign.
        false
    }

    /// Posts an Abort of the command to the association's thread, which
    /// sends it on the admin queue; the polling thread never waits for it.
    /// `Failed` when more aborts wait than the mailbox holds: the queue
    /// pair then ends the association.
    fn cancel(&mut self, tag: u16) -> CancelRequest {
        if !self.connected() {
            // The failed connection completed it already.
            return CancelRequest::NotInFlight;
        }
        if self.assoc.post_abort(self.generation, self.qid, tag) {
            CancelRequest::Sent
        } else {
            CancelRequest::Failed
        }
    }

    fn reset(&mut self, state: u64) {
        if state == self.generation && self.connected() {
            self.stats.connection_failures += 1;
            self.fail("commands passed their deadline; reconnecting");
        }
    }

    fn dma_unproven(&self) -> bool {
        // A failed connection has dropped every buffer it held.
        false
    }
    fn quarantine(&self) {}

    fn close_begin(&mut self) {}
    fn close_wait(&self) -> Option<Duration> {
        self.connected().then_some(self.close_timeout)
    }
    fn close_idle(&mut self) {
        std::thread::yield_now();
    }
    fn close(&mut self) -> Closed {
        // Closing the socket drops every buffer the connection held: no
        // byte is written into them afterwards.
        if self.connected() {
            self.conn
                .fail("the queue was deleted with commands in flight".into());
        }
        Closed {
            result: Ok(()),
            leftover: IoError::Transport {
                errno: libc::ECONNABORTED,
            },
            quarantine: false,
        }
    }
}
