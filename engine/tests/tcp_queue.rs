//! The queue pair over NVMe/TCP against a scripted target on loopback: the
//! Namespace API end to end (in-capsule writes, R2T/H2CData, C2HData), and
//! the failure paths — a dropped connection completes every command in
//! flight once with a transport error and the association comes back; a
//! stalled command is aborted with the Abort admin command and answered
//! once, with nothing reconnected; a stalled target that does not abort
//! times the command out and reconnects; a target that never
//! comes back fails everything with `Gone` after the controller loss
//! timeout. The scripted target (`tcp_peer/`) proves the host's state
//! machine; the kernel target (`tcp_target.rs`, in the guest) proves
//! interoperability.

mod tcp_peer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nvme_engine::tcp::{
    RecoveryOptions, TcpDevice, TcpDeviceOptions, TcpQueue, TcpQueueOptions, TcpTarget,
};
use nvme_engine::{DeviceGone, IoCompletion, IoError};
use tcp_peer::{BLOCKS, Peer, serve};

fn open(addr: SocketAddr, recovery: RecoveryOptions) -> TcpDevice {
    let mut o = TcpDeviceOptions::default();
    o.recovery = recovery;
    o.session.kato = Duration::from_secs(5);
    TcpDevice::open(TcpTarget::new(addr, "nqn.peer"), o).expect("the device opens")
}

fn queue(dev: &TcpDevice, timeout: Duration) -> TcpQueue {
    let mut o = TcpQueueOptions::default();
    o.entries = 16;
    o.timeout = timeout;
    dev.create_queue(o).expect("the queue connects")
}

/// Poll (with deadline scans) until `n` completions arrived.
fn reap(q: &mut TcpQueue, n: usize) -> Vec<IoCompletion> {
    let mut out = Vec::new();
    let start = Instant::now();
    while out.len() < n {
        q.process_completions(64, |c| out.push(c));
        q.check_timeouts(Instant::now());
        assert!(start.elapsed() < Duration::from_secs(60), "{out:?}");
        std::thread::yield_now();
    }
    out
}

/// Write then read back `pattern` at `lba`, retrying while the queue waits
/// for the association to come back (bounded).
fn round_trip(dev: &TcpDevice, q: &mut TcpQueue, lba: u64, len: usize, seed: u8) {
    let mut pool = dev.create_pool(1 << 20).unwrap();
    let ns = dev.namespaces()[0].clone();
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    let mut b = pool.alloc(len).unwrap();
    assert!(b.write_at(0, &data));
    let b = q.write_sync(&ns, lba, b, false).expect("write");
    let b = q.read_sync(&ns, lba, b).expect("read");
    assert_eq!(b.to_vec(), data);
}

#[test]
fn a_tcp_queue_pair_writes_in_capsule_and_by_r2t_and_reads_back_at_depth() {
    let addr = serve(Arc::new(Peer::default()));
    let dev = open(addr, RecoveryOptions::default());
    assert_eq!(dev.namespaces().len(), 1);
    assert_eq!(dev.namespaces()[0].blocks(), BLOCKS);
    assert_eq!(dev.max_transfer_bytes(), 128 << 10);
    let mut q = queue(&dev, Duration::from_secs(30));
    assert_eq!(q.qid(), 1);
    round_trip(&dev, &mut q, 0, 512, 1); // in the capsule
    round_trip(&dev, &mut q, 8, 96 << 10, 2); // R2T, two H2CData PDUs
    // Sixteen in flight at once, each its own blocks, then read back.
    let ns = dev.namespaces()[0].clone();
    let mut pool = dev.create_pool(4 << 20).unwrap();
    for i in 0..16u64 {
        let mut b = pool.alloc(8192).unwrap();
        b.fill(i as u8 + 1);
        q.write(&ns, 512 + i * 16, b, false, i).unwrap();
    }
    for c in reap(&mut q, 16) {
        assert!(c.result.is_ok(), "{c:?}");
    }
    for i in 0..16u64 {
        q.read(&ns, 512 + i * 16, pool.alloc(8192).unwrap(), i)
            .unwrap();
    }
    let mut seen = vec![0; 16];
    for c in reap(&mut q, 16) {
        let b = c.buf.unwrap();
        assert!(b.to_vec().iter().all(|&x| x == c.token as u8 + 1));
        seen[c.token as usize] += 1;
    }
    assert_eq!(seen, vec![1; 16], "each command completes exactly once");
    let q2 = queue(&dev, Duration::from_secs(30));
    assert_eq!(q2.qid(), 2, "each queue gets its own QID");
}

