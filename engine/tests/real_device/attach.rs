//! A namespace attached at run time, seen by a running program (NVMe Base
//! 2.0 §5.23 Namespace Attachment, §5.2 Namespace Attribute Changed). Runs
//! when `NVME_ENGINE_TEST_PCI` names a controller bound by
//! `scripts/setup.sh`, `NVME_ENGINE_TEST_WRITE=1` allows writes, and
//! `NVME_ENGINE_TEST_DETACHED_NSID` names a namespace of the controller's
//! subsystem that is not attached to it (the QEMU guest's nsid 7; on a real
//! SSD, one created with `nvme create-ns` and left detached). The test
//! leaves it detached again.
//!
//! With I/O running on the first namespace from another thread the whole
//! time, the test attaches the namespace to this controller (its ID from
//! Identify Controller CNTLID), takes the Namespace Attached event from
//! [`Controller::events`], finds the namespace in
//! [`Controller::active_namespaces`], writes and reads it through a new
//! queue pair, detaches it, takes the Namespace Detached event, and sees a
//! read of it refused by the controller. Every I/O on the first namespace
//! succeeds and reads back what was written.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nvme_engine::dma::{DmaBuf, DmaPool};
use nvme_engine::spec::command::{
    AdminOpcode, Command, NS_ATTACH_SEL_ATTACH, NS_ATTACH_SEL_DETACH,
};
use nvme_engine::spec::status::{StatusCodeType, generic};
use nvme_engine::vfio::RealDevice;
use nvme_engine::{
    Controller, ControllerEvent, ControllerOptions, IoCompletion, IoError, IoQueuePair, Namespace,
    QueuePairOptions,
};

/// The controller and the detached namespace, or why the test is skipped.
fn target(test: &str) -> Option<(String, u32)> {
    let addr = super::addresses().and_then(|a| a.into_iter().next());
    let nsid = std::env::var("NVME_ENGINE_TEST_DETACHED_NSID")
        .ok()
        .and_then(|v| v.parse::<u32>().ok());
    match (addr, nsid) {
        (Some(a), Some(n)) if super::flag("NVME_ENGINE_TEST_WRITE") => Some((a, n)),
        _ => {
            eprintln!(
                "{test}: SKIPPED: set NVME_ENGINE_TEST_PCI=<bdf> to a controller bound by \
                 `sudo scripts/setup.sh`, NVME_ENGINE_TEST_WRITE=1, and \
                 NVME_ENGINE_TEST_DETACHED_NSID=<nsid> to a namespace of its subsystem that \
                 is not attached to it (the test attaches, writes and detaches it)"
            );
            None
        }
    }
}

/// Send Namespace Attachment for `nsid` with this controller alone in the
/// Controller List.
fn attachment(
    ctrl: &Controller<RealDevice>,
    pool: &mut DmaPool,
    nsid: u32,
    sel: u32,
) -> Result<(), String> {
    let cntlid = ctrl.identify().cntlid.get();
    let mut list = pool
        .alloc(4096)
        .map_err(|e| format!("controller list buffer: {e}"))?;
    assert!(list.set_window(0, 4096));
    list.fill(0);
    // Number of identifiers, then the identifiers (16 bits each, LE).
    let mut head = [0u8; 4];
    head[..2].copy_from_slice(&1u16.to_le_bytes());
    head[2..].copy_from_slice(&cntlid.to_le_bytes());
    assert!(list.write_at(0, &head));
    let mut cmd = Command::new(AdminOpcode::NAMESPACE_ATTACHMENT.0, nsid);
    cmd.cdw10 = sel;
    let what = if sel == NS_ATTACH_SEL_ATTACH {
        "attach"
    } else {
        "detach"
    };
    let r = ctrl.admin_command(cmd, Some(&mut list));
    let _ = pool.free(list);
    r.map(drop).map_err(|e| {
        format!("Namespace Attachment ({what} nsid {nsid} to controller {cntlid}): {e}")
    })
}

/// One completion, the command having been submitted.
fn complete(qp: &mut IoQueuePair<RealDevice>) -> IoCompletion {
    qp.ring_doorbell();
    loop {
        let mut out = None;
        qp.process_completions(1, |c| out = Some(c));
        if let Some(c) = out {
            return c;
        }
        qp.check_timeouts(Instant::now());
        std::thread::yield_now();
    }
}

/// The next completion, which must have succeeded: its token and buffer.
fn succeeded(qp: &mut IoQueuePair<RealDevice>, what: &str) -> (u64, DmaBuf) {
    let c = complete(qp);
    assert!(c.result.is_ok(), "{what} {}: {:?}", c.token, c.result);
    (c.token, c.buf.expect("the buffer comes back"))
}

