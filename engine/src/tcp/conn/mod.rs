//! One NVMe/TCP connection = one queue of one controller, owned and polled
//! by one thread (NVMe/TCP Transport Specification §3.3–3.5): a
//! non-blocking socket with `TCP_NODELAY`, a send buffer written as far as
//! the socket takes it (partial writes resume on the next call), the
//! receive state machine of [`super::rx`] fed from the socket (C2HData read
//! straight into the command's buffer when nothing else is buffered), R2T
//! answered with H2CData from the command's buffer in PDUs of at most
//! MAXH2CDATA bytes, and SQ flow control from the SQHD of each response.
//! The tag of a command is its CID. When the connection fails every
//! command in flight completes with [`TcpFailure`]; none is lost.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

mod queue;

use queue::{Queue, Slot};

use super::buf::DataBuf;
use super::error::TcpError;
use super::fabrics;
use super::pdu::{self, DataHeader, Digests, Header, IcReq, IcResp, TermReq};
use super::rx::{RxError, RxMachine};
use crate::spec::{command::Command, status::Status};

/// Which way a command's data moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Host to controller (writes): in the capsule or on R2T.
    ToController,
    /// Controller to host (reads): C2HData.
    FromController,
}

/// Settings of one connection.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectionOptions {
    /// Header and data digests to ask for.
    pub digests: Digests,
    /// Commands in flight at once (Connect SQSIZE is this, 0's based, so
    /// the queue has one entry more and never fills).
    pub queue_depth: u16,
    /// Largest H2CData PDU to send even when MAXH2CDATA allows more (the
    /// smaller wins); `None`: MAXH2CDATA.
    pub max_h2c_pdu: Option<u32>,
    /// Largest data one command may carry.
    pub max_transfer: u32,
    /// Give up a TCP connect (and the ICReq/ICResp exchange) after this.
    pub connect_timeout: Duration,
    /// Ask the controller not to report SQHD (Connect CATTR bit 2); it may
    /// then complete reads with C2HData SUCCESS and no response capsule.
    pub disable_sq_flow_control: bool,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            digests: Digests::default(),
            queue_depth: 32,
            max_h2c_pdu: None,
            max_transfer: 1 << 20,
            connect_timeout: Duration::from_secs(5),
            disable_sq_flow_control: false,
        }
    }
}

/// A failure below the NVMe layer for one command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TcpFailure {
    /// The connection failed or closed with the command in flight.
    #[error("the connection failed with the command in flight (reconnect and retry)")]
    ConnectionLost,
    /// A data digest did not match the data received for it.
    #[error("data digest mismatch on the command's data (corrupted on the way)")]
    DataDigest,
    /// Success reported with less data than the command asked for.
    #[error("the target reported success with only part of the data transferred")]
    ShortTransfer,
}

/// What became of one command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpOutcome {
    /// The controller completed it.
    Completed {
        /// Completion DW0.
        dw0: u32,
        /// Completion DW1 (the high half of an 8-byte property).
        dw1: u32,
        /// Status.
        status: Status,
    },
    /// The transport failed it.
    Failed(TcpFailure),
}

/// One completion: the CID it was submitted with and the outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpCompletion {
    /// The CID (the tag of the seam).
    pub cid: u16,
    /// The outcome.
    pub outcome: TcpOutcome,
}

/// A submission the connection refused; nothing was queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitRefusal {
    /// No room (queue depth or SQ head): reap completions first.
    #[error("the queue is full; reap completions first")]
    Full,
    /// The command cannot be carried as given.
    #[error("{0}")]
    BadData(&'static str),
    /// The connection failed.
    #[error("the connection has failed")]
    Gone,
}

/// Bytes read from the socket per call when not reading into a command's buffer.
const RX_BUF: usize = 64 * 1024;
/// Pending send bytes up to which H2CData PDUs are added.
const TX_HIGH: usize = 256 * 1024;
/// Smallest C2HData remainder read straight into the command's buffer.
const DIRECT_MIN: usize = 512;

/// One NVMe/TCP connection (one queue). See the module documentation.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    addr: SocketAddr,
    digests: Digests,
    cpda: u8,
    h2c_max: u32,
    in_capsule_max: u32,
    max_transfer: u32,
    q: Queue,
    rx: RxMachine,
    rx_buf: Box<[u8]>,
    rx_start: usize,
    rx_end: usize,
    tx: Vec<u8>,
    tx_off: usize,
    failure: Option<String>,
}

