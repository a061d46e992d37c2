//! Reactors over NVMe/TCP against the scripted target on loopback
//! (`engine/tests/tcp_peer/`): each reactor connects its own I/O queue and
//! polls it; two producers write and read back through two reactors; a
//! dropped connection answers every request once and I/O goes on after the
//! association comes back; a stalled command is aborted on the admin queue
//! and answered once without a reconnection; direct mode works the same;
//! shutdown answers everything. The kernel target is the guest's
//! (`scripts/qemu/guest-tcp.sh`).

#[path = "../../engine/tests/tcp_peer/mod.rs"]
mod tcp_peer;

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nvme_engine::IoError;
use nvme_engine::tcp::{RecoveryOptions, TcpDevice, TcpDeviceOptions, TcpQueueOptions, TcpTarget};
use nvme_reactor::{DirectQueue, ReactorSet, Request, RequestError, Response, TcpController};
use tcp_peer::{Peer, serve};

use common::{config, fill, holds, run_all, wait_for};

fn open(peer: &Arc<Peer>, timeout: Duration) -> TcpController {
    let addr = serve(peer.clone());
    let mut o = TcpDeviceOptions::default();
    let mut r = RecoveryOptions::default();
    r.reconnect_delay = Duration::from_millis(50);
    o.recovery = r;
    o.session.kato = Duration::from_secs(5);
    let dev = TcpDevice::open(TcpTarget::new(addr, "nqn.peer"), o).expect("the device opens");
    let mut q = TcpQueueOptions::default();
    q.timeout = timeout;
    // Deleting a queue with a command the target never answers waits this
    // long before closing the connection.
    q.close_timeout = Duration::from_millis(500);
    TcpController::with_options(dev, q)
}

/// Writes of a unique pattern per block from each producer, then reads of
/// the same blocks; every answer is checked.
fn write_then_read(producers: &mut [nvme_reactor::Producer], base: u64, per: u64) {
    let mut writes = Vec::new();
    for (pi, p) in producers.iter_mut().enumerate() {
        for i in 0..per {
            let key = pi as u64 * 1000 + i;
            let mut b = p.alloc(4096).unwrap();
            fill(&mut b, key);
            let lba = base + key % 1000 * 8 + pi as u64 * 512;
            writes.push((pi, Request::write(0, 1, lba, b, false, key)));
        }
    }
    for r in run_all(producers, writes) {
        assert!(r.result.is_ok(), "{:?}", r.result);
        let pi = (r.token / 1000) as usize;
        producers[pi].free(r.buf.expect("buffer back")).unwrap();
    }
    let mut reads = Vec::new();
    for (pi, p) in producers.iter_mut().enumerate() {
        for i in 0..per {
            let key = pi as u64 * 1000 + i;
            let lba = base + key % 1000 * 8 + pi as u64 * 512;
            reads.push((pi, Request::read(0, 1, lba, p.alloc(4096).unwrap(), key)));
        }
    }
    let answers = run_all(producers, reads);
    assert_eq!(answers.len() as u64, per * producers.len() as u64);
    for r in answers {
        assert!(r.result.is_ok(), "{:?}", r.result);
        let b = r.buf.expect("buffer back");
        assert!(holds(&b, r.token), "read back token {}", r.token);
        producers[(r.token / 1000) as usize].free(b).unwrap();
    }
}

#[test]
fn two_reactors_each_on_their_own_connection_write_and_read_back_for_two_producers() {
    let peer = Arc::new(Peer::default());
    let ctrl = open(&peer, Duration::from_secs(30));
    let set = ReactorSet::start_tcp(config(2), vec![ctrl.clone()]).expect("reactors start");
    let mut producers = vec![set.producer(0).unwrap(), set.producer(1).unwrap()];
    write_then_read(&mut producers, 0, 24);
    let report = set.shutdown();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.completed(), 96, "every request answered once");
    assert!(
        report.reactors.iter().all(|r| r.stats.completed > 0),
        "both reactors did I/O on their own queue: {report:?}"
    );
    assert_eq!(ctrl.device().stats().failures, 0);
    // Both queues are gone: the controller can be shut down.
    drop(producers);
    let dev = ctrl.into_device().expect("no reactor holds it");
    dev.shutdown().expect("CC.SHN");
}

#[test]
fn a_dropped_connection_answers_each_request_once_and_io_goes_on_after_the_reconnection() {
    let peer = Arc::new(Peer::default());
    let ctrl = open(&peer, Duration::from_secs(30));
    let set = ReactorSet::start_tcp(config(1), vec![ctrl.clone()]).expect("reactors start");
    let mut producers = vec![set.producer(0).unwrap()];
    peer.drop_after.store(8, Ordering::SeqCst);
    let reads = (0..8u64)
        .map(|i| {
            let b = producers[0].alloc(512).unwrap();
            (0, Request::read(0, 1, i, b, i))
        })
        .collect();
    let mut seen = [0; 8];
    for r in run_all(&mut producers, reads) {
        assert!(
            matches!(
                r.result,
                Err(RequestError::Device(IoError::Transport { .. }))
            ),
            "{:?}",
            r.result
        );
        assert!(r.buf.is_some(), "the buffer comes back");
        seen[r.token as usize] += 1;
    }
    assert_eq!(seen, [1; 8], "each request answered exactly once");
    // Requests submitted meanwhile wait for the reconnection.
    write_then_read(&mut producers, 100, 8);
    assert!(ctrl.device().stats().reconnects >= 1);
    let report = set.shutdown();
    assert!(
        report.reactors.iter().all(|r| r.errors.is_empty()),
        "{report}"
    );
    assert_eq!(report.failed(), 8, "{report}");
    assert!(report.controllers[0].resets >= 1, "{report}");
}

