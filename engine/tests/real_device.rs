//! End-to-end tests against real NVMe controllers (in the QEMU guest, or a
//! real SSD). Skipped, saying why, unless `NVME_ENGINE_TEST_PCI` names one or
//! more controllers (`0000:00:04.0`, separated by spaces or commas) that
//! `scripts/setup.sh` has bound to vfio-pci (or uio_pci_generic).
//!
//! - `NVME_ENGINE_TEST_NOIOMMU=1` (or `NVME_ENGINE_TEST_NO_IOMMU=1`) opts in
//!   to the no-IOMMU paths (root).
//! - `NVME_ENGINE_TEST_WRITE=1` allows writes. Every block written is read
//!   first and restored at the end, but a crash in between loses it: use a
//!   scratch device. Without it only reads are issued.
//! - Needs free 2 MiB hugepages (`sudo HUGEMEM=64 scripts/setup.sh`).

use std::time::Duration;

use nvme_engine::dma::{DmaPool, HostMemory, PageSize};
use nvme_engine::vfio::{RealDevice, VfioOptions};
use nvme_engine::{Controller, ControllerOptions, Device, LbaRange, Namespace, QueuePairOptions};

fn addresses() -> Option<Vec<String>> {
    let v = std::env::var("NVME_ENGINE_TEST_PCI").ok()?;
    let list: Vec<String> = v
        .split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    (!list.is_empty()).then_some(list)
}

fn flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1" || v == "yes")
}

fn options() -> VfioOptions {
    VfioOptions {
        no_iommu: flag("NVME_ENGINE_TEST_NOIOMMU") || flag("NVME_ENGINE_TEST_NO_IOMMU"),
        ..VfioOptions::default()
    }
}

fn skip(test: &str) -> Option<Vec<String>> {
    let a = addresses();
    if a.is_none() {
        eprintln!(
            "{test}: SKIPPED: set NVME_ENGINE_TEST_PCI=<bdf> to a controller bound by \
             `sudo scripts/setup.sh` to run it (NVME_ENGINE_TEST_WRITE=1 to allow writes)"
        );
    }
    a
}

fn open(addr: &str) -> RealDevice {
    match RealDevice::open(addr, options()) {
        Ok(d) => d,
        Err(e) => panic!("opening {addr}: {e}"),
    }
}

/// The transport alone: registers, bounds checks and an IOMMU mapping.
fn check_transport(addr: &str, dev: &RealDevice) {
    let cap = dev.read64(0x00);
    let vs = dev.read32(0x08);
    eprintln!("{addr}: CAP={cap:#018x} VS={vs:#010x}");
    assert_ne!(
        cap,
        u64::MAX,
        "CAP reads all-ones: the device is not responding"
    );
    assert_ne!(cap & 0xffff, 0, "CAP.MQES of 0 is not valid");
    assert!(vs >> 16 >= 1, "VS major version {}", vs >> 16);
    assert_eq!(dev.read32(usize::MAX & !3), u32::MAX, "read past BAR0");
    let mem = HostMemory::hugepages(4 << 20, PageSize::Huge2M)
        .unwrap_or_else(|e| panic!("this test needs hugepages: {e}"));
    let vaddr = mem.as_ptr() as u64;
    let region = dev.map_dma(mem).unwrap_or_else(|e| panic!("map_dma: {e}"));
    let iova = region.iova(0).expect("iova of byte 0");
    let last = region
        .iova(region.len() - 1)
        .expect("iova of the last byte");
    eprintln!(
        "{addr}: 4 MiB at vaddr {vaddr:#x} mapped; device addresses per chunk: {:x?}",
        region.chunk_iovas()
    );
    if let RealDevice::Vfio(v) = dev
        && !v.is_no_iommu()
    {
        let ranges = v.iova_ranges();
        assert!(!ranges.is_empty());
        assert!(
            ranges.iter().any(|r| r.start <= iova && last <= r.end),
            "IOVA {iova:#x}..={last:#x} outside {ranges:x?}"
        );
        assert_eq!(last - iova + 1, 4 << 20, "one contiguous IOVA range");
    } else {
        assert_eq!(
            region.chunk_shift(),
            21,
            "one physical address per hugepage"
        );
    }
    drop(region);
}

fn pattern(lba: u64, len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 ^ lba.wrapping_mul(0x9e37_79b9) ^ seed as u64) as u8)
        .collect()
}

fn read_blocks(
    q: &mut nvme_engine::IoQueuePair<RealDevice>,
    pool: &mut DmaPool,
    ns: &Namespace,
    lba: u64,
    len: usize,
) -> Vec<u8> {
    let buf = pool.alloc(len).expect("pool buffer");
    let buf = q
        .read_sync(ns, lba, buf)
        .unwrap_or_else(|e| panic!("read {len} bytes at LBA {lba}: {e}"));
    let data = buf.to_vec();
    pool.free(buf).expect("return buffer");
    data
}