fn connect_error(addr: SocketAddr, e: std::io::Error, timeout: Duration) -> TcpError {
    match e.kind() {
        ErrorKind::ConnectionRefused => TcpError::Refused { addr, source: e },
        ErrorKind::TimedOut | ErrorKind::WouldBlock => TcpError::Unreachable {
            addr,
            why: format!("no answer within {timeout:?}"),
            source: e,
        },
        ErrorKind::HostUnreachable
        | ErrorKind::NetworkUnreachable
        | ErrorKind::AddrNotAvailable => TcpError::Unreachable {
            addr,
            why: e.to_string(),
            source: e,
        },
        _ => TcpError::Io {
            what: "TCP connect",
            addr,
            source: e,
        },
    }
}

impl Connection {
    /// Connect to `addr` (blocking, bounded by `opts.connect_timeout`),
    /// exchange ICReq/ICResp, and make the socket non-blocking. Queue
    /// `qid`'s Fabrics Connect is the caller's next step.
    pub fn connect(addr: SocketAddr, opts: &ConnectionOptions) -> Result<Self, TcpError> {
        if opts.queue_depth == 0 || opts.queue_depth == u16::MAX {
            return Err(TcpError::Invalid("queue depth must be 1 to 65534"));
        }
        let t = opts.connect_timeout;
        let stream = TcpStream::connect_timeout(&addr, t).map_err(|e| connect_error(addr, e, t))?;
        let io = |what| move |source| TcpError::Io { what, addr, source };
        stream
            .set_nodelay(true)
            .map_err(io("setting TCP_NODELAY"))?;
        stream
            .set_read_timeout(Some(t))
            .map_err(io("setting a read timeout"))?;
        stream
            .set_write_timeout(Some(t))
            .map_err(io("setting a write timeout"))?;
        let depth = opts.queue_depth as usize;
        let slots = depth.next_power_of_two();
        let mut conn = Connection {
            stream,
            addr,
            digests: Digests::default(),
            cpda: 0,
            h2c_max: pdu::MIN_MAXH2CDATA,
            in_capsule_max: 0,
            max_transfer: opts.max_transfer,
            q: Queue {
                slots: (0..slots).map(|_| Slot::default()).collect(),
                mask: (slots - 1) as u16,
                in_flight: 0,
                done: VecDeque::with_capacity(depth),
                h2c: VecDeque::with_capacity(depth),
                sq_entries: opts.queue_depth + 1,
                sq_tail: 0,
                sq_head: 0,
                flow_control: !opts.disable_sq_flow_control,
                ic_resp: None,
                stray: 0,
            },
            // Largest PDU accepted: C2HData of a whole transfer plus headers.
            rx: RxMachine::new(opts.max_transfer as usize + 256),
            rx_buf: vec![0; RX_BUF].into_boxed_slice(),
            rx_start: 0,
            rx_end: 0,
            tx: Vec::with_capacity(TX_HIGH),
            tx_off: 0,
            failure: None,
        };
        conn.initialize(opts)?;
        conn.stream
            .set_nonblocking(true)
            .map_err(io("making the socket non-blocking"))?;
        Ok(conn)
    }

