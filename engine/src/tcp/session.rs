//! Blocking bring-up of an NVMe over Fabrics controller over TCP (NVMe Base
//! 2.0 §3.5.2, controller initialization over Fabrics): connect the admin
//! queue, Property Get CAP and VS, Property Set CC.EN, wait for CSTS.RDY
//! within CAP.TO, Identify Controller; then Connect I/O queues, read the
//! Discovery log page, keep the association alive. Every wait is bounded by
//! a clock; when one runs out the connection is closed before returning, so
//! no buffer of the caller is written afterwards.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::buf::{DataBuf, lend};
use super::conn::{Connection, ConnectionOptions, Direction, SubmitRefusal, TcpOutcome};
use super::discovery::{self, DiscoveryLog};
use super::error::TcpError;
use super::fabrics::{self, property};
use crate::spec::command::{AdminOpcode, Command};
use crate::spec::identify::IdentifyController;

/// Where a subsystem is and who asks.
#[derive(Clone, Debug)]
pub struct TcpTarget {
    /// Target address (traddr:trsvcid).
    pub addr: SocketAddr,
    /// Subsystem NQN (subnqn).
    pub subnqn: String,
    /// Host NQN (hostnqn).
    pub hostnqn: String,
    /// Host ID (16 bytes; the same for every queue of one association).
    pub host_id: [u8; 16],
}

impl TcpTarget {
    /// A target with a host ID from this process and time, and the host NQN
    /// derived from it.
    pub fn new(addr: SocketAddr, subnqn: impl Into<String>) -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut host_id = [0u8; 16];
        host_id[..12].copy_from_slice(&t.to_le_bytes()[..12]);
        host_id[12..].copy_from_slice(&std::process::id().to_le_bytes());
        host_id[6] = (host_id[6] & 0x0f) | 0x40; // UUID version 4 layout
        host_id[8] = (host_id[8] & 0x3f) | 0x80;
        TcpTarget {
            addr,
            subnqn: subnqn.into(),
            hostnqn: fabrics::host_nqn_from_id(&host_id),
            host_id,
        }
    }
}

/// Settings of a controller's bring-up.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SessionOptions {
    /// Options of every connection (admin queue depth is fixed at 32).
    pub conn: ConnectionOptions,
    /// Keep Alive Timeout asked for in the admin Connect (0: none).
    pub kato: Duration,
    /// Bound on each admin command.
    pub command_timeout: Duration,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            conn: ConnectionOptions::default(),
            kato: Duration::from_secs(10),
            command_timeout: Duration::from_secs(10),
        }
    }
}

/// The error for `what` on a connection that has failed.
fn lost(conn: &Connection, what: &'static str) -> TcpError {
    TcpError::Lost {
        what,
        addr: conn.peer(),
        why: conn
            .failure()
            .unwrap_or("the connection failed")
            .to_string(),
    }
}

/// Run one command on `conn` and wait for it (bounded by `timeout`). On a
/// timeout the connection is failed before returning, so `data` is never
/// written after this returns. For a connection with no other command in
/// flight (bring-up, the admin queue of [`FabricsController`], tests): the
/// completions of other commands polled meanwhile are not kept.
pub fn run_blocking(
    conn: &mut Connection,
    what: &'static str,
    cmd: &Command,
    data: Option<(&mut [u8], Direction)>,
    cid: u16,
    timeout: Duration,
) -> Result<(u32, u32), TcpError> {
    let (bytes, dir) = match data {
        Some((b, d)) => (Some(b), Some(d)),
        None => (None, None),
    };
    // The buffer is taken back (the connection failed) should the command
    // still hold it when this returns.
    lend(conn, bytes, |conn, buf| {
        exchange(conn, what, cmd, buf.zip(dir), cid, timeout)
    })
}

