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
//!
//! The checks adapt to the controller: transfer sizes are capped at its
//! MDTS, and what needs more I/O queues than it granted is skipped with the
//! reason printed. The same checks also run, always, against the emulated
//! controller configured like the smallest real ones (MDTS 8 KiB or 32 KiB,
//! one or two I/O queues), so that adaptation is tested without hardware.

// Asynchronous events from the same controller, in this binary so the guest
// runs them without another static build.
#[path = "real_device/events.rs"]
mod events;
// A namespace attached and detached at run time, also in this binary.
#[path = "real_device/attach.rs"]
mod attach;

mod device_cases;

use std::time::{Duration, Instant};

use nvme_emu::{EmuConfig, EmuController};
use nvme_engine::dma::{DmaError, DmaPool, DmaRegion, HostMemory, PageSize};
use nvme_engine::vfio::{RealDevice as PciDevice, VfioOptions};
use nvme_engine::{
    Controller, ControllerOptions, Device, IoCompletion, Namespace, QueuePairOptions,
};

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
    VfioOptions::default()
        .with_no_iommu(flag("NVME_ENGINE_TEST_NOIOMMU") || flag("NVME_ENGINE_TEST_NO_IOMMU"))
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

/// The device under test: a PCI controller, or the emulated controller
/// standing in for a small one.
enum RealDevice {
    Pci(PciDevice),
    Emu(EmuController),
}

impl Device for RealDevice {
    fn read32(&self, offset: usize) -> u32 {
        match self {
            RealDevice::Pci(d) => d.read32(offset),
            RealDevice::Emu(d) => d.read32(offset),
        }
    }
    fn write32(&self, offset: usize, value: u32) {
        match self {
            RealDevice::Pci(d) => d.write32(offset, value),
            RealDevice::Emu(d) => d.write32(offset, value),
        }
    }
    fn map_dma(&self, memory: HostMemory) -> Result<DmaRegion, DmaError> {
        match self {
            RealDevice::Pci(d) => d.map_dma(memory),
            RealDevice::Emu(d) => d.map_dma(memory),
        }
    }
    fn allows_plain_memory(&self) -> bool {
        matches!(self, RealDevice::Emu(_))
    }
    fn name(&self) -> String {
        match self {
            RealDevice::Pci(d) => d.name(),
            RealDevice::Emu(d) => d.name(),
        }
    }
    fn quiesce(&self) -> Result<(), nvme_engine::QuiesceError> {
        match self {
            RealDevice::Pci(d) => d.quiesce(),
            RealDevice::Emu(d) => d.quiesce(),
        }
    }
}

impl device_cases::Subject for Controller<RealDevice> {
    type T = nvme_engine::PcieQueue<RealDevice>;
    fn namespaces(&self) -> Vec<Namespace> {
        Controller::namespaces(self).to_vec()
    }
    fn max_transfer_bytes(&self) -> usize {
        Controller::max_transfer_bytes(self)
    }
    fn queues_granted(&self) -> usize {
        self.io_queues_granted() as usize
    }
    fn pool(&self, bytes: usize) -> DmaPool {
        self.create_pool(bytes).expect("DMA pool")
    }
    fn queue(
        &self,
        entries: Option<u16>,
        _pool: &mut DmaPool,
    ) -> nvme_engine::IoQueuePair<RealDevice> {
        let mut o = QueuePairOptions::default();
        o.entries = entries;
        self.create_io_qpair(o).expect("I/O queue pair")
    }
}

fn open(addr: &str) -> PciDevice {
    match PciDevice::open(addr, options()) {
        Ok(d) => d,
        Err(e) => panic!("opening {addr}: {e}"),
    }
}

