//! The connection against a scripted peer on loopback: partial reads and
//! writes, C2HData placement, R2T → H2CData split at MAXH2CDATA, SQ head
//! flow control, and every command in flight failed exactly once when the
//! peer drops the connection or sends garbage.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::*;
use crate::spec::{command::NvmOpcode, completion::Completion, status::Status};
use crate::tcp::pdu::{IcResp, R2t, decode_pdu, encode};

/// A peer that answers ICReq with `ic`, then runs `script`.
fn peer(
    ic: IcResp,
    script: impl FnOnce(&mut TcpStream) + Send + 'static,
) -> (SocketAddr, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut req = [0u8; 128];
        s.read_exact(&mut req).unwrap();
        let (p, _) = decode_pdu(&req, Digests::default(), 128).unwrap();
        assert!(matches!(p.header.header, Header::IcReq(_)));
        send(&mut s, &Header::IcResp(ic), &[], Digests::default());
        script(&mut s);
    });
    (addr, h)
}

fn ic(maxh2cdata: u32) -> IcResp {
    IcResp {
        pfv: 0,
        cpda: 0,
        digests: Digests::default(),
        maxh2cdata,
    }
}

fn send(s: &mut TcpStream, h: &Header, data: &[u8], d: Digests) {
    let mut b = vec![0u8; 256 + data.len()];
    let n = encode(&mut b, h, data, d, 0).unwrap();
    // Dribble the bytes out to exercise partial reads on the other side.
    for c in b[..n].chunks(97) {
        s.write_all(c).unwrap();
        s.flush().unwrap();
    }
}

/// Read one PDU from the host.
fn recv(s: &mut TcpStream) -> (Header, Vec<u8>) {
    recv_with(s, Digests::default())
}

/// Read one PDU from the host on a connection with digests `d` (checked).
fn recv_with(s: &mut TcpStream, d: Digests) -> (Header, Vec<u8>) {
    let mut ch = [0u8; 8];
    s.read_exact(&mut ch).unwrap();
    let plen = u32::from_le_bytes(ch[4..8].try_into().unwrap()) as usize;
    let mut b = ch.to_vec();
    b.resize(plen, 0);
    s.read_exact(&mut b[8..]).unwrap();
    let (p, _) = decode_pdu(&b, d, 1 << 24).unwrap();
    (p.header.header, p.data.to_vec())
}

fn resp(s: &mut TcpStream, cid: u16, sqhd: u16) {
    let cqe = Completion::new(0, sqhd, 1, cid, Status::SUCCESS, false);
    send(s, &Header::CapsuleResp(cqe), &[], Digests::default());
}

fn opts(depth: u16) -> ConnectionOptions {
    ConnectionOptions {
        queue_depth: depth,
        ..ConnectionOptions::default()
    }
}

fn rw(op: NvmOpcode) -> Command {
    Command::new(op.0, 1)
}

fn wait_all(c: &mut Connection, n: usize) -> Vec<TcpCompletion> {
    let mut out = Vec::new();
    let start = Instant::now();
    while out.len() < n {
        c.poll(64, |x| out.push(x));
        assert!(start.elapsed() < Duration::from_secs(20), "only {out:?}");
        std::thread::yield_now();
    }
    out
}

fn buf(v: &mut [u8]) -> DataBuf {
    // Every test keeps `v` alive and untouched until the command's
    // completion has been polled (or the connection dropped).
    DataBuf::lent(v)
}

#[test]
fn reads_land_in_the_buffer_from_several_c2h_pdus_and_complete_on_the_response() {
    let (addr, h) = peer(ic(8192), |s| {
        let (Header::CapsuleCmd(cmd), data) = recv(s) else {
            panic!()
        };
        assert!(data.is_empty());
        assert_eq!(fabrics::data_sgl(&cmd), (20000, fabrics::SGL_TRANSPORT));
        let all: Vec<u8> = (0..20000u32).map(|i| i as u8 ^ 0x5a).collect();
        for (off, len) in [(0usize, 700usize), (700, 12000), (12700, 7300)] {
            let d = DataHeader {
                cccid: cmd.cid(),
                ttag: 0,
                offset: off as u32,
                len: len as u32,
                last: off + len == 20000,
                success: false,
            };
            send(
                s,
                &Header::C2hData(d),
                &all[off..off + len],
                Digests::default(),
            );
        }
        resp(s, cmd.cid(), 1);
    });
    let mut c = Connection::connect(addr, &opts(4)).unwrap();
    let mut v = vec![0u8; 20000];
    c.submit(
        &rw(NvmOpcode::READ),
        Some((buf(&mut v), Direction::FromController)),
        2,
    )
    .unwrap();
    c.flush().unwrap();
    let done = wait_all(&mut c, 1);
    assert_eq!(done[0].cid, 2);
    assert!(matches!(done[0].outcome, TcpOutcome::Completed { status, .. } if status.is_success()));
    assert!(v.iter().enumerate().all(|(i, &b)| b == i as u8 ^ 0x5a));
    h.join().unwrap();
}

