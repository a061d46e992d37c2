//! The heavier checks of `real_device.rs`, each against one controller:
//! every transfer size (and PRP1 offsets), both rings wrapping many times,
//! and queue pairs on several threads at once.

use super::*;

/// Write a unique pattern and read it back for each transfer size, plus
/// buffers whose window starts inside a page (PRP1 with an offset).
pub(super) fn sizes(
    addr: &str,
    ctrl: &Controller<RealDevice>,
    q: &mut Qp,
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
pub(super) fn queue_wrap(
    addr: &str,
    ctrl: &Controller<RealDevice>,
    main: &mut Qp,
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
    if ctrl.io_queues_granted() < 2 {
        eprintln!(
            "{addr}: queue wrap skipped: the controller granted {} I/O queue, and the \
             main queue pair uses it",
            ctrl.io_queues_granted()
        );
        return;
    }
    let mut q = ctrl
        .create_io_qpair(QueuePairOptions::default().with_entries(8))
        .expect("small I/O queue pair");
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
fn thread_io(q: &mut Qp, pool: &mut DmaPool, ns: &Namespace, base: u64, tag: u64) -> usize {
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
fn unit_bytes(ns: &Namespace, max_transfer: usize) -> usize {
    let bs = ns.block_size() as usize;
    (8192usize.min(max_transfer).div_ceil(bs) * bs).max(bs)
}

/// Four queue pairs on four threads, each with its own pool and LBA range,
/// spread over the namespaces, all at once.
pub(super) fn parallel(
    addr: &str,
    ctrl: &Controller<RealDevice>,
    main: &mut Qp,
    pool: &mut DmaPool,
) {
    let spare = (ctrl.io_queues_granted() as usize).saturating_sub(1);
    let threads = 4.min(spare);
    let namespaces: Vec<Namespace> = ctrl
        .namespaces()
        .iter()
        .filter(|n| !n.read_only() && roomy(n))
        .cloned()
        .collect();
    if threads == 0 || namespaces.is_empty() {
        eprintln!(
            "{addr}: parallel queues skipped: the controller granted {} I/O queues ({spare} \
             beside the main one; one is needed) and {} namespaces are writable and 16 MiB or more",
            ctrl.io_queues_granted(),
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
    let work: Vec<(Qp, DmaPool)> = (0..threads)
        .map(|_| {
            let q = ctrl
                .create_io_qpair(QueuePairOptions::default())
                .expect("I/O queue pair");
            qids.push(q.qid());
            (q, ctrl.create_pool(2 << 20).expect("DMA pool"))
        })
        .collect();
    let mut sorted = qids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), threads, "queue ids {qids:?}");

    let done: Vec<(Qp, usize)> = std::thread::scope(|s| {
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
