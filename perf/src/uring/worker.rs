//! One worker over io_uring passthrough: pinned to its core, it creates
//! its rings (one per queue pair, each in the completion mode the plan
//! chose), one DMA pool per namespace sized for its buffers and registered
//! with each of its rings as fixed buffers, then hands the jobs to the
//! transport-generic driver of the loop (`worker::drive`).

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::mpsc::Sender;

use anyhow::{Context, Result, anyhow, bail};
use nvme_engine::dma::DmaPool;
use nvme_engine::uring::{BufferMode, CompletionMode, UringTransport};

use super::UringTarget;
use crate::hot::Job;
use crate::stats::WorkerResult;
use crate::target::Link;
use crate::worker::{self, Control, RunParams, WorkerPlan};

/// Run one worker whose jobs are on io_uring namespaces.
pub fn run(
    plan: WorkerPlan,
    links: &[Link],
    p: Arc<RunParams>,
    ctl: Arc<Control>,
    ready: Sender<std::result::Result<(), String>>,
) -> Result<WorkerResult> {
    // The pools outlive the jobs: `drive` deletes the queues before
    // returning, and the pools drop after it.
    let (jobs, _pools) = match setup(&plan, links, &p) {
        Ok(v) => v,
        Err(e) => {
            let _ = ready.send(Err(format!("{e:#}")));
            return Err(e);
        }
    };
    worker::drive(plan, jobs, &p, &ctl, &ready)
}

fn target(links: &[Link], t: usize) -> Result<&UringTarget> {
    match links.get(t) {
        Some(Link::Uring(u)) => Ok(u),
        _ => Err(anyhow!(
            "transport {t} of the run is not an io_uring namespace"
        )),
    }
}

type Setup = (Vec<Job<UringTransport>>, Vec<Option<DmaPool>>);

/// Pin, create the pools and the rings, register the pools.
fn setup(plan: &WorkerPlan, links: &[Link], p: &RunParams) -> Result<Setup> {
    nvme_engine::cpu::pin_current_thread(plan.core)
        .with_context(|| format!("cannot pin the worker thread to core {}", plan.core))?;
    let mut pools: Vec<Option<DmaPool>> = (0..links.len()).map(|_| None).collect();
    let mut jobs = Vec::new();
    let mut on_target = Vec::new();
    for jp in &plan.jobs {
        let u = target(links, jp.target)?;
        let device = u.device().path().display().to_string();
        let pool = match &mut pools[jp.target] {
            Some(pool) => pool,
            slot => slot.insert(create_pool(plan, jp.target, u, p)?),
        };
        for _ in 0..p.qpairs {
            let qp = u
                .device()
                .create_queue(u.queue_options(p.queue_entries))
                .with_context(|| {
                    format!(
                        "core {}: cannot create an io_uring queue on {device}",
                        plan.core
                    )
                })?;
            let polled = |m: &CompletionMode| *m == CompletionMode::Polled;
            if polled(qp.completion_mode()) != polled(u.completion()) {
                bail!(
                    "core {}: the ring on {device} came up with {:?}, not the planned {:?}",
                    plan.core,
                    qp.completion_mode(),
                    u.completion()
                );
            }
            jobs.push(worker::job_on(plan, jp, qp, &device, pool, p)?);
            on_target.push(jp.target);
        }
    }
    for (job, &t) in jobs.iter_mut().zip(&on_target) {
        let u = target(links, t)?;
        let Some(pool) = pools[t].as_mut() else {
            bail!("core {}: no DMA pool for {}", plan.core, job.device);
        };
        let mode = job.qp.register_pool(pool);
        if u.buffers() == &BufferMode::Fixed && mode != &BufferMode::Fixed {
            let reason = match mode {
                BufferMode::Unregistered { reason } => reason.clone(),
                BufferMode::Fixed => String::new(),
            };
            bail!(
                "core {}: the buffers could not be registered with the ring on {} ({reason}); pass fixed:0 in -r to run with the kernel pinning each I/O's pages",
                plan.core,
                job.device
            );
        }
    }
    worker::divide_among_qpairs(&mut jobs, p);
    Ok((jobs, pools))
}

/// This worker's pool on target `t`: a buffer per slot of each of its
/// rings there.
fn create_pool(plan: &WorkerPlan, t: usize, u: &UringTarget, p: &RunParams) -> Result<DmaPool> {
    let rings = plan.jobs.iter().filter(|j| j.target == t).count() * p.qpairs;
    let bytes = rings * p.queue_depth * worker::buffer_block(p);
    u.device().create_pool(bytes).with_context(|| {
        format!(
            "core {}: cannot allocate {bytes} bytes of DMA buffers for {}",
            plan.core,
            u.device().path().display()
        )
    })
}
