//! Four application threads drive three reactors over two controllers:
//! every write carries a unique pattern, every I/O is answered exactly once,
//! and every block reads back as written.

mod common;

use std::thread;

use common::*;
use nvme_reactor::{Producer, ReactorSet, Request};

const THREADS: u64 = 4;
const REACTORS: usize = 3;
const PER_THREAD: u64 = 48;
const IO_BYTES: usize = 4096;

fn lba(t: u64, i: u64) -> u64 {
    (t * PER_THREAD + i) * (IO_BYTES / BLOCK) as u64
}

fn app_thread(t: u64, mut producers: Vec<Producer>) -> Vec<Producer> {
    // Writes: op i goes to reactor i % 3 and controller i % 2.
    let mut writes = Vec::new();
    for i in 0..PER_THREAD {
        let r = (i as usize) % REACTORS;
        let c = (i as usize) % 2;
        let mut buf = producers[r].alloc_for(c, IO_BYTES).expect("buffer");
        let token = t << 32 | i;
        fill(&mut buf, token);
        writes.push((r, Request::write(c, 1, lba(t, i), buf, i % 3 == 0, token)));
    }
    let responses = run_all(&mut producers, writes);
    let mut seen = vec![false; PER_THREAD as usize];
    for resp in responses {
        assert_eq!(resp.token >> 32, t, "response for another thread");
        let i = (resp.token & 0xffff_ffff) as usize;
        assert!(!seen[i], "write {i} answered twice");
        seen[i] = true;
        assert!(resp.result.is_ok(), "write {i} failed: {:?}", resp.result);
        let buf = resp.buf.expect("buffer returned");
        producers[i % REACTORS].free(buf).expect("free");
    }
    assert!(seen.iter().all(|&s| s), "a write was never answered");

    // Reads through a different reactor than the write, same controller.
    let mut reads = Vec::new();
    for i in 0..PER_THREAD {
        let r = (i as usize + 1) % REACTORS;
        let c = (i as usize) % 2;
        let mut buf = producers[r].alloc_for(c, IO_BYTES).expect("buffer");
        buf.fill(0);
        reads.push((r, Request::read(c, 1, lba(t, i), buf, t << 32 | i)));
    }
    let responses = run_all(&mut producers, reads);
    let mut seen = vec![false; PER_THREAD as usize];
    for resp in responses {
        let i = (resp.token & 0xffff_ffff) as usize;
        assert!(!seen[i], "read {i} answered twice");
        seen[i] = true;
        assert!(resp.result.is_ok(), "read {i} failed: {:?}", resp.result);
        let buf = resp.buf.expect("buffer returned");
        assert!(holds(&buf, resp.token), "read {i} returned other data");
        producers[(i + 1) % REACTORS].free(buf).expect("free");
    }
    assert!(seen.iter().all(|&s| s), "a read was never answered");
    producers
}

#[test]
fn four_producers_three_reactors_two_controllers_every_io_once_and_verified() {
    let set = ReactorSet::start(config(REACTORS), vec![controller(), controller()]).unwrap();
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let producers: Vec<Producer> = (0..REACTORS).map(|r| set.producer(r).unwrap()).collect();
        handles.push(thread::spawn(move || app_thread(t, producers)));
    }
    let producers: Vec<Vec<Producer>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let stats = set.stats().unwrap();
    assert_eq!(stats.len(), REACTORS);
    assert!(stats.iter().all(|s| s.producers == THREADS as usize));
    let report = set.shutdown();
    let total = THREADS * PER_THREAD * 2;
    assert_eq!(report.completed(), total, "{report}");
    assert_eq!(report.submitted(), total, "{report}");
    assert!(report.is_clean(), "{report}");
    for p in producers.iter().flatten() {
        assert!(p.is_closing());
    }
}
