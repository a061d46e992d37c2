//! Running a plan: the workers' shared parameters, the run itself
//! ([`workers`]), then the report — the table, `--json`, `-T` — and the
//! controllers' shutdown.

#![forbid(unsafe_code)]

pub(crate) mod output;
mod workers;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::clock::Clock;
use crate::options::Options;
use crate::plan::Plan;
use crate::summary::{self, Summary};
use crate::worker::RunParams;
use crate::{report, signal};

pub use workers::{Timing, WorkerStart, run_workers};

/// Admin command timeout the driver uses (ControllerOptions' default).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Run `plan`, print its report and shut the controllers down; the summary
/// the exit status comes from. `terminal`: `human` is a terminal.
pub fn run(o: &mut Options, plan: Plan, human: &mut dyn Write, terminal: bool) -> Result<Summary> {
    let clock = Clock::calibrate();
    let params = Arc::new(params(o, plan.entries, clock));
    let timing = Timing {
        warmup: Duration::from_secs(o.args.warmup),
        time: o.time.map(Duration::from_secs),
        terminal,
        stall_timeout: params.drain_timeout,
        reporter_core: plan.reporter_core,
        cpu_usage: o.args.cpu_usage.then(|| o.cores.clone()),
    };
    let Plan {
        targets,
        workers,
        rows,
        ..
    } = plan;
    signal::install()?;
    let ctrls: Vec<_> = targets.iter().map(|t| t.ctrl.clone()).collect();
    let results = workers::run(workers, &ctrls, params.clone(), timing, human)?;
    drop(ctrls);
    let s = summary::build(&targets, &rows, &results, &clock, params.max_ticks)?;
    report::print(human, &s, o.args.latency)?;
    if o.args.json.is_some() {
        output::json(o, &targets, &params, &s)?;
    }
    if o.args.transport_stats {
        let qpairs: Vec<_> = results
            .iter()
            .flat_map(|w| w.qpairs.iter().map(move |q| (w.core, q.clone())))
            .collect();
        report::transport_stats(human, &qpairs)?;
    }
    output::shut_down(targets, o.args.no_shutdown_notification);
    Ok(s)
}

/// What every worker needs to know about the run.
pub(crate) fn params(o: &Options, entries: u16, clock: Clock) -> RunParams {
    let (args, p) = (&o.args, &o.plan);
    // A lost command times out, its Abort may take an admin timeout and the
    // grace after it as long again, then a reset: wait for all of it.
    let drain_timeout = args.io_timeout * 2 + ADMIN_TIMEOUT * 3 + Duration::from_secs(1);
    RunParams {
        queue_depth: p.queue_depth,
        io_size: p.io_size,
        read_percent: p.workload.read_percent(p.read_percent),
        random: p.workload.random(),
        verify: p.verify,
        verify_writes: o.writes,
        fua: args.fua,
        number_ios: args.number_ios,
        seed: args.seed,
        continue_on_error: args.continue_on_error.is_some(),
        log_every: args.continue_on_error.unwrap_or(1),
        max_completions: if args.max_completions == 0 {
            p.queue_depth
        } else {
            (args.max_completions as usize).min(p.queue_depth)
        },
        alignment: args.buffer_alignment.unwrap_or(4),
        zipf: args.zipf,
        queue_entries: entries,
        qpairs: p.qpairs,
        clock,
        max_ticks: clock.ticks(Duration::from_secs(3600)),
        scan_ticks: clock.ticks(scan_interval(args.io_timeout)).max(1),
        drain_timeout,
    }
}

/// Least time between two deadline checks: a quarter of the I/O timeout,
/// at most 10 ms (the driver's default scan interval).
fn scan_interval(io_timeout: Duration) -> Duration {
    (io_timeout / 4).clamp(Duration::from_millis(1), Duration::from_millis(10))
}
