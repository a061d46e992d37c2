//! The checks of the real-device suite, over any command transport: one
//! block and a large read, a batch of reads reaped by token, write/read
//! back, FUA, flush, write zeroes and deallocate, data written and read
//! back at every transfer size up to the maximum (also from buffers whose
//! window starts inside a page), a small queue kept full until it wraps
//! many times, and several threads each with its own queue and pool. Every
//! block written is read first and restored at the end.
//!
//! `real_device.rs` runs them on PCIe controllers (and on the emulated
//! controller configured like small ones); `uring_device.rs` over io_uring
//! passthrough. A [`Subject`] is what the checks need of either.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nvme_engine::dma::{DmaBuf, DmaPool};
use nvme_engine::transport::CommandTransport;
use nvme_engine::{IoCompletion, LbaRange, Namespace, QueuePair, SubmitErrorKind};

/// What the checks need of the thing under test.
pub trait Subject: Sync {
    /// The command transport of its queues.
    type T: CommandTransport + Send;
    /// Its usable namespaces.
    fn namespaces(&self) -> Vec<Namespace>;
    /// Largest transfer of one command.
    fn max_transfer_bytes(&self) -> usize;
    /// Queues it may have at once.
    fn queues_granted(&self) -> usize;
    /// A DMA pool of `bytes` for its buffers.
    fn pool(&self, bytes: usize) -> DmaPool;
    /// A new queue (`entries` deep, or the default) whose buffers come from
    /// `pool` (registered with it where the transport registers memory).
    fn queue(&self, entries: Option<u16>, pool: &mut DmaPool) -> QueuePair<Self::T>;
}

