//! The end of a run: the `--json` report (to its file or stdout) and the
//! controllers' shutdown (or, with `-N`, none).

#![forbid(unsafe_code)]

use std::io::{Seek, Write};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::json::{self, RunInfo};
use crate::options::Options;
use crate::summary::Summary;
use crate::target::{Link, Target};
use crate::worker::RunParams;

/// Write the `--json` report where `--json` said.
pub fn json(o: &mut Options, targets: &[Target], params: &RunParams, s: &Summary) -> Result<()> {
    json_with(o, targets.iter().map(controller).collect(), params, s)
}

/// Write the `--json` report, with `controllers` as the report describes them.
pub fn json_with(
    o: &mut Options,
    controllers: Vec<Value>,
    params: &RunParams,
    s: &Summary,
) -> Result<()> {
    let text = serde_json::to_string_pretty(&json::report(&run_info(o, controllers, params), s))?;
    match (&o.args.json, o.json_file.as_mut()) {
        (Some(Some(path)), Some(d)) => {
            let f = &mut d.file;
            f.set_len(0)
                .and_then(|()| f.rewind())
                .and_then(|()| f.write_all((text + "\n").as_bytes()))
                .with_context(|| format!("cannot write the JSON report to {}", path.display()))?;
            d.written = true;
        }
        _ => println!("{text}"),
    }
    Ok(())
}

/// The run's settings and controllers, as the JSON report echoes them.
fn run_info(o: &Options, controllers: Vec<Value>, params: &RunParams) -> RunInfo {
    let (args, p) = (&o.args, &o.plan);
    RunInfo {
        workload: p.workload.name(),
        io_size: p.io_size,
        queue_depth: p.queue_depth,
        read_percent: p.workload.read_percent(p.read_percent),
        qpairs: p.qpairs,
        queue_entries: params.queue_entries,
        cores: o.cores.clone(),
        time: o.time,
        warmup: args.warmup,
        number_ios: args.number_ios,
        seed: args.seed,
        verify: args.verify,
        options: json!({
            "zipf_theta": args.zipf,
            "fua": args.fua,
            "max_completions_per_poll": params.max_completions,
            "buffer_alignment": p.io_size.next_power_of_two().max(4096).max(params.alignment),
            "io_timeout_ms": args.io_timeout.as_millis() as u64,
            "verify_size_bytes": args.verify.then_some(args.verify_span),
            "continue_on_error": args.continue_on_error,
            "no_shutdown_notification": args.no_shutdown_notification,
        }),
        controllers,
    }
}

/// One controller in the JSON report.
fn controller(t: &Target) -> Value {
    let id = t.ctrl.identify();
    let mut v = json!({
        "name": t.name(),
        "transport": t.transport,
        "shadow_doorbells": t.ctrl.shadow_doorbells_active(),
        "model": id.model(),
        "serial": id.serial(),
        "namespaces": t.namespaces.iter().map(|n| json!({
            "nsid": n.id(), "blocks": n.blocks(), "block_size": n.block_size(), "bytes": n.size_bytes()
        })).collect::<Vec<_>>(),
    });
    if let (Link::Uring(u), Some(map)) = (&t.ctrl, v.as_object_mut()) {
        map.insert("io_uring".into(), u.json());
    }
    v
}

/// Shut every controller down (CC.SHN), or with `-N` leave them enabled.
pub fn shut_down(targets: Vec<Target>, no_shutdown_notification: bool) {
    if no_shutdown_notification {
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
}
