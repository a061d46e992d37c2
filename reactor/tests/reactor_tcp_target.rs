//! Reactors over a real NVMe/TCP target: the Linux kernel's `nvmet-tcp`.
//! Runs only when `NVME_ENGINE_TEST_TCP` names the target's address
//! (`127.0.0.1:4420`) and `NVME_ENGINE_TEST_TCP_NQN` its subsystem (default
//! the one `scripts/nvmf-target.sh setup` makes); `scripts/qemu-test.sh
//! --mode tcp` runs it in the QEMU guest. Writes go to namespace 2 (the
//! file-backed one): use a scratch target.

mod common;

use std::net::SocketAddr;

use nvme_engine::tcp::{TcpDevice, TcpDeviceOptions, TcpTarget};
use nvme_reactor::{DirectQueue, Producer, ReactorSet, Request, TcpController};

use common::{config, fill, holds, run_all, wait_for};

const DEFAULT_NQN: &str = "nqn.2026-12.io.nvme-engine:target";
/// The file-backed namespace of `nvmf-target.sh` (its data reads back).
const NSID: u32 = 2;

fn controller() -> Option<TcpController> {
    let Ok(addr) = std::env::var("NVME_ENGINE_TEST_TCP") else {
        eprintln!(
            "skipped: set NVME_ENGINE_TEST_TCP=<ip>:<port> of an NVMe/TCP target (e.g. one made by \
             scripts/nvmf-target.sh setup) to run the reactor's NVMe/TCP tests"
        );
        return None;
    };
    let addr: SocketAddr = addr
        .parse()
        .unwrap_or_else(|e| panic!("NVME_ENGINE_TEST_TCP={addr}: not <ip>:<port>: {e}"));
    let nqn = std::env::var("NVME_ENGINE_TEST_TCP_NQN").unwrap_or_else(|_| DEFAULT_NQN.into());
    let dev = TcpDevice::open(TcpTarget::new(addr, nqn), TcpDeviceOptions::default())
        .expect("the kernel target's controller opens");
    Some(TcpController::new(dev))
}

/// `per` writes of a unique pattern from each producer (its own blocks),
/// then reads of the same blocks, each checked.
fn write_then_read(producers: &mut [Producer], block: u64, per: u64) -> u64 {
    let lba = |pi: usize, i: u64| (pi as u64 * per + i) * (4096 / block);
    let mut writes = Vec::new();
    for (pi, p) in producers.iter_mut().enumerate() {
        for i in 0..per {
            let key = pi as u64 * 1000 + i;
            let mut b = p.alloc(4096).unwrap();
            fill(&mut b, key);
            writes.push((pi, Request::write(0, NSID, lba(pi, i), b, false, key)));
        }
    }
    for r in run_all(producers, writes) {
        assert!(r.result.is_ok(), "write {}: {:?}", r.token, r.result);
        producers[(r.token / 1000) as usize]
            .free(r.buf.expect("buffer back"))
            .unwrap();
    }
    let mut reads = Vec::new();
    for (pi, p) in producers.iter_mut().enumerate() {
        for i in 0..per {
            let key = pi as u64 * 1000 + i;
            reads.push((
                pi,
                Request::read(0, NSID, lba(pi, i), p.alloc(4096).unwrap(), key),
            ));
        }
    }
    let answers = run_all(producers, reads);
    for r in &answers {
        assert!(r.result.is_ok(), "read {}: {:?}", r.token, r.result);
        let b = r.buf.as_ref().expect("buffer back");
        assert!(holds(b, r.token), "read back token {}", r.token);
    }
    answers.len() as u64 * 2
}

#[test]
fn two_reactors_with_two_producers_write_and_read_back_on_the_kernel_target_then_shut_down() {
    let Some(ctrl) = controller() else { return };
    let block = ctrl
        .device()
        .namespaces()
        .iter()
        .find(|n| n.id() == NSID)
        .expect("namespace 2 of nvmf-target.sh")
        .block_size() as u64;
    let mut c = config(2);
    c.queue_entries = Some(32);
    let set = ReactorSet::start_tcp(c, vec![ctrl.clone()]).expect("each reactor connects a queue");
    let mut producers = vec![set.producer(0).unwrap(), set.producer(1).unwrap()];
    let done = write_then_read(&mut producers, block, 64);
    let report = set.shutdown();
    print!("{report}");
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.completed(), done, "every request answered once");
    assert!(
        report.reactors.iter().all(|r| r.stats.completed > 0),
        "both reactors did I/O: {report}"
    );
    drop(producers);
    let s = ctrl.device().stats();
    assert_eq!(s.failures, 0, "{s:?}");
    ctrl.into_device()
        .expect("no reactor holds the controller")
        .shutdown()
        .expect("CC.SHN");
}

#[test]
fn direct_mode_writes_and_reads_back_on_the_kernel_target() {
    let Some(ctrl) = controller() else { return };
    let mut q = DirectQueue::new_tcp(&ctrl, Some(8), 1 << 20).expect("the queue connects");
    let mut b = q.alloc(8192).unwrap();
    fill(&mut b, 77);
    q.submit(Request::write(0, NSID, 4096, b, true, 1))
        .map_err(|_| "not submitted")
        .unwrap();
    let mut got = Vec::new();
    wait_for(|| {
        q.poll(8, |r| got.push(r));
        q.check_timeouts(std::time::Instant::now());
        !got.is_empty()
    });
    let w = got.pop().unwrap();
    assert!(w.result.is_ok(), "{:?}", w.result);
    q.submit(Request::read(0, NSID, 4096, w.buf.unwrap(), 2))
        .map_err(|_| "not submitted")
        .unwrap();
    wait_for(|| {
        q.poll(8, |r| got.push(r));
        !got.is_empty()
    });
    let r = got.pop().unwrap();
    assert!(r.result.is_ok(), "{:?}", r.result);
    assert!(holds(r.buf.as_ref().unwrap(), 77));
    assert!(q.delete().expect("deleted").is_empty());
}