    fn initialize(&mut self, opts: &ConnectionOptions) -> Result<(), TcpError> {
        let req = Header::IcReq(IcReq {
            pfv: 0,
            hpda: 0,
            digests: opts.digests,
            maxr2t: 0,
        });
        let mut b = [0u8; 128];
        let n = pdu::encode(&mut b, &req, &[], Digests::default(), 0)
            .map_err(|_| TcpError::Invalid("ICReq does not fit 128 bytes"))?;
        let addr = self.addr;
        self.stream
            .write_all(&b[..n])
            .map_err(|source| TcpError::Io {
                what: "sending ICReq",
                addr,
                source,
            })?;
        // Blocking reads (with the connect timeout) until ICResp is through.
        while self.q.ic_resp.is_none() {
            let n = match self.stream.read(&mut self.rx_buf) {
                Ok(0) => {
                    return Err(TcpError::Closed {
                        addr,
                        outstanding: 0,
                        during_setup: true,
                    });
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(TcpError::Timeout {
                        what: "ICReq/ICResp",
                        addr,
                        waited: opts.connect_timeout,
                    });
                }
                Err(source) => {
                    return Err(TcpError::Io {
                        what: "receiving ICResp",
                        addr,
                        source,
                    });
                }
            };
            // ICResp is the controller's first PDU and nothing else comes
            // before the host's first command, so all of it is consumed here.
            let (rx, q) = (&mut self.rx, &mut self.q);
            rx.feed(&self.rx_buf[..n], q)
                .map_err(|source| TcpError::Protocol { addr, source })?;
        }
        let r = self.q.ic_resp.unwrap_or(IcResp {
            pfv: 0,
            cpda: 0,
            digests: Digests::default(),
            maxh2cdata: pdu::MIN_MAXH2CDATA,
        });
        let granted = r.digests;
        let asked = opts.digests;
        if (granted.header && !asked.header) || (granted.data && !asked.data) {
            return Err(TcpError::Negotiation {
                addr,
                what: format!("ICResp enabled digests the host did not ask for ({granted:?})"),
            });
        }
        if granted != asked {
            return Err(TcpError::Negotiation {
                addr,
                what: format!(
                    "the target refused the digests asked for (asked {asked:?}, granted {granted:?}); \
                     connect without them or enable them on the target"
                ),
            });
        }
        self.digests = granted;
        self.cpda = r.cpda;
        self.h2c_max = opts
            .max_h2c_pdu
            .map_or(r.maxh2cdata, |m| m.clamp(4, r.maxh2cdata) & !3);
        Ok(())
    }

    /// The peer address.
    pub fn peer(&self) -> SocketAddr {
        self.addr
    }

    /// Digests in use.
    pub fn digests(&self) -> Digests {
        self.digests
    }

    /// Most data bytes per H2CData PDU (MAXH2CDATA, or less if asked).
    pub fn h2c_max(&self) -> u32 {
        self.h2c_max
    }

    /// Write data that may travel in the command capsule (IOCCSZ minus the
    /// SQE; 0 until set).
    pub fn in_capsule_max(&self) -> u32 {
        self.in_capsule_max
    }

    /// Set the in-capsule data limit (from the controller's IOCCSZ, or the
    /// 8 KiB every admin queue accepts).
    pub fn set_in_capsule_max(&mut self, bytes: u32) {
        self.in_capsule_max = bytes;
    }

    /// Commands that can be in flight at once (the queue depth).
    pub fn capacity(&self) -> usize {
        self.q.sq_entries as usize - 1
    }

    /// Commands submitted and not yet returned by [`Connection::poll`].
    pub fn in_flight(&self) -> usize {
        self.q.in_flight
    }

    /// Largest data one command may carry.
    pub fn max_transfer(&self) -> u32 {
        self.max_transfer
    }

    /// Responses for CIDs not in flight, dropped so far.
    pub fn stray_responses(&self) -> u64 {
        self.q.stray
    }

    /// Whether a command in flight holds a buffer starting at `p`.
    pub(crate) fn holds(&self, p: *mut u8) -> bool {
        self.q
            .slots
            .iter()
            .any(|s| s.busy && s.buf.as_ref().is_some_and(|b| super::buf::starts_at(b, p)))
    }