#[test]
fn a_dropped_connection_fails_each_command_once_then_the_queue_reconnects_and_new_io_works() {
    let peer = Arc::new(Peer::default());
    let addr = serve(peer.clone());
    let mut r = RecoveryOptions::default();
    r.reconnect_delay = Duration::from_millis(50);
    let dev = open(addr, r);
    let mut q = queue(&dev, Duration::from_secs(30));
    let ns = dev.namespaces()[0].clone();
    let mut pool = dev.create_pool(1 << 20).unwrap();
    peer.drop_after.store(8, Ordering::SeqCst);
    for i in 0..8u64 {
        q.read(&ns, i, pool.alloc(512).unwrap(), i).unwrap();
    }
    let done = reap(&mut q, 8);
    let mut seen = vec![0; 8];
    for c in &done {
        assert!(
            matches!(c.result, Err(IoError::Transport { errno }) if errno == libc::ECONNRESET),
            "{c:?}"
        );
        assert!(c.buf.is_some(), "the buffer comes back");
        seen[c.token as usize] += 1;
    }
    assert_eq!(seen, vec![1; 8]);
    // Nothing more arrives for them; new I/O waits for the reconnection.
    round_trip(&dev, &mut q, 100, 4096, 3);
    assert!(dev.stats().reconnects >= 1, "{:?}", dev.stats());
    assert!(q.transport().stats().reconnects >= 1);
    assert_eq!(q.outstanding(), 0);
}

#[test]
fn a_stalled_target_times_the_command_out_once_and_the_association_comes_back() {
    let peer = Arc::new(Peer::default());
    let addr = serve(peer.clone());
    let mut r = RecoveryOptions::default();
    r.reconnect_delay = Duration::from_millis(50);
    let dev = open(addr, r);
    let mut q = queue(&dev, Duration::from_millis(200));
    let ns = dev.namespaces()[0].clone();
    let mut pool = dev.create_pool(1 << 20).unwrap();
    peer.stall_next.store(true, Ordering::SeqCst);
    q.read(&ns, 0, pool.alloc(512).unwrap(), 42).unwrap();
    let done = reap(&mut q, 1);
    assert!(
        matches!(done[0].result, Err(IoError::TimedOut(_))),
        "{done:?}"
    );
    assert!(done[0].buf.is_some());
    // The Abort went out first; the target left the command stalled, so
    // the grace period ended the association.
    assert_eq!(peer.aborts.load(Ordering::SeqCst), 1);
    assert_eq!(dev.stats().aborts_sent, 1);
    assert_eq!(dev.stats().aborts_done, 0, "{:?}", dev.stats());
    q.set_timeout(Duration::from_secs(30));
    round_trip(&dev, &mut q, 200, 2048, 4);
    assert_eq!(q.stats().timeouts, 1);
    assert!(dev.stats().failures >= 1);
}

#[test]
fn a_stalled_command_is_aborted_on_the_admin_queue_and_answered_once_without_a_reconnection() {
    let peer = Arc::new(Peer::default());
    peer.honour_abort.store(true, Ordering::SeqCst);
    let addr = serve(peer.clone());
    let dev = open(addr, RecoveryOptions::default());
    let mut q = queue(&dev, Duration::from_millis(200));
    let ns = dev.namespaces()[0].clone();
    let mut pool = dev.create_pool(1 << 20).unwrap();
    peer.stall_next.store(true, Ordering::SeqCst);
    q.read(&ns, 0, pool.alloc(512).unwrap(), 42).unwrap();
    let done = reap(&mut q, 1);
    assert!(
        matches!(done[0].result, Err(IoError::TimedOut(_))),
        "{done:?}"
    );
    assert_eq!(done[0].token, 42);
    assert!(done[0].buf.is_some(), "the buffer comes back");
    assert_eq!(peer.aborts.load(Ordering::SeqCst), 1, "one Abort was sent");
    assert!(peer.stalled.lock().unwrap().is_none(), "the Abort named it");
    // The target answers the command before the Abort: wait for the
    // Abort's own completion to be counted.
    let start = Instant::now();
    while dev.stats().aborts_done == 0 && start.elapsed() < Duration::from_secs(60) {
        std::thread::yield_now();
    }
    let s = dev.stats();
    assert_eq!((s.aborts_sent, s.aborts_done, s.aborts_failed), (1, 1, 0));
    assert_eq!(s.failures, 0, "the association was not reset: {s:?}");
    assert_eq!(q.stats().aborts_sent, 1);
    assert_eq!(q.stats().resets_requested, 0);
    // Nothing more arrives for it, and the same connection goes on.
    q.set_timeout(Duration::from_secs(30));
    round_trip(&dev, &mut q, 300, 4096, 5);
    assert_eq!(q.transport().stats().connection_failures, 0);
    assert_eq!(q.transport().stats().reconnects, 0);
    assert_eq!(q.stats().completed, 3);
    assert_eq!(q.outstanding(), 0);
}