#[test]
fn shutdown_while_the_association_is_down_answers_every_held_request_once_with_its_buffer() {
    let peer = Arc::new(Peer::default());
    let ctrl = open(&peer, Duration::from_secs(30));
    let set = ReactorSet::start_tcp(config(1), vec![ctrl.clone()]).expect("reactors start");
    let mut producers = vec![set.producer(0).unwrap()];
    // The connection drops and the target refuses every new one: the
    // association stays down.
    peer.refuse.store(true, Ordering::SeqCst);
    peer.drop_after.store(1, Ordering::SeqCst);
    let b = producers[0].alloc(512).unwrap();
    let first = run_all(&mut producers, vec![(0, Request::read(0, 1, 0, b, 100))]);
    assert!(first[0].result.is_err(), "{:?}", first[0].result);
    // Held by the queue (its connection failed), whose owner reports the
    // failure; the association cannot come back.
    for i in 0..4u64 {
        let b = producers[0].alloc(512).unwrap();
        producers[0]
            .try_submit(Request::read(0, 1, i, b, i))
            .map_err(|r| r.reason)
            .unwrap();
    }
    // The reactor took them and its queue reported the failure.
    wait_for(|| ctrl.device().stats().failures >= 1);
    let report = set.shutdown_within(Duration::from_millis(100));
    let mut seen = [0; 4];
    producers[0].poll_completions(|r| {
        assert!(r.result.is_err(), "{:?}", r.result);
        assert!(r.buf.is_some(), "token {}: the buffer comes back", r.token);
        seen[r.token as usize] += 1;
    });
    assert_eq!(
        seen, [1; 4],
        "each held request answered exactly once: {report}"
    );
}

#[test]
fn a_stalled_request_is_aborted_and_answered_timed_out_once_without_a_reconnection() {
    let peer = Arc::new(Peer::default());
    peer.honour_abort.store(true, Ordering::SeqCst);
    let ctrl = open(&peer, Duration::from_millis(200));
    let set = ReactorSet::start_tcp(config(1), vec![ctrl.clone()]).expect("reactors start");
    let mut producers = vec![set.producer(0).unwrap()];
    peer.stall_next.store(true, Ordering::SeqCst);
    let b = producers[0].alloc(512).unwrap();
    let answers = run_all(&mut producers, vec![(0, Request::read(0, 1, 0, b, 7))]);
    assert!(
        matches!(answers[0].result, Err(RequestError::TimedOut { .. })),
        "{:?}",
        answers[0].result
    );
    assert!(answers[0].buf.is_some());
    wait_for(|| ctrl.device().stats().aborts_done == 1);
    assert_eq!(peer.aborts.load(Ordering::SeqCst), 1);
    assert_eq!(ctrl.device().stats().failures, 0, "no reconnection");
    write_then_read(&mut producers, 200, 4);
    let report = set.shutdown();
    assert!(
        report.reactors.iter().all(|r| r.errors.is_empty()),
        "{report}"
    );
    assert_eq!((report.timed_out(), report.failed()), (1, 1), "{report}");
    assert_eq!(report.controllers[0].resets, 0);
}

#[test]
fn direct_mode_over_tcp_writes_and_reads_back_and_delete_answers_what_is_left() {
    let peer = Arc::new(Peer::default());
    let ctrl = open(&peer, Duration::from_secs(30));
    let mut q = DirectQueue::new_tcp(&ctrl, Some(8), 1 << 20).expect("the queue connects");
    let mut b = q.alloc(8192).unwrap();
    fill(&mut b, 5);
    q.submit(Request::write(0, 1, 64, b, true, 1))
        .map_err(|_| "not submitted")
        .unwrap();
    let mut got: Vec<Response> = Vec::new();
    wait_for(|| {
        q.poll(8, |r| got.push(r));
        !got.is_empty()
    });
    let w = got.pop().unwrap();
    assert!(w.result.is_ok(), "{:?}", w.result);
    let b = w.buf.unwrap();
    q.submit(Request::read(0, 1, 64, b, 2))
        .map_err(|_| "not submitted")
        .unwrap();
    wait_for(|| {
        q.poll(8, |r| got.push(r));
        !got.is_empty()
    });
    let r = got.pop().unwrap();
    assert!(holds(r.buf.as_ref().unwrap(), 5));
    // One left in flight, stalled: deleting the queue answers it once.
    peer.stall_next.store(true, Ordering::SeqCst);
    q.submit(Request::read(0, 1, 0, r.buf.unwrap(), 3))
        .map_err(|_| "not submitted")
        .unwrap();
    q.poll(8, |r| got.push(r));
    let answered = q.delete().expect("deleted");
    let all: Vec<_> = got.into_iter().chain(answered).collect();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].token, 3);
    assert!(all[0].buf.is_some());
}