    /// Why the connection failed, once it has.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Queue `cmd` under CID `cid` (its CID and data pointer are filled in
    /// here) with its data. Writes up to the in-capsule limit travel in the
    /// capsule; larger ones wait for R2T. Nothing is sent before
    /// [`Connection::flush`] (or a poll).
    pub fn submit(
        &mut self,
        cmd: &Command,
        data: Option<(DataBuf, Direction)>,
        cid: u16,
    ) -> Result<(), SubmitRefusal> {
        if self.failure.is_some() {
            return Err(SubmitRefusal::Gone);
        }
        if self.q.in_flight >= self.capacity() {
            return Err(SubmitRefusal::Full);
        }
        if self.q.slots[(cid & self.q.mask) as usize].busy {
            return Err(SubmitRefusal::BadData(
                "a command with the same CID low bits is in flight",
            ));
        }
        let used = (self.q.sq_tail + self.q.sq_entries - self.q.sq_head) % self.q.sq_entries;
        if self.q.flow_control && used + 1 >= self.q.sq_entries {
            return Err(SubmitRefusal::Full);
        }
        let len = data.as_ref().map_or(0, |(b, _)| b.len());
        if len > self.max_transfer as usize {
            return Err(SubmitRefusal::BadData(
                "data longer than the largest transfer",
            ));
        }
        let in_capsule = matches!(data, Some((_, Direction::ToController)))
            && len <= self.in_capsule_max as usize;
        let mut c = *cmd;
        c.set_cid(cid);
        fabrics::set_data_sgl(&mut c, len as u32, in_capsule);
        let payload: &[u8] = match (&data, in_capsule) {
            (Some((b, _)), true) => b.slice(0, len).unwrap_or(&[]),
            _ => &[],
        };
        let need = pdu::encoded_len(
            pdu::PduType::CAPSULE_CMD,
            payload.len(),
            self.digests,
            self.cpda,
        );
        let at = self.tx.len();
        self.tx.resize(at + need, 0);
        if pdu::encode(
            &mut self.tx[at..],
            &Header::CapsuleCmd(c),
            payload,
            self.digests,
            self.cpda,
        )
        .is_err()
        {
            self.tx.truncate(at);
            return Err(SubmitRefusal::BadData("command does not fit a PDU"));
        }
        self.q.sq_tail = (self.q.sq_tail + 1) % self.q.sq_entries;
        let (buf, dir) = match data {
            Some((b, d)) => (Some(b), Some(d)),
            None => (None, None),
        };
        self.q.slots[(cid & self.q.mask) as usize] = Slot {
            busy: true,
            cid,
            dir,
            buf,
            moved: if in_capsule { len as u32 } else { 0 },
            failed: None,
        };
        self.q.in_flight += 1;
        Ok(())
    }

    /// Send what is queued, as far as the socket takes it without blocking.
    pub fn flush(&mut self) -> Result<(), SubmitRefusal> {
        if self.failure.is_some() {
            return Err(SubmitRefusal::Gone);
        }
        self.pump_tx();
        if self.failure.is_some() {
            return Err(SubmitRefusal::Gone);
        }
        Ok(())
    }

    /// Bytes queued but not yet taken by the socket.
    pub fn tx_pending(&self) -> usize {
        self.tx.len() - self.tx_off
    }

    fn add_h2c(&mut self) {
        while self.tx_pending() < TX_HIGH {
            let Some(w) = self.q.h2c.front_mut() else {
                return;
            };
            let n = w.left.min(self.h2c_max);
            let d = DataHeader {
                cccid: w.cid,
                ttag: w.ttag,
                offset: w.offset,
                len: n,
                last: n == w.left,
                success: false,
            };
            let w = *w;
            let need =
                pdu::encoded_len(pdu::PduType::H2C_DATA, n as usize, self.digests, self.cpda);
            let at = self.tx.len();
            self.tx.resize(at + need, 0);
            let src = self
                .q
                .slot(w.cid)
                .and_then(|s| s.buf.as_ref())
                .and_then(|b| b.slice(w.offset as usize, n as usize));
            let ok = src.is_some_and(|src| {
                pdu::encode(
                    &mut self.tx[at..],
                    &Header::H2cData(d),
                    src,
                    self.digests,
                    self.cpda,
                )
                .is_ok()
            });
            if !ok {
                // r2t() checked the range; a miss would be a bug here, not
                // the target's: fail the connection rather than send garbage.
                self.tx.truncate(at);
                self.fail("internal: H2CData outside the command's buffer".into());
                return;
            }
            let front = &mut self.q.h2c[0];
            front.offset += n;
            front.left -= n;
            if front.left == 0 {
                self.q.h2c.pop_front();
            }
        }
    }

