//! Ring benchmark: one producer thread, one consumer thread, N messages of
//! `u64` size, nanoseconds per message. Compares the candidate rings for the
//! reactor's submission and completion paths:
//!
//! - `rtrb` (wait-free SPSC, cache-padded head and tail),
//! - `rtrb` plus a per-submission check of a shared "closing" flag (what the
//!   reactor's `Producer::try_submit` does: one acquire load of a line the
//!   consumer writes once, at shutdown),
//! - `rtrb` plus a compare-exchange gate around each push (the alternative
//!   shutdown handshake, measured to show why it was not taken),
//! - `crossbeam_queue::ArrayQueue` (bounded MPMC),
//! - `std::sync::mpsc::sync_channel` (bounded MPSC, as a familiar peer).
//!
//! Usage: `cargo run --release -p nvme-reactor --example ring_bench [millions]`
//! (default 2). It measures and prints; it asserts nothing about time.

use std::hint::spin_loop;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const CAPACITY: usize = 1024;

fn report(name: &str, n: u64, elapsed: Duration, checksum: u64) {
    let expected = n * (n - 1) / 2;
    let ok = if checksum == expected { "ok" } else { "BAD" };
    println!(
        "{name:<28} {:>8.2} ns/msg  {:>7.1} M msg/s  (checksum {ok})",
        elapsed.as_nanos() as f64 / n as f64,
        n as f64 / elapsed.as_secs_f64() / 1e6,
    );
}

#[derive(Clone, Copy, PartialEq)]
enum Guard {
    None,
    Flag,
    Gate,
}

fn bench_rtrb(n: u64, guard: Guard) -> (Duration, u64) {
    let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(CAPACITY);
    let state = Arc::new(AtomicU8::new(0));
    let gate = guard == Guard::Gate;
    let start = Instant::now();
    let producer = thread::spawn(move || {
        for i in 0..n {
            let mut v = i;
            loop {
                if guard == Guard::Flag && state.load(Ordering::Acquire) != 0 {
                    return;
                }
                if gate
                    && state
                        .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                        .is_err()
                {
                    spin_loop();
                    continue;
                }
                let r = tx.push(v);
                if gate {
                    state.store(0, Ordering::Release);
                }
                match r {
                    Ok(()) => break,
                    Err(rtrb::PushError::Full(back)) => {
                        v = back;
                        spin_loop();
                    }
                }
            }
        }
    });
    let mut sum = 0u64;
    let mut got = 0;
    while got < n {
        match rx.pop() {
            Ok(v) => {
                sum = sum.wrapping_add(v);
                got += 1;
            }
            Err(_) => spin_loop(),
        }
    }
    let elapsed = start.elapsed();
    let _ = producer.join();
    (elapsed, sum)
}

fn bench_array_queue(n: u64) -> (Duration, u64) {
    let q = Arc::new(crossbeam_queue::ArrayQueue::<u64>::new(CAPACITY));
    let pq = Arc::clone(&q);
    let start = Instant::now();
    let producer = thread::spawn(move || {
        for i in 0..n {
            let mut v = i;
            while let Err(back) = pq.push(v) {
                v = back;
                spin_loop();
            }
        }
    });
    let mut sum = 0u64;
    let mut got = 0;
    while got < n {
        match q.pop() {
            Some(v) => {
                sum = sum.wrapping_add(v);
                got += 1;
            }
            None => spin_loop(),
        }
    }
    let elapsed = start.elapsed();
    let _ = producer.join();
    (elapsed, sum)
}

fn bench_std_sync_channel(n: u64) -> (Duration, u64) {
    let (tx, rx) = std::sync::mpsc::sync_channel::<u64>(CAPACITY);
    let start = Instant::now();
    let producer = thread::spawn(move || {
        for i in 0..n {
            let mut v = i;
            loop {
                match tx.try_send(v) {
                    Ok(()) => break,
                    Err(std::sync::mpsc::TrySendError::Full(back)) => {
                        v = back;
                        spin_loop();
                    }
                    Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return,
                }
            }
        }
    });
    let mut sum = 0u64;
    let mut got = 0;
    while got < n {
        match rx.try_recv() {
            Ok(v) => {
                sum = sum.wrapping_add(v);
                got += 1;
            }
            Err(_) => spin_loop(),
        }
    }
    let elapsed = start.elapsed();
    let _ = producer.join();
    (elapsed, sum)
}

fn main() {
    let millions: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
        .max(1);
    let rounds: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .max(1);
    let n = millions * 1_000_000;
    println!(
        "{n} u64 messages, ring capacity {CAPACITY}, 1 producer thread -> 1 consumer thread, \
         {rounds} interleaved rounds"
    );
    type Bench = fn(u64) -> (Duration, u64);
    let benches: [(&str, Bench); 5] = [
        ("rtrb (SPSC)", |n| bench_rtrb(n, Guard::None)),
        ("rtrb + closing flag load", |n| bench_rtrb(n, Guard::Flag)),
        ("rtrb + CAS gate", |n| bench_rtrb(n, Guard::Gate)),
        ("crossbeam ArrayQueue (MPMC)", bench_array_queue),
        ("std sync_channel (MPSC)", bench_std_sync_channel),
    ];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); benches.len()];
    for round in 0..rounds {
        println!("round {}", round + 1);
        for (i, (name, f)) in benches.iter().enumerate() {
            let (d, sum) = f(n);
            report(name, n, d, sum);
            results[i].push(d.as_nanos() as f64 / n as f64);
        }
    }
    println!("summary (ns/msg): min / median over {rounds} rounds");
    for (i, (name, _)) in benches.iter().enumerate() {
        let mut r = results[i].clone();
        r.sort_by(f64::total_cmp);
        println!("{name:<28} {:>8.2} / {:>8.2}", r[0], r[r.len() / 2]);
    }
}