/// Queue depth of the background I/O.
const DEPTH: usize = 8;

/// Background I/O on `ns` until `stop`: rounds of `DEPTH` 4 KiB writes in
/// flight together, then reads of the same blocks checked against what was
/// written; `rounds` counts finished rounds. Panics on any failure.
fn background_io(
    ctrl: &Controller<RealDevice>,
    ns: &Namespace,
    stop: &AtomicBool,
    rounds: &AtomicU64,
) {
    let mut qp = ctrl
        .create_io_qpair(QueuePairOptions::default().with_entries(32))
        .expect("queue pair for the background I/O");
    let mut pool = ctrl.create_pool(1 << 20).expect("pool");
    let len = 4096usize.max(ns.block_size() as usize);
    let blocks = (len / ns.block_size() as usize) as u64;
    let mut round = 0u64;
    while !stop.load(Ordering::Acquire) {
        let mut written = Vec::new();
        for slot in 0..DEPTH as u64 {
            let data: Vec<u8> = (0..len)
                .map(|i| (i as u64 ^ round.wrapping_mul(31) ^ slot) as u8)
                .collect();
            let mut b = pool.alloc(len).expect("alloc");
            assert!(b.set_window(0, len) && b.write_at(0, &data));
            qp.write(ns, 4096 + slot * blocks, b, false, slot)
                .unwrap_or_else(|e| panic!("background write refused: {}", e.kind));
            written.push(data);
        }
        for _ in 0..DEPTH {
            let (token, b) = succeeded(&mut qp, "background write");
            qp.read(ns, 4096 + token * blocks, b, token)
                .unwrap_or_else(|e| panic!("background read refused: {}", e.kind));
        }
        for _ in 0..DEPTH {
            let (token, b) = succeeded(&mut qp, "background read");
            let mut got = vec![0u8; len];
            b.read_at(0, &mut got);
            assert!(
                got == written[token as usize],
                "background read {token} differs from what was written"
            );
            pool.free(b).expect("a buffer of this pool");
        }
        round += 1;
        rounds.store(round, Ordering::Release);
    }
    qp.delete().expect("delete the background queue pair");
}

/// Wait until the background I/O finished a round after `after`.
fn another_round(rounds: &AtomicU64, after: u64) -> u64 {
    let start = Instant::now();
    loop {
        let r = rounds.load(Ordering::Acquire);
        if r > after {
            return r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the background I/O made no progress in 60 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Detaches the namespace when the test fails between attach and detach,
/// so the next test sees the controller as the boot made it.
struct Detach<'a> {
    ctrl: &'a Controller<RealDevice>,
    nsid: u32,
    armed: bool,
}

impl Drop for Detach<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(mut pool) = self.ctrl.create_pool(1 << 20) {
            // Best effort while a failure unwinds: the failure is the news.
            let _ = attachment(self.ctrl, &mut pool, self.nsid, NS_ATTACH_SEL_DETACH);
        }
    }
}

/// Write, read back and compare a few sizes on the attached namespace.
fn use_attached(ctrl: &Controller<RealDevice>, ns: &Namespace, pool: &mut DmaPool) {
    let mut qp = ctrl
        .create_io_qpair(QueuePairOptions::default().with_entries(16))
        .expect("a new queue pair for the attached namespace");
    let bs = ns.block_size() as usize;
    for (i, blocks) in [1usize, 8, ns.max_blocks_per_io().min(64) as usize]
        .into_iter()
        .enumerate()
    {
        let len = blocks * bs;
        let lba = (i as u64) * 128;
        let data: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();
        let mut b = pool.alloc(len).expect("alloc");
        assert!(b.set_window(0, len) && b.write_at(0, &data));
        let b = qp
            .write_sync(ns, lba, b, false)
            .unwrap_or_else(|e| panic!("write of {blocks} blocks to nsid {}: {e}", ns.id()));
        let b = qp
            .read_sync(ns, lba, b)
            .unwrap_or_else(|e| panic!("read of {blocks} blocks from nsid {}: {e}", ns.id()));
        let mut got = vec![0u8; len];
        b.read_at(0, &mut got);
        assert!(
            got == data,
            "nsid {}: {blocks} blocks read back differ",
            ns.id()
        );
        pool.free(b).expect("a buffer of this pool");
    }
    qp.delete().expect("delete the queue pair");
}