fn exchange(
    conn: &mut Connection,
    what: &'static str,
    cmd: &Command,
    buf: Option<(DataBuf, Direction)>,
    cid: u16,
    timeout: Duration,
) -> Result<(u32, u32), TcpError> {
    let addr = conn.peer();
    conn.submit(cmd, buf, cid)
        .map_err(|refusal| match refusal {
            SubmitRefusal::Gone => lost(conn, what),
            SubmitRefusal::Full => TcpError::Invalid("no free command slot on the connection"),
            SubmitRefusal::BadData(why) => TcpError::Invalid(why),
        })?;
    let start = Instant::now();
    let mut result = None;
    loop {
        conn.poll(usize::MAX, |c| {
            if c.cid == cid {
                result = Some(c.outcome);
            }
        });
        if let Some(r) = result {
            return match r {
                TcpOutcome::Completed { dw0, dw1, status } if status.is_success() => Ok((dw0, dw1)),
                TcpOutcome::Completed { dw0, status, .. } => {
                    Err(TcpError::Command { what, status, dw0 })
                }
                TcpOutcome::Failed(super::conn::TcpFailure::ConnectionLost) => {
                    Err(lost(conn, what))
                }
                TcpOutcome::Failed(failure) => Err(TcpError::Transport { what, failure }),
            };
        }
        if start.elapsed() >= timeout {
            conn.fail(format!("{what} timed out"));
            return Err(TcpError::Timeout {
                what,
                addr,
                waited: timeout,
            });
        }
        std::thread::yield_now();
    }
}

/// Connect queue `qid` of `target` on `conn` (Fabrics Connect with the
/// Connect data in the capsule); returns the controller ID.
pub fn fabrics_connect(
    conn: &mut Connection,
    target: &TcpTarget,
    qid: u16,
    cntlid: u16,
    kato: Duration,
    disable_sq_flow_control: bool,
    timeout: Duration,
) -> Result<u16, TcpError> {
    let mut data = fabrics::connect_data(&target.host_id, cntlid, &target.subnqn, &target.hostnqn)?;
    let sqsize_z = conn.capacity() as u16;
    let kato_ms = if qid == 0 {
        kato.as_millis().min(u32::MAX as u128) as u32
    } else {
        0
    };
    let cmd = fabrics::connect(qid, sqsize_z, kato_ms, disable_sq_flow_control);
    // The Connect data always travels in the capsule (8 KiB is the least
    // every queue accepts for Connect).
    let keep = conn.in_capsule_max();
    conn.set_in_capsule_max(fabrics::CONNECT_DATA_LEN as u32);
    let r = run_blocking(
        conn,
        "Connect",
        &cmd,
        Some((&mut data, Direction::ToController)),
        0,
        timeout,
    );
    conn.set_in_capsule_max(keep);
    match r {
        Ok((dw0, _)) => Ok(dw0 as u16),
        Err(TcpError::Command { status, dw0, .. }) => Err(TcpError::ConnectRejected {
            addr: conn.peer(),
            qid,
            subnqn: target.subnqn.clone(),
            status,
            detail: fabrics::explain_connect_failure(status, dw0),
        }),
        Err(e) => Err(e),
    }
}

/// An enabled controller behind its admin queue.
#[derive(Debug)]
pub struct FabricsController {
    target: TcpTarget,
    opts: SessionOptions,
    admin: Connection,
    cntlid: u16,
    cap: u64,
    vs: u32,
    identify: Box<IdentifyController>,
    ioccsz_bytes: u32,
    next_cid: u16,
    last_keep_alive: Instant,
}

impl FabricsController {
    /// Bring up the controller of `target`: connect and initialize the
    /// admin queue, Connect, CAP/VS, CC.EN, CSTS.RDY, Identify Controller.
    pub fn connect(target: &TcpTarget, opts: &SessionOptions) -> Result<Self, TcpError> {
        let mut conn_opts = opts.conn.clone();
        conn_opts.queue_depth = 32;
        conn_opts.disable_sq_flow_control = false;
        let mut admin = Connection::connect(target.addr, &conn_opts)?;
        // Admin queues take at least 8 KiB of in-capsule data.
        admin.set_in_capsule_max(8192);
        let t = opts.command_timeout;
        let cntlid = fabrics_connect(
            &mut admin,
            target,
            0,
            fabrics::CNTLID_DYNAMIC,
            opts.kato,
            false,
            t,
        )?;
        let mut c = FabricsController {
            target: target.clone(),
            opts: opts.clone(),
            admin,
            cntlid,
            cap: 0,
            vs: 0,
            identify: Box::new(IdentifyController::zeroed()),
            ioccsz_bytes: 0,
            next_cid: 1,
            last_keep_alive: Instant::now(),
        };
        c.cap = c.property_get(property::CAP, true)?;
        c.vs = c.property_get(property::VS, false)? as u32;
        c.enable()?;
        let mut id = vec![0u8; 4096];
        let mut cmd = Command::new(AdminOpcode::IDENTIFY.0, 0);
        cmd.cdw10 = crate::spec::command::cns::CONTROLLER as u32;
        c.admin_command(
            "Identify Controller",
            &cmd,
            Some((&mut id, Direction::FromController)),
        )?;
        let ioccsz = u32::from_le_bytes([id[1792], id[1793], id[1794], id[1795]]);
        c.ioccsz_bytes = ioccsz.saturating_mul(16);
        let mut raw = [0u8; 4096];
        raw.copy_from_slice(&id);
        c.identify = Box::new(zerocopy::transmute!(raw));
        Ok(c)
    }