    fn pump_tx(&mut self) {
        loop {
            self.add_h2c();
            if self.failure.is_some() || self.tx_pending() == 0 {
                return;
            }
            match self.stream.write(&self.tx[self.tx_off..]) {
                Ok(0) => return self.fail("the socket took no bytes (connection closed)".into()),
                Ok(n) => {
                    self.tx_off += n;
                    if self.tx_off == self.tx.len() {
                        self.tx.clear();
                        self.tx_off = 0;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => return self.fail(format!("sending: {e}")),
            }
        }
    }

    /// Fail the connection: every command in flight completes with
    /// [`TcpFailure::ConnectionLost`], and the socket is shut down.
    pub fn fail(&mut self, why: String) {
        if self.failure.is_none() {
            self.failure = Some(why);
            let _ = self.stream.shutdown(Shutdown::Both);
        }
        self.q.h2c.clear();
        self.q.fail_all(TcpFailure::ConnectionLost);
    }

    fn fail_rx(&mut self, e: RxError) {
        if let Some((fes, fei)) = e.fes() {
            // Best effort: tell the target why, without blocking.
            let mut b = [0u8; 24];
            if let Ok(n) = pdu::encode(
                &mut b,
                &Header::H2cTermReq(TermReq { fes, fei }),
                &[],
                Digests::default(),
                0,
            ) {
                let _ = self.stream.write(&b[..n]);
            }
        }
        self.fail(e.to_string());
    }

    fn receive(&mut self, max: usize) {
        while self.failure.is_none() && self.q.done.len() < max.max(1) {
            if self.rx_start < self.rx_end {
                let (rx, q) = (&mut self.rx, &mut self.q);
                if let Err(e) = rx.feed(&self.rx_buf[self.rx_start..self.rx_end], q) {
                    return self.fail_rx(e);
                }
                self.rx_start = 0;
                self.rx_end = 0;
                continue;
            }
            // Nothing buffered: read C2HData straight into the command's
            // buffer when a large piece of it is next.
            if let Some((cid, offset, left)) = self.rx.data_wanted().filter(|w| w.2 >= DIRECT_MIN) {
                let Some(dst) = self
                    .q
                    .slot_mut(cid)
                    .and_then(|s| s.buf.as_mut())
                    .and_then(|b| b.slice_mut(offset as usize, left))
                else {
                    return self.fail("internal: C2HData outside the command's buffer".into());
                };
                match self.stream.read(dst) {
                    Ok(0) => return self.closed(),
                    Ok(n) => {
                        if let Err(e) = direct(&mut self.rx, &mut self.q, cid, offset, n) {
                            return self.fail_rx(e);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                    Err(e) => return self.fail(format!("receiving: {e}")),
                }
                continue;
            }
            match self.stream.read(&mut self.rx_buf) {
                Ok(0) => return self.closed(),
                Ok(n) => {
                    self.rx_start = 0;
                    self.rx_end = n;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => return self.fail(format!("receiving: {e}")),
            }
        }
    }

    fn closed(&mut self) {
        self.fail("the target closed the connection".into());
    }

    /// Make progress (send what the socket takes, receive what arrived) and
    /// pass at most `max` completions to `f`. Never blocks. Once the
    /// connection has failed, the commands that were in flight come out
    /// here failed, then nothing more.
    pub fn poll<F: FnMut(TcpCompletion)>(&mut self, max: usize, mut f: F) -> usize {
        self.progress(max);
        let mut n = 0;
        while n < max {
            let Some(c) = self.next_done() else {
                break;
            };
            f(c);
            n += 1;
        }
        n
    }

    /// Send what the socket takes and receive what arrived, until about
    /// `max` completions are ready. Never blocks.
    #[inline]
    pub fn progress(&mut self, max: usize) {
        if self.failure.is_none() {
            self.pump_tx();
            self.receive(max);
            self.pump_tx();
        }
    }

    /// The next completion made ready by [`Connection::progress`] (or by a
    /// failure of the connection).
    #[inline]
    pub fn next_done(&mut self) -> Option<TcpCompletion> {
        self.q.done.pop_front()
    }

    /// Whether completions are ready to be taken.
    pub fn has_done(&self) -> bool {
        !self.q.done.is_empty()
    }
}

/// Account `n` bytes the socket put straight into CID `cid`'s buffer at `offset`.
fn direct(
    rx: &mut RxMachine,
    q: &mut Queue,
    cid: u16,
    offset: u32,
    n: usize,
) -> Result<(), RxError> {
    // The digest needs the bytes, which are in the command's buffer: lend
    // the machine a view while the slot's buffer is taken out.
    let buf = q.slot_mut(cid).and_then(|s| s.buf.take());
    let r = match buf.as_ref().and_then(|b| b.slice(offset as usize, n)) {
        Some(bytes) => rx.data_direct(bytes, q),
        None => Err(RxError::Protocol(
            "C2HData outside the command's buffer".into(),
        )),
    };
    // c2h_end may have completed the command (SUCCESS) and reset the slot:
    // put the buffer back only if the slot still owns this command.
    if let Some(b) = buf
        && let Some(slot) = q.slot_mut(cid)
        && slot.buf.is_none()
    {
        slot.buf = Some(b);
    }
    r
}

#[cfg(test)]
mod tests;