#[test]
fn real_controller_attaches_and_detaches_a_namespace_while_io_runs_on_another() {
    let test = "real_controller_attaches_and_detaches_a_namespace_while_io_runs_on_another";
    let Some((addr, nsid)) = target(test) else {
        return;
    };
    let dev =
        RealDevice::open(&addr, super::options()).unwrap_or_else(|e| panic!("opening {addr}: {e}"));
    let ctrl = Controller::new(dev, ControllerOptions::default())
        .unwrap_or_else(|e| panic!("bring-up of {addr}: {e}"));
    let id = ctrl.identify();
    eprintln!(
        "{addr}: subsystem {:?}, controller ID {}, CMIC {:#x}; nsid {nsid} is to be attached",
        nvme_engine::spec::identify::ascii_field(&id.subnqn),
        id.cntlid.get(),
        id.cmic
    );
    assert!(
        ctrl.active_namespace(nsid).is_none(),
        "nsid {nsid} is already attached to {addr}; NVME_ENGINE_TEST_DETACHED_NSID must name a \
         detached namespace"
    );
    let first = ctrl
        .namespaces()
        .iter()
        .find(|n| n.metadata().is_none() && !n.read_only() && n.blocks() >= 8192)
        .expect("a plain writable namespace for the background I/O")
        .clone();
    let mut pool = ctrl.create_pool(4 << 20).expect("pool");
    let stop = AtomicBool::new(false);
    let rounds = AtomicU64::new(0);

    std::thread::scope(|s| {
        let io = s.spawn(|| background_io(&ctrl, &first, &stop, &rounds));
        // Stops the background I/O however the rest ends.
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let _stop = Stop(&stop);
        let before = another_round(&rounds, 0);

        attachment(&ctrl, &mut pool, nsid, NS_ATTACH_SEL_ATTACH).unwrap();
        let mut guard = Detach {
            ctrl: &ctrl,
            nsid,
            armed: true,
        };
        let ns = match super::events::wait_for(&ctrl, |e| {
            matches!(e, ControllerEvent::NamespaceAttached(n) if n.id() == nsid)
                || matches!(e, ControllerEvent::NamespaceUnusable { nsid: n, .. } if *n == nsid)
        }) {
            ControllerEvent::NamespaceAttached(ns) => ns,
            other => panic!("nsid {nsid} attached but not usable: {other}"),
        };
        let active: Vec<u32> = ctrl.active_namespaces().iter().map(|n| n.id()).collect();
        eprintln!("{addr}: active namespaces after attach: {active:?}");
        assert!(active.contains(&nsid), "{active:?}");
        assert!(active.contains(&first.id()), "{active:?}");
        use_attached(&ctrl, &ns, &mut pool);

        // A queue pair whose namespace goes away: the read is refused —
        // by the driver, or by the controller (Invalid Namespace or Format;
        // QEMU says Invalid Field in Command) — and the buffer comes back.
        let mut qp = ctrl
            .create_io_qpair(QueuePairOptions::default().with_entries(16))
            .expect("queue pair");
        guard.armed = false;
        attachment(&ctrl, &mut pool, nsid, NS_ATTACH_SEL_DETACH).unwrap();
        super::events::wait_for(
            &ctrl,
            |e| matches!(e, ControllerEvent::NamespaceDetached { nsid: n } if *n == nsid),
        );
        assert!(ctrl.active_namespace(nsid).is_none());
        assert!(
            ctrl.active_namespace(first.id()).is_some(),
            "the namespace with I/O running stays"
        );
        let b = pool.alloc(ns.block_size() as usize).expect("alloc");
        match qp.read(&ns, 0, b, 99) {
            Ok(()) => {
                let c = complete(&mut qp);
                match &c.result {
                    Err(IoError::Status(st))
                        if st.sct() == StatusCodeType::GENERIC
                            && [generic::INVALID_NAMESPACE, generic::INVALID_FIELD]
                                .contains(&st.sc()) =>
                    {
                        eprintln!("{addr}: read of detached nsid {nsid}: {st}");
                    }
                    other => panic!("read of detached nsid {nsid}: {other:?}"),
                }
                assert!(c.buf.is_some(), "the buffer comes back");
            }
            Err(e) => {
                eprintln!("{addr}: read of detached nsid {nsid} refused: {}", e.kind);
                assert!(e.buf.is_some(), "the buffer comes back");
            }
        }
        qp.delete().expect("delete queue pair");

        let after = another_round(&rounds, before);
        drop(_stop);
        io.join().expect("the background I/O never failed");
        let stats = ctrl.event_stats();
        eprintln!(
            "{addr}: nsid {nsid} attached, used and detached while {} rounds of {DEPTH} \
             writes and reads ran on nsid {} ({stats:?})",
            after,
            first.id()
        );
        assert!(stats.namespace_notices >= 2, "{stats:?}");
        assert_eq!(
            stats.requests_outstanding, stats.requests_wanted,
            "re-armed"
        );
    });
    ctrl.shutdown().expect("shutdown");
}
