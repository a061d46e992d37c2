//! nvme-perf over NVMe/TCP: `-r 'trtype:TCP adrfam:IPv4 traddr:…
//! trsvcid:4420 subnqn:<nqn>'` opens the controller over TCP and runs the
//! same workers, compiled loop, verify pass, table and `--json` report as on
//! PCIe — each worker's queue pairs are [`TcpQueue`](nvme_engine::tcp::TcpQueue)s (one connection each,
//! created on the worker's core). Several `-r` TCP IDs (two subsystems, or
//! the same subsystem twice with different `ns:`) run in one go, each its
//! own association, their namespaces spread over the workers as for PCIe;
//! TCP IDs do not mix with other transports in one run. A `subnqn` naming
//! the discovery subsystem prints the portal's Discovery log entries as
//! transport IDs instead.

#![forbid(unsafe_code)]

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use nvme_engine::tcp::{TcpDevice, TcpDeviceOptions, TcpQueueOptions, TcpTransport};
use nvme_engine::{Health, Namespace};
use nvme_trid::{ControllerId, TcpSpec, TransportId};
use serde_json::json;

use crate::clock::Clock;
use crate::options::Options;
use crate::run::{Timing, WorkerStart, output, run_workers};
use crate::stats::WorkerResult;
use crate::summary::{self, ControllerSummary};
use crate::units::format_size;
use crate::worker::{self, RunParams, WorkerPlan};
use crate::{report, signal};

/// Run nvme-perf when `-r` names NVMe/TCP controllers: `Some(exit
/// status)`, or `None` when it names another transport.
pub fn main(o: &mut Options, human: &mut dyn Write, terminal: bool) -> Result<Option<i32>> {
    let ids = o.args.transports.clone();
    let tcp: Vec<(TransportId, TcpSpec)> = ids
        .iter()
        .filter_map(|t| match &t.controller {
            ControllerId::Tcp(spec) => Some((t.clone(), spec.clone())),
            _ => None,
        })
        .collect();
    if tcp.is_empty() {
        return Ok(None);
    }
    if tcp.len() < ids.len() {
        bail!(
            "NVMe/TCP transport IDs cannot share a run with PCIe, emulated or io_uring ones (each \
             transport has workers of its own); run one nvme-perf per transport"
        );
    }
    let discovery = tcp.iter().filter(|(_, s)| s.is_discovery()).count();
    if discovery > 0 {
        if discovery < tcp.len() {
            bail!(
                "a transport ID naming the discovery subsystem lists what a portal offers and \
                 runs no I/O: give it without the other -r, then run on the subsystems it lists"
            );
        }
        for (_, spec) in &tcp {
            list(spec, human)?;
        }
        return Ok(Some(0));
    }
    run(o, &tcp, human, terminal).map(Some)
}

/// Print the portal's Discovery log page, one transport ID per entry.
fn list(spec: &TcpSpec, human: &mut dyn Write) -> Result<()> {
    let log = nvme_trid::discover_tcp(spec)?;
    writeln!(
        human,
        "Discovery log of {} (generation {}, {} records):",
        spec.addr, log.genctr, log.numrec
    )?;
    for e in &log.entries {
        let kind = match e.subtype.0 {
            1 => "referral",
            2 => "NVM subsystem",
            3 => "discovery (current)",
            _ => "other",
        };
        writeln!(human, "  {}    # {kind}, port {}", e.trid(), e.portid)?;
    }
    if log.entries.is_empty() {
        writeln!(
            human,
            "  (none: no subsystem is linked to a port this host may use)"
        )?;
    }
    Ok(())
}

/// One controller of the run: its transport ID, the opened device, its
/// name in the tables and the namespaces it drives.
struct Target {
    spec: TcpSpec,
    dev: TcpDevice,
    name: String,
    namespaces: Vec<Namespace>,
}

fn digests(spec: &TcpSpec) -> &'static str {
    match (spec.header_digest, spec.data_digest) {
        (false, false) => "no digests",
        (true, false) => "header digest",
        (false, true) => "data digest",
        (true, true) => "header and data digests",
    }
}