/// Every I/O check on queue `q` (its buffers from `pool`) and namespace
/// `ns` of `ctrl`; with `writes`, also the checks that write (and restore).
pub fn io_checks<S: Subject>(
    addr: &str,
    ctrl: &S,
    q: &mut QueuePair<S::T>,
    pool: &mut DmaPool,
    ns: &Namespace,
    writes: bool,
) {
    let bs = ns.block_size() as usize;

    // One block, then a transfer that needs a PRP list (up to 128 KiB).
    eprintln!("{addr}: reads of one block and of up to 128 KiB");
    let first = read_blocks(q, pool, ns, 0, bs);
    assert_eq!(first.len(), bs);
    let big = (128 << 10)
        .min(ctrl.max_transfer_bytes())
        .min(ns.blocks() as usize * bs);
    let whole = read_blocks(q, pool, ns, 0, big);
    assert_eq!(
        &whole[..bs],
        &first[..],
        "the same block read twice differs"
    );

    // A batch: many reads in flight, one doorbell, reaped by token.
    eprintln!("{addr}: a batch of reads in flight at once");
    let batch = 16.min(q.capacity()) as u64;
    for t in 0..batch {
        let buf = pool.alloc(bs).expect("pool buffer");
        let lba = t % ns.blocks();
        if let Err(e) = q.read(ns, lba, buf, 100 + t) {
            panic!("submit read {t}: {e}");
        }
    }
    q.ring_doorbell();
    let mut seen = vec![false; batch as usize];
    let start = std::time::Instant::now();
    let mut done = 0;
    while done < batch as usize {
        done += q.process_completions(64, |c| {
            let i = (c.token - 100) as usize;
            assert!(c.result.is_ok(), "read {i}: {:?}", c.result);
            assert!(!seen[i], "token {} completed twice", c.token);
            seen[i] = true;
            if let Some(b) = c.buf {
                pool.free(b).expect("return buffer");
            }
        });
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{done} of {batch} reads completed in 30 s"
        );
    }
    assert!(seen.iter().all(|&s| s));

    if !writes {
        eprintln!("{addr}: writes SKIPPED (set NVME_ENGINE_TEST_WRITE=1 on a scratch device)");
    } else if ns.read_only() {
        eprintln!("{addr}: namespace is write protected; writes skipped");
    } else {
        let blocks = (big / bs) as u64;
        let lba = (ns.blocks() / 2).min(ns.blocks() - blocks);
        let len = blocks as usize * bs;
        let original = read_blocks(q, pool, ns, lba, len);

        let data = pattern(lba, len, 1);
        write_blocks(q, pool, ns, lba, &data, false);
        assert_eq!(read_blocks(q, pool, ns, lba, len), data, "write/read back");
        eprintln!("{addr}: write/read back done; FUA write, flush");
        let data2 = pattern(lba, bs, 2);
        write_blocks(q, pool, ns, lba, &data2, true);
        assert_eq!(read_blocks(q, pool, ns, lba, bs), data2, "FUA write");
        q.flush_sync(ns).unwrap_or_else(|e| panic!("flush: {e}"));

        eprintln!("{addr}: write zeroes, deallocate");
        if ns.supports_write_zeroes() {
            q.write_zeroes_sync(ns, lba, blocks as u32, false)
                .unwrap_or_else(|e| panic!("write zeroes: {e}"));
            let z = read_blocks(q, pool, ns, lba, len);
            assert!(z.iter().all(|&b| b == 0), "write zeroes left data behind");
        }
        if ns.supports_deallocate() {
            q.deallocate_sync(
                ns,
                &[LbaRange {
                    lba,
                    blocks: blocks as u32,
                }],
            )
            .unwrap_or_else(|e| panic!("deallocate: {e}"));
            // What a deallocated block reads as is device-specific; only
            // check that reading it works.
            read_blocks(q, pool, ns, lba, bs);
        }

        write_blocks(q, pool, ns, lba, &original, true);
        assert_eq!(
            read_blocks(q, pool, ns, lba, len),
            original,
            "original data restored"
        );
        eprintln!("{addr}: write, FUA, flush, write zeroes, deallocate checked at LBA {lba}");

        for ns in &ctrl.namespaces() {
            if ns.read_only() {
                eprintln!("{addr}: namespace {} is write protected; skipped", ns.id());
                continue;
            }
            sizes(addr, ctrl, q, pool, ns);
        }
        queue_wrap(addr, ctrl, q, pool, ns);
        parallel(addr, ctrl, q, pool);
    }
}

pub fn pattern(lba: u64, len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 ^ lba.wrapping_mul(0x9e37_79b9) ^ seed as u64) as u8)
        .collect()
}

/// Bytes no read result is expected to equal: buffers are filled with it
/// before a read so stale pool contents cannot pass for read data.
pub const POISON: u8 = 0xa5;

/// A pseudo-random byte stream unique to `seed` (every block of it differs,
/// so a misplaced page or block shows).
pub fn stamp(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Seed for data written to `lba` of namespace `nsid` by test step `tag`.
pub fn seed(nsid: u32, lba: u64, tag: u64) -> u64 {
    (u64::from(nsid) << 56) ^ (tag << 44) ^ lba
}

pub fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at byte {i} of {} (read {:#04x}, wrote {:#04x})",
            got.len(),
            got[i],
            want[i]
        );
    }
}

pub fn read_blocks<T: CommandTransport>(
    q: &mut QueuePair<T>,
    pool: &mut DmaPool,
    ns: &Namespace,
    lba: u64,
    len: usize,
) -> Vec<u8> {
    let mut buf = pool.alloc(len).expect("pool buffer");
    buf.fill(POISON);
    let buf = q
        .read_sync(ns, lba, buf)
        .unwrap_or_else(|e| panic!("read {len} bytes at LBA {lba}: {e}"));
    let data = buf.to_vec();
    pool.free(buf).expect("return buffer");
    data
}

