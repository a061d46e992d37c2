//! The command line, checked: every test of nvme-perf's options that needs
//! no device (spdk_nvme_perf options it does not take, option pairs that
//! exclude each other, the queue depth, `-c` against the CPUs this process
//! may use, the `--json` destination, `-e`), and the values derived from them
//! that the plan and the run share.

#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};

use anyhow::{Context, Result, bail};
use clap::Parser;
use nvme_reactor::{AllowedCores, CoreError, CoreSpec};

use crate::cli::Args;
use crate::plan::PlanOptions;
use crate::precheck::{self, JsonDest};
use crate::protection::PiOption;

/// Run length when neither `-t` nor `-d` is given, in seconds.
const DEFAULT_TIME: u64 = 10;

/// nvme-perf's options after every check that needs no device.
pub struct Options {
    /// The parsed command line.
    pub args: Args,
    /// Worker cores, distinct and ascending.
    pub cores: Vec<usize>,
    /// The CPUs this process may run on, ascending.
    pub allowed: Vec<usize>,
    /// What the job plan depends on.
    pub plan: PlanOptions,
    /// The workload writes (some or all I/O).
    pub writes: bool,
    /// Entries asked for per I/O queue when the controllers are opened.
    pub ask_entries: u16,
    /// Measured seconds (`None`: until every worker did its `-d` count).
    pub time: Option<u64>,
    /// `--json` without a file: the JSON report takes stdout.
    pub json_stdout: bool,
    /// `--json FILE`, opened (so a bad destination fails before the run).
    pub json_file: Option<JsonDest>,
}

impl Options {
    /// Parse and check the process's command line.
    pub fn from_command_line() -> Result<Self> {
        Self::check(Args::parse())
    }

    /// Check `args`.
    pub fn check(args: Args) -> Result<Self> {
        refuse_conflicts(&args)?;
        let plan = plan_options(&args)?;
        let allowed = AllowedCores::current().context("cannot place workers")?;
        let cores = worker_cores(args.cores.as_deref(), &allowed).context("bad -c")?;
        let json_file = match &args.json {
            Some(Some(path)) => Some(precheck::json_destination(path)?),
            _ => None,
        };
        let ask_entries = args
            .io_queue_size
            .unwrap_or((args.queue_depth + 1).max(1024))
            .min(u16::MAX as u64) as u16;
        let time = match (args.time, args.number_ios) {
            (Some(t), _) => Some(t),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TIME),
        };
        Ok(Options {
            writes: args.workload.read_percent(args.read_percent) < 100,
            json_stdout: matches!(args.json, Some(None)),
            allowed: allowed.cores().to_vec(),
            args,
            cores,
            plan,
            ask_entries,
            time,
            json_file,
        })
    }

    /// Where the human report goes (stderr when the JSON report takes
    /// stdout), and whether that is a terminal.
    pub fn human_output(&self) -> (Box<dyn Write>, bool) {
        if self.json_stdout {
            (Box::new(std::io::stderr()), std::io::stderr().is_terminal())
        } else {
            (Box::new(std::io::stdout()), std::io::stdout().is_terminal())
        }
    }

    /// How the run ends, in words: `10 s`, `1000 I/Os per core`, or both.
    pub fn limits(&self) -> String {
        match (self.time, self.args.number_ios) {
            (Some(t), Some(n)) => format!("{t} s or {n} I/Os per core"),
            (Some(t), None) => format!("{t} s"),
            (None, Some(n)) => format!("{n} I/Os per core"),
            (None, None) => String::new(),
        }
    }
}

/// Refuse spdk_nvme_perf options nvme-perf does not take and option
/// combinations that mean nothing.
fn refuse_conflicts(args: &Args) -> Result<()> {
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
    Ok(())
}

/// The options the job plan depends on; refuses a queue depth no NVMe
/// queue can hold.
fn plan_options(args: &Args) -> Result<PlanOptions> {
    let o = PlanOptions {
        queue_depth: args.queue_depth as usize,
        io_size: args.io_size,
        workload: args.workload,
        read_percent: args.read_percent,
        qpairs: args.qpairs as usize,
        io_queue_size: args.io_queue_size,
        verify: args.verify,
        verify_span: args.verify_span,
        pi: args
            .unsupported
            .metadata()
            .map(PiOption::parse)
            .transpose()?,
    };
    if o.queue_depth > u16::MAX as usize {
        bail!(
            "queue depth {} is larger than any NVMe queue (65535 commands); lower -q",
            o.queue_depth
        );
    }
    Ok(o)
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

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["nvme-perf"];
        argv.extend_from_slice(extra);
        Args::parse_from(argv)
    }

    #[test]
    fn a_queue_depth_no_nvme_queue_holds_is_refused_before_any_device_opens() {
        let e = Options::check(args(&["-q", "70000"])).err().unwrap();
        assert!(e.to_string().contains("lower -q"), "{e}");
    }

    #[test]
    fn protection_information_option_is_parsed_or_refused_before_any_device_opens() {
        let o = Options::check(args(&["-e", "PRACT=1,PRCHK=GUARD|APPTAG"])).unwrap();
        let pi = o.plan.pi.unwrap();
        assert!(pi.pract && pi.check.guard && pi.check.app_tag && !pi.check.ref_tag);
        assert_eq!(Options::check(args(&[])).unwrap().plan.pi, None);
        let e = Options::check(args(&["-e", "PRCHK=CRC"])).err().unwrap();
        assert!(e.to_string().contains("not GUARD, REFTAG or APPTAG"), "{e}");
    }

    #[test]
    fn run_length_defaults_to_ten_seconds_unless_an_io_count_is_given() {
        assert_eq!(Options::check(args(&[])).unwrap().time, Some(10));
        let counted = Options::check(args(&["-d", "100"])).unwrap();
        assert_eq!(counted.time, None);
        assert_eq!(counted.limits(), "100 I/Os per core");
        let both = Options::check(args(&["-d", "100", "-t", "3"])).unwrap();
        assert_eq!(both.limits(), "3 s or 100 I/Os per core");
    }
}
