//! What the reactor hop costs: the same 4 KiB reads on the inline null
//! emulated controller (no data moves; the device's work runs inside the
//! doorbell write), issued in direct mode on this thread and through a
//! Producer → submission ring → reactor → completion ring round trip.
//!
//! Per I/O at a fixed queue depth (ns per I/O, pipelined: what a busy
//! producer pays) and at QD1 (p50/p99 latency of one I/O alone). The rounds
//! interleave the two modes; the table gives the minimum and median over
//! rounds and the reactor's extra cost over direct mode.
//!
//! `--yield` is for instruction counts under callgrind (which runs one
//! thread at a time): the producer fills the ring, then yields; the
//! reactor yields when idle; so both sides run in batches and idle turns
//! are few. Count the difference between two run lengths, divided by the
//! difference in I/Os (see the README of this crate's benchmarks).
//!
//! Usage: `cargo run --release -p nvme-reactor --example hop_bench
//! [thousands of I/Os per round, default 500] [rounds, default 5] [qd,
//! default 32] [--yield] [--mode direct|reactor|both]`. It measures and
//! prints; it asserts nothing about time.

use std::time::{Duration, Instant};

use nvme_emu::{EmuConfig, EmuController, EmuNamespaceConfig};
use nvme_engine::{Controller, ControllerOptions, QueuePairOptions};
use nvme_reactor::{
    AllowedCores, CoreSpec, DirectQueue, Producer, ReactorConfig, ReactorSet, Request, Response,
    pin_current_thread,
};

const IO: usize = 4096;
const BLOCKS_PER_IO: u64 = (IO / 512) as u64;
const SPAN: u64 = 1 << 16;

fn controller() -> Controller<EmuController> {
    let cfg = EmuConfig::ram(0)
        .without_namespaces()
        .namespace(EmuNamespaceConfig::null(512, SPAN * BLOCKS_PER_IO));
    let dev = EmuController::new(cfg).expect("emulated controller");
    Controller::new(dev, ControllerOptions::default()).expect("bring-up")
}

fn lba(i: u64) -> u64 {
    (i % SPAN) * BLOCKS_PER_IO
}

/// Direct mode: `n` reads, `qd` in flight; returns the elapsed time.
fn direct(c: &Controller<EmuController>, n: u64, qd: usize) -> Duration {
    let mut q = DirectQueue::new(c, QueuePairOptions::default(), 4 << 20).expect("direct queue");
    let mut bufs: Vec<_> = (0..qd).map(|_| q.alloc(IO).expect("buffer")).collect();
    let mut done = Vec::with_capacity(qd);
    let (mut sent, mut got) = (0u64, 0u64);
    let t0 = Instant::now();
    while got < n {
        while sent < n
            && let Some(b) = bufs.pop()
        {
            if q.submit(Request::read(0, 1, lba(sent), b, sent)).is_err() {
                panic!("direct submit failed");
            }
            sent += 1;
        }
        q.poll(qd, |r: Response| done.push(r));
        for r in done.drain(..) {
            r.result.expect("read");
            bufs.push(r.buf.expect("buffer"));
            got += 1;
        }
    }
    let t = t0.elapsed();
    for b in bufs {
        q.free(b).expect("free");
    }
    q.delete().expect("delete");
    t
}

/// Through the reactor: `n` reads, `qd` in flight.
fn through(p: &mut Producer, n: u64, qd: usize, yield_when_full: bool) -> Duration {
    let mut bufs: Vec<_> = (0..qd).map(|_| p.alloc(IO).expect("buffer")).collect();
    let mut done = Vec::with_capacity(qd);
    let (mut sent, mut got) = (0u64, 0u64);
    let t0 = Instant::now();
    while got < n {
        while sent < n
            && let Some(b) = bufs.pop()
        {
            if let Err(r) = p.try_submit(Request::read(0, 1, lba(sent), b, sent)) {
                panic!("submit refused: {}", r.reason);
            }
            sent += 1;
        }
        if p.poll_completions(|r| done.push(r)) == 0 && yield_when_full {
            std::thread::yield_now();
        }
        for r in done.drain(..) {
            r.result.expect("read");
            bufs.push(r.buf.expect("buffer"));
            got += 1;
        }
    }
    let t = t0.elapsed();
    for b in bufs {
        p.free(b).expect("free");
    }
    t
}

/// QD1 latencies (ns) of `n` reads, direct mode.
fn direct_qd1(c: &Controller<EmuController>, n: u64) -> Vec<u64> {
    let mut q = DirectQueue::new(c, QueuePairOptions::default(), 4 << 20).expect("direct queue");
    let mut buf = Some(q.alloc(IO).expect("buffer"));
    let mut lat = Vec::with_capacity(n as usize);
    for i in 0..n {
        let t0 = Instant::now();
        if q.submit(Request::read(0, 1, lba(i), buf.take().expect("buf"), i))
            .is_err()
        {
            panic!("direct submit failed");
        }
        let mut r = None;
        while r.is_none() {
            q.poll(1, |x| r = Some(x));
        }
        lat.push(t0.elapsed().as_nanos() as u64);
        buf = r.expect("response").buf;
    }
    q.free(buf.expect("buffer")).expect("free");
    q.delete().expect("delete");
    lat
}

