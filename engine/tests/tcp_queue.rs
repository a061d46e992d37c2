//! The queue pair over NVMe/TCP against a scripted target on loopback: the
//! Namespace API end to end (in-capsule writes, R2T/H2CData, C2HData), and
//! the failure paths — a dropped connection completes every command in
//! flight once with a transport error and the association comes back; a
//! stalled command is aborted with the Abort admin command and answered
//! once, with nothing reconnected; a stalled target that does not abort
//! times the command out and reconnects; a target that never
//! comes back fails everything with `Gone` after the controller loss
//! timeout. The scripted target proves the host's state machine; the kernel
//! target (`tcp_target.rs`, in the guest) proves interoperability.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nvme_engine::spec::completion::Completion;
use nvme_engine::spec::status::{Status, StatusCodeType, generic};
use nvme_engine::tcp::pdu::{DataHeader, Digests, Header, IcResp, R2t, decode_pdu, encode};
use nvme_engine::tcp::{
    RecoveryOptions, TcpDevice, TcpDeviceOptions, TcpQueue, TcpQueueOptions, TcpTarget,
};
use nvme_engine::{DeviceGone, IoCompletion, IoError};

const BLOCKS: u64 = 2048;
const BS: usize = 512;

/// A target with a 1 MiB RAM namespace and switches for the faults.
#[derive(Default)]
struct Peer {
    disk: Mutex<Vec<u8>>,
    cntlid: AtomicU16,
    /// Close an I/O connection when this many more I/O commands arrived
    /// (0: never), answering none of them.
    drop_after: AtomicUsize,
    /// Swallow the next I/O command.
    stall_next: AtomicBool,
    /// Close every new connection at once.
    refuse: AtomicBool,
    /// Honour an Abort of the stalled command: answer it on its own
    /// connection with Command Abort Requested.
    honour_abort: AtomicBool,
    /// The command swallowed by `stall_next`, while `honour_abort` is set.
    stalled: Mutex<Option<Stalled>>,
    /// Abort commands received (any queue, any CID).
    aborts: AtomicUsize,
}

/// A swallowed command and the connection to answer it on.
struct Stalled {
    stream: TcpStream,
    qid: u16,
    cid: u16,
    head: u16,
}

fn serve(peer: Arc<Peer>) -> SocketAddr {
    *peer.disk.lock().unwrap() = vec![0; BLOCKS as usize * BS];
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        while let Ok((s, _)) = l.accept() {
            if peer.refuse.load(Ordering::SeqCst) {
                drop(s);
                continue;
            }
            let p = peer.clone();
            std::thread::spawn(move || {
                let _ = connection(&p, s);
            });
        }
    });
    addr
}

fn send(s: &mut TcpStream, h: &Header, data: &[u8]) -> std::io::Result<()> {
    let mut b = vec![0u8; 256 + data.len()];
    let n = encode(&mut b, h, data, Digests::default(), 0).expect("encodes");
    s.write_all(&b[..n])
}

fn recv(s: &mut TcpStream) -> std::io::Result<(Header, Vec<u8>)> {
    let mut ch = [0u8; 8];
    s.read_exact(&mut ch)?;
    let plen = u32::from_le_bytes(ch[4..8].try_into().unwrap()) as usize;
    let mut b = ch.to_vec();
    b.resize(plen, 0);
    s.read_exact(&mut b[8..])?;
    let (p, _) = decode_pdu(&b, Digests::default(), 1 << 24).expect("host PDU decodes");
    Ok((p.header.header, p.data.to_vec()))
}

fn identify(cns: u8) -> Vec<u8> {
    let mut d = vec![0u8; 4096];
    match cns {
        1 => {
            d[4..8].copy_from_slice(b"peer");
            d[77] = 5; // MDTS: 128 KiB
            d[1792..1796].copy_from_slice(&260u32.to_le_bytes()); // IOCCSZ
        }
        2 => d[0..4].copy_from_slice(&1u32.to_le_bytes()),
        _ => {
            for off in [0, 8, 16] {
                d[off..off + 8].copy_from_slice(&BLOCKS.to_le_bytes());
            }
            d[128..132].copy_from_slice(&(9u32 << 16).to_le_bytes()); // LBADS 9
        }
    }
    d
}