pub fn write_blocks<T: CommandTransport>(
    q: &mut QueuePair<T>,
    pool: &mut DmaPool,
    ns: &Namespace,
    lba: u64,
    data: &[u8],
    fua: bool,
) {
    let mut buf = pool.alloc(data.len()).expect("pool buffer");
    assert!(buf.write_at(0, data));
    let buf = q
        .write_sync(ns, lba, buf, fua)
        .unwrap_or_else(|e| panic!("write {} bytes at LBA {lba}: {e}", data.len()));
    pool.free(buf).expect("return buffer");
}

/// Whether `ns` is large enough for the write checks' fixed layout: the
/// sizes at 1/8, the queue wrap at 3/8, the basic checks at 1/2 and the
/// parallel queues at 5/8 of the namespace.
pub fn roomy(ns: &Namespace) -> bool {
    ns.size_bytes() >= 16 << 20
}

/// Blocks per command for saving and restoring: at most 1 MiB.
pub fn chunk_blocks(ns: &Namespace) -> u64 {
    let bs = ns.block_size() as usize;
    ((1 << 20) / bs).clamp(1, ns.max_blocks_per_io() as usize) as u64
}

/// Read `blocks` blocks at `lba` so they can be put back afterwards.
pub fn save<T: CommandTransport>(
    q: &mut QueuePair<T>,
    pool: &mut DmaPool,
    ns: &Namespace,
    lba: u64,
    blocks: u64,
) -> Vec<u8> {
    let bs = ns.block_size() as usize;
    let step = chunk_blocks(ns);
    let mut out = Vec::with_capacity(blocks as usize * bs);
    let mut at = 0;
    while at < blocks {
        let n = step.min(blocks - at);
        out.extend(read_blocks(q, pool, ns, lba + at, n as usize * bs));
        at += n;
    }
    out
}

/// Write back what [`save`] read, with FUA, and check it reads back.
pub fn restore<T: CommandTransport>(
    q: &mut QueuePair<T>,
    pool: &mut DmaPool,
    ns: &Namespace,
    lba: u64,
    data: &[u8],
) {
    let bs = ns.block_size() as usize;
    let step = chunk_blocks(ns) as usize * bs;
    for (i, chunk) in data.chunks(step).enumerate() {
        let at = lba + (i * step / bs) as u64;
        write_blocks(q, pool, ns, at, chunk, true);
        assert_same(
            &read_blocks(q, pool, ns, at, chunk.len()),
            chunk,
            &format!("namespace {} LBA {at}: original data restored", ns.id()),
        );
    }
}

/// Reap completions until `count` have arrived (30 s at most).
pub fn reap<T: CommandTransport>(
    q: &mut QueuePair<T>,
    count: usize,
    mut f: impl FnMut(IoCompletion),
) {
    let start = Instant::now();
    let mut done = 0;
    while done < count {
        done += q.process_completions(count - done, &mut f);
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "queue {}: {done} of {count} commands completed in 30 s",
            q.qid()
        );
    }
}

