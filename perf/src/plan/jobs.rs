//! Checking the options against the opened controllers and dividing the
//! namespaces among the workers (one job per namespace per worker).

#![forbid(unsafe_code)]

use anyhow::{Result, bail};
use nvme_engine::{MAX_IO_QUEUE_ENTRIES, Namespace};

use crate::cli::Workload;
use crate::protection::{self, PiOption};
use crate::target::Target;
use crate::units::format_size;
use crate::worker::{JobPlan, WorkerPlan};

/// Most I/O-sized units one verified job tracks (4 bytes each).
const MAX_VERIFY_UNITS: u64 = 1 << 24;

/// One report row: a namespace driven from a core.
#[derive(Clone, Debug)]
pub struct RowInfo {
    /// Worker index.
    pub worker: usize,
    /// Core.
    pub core: usize,
    /// Controller index.
    pub target: usize,
    /// Namespace ID.
    pub nsid: u32,
    /// Index into the worker's own rows.
    pub local: usize,
}

/// The options the plan depends on.
#[derive(Clone, Copy, Debug)]
pub struct PlanOptions {
    /// Queue depth per queue pair.
    pub queue_depth: usize,
    /// Bytes per I/O.
    pub io_size: usize,
    /// The pattern.
    pub workload: Workload,
    /// Read percentage.
    pub read_percent: u8,
    /// Queue pairs per namespace per core.
    pub qpairs: usize,
    /// Entries asked for with --io-queue-size.
    pub io_queue_size: Option<u64>,
    /// --verify.
    pub verify: bool,
    /// Bytes at the start of each namespace a verified run confines itself to.
    pub verify_span: u64,
    /// `-e`: protection information on every I/O.
    pub pi: Option<PiOption>,
}

/// The entries each I/O queue gets on every target, or why the queue depth
/// does not fit.
pub fn queue_entries(targets: &[Target], o: &PlanOptions) -> Result<u16> {
    let mut limit = MAX_IO_QUEUE_ENTRIES as u64;
    for t in targets {
        limit = limit.min(t.ctrl.max_queue_entries() as u64);
    }
    let entries = match o.io_queue_size {
        Some(n) if n < 2 => {
            bail!("--io-queue-size {n} is too small; an I/O queue needs at least 2 entries")
        }
        Some(n) if n > limit => bail!(
            "--io-queue-size {n} is larger than the controller allows ({limit} entries, CAP.MQES+1); use at most {limit}"
        ),
        Some(n) => n,
        None => (o.queue_depth as u64 + 1).max(1024).min(limit),
    };
    if o.queue_depth as u64 > entries - 1 {
        bail!(
            "queue depth {} is above the I/O queue size {entries} minus one ({}); lower -q{}",
            o.queue_depth,
            entries - 1,
            if entries < limit {
                format!(" or raise --io-queue-size (up to {limit})")
            } else {
                " (the controller allows no larger queue)".into()
            }
        );
    }
    Ok(entries as u16)
}

/// Check the I/O size, the workload and the queue count against every
/// namespace, then give each core its share of every namespace.
pub fn build(
    targets: &[Target],
    cores: &[usize],
    o: &PlanOptions,
) -> Result<(Vec<WorkerPlan>, Vec<RowInfo>)> {
    for t in targets {
        check_target(t, cores, o)?;
    }
    divide(targets, cores, o)
}