#[test]
fn a_polling_thread_never_waits_while_the_association_thread_is_stuck_on_the_network() {
    let peer = Arc::new(Peer::default());
    let addr = serve(peer.clone());
    let mut o = TcpDeviceOptions::default();
    o.recovery.reconnect_delay = Duration::from_millis(50);
    // Longer than the hang guard below: a poller that waited for the
    // association's thread would trip it.
    o.session.command_timeout = Duration::from_secs(120);
    let dev = TcpDevice::open(TcpTarget::new(addr, "nqn.peer"), o).expect("the device opens");
    let ns = dev.namespaces()[0].clone();
    let mut pool = dev.create_pool(1 << 20).unwrap();
    let mut qa = queue(&dev, Duration::from_millis(100));
    let mut qb = queue(&dev, Duration::from_secs(30));
    // A stalled command on queue A: its Abort is swallowed, and the
    // association's thread waits on the admin queue (the lock held).
    peer.swallow_aborts.store(true, Ordering::SeqCst);
    peer.stall_next.store(true, Ordering::SeqCst);
    qa.read(&ns, 0, pool.alloc(512).unwrap(), 1).unwrap();
    let start = Instant::now();
    while peer.admin_stream.lock().unwrap().is_none() {
        qa.process_completions(8, |c| panic!("{c:?}"));
        qa.check_timeouts(Instant::now());
        assert!(start.elapsed() < Duration::from_secs(60), "no Abort sent");
        std::thread::yield_now();
    }
    // Queue B's connection drops meanwhile: its owner gets the command
    // back and follows the association without waiting for that thread.
    peer.drop_after.store(1, Ordering::SeqCst);
    let b = pool.alloc(512).unwrap();
    qb.read(&ns, 8, b, 2).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let owner = std::thread::spawn(move || {
        let done = reap(&mut qb, 1);
        for _ in 0..100 {
            qb.process_completions(8, |c| panic!("{c:?}"));
        }
        tx.send(done).unwrap();
        qb
    });
    let done = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the polling thread waited for the association's thread");
    assert!(
        matches!(done[0].result, Err(IoError::Transport { errno }) if errno == libc::ECONNRESET),
        "{done:?}"
    );
    let mut qb = owner.join().unwrap();
    // Let the Abort fail (the admin connection closes): the association
    // is re-established, queue A's command completes once, timed out, and
    // queue B gets its new connection from the association's thread.
    if let Some(s) = peer.admin_stream.lock().unwrap().take() {
        s.shutdown(std::net::Shutdown::Both).unwrap();
    }
    peer.swallow_aborts.store(false, Ordering::SeqCst);
    let a = reap(&mut qa, 1);
    assert!(matches!(a[0].result, Err(IoError::TimedOut(_))), "{a:?}");
    round_trip(&dev, &mut qb, 64, 4096, 9);
    assert!(qb.transport().stats().reconnects >= 1);
    assert!(dev.stats().aborts_failed >= 1, "{:?}", dev.stats());
}

#[test]
fn a_target_that_never_comes_back_fails_io_with_gone_after_the_loss_timeout() {
    let peer = Arc::new(Peer::default());
    let addr = serve(peer.clone());
    let mut r = RecoveryOptions::default();
    r.reconnect_delay = Duration::from_millis(50);
    r.ctrl_loss_timeout = Duration::from_millis(500);
    let dev = open(addr, r);
    let mut q = queue(&dev, Duration::from_secs(30));
    let ns = dev.namespaces()[0].clone();
    let mut pool = dev.create_pool(1 << 20).unwrap();
    peer.refuse.store(true, Ordering::SeqCst);
    peer.drop_after.store(1, Ordering::SeqCst);
    q.read(&ns, 0, pool.alloc(512).unwrap(), 1).unwrap();
    let first = reap(&mut q, 1);
    assert!(matches!(first[0].result, Err(IoError::Transport { .. })));
    // Submitted while the association is down: held, then failed once the
    // loss timeout passes.
    q.read(&ns, 0, pool.alloc(512).unwrap(), 2).unwrap();
    let held = reap(&mut q, 1);
    assert!(
        matches!(held[0].result, Err(IoError::Gone(DeviceGone::Failed))),
        "{held:?}"
    );
    let e = q.read(&ns, 0, pool.alloc(512).unwrap(), 3).unwrap_err();
    assert!(e.to_string().contains("failed"), "{e}");
    assert!(dev.is_live().is_err());
}