#[test]
fn large_writes_answer_r2t_with_h2c_data_split_at_maxh2cdata_small_ones_go_in_capsule() {
    let (addr, h) = peer(ic(8192), |s| {
        let (Header::CapsuleCmd(small), data) = recv(s) else {
            panic!()
        };
        assert_eq!(fabrics::data_sgl(&small), (1000, fabrics::SGL_IN_CAPSULE));
        assert_eq!(data, vec![3u8; 1000]);
        let (Header::CapsuleCmd(big), data) = recv(s) else {
            panic!()
        };
        assert!(data.is_empty());
        assert_eq!(fabrics::data_sgl(&big), (20000, fabrics::SGL_TRANSPORT));
        resp(s, small.cid(), 1);
        let r = R2t {
            cccid: big.cid(),
            ttag: 77,
            offset: 0,
            len: 20000,
        };
        send(s, &Header::R2t(r), &[], Digests::default());
        let mut got = Vec::new();
        let mut lens = Vec::new();
        loop {
            let (Header::H2cData(d), data) = recv(s) else {
                panic!()
            };
            assert_eq!(
                (d.cccid, d.ttag, d.offset as usize),
                (big.cid(), 77, got.len())
            );
            lens.push(d.len);
            got.extend(data);
            if d.last {
                break;
            }
        }
        assert_eq!(lens, [8192, 8192, 3616]);
        assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        resp(s, big.cid(), 2);
    });
    let mut c = Connection::connect(addr, &opts(4)).unwrap();
    c.set_in_capsule_max(4096);
    let mut small = vec![3u8; 1000];
    let mut big: Vec<u8> = (0..20000).map(|i| (i % 251) as u8).collect();
    c.submit(
        &rw(NvmOpcode::WRITE),
        Some((buf(&mut small), Direction::ToController)),
        0,
    )
    .unwrap();
    c.submit(
        &rw(NvmOpcode::WRITE),
        Some((buf(&mut big), Direction::ToController)),
        1,
    )
    .unwrap();
    c.flush().unwrap();
    let mut done = wait_all(&mut c, 2);
    done.sort_by_key(|d| d.cid);
    assert_eq!(done.iter().map(|d| d.cid).collect::<Vec<_>>(), [0, 1]);
    h.join().unwrap();
}

#[test]
fn dropped_connection_fails_every_command_in_flight_exactly_once() {
    let (addr, h) = peer(ic(8192), |s| {
        for _ in 0..3 {
            recv(s);
        }
        resp(s, 1, 1);
        // Then the target goes away with two commands outstanding.
    });
    let mut c = Connection::connect(addr, &opts(8)).unwrap();
    let mut bufs = [vec![0u8; 4096], vec![0u8; 4096], vec![0u8; 4096]];
    for (i, b) in bufs.iter_mut().enumerate() {
        c.submit(
            &rw(NvmOpcode::READ),
            Some((buf(b), Direction::FromController)),
            i as u16 * 2 + 1,
        )
        .unwrap();
    }
    c.flush().unwrap();
    let mut done = wait_all(&mut c, 3);
    h.join().unwrap();
    done.sort_by_key(|d| d.cid);
    // CID 1 got its response but no data: a success without the data is a failure.
    assert_eq!(
        done[0].outcome,
        TcpOutcome::Failed(TcpFailure::ShortTransfer)
    );
    assert_eq!(
        done[1].outcome,
        TcpOutcome::Failed(TcpFailure::ConnectionLost)
    );
    assert_eq!(
        done[2].outcome,
        TcpOutcome::Failed(TcpFailure::ConnectionLost)
    );
    assert_eq!(c.in_flight(), 0);
    assert!(c.failure().is_some());
    assert_eq!(c.poll(64, |x| panic!("completed twice: {x:?}")), 0);
    assert_eq!(
        c.submit(&rw(NvmOpcode::READ), None, 0),
        Err(SubmitRefusal::Gone)
    );
}

