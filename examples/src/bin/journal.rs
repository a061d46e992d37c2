//! journal: an append-only journal that commits each record with a FUA
//! write from an application thread through a pinned reactor, and reports
//! commit latency percentiles.
//!
//! Usage: `journal [PCI address] [--records N] [--record-bytes B] [--depth D]`
//! (defaults: 2000 records of 4096 bytes, one commit in flight; no address:
//! the emulated controller). On a real device this overwrites the start of
//! namespace 1.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use nvme_engine::Device;
use nvme_engine::driver::Controller;
use nvme_engine_examples::{Example, option, pci_address_arg, run};
use nvme_reactor::{AllowedCores, CoreSpec, ReactorConfig, ReactorSet, Request};

struct Journal {
    records: u64,
    record_bytes: usize,
    depth: usize,
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

impl Example for Journal {
    fn run<D: Device>(self, controller: Controller<D>) -> Result<()> {
        let ns = controller
            .namespaces()
            .first()
            .context("the controller has no active namespace")?;
        let nsid = ns.id;
        let block = ns.block_size as usize;
        if self.record_bytes == 0 || !self.record_bytes.is_multiple_of(block) {
            bail!("--record-bytes must be a positive multiple of the {block}-byte block size");
        }
        let blocks_per_record = (self.record_bytes / block) as u64;
        let capacity = ns.blocks / blocks_per_record;
        if self.records > capacity {
            bail!(
                "{} records of {} bytes do not fit the namespace ({capacity} fit)",
                self.records,
                self.record_bytes
            );
        }

        let allowed = AllowedCores::current()?;
        let core = *allowed.cores().last().context("no allowed core")?;
        let config = ReactorConfig {
            cores: CoreSpec::from_cores([core]),
            pin: true,
            // Yield on idle turns: on a small machine the reactor shares
            // cores with this thread and the emulated device's thread.
            idle_yield: true,
            ring_capacity: self.depth.max(1) * 2,
            producer_pool_bytes: (self.record_bytes * self.depth * 2).max(2 << 20),
            ..ReactorConfig::default()
        };
        let set = ReactorSet::start(config, vec![controller])?;
        let mut p = set.producer(0)?;
        println!(
            "journal: {} records of {} bytes, FUA, {} in flight, reactor on core {core}",
            self.records, self.record_bytes, self.depth
        );

        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
        let mut scratch = vec![0u8; self.record_bytes];
        let mut started: VecDeque<(u64, Instant)> = VecDeque::with_capacity(self.depth);
        let mut next = 0u64;
        let mut committed = 0u64;
        let mut failures = 0u64;
        // Set when the controller was removed or failed: stop appending.
        let mut device_lost = false;
        let t0 = Instant::now();
        while committed < self.records && !(device_lost && started.is_empty()) {
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
            let mut done = Vec::new();
            if p.poll_completions(|r| done.push((Instant::now(), r))) == 0 {
                std::thread::yield_now();
            }
            for (now, r) in done {
                let Some(pos) = started.iter().position(|(seq, _)| *seq == r.token) else {
                    bail!("response for unknown record {}", r.token);
                };
                let (_, at) = started.remove(pos).context("record vanished")?;
                hist.record((now - at).as_nanos().max(1) as u64)?;
                if let Err(e) = &r.result {
                    failures += 1;
                    eprintln!("record {} failed: {e}", r.token);
                    device_lost |= e.controller_unusable();
                }
                if let Some(b) = r.buf {
                    p.free(b)?;
                }
                committed += 1;
            }
        }
        let elapsed = t0.elapsed();

        let us = |q: f64| Duration::from_nanos(hist.value_at_quantile(q)).as_secs_f64() * 1e6;
        println!(
            "committed {committed} records in {:.3} s ({:.0} records/s, {:.1} MiB/s)",
            elapsed.as_secs_f64(),
            committed as f64 / elapsed.as_secs_f64(),
            (committed as f64 * self.record_bytes as f64)
                / elapsed.as_secs_f64()
                / (1 << 20) as f64
        );
        println!("commit latency (µs):");
        println!("  min    {:>10.1}", hist.min() as f64 / 1e3);
        println!("  p50    {:>10.1}", us(0.50));
        println!("  p99    {:>10.1}", us(0.99));
        println!("  p99.9  {:>10.1}", us(0.999));
        println!("  max    {:>10.1}", hist.max() as f64 / 1e3);

        // Recovery: read the journal back and check every record.
        let mut checked = 0u64;
        let mut bad = 0u64;
        let mut next = 0u64;
        let mut in_flight = 0usize;
        let window = self.depth.max(8);
        while checked < committed {
            while next < committed && in_flight < window {
                let buf = p.alloc(self.record_bytes)?;
                let lba = next * blocks_per_record;
                match p.try_submit(Request::read(0, nsid, lba, buf, next)) {
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
            let mut done = Vec::new();
            if p.poll_completions(|r| done.push(r)) == 0 {
                std::thread::yield_now();
            }
            for r in done {
                in_flight -= 1;
                checked += 1;
                let buf = r.buf.context("read buffer not returned")?;
                let mut expect = vec![0u8; self.record_bytes];
                encode(r.token, &mut expect);
                if r.result.is_err() || buf.to_vec() != expect {
                    bad += 1;
                    if bad <= 5 {
                        eprintln!("record {} does not read back as committed", r.token);
                    }
                }
                p.free(buf)?;
            }
        }
        println!(
            "read back {checked} records: {} intact, {bad} damaged",
            checked - bad
        );

        let report = set.shutdown();
        print!("{report}");
        if failures > 0 || bad > 0 || !report.is_clean() {
            bail!("{failures} record(s) failed to commit, {bad} read back damaged");
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    let journal = Journal {
        records: option("--records")?.unwrap_or(2000),
        record_bytes: option("--record-bytes")?.unwrap_or(4096),
        depth: option::<usize>("--depth")?.unwrap_or(1).max(1),
    };
    run(pci_address_arg().as_deref(), journal)
}
