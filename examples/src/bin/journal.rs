//! journal: an append-only journal that commits each record with a FUA
//! write from an application thread through a pinned reactor, and reports
//! commit latency percentiles.
//!
//! Usage: `journal [-r TRANSPORT_ID] [--records N] [--record-bytes B] [--depth D]
//! [--fail-writes P]` (`--help` for details; defaults: 2000 records of 4096
//! bytes, one commit in flight; without -r: the built-in emulated controller). On a
//! real device this overwrites the start of namespace 1 (or of ns:N).
//!
//! A record counts as committed only when its write succeeded; failed
//! records are counted apart, not read back, and make the exit status
//! non-zero.

use std::collections::VecDeque;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use nvme_emu::{FaultAction, FaultRule};
use nvme_engine::Controller;
use nvme_engine::Device;
use nvme_engine::spec::{command::NvmOpcode, status::StatusCodeType, status::media};
use nvme_engine_examples::baseline::{Baseline, direct_qd1_writes, histogram};
use nvme_engine_examples::{DeviceArgs, Example, Setup, run};
use nvme_reactor::{CoreSpec, ReactorConfig, ReactorSet, Request, pin_current_thread};

struct Journal {
    records: u64,
    record_bytes: usize,
    depth: usize,
    fail_writes: Option<f64>,
    read_back: bool,
}

/// Record header: sequence number and payload checksum, then payload.
fn encode(seq: u64, out: &mut [u8]) {
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in out[16..].iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let sum = out[16..]
        .iter()
        .fold(0u64, |s, &b| s.rotate_left(5) ^ b as u64);
    out[..8].copy_from_slice(&seq.to_le_bytes());
    out[8..16].copy_from_slice(&sum.to_le_bytes());
}

/// Microseconds at quantile `q`.
fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e3
}

impl Example for Journal {
    /// This thread (submitting and polling) and the reactor.
    fn busy_threads(&self) -> usize {
        2
    }

