//! The controllers of a run: which transport IDs (given with `-r`, or every
//! NVMe controller bound to vfio-pci, or the built-in emulated one), checks
//! that need them all, where the emulated controllers' device threads run,
//! and opening them.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::Path;

use anyhow::{Result, bail};
use nvme_reactor::format_cores;
use nvme_trid::{ControllerId, EmuRunMode, TransportId};

use crate::options::Options;
use crate::placement::{self, EmuPlacement};
use crate::target::{self, OpenOptions, Target};
use crate::{discover, precheck};

/// The transport IDs to run on and, when they were discovered rather than
/// given, how they were chosen.
pub struct Transports {
    /// In `-r` order.
    pub ids: Vec<TransportId>,
    /// What discovery found (printed once the controllers are open).
    pub note: Option<String>,
}

/// The transport IDs of the run, checked against each other, their file
/// backings settled, and the emulated RAM they need checked against the
/// available memory.
pub fn transports(o: &Options) -> Result<Transports> {
    let args = &o.args;
    let (mut ids, note) = discover::transports(
        &args.transports,
        &args.allowed_pci,
        Path::new("/sys/bus/pci"),
    )?;
    if args.no_shutdown_notification
        && ids
            .iter()
            .any(|t| matches!(t.controller, ControllerId::Pcie { no_iommu: true, .. }))
    {
        bail!(
            "-N with noiommu:1: without an IOMMU the controller must be shut down and disabled before the process exits, or it could write into freed memory; drop -N"
        );
    }
    precheck::distinct_controllers(&ids)?;
    for t in &mut ids {
        if let ControllerId::Emu(spec) = &mut t.controller {
            precheck::settle_file_backing(spec, o.writes)?;
        }
    }
    precheck::memory_fits(precheck::emu_ram_need(&ids, o.writes), 0)?;
    Ok(Transports { ids, note })
}

/// Where each controller's device thread runs, in transport order (`None`:
/// no device thread — a PCIe controller or an inline emulated one).
pub fn place_device_threads(o: &Options, ids: &[TransportId]) -> Result<Vec<Option<EmuPlacement>>> {
    let threaded = |t: &TransportId| match &t.controller {
        ControllerId::Emu(s) if s.mode != EmuRunMode::Inline => Some(s.core),
        _ => None,
    };
    let requested: Vec<Option<usize>> = ids.iter().filter_map(threaded).collect();
    if let Some(c) = requested.iter().flatten().find(|c| !o.allowed.contains(c)) {
        bail!(
            "core:{c} in an emu transport ID is not a CPU this process may run on (allowed: {}); pick one of those",
            format_cores(&o.allowed)
        );
    }
    let mut placed = placement::place(&o.allowed, &o.cores, &requested).into_iter();
    Ok(ids
        .iter()
        .map(|t| threaded(t).and_then(|_| placed.next()))
        .collect())
}

/// Open every controller, in transport order; a device thread that has to
/// share a core is announced on `human` before its controller opens.
pub fn open(
    o: &Options,
    ids: &[TransportId],
    threads: &[Option<EmuPlacement>],
    human: &mut dyn Write,
) -> Result<Vec<Target>> {
    let mut targets = Vec::with_capacity(ids.len());
    for (t, &emu_placement) in ids.iter().zip(threads) {
        if let Some(p) = emu_placement.filter(|p| p.shared) {
            writeln!(
                human,
                "Warning: no free core for the emulated controller's device thread (workers on {}, allowed {}): it shares core {} and both sides yield when idle; expect far lower IOPS than with a core of its own (free one with -c, or pick one with core:N)",
                format_cores(&o.cores),
                format_cores(&o.allowed),
                p.core
            )?;
        }
        let ns_hint = match (&t.controller, t.nsid) {
            (_, Some(_)) => 1,
            (ControllerId::Emu(s), None) => s.namespaces as usize,
            (ControllerId::Pcie { .. }, None) => 16,
            (ControllerId::UringPassthrough { .. }, None) => 1,
            (ControllerId::Tcp(_), None) => 1,
        };
        let queues = o
            .cores
            .len()
            .saturating_mul(o.plan.qpairs)
            .saturating_mul(ns_hint)
            .clamp(1, 65534) as u16;
        targets.push(target::open(
            t,
            OpenOptions {
                io_queues: queues,
                queue_entries: o.ask_entries,
                emu_placement,
                io_timeout: o.args.io_timeout,
                seed: o.args.seed,
                writes: o.writes,
            },
        )?);
    }
    Ok(targets)
}
