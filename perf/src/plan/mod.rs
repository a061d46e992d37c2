//! What will run where: the controllers to open (from `-r` or discovery)
//! and where their device threads go, the namespaces each worker drives,
//! the CPU the main thread reports from, and whether the memory all of it
//! needs is there. Nothing here moves I/O; `run` does.

#![forbid(unsafe_code)]

mod describe;
mod devices;
mod jobs;

use std::io::Write;

use crate::options::Options;
use crate::precheck;
use crate::target::Target;
use crate::worker::WorkerPlan;
use anyhow::Result;

pub use describe::describe;
pub use jobs::{PlanOptions, RowInfo, divide_among};

/// Everything decided before the workers start.
pub struct Plan {
    /// The opened controllers, in transport order.
    pub targets: Vec<Target>,
    /// One plan per worker core.
    pub workers: Vec<WorkerPlan>,
    /// One report row per namespace per worker.
    pub rows: Vec<RowInfo>,
    /// Entries of every I/O queue.
    pub entries: u16,
    /// A CPU no worker and no device thread uses, for the main thread.
    pub reporter_core: Option<usize>,
}

/// Open the controllers `o` names and divide their namespaces among the
/// workers; warnings and the discovery note go to `human`.
pub fn make(o: &Options, human: &mut dyn Write) -> Result<Plan> {
    let transports = devices::transports(o)?;
    crate::uring::check_not_mixed(&transports.ids)?;
    let threads = devices::place_device_threads(o, &transports.ids)?;
    let targets = devices::open(o, &transports.ids, &threads, human)?;
    if let Some(note) = &transports.note {
        writeln!(human, "{note}")?;
    }
    let entries = jobs::queue_entries(&targets, &o.plan)?;
    let (mut workers, rows) = jobs::build(&targets, &o.cores, &o.plan)?;
    let per_qpair = precheck::qpair_dma_bytes(o.plan.queue_depth, o.plan.io_size, entries);
    let dma = workers
        .iter()
        .map(|p| (p.jobs.len() * o.plan.qpairs) as u64)
        .fold(0u64, u64::saturating_add)
        .saturating_mul(per_qpair);
    precheck::memory_fits(precheck::emu_ram_need(&transports.ids, o.writes), dma)?;
    for w in &mut workers {
        w.yield_when_idle = threads
            .iter()
            .flatten()
            .any(|p| p.shared && p.core == w.core);
    }
    let device_cores: Vec<usize> = threads.iter().flatten().map(|p| p.core).collect();
    let busy: Vec<usize> = o.cores.iter().chain(&device_cores).copied().collect();
    Ok(Plan {
        targets,
        workers,
        rows,
        entries,
        reporter_core: nvme_engine::cpu::free_cpu(&o.allowed, &busy),
    })
}
