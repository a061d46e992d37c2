//! Shared harness for the emulated-controller tests: a minimal host that
//! drives the controller through the `Device` trait with queues in DMA memory.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use nvme_emu::{EmuConfig, EmuController, EmuHandle};
use nvme_engine::Device;
use nvme_engine::dma::{self, DmaBuf, DmaPool};
use nvme_engine::spec::command::{CREATE_Q_PC, cns};
use nvme_engine::spec::identify::{IdentifyController, IdentifyNamespace};
use nvme_engine::spec::registers::{Cc, Csts, offset};
use nvme_engine::spec::{
    command::{AdminOpcode, Command, NvmOpcode},
    completion::Completion,
    status::{Status, StatusCodeType},
};
use zerocopy::FromBytes;

pub struct Qp {
    pub qid: u16,
    pub size: u32,
    pub sq: DmaBuf,
    pub cq: DmaBuf,
    pub tail: u32,
    pub head: u32,
    pub phase: bool,
}

impl Qp {
    pub fn new(pool: &mut DmaPool, qid: u16, size: u32) -> Self {
        let mut sq = pool.alloc(size as usize * 64).unwrap();
        let mut cq = pool.alloc(size as usize * 16).unwrap();
        sq.fill(0);
        cq.fill(0);
        Qp {
            qid,
            size,
            sq,
            cq,
            tail: 0,
            head: 0,
            phase: true,
        }
    }
}

pub struct Host {
    pub dev: EmuController,
    pub emu: EmuHandle,
    pub pool: DmaPool,
    pub admin: Qp,
    pub next_cid: u16,
}

pub fn wait_until(mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "device did not respond"
        );
        std::thread::yield_now();
    }
}

impl Host {
    pub fn new(cfg: EmuConfig) -> Host {
        let dev = EmuController::new(cfg).unwrap();
        let emu = dev.handle();
        let region = dma::allocate(&dev, 4 << 20).unwrap();
        let mut pool = DmaPool::new(region);
        let admin = Qp::new(&mut pool, 0, 16);
        let mut h = Host {
            dev,
            emu,
            pool,
            admin,
            next_cid: 1,
        };
        h.enable();
        h
    }

    pub fn enable(&mut self) {
        let d = &self.dev;
        d.write32(
            offset::AQA,
            (self.admin.size - 1) | (self.admin.size - 1) << 16,
        );
        d.write64(offset::ASQ, self.admin.sq.iova());
        d.write64(offset::ACQ, self.admin.cq.iova());
        d.write32(offset::CC, cc_enabled().into());
        wait_until(|| Csts::from(self.dev.read32(offset::CSTS)).rdy());
    }

    pub fn cid(&mut self) -> u16 {
        self.next_cid = self.next_cid.wrapping_add(1).max(1);
        self.next_cid
    }

    /// Submit on I/O queue `q`, wait for its completion, release the CQ slot.
    pub fn exec(&mut self, q: &mut Qp, cmd: Command) -> Completion {
        let cid = self.cid();
        exec(&self.dev, q, cmd, cid)
    }

    pub fn admin(&mut self, cmd: Command) -> Completion {
        let cid = self.cid();
        exec(&self.dev, &mut self.admin, cmd, cid)
    }

    pub fn create_io(&mut self, qid: u16, size: u32) -> Qp {
        let q = Qp::new(&mut self.pool, qid, size);
        let c = self.admin(create_cq(qid, size, q.cq.iova()));
        assert_eq!(c.status(), Status::SUCCESS);
        let c = self.admin(create_sq(qid, size, qid, q.sq.iova()));
        assert_eq!(c.status(), Status::SUCCESS);
        q
    }

    pub fn buf(&mut self, len: usize) -> DmaBuf {
        let mut b = self.pool.alloc(len).unwrap();
        b.set_window(0, len);
        b
    }
}

/// Put `cmd` in the SQ with `cid` without ringing.
pub fn push(q: &mut Qp, mut cmd: Command, cid: u16) {
    cmd.set_cid(cid);
    assert!(q.sq.write_at(q.tail as usize * 64, zerocopy::IntoBytes::as_bytes(&cmd)));
    q.tail = (q.tail + 1) % q.size;
}

