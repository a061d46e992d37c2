//! The program: check the options, plan the run (open the controllers,
//! place the workers and device threads), describe the plan, run it, and
//! turn the outcome into the exit status.

#![forbid(unsafe_code)]

use anyhow::Result;

use crate::options::Options;
use crate::summary::Summary;
use crate::{plan, run, stats};

/// Exit status when the run completed but I/O failed or data mismatched.
const EXIT_IO_FAILED: i32 = 3;
/// Exit status when a device was removed or failed, or commands were lost.
const EXIT_DEVICE_GONE: i32 = 4;
/// Exit status when every I/O succeeded but the device misbehaved
/// (completions discarded, controller resets).
const EXIT_DEVICE_MISBEHAVED: i32 = 5;

/// Run nvme-perf; the process exit status.
pub fn main() -> Result<i32> {
    let mut options = Options::from_command_line()?;
    let (mut human, terminal) = options.human_output();
    if let Some(code) = crate::tcp::main(&mut options, &mut *human, terminal)? {
        return Ok(code);
    }
    let plan = plan::make(&options, &mut *human)?;
    plan::describe(&options, &plan, &mut *human)?;
    let summary = run::run(&mut options, plan, &mut *human, terminal)?;
    Ok(exit_status(&summary))
}

/// The exit status of a finished run, with its reason on stderr.
pub(crate) fn exit_status(s: &Summary) -> i32 {
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

fn report_fatal(f: &stats::FailedIo) {
    eprintln!(
        "nvme-perf: error: {} of {} blocks at LBA {} on {} namespace {} failed: {}; the run stopped at the first failed I/O (pass --continue-on-error to count failures and keep going)",
        f.op, f.blocks, f.lba, f.device, f.nsid, f.reason
    );
}
