//! The program: parse options, open the controllers, check the plan,
//! print what is attached, run, report.

#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use nvme_reactor::{AllowedCores, CoreError, CoreSpec, format_cores};
use nvme_trid::{ControllerId, EmuRunMode};
use serde_json::json;

use crate::cli::Args;
use crate::clock::Clock;
use crate::json::{self, RunInfo};
use crate::plan::{self, PlanOptions};
use crate::run::{self, Timing};
use crate::summary;
use crate::target::{self, OpenOptions, Target};
use crate::units::format_size;
use crate::worker::RunParams;
use crate::{placement, precheck, report, stats};

/// Exit status when the run completed but I/O failed or data mismatched.
const EXIT_IO_FAILED: i32 = 3;
/// Exit status when a device was removed or failed, or commands were lost.
const EXIT_DEVICE_GONE: i32 = 4;
/// Exit status when every I/O succeeded but the device misbehaved
/// (completions discarded, controller resets).
const EXIT_DEVICE_MISBEHAVED: i32 = 5;
/// Admin command timeout the driver uses (ControllerOptions' default).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Run nvme-perf; the process exit status.
pub fn main() -> Result<i32> {
    let args = Args::parse();
    if let Some((opt, instead)) = args.unsupported.first() {
        bail!("spdk_nvme_perf's {opt} is not supported by nvme-perf: {instead}");
    }
    if args.zipf.is_some() && !args.workload.random() {
        bail!(
            "-F (Zipf offsets) applies to random workloads; use -w randread, randwrite or randrw with it"
        );
    }
    if let Some(unit) = args.io_unit_size
        && unit != args.io_size
    {
        bail!(
            "-O {unit}: nvme-perf moves each I/O through one contiguous buffer (one PRP list), so the I/O unit is the whole I/O ({} bytes); drop -O or give -O {}",
            args.io_size,
            args.io_size
        );
    }
    let allowed_set = AllowedCores::current().context("cannot place workers")?;
    let cores = worker_cores(args.cores.as_deref(), &allowed_set).context("bad -c")?;
    let allowed = allowed_set.cores();
    let json_stdout = matches!(args.json, Some(None));
    let mut human: Box<dyn Write> = if json_stdout {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let terminal = if json_stdout {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    let json_file = match &args.json {
        Some(Some(path)) => Some(precheck::json_destination(path)?),
        _ => None,
    };
    let (mut transports, chosen_note) = crate::discover::transports(
        &args.transports,
        &args.allowed_pci,
        std::path::Path::new("/sys/bus/pci"),
    )?;
    if args.no_shutdown_notification
        && transports
            .iter()
            .any(|t| matches!(t.controller, ControllerId::Pcie { no_iommu: true, .. }))
    {
        bail!(
            "-N with noiommu:1: without an IOMMU the controller must be shut down and disabled before the process exits, or it could write into freed memory; drop -N"
        );
    }
    precheck::distinct_controllers(&transports)?;
    let writes = args.workload.read_percent(args.read_percent) < 100;
    for t in &mut transports {
        if let ControllerId::Emu(spec) = &mut t.controller {
            precheck::settle_file_backing(spec, writes)?;
        }
    }
    precheck::memory_fits(precheck::emu_ram_need(&transports, writes), 0)?;
    let o = PlanOptions {
        queue_depth: args.queue_depth as usize,
        io_size: args.io_size,
        workload: args.workload,
        read_percent: args.read_percent,
        qpairs: args.qpairs as usize,
        io_queue_size: args.io_queue_size,
        verify: args.verify,
        verify_span: args.verify_span,
    };
    if o.queue_depth > u16::MAX as usize {
        bail!(
            "queue depth {} is larger than any NVMe queue (65535 commands); lower -q",
            o.queue_depth
        );
    }
    let ask_entries = args
        .io_queue_size
        .unwrap_or((args.queue_depth + 1).max(1024))
        .min(u16::MAX as u64) as u16;
    // Device threads of threaded emulated controllers, in transport order.
    let requested: Vec<Option<usize>> = transports
        .iter()
        .filter_map(|t| match &t.controller {
            ControllerId::Emu(s) if s.mode != EmuRunMode::Inline => Some(s.core),
            _ => None,
        })
        .collect();
    if let Some(c) = requested.iter().flatten().find(|c| !allowed.contains(c)) {
        bail!(
            "core:{c} in an emu transport ID is not a CPU this process may run on (allowed: {}); pick one of those",
            format_cores(allowed)
        );
    }
    let mut placements = placement::place(allowed, &cores, &requested).into_iter();
    let mut shared_cores: Vec<usize> = Vec::new();
    let mut device_cores: Vec<usize> = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    for t in &transports {
        let emu_placement = match &t.controller {
            ControllerId::Emu(s) if s.mode != EmuRunMode::Inline => placements.next(),
            _ => None,
        };
        if let Some(p) = emu_placement {
            device_cores.push(p.core);
        }
        if let Some(p) = emu_placement.filter(|p| p.shared) {
            shared_cores.push(p.core);
            writeln!(
                human,
                "Warning: no free core for the emulated controller's device thread (workers on {}, allowed {}): it shares core {} and both sides yield when idle; expect far lower IOPS than with a core of its own (free one with -c, or pick one with core:N)",
                format_cores(&cores),
                format_cores(allowed),
                p.core
            )?;
        }
        let ns_hint = match (&t.controller, t.nsid) {
            (_, Some(_)) => 1,
            (ControllerId::Emu(s), None) => s.namespaces as usize,
            (ControllerId::Pcie { .. }, None) => 16,
        };
        let queues = cores
            .len()
            .saturating_mul(o.qpairs)
            .saturating_mul(ns_hint)
            .clamp(1, 65534) as u16;
        targets.push(target::open(
            t,
            OpenOptions {
                io_queues: queues,
                queue_entries: ask_entries,
                emu_placement,
                io_timeout: args.io_timeout,
                seed: args.seed,
                writes,
            },
        )?);
    }
    if let Some(note) = &chosen_note {
        writeln!(human, "{note}")?;
    }
    let entries = plan::queue_entries(&targets, &o)?;
    let (mut plans, rows) = plan::build(&targets, &cores, &o)?;
    let per_qpair = precheck::qpair_dma_bytes(o.queue_depth, o.io_size, entries);
    let dma = plans
        .iter()
        .map(|p| (p.jobs.len() * o.qpairs) as u64)
        .fold(0u64, u64::saturating_add)
        .saturating_mul(per_qpair);
    precheck::memory_fits(precheck::emu_ram_need(&transports, writes), dma)?;
    for p in &mut plans {
        p.yield_when_idle = shared_cores.contains(&p.core);
    }
    if args.verify {
        writeln!(
            human,
            "Verify: checking {} of each namespace (--verify-size) before the run{}",
            if args.verify_span == u64::MAX {
                "all".to_string()
            } else {
                crate::units::format_size(args.verify_span)
            },
            if writes {
                "; blocks not written with this seed are pre-filled"
            } else {
                " (read-only: reads of blocks not written with this seed are not checked)"
            }
        )?;
    }
    for t in &targets {
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
        for ns in &t.namespaces {
            writeln!(
                human,
                "  Namespace {}: {} ({} blocks of {} bytes){}",
                ns.id,
                format_size(ns.size_bytes()),
                ns.blocks,
                ns.block_size,
                if ns.read_only {
                    ", write protected"
                } else {
                    ""
                }
            )?;
        }
    }
    let clock = Clock::calibrate();
    let max_ticks = clock.ticks(Duration::from_secs(3600));
    let time = match (args.time, args.number_ios) {
        (Some(t), _) => Some(t),
        (None, Some(_)) => None,
        (None, None) => Some(10),
    };
    for p in &plans {
        writeln!(
            human,
            "Worker on core {}: {} namespace(s) x {} queue pair(s), queue depth {}, {} {} I/O{}",
            p.core,
            p.jobs.len(),
            o.qpairs,
            o.queue_depth,
            format_size(o.io_size as u64),
            o.workload.name(),
            if p.yield_when_idle {
                ", yields when idle (shares its core with a device thread)"
            } else {
                ""
            }
        )?;
    }
    let limits = match (time, args.number_ios) {
        (Some(t), Some(n)) => format!("{t} s or {n} I/Os per core"),
        (Some(t), None) => format!("{t} s"),
        (None, Some(n)) => format!("{n} I/Os per core"),
        (None, None) => String::new(),
    };
    writeln!(
        human,
        "Running {limits}{} (seed {:#x}, {} entries per I/O queue)",
        if args.warmup > 0 {
            format!(" after {} s warm-up", args.warmup)
        } else {
            String::new()
        },
        args.seed,
        entries
    )?;
    // A lost command times out, its Abort may take an admin timeout and the
    // grace after it as long again, then a reset: wait for all of it.
    let drain_timeout = args.io_timeout * 2 + ADMIN_TIMEOUT * 3 + Duration::from_secs(1);
    // The main thread goes to a CPU no worker and no device thread uses.
    let reporter_core = allowed
        .iter()
        .copied()
        .find(|c| !cores.contains(c) && !device_cores.contains(c));
    writeln!(
        human,
        "{}",
        match reporter_core {
            Some(c) => format!("Progress reporting on core {c}"),
            None => format!(
                "Progress reporting shares a busy CPU (allowed {}): it wakes once a second",
                format_cores(allowed)
            ),
        }
    )?;
    let params = Arc::new(RunParams {
        queue_depth: o.queue_depth,
        io_size: o.io_size,
        read_percent: o.workload.read_percent(o.read_percent),
        random: o.workload.random(),
        verify: o.verify,
        verify_writes: writes,
        fua: args.fua,
        number_ios: args.number_ios,
        seed: args.seed,
        continue_on_error: args.continue_on_error.is_some(),
        log_every: args.continue_on_error.unwrap_or(1),
        max_completions: if args.max_completions == 0 {
            o.queue_depth
        } else {
            (args.max_completions as usize).min(o.queue_depth)
        },
        alignment: args.buffer_alignment.unwrap_or(4),
        zipf: args.zipf,
        queue_entries: entries,
        qpairs: o.qpairs,
        clock,
        max_ticks,
        scan_ticks: clock.ticks(scan_interval(args.io_timeout)).max(1),
        drain_timeout,
    });
    let ctrls: Vec<_> = targets.iter().map(|t| t.ctrl.clone()).collect();
    let timing = Timing {
        warmup: Duration::from_secs(args.warmup),
        time: time.map(Duration::from_secs),
        terminal,
        stall_timeout: drain_timeout,
        reporter_core,
        cpu_usage: args.cpu_usage.then(|| cores.clone()),
    };
    crate::signal::install();
    let results = run::run(plans, &ctrls, params.clone(), timing, &mut *human)?;
    let results_qpairs: Vec<_> = results
        .iter()
        .flat_map(|w| w.qpairs.iter().map(move |q| (w.core, q.clone())))
        .collect();
    drop(ctrls);
    let s = summary::build(&targets, &rows, &results, &clock, max_ticks)?;
    report::print(&mut *human, &s, args.latency)?;
    if let Some(dest) = &args.json {
        let info = RunInfo {
            workload: o.workload.name(),
            io_size: o.io_size,
            queue_depth: o.queue_depth,
            read_percent: o.workload.read_percent(o.read_percent),
            qpairs: o.qpairs,
            queue_entries: entries,
            cores: cores.clone(),
            time,
            warmup: args.warmup,
            number_ios: args.number_ios,
            seed: args.seed,
            verify: args.verify,
            options: json!({
                "zipf_theta": args.zipf,
                "fua": args.fua,
                "max_completions_per_poll": params.max_completions,
                "buffer_alignment": o.io_size.next_power_of_two().max(4096).max(params.alignment),
                "io_timeout_ms": args.io_timeout.as_millis() as u64,
                "verify_size_bytes": args.verify.then_some(args.verify_span),
                "continue_on_error": args.continue_on_error,
                "no_shutdown_notification": args.no_shutdown_notification,
            }),
            controllers: targets
                .iter()
                .map(|t| {
                    let id = t.ctrl.identify();
                    json!({
                        "name": t.name(),
                        "transport": t.transport,
                        "shadow_doorbells": t.ctrl.shadow_doorbells_active(),
                        "model": id.model(),
                        "serial": id.serial(),
                        "namespaces": t.namespaces.iter().map(|n| json!({
                            "nsid": n.id, "blocks": n.blocks, "block_size": n.block_size, "bytes": n.size_bytes()
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        };
        let text = serde_json::to_string_pretty(&json::report(&info, &s))?;
        match (dest, json_file) {
            (Some(path), Some(mut d)) => {
                use std::io::Seek;
                let f = &mut d.file;
                f.set_len(0)
                    .and_then(|()| f.rewind())
                    .and_then(|()| f.write_all((text + "\n").as_bytes()))
                    .with_context(|| {
                        format!("cannot write the JSON report to {}", path.display())
                    })?;
                d.written = true;
            }
            _ => println!("{text}"),
        }
    }
    if args.transport_stats {
        report::transport_stats(&mut *human, &results_qpairs)?;
    }
    if args.no_shutdown_notification {
        // -N: no CC.SHN handshake. Every queue pair is deleted by now, so
        // nothing is in flight; the controller is left enabled and the
        // kernel resets it when the process's VFIO file closes.
        for t in targets {
            std::mem::forget(t.ctrl);
        }
    } else {
        for t in &targets {
            let _ = t.ctrl.shutdown();
        }
    }
    Ok(exit_status(&s))
}

/// The exit status of a finished run, with its reason on stderr.
fn exit_status(s: &summary::Summary) -> i32 {
    if s.device_gone() || s.lost > 0 {
        for c in s.controllers.iter().filter(|c| {
            matches!(
                c.health,
                nvme_engine::Health::Removed | nvme_engine::Health::Failed
            )
        }) {
            eprintln!(
                "nvme-perf: error: controller {} is {:?} after the run; its I/O failed",
                c.name, c.health
            );
        }
        if s.lost > 0 {
            eprintln!(
                "nvme-perf: error: {} commands never completed (not even through a timeout, abort or reset)",
                s.lost
            );
        }
        return EXIT_DEVICE_GONE;
    }
    let mut code = 0;
    if let Some(f) = &s.fatal {
        report_fatal(f);
        code = EXIT_IO_FAILED;
    } else if s.failed() > 0 {
        eprintln!(
            "nvme-perf: error: {} I/Os failed (see 'failed I/O' per core above)",
            s.failed()
        );
        code = EXIT_IO_FAILED;
    }
    if s.total.verify.bad_blocks() > 0 {
        eprintln!(
            "nvme-perf: error: the verify pass found {} torn, {} foreign and {} corrupt blocks (see 'Verify pass' above)",
            s.total.verify.torn, s.total.verify.foreign, s.total.verify.corrupt
        );
        code = EXIT_IO_FAILED;
    }
    if s.total.verify.mismatches > 0 {
        eprintln!(
            "nvme-perf: error: --verify found {} reads whose data differs from what was written",
            s.total.verify.mismatches
        );
        code = EXIT_IO_FAILED;
    }
    if code == 0 && s.device_misbehaved() {
        eprintln!(
            "nvme-perf: error: every I/O succeeded but the device misbehaved (controller resets or discarded completions; see the per-core lines above)"
        );
        code = EXIT_DEVICE_MISBEHAVED;
    }
    code
}

/// Least time between two deadline checks: a quarter of the I/O timeout,
/// at most 10 ms (the driver's default scan interval).
fn scan_interval(io_timeout: Duration) -> Duration {
    (io_timeout / 4).clamp(Duration::from_millis(1), Duration::from_millis(10))
}

/// The distinct cores workers run on, ascending (one worker per distinct
/// core, so repeats in `-c` collapse): `-c` as a core list or mask, or without
/// it the lowest allowed core (core 0 when allowed). Every core is checked
/// against `allowed`.
fn worker_cores(arg: Option<&str>, allowed: &AllowedCores) -> Result<Vec<usize>, CoreError> {
    let mut cores = match arg {
        Some(text) => CoreSpec::parse(text)?.cores().to_vec(),
        None => allowed.cores().first().copied().into_iter().collect(),
    };
    cores.sort_unstable();
    cores.dedup();
    CoreSpec::from_cores(cores.iter().copied()).check(allowed)?;
    Ok(cores)
}

fn report_fatal(f: &stats::FailedIo) {
    eprintln!(
        "nvme-perf: error: {} of {} blocks at LBA {} on {} namespace {} failed: {}; the run stopped at the first failed I/O (pass --continue-on-error to count failures and keep going)",
        f.op, f.blocks, f.lba, f.device, f.nsid, f.reason
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_cores_are_distinct_and_ascending() {
        let allowed = AllowedCores::from_cores(0..4);
        assert_eq!(
            worker_cores(Some("3,0-2,2"), &allowed),
            Ok(vec![0, 1, 2, 3])
        );
        assert_eq!(worker_cores(Some("[2,0,0]"), &allowed), Ok(vec![0, 2]));
        assert_eq!(worker_cores(Some("0x3"), &allowed), Ok(vec![0, 1]));
    }

    #[test]
    fn without_a_selection_workers_take_the_lowest_allowed_core() {
        assert_eq!(
            worker_cores(None, &AllowedCores::from_cores(0..4)),
            Ok(vec![0])
        );
        assert_eq!(
            worker_cores(None, &AllowedCores::from_cores([5, 3])),
            Ok(vec![3])
        );
    }

    #[test]
    fn empty_and_disallowed_selections_are_refused() {
        let allowed = AllowedCores::from_cores([0, 1, 2]);
        assert_eq!(worker_cores(Some("0x0"), &allowed), Err(CoreError::Empty));
        assert_eq!(
            worker_cores(Some("0,7"), &allowed),
            Err(CoreError::NotAllowed {
                core: 7,
                allowed: "0-2".into()
            })
        );
    }
}
