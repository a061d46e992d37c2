//! nvme-perf: the benchmarking CLI of nvme-engine, in the spirit of
//! `spdk_nvme_perf`. Worker threads, one per selected core, drive their own
//! queue pairs directly (no rings) and run to completion; see `--help`.
//!
//! No `unsafe`: the TSC read is the engine's, the signal handlers
//! signal-hook's.

#![forbid(unsafe_code)]

mod app;
mod cli;
mod clock;
mod cpu;
mod device;
mod discover;
mod hot;
mod json;
mod memory;
mod options;
mod pattern;
mod placement;
mod plan;
mod precheck;
mod protection;
mod report;
mod rng;
mod run;
mod signal;
mod spdk;
mod stats;
mod summary;
mod target;
mod tcp;
mod units;
mod uring;
mod vpass;
mod worker;
mod zipf;

fn main() {
    match app::main() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("nvme-perf: error: {e:#}");
            std::process::exit(1);
        }
    }
}
