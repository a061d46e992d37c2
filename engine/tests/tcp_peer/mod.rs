//! A scripted NVMe/TCP target on loopback for host-side tests: a 1 MiB
//! RAM namespace (512-byte blocks) behind one controller, Connect,
//! Property Get/Set, Identify, Read and Write (in-capsule data, R2T and
//! H2CData, C2HData), and switches for the faults — a dropped connection,
//! a swallowed command, an Abort honoured or not, refused connections. It
//! proves the host's state machine; the kernel target (in the guest)
//! proves interoperability. Shared by the engine's and the reactor's tests.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use nvme_engine::spec::completion::Completion;
use nvme_engine::spec::status::{Status, StatusCodeType, generic};
use nvme_engine::tcp::pdu::{DataHeader, Digests, Header, IcResp, R2t, decode_pdu, encode};

pub const BLOCKS: u64 = 2048;
pub const BS: usize = 512;

/// A target with a 1 MiB RAM namespace and switches for the faults.
#[derive(Default)]
pub struct Peer {
    pub disk: Mutex<Vec<u8>>,
    pub cntlid: AtomicU16,
    /// Close an I/O connection when this many more I/O commands arrived
    /// (0: never), answering none of them.
    pub drop_after: AtomicUsize,
    /// Swallow the next I/O command.
    pub stall_next: AtomicBool,
    /// Close every new connection at once.
    pub refuse: AtomicBool,
    /// Honour an Abort of the stalled command: answer it on its own
    /// connection with Command Abort Requested.
    pub honour_abort: AtomicBool,
    /// The command swallowed by `stall_next`, while `honour_abort` is set.
    pub stalled: Mutex<Option<Stalled>>,
    /// Abort commands received (any queue, any CID).
    pub aborts: AtomicUsize,
    /// Never answer an Abort: the host's admin queue waits on it.
    pub swallow_aborts: AtomicBool,
    /// The admin connection of the last swallowed Abort (shut it down to
    /// end the host's wait).
    pub admin_stream: Mutex<Option<TcpStream>>,
}

/// A swallowed command and the connection to answer it on.
pub struct Stalled {
    pub stream: TcpStream,
    pub qid: u16,
    pub cid: u16,
    pub head: u16,
}

pub fn serve(peer: Arc<Peer>) -> SocketAddr {
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
                if p.swallow_aborts.load(Ordering::SeqCst) {
                    *p.admin_stream.lock().unwrap() = Some(s.try_clone()?);
                    continue;
                }
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