/// Write a unique pattern and read it back for each transfer size, plus
/// buffers whose window starts inside a page (PRP1 with an offset).
pub fn sizes<S: Subject>(
    addr: &str,
    ctrl: &S,
    q: &mut QueuePair<S::T>,
    pool: &mut DmaPool,
    ns: &Namespace,
) {
    if !roomy(ns) {
        eprintln!("{addr}: namespace {} under 16 MiB; sizes skipped", ns.id());
        return;
    }
    let bs = ns.block_size() as usize;
    let up = |n: usize| n.div_ceil(bs) * bs;
    let max = (ctrl.max_transfer_bytes().min(2 << 20) / bs * bs)
        .min(ns.max_blocks_per_io() as usize * bs)
        .max(bs);
    let offset_big = up(64 << 10).min(max.saturating_sub(4096) / bs * bs).max(bs);
    // (window start in the buffer, bytes)
    let all = [
        (0, bs),
        (0, 2 * bs),
        (0, up(4096)),
        (0, up(8192) + bs),
        (0, up(64 << 10)),
        (0, max),
        (512, up(4096)),
        (512, offset_big),
    ];
    // Sizes above the controller's largest transfer (MDTS) are capped away.
    let (cases, over): (Vec<_>, Vec<_>) = all.iter().partition(|&&(_, len)| len <= max);
    if !over.is_empty() {
        eprintln!(
            "{addr}: namespace {}: sizes {:?} skipped: above the {max} byte maximum transfer",
            ns.id(),
            over.iter().map(|&(_, len)| len).collect::<Vec<_>>()
        );
    }
    let base = ns.blocks() / 8;
    let total: u64 = cases.iter().map(|&(_, len)| (len / bs) as u64).sum();
    let original = save(q, pool, ns, base, total);
    let mut lba = base;
    for (i, &(start, len)) in cases.iter().enumerate() {
        let what = format!(
            "namespace {} LBA {lba}: {len} bytes at buffer offset {start}",
            ns.id()
        );
        let data = stamp(seed(ns.id(), lba, 16 + i as u64), len);
        let mut buf = pool.alloc(start + len).expect("pool buffer");
        assert!(buf.set_window(start, len));
        assert!(buf.write_at(0, &data));
        let buf = q
            .write_sync(ns, lba, buf, false)
            .unwrap_or_else(|e| panic!("{what}: write: {e}"));
        pool.free(buf).expect("return buffer");

        let mut buf = pool.alloc(start + len).expect("pool buffer");
        let cap = buf.capacity();
        assert!(buf.set_window(0, cap));
        buf.fill(POISON);
        assert!(buf.set_window(start, len));
        let mut buf = q
            .read_sync(ns, lba, buf)
            .unwrap_or_else(|e| panic!("{what}: read: {e}"));
        assert_same(&buf.to_vec(), &data, &what);
        assert!(buf.set_window(0, cap));
        let whole = buf.to_vec();
        assert!(
            whole[..start].iter().all(|&b| b == POISON)
                && whole[start + len..].iter().all(|&b| b == POISON),
            "{what}: the read wrote outside its buffer window"
        );
        pool.free(buf).expect("return buffer");
        lba += (len / bs) as u64;
    }
    restore(q, pool, ns, base, &original);
    let list: Vec<String> = cases
        .iter()
        .map(|&(start, len)| match start {
            0 => len.to_string(),
            s => format!("{len}@+{s}"),
        })
        .collect();
    eprintln!(
        "{addr}: namespace {}: write/read-back of {} bytes checked at LBA {base}",
        ns.id(),
        list.join(", ")
    );
}

