//! A controller over NVMe/TCP as the engine's users open it: bring-up of the
//! association (admin queue, CC.EN, Identify Controller), its active
//! namespaces as [`Namespace`]s, I/O queues as [`TcpQueue`]s (one
//! connection each, created on the thread that drives it), buffer pools,
//! and admin commands; Keep Alive and recovery after a failure run in the
//! association ([`super::assoc`]).

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use zerocopy::{FromZeros, IntoBytes};

use super::assoc::{Association, AssociationStats, RecoveryOptions, Standing};
use super::conn::Direction;
use super::error::TcpError;
use super::pdu::Digests;
use super::session::{SessionOptions, TcpTarget};
use super::transport::{TcpQueue, TcpTransport};
use crate::dma::{DmaError, DmaPool};
use crate::driver::{ControllerOptions, Namespace, QueuePair};
use crate::spec::command::{AdminOpcode, Command, cns};
use crate::spec::identify::{IdentifyController, IdentifyNamespace};

/// How a TCP controller is brought up and driven.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TcpDeviceOptions {
    /// Digests, KATO, connect and admin command timeouts.
    pub session: SessionOptions,
    /// Reconnection after a failure.
    pub recovery: RecoveryOptions,
    /// Most I/O queues (QIDs 1..=this).
    pub max_io_queues: u16,
}

impl Default for TcpDeviceOptions {
    fn default() -> Self {
        TcpDeviceOptions {
            session: SessionOptions::default(),
            recovery: RecoveryOptions::default(),
            max_io_queues: 64,
        }
    }
}

/// Options of one I/O queue.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct TcpQueueOptions {
    /// Commands in flight at once (Connect SQSIZE; 1..=1024).
    pub entries: u16,
    /// Deadline of each command; past it the association is reset and the
    /// command completes with [`crate::IoError::TimedOut`].
    pub timeout: Duration,
    /// Resubmissions of a command after a DNR=0 error status or a
    /// reconnection.
    pub retry_limit: u8,
    /// How long deleting the queue waits for commands in flight.
    pub close_timeout: Duration,
}

impl Default for TcpQueueOptions {
    fn default() -> Self {
        let d = ControllerOptions::default();
        TcpQueueOptions {
            entries: 128,
            timeout: d.io_timeout,
            retry_limit: d.io_retry_limit,
            close_timeout: Duration::from_secs(10),
        }
    }
}

/// What the association negotiated and the controller reported at
/// bring-up, for tools that show it (the first association's values; a
/// reconnection asks for the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpParams {
    /// CNTLID the target assigned.
    pub cntlid: u16,
    /// CAP, read with Property Get.
    pub cap: u64,
    /// VS, read with Property Get.
    pub version: u32,
    /// Digests in use on the admin connection (I/O connections ask for
    /// the same).
    pub digests: Digests,
    /// MAXH2CDATA of the admin connection's ICResp: most data bytes per
    /// H2CData PDU.
    pub maxh2cdata: u32,
    /// I/O command capsule size in bytes (IOCCSZ × 16, the SQE included):
    /// writes of up to this minus 64 bytes travel inside the capsule.
    pub ioccsz_bytes: u32,
    /// I/O response capsule size in bytes (IORCSZ × 16).
    pub iorcsz_bytes: u32,
    /// Keep Alive timeout asked for in Connect.
    pub kato: Duration,
}

/// A controller reached over NVMe/TCP. `Send + Sync`: queues are created
/// from it on the threads that drive them.
pub struct TcpDevice {
    assoc: Arc<Association>,
    worker: Option<JoinHandle<()>>,
    identify: Box<IdentifyController>,
    namespaces: Vec<Namespace>,
    max_transfer: usize,
    cntlid: u16,
    params: TcpParams,
}

impl std::fmt::Debug for TcpDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpDevice")
            .field("addr", &self.assoc.target().addr)
            .field("subnqn", &self.assoc.target().subnqn)
            .field("namespaces", &self.namespaces.len())
            .finish()
    }
}