/// Serve one connection until it closes or a fault ends it.
fn connection(p: &Peer, mut s: TcpStream) -> std::io::Result<()> {
    let mut ic = [0u8; 128];
    s.read_exact(&mut ic)?;
    let r = IcResp {
        pfv: 0,
        cpda: 0,
        digests: Digests::default(),
        maxh2cdata: 65536,
    };
    send(&mut s, &Header::IcResp(r), &[])?;
    let (mut cc, mut qid, mut entries, mut head) = (0u32, 0u16, 1u16, 0u16);
    // Capsules that arrived while H2CData was awaited.
    let mut pending = std::collections::VecDeque::new();
    loop {
        let next = match pending.pop_front() {
            Some(p) => p,
            None => recv(&mut s)?,
        };
        let (Header::CapsuleCmd(cmd), data) = next else {
            continue;
        };
        head = (head + 1) % entries;
        let cid = cmd.cid();
        match cmd.opcode() {
            0x7F => match cmd.nsid as u8 {
                0x01 => {
                    qid = (cmd.cdw10 >> 16) as u16;
                    entries = (cmd.cdw11 & 0xffff) as u16 + 1;
                    head = 1 % entries;
                    let id = p.cntlid.fetch_add(1, Ordering::SeqCst) + 1;
                    reply(&mut s, id as u32, 0, head, qid, cid)?;
                }
                0x04 => {
                    let v: u64 = match cmd.cdw11 {
                        0 => 2 << 24 | 127, // CAP: TO 1 s, MQES 127
                        8 => 0x10400,
                        0x1c => (cc & 1) as u64 | if cc >> 14 & 3 != 0 { 2 << 2 } else { 0 },
                        _ => 0,
                    };
                    reply(&mut s, v as u32, (v >> 32) as u32, head, qid, cid)?;
                }
                _ => {
                    if cmd.cdw11 == 0x14 {
                        cc = cmd.cdw12;
                    }
                    reply(&mut s, 0, 0, head, qid, cid)?;
                }
            },
            0x08 if qid == 0 => {
                p.aborts.fetch_add(1, Ordering::SeqCst);
                let (aqid, acid) = (cmd.cdw10 as u16, (cmd.cdw10 >> 16) as u16);
                let mut stalled = p.stalled.lock().unwrap();
                let found = stalled
                    .as_ref()
                    .is_some_and(|x| (x.qid, x.cid) == (aqid, acid));
                if found && let Some(mut x) = stalled.take() {
                    // Answer the command where it was sent (nothing else is
                    // in flight there), then the Abort: DW0 bit 0 clear.
                    let aborted = Status::new(StatusCodeType::GENERIC, generic::ABORT_REQUESTED);
                    let c = Completion::new(0, x.head, x.qid, x.cid, aborted, false);
                    send(&mut x.stream, &Header::CapsuleResp(c), &[])?;
                    reply(&mut s, 0, 0, head, qid, cid)?;
                } else {
                    // Not aborted (DW0 bit 0 set).
                    reply(&mut s, 1, 0, head, qid, cid)?;
                }
            }
            0x06 => {
                let d = identify(cmd.cdw10 as u8);
                c2h(&mut s, cid, &d)?;
                reply(&mut s, 0, 0, head, qid, cid)?;
            }
            op @ (0x01 | 0x02) if qid != 0 => {
                if p.stall_next.swap(false, Ordering::SeqCst) {
                    if p.honour_abort.load(Ordering::SeqCst) {
                        *p.stalled.lock().unwrap() = Some(Stalled {
                            stream: s.try_clone()?,
                            qid,
                            cid,
                            head,
                        });
                    }
                    continue;
                }
                let left = p.drop_after.load(Ordering::SeqCst);
                if left == 1 {
                    p.drop_after.store(0, Ordering::SeqCst);
                    return Ok(()); // the socket closes with nothing answered
                }
                if left > 1 {
                    p.drop_after.store(left - 1, Ordering::SeqCst);
                    continue; // held unanswered until the drop
                }
                let slba = cmd.cdw10 as u64 | (cmd.cdw11 as u64) << 32;
                let len = ((cmd.cdw12 & 0xffff) as usize + 1) * BS;
                let at = slba as usize * BS;
                if op == 0x02 {
                    let d = p.disk.lock().unwrap()[at..at + len].to_vec();
                    c2h(&mut s, cid, &d)?;
                } else {
                    let d = if data.is_empty() {
                        r2t(&mut s, cid, len, &mut pending)?
                    } else {
                        data
                    };
                    p.disk.lock().unwrap()[at..at + len].copy_from_slice(&d);
                }
                reply(&mut s, 0, 0, head, qid, cid)?;
            }
            _ => reply(&mut s, 0, 0, head, qid, cid)?,
        }
    }
}

fn reply(
    s: &mut TcpStream,
    dw0: u32,
    dw1: u32,
    head: u16,
    qid: u16,
    cid: u16,
) -> std::io::Result<()> {
    let mut c = Completion::new(dw0, head, qid, cid, Status::SUCCESS, false);
    c.dw1 = dw1;
    send(s, &Header::CapsuleResp(c), &[])
}

fn c2h(s: &mut TcpStream, cid: u16, d: &[u8]) -> std::io::Result<()> {
    let h = DataHeader {
        cccid: cid,
        ttag: 0,
        offset: 0,
        len: d.len() as u32,
        last: true,
        success: false,
    };
    send(s, &Header::C2hData(h), d)
}

/// Ask for `len` bytes of CID `cid` and collect its H2CData PDUs.
fn r2t(
    s: &mut TcpStream,
    cid: u16,
    len: usize,
    pending: &mut std::collections::VecDeque<(Header, Vec<u8>)>,
) -> std::io::Result<Vec<u8>> {
    let r = R2t {
        cccid: cid,
        ttag: 7,
        offset: 0,
        len: len as u32,
    };
    send(s, &Header::R2t(r), &[])?;
    let mut out = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let (h, d) = match recv(s)? {
            (Header::H2cData(h), d) => (h, d),
            other => {
                pending.push_back(other);
                continue;
            }
        };
        assert_eq!((h.cccid, h.ttag, h.offset as usize), (cid, 7, got));
        out[got..got + d.len()].copy_from_slice(&d);
        got += d.len();
    }
    Ok(out)
}

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