    fn run<D: Device>(self, controller: Controller<D>, setup: &Setup) -> Result<()> {
        let ns = setup.namespace(&controller)?;
        let nsid = ns.id();
        let block = ns.block_size() as usize;
        if self.record_bytes == 0 || !self.record_bytes.is_multiple_of(block) {
            bail!(
                "--record-bytes {} is not a positive multiple of the {block}-byte block size",
                self.record_bytes
            );
        }
        let max = controller.max_transfer_bytes();
        if self.record_bytes > max {
            bail!(
                "--record-bytes {} is more than the controller's maximum transfer of {max} bytes \
                 (MDTS and the driver's cap); use at most {max}",
                self.record_bytes
            );
        }
        let blocks_per_record = (self.record_bytes / block) as u64;
        let capacity = ns.blocks() / blocks_per_record;
        if self.records > capacity {
            bail!(
                "{} records of {} bytes do not fit the namespace ({capacity} fit)",
                self.records,
                self.record_bytes
            );
        }
        // The first commits fault pages in and warm caches: left out of
        // the percentiles (they are still written, counted and read back).
        let warmup = (self.records / 10).min(100);

        let (app_core, core) = (setup.plan.threads[0], setup.plan.threads[1]);
        let window = self.depth.max(8);
        let config = ReactorConfig {
            cores: CoreSpec::from_cores([core]),
            pin: true,
            idle_yield: setup.plan.shared,
            ring_capacity: window * 2,
            // Power-of-two blocks: room for every buffer of the read-back
            // window and the commits in flight, plus one.
            producer_pool_bytes: (self.record_bytes.next_power_of_two() * (window + 1))
                .next_multiple_of(2 << 20),
            ..ReactorConfig::default()
        };
        // Start the reactor before pinning this thread: the set checks its
        // cores against the calling thread's allowed CPUs.
        let set = ReactorSet::start(config, vec![controller.clone()])?;
        pin_current_thread(app_core)?;
        // The reference: the same commits in direct mode on this thread,
        // while the reactor idles on its own core.
        let baseline = direct_qd1_writes(
            &controller,
            nsid,
            blocks_per_record,
            self.record_bytes,
            warmup,
            self.records - warmup,
            setup.builtin.is_some_and(|d| d.is_inline()),
            encode,
        )?;
        let mut p = set.producer(0)?;
        if let (Some(rate), Some(emu)) = (self.fail_writes, setup.emu.as_ref()) {
            emu.seed_faults(0x006a_6f75_726e_616c);
            emu.add_fault(
                FaultRule::new(FaultAction::status(
                    StatusCodeType::MEDIA,
                    media::WRITE_FAULT,
                    true,
                ))
                .io()
                .opcode(NvmOpcode::WRITE.0)
                .probability(rate),
            );
            println!(
                "injecting Write Faults into {:.1}% of the writes",
                rate * 100.0
            );
        }
        println!(
            "journal: {} records of {} bytes, FUA, {} in flight; this thread on core {app_core}, \
             reactor on core {core}",
            self.records, self.record_bytes, self.depth
        );

        let mut hist = histogram()?;
        let mut scratch = vec![0u8; self.record_bytes];
        let mut started: VecDeque<(u64, Instant)> = VecDeque::with_capacity(self.depth);
        let mut next = 0u64;
        let mut answered = 0u64;
        let mut committed = Vec::with_capacity(self.records as usize);
        let mut failures = 0u64;
        // Set when the controller was removed or failed: stop appending.
        let mut device_lost = false;
        let mut done = Vec::with_capacity(self.depth);
        let t0 = Instant::now();
        while answered < next || (!device_lost && next < self.records) {
            while !device_lost && next < self.records && started.len() < self.depth {
                encode(next, &mut scratch);
                let mut buf = p.alloc(self.record_bytes)?;
                buf.write_at(0, &scratch);
                let lba = next * blocks_per_record;
                let at = Instant::now();
                match p.try_submit(Request::write(0, nsid, lba, buf, true, next)) {
                    Ok(()) => {
                        started.push_back((next, at));
                        next += 1;
                    }
                    Err(rejected) => {
                        if let Some(b) = rejected.request.buf {
                            p.free(b)?;
                        }
                        break;
                    }
                }
            }
            if p.poll_completions(|r| done.push((Instant::now(), r))) == 0 {
                if setup.plan.shared {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            for (now, r) in done.drain(..) {
                let Some(pos) = started.iter().position(|(seq, _)| *seq == r.token) else {
                    bail!("response for unknown record {}", r.token);
                };
                let (_, at) = started.remove(pos).context("record vanished")?;
                answered += 1;
                if let Some(b) = r.buf {
                    p.free(b)?;
                }
                match &r.result {
                    Ok(_) => {
                        if r.token >= warmup {
                            hist.record((now - at).as_nanos().max(1) as u64)?;
                        }
                        committed.push(r.token);
                    }
                    Err(e) => {
                        failures += 1;
                        if failures <= 5 {
                            eprintln!("record {} failed: {e}", r.token);
                        }
                        device_lost |= e.controller_unusable();
                    }
                }
            }
        }
        let elapsed = t0.elapsed();

        println!(
            "committed {} records in {:.3} s ({:.0} records/s, {:.1} MiB/s); {failures} failed",
            committed.len(),
            elapsed.as_secs_f64(),
            committed.len() as f64 / elapsed.as_secs_f64(),
            (committed.len() as f64 * self.record_bytes as f64)
                / elapsed.as_secs_f64()
                / (1 << 20) as f64
        );
        if !hist.is_empty() {
            println!("commit latency (µs, first {warmup} commits left out as warm-up):");
            println!("  min    {:>10.2}", hist.min() as f64 / 1e3);
            println!("  p50    {:>10.2}", us(&hist, 0.50));
            println!("  p99    {:>10.2}", us(&hist, 0.99));
            println!("  p99.9  {:>10.2}", us(&hist, 0.999));
            println!("  max    {:>10.2}", hist.max() as f64 / 1e3);
            breakdown(&hist, &baseline, self.depth, setup);
            // One line for scripts (scripts/bench.sh reads it from the guest).
            println!(
                "journal-summary records={} record_bytes={} depth={} p50_us={:.2} p99_us={:.2} \
                 p999_us={:.2} direct_p50_us={:.2} direct_p99_us={:.2}",
                committed.len(),
                self.record_bytes,
                self.depth,
                us(&hist, 0.5),
                us(&hist, 0.99),
                us(&hist, 0.999),
                us(&baseline.total, 0.5),
                us(&baseline.total, 0.99)
            );
        }

        // Recovery: read the journal back and check every committed record.
        let mut checked = 0usize;
        let mut bad = 0u64;
        let mut next = 0usize;
        let mut in_flight = 0usize;
        let mut read = Vec::with_capacity(window);
        if !self.read_back {
            println!("read back skipped (--no-read-back)");
            committed.clear();
        }
        while checked < committed.len() {
            while next < committed.len() && in_flight < window {
                let buf = p.alloc(self.record_bytes)?;
                let seq = committed[next];
                let lba = seq * blocks_per_record;
                match p.try_submit(Request::read(0, nsid, lba, buf, seq)) {
                    Ok(()) => {
                        next += 1;
                        in_flight += 1;
                    }
                    Err(rejected) => {
                        if let Some(b) = rejected.request.buf {
                            p.free(b)?;
                        }
                        break;
                    }
                }
            }
            if p.poll_completions(|r| read.push(r)) == 0 {
                std::thread::yield_now();
            }
            for r in read.drain(..) {
                in_flight -= 1;
                checked += 1;
                let buf = r.buf.context("read buffer not returned")?;
                encode(r.token, &mut scratch);
                if r.result.is_err() || buf.to_vec() != scratch {
                    bad += 1;
                    if bad <= 5 {
                        eprintln!("record {} does not read back as committed", r.token);
                    }
                }
                p.free(buf)?;
            }
        }
        if self.read_back {
            println!(
                "read back {checked} records: {} intact, {bad} damaged",
                checked as u64 - bad
            );
        }

        let report = set.shutdown();
        print!("{report}");
        if failures > 0 || bad > 0 || !report.is_clean() {
            bail!(
                "{failures} record(s) failed to commit (not counted as committed), \
                 {bad} read back damaged"
            );
        }
        Ok(())
    }
}

/// Where a commit's time goes, at the median: the reactor path against
/// direct mode on this thread, and with the inline built-in device the
/// device's own work (the doorbell write) apart from the engine's.
fn breakdown(reactor: &Histogram<u64>, base: &Baseline, depth: usize, setup: &Setup) {
    let direct = &base.total;
    println!(
        "where a commit's time goes (µs, {}this run):",
        if depth > 1 {
            "QD1 direct mode against this journal's depth, "
        } else {
            ""
        }
    );
    println!(
        "  {:<52} p50 {:>8.2}   p99 {:>8.2}",
        "through the reactor (the journal above)",
        us(reactor, 0.5),
        us(reactor, 0.99)
    );
    println!(
        "  {:<52} p50 {:>8.2}   p99 {:>8.2}",
        "direct mode on this thread (engine + device)",
        us(direct, 0.5),
        us(direct, 0.99)
    );
    if let (Some(device), Some(engine)) = (&base.doorbell, &base.engine) {
        println!(
            "  {:<52} p50 {:>8.2}   p99 {:>8.2}",
            "  device: the inline doorbell write",
            us(device, 0.5),
            us(device, 0.99)
        );
        println!(
            "  {:<52} p50 {:>8.2}   p99 {:>8.2}",
            "  engine: building, submitting and reaping",
            us(engine, 0.5),
            us(engine, 0.99)
        );
    }
    println!(
        "  {:<52} p50 {:>8.2}",
        "reactor hop (ring → reactor → ring), by difference",
        us(reactor, 0.5) - us(direct, 0.5)
    );
    if setup.builtin.is_some() {
        let (p50, p99) = (us(reactor, 0.5), us(reactor, 0.99));
        println!(
            "target on the built-in device: p50 ≤ 5 µs ({}), p99 ≤ 20 µs ({})",
            if p50 <= 5.0 { "met" } else { "not met" },
            if p99 <= 20.0 { "met" } else { "not met" }
        );
    }
}

/// An append-only journal committing FUA writes through a pinned reactor.
#[derive(Parser)]
#[command(
    about = "An append-only journal: commits FUA writes through a pinned reactor, prints commit \
             latency percentiles and where a commit's time goes against direct mode, then reads \
             every committed record back. On a real device it overwrites the start of namespace 1."
)]
struct Args {
    #[command(flatten)]
    device: DeviceArgs,
    /// Records to commit.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    records: u64,
    /// Bytes per record: a multiple of the block size, at most the
    /// controller's maximum transfer.
    #[arg(long, default_value_t = 4096)]
    record_bytes: usize,
    /// Commits in flight at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    depth: u16,
    /// Built-in device only: fail this share of the journal's writes with
    /// a Write Fault (seeded, so repeatable), to see failures reported
    /// apart from commits.
    #[arg(long, value_name = "P", value_parser = probability)]
    fail_writes: Option<f64>,
    /// Skip reading the journal back: for devices that discard what is
    /// written (QEMU's null-co backend reads back zeros).
    #[arg(long)]
    no_read_back: bool,
}

fn probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a probability between 0 and 1")),
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let journal = Journal {
        records: args.records,
        record_bytes: args.record_bytes,
        depth: args.depth as usize,
        fail_writes: args.fail_writes,
        read_back: !args.no_read_back,
    };
    if journal.fail_writes.is_some() && args.device.is_pcie() {
        bail!(
            "--fail-writes injects faults into an emulated controller; drop the PCIe -r to use it"
        );
    }
    run(&args.device, journal)
}
