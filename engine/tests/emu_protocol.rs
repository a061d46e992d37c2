//! The emulated controller driven directly through the `Device` trait, the
//! way a driver does: registers, queues in DMA memory, doorbells, CQEs.

use std::time::{Duration, Instant};

use nvme_engine::Device;
use nvme_engine::dma::{self, DmaBuf, DmaPool};
use nvme_engine::emu::{EmuConfig, EmuController, EmuHandle, EmuNamespaceConfig};
use nvme_engine::spec::command::{CREATE_Q_PC, cns};
use nvme_engine::spec::identify::{IdentifyController, IdentifyNamespace, NamespaceList};
use nvme_engine::spec::registers::{Cap, Cc, Csts, offset};
use nvme_engine::spec::status::generic;
use nvme_engine::spec::{AdminOpcode, Command, Completion, NvmOpcode, Status, StatusCodeType};
use zerocopy::FromBytes;

struct Qp {
    qid: u16,
    size: u32,
    sq: DmaBuf,
    cq: DmaBuf,
    tail: u32,
    head: u32,
    phase: bool,
}

impl Qp {
    fn new(pool: &mut DmaPool, qid: u16, size: u32) -> Self {
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

struct Host {
    dev: EmuController,
    emu: EmuHandle,
    pool: DmaPool,
    admin: Qp,
    next_cid: u16,
}

fn wait_until(mut f: impl FnMut() -> bool) {
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
    fn new(cfg: EmuConfig) -> Host {
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

    fn enable(&mut self) {
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

    fn cid(&mut self) -> u16 {
        self.next_cid = self.next_cid.wrapping_add(1).max(1);
        self.next_cid
    }

    /// Submit on I/O queue `q`, wait for its completion, release the CQ slot.
    fn exec(&mut self, q: &mut Qp, cmd: Command) -> Completion {
        let cid = self.cid();
        exec(&self.dev, q, cmd, cid)
    }

    fn admin(&mut self, cmd: Command) -> Completion {
        let cid = self.cid();
        exec(&self.dev, &mut self.admin, cmd, cid)
    }

    fn create_io(&mut self, qid: u16, size: u32) -> Qp {
        let q = Qp::new(&mut self.pool, qid, size);
        let c = self.admin(create_cq(qid, size, q.cq.iova()));
        assert_eq!(c.status(), Status::SUCCESS);
        let c = self.admin(create_sq(qid, size, qid, q.sq.iova()));
        assert_eq!(c.status(), Status::SUCCESS);
        q
    }

    fn buf(&mut self, len: usize) -> DmaBuf {
        let mut b = self.pool.alloc(len).unwrap();
        b.set_window(0, len);
        b
    }
}

/// Put `cmd` in the SQ with `cid` without ringing.
fn push(q: &mut Qp, mut cmd: Command, cid: u16) {
    cmd.set_cid(cid);
    assert!(q.sq.write_at(q.tail as usize * 64, zerocopy::IntoBytes::as_bytes(&cmd)));
    q.tail = (q.tail + 1) % q.size;
}

fn ring_sq(dev: &impl Device, q: &Qp) {
    dev.write32(0x1000 + 8 * q.qid as usize, q.tail);
}

fn ring_cq(dev: &impl Device, q: &Qp) {
    dev.write32(0x1000 + 8 * q.qid as usize + 4, q.head);
}

/// The next CQE if its phase is current.
fn peek(q: &Qp) -> Option<Completion> {
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
fn pop(q: &mut Qp) -> Completion {
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
fn exec(dev: &impl Device, q: &mut Qp, cmd: Command, cid: u16) -> Completion {
    push(q, cmd, cid);
    ring_sq(dev, q);
    let c = pop(q);
    ring_cq(dev, q);
    assert_eq!(c.cid, cid);
    assert_eq!(c.sqid, q.qid);
    c
}

fn cc_enabled() -> Cc {
    Cc::new().with_en(true).with_iosqes(6).with_iocqes(4)
}

fn create_cq(qid: u16, size: u32, iova: u64) -> Command {
    let mut c = Command::new(AdminOpcode::CREATE_IO_CQ.0, 0);
    c.prp1 = iova;
    c.cdw10 = qid as u32 | (size - 1) << 16;
    c.cdw11 = CREATE_Q_PC;
    c
}

fn create_sq(qid: u16, size: u32, cqid: u16, iova: u64) -> Command {
    let mut c = Command::new(AdminOpcode::CREATE_IO_SQ.0, 0);
    c.prp1 = iova;
    c.cdw10 = qid as u32 | (size - 1) << 16;
    c.cdw11 = CREATE_Q_PC | (cqid as u32) << 16;
    c
}

fn rw(op: NvmOpcode, nsid: u32, slba: u64, blocks: u32, buf: &DmaBuf) -> Command {
    let mut c = Command::new(op.0, nsid);
    c.set_slba(slba);
    c.cdw12 = blocks - 1;
    c.prp1 = buf.iova();
    // Buffers here are at most two pages unless a test builds a list.
    c.prp2 = buf.iova() + 4096;
    c
}

fn identify(cns: u8, nsid: u32, buf: &DmaBuf) -> Command {
    let mut c = Command::new(AdminOpcode::IDENTIFY.0, nsid);
    c.cdw10 = cns as u32;
    c.prp1 = buf.iova();
    c
}

fn st(sct: StatusCodeType, sc: u8) -> Status {
    Status::new(sct, sc)
}

fn assert_status(c: &Completion, want: Status) {
    assert!(
        c.status().code_eq(want),
        "got {}, want {}",
        c.status(),
        want
    );
}

#[test]
fn bring_up_reports_capabilities_and_ready() {
    let h = Host::new(EmuConfig::ram(1 << 20));
    let cap = Cap::from(h.dev.read64(offset::CAP));
    assert_eq!(cap.max_queue_entries(), 1024);
    assert!(cap.cqr());
    assert!(cap.supports_nvm());
    assert_eq!(cap.doorbell_stride(), 4);
    assert!(cap.to() > 0);
    assert_eq!(h.dev.read32(offset::VS), 0x0001_0400);
    let csts = Csts::from(h.dev.read32(offset::CSTS));
    assert!(csts.rdy() && !csts.cfs());
    h.dev.write32(offset::CC, 0);
    assert!(!Csts::from(h.dev.read32(offset::CSTS)).rdy());
}

#[test]
fn enabling_with_wrong_entry_sizes_sets_fatal_status() {
    let dev = EmuController::new(EmuConfig::ram(1 << 20)).unwrap();
    let region = dma::allocate(&dev, 1 << 20).unwrap();
    dev.write32(offset::AQA, 0x000f_000f);
    dev.write64(offset::ASQ, region.iova(0).unwrap());
    dev.write64(offset::ACQ, region.iova(8192).unwrap());
    dev.write32(offset::CC, cc_enabled().with_iosqes(7).into());
    let csts = Csts::from(dev.read32(offset::CSTS));
    assert!(csts.cfs() && !csts.rdy());
    // A reset clears it and a correct enable works.
    dev.write32(offset::CC, 0);
    dev.write32(offset::CC, cc_enabled().into());
    let csts = Csts::from(dev.read32(offset::CSTS));
    assert!(csts.rdy() && !csts.cfs());
}

#[test]
fn shutdown_reports_complete() {
    let h = Host::new(EmuConfig::ram(1 << 20));
    h.dev.write32(offset::CC, cc_enabled().with_shn(1).into());
    assert_eq!(Csts::from(h.dev.read32(offset::CSTS)).shst(), 0b10);
}

#[test]
fn identify_controller_namespace_and_list() {
    let cfg = EmuConfig::ram(1 << 20).namespace(EmuNamespaceConfig::ram(4096, 100).read_only());
    let mut h = Host::new(cfg);
    let buf = h.buf(4096);
    let c = h.admin(identify(cns::CONTROLLER, 0, &buf));
    assert_eq!(c.status(), Status::SUCCESS);
    let id = IdentifyController::read_from_bytes(&buf.to_vec()).unwrap();
    assert_eq!(id.sqes, 0x66);
    assert_eq!(id.cqes, 0x44);
    assert_eq!(id.nn.get(), 2);
    assert_eq!(id.mdts, 7);
    assert_eq!(id.serial(), "EMU0001");
    assert!(id.has_volatile_write_cache());
    assert_eq!(id.oncs.get() & 0b1100, 0b1100);

    h.admin(identify(cns::NAMESPACE, 2, &buf));
    let ns = IdentifyNamespace::read_from_bytes(&buf.to_vec()).unwrap();
    assert_eq!(ns.nsze.get(), 100);
    assert_eq!(ns.current_format().lbads(), 12);
    assert!(ns.write_protected());

    h.admin(identify(cns::ACTIVE_NAMESPACES, 1, &buf));
    let list = NamespaceList::read_from_bytes(&buf.to_vec()).unwrap();
    assert_eq!(list.active().collect::<Vec<_>>(), vec![2]);

    let c = h.admin(identify(cns::NAMESPACE, 3, &buf));
    assert_status(&c, st(StatusCodeType::GENERIC, generic::INVALID_NAMESPACE));
    let c = h.admin(identify(0x55, 0, &buf));
    assert_status(&c, st(StatusCodeType::GENERIC, generic::INVALID_FIELD));
}

#[test]
fn write_then_read_round_trips_through_io_queue() {
    let mut h = Host::new(EmuConfig::ram(1 << 20));
    let mut q = h.create_io(1, 64);
    let mut wbuf = h.buf(8192);
    let pattern: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    wbuf.write_at(0, &pattern);
    let c = h.exec(&mut q, rw(NvmOpcode::WRITE, 1, 10, 16, &wbuf));
    assert_eq!(c.status(), Status::SUCCESS);
    let mut rbuf = h.buf(8192);
    rbuf.fill(0);
    let c = h.exec(&mut q, rw(NvmOpcode::READ, 1, 10, 16, &rbuf));
    assert_eq!(c.status(), Status::SUCCESS);
    assert_eq!(rbuf.to_vec(), pattern);
    assert_eq!(h.emu.io_commands(NvmOpcode::WRITE), 1);
    assert_eq!(h.emu.stats().dma_faults, 0);
}

#[test]
fn phase_tag_flips_when_the_cq_wraps() {
    let mut h = Host::new(EmuConfig::ram(1 << 20));
    let mut q = h.create_io(1, 4);
    let buf = h.buf(512);
    let mut phases = Vec::new();
    for i in 0..10 {
        let c = h.exec(&mut q, rw(NvmOpcode::READ, 1, i, 1, &buf));
        assert_eq!(c.status(), Status::SUCCESS);
        assert_eq!(
            c.sqhd as u32,
            (i as u32 + 1) % 4,
            "SQ head after command {i}"
        );
        phases.push(c.phase());
    }
    assert_eq!(
        phases,
        [
            true, true, true, true, false, false, false, false, true, true
        ]
    );
}
