//! The plan in words, printed before the run: what `--verify` checks, each
//! attached controller and its namespaces, each worker's share, how long
//! the run lasts and where the progress line comes from.

#![forbid(unsafe_code)]

use std::io::Write;

use anyhow::Result;
use nvme_reactor::format_cores;

use super::Plan;
use crate::options::Options;
use crate::target::{Link, Target};
use crate::units::format_size;

/// Print the plan to `human`.
pub fn describe(o: &Options, plan: &Plan, human: &mut dyn Write) -> Result<()> {
    if o.args.verify {
        verify(o, human)?;
    }
    for t in &plan.targets {
        attached(t, human)?;
    }
    for p in &plan.workers {
        writeln!(
            human,
            "Worker on core {}: {} namespace(s) x {} queue pair(s), queue depth {}, {} {} I/O{}",
            p.core,
            p.jobs.len(),
            o.plan.qpairs,
            o.plan.queue_depth,
            format_size(o.plan.io_size as u64),
            o.plan.workload.name(),
            if p.yield_when_idle {
                ", yields when idle (shares its core with a device thread)"
            } else {
                ""
            }
        )?;
    }
    writeln!(
        human,
        "Running {}{} (seed {:#x}, {} entries per I/O queue)",
        o.limits(),
        if o.args.warmup > 0 {
            format!(" after {} s warm-up", o.args.warmup)
        } else {
            String::new()
        },
        o.args.seed,
        plan.entries
    )?;
    let reporting = match plan.reporter_core {
        Some(c) => format!("Progress reporting on core {c}"),
        None => format!(
            "Progress reporting shares a busy CPU (allowed {}): it wakes once a second",
            format_cores(&o.allowed)
        ),
    };
    writeln!(human, "{reporting}")?;
    Ok(())
}

/// What `--verify` checks.
fn verify(o: &Options, human: &mut dyn Write) -> Result<()> {
    writeln!(
        human,
        "Verify: checking {} of each namespace (--verify-size) before the run{}",
        if o.args.verify_span == u64::MAX {
            "all".to_string()
        } else {
            format_size(o.args.verify_span)
        },
        if o.writes {
            "; blocks not written with this seed are pre-filled"
        } else {
            " (read-only: reads of blocks not written with this seed are not checked)"
        }
    )?;
    Ok(())
}

/// One attached controller and its namespaces.
fn attached(t: &Target, human: &mut dyn Write) -> Result<()> {
    if let Link::Uring(u) = &t.ctrl {
        crate::uring::attached(u, &t.name(), &t.transport, human)?;
        return namespaces(t, human);
    }
    let id = t.ctrl.identify();
    writeln!(
        human,
        "Attached to {} [{}]: model '{}', serial '{}', firmware '{}', max transfer {}, {} I/O queues granted, shadow doorbells {}",
        t.name(),
        t.transport,
        id.model(),
        id.serial(),
        id.firmware(),
        format_size(t.ctrl.max_transfer_bytes() as u64),
        t.ctrl.io_queues_granted(),
        if t.ctrl.shadow_doorbells_active() {
            "on"
        } else {
            "off"
        }
    )?;
    namespaces(t, human)
}

/// The namespaces of one attached controller.
fn namespaces(t: &Target, human: &mut dyn Write) -> Result<()> {
    for ns in &t.namespaces {
        writeln!(
            human,
            "  Namespace {}: {} ({} blocks of {} bytes){}",
            ns.id(),
            format_size(ns.size_bytes()),
            ns.blocks(),
            ns.block_size(),
            if ns.read_only() {
                ", write protected"
            } else {
                ""
            }
        )?;
    }
    Ok(())
}