impl TcpDevice {
    /// Bring up the controller `target` names and identify its active
    /// namespaces (those with a usable format; others are skipped).
    pub fn open(target: TcpTarget, opts: TcpDeviceOptions) -> Result<Self, TcpError> {
        if opts.max_io_queues == 0 || opts.max_io_queues == u16::MAX {
            return Err(TcpError::Invalid("max_io_queues must be 1 to 65534"));
        }
        let (assoc, worker) =
            Association::start(target, opts.session, opts.recovery, opts.max_io_queues)?;
        let mut dev = TcpDevice {
            assoc,
            worker: Some(worker),
            identify: Box::new(IdentifyController::new_zeroed()),
            namespaces: Vec::new(),
            max_transfer: 0,
            cntlid: 0,
            params: TcpParams {
                cntlid: 0,
                cap: 0,
                version: 0,
                digests: Digests::default(),
                maxh2cdata: 0,
                ioccsz_bytes: 0,
                iorcsz_bytes: 0,
                kato: Duration::ZERO,
            },
        };
        let kato = dev.assoc.session().kato;
        let (identify, max_transfer, cntlid) = dev.assoc.with_admin(|c| {
            let raw = c.identify().as_bytes();
            let iorcsz = u32::from_le_bytes([raw[1796], raw[1797], raw[1798], raw[1799]]);
            dev.params = TcpParams {
                cntlid: c.cntlid(),
                cap: c.cap(),
                version: c.version(),
                digests: c.admin().digests(),
                maxh2cdata: c.admin().h2c_max(),
                ioccsz_bytes: c.ioccsz_bytes(),
                iorcsz_bytes: iorcsz.saturating_mul(16),
                kato,
            };
            Ok((
                Box::new(*c.identify()),
                c.max_transfer() as usize,
                c.cntlid(),
            ))
        })?;
        dev.identify = identify;
        dev.max_transfer = max_transfer;
        dev.cntlid = cntlid;
        dev.namespaces = dev.identify_namespaces()?;
        Ok(dev)
    }

    fn identify_namespaces(&self) -> Result<Vec<Namespace>, TcpError> {
        let mut list = vec![0u8; 4096];
        let mut cmd = Command::new(AdminOpcode::IDENTIFY.0, 0);
        cmd.cdw10 = cns::ACTIVE_NAMESPACES as u32;
        self.admin_command(
            "Identify Active Namespace List",
            &cmd,
            Some((&mut list, Direction::FromController)),
        )?;
        let mut out = Vec::new();
        for nsid in list
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .take_while(|&n| n != 0)
        {
            let mut ns = Box::new(IdentifyNamespace::new_zeroed());
            let mut cmd = Command::new(AdminOpcode::IDENTIFY.0, nsid);
            cmd.cdw10 = cns::NAMESPACE as u32;
            self.admin_command(
                "Identify Namespace",
                &cmd,
                Some((ns.as_mut_bytes(), Direction::FromController)),
            )?;
            if let Ok(n) = Namespace::from_identify(nsid, *ns, &self.identify, self.max_transfer) {
                out.push(n);
            }
        }
        Ok(out)
    }

    /// Run an admin command on the admin queue (blocking, bounded by the
    /// command timeout). Returns completion DW0.
    pub fn admin_command(
        &self,
        what: &'static str,
        cmd: &Command,
        data: Option<(&mut [u8], Direction)>,
    ) -> Result<u32, TcpError> {
        self.assoc
            .with_admin(|c| c.admin_command(what, cmd, data).map(|(dw0, _)| dw0))
    }