pub fn ring_sq(dev: &impl Device, q: &Qp) {
    dev.write32(0x1000 + 8 * q.qid as usize, q.tail);
}

pub fn ring_cq(dev: &impl Device, q: &Qp) {
    dev.write32(0x1000 + 8 * q.qid as usize + 4, q.head);
}

/// The next CQE if its phase is current.
pub fn peek(q: &Qp) -> Option<Completion> {
    let mut raw = [0u8; 16];
    q.cq.read_at(q.head as usize * 16, &mut raw);
    let c = Completion::read_from_bytes(&raw).unwrap();
    (c.phase() == q.phase).then(|| {
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        q.cq.read_at(q.head as usize * 16, &mut raw);
        Completion::read_from_bytes(&raw).unwrap()
    })
}

/// Take the next CQE (waiting for it) without ringing the CQ doorbell.
pub fn pop(q: &mut Qp) -> Completion {
    let mut got = None;
    wait_until(|| {
        got = peek(q);
        got.is_some()
    });
    q.head += 1;
    if q.head == q.size {
        q.head = 0;
        q.phase = !q.phase;
    }
    got.unwrap()
}

/// Submit, wait for the completion, release its CQ slot.
pub fn exec(dev: &impl Device, q: &mut Qp, cmd: Command, cid: u16) -> Completion {
    push(q, cmd, cid);
    ring_sq(dev, q);
    let c = pop(q);
    ring_cq(dev, q);
    assert_eq!(c.cid, cid);
    assert_eq!(c.sqid, q.qid);
    c
}

pub fn cc_enabled() -> Cc {
    Cc::new().with_en(true).with_iosqes(6).with_iocqes(4)
}

pub fn create_cq(qid: u16, size: u32, iova: u64) -> Command {
    let mut c = Command::new(AdminOpcode::CREATE_IO_CQ.0, 0);
    c.prp1 = iova;
    c.cdw10 = qid as u32 | (size - 1) << 16;
    c.cdw11 = CREATE_Q_PC;
    c
}

pub fn create_sq(qid: u16, size: u32, cqid: u16, iova: u64) -> Command {
    let mut c = Command::new(AdminOpcode::CREATE_IO_SQ.0, 0);
    c.prp1 = iova;
    c.cdw10 = qid as u32 | (size - 1) << 16;
    c.cdw11 = CREATE_Q_PC | (cqid as u32) << 16;
    c
}

pub fn rw(op: NvmOpcode, nsid: u32, slba: u64, blocks: u32, buf: &DmaBuf) -> Command {
    let mut c = Command::new(op.0, nsid);
    c.set_slba(slba);
    c.cdw12 = blocks - 1;
    c.prp1 = buf.iova();
    // Buffers here are at most two pages unless a test builds a list.
    c.prp2 = buf.iova() + 4096;
    c
}

pub fn identify(cns: u8, nsid: u32, buf: &DmaBuf) -> Command {
    let mut c = Command::new(AdminOpcode::IDENTIFY.0, nsid);
    c.cdw10 = cns as u32;
    c.prp1 = buf.iova();
    c
}

/// The 4 KiB data of a successful Identify with this CNS and NSID.
pub fn identify_data(h: &mut Host, cns: u8, nsid: u32) -> Vec<u8> {
    let b = h.buf(4096);
    assert_eq!(h.admin(identify(cns, nsid, &b)).status(), Status::SUCCESS);
    b.to_vec()
}

/// Identify Controller, which must succeed.
pub fn identify_controller(h: &mut Host) -> IdentifyController {
    IdentifyController::read_from_bytes(&identify_data(h, cns::CONTROLLER, 0)).unwrap()
}

/// Identify Namespace `nsid`, which must succeed.
pub fn identify_namespace(h: &mut Host, nsid: u32) -> IdentifyNamespace {
    IdentifyNamespace::read_from_bytes(&identify_data(h, cns::NAMESPACE, nsid)).unwrap()
}

pub fn st(sct: StatusCodeType, sc: u8) -> Status {
    Status::new(sct, sc)
}

pub fn assert_status(c: &Completion, want: Status) {
    assert!(
        c.status().code_eq(want),
        "got {}, want {}",
        c.status(),
        want
    );
}