/// Check the I/O size, the workload and the queue count against one
/// controller and its namespaces.
fn check_target(t: &Target, cores: &[usize], o: &PlanOptions) -> Result<()> {
    let writes = o.workload.read_percent(o.read_percent) < 100;
    let name = t.name();
    let max = t.ctrl.max_transfer_bytes();
    if o.io_size > max {
        bail!(
            "IO size {} is above the maximum transfer of {name} ({}, from MDTS); use -o {} or less",
            o.io_size,
            format_size(max as u64),
            format_size(max as u64)
        );
    }
    if o.verify && t.null_data {
        bail!(
            "--verify cannot work on {name}: its null backing returns no data; drop null:1 from -r"
        );
    }
    let queues = cores.len() * t.namespaces.len() * o.qpairs;
    let granted = t.ctrl.io_queues_granted() as usize;
    if queues > granted {
        bail!(
            "{queues} I/O queue pairs needed on {name} ({} cores x {} namespaces x -P {}) but the controller granted {granted}; use fewer cores, namespaces or queue pairs",
            cores.len(),
            t.namespaces.len(),
            o.qpairs
        );
    }
    for ns in &t.namespaces {
        let bs = ns.block_size() as usize;
        if !o.io_size.is_multiple_of(bs) {
            bail!(
                "IO size {} is not a multiple of the {bs}-byte LBA size of namespace {} on {name}; use a multiple of {bs}",
                o.io_size,
                ns.id()
            );
        }
        if (o.io_size / bs) as u64 > ns.max_blocks_per_io() as u64 {
            bail!(
                "IO size {} is above the {} blocks one command can move on namespace {} of {name}",
                o.io_size,
                ns.max_blocks_per_io(),
                ns.id()
            );
        }
        protection::check_namespace(o.pi.as_ref(), ns, &name)?;
        if writes && ns.read_only() {
            bail!(
                "namespace {} of {name} is write protected; use -w read or randread",
                ns.id()
            );
        }
    }
    Ok(())
}

/// Give each core an equal, disjoint share of every namespace; one job and
/// one report row per namespace per core.
fn divide(
    targets: &[Target],
    cores: &[usize],
    o: &PlanOptions,
) -> Result<(Vec<WorkerPlan>, Vec<RowInfo>)> {
    let sets: Vec<(String, Vec<Namespace>)> = targets
        .iter()
        .map(|t| (t.name(), t.namespaces.clone()))
        .collect();
    divide_among(&sets, cores, o)
}

/// [`divide`] over controllers given by name and namespaces (any transport).
pub fn divide_among(
    sets: &[(String, Vec<Namespace>)],
    cores: &[usize],
    o: &PlanOptions,
) -> Result<(Vec<WorkerPlan>, Vec<RowInfo>)> {
    let mut workers: Vec<WorkerPlan> = cores
        .iter()
        .enumerate()
        .map(|(index, &core)| WorkerPlan {
            index,
            core,
            jobs: Vec::new(),
            rows: 0,
            yield_when_idle: false,
        })
        .collect();
    let mut rows = Vec::new();
    for (w, plan) in workers.iter_mut().enumerate() {
        for (ti, (name, namespaces)) in sets.iter().enumerate() {
            for ns in namespaces {
                let mut blocks = ns.blocks();
                if o.verify {
                    blocks = blocks.min(o.verify_span / ns.block_size() as u64);
                }
                let total_units = blocks / (o.io_size / ns.block_size() as usize) as u64;
                let mut per_core = total_units / cores.len() as u64;
                if o.verify {
                    per_core = per_core.min(MAX_VERIFY_UNITS);
                }
                let per_qpair = per_core / o.qpairs as u64;
                let need = if o.verify {
                    o.queue_depth as u64 + 1
                } else {
                    1
                };
                if per_qpair < need {
                    bail!(
                        "namespace {} of {} ({}) is too small: each of {} cores x {} queue pairs gets {per_qpair} I/O-sized units, {} needs at least {need}; use a larger namespace, fewer cores or a smaller -o/-q",
                        ns.id(),
                        name,
                        format_size(ns.size_bytes()),
                        cores.len(),
                        o.qpairs,
                        if o.verify { "--verify" } else { "a run" }
                    );
                }
                let blocks_per_unit = (o.io_size / ns.block_size() as usize) as u64;
                plan.jobs.push(JobPlan {
                    target: ti,
                    ns: ns.clone(),
                    row: plan.rows,
                    start_lba: w as u64 * per_core * blocks_per_unit,
                    units: per_core,
                });
                plan.rows += 1;
                rows.push(RowInfo {
                    worker: w,
                    core: plan.core,
                    target: ti,
                    nsid: ns.id(),
                    local: plan.rows - 1,
                });
            }
        }
    }
    Ok((workers, rows))
}