    /// Create an I/O queue (a connection of its own, Connected with the
    /// lowest free QID) for the calling thread.
    pub fn create_queue(&self, opts: TcpQueueOptions) -> Result<TcpQueue, TcpError> {
        if !(1..=1024).contains(&opts.entries) {
            return Err(TcpError::Invalid("a TCP queue holds 1 to 1024 commands"));
        }
        let Some(qid) = self.assoc.take_qid() else {
            return Err(TcpError::Invalid(
                "every I/O queue ID is in use (TcpDeviceOptions::max_io_queues)",
            ));
        };
        let release = |e| {
            self.assoc.release_qid(qid);
            e
        };
        let generation = match self.assoc.standing() {
            Standing::Live(g) => g,
            Standing::Reconnecting => {
                return Err(release(TcpError::Recovering {
                    addr: self.assoc.target().addr,
                    last_error: "the association is being re-established".into(),
                }));
            }
            Standing::Failed(why) => {
                return Err(release(TcpError::Failed {
                    addr: self.assoc.target().addr,
                    why,
                }));
            }
        };
        let conn = match self.assoc.connect_io_queue(generation, qid, opts.entries) {
            Some(Ok(c)) => c,
            Some(Err(e)) => return Err(release(e)),
            None => {
                return Err(release(TcpError::Recovering {
                    addr: self.assoc.target().addr,
                    last_error: "the association failed while the queue connected".into(),
                }));
            }
        };
        let t = TcpTransport::new(
            self.assoc.clone(),
            conn,
            generation,
            qid,
            opts.entries,
            opts.close_timeout,
        );
        let scan = ControllerOptions::default().timeout_scan_interval;
        Ok(QueuePair::new(t, opts.timeout, opts.retry_limit, scan))
    }

    /// A pool of `bytes` for this device's buffers (see
    /// [`super::buf::host_pool`]).
    pub fn create_pool(&self, bytes: usize) -> Result<DmaPool, DmaError> {
        super::buf::host_pool(bytes)
    }

    /// The active namespaces with a usable format, in NSID order.
    pub fn namespaces(&self) -> &[Namespace] {
        &self.namespaces
    }
    /// Identify Controller data.
    pub fn identify(&self) -> &IdentifyController {
        &self.identify
    }
    /// Largest transfer one command may move (MDTS, bounded by the
    /// connection options).
    pub fn max_transfer_bytes(&self) -> usize {
        self.max_transfer
    }
    /// What the first association negotiated (digests, MAXH2CDATA,
    /// IOCCSZ, CAP, VS, KATO).
    pub fn params(&self) -> &TcpParams {
        &self.params
    }
    /// The controller ID of the first association.
    pub fn cntlid(&self) -> u16 {
        self.cntlid
    }
    /// The subsystem and address.
    pub fn target(&self) -> &TcpTarget {
        self.assoc.target()
    }
    /// Digests, KATO, connect and admin command timeouts it was opened with.
    pub fn session(&self) -> &SessionOptions {
        self.assoc.session()
    }
    /// Failures, reconnections, Keep Alives and Aborts so far.
    pub fn stats(&self) -> AssociationStats {
        self.assoc.stats()
    }
    /// Whether the association is up; `Err` with the reason once it failed
    /// for good; `Ok(false)` while it is being re-established.
    pub fn is_live(&self) -> Result<bool, String> {
        match self.assoc.standing() {
            Standing::Live(_) => Ok(true),
            Standing::Reconnecting => Ok(false),
            Standing::Failed(why) => Err(why),
        }
    }
    /// `traddr:trsvcid subnqn` for messages.
    pub fn name(&self) -> String {
        format!(
            "{} {}",
            self.assoc.target().addr,
            self.assoc.target().subnqn
        )
    }

    /// Shut the controller down (CC.SHN) and stop the keep-alive thread.
    /// Queues still open fail what they hold. Also done on drop.
    pub fn shutdown(mut self) -> Result<(), TcpError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), TcpError> {
        let Some(worker) = self.worker.take() else {
            return Ok(());
        };
        let r = self.assoc.close();
        worker.thread().unpark();
        let _ = worker.join();
        r
    }
}

impl Drop for TcpDevice {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