#[test]
fn a_malformed_pdu_fails_the_connection_and_tells_the_target_why() {
    let (addr, h) = peer(ic(8192), |s| {
        recv(s);
        // A response capsule with HLEN 30.
        let mut b = [0u8; 24];
        b[0] = 0x05;
        b[2] = 30;
        b[4] = 24;
        s.write_all(&b).unwrap();
        let (Header::H2cTermReq(t), _) = recv(s) else {
            panic!("no H2CTermReq")
        };
        assert_eq!((t.fes, t.fei), (pdu::Fes::INVALID_HEADER_FIELD, 2));
    });
    let mut c = Connection::connect(addr, &opts(2)).unwrap();
    c.submit(&rw(NvmOpcode::FLUSH), None, 0).unwrap();
    c.flush().unwrap();
    let done = wait_all(&mut c, 1);
    assert_eq!(
        done[0].outcome,
        TcpOutcome::Failed(TcpFailure::ConnectionLost)
    );
    assert!(
        c.failure().unwrap().contains("HLEN 30"),
        "{:?}",
        c.failure()
    );
    h.join().unwrap();
}

#[test]
fn sq_head_from_responses_limits_what_may_be_sent() {
    let (addr, h) = peer(ic(8192), |s| {
        recv(s);
        recv(s);
        // Both complete, but the target reports SQHD 0: it says it has not
        // consumed the entries, so the queue stays full.
        resp(s, 0, 0);
        resp(s, 1, 0);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty(), "nothing was sent into a full queue");
    });
    // Depth 2: 3 SQ entries, 2 usable.
    let mut c = Connection::connect(addr, &opts(2)).unwrap();
    c.submit(&rw(NvmOpcode::FLUSH), None, 0).unwrap();
    c.submit(&rw(NvmOpcode::FLUSH), None, 1).unwrap();
    assert_eq!(
        c.submit(&rw(NvmOpcode::FLUSH), None, 0),
        Err(SubmitRefusal::Full),
        "the queue depth is reached"
    );
    c.flush().unwrap();
    wait_all(&mut c, 2);
    // Every slot is free, yet the SQ head says two entries are in use.
    assert_eq!(
        c.submit(&rw(NvmOpcode::FLUSH), None, 0),
        Err(SubmitRefusal::Full)
    );
    drop(c);
    h.join().unwrap();
}

#[test]
fn refused_port_and_refused_digests_are_named() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let e = Connection::connect(addr, &opts(2)).unwrap_err();
    assert!(matches!(e, TcpError::Refused { .. }), "{e:?}");
    assert!(e.to_string().contains("nothing listens"), "{e}");

    let (addr, h) = peer(ic(8192), |_| {});
    let mut o = opts(2);
    o.digests.header = true;
    let e = Connection::connect(addr, &o).unwrap_err();
    assert!(e.to_string().contains("refused the digests"), "{e}");
    h.join().unwrap();
}

#[test]
fn a_target_that_closes_during_setup_is_reported_as_such() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut req = [0u8; 128];
        s.read_exact(&mut req).unwrap();
    });
    let e = Connection::connect(addr, &opts(2)).unwrap_err();
    assert!(
        matches!(
            e,
            TcpError::Closed {
                during_setup: true,
                ..
            }
        ),
        "{e:?}"
    );
    h.join().unwrap();
}

const ALL: Digests = Digests {
    header: true,
    data: true,
};

#[test]
fn with_digests_h2c_pdus_split_at_maxh2cdata_each_carry_their_own_data_digest() {
    let (addr, h) = peer(
        IcResp {
            digests: ALL,
            ..ic(4096)
        },
        |s| {
            let (Header::CapsuleCmd(cmd), _) = recv_with(s, ALL) else {
                panic!()
            };
            let r = R2t {
                cccid: cmd.cid(),
                ttag: 5,
                offset: 0,
                len: 10000,
            };
            send(s, &Header::R2t(r), &[], ALL);
            let mut lens = Vec::new();
            loop {
                // recv_with checks the header and data digest of each PDU.
                let (Header::H2cData(d), data) = recv_with(s, ALL) else {
                    panic!()
                };
                assert!(data.iter().all(|&b| b == 0xC3));
                lens.push(d.len);
                if d.last {
                    break;
                }
            }
            assert_eq!(lens, [4096, 4096, 1808]);
            let cqe = Completion::new(0, 1, 1, cmd.cid(), Status::SUCCESS, false);
            send(s, &Header::CapsuleResp(cqe), &[], ALL);
        },
    );
    let mut o = opts(2);
    o.digests = ALL;
    let mut c = Connection::connect(addr, &o).unwrap();
    assert_eq!((c.digests(), c.h2c_max()), (ALL, 4096));
    let mut v = vec![0xC3u8; 10000];
    c.submit(
        &rw(NvmOpcode::WRITE),
        Some((buf(&mut v), Direction::ToController)),
        1,
    )
    .unwrap();
    c.flush().unwrap();
    let done = wait_all(&mut c, 1);
    assert!(matches!(done[0].outcome, TcpOutcome::Completed { status, .. } if status.is_success()));
    h.join().unwrap();
}

