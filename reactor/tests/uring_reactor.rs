//! Reactors over NVMe passthrough on io_uring against a real namespace left
//! with the kernel's nvme driver: every pool whose buffers reach a ring —
//! the reactor's own and each producer's — is registered with it as fixed
//! buffers, so no I/O through a reactor has its pages pinned per command.
//! Runs only when `NVME_ENGINE_TEST_URING` names a generic node
//! (`/dev/ng0n1`); the QEMU guest (`scripts/qemu-test.sh --mode uring`) sets
//! it, and `NVME_ENGINE_TEST_URING_POLLED=1` to require the polled mode.
//! Writes go to the second half of the namespace (each test writes and
//! reads back its blocks before moving on): use a scratch device.

#![cfg(target_os = "linux")]

use nvme_engine::uring::{BufferMode, CompletionMode, KernelVersion, UringDevice};
use nvme_reactor::{CoreSpec, Producer, ReactorConfig, ReactorSet, Request, UringNamespace};

const POOL: usize = 2 << 20;

fn device() -> Option<UringDevice> {
    let Ok(path) = std::env::var("NVME_ENGINE_TEST_URING") else {
        eprintln!(
            "skipped: set NVME_ENGINE_TEST_URING=/dev/ngXnY (a scratch namespace's generic node) \
             to run the reactor-over-io_uring tests"
        );
        return None;
    };
    let dev = UringDevice::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    if !dev
        .kernel()
        .is_none_or(|k| k.at_least(KernelVersion::IOPOLL_AND_FIXED))
    {
        eprintln!("skipped: fixed buffers for uring commands need Linux 6.1");
        return None;
    }
    Some(dev)
}

fn polled_required() -> bool {
    std::env::var("NVME_ENGINE_TEST_URING_POLLED").is_ok_and(|v| v == "1")
}

/// One reactor over `dev` whose rings have `fixed_slots` fixed buffers.
fn start(dev: UringDevice, fixed_slots: Option<u16>) -> ReactorSet<nvme_reactor::Uring> {
    let mut o = nvme_engine::uring::UringQueueOptions::default();
    o.polled = polled_required();
    o.require_polled = polled_required();
    if let Some(n) = fixed_slots {
        o.fixed_slots = n;
    }
    let mut config = ReactorConfig::default();
    config.cores = CoreSpec::from_cores([0]);
    config.idle_yield = true;
    config.pool_bytes = POOL;
    config.producer_pool_bytes = POOL;
    ReactorSet::start_uring(config, vec![UringNamespace::new(dev, o)])
        .unwrap_or_else(|e| panic!("start the reactor: {e}"))
}

/// Write a pattern of `len` bytes at `lba` through `p`, read it back into
/// a second buffer and compare; two data commands.
fn write_read_back(p: &mut Producer, nsid: u32, lba: u64, len: usize, seed: u8) {
    let mut out = p.alloc(len).unwrap();
    for i in 0..len / 4096 {
        out.write_at(i * 4096, &[seed ^ i as u8; 4096]);
    }
    let mut back = p.alloc(len).unwrap();
    back.fill(!seed);
    let out = one(p, Request::write(0, nsid, lba, out, false, 1));
    let back = one(p, Request::read(0, nsid, lba, back, 2));
    assert!(
        back.to_vec() == out.to_vec(),
        "{len} bytes at LBA {lba} read back differ from those written"
    );
    p.free(out).unwrap();
    p.free(back).unwrap();
}

/// Submit `req`, wait for its response, return its buffer.
fn one(p: &mut Producer, req: Request) -> nvme_engine::dma::DmaBuf {
    if let Err(r) = p.try_submit(req) {
        panic!("not submitted: {}", r.reason);
    }
    loop {
        let mut got = None;
        p.poll_completions(|r| got = Some(r));
        if let Some(r) = got {
            if let Err(e) = r.result {
                panic!("I/O {} failed: {e}", r.token);
            }
            return r.buf.expect("a data command's buffer comes back");
        }
        std::thread::yield_now();
    }
}

/// Sizes from 4 KiB to the largest transfer a 2 MiB pool holds twice.
fn sizes(dev: &UringDevice) -> Vec<usize> {
    let max = dev.max_transfer_bytes().min(POOL / 2);
    std::iter::successors(Some(4096usize), |s| Some(s * 2))
        .take_while(|&s| s <= max)
        .collect()
}

#[test]
fn producer_pools_are_fixed_buffers_so_no_reactor_io_is_pinned_per_command() {
    let Some(dev) = device() else { return };
    let ns = dev.namespace().clone();
    let (nsid, block) = (ns.id(), ns.block_size() as u64);
    let base = ns.blocks() / 2;
    let sizes = sizes(&dev);
    let set = start(dev, None);
    let mut a = set.producer(0).unwrap();
    let mut b = set.producer(0).unwrap();
    let mut ios = 0;
    for (i, &len) in sizes.iter().enumerate() {
        let lba = base + (i as u64) * (2 << 20) / block;
        write_read_back(&mut a, nsid, lba, len, 0x10 + i as u8);
        write_read_back(&mut b, nsid, lba + (1 << 20) / block, len, 0x90 + i as u8);
        ios += 4;
    }
    let st = set.stats().unwrap()[0];
    let report = set.shutdown();
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        st.unregistered_io, 0,
        "every producer's buffer went as a fixed buffer: {st}"
    );
    assert_eq!(st.fixed_buffer_io, ios, "{st}");
}

#[test]
fn producers_that_come_and_go_give_their_fixed_buffer_slots_back() {
    let Some(dev) = device() else { return };
    let ns = dev.namespace().clone();
    let (nsid, block) = (ns.id(), ns.block_size() as u64);
    let base = ns.blocks() / 2;
    // Room for the reactor's pool and two producers' pools (hugepage pools
    // are exactly 2 MiB; plain ones are rounded to pages, 2 MiB here too).
    let chunk = 1usize << (usize::BITS - 1 - dev.max_transfer_bytes().leading_zeros());
    let per_pool = POOL.div_ceil(chunk);
    let len = 4096.max(chunk.min(POOL / 2));
    let set = start(dev, Some((3 * per_pool) as u16));
    // The reactor pool and one long-lived producer stay; six more come and
    // go one after the other, each needing the third pool's slots.
    let mut stay = set.producer(0).unwrap();
    for k in 0..6u64 {
        let mut p = set.producer(0).unwrap();
        write_read_back(&mut p, nsid, base + k * (1 << 20) / block, len, k as u8);
        drop(p);
        write_read_back(&mut stay, nsid, base - (1 << 20) / block, 4096, 0xee);
    }
    let st = set.stats().unwrap()[0];
    let report = set.shutdown();
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        st.unregistered_io, 0,
        "a departed producer's slots went to the next one: {st}"
    );
    assert_eq!(st.fixed_buffer_io, 6 * 4, "{st}");
}

#[test]
fn the_ring_reports_fixed_buffers_and_the_completion_mode_asked_for() {
    let Some(dev) = device() else { return };
    let mut o = nvme_engine::uring::UringQueueOptions::default();
    o.polled = polled_required();
    let mut q = dev.create_queue(o).unwrap();
    let pool = dev.create_pool(POOL).unwrap();
    assert_eq!(q.register_pool(&pool), &BufferMode::Fixed);
    if polled_required() {
        assert_eq!(q.completion_mode(), &CompletionMode::Polled);
    }
    assert_eq!(q.ring_stats().regions_registered, 1);
    drop(pool);
    assert_eq!(q.release_unused(), 1, "the pool and its buffers are gone");
    q.delete().unwrap();
}