/// Open every device (one association each, also for the same subsystem
/// named twice), check the plan, run the workers, report.
fn run(
    o: &mut Options,
    ids: &[(TransportId, TcpSpec)],
    human: &mut dyn Write,
    terminal: bool,
) -> Result<i32> {
    if o.args.no_shutdown_notification {
        bail!("-N does not apply to NVMe/TCP (the association is always shut down); drop -N");
    }
    let mut targets: Vec<Target> = Vec::with_capacity(ids.len());
    for (id, spec) in ids {
        let mut d = TcpDeviceOptions::default();
        d.session.command_timeout = d.session.command_timeout.max(o.args.io_timeout);
        // QIDs are taken lowest first as workers connect; the target
        // refuses a Connect beyond what it allows, with its own message.
        d.max_io_queues = u16::MAX - 1;
        let dev = nvme_trid::open_tcp(&id.controller, d)
            .ok_or_else(|| anyhow!("not an NVMe/TCP transport ID"))??;
        let namespaces = select(&dev, id.nsid)?;
        check(o, &dev, &namespaces)?;
        let mut name = format!("{} {}", spec.addr, spec.subnqn);
        if let Some(n) = id.nsid {
            name = format!("{name} ns:{n}");
        }
        if targets.iter().any(|t| t.name == name) {
            name = format!("{name} (#{})", targets.len() + 1);
        }
        targets.push(Target {
            spec: spec.clone(),
            dev,
            name,
            namespaces,
        });
    }
    let sets: Vec<_> = targets
        .iter()
        .map(|t| (t.name.clone(), t.namespaces.clone()))
        .collect();
    let (mut workers, rows) = crate::plan::divide_among(&sets, &o.cores, &o.plan)?;
    // A target on this machine (loopback) runs its work in kernel threads
    // that may share a worker's core: a worker that finds nothing to do
    // for a while yields it to them, as it does to an emulated controller's
    // device thread. A remote target needs nothing of the worker's core.
    let local = targets.iter().any(|t| t.spec.addr.ip().is_loopback());
    for w in &mut workers {
        w.yield_when_idle = local;
    }
    for t in &targets {
        writeln!(
            human,
            "Attached to NVMe/TCP controller {} at {} (CNTLID {}, {}): {}",
            t.spec.subnqn,
            t.spec.addr,
            t.dev.cntlid(),
            digests(&t.spec),
            t.dev.identify().model()
        )?;
        for ns in &t.namespaces {
            writeln!(
                human,
                "  Namespace ID: {} size: {} ({} blocks of {} bytes)",
                ns.id(),
                format_size(ns.size_bytes()),
                ns.blocks(),
                ns.block_size()
            )?;
        }
    }
    let clock = Clock::calibrate();
    let entries = o.plan.queue_depth as u16;
    let params = Arc::new(crate::run::params(o, entries, clock));
    let timing = Timing {
        warmup: Duration::from_secs(o.args.warmup),
        time: o.time.map(Duration::from_secs),
        terminal,
        stall_timeout: params.drain_timeout,
        reporter_core: nvme_engine::cpu::free_cpu(&o.allowed, &o.cores),
        cpu_usage: o.args.cpu_usage.then(|| o.cores.clone()),
    };
    signal::install()?;
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    let targets = Arc::new(targets);
    let worker_targets = targets.clone();
    let timeout = o.args.io_timeout;
    let start: WorkerStart =
        Arc::new(move |plan, p, ctl, tx| worker(&worker_targets, plan, &p, timeout, &ctl, &tx));
    let results = run_workers(workers, start, params.clone(), timing, human)?;
    let controllers = targets
        .iter()
        .map(|t| ControllerSummary {
            name: t.name.clone(),
            resets: t.dev.stats().failures,
            health: match t.dev.is_live() {
                Ok(true) => Health::Live,
                Ok(false) => Health::Resetting,
                Err(_) => Health::Failed,
            },
            faults: Vec::new(),
        })
        .collect();
    let s = summary::build_with(
        &names,
        controllers,
        &rows,
        &results,
        &clock,
        params.max_ticks,
    )?;
    report::print(human, &s, o.args.latency)?;
    for t in targets.iter() {
        let stats = t.dev.stats();
        if stats.failures > 0 || stats.aborts_sent > 0 {
            writeln!(
                human,
                "NVMe/TCP {}: {} Abort(s) sent ({} done); the association failed {} times and was re-established {} times ({} attempts failed)",
                t.name,
                stats.aborts_sent,
                stats.aborts_done,
                stats.failures,
                stats.reconnects,
                stats.failed_attempts
            )?;
        }
    }
    if o.args.json.is_some() {
        let controllers = targets
            .iter()
            .map(|t| {
                let stats = t.dev.stats();
                let ns: Vec<_> = t
                    .namespaces
                    .iter()
                    .map(|n| json!({"nsid": n.id(), "blocks": n.blocks(), "block_size": n.block_size(), "bytes": n.size_bytes()}))
                    .collect();
                json!({
                    "name": t.name,
                    "transport": format!("NVMe/TCP {} ({})", t.spec.addr, digests(&t.spec)),
                    "subnqn": t.spec.subnqn,
                    "model": t.dev.identify().model(),
                    "serial": t.dev.identify().serial(),
                    "namespaces": ns,
                    "association_failures": stats.failures,
                    "reconnects": stats.reconnects,
                    "aborts_sent": stats.aborts_sent,
                })
            })
            .collect();
        output::json_with(o, controllers, &params, &s)?;
    }
    if o.args.transport_stats {
        let qpairs: Vec<_> = results
            .iter()
            .flat_map(|w| w.qpairs.iter().map(move |q| (w.core, q.clone())))
            .collect();
        report::transport_stats(human, &qpairs)?;
    }
    // The workers' queues are gone: shut each controller down (CC.SHN).
    if let Ok(targets) = Arc::try_unwrap(targets) {
        for t in targets {
            if let Err(e) = t.dev.shutdown() {
                writeln!(
                    human,
                    "Warning: shutting the controller {} down failed: {e}",
                    t.name
                )?;
            }
        }
    }
    Ok(crate::app::exit_status(&s))
}

