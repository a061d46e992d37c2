//! Register (BAR) accesses per I/O on the polling path, counted by a
//! `Device` wrapper around the inline emulated controller. Every access is
//! a trap into the hypervisor's device model in a virtual machine (QEMU:
//! an exit from translated code or a VM exit), far dearer than on the host,
//! so the hot path's budget is exact: no register reads at all, one SQ tail
//! and one CQ head doorbell write per batch, and nothing while polling an
//! idle queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use nvme_emu::{EmuConfig, EmuController, FaultAction, FaultRule};
use nvme_engine::dma::{DmaError, DmaRegion, HostMemory};
use nvme_engine::{Controller, ControllerOptions, Device, IoQueuePair, QueuePairOptions};

#[derive(Default)]
struct Counts {
    reads: AtomicU64,
    writes: AtomicU64,
}

impl Counts {
    fn get(&self) -> (u64, u64) {
        (self.reads.load(Relaxed), self.writes.load(Relaxed))
    }
}

struct Counting(EmuController, Arc<Counts>);

impl Device for Counting {
    fn read32(&self, off: usize) -> u32 {
        self.1.reads.fetch_add(1, Relaxed);
        self.0.read32(off)
    }
    fn write32(&self, off: usize, v: u32) {
        self.1.writes.fetch_add(1, Relaxed);
        self.0.write32(off, v)
    }
    fn read64(&self, off: usize) -> u64 {
        self.1.reads.fetch_add(1, Relaxed);
        self.0.read64(off)
    }
    fn write64(&self, off: usize, v: u64) {
        self.1.writes.fetch_add(1, Relaxed);
        self.0.write64(off, v)
    }
    fn map_dma(&self, m: HostMemory) -> Result<DmaRegion, DmaError> {
        self.0.map_dma(m)
    }
    fn allows_plain_memory(&self) -> bool {
        true
    }
    fn name(&self) -> String {
        self.0.name()
    }
}

type Ctrl = Controller<Counting>;

fn up(shadow: bool) -> (Ctrl, nvme_emu::EmuHandle, Arc<Counts>) {
    let emu = EmuController::new(EmuConfig::ram(16 << 20)).unwrap();
    let h = emu.handle();
    let counts = Arc::new(Counts::default());
    let opts = ControllerOptions::default().with_shadow_doorbells(shadow);
    let ctrl = Controller::new(Counting(emu, Arc::clone(&counts)), opts).unwrap();
    (ctrl, h, counts)
}

fn qpair(ctrl: &Ctrl) -> IoQueuePair<Counting> {
    ctrl.create_io_qpair(QueuePairOptions::default().with_entries(256))
        .unwrap()
}

/// nvme-perf's turn at queue depth `qd`: submit on every free buffer, ring,
/// reap. Returns (register reads, register writes) per I/O over `ios`
/// I/Os after a warm-up.
fn per_io(shadow: bool, qd: usize, ios: u64) -> (f64, f64) {
    let (ctrl, _h, counts) = up(shadow);
    let ns = ctrl.namespace(1).unwrap().clone();
    let mut qp = qpair(&ctrl);
    let mut pool = ctrl.create_pool((qd + 1) * 4096).unwrap();
    let mut free: Vec<_> = (0..qd).map(|_| pool.alloc(4096).unwrap()).collect();
    let (mut done, mut token) = (0u64, 0u64);
    let mut start = None;
    while done < ios + 64 {
        if done >= 64 && start.is_none() {
            start = Some((counts.get(), done));
        }
        while let Some(b) = free.pop() {
            qp.read(&ns, (token % 2048) * 8, b, token).unwrap();
            token += 1;
        }
        qp.ring_doorbell();
        done += qp.process_completions(usize::MAX, |c| {
            c.result.unwrap();
            free.push(c.buf.unwrap());
        }) as u64;
    }
    let ((r0, w0), d0) = start.unwrap();
    let (r, w) = counts.get();
    let n = (done - d0) as f64;
    ((r - r0) as f64 / n, (w - w0) as f64 / n)
}

#[test]
fn the_io_path_reads_no_register_and_writes_two_doorbells_per_batch() {
    for shadow in [false, true] {
        // QD1: every I/O is its own batch (the inline device answers at
        // once, so even shadow doorbells are asked for on every update).
        let (r, w) = per_io(shadow, 1, 2000);
        assert_eq!((r, w), (0.0, 2.0), "QD1, shadow {shadow}");
        // QD32: the whole depth completes in one reap and is submitted
        // again as one batch: one tail and one head write per 32 I/Os.
        let (r, w) = per_io(shadow, 32, 32 * 200);
        assert_eq!((r, w), (0.0, 2.0 / 32.0), "QD32, shadow {shadow}");
    }
}

#[test]
fn polling_an_idle_queue_and_checking_deadlines_touch_no_register() {
    let (ctrl, h, counts) = up(false);
    let ns = ctrl.namespace(1).unwrap().clone();
    let mut qp = qpair(&ctrl);
    let mut pool = ctrl.create_pool(4096).unwrap();
    // A command the device holds: outstanding, nothing to reap.
    h.add_fault(FaultRule::new(FaultAction::NeverComplete).io().once());
    qp.read(&ns, 0, pool.alloc(4096).unwrap(), 1).unwrap();
    qp.ring_doorbell();
    let before = counts.get();
    let now = std::time::Instant::now();
    for _ in 0..10_000 {
        qp.ring_doorbell();
        assert_eq!(qp.process_completions(usize::MAX, |_| {}), 0);
        // Deadlines far off, scan interval not passed after the first.
        qp.check_timeouts(now);
    }
    assert_eq!(counts.get(), before, "(reads, writes) while idle");
    assert_eq!(qp.outstanding(), 1);
}