#[test]
fn a_c2h_data_digest_mismatch_fails_that_read_and_the_connection_goes_on() {
    let (addr, h) = peer(
        IcResp {
            digests: ALL,
            ..ic(8192)
        },
        |s| {
            for round in 0..2 {
                let (Header::CapsuleCmd(cmd), _) = recv_with(s, ALL) else {
                    panic!()
                };
                let d = DataHeader {
                    cccid: cmd.cid(),
                    ttag: 0,
                    offset: 0,
                    len: 4096,
                    last: true,
                    success: false,
                };
                let mut b = vec![0u8; 8192];
                let n = encode(&mut b, &Header::C2hData(d), &[7; 4096], ALL, 0).unwrap();
                if round == 0 {
                    b[n - 1] ^= 0x80; // corrupt the data digest
                }
                s.write_all(&b[..n]).unwrap();
                let cqe = Completion::new(0, 1, 1, cmd.cid(), Status::SUCCESS, false);
                send(s, &Header::CapsuleResp(cqe), &[], ALL);
            }
        },
    );
    let mut o = opts(2);
    o.digests = ALL;
    let mut c = Connection::connect(addr, &o).unwrap();
    let mut v = vec![0u8; 4096];
    for expect in [
        TcpOutcome::Failed(TcpFailure::DataDigest),
        TcpOutcome::Completed {
            dw0: 0,
            dw1: 0,
            status: Status::SUCCESS,
        },
    ] {
        assert!(c.failure().is_none(), "{:?}", c.failure());
        c.submit(
            &rw(NvmOpcode::READ),
            Some((buf(&mut v), Direction::FromController)),
            0,
        )
        .unwrap();
        c.flush().unwrap();
        assert_eq!(wait_all(&mut c, 1)[0].outcome, expect);
    }
    assert!(v.iter().all(|&b| b == 7));
    h.join().unwrap();
}

#[test]
fn sq_head_advancing_in_a_response_frees_entries_before_other_commands_complete() {
    let (addr, h) = peer(ic(8192), |s| {
        recv(s);
        recv(s);
        // CID 0 completes and the target has fetched both SQEs (SQHD 2).
        resp(s, 0, 2);
        recv(s);
        resp(s, 1, 0);
        resp(s, 0, 0);
    });
    let mut c = Connection::connect(addr, &opts(2)).unwrap();
    c.submit(&rw(NvmOpcode::FLUSH), None, 0).unwrap();
    c.submit(&rw(NvmOpcode::FLUSH), None, 1).unwrap();
    c.flush().unwrap();
    assert_eq!(wait_all(&mut c, 1)[0].cid, 0);
    // CID 1 is still in flight; the SQ has room because the head moved.
    c.submit(&rw(NvmOpcode::FLUSH), None, 0).unwrap();
    c.flush().unwrap();
    assert_eq!(wait_all(&mut c, 2).len(), 2);
    h.join().unwrap();
}

#[test]
fn cids_carrying_a_generation_in_their_high_bits_match_only_their_own_response() {
    let (addr, h) = peer(ic(8192), |s| {
        let (Header::CapsuleCmd(cmd), _) = recv(s) else {
            panic!()
        };
        assert_eq!(cmd.cid(), 0x4001);
        // A response for the same slot under another generation is stray.
        resp(s, 0x0001, 1);
        resp(s, 0x4001, 1);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    let mut c = Connection::connect(addr, &opts(3)).unwrap();
    c.submit(&rw(NvmOpcode::FLUSH), None, 0x4001).unwrap();
    assert_eq!(
        c.submit(&rw(NvmOpcode::FLUSH), None, 0x0001),
        Err(SubmitRefusal::BadData(
            "a command with the same CID low bits is in flight"
        ))
    );
    c.flush().unwrap();
    let done = wait_all(&mut c, 1);
    assert_eq!(done[0].cid, 0x4001);
    assert_eq!(c.stray_responses(), 1);
    drop(c);
    h.join().unwrap();
}