/// The transport alone: registers, bounds checks and an IOMMU mapping.
fn check_transport(addr: &str, dev: &PciDevice) {
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
    if let PciDevice::Vfio(v) = dev
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

fn exercise(addr: &str, dev: RealDevice, writes: bool) {
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
        ns.id(),
        ns.blocks(),
        ns.block_size()
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
    device_cases::io_checks(addr, &ctrl, &mut q, &mut pool, &ns, writes);

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
    let devices: Vec<(String, PciDevice)> = addrs.iter().map(|a| (a.clone(), open(a))).collect();
    for (addr, dev) in &devices {
        check_transport(addr, dev);
        if let PciDevice::Vfio(_) = dev {
            // A VFIO group is exclusive: a second open must fail, and say why.
            match PciDevice::open(addr, options()) {
                Ok(_) => panic!("{addr} opened twice"),
                Err(e) => eprintln!("{addr}: second open refused: {e}"),
            }
        }
    }
    for (addr, dev) in devices {
        exercise(&addr, RealDevice::Pci(dev), flag("NVME_ENGINE_TEST_WRITE"));
    }
}

/// Doorbell figures of one controller life: `ios` 4 KiB reads at QD32 from
/// the first namespace, reaping one completion and submitting one read per
/// call: the worst case for doorbells (a tail and a head update per I/O;
/// reaping whole batches leaves about 2/32 MMIO writes per I/O either way).
struct DoorbellRun {
    shadow_active: bool,
    configurations: u64,
    stats: nvme_engine::QueuePairStats,
    ios: u64,
}

impl DoorbellRun {
    fn mmio_per_io(&self) -> f64 {
        (self.stats.sq_doorbell_writes + self.stats.cq_doorbell_writes) as f64 / self.ios as f64
    }
}

fn doorbell_run(addr: &str, shadow: bool, ios: u64) -> DoorbellRun {
    let opts = ControllerOptions::default().with_shadow_doorbells(shadow);
    let ctrl = Controller::new(RealDevice::Pci(open(addr)), opts)
        .unwrap_or_else(|e| panic!("{addr}: bring-up: {e}"));
    let ns = ctrl
        .namespaces()
        .first()
        .expect("a usable namespace")
        .clone();
    let mut q = ctrl
        .create_io_qpair(QueuePairOptions::default().with_entries(256))
        .unwrap_or_else(|e| panic!("{addr}: queue pair: {e}"));
    let mut pool = ctrl.create_pool(64 * 4096).expect("pool");
    let span = (ns.blocks() * ns.block_size() as u64 / 4096).clamp(1, 4096);
    let per = 4096 / ns.block_size() as u64;
    let mut next = 0u64;
    for _ in 0..32 {
        let buf = pool.alloc(4096).expect("alloc");
        q.read(&ns, (next % span) * per, buf, next)
            .expect("read submitted");
        next += 1;
    }
    let mut done = 0u64;
    let start = Instant::now();
    while done < ios {
        let mut back = None;
        q.process_completions(1, |c: IoCompletion| {
            c.result
                .unwrap_or_else(|e| panic!("{addr}: read failed: {e}"));
            back = c.buf;
        });
        if let Some(buf) = back {
            done += 1;
            q.read(&ns, (next % span) * per, buf, next)
                .expect("read submitted");
            next += 1;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{addr}: {done} of {ios} reads in 120 s"
        );
    }
    device_cases::reap(&mut q, 32, |c| {
        c.result.expect("read");
    });
    DoorbellRun {
        shadow_active: ctrl.shadow_doorbells_active(),
        configurations: ctrl.shadow_doorbell_configurations(),
        stats: *q.stats(),
        ios,
    }
}

#[test]
fn real_controllers_use_shadow_doorbells_and_write_fewer_mmio_doorbells_per_io() {
    let Some(addrs) =
        skip("real_controllers_use_shadow_doorbells_and_write_fewer_mmio_doorbells_per_io")
    else {
        return;
    };
    const IOS: u64 = 20_000;
    for addr in &addrs {
        // One controller life each: shadow doorbells on (the default), then off.
        let on = doorbell_run(addr, true, IOS);
        let off = doorbell_run(addr, false, IOS);
        eprintln!(
            "{addr}: QD32 4 KiB reads: MMIO doorbell writes per I/O {:.3} with shadow doorbells \
             ({} SQ + {} CQ shadow-only updates), {:.3} without",
            on.mmio_per_io(),
            on.stats.sq_shadow_updates,
            on.stats.cq_shadow_updates,
            off.mmio_per_io()
        );
        assert!(!off.shadow_active && off.configurations == 0);
        assert_eq!(off.stats.sq_shadow_updates + off.stats.cq_shadow_updates, 0);
        if !on.shadow_active {
            eprintln!(
                "{addr}: SKIPPED the shadow doorbell figures: the controller does not support \
                 Doorbell Buffer Config (OACS bit 8) or refused it"
            );
            continue;
        }
        assert_eq!(on.configurations, 1);
        assert!(
            on.stats.sq_shadow_updates + on.stats.cq_shadow_updates > 0,
            "{addr}: the device never let an update stay in the shadow: {:?}",
            on.stats
        );
        assert!(
            on.mmio_per_io() < off.mmio_per_io(),
            "{addr}: MMIO doorbell writes per I/O did not drop: {:.3} with, {:.3} without",
            on.mmio_per_io(),
            off.mmio_per_io()
        );
    }
}

/// The emulated controller as a small real one: `mdts` (8 KiB = 1,
/// 32 KiB = 3), `queues` I/O queues, two 32 MiB namespaces (512 B and 4 KiB
/// blocks). Writes are always on: the media is RAM.
fn small_controller(mdts: u8, queues: u16) -> RealDevice {
    let mut cfg = EmuConfig::ram(32 << 20).namespace(nvme_emu::EmuNamespaceConfig::ram(4096, 8192));
    cfg.mdts = mdts;
    cfg.io_queues = queues;
    RealDevice::Emu(EmuController::new(cfg).expect("emulated controller"))
}

#[test]
fn real_device_checks_adapt_to_8k_mdts_and_one_granted_queue() {
    exercise("emu(mdts 8 KiB, 1 queue)", small_controller(1, 1), true);
}

#[test]
fn real_device_checks_adapt_to_32k_mdts_and_two_granted_queues() {
    exercise("emu(mdts 32 KiB, 2 queues)", small_controller(3, 2), true);
}