/// Many write-then-read pairs through an 8-entry queue pair, kept full, so
/// both rings wrap many times.
pub fn queue_wrap<S: Subject>(
    addr: &str,
    ctrl: &S,
    main: &mut QueuePair<S::T>,
    pool: &mut DmaPool,
    ns: &Namespace,
) {
    if !roomy(ns) {
        eprintln!(
            "{addr}: namespace {} under 16 MiB; queue wrap skipped",
            ns.id()
        );
        return;
    }
    if ctrl.queues_granted() < 2 {
        eprintln!(
            "{addr}: queue wrap skipped: the controller granted {} I/O queue, and the \
             main queue pair uses it",
            ctrl.queues_granted()
        );
        return;
    }
    let mut q = ctrl.queue(Some(8), pool);
    let cap = q.capacity();
    assert!(cap <= 8, "asked for 8 entries, got room for {cap} commands");
    let bs = ns.block_size() as usize;
    let units = 96usize;
    let base = ns.blocks() / 8 * 3;
    let original = save(main, pool, ns, base, units as u64);
    let data = |unit: usize| stamp(seed(ns.id(), base + unit as u64, 3), bs);

    let mut times = vec![0u8; 2 * units];
    let mut pending = VecDeque::new();
    let mut next_write = 0;
    let mut verified = 0;
    let mut full = 0;
    let mut held: Option<DmaBuf> = None;
    while verified < units {
        // Submit reads of written blocks first, then new writes, until the
        // queue refuses.
        loop {
            let (unit, read) = match pending.front() {
                Some(&u) => (u, true),
                None if next_write < units => (next_write, false),
                None => break,
            };
            let mut buf = held
                .take()
                .unwrap_or_else(|| pool.alloc(bs).expect("pool buffer"));
            let lba = base + unit as u64;
            let r = if read {
                buf.fill(POISON);
                q.read(ns, lba, buf, 2 * unit as u64 + 1)
            } else {
                assert!(buf.write_at(0, &data(unit)));
                q.write(ns, lba, buf, false, 2 * unit as u64)
            };
            match r {
                Ok(()) if read => drop(pending.pop_front()),
                Ok(()) => next_write += 1,
                Err(e) if matches!(e.kind, SubmitErrorKind::QueueFull { .. }) => {
                    assert_eq!(q.outstanding(), cap, "queue full before it is");
                    full += 1;
                    held = e.buf;
                    break;
                }
                Err(e) => panic!("submit unit {unit}: {e}"),
            }
        }
        q.ring_doorbell();
        reap(&mut q, 1, |c| {
            let t = c.token as usize;
            assert!(t < times.len(), "unknown token {t}");
            times[t] += 1;
            assert_eq!(times[t], 1, "token {t} completed twice");
            if let Err(e) = c.result {
                panic!("token {t}: {e}");
            }
            let buf = c.buf.expect("the data buffer comes back");
            if t % 2 == 1 {
                assert_same(
                    &buf.to_vec(),
                    &data(t / 2),
                    &format!("queue wrap: LBA {}", base + (t / 2) as u64),
                );
                verified += 1;
            } else {
                pending.push_back(t / 2);
            }
            pool.free(buf).expect("return buffer");
        });
    }
    if let Some(b) = held {
        pool.free(b).expect("return buffer");
    }
    assert!(times.iter().all(|&n| n == 1), "every token completes once");
    assert!(full > 0, "the queue never filled");
    let stats = *q.stats();
    assert_eq!(stats.submitted, 2 * units as u64);
    assert_eq!(stats.completed, 2 * units as u64);
    q.delete()
        .unwrap_or_else(|e| panic!("delete small queue pair: {e}"));
    restore(main, pool, ns, base, &original);
    eprintln!(
        "{addr}: queue wrap: {} commands through a {cap}-command queue, full {full} times, all verified",
        2 * units
    );
}

/// Each thread: `rounds` of (write `units` blocks of `unit` bytes, reap,
/// read them back, reap, compare), all in flight at once on its own queue.
pub fn thread_io<T: CommandTransport>(
    q: &mut QueuePair<T>,
    pool: &mut DmaPool,
    ns: &Namespace,
    base: u64,
    tag: u64,
) -> usize {
    let bs = ns.block_size() as usize;
    let unit = unit_bytes(ns, q.max_transfer_bytes());
    let units = 16u64;
    let step = (unit / bs) as u64;
    let mut ios = 0;
    for round in 0..2 {
        let data = |i: u64| stamp(seed(ns.id(), base + i * step, tag + round), unit);
        for i in 0..units {
            let mut buf = pool.alloc(unit).expect("pool buffer");
            assert!(buf.write_at(0, &data(i)));
            if let Err(e) = q.write(ns, base + i * step, buf, false, i) {
                panic!("queue {}: submit write {i}: {e}", q.qid());
            }
        }
        q.ring_doorbell();
        reap(q, units as usize, |c| {
            assert!(c.result.is_ok(), "write {}: {:?}", c.token, c.result);
            pool.free(c.buf.expect("buffer")).expect("return buffer");
        });
        for i in 0..units {
            let mut buf = pool.alloc(unit).expect("pool buffer");
            buf.fill(POISON);
            if let Err(e) = q.read(ns, base + i * step, buf, 100 + i) {
                panic!("queue {}: submit read {i}: {e}", q.qid());
            }
        }
        q.ring_doorbell();
        let mut seen = [false; 16];
        reap(q, units as usize, |c| {
            let i = c.token - 100;
            assert!(c.result.is_ok(), "read {i}: {:?}", c.result);
            assert!(!seen[i as usize], "read {i} completed twice");
            seen[i as usize] = true;
            let buf = c.buf.expect("buffer");
            assert_same(
                &buf.to_vec(),
                &data(i),
                &format!("namespace {} LBA {}", ns.id(), base + i * step),
            );
            pool.free(buf).expect("return buffer");
        });
        ios += 2 * units as usize;
    }
    ios
}