/// The namespaces to drive: the one `ns:` names, or every usable one.
fn select(dev: &TcpDevice, nsid: Option<u32>) -> Result<Vec<Namespace>> {
    let all = dev.namespaces();
    let usable = || {
        all.iter()
            .map(|n| n.id().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match nsid {
        Some(n) => match all.iter().find(|x| x.id() == n) {
            Some(ns) => Ok(vec![ns.clone()]),
            None => bail!(
                "namespace {n} is not usable on {}: usable namespaces are [{}]; pick one with ns:N",
                dev.name(),
                usable()
            ),
        },
        None if all.is_empty() => bail!(
            "{} has no usable namespace (none active, or none formatted without metadata); add one to the subsystem on the target",
            dev.name()
        ),
        None => Ok(all.to_vec()),
    }
}

/// The I/O size and the workload against the controller and namespaces.
fn check(o: &Options, dev: &TcpDevice, namespaces: &[Namespace]) -> Result<()> {
    let p = &o.plan;
    let max = dev.max_transfer_bytes();
    if p.io_size > max {
        bail!(
            "IO size {} is above the maximum transfer of {} ({}); use -o {} or less",
            p.io_size,
            dev.name(),
            format_size(max as u64),
            format_size(max as u64)
        );
    }
    if p.pi.is_some() {
        bail!("-e (protection information) is not carried over NVMe/TCP yet; drop -e");
    }
    if !(1..=1024).contains(&p.queue_depth) {
        bail!(
            "queue depth {} is outside what one NVMe/TCP queue holds (1 to 1024); lower -q",
            p.queue_depth
        );
    }
    let writes = p.workload.read_percent(p.read_percent) < 100;
    for ns in namespaces {
        let bs = ns.block_size() as usize;
        if !p.io_size.is_multiple_of(bs) {
            bail!(
                "IO size {} is not a multiple of the {bs}-byte LBA size of namespace {}; use a multiple of {bs}",
                p.io_size,
                ns.id()
            );
        }
        if writes && ns.read_only() {
            bail!(
                "namespace {} is write protected; use -w read or randread",
                ns.id()
            );
        }
    }
    Ok(())
}

/// One worker: pin, take a pool, connect its queues (on each job's
/// controller) on its own core, then drive them like any transport.
fn worker(
    targets: &[Target],
    plan: WorkerPlan,
    p: &Arc<RunParams>,
    timeout: Duration,
    ctl: &Arc<worker::Control>,
    ready: &std::sync::mpsc::Sender<std::result::Result<(), String>>,
) -> Result<WorkerResult> {
    let setup = || -> Result<_> {
        nvme_engine::cpu::pin_current_thread(plan.core)
            .with_context(|| format!("cannot pin the worker thread to core {}", plan.core))?;
        let block = p.io_size.next_power_of_two().max(4096).max(p.alignment);
        let bytes = plan.jobs.len() * p.qpairs * p.queue_depth * block;
        let mut pool = nvme_engine::tcp::host_pool(bytes).with_context(|| {
            format!(
                "core {}: cannot allocate {bytes} bytes of buffers",
                plan.core
            )
        })?;
        let mut jobs = Vec::new();
        for jp in &plan.jobs {
            let t = targets
                .get(jp.target)
                .ok_or_else(|| anyhow!("no controller {} in the plan", jp.target))?;
            for _ in 0..p.qpairs {
                let mut qo = TcpQueueOptions::default();
                qo.entries = p.queue_depth as u16;
                qo.timeout = timeout;
                let qp = t.dev.create_queue(qo).with_context(|| {
                    format!(
                        "core {}: cannot connect an I/O queue to {}",
                        plan.core,
                        t.dev.name()
                    )
                })?;
                jobs.push(worker::job_on::<TcpTransport>(
                    &plan, jp, qp, &t.name, &mut pool, p,
                )?);
            }
        }
        worker::divide_among_qpairs(&mut jobs, p);
        Ok((jobs, pool))
    };
    let (jobs, _pool) = match setup() {
        Ok(v) => v,
        Err(e) => {
            let _ = ready.send(Err(format!("{e:#}")));
            return Err(e);
        }
    };
    worker::drive(plan, jobs, p, ctl, ready)
}