fn write_blocks(
    q: &mut nvme_engine::IoQueuePair<RealDevice>,
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

fn exercise(addr: &str, dev: RealDevice) {
    let ctrl = Controller::new(dev, ControllerOptions::default())
        .unwrap_or_else(|e| panic!("{addr}: bring-up: {e}"));
    let id = ctrl.identify();
    eprintln!(
        "{addr}: model {:?} serial {:?} firmware {:?}; NVMe {}.{}; {} I/O queues granted; max transfer {} bytes",
        id.model(),
        id.serial(),
        id.firmware(),
        ctrl.version().mjr(),
        ctrl.version().mnr(),
        ctrl.io_queues_granted(),
        ctrl.max_transfer_bytes()
    );
    assert!(ctrl.cap().supports_nvm());
    assert!(ctrl.io_queues_granted() >= 1);
    let ns = ctrl
        .namespaces()
        .first()
        .unwrap_or_else(|| {
            panic!(
                "{addr}: no usable namespace ({:?})",
                ctrl.skipped_namespaces()
            )
        })
        .clone();
    eprintln!(
        "{addr}: namespace {} has {} blocks of {} bytes",
        ns.id, ns.blocks, ns.block_size
    );
    let smart = ctrl
        .smart_log()
        .unwrap_or_else(|e| panic!("SMART log: {e}"));
    eprintln!(
        "{addr}: SMART critical warning {:#x}",
        smart.critical_warning
    );

    let mut pool = ctrl.create_pool(8 << 20).expect("DMA pool");
    let mut q = ctrl
        .create_io_qpair(QueuePairOptions::default())
        .expect("I/O queue pair");
    let bs = ns.block_size as usize;

    // One block, then a transfer that needs a PRP list (up to 128 KiB).
    let first = read_blocks(&mut q, &mut pool, &ns, 0, bs);
    assert_eq!(first.len(), bs);
    let big = (128 << 10)
        .min(ctrl.max_transfer_bytes())
        .min(ns.blocks as usize * bs);
    let whole = read_blocks(&mut q, &mut pool, &ns, 0, big);
    assert_eq!(
        &whole[..bs],
        &first[..],
        "the same block read twice differs"
    );

    // A batch: many reads in flight, one doorbell, reaped by token.
    let batch = 16.min(q.capacity()) as u64;
    for t in 0..batch {
        let buf = pool.alloc(bs).expect("pool buffer");
        let lba = t % ns.blocks;
        if let Err(e) = q.read(&ns, lba, buf, 100 + t) {
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

    if !flag("NVME_ENGINE_TEST_WRITE") {
        eprintln!("{addr}: writes SKIPPED (set NVME_ENGINE_TEST_WRITE=1 on a scratch device)");
    } else if ns.read_only {
        eprintln!("{addr}: namespace is write protected; writes skipped");
    } else {
        let blocks = (big / bs) as u64;
        let lba = (ns.blocks / 2).min(ns.blocks - blocks);
        let len = blocks as usize * bs;
        let original = read_blocks(&mut q, &mut pool, &ns, lba, len);

        let data = pattern(lba, len, 1);
        write_blocks(&mut q, &mut pool, &ns, lba, &data, false);
        assert_eq!(
            read_blocks(&mut q, &mut pool, &ns, lba, len),
            data,
            "write/read back"
        );
        let data2 = pattern(lba, bs, 2);
        write_blocks(&mut q, &mut pool, &ns, lba, &data2, true);
        assert_eq!(
            read_blocks(&mut q, &mut pool, &ns, lba, bs),
            data2,
            "FUA write"
        );
        q.flush_sync(&ns).unwrap_or_else(|e| panic!("flush: {e}"));

        if ns.supports_write_zeroes {
            q.write_zeroes_sync(&ns, lba, blocks as u32, false)
                .unwrap_or_else(|e| panic!("write zeroes: {e}"));
            let z = read_blocks(&mut q, &mut pool, &ns, lba, len);
            assert!(z.iter().all(|&b| b == 0), "write zeroes left data behind");
        }
        if ns.supports_deallocate {
            q.deallocate_sync(
                &ns,
                &[LbaRange {
                    lba,
                    blocks: blocks as u32,
                }],
            )
            .unwrap_or_else(|e| panic!("deallocate: {e}"));
            // What a deallocated block reads as is device-specific; only
            // check that reading it works.
            read_blocks(&mut q, &mut pool, &ns, lba, bs);
        }

        write_blocks(&mut q, &mut pool, &ns, lba, &original, true);
        assert_eq!(
            read_blocks(&mut q, &mut pool, &ns, lba, len),
            original,
            "original data restored"
        );
        eprintln!("{addr}: write, FUA, flush, write zeroes, deallocate checked at LBA {lba}");
    }

    let stats = format!("{:?}", q.stats());
    q.delete()
        .unwrap_or_else(|e| panic!("delete queue pair: {e}"));
    ctrl.shutdown().unwrap_or_else(|e| panic!("shutdown: {e}"));
    eprintln!("{addr}: OK ({stats})");
}

#[test]
fn real_controllers_open_map_dma_and_do_io() {
    let Some(addrs) = skip("real_controllers_open_map_dma_and_do_io") else {
        return;
    };
    // All controllers open at once, each with its own container.
    let devices: Vec<(String, RealDevice)> = addrs.iter().map(|a| (a.clone(), open(a))).collect();
    for (addr, dev) in &devices {
        check_transport(addr, dev);
        if let RealDevice::Vfio(_) = dev {
            // A VFIO group is exclusive: a second open must fail, and say why.
            match RealDevice::open(addr, options()) {
                Ok(_) => panic!("{addr} opened twice"),
                Err(e) => eprintln!("{addr}: second open refused: {e}"),
            }
        }
    }
    for (addr, dev) in devices {
        exercise(&addr, dev);
    }
}