/// QD1 latencies (ns) of `n` reads through the reactor.
fn through_qd1(p: &mut Producer, n: u64) -> Vec<u64> {
    let mut buf = Some(p.alloc(IO).expect("buffer"));
    let mut lat = Vec::with_capacity(n as usize);
    for i in 0..n {
        let t0 = Instant::now();
        if let Err(r) = p.try_submit(Request::read(0, 1, lba(i), buf.take().expect("buf"), i)) {
            panic!("submit refused: {}", r.reason);
        }
        let mut r = None;
        while r.is_none() {
            p.poll_completions(|x| r = Some(x));
        }
        lat.push(t0.elapsed().as_nanos() as u64);
        buf = r.expect("response").buf;
    }
    p.free(buf.expect("buffer")).expect("free");
    lat
}

fn pct(v: &mut [u64], q: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * q) as usize]
}

fn min_median(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2])
}

fn main() {
    let mut nums = Vec::new();
    let mut yield_mode = false;
    let mut mode = "both".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--yield" => yield_mode = true,
            "--mode" => mode = args.next().expect("--mode needs direct, reactor or both"),
            _ => nums.push(a.parse::<u64>().expect("numbers: thousands, rounds, qd")),
        }
    }
    let n = nums.first().copied().unwrap_or(500) * 1000;
    let rounds = nums.get(1).copied().unwrap_or(5).max(1);
    let qd = nums.get(2).copied().unwrap_or(32).max(1) as usize;
    let (do_direct, do_reactor) = (mode != "reactor", mode != "direct");

    let c = controller();
    let allowed = AllowedCores::current().expect("affinity");
    let cores = allowed.cores().to_vec();
    let reactor_core = *cores.last().expect("a core");
    let mut config = ReactorConfig::default();
    config.cores = CoreSpec::from_cores([reactor_core]);
    config.pin = !yield_mode;
    config.ring_capacity = qd.max(2);
    config.idle_yield = yield_mode;
    config.batch = 32;
    let set = ReactorSet::start(config, vec![c.clone()]).expect("reactor set");
    let mut p = set.producer(0).expect("producer");
    if !yield_mode && cores.len() > 1 {
        pin_current_thread(cores[0]).expect("pin");
    }
    println!(
        "hop_bench: 4 KiB reads, inline null emulator, {n} I/Os per round, {rounds} rounds, QD {qd}; \
         producer on core {}, reactor on core {reactor_core}{}",
        cores[0],
        if yield_mode {
            " (yield mode, unpinned)"
        } else {
            ""
        }
    );
    let (mut d, mut r) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        if do_direct {
            d.push(direct(&c, n, qd).as_nanos() as f64 / n as f64);
        }
        if do_reactor {
            r.push(through(&mut p, n, qd, yield_mode).as_nanos() as f64 / n as f64);
        }
    }
    if yield_mode {
        // Instruction counting: no timing table.
        drop(p);
        set.shutdown();
        return;
    }
    let (dmin, dmed) = min_median(&mut d);
    let (rmin, rmed) = min_median(&mut r);
    println!("{:<34} {:>10} {:>10}", "ns per I/O at QD", "min", "median");
    println!("{:<34} {dmin:>10.1} {dmed:>10.1}", "direct mode");
    println!("{:<34} {rmin:>10.1} {rmed:>10.1}", "through the reactor");
    println!(
        "{:<34} {:>10.1} {:>10.1}",
        "reactor extra",
        rmin - dmin,
        rmed - dmed
    );
    let n1 = (n / 5).max(1000);
    let (mut dl, mut rl) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        dl.extend(direct_qd1(&c, n1));
        rl.extend(through_qd1(&mut p, n1));
    }
    let (d50, d99) = (pct(&mut dl, 0.5), pct(&mut dl, 0.99));
    let (r50, r99) = (pct(&mut rl, 0.5), pct(&mut rl, 0.99));
    println!("QD1 latency (ns)                   p50        p99");
    println!("{:<34} {d50:>10} {d99:>10}", "direct mode");
    println!("{:<34} {r50:>10} {r99:>10}", "through the reactor");
    println!(
        "{:<34} {:>10} {:>10}",
        "reactor extra",
        r50 as i64 - d50 as i64,
        r99 as i64 - d99 as i64
    );
    let stats = set.stats().expect("stats")[0];
    println!(
        "reactor: {} busy / {} idle turns, {} doorbells for {} commands",
        stats.iterations_busy, stats.iterations_idle, stats.doorbells, stats.submitted
    );
    drop(p);
    set.shutdown();
}