/// Bytes per command of the parallel checks: 8 KiB, or less when the
/// controller's maximum transfer is smaller.
pub fn unit_bytes(ns: &Namespace, max_transfer: usize) -> usize {
    let bs = ns.block_size() as usize;
    (8192usize.min(max_transfer).div_ceil(bs) * bs).max(bs)
}

/// Four queue pairs on four threads, each with its own pool and LBA range,
/// spread over the namespaces, all at once.
pub fn parallel<S: Subject>(addr: &str, ctrl: &S, main: &mut QueuePair<S::T>, pool: &mut DmaPool) {
    let spare = ctrl.queues_granted().saturating_sub(1);
    let threads = 4.min(spare);
    let namespaces: Vec<Namespace> = ctrl
        .namespaces()
        .into_iter()
        .filter(|n| !n.read_only() && roomy(n))
        .collect();
    if threads == 0 || namespaces.is_empty() {
        eprintln!(
            "{addr}: parallel queues skipped: the controller granted {} I/O queues ({spare} \
             beside the main one; one is needed) and {} namespaces are writable and 16 MiB or more",
            ctrl.queues_granted(),
            namespaces.len()
        );
        return;
    }
    let unit = |ns: &Namespace| unit_bytes(ns, ctrl.max_transfer_bytes()) as u64;
    let span = |ns: &Namespace| 16 * unit(ns).div_ceil(u64::from(ns.block_size()));
    let plan: Vec<(Namespace, u64)> = (0..threads)
        .map(|t| {
            let ns = namespaces[t % namespaces.len()].clone();
            let base = ns.blocks() / 8 * 5 + t as u64 * span(&ns);
            (ns, base)
        })
        .collect();
    let saved: Vec<Vec<u8>> = plan
        .iter()
        .map(|(ns, base)| save(main, pool, ns, *base, span(ns)))
        .collect();
    let mut qids = Vec::new();
    let work: Vec<(QueuePair<S::T>, DmaPool)> = (0..threads)
        .map(|_| {
            let mut pool = ctrl.pool(2 << 20);
            let q = ctrl.queue(None, &mut pool);
            qids.push(q.qid());
            (q, pool)
        })
        .collect();
    let mut sorted = qids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), threads, "queue ids {qids:?}");

    let done: Vec<(QueuePair<S::T>, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = work
            .into_iter()
            .zip(&plan)
            .enumerate()
            .map(|(t, ((mut q, mut pool), (ns, base)))| {
                s.spawn(move || {
                    let ios = thread_io(&mut q, &mut pool, ns, *base, 8 + 2 * t as u64);
                    (q, ios)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| panic!("an I/O thread failed")))
            .collect()
    });
    let mut total = 0;
    for (q, ios) in done {
        total += ios;
        q.delete()
            .unwrap_or_else(|e| panic!("delete queue pair: {e}"));
    }
    for ((ns, base), data) in plan.iter().zip(&saved) {
        restore(main, pool, ns, *base, data);
    }
    eprintln!(
        "{addr}: {threads} queue pairs (ids {qids:?}) on {threads} threads: {total} I/Os verified, deleted"
    );
}