    fn enable(&mut self) -> Result<(), TcpError> {
        // CAP.TO (bits 31:24) in 500 ms units bounds the wait for CSTS.RDY.
        let to_ms = ((self.cap >> 24) & 0xff).max(1) * 500;
        self.property_set(property::CC, fabrics::CC_ENABLE)?;
        let start = Instant::now();
        loop {
            let csts = self.property_get(property::CSTS, false)? as u32;
            if csts & fabrics::CSTS_RDY != 0 {
                return Ok(());
            }
            let waited = start.elapsed();
            if csts & fabrics::CSTS_CFS != 0 || waited >= Duration::from_millis(to_ms) {
                return Err(TcpError::NotReady {
                    waited_ms: waited.as_millis() as u64,
                    cap_to_ms: to_ms,
                    fatal: csts & fabrics::CSTS_CFS != 0,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn cid(&mut self) -> u16 {
        // CID 0 is Connect's; the admin queue runs one command at a time here.
        self.next_cid = self.next_cid % (self.admin.capacity() as u16 - 1) + 1;
        self.next_cid
    }

    /// Run an admin command (blocking, bounded by the command timeout).
    pub fn admin_command(
        &mut self,
        what: &'static str,
        cmd: &Command,
        data: Option<(&mut [u8], Direction)>,
    ) -> Result<(u32, u32), TcpError> {
        let cid = self.cid();
        let t = self.opts.command_timeout;
        let r = run_blocking(&mut self.admin, what, cmd, data, cid, t);
        if r.is_ok() {
            self.last_keep_alive = Instant::now();
        }
        r
    }

    /// Property Get (4 or 8 bytes).
    pub fn property_get(&mut self, offset: u32, wide: bool) -> Result<u64, TcpError> {
        let (lo, hi) =
            self.admin_command("Property Get", &fabrics::property_get(offset, wide), None)?;
        Ok(if wide {
            lo as u64 | (hi as u64) << 32
        } else {
            lo as u64
        })
    }

    /// Property Set (4 bytes).
    pub fn property_set(&mut self, offset: u32, value: u32) -> Result<(), TcpError> {
        self.admin_command("Property Set", &fabrics::property_set(offset, value), None)
            .map(|_| ())
    }

    /// Send Keep Alive if half the KATO has passed since the last admin
    /// command; returns whether one was sent.
    pub fn keep_alive_if_due(&mut self) -> Result<bool, TcpError> {
        if self.opts.kato.is_zero() || self.last_keep_alive.elapsed() < self.opts.kato / 2 {
            return Ok(false);
        }
        self.admin_command("Keep Alive", &fabrics::keep_alive(), None)?;
        Ok(true)
    }

    /// Connect I/O queue `qid` with `depth` commands in flight, on a
    /// connection of its own.
    pub fn connect_io_queue(&self, qid: u16, depth: u16) -> Result<Connection, TcpError> {
        let mut o = self.opts.conn.clone();
        o.queue_depth = depth;
        o.max_transfer = o.max_transfer.min(self.max_transfer());
        let mut conn = Connection::connect(self.target.addr, &o)?;
        let t = self.opts.command_timeout;
        let flow = o.disable_sq_flow_control;
        fabrics_connect(
            &mut conn,
            &self.target,
            qid,
            self.cntlid,
            Duration::ZERO,
            flow,
            t,
        )?;
        conn.set_in_capsule_max(self.ioccsz_bytes.saturating_sub(64));
        Ok(conn)
    }

    /// Largest transfer: MDTS (in CAP.MPSMIN units) bounded by the
    /// connection options' `max_transfer`, which alone applies when the
    /// controller sets no limit (MDTS 0).
    pub fn max_transfer(&self) -> u32 {
        let mpsmin = 1u64 << (12 + ((self.cap >> 48) & 0xf));
        let own = self.opts.conn.max_transfer;
        match self.identify.mdts {
            0 => own,
            m => (mpsmin << m.min(20)).min(own as u64) as u32,
        }
    }

    /// CNTLID the target assigned.
    pub fn cntlid(&self) -> u16 {
        self.cntlid
    }

    /// CAP.
    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// VS.
    pub fn version(&self) -> u32 {
        self.vs
    }

    /// Identify Controller data.
    pub fn identify(&self) -> &IdentifyController {
        &self.identify
    }

    /// I/O command capsule size in bytes (IOCCSZ × 16, the SQE included).
    pub fn ioccsz_bytes(&self) -> u32 {
        self.ioccsz_bytes
    }

    /// The admin connection.
    pub fn admin(&mut self) -> &mut Connection {
        &mut self.admin
    }

    /// Read the Discovery log page (this must be a discovery controller).
    pub fn discovery_log(&mut self, max_entries: usize) -> Result<DiscoveryLog, TcpError> {
        let mut page = vec![0u8; discovery::HEADER_LEN];
        self.get_log(discovery::DISCOVERY_LOG_ID, &mut page)?;
        let head = discovery::parse(&page)?;
        let len = DiscoveryLog::len_for(head.numrec, max_entries);
        page.resize(len, 0);
        self.get_log(discovery::DISCOVERY_LOG_ID, &mut page)?;
        Ok(discovery::parse(&page)?)
    }

    fn get_log(&mut self, lid: u8, buf: &mut [u8]) -> Result<(), TcpError> {
        let numd_z = (buf.len() / 4).saturating_sub(1) as u32;
        let mut cmd = Command::new(AdminOpcode::GET_LOG_PAGE.0, 0);
        cmd.cdw10 = lid as u32 | (numd_z & 0xffff) << 16;
        cmd.cdw11 = numd_z >> 16;
        self.admin_command("Get Log Page", &cmd, Some((buf, Direction::FromController)))
            .map(|_| ())
    }

    /// Normal shutdown: CC.SHN, wait for CSTS.SHST complete (bounded by
    /// CAP.TO), then close the connection.
    pub fn shutdown(mut self) -> Result<(), TcpError> {
        let to = Duration::from_millis(((self.cap >> 24) & 0xff).max(1) * 500);
        self.property_set(property::CC, fabrics::CC_ENABLE | fabrics::CC_SHN_NORMAL)?;
        let start = Instant::now();
        while start.elapsed() < to {
            let csts = self.property_get(property::CSTS, false)? as u32;
            if csts & (3 << 2) == fabrics::CSTS_SHST_COMPLETE {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(TcpError::Timeout {
            what: "shutdown (CSTS.SHST)",
            addr: self.target.addr,
            waited: to,
        })
    }
}

/// List what a discovery controller at `addr` offers.
pub fn discover(addr: SocketAddr, opts: &SessionOptions) -> Result<DiscoveryLog, TcpError> {
    let target = TcpTarget::new(addr, fabrics::DISCOVERY_NQN);
    let mut o = opts.clone();
    o.kato = Duration::ZERO;
    let mut c = FabricsController::connect(&target, &o)?;
    c.discovery_log(256)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    use super::*;
    use crate::spec::{
        completion::Completion,
        status::{Status, StatusCodeType},
    };
    use crate::tcp::pdu::{self, DataHeader, Digests, Header, IcResp};

    fn send(s: &mut TcpStream, h: &Header, data: &[u8]) {
        let mut b = vec![0u8; 256 + data.len()];
        let n = pdu::encode(&mut b, h, data, Digests::default(), 0).unwrap();
        s.write_all(&b[..n]).unwrap();
    }

    fn resp(s: &mut TcpStream, cid: u16, dw0: u32, dw1: u32, status: Status) {
        let mut cqe = Completion::new(dw0, 0, 0, cid, status, false);
        cqe.dw1 = dw1;
        send(s, &Header::CapsuleResp(cqe), &[]);
    }

    /// A controller that speaks just enough Fabrics for bring-up: Connect
    /// (rejecting any subsystem but `nqn.test`), CAP/VS/CC/CSTS, Identify.
    fn controller(s: &mut TcpStream) {
        let mut ic = [0u8; 128];
        s.read_exact(&mut ic).unwrap();
        let r = IcResp {
            pfv: 0,
            cpda: 0,
            digests: Digests::default(),
            maxh2cdata: 65536,
        };
        send(s, &Header::IcResp(r), &[]);
        let mut cc = 0u32;
        loop {
            let mut ch = [0u8; 8];
            if s.read_exact(&mut ch).is_err() {
                return;
            }
            let plen = u32::from_le_bytes(ch[4..8].try_into().unwrap()) as usize;
            let mut b = ch.to_vec();
            b.resize(plen, 0);
            s.read_exact(&mut b[8..]).unwrap();
            let (p, _) = pdu::decode_pdu(&b, Digests::default(), 1 << 20).unwrap();
            let Header::CapsuleCmd(cmd) = p.header.header else {
                panic!()
            };
            let cid = cmd.cid();
            match (cmd.opcode(), cmd.nsid as u8) {
                (0x7F, 0x01) => {
                    let nqn = &p.data[256..264];
                    if nqn == b"nqn.test" {
                        resp(s, cid, 5, 0, Status::SUCCESS);
                    } else {
                        let st = Status::new(StatusCodeType::COMMAND_SPECIFIC, 0x82);
                        resp(s, cid, (1 << 16) | 256, 0, st.with_dnr(true));
                    }
                }
                (0x7F, 0x04) => {
                    let v: u64 = match cmd.cdw11 {
                        fabrics::property::CAP => 2 << 24 | 127,
                        fabrics::property::VS => 0x10400,
                        fabrics::property::CSTS => (cc & 1) as u64,
                        _ => 0,
                    };
                    resp(s, cid, v as u32, (v >> 32) as u32, Status::SUCCESS);
                }
                (0x7F, 0x00) => {
                    cc = cmd.cdw12;
                    resp(s, cid, 0, 0, Status::SUCCESS);
                }
                (0x06, _) => {
                    let mut id = vec![0u8; 4096];
                    id[1792..1796].copy_from_slice(&260u32.to_le_bytes());
                    id[4..8].copy_from_slice(b"fake"); // SN
                    let d = DataHeader {
                        cccid: cid,
                        ttag: 0,
                        offset: 0,
                        len: 4096,
                        last: true,
                        success: false,
                    };
                    send(s, &Header::C2hData(d), &id);
                    resp(s, cid, 0, 0, Status::SUCCESS);
                }
                _ => resp(s, cid, 0, 0, Status::new(StatusCodeType::GENERIC, 1)),
            }
        }
    }

    fn serve() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            while let Ok((mut s, _)) = l.accept() {
                std::thread::spawn(move || controller(&mut s));
            }
        });
        addr
    }

    #[test]
    fn bring_up_connects_reads_cap_and_vs_enables_and_identifies() {
        let addr = serve();
        let t = TcpTarget::new(addr, "nqn.test");
        let mut c = FabricsController::connect(&t, &SessionOptions::default()).unwrap();
        assert_eq!(c.cntlid(), 5);
        assert_eq!(c.cap() & 0xffff, 127);
        assert_eq!(c.version(), 0x10400);
        assert_eq!(c.ioccsz_bytes(), 260 * 16);
        assert_eq!(&c.identify().sn[..4], b"fake");
        assert!(
            !c.keep_alive_if_due().unwrap(),
            "nothing is due right after bring-up"
        );
        let q = c.connect_io_queue(1, 8).unwrap();
        assert_eq!(q.in_capsule_max(), 260 * 16 - 64);
        assert_eq!(q.capacity(), 8);
    }

    #[test]
    fn a_rejected_connect_names_the_subsystem_nqn() {
        let addr = serve();
        let t = TcpTarget::new(addr, "nqn.other");
        let e = FabricsController::connect(&t, &SessionOptions::default()).unwrap_err();
        assert!(
            matches!(e, TcpError::ConnectRejected { qid: 0, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("no such subsystem"), "{e}");
    }

    #[test]
    fn host_nqn_and_id_are_a_uuid_shared_by_every_queue() {
        let t = TcpTarget::new("127.0.0.1:4420".parse().unwrap(), "nqn.x");
        assert!(t.hostnqn.starts_with("nqn.2014-08.org.nvmexpress:uuid:"));
        assert_eq!(t.host_id[6] >> 4, 4, "UUID version 4 layout");
    }
}
