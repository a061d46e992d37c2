//! Command-line options, named like `spdk_nvme_perf`'s.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};
use nvme_trid::TransportId;

use crate::units::{parse_duration, parse_size};

const EXAMPLES: &str = "\
Examples:
  # 4 KiB random reads at QD 32 for 10 s on the built-in emulated controller (1 GiB RAM)
  nvme-perf -q 32 -o 4k -w randread -t 10

  # 70/30 random read/write mix on cores 0 and 1, with latency percentiles
  nvme-perf -q 64 -o 4k -w randrw -M 70 -t 30 -c 0x3 -L

  # a real controller bound to vfio-pci, namespace 1, JSON report to a file
  nvme-perf -r 'trtype:PCIe traddr:0000:04:00.0 ns:1' -q 128 -o 4k -w randread -t 60 --json out.json

  # the emulated controller with no backing store (measures the driver), inline mode
  nvme-perf -r 'trtype:emu null:1 mode:inline' -q 32 -o 4k -w randread -t 5

  # data integrity under load: 1 million verified I/Os per core on two 4 KiB-block namespaces
  nvme-perf -r 'trtype:emu size:256M ns:2 lba:4096' -w randrw --verify -d 1000000

Transport IDs (-r, repeatable):
  trtype:PCIe traddr:<pci address> [ns:<nsid>] [noiommu:1]
  trtype:emu [size:1G] [ns:<namespace count>] [lba:512|4096] [null:1] [file:/path]
             [mode:threaded|inline] [idle:spin|backoff] [core:<cpu>]
             [<fault>:<fraction of I/O commands>]... [rounds:<n>]
  emu ns: is the number of namespaces; file: backs namespace 1, namespace N uses <path>.N.
  Faults (seeded by --seed): fail (reads: Unrecovered Read Error), status (Internal Error),
  lose (never completes: times out), delay (held for rounds:N device rounds, default 1000),
  dup (posted twice), unknowncid, stale, sqhd (bogus SQ head), fatal (CSTS.CFS), vanish
  (surprise removal). recover:1 brings a vanished controller back on reset; sticky:1 makes
  fatal status survive the reset (the controller fails for good).
  Keys are separated by spaces or commas (trtype:PCIe,traddr:0000:04:00.0).
  Without -r: trtype:emu size:1G mode:threaded (RAM-backed, device thread busy-polls).

Exit status:
  0  every I/O succeeded
  1  bad input, or a controller could not be opened (the message says what to change)
  2  command-line syntax error
  3  an I/O failed (NVMe status, timed out, aborted, reset; with --continue-on-error
     too, at the end) or --verify found a mismatch
  4  a controller was removed or failed, or commands never completed
  5  every I/O succeeded but the device misbehaved: a controller reset, or completions
     the driver discarded (duplicate, stale, unknown CID, bogus SQ head)";

/// The I/O pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Uniformly random reads.
    Randread,
    /// Uniformly random writes.
    Randwrite,
    /// Sequential mix of reads and writes (-M sets the read share).
    Rw,
    /// Random mix of reads and writes (-M sets the read share).
    Randrw,
}

impl Workload {
    /// Offsets are random.
    pub fn random(self) -> bool {
        matches!(
            self,
            Workload::Randread | Workload::Randwrite | Workload::Randrw
        )
    }
    /// Percentage of reads given `-M`.
    pub fn read_percent(self, mix: u8) -> u8 {
        match self {
            Workload::Read | Workload::Randread => 100,
            Workload::Write | Workload::Randwrite => 0,
            Workload::Rw | Workload::Randrw => mix,
        }
    }
    /// The name as typed on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Read => "read",
            Workload::Write => "write",
            Workload::Randread => "randread",
            Workload::Randwrite => "randwrite",
            Workload::Rw => "rw",
            Workload::Randrw => "randrw",
        }
    }
}

fn io_size(s: &str) -> Result<usize, String> {
    let v = parse_size(s).map_err(|e| e.to_string())?;
    usize::try_from(v)
        .ok()
        .filter(|&v| v <= u32::MAX as usize)
        .ok_or_else(|| format!("IO size {v} is too large"))
}

/// Longest run or warm-up: a year, far below where time arithmetic overflows.
pub const MAX_SECONDS: u64 = 365 * 86_400;

fn seconds(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(v) if v > MAX_SECONDS => Err(format!(
            "{v} seconds is more than a year ({MAX_SECONDS} s); give at most {MAX_SECONDS}, or -d to stop after a number of I/Os"
        )),
        Ok(v) => Ok(v),
        Err(_) => Err(format!("'{s}' is not a whole number of seconds")),
    }
}

fn run_time(s: &str) -> Result<u64, String> {
    match seconds(s)? {
        0 => Err(
            "run time must be at least 1 second (use -d to stop after a number of I/Os instead)"
                .into(),
        ),
        v => Ok(v),
    }
}

fn qpairs(s: &str) -> Result<u64, String> {
    match positive(s)? {
        v if v > u16::MAX as u64 => Err(format!(
            "{v} queue pairs per namespace is more than any controller has (65535); lower -P"
        )),
        v => Ok(v),
    }
}

fn positive(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(v) => Ok(v),
        Err(_) => Err(format!("'{s}' is not a positive whole number")),
    }
}

fn zipf_theta(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(t) if t > 0.0 && t < 1.0 => Ok(t),
        Ok(t) => Err(format!(
            "Zipf exponent {t} is outside 0 < θ < 1 (0.99 is YCSB's; smaller is more uniform)"
        )),
        Err(_) => Err(format!("'{s}' is not a number; give θ such as 0.9")),
    }
}

fn alignment(s: &str) -> Result<usize, String> {
    let v = parse_size(s).map_err(|e| e.to_string())?;
    usize::try_from(v)
        .ok()
        .filter(|v| v.is_power_of_two() && *v >= 4 && *v <= 1 << 30)
        .ok_or_else(|| format!("alignment {v} must be a power of two from 4 to 1G, e.g. 4096"))
}

fn span(s: &str) -> Result<u64, String> {
    if s == "all" {
        return Ok(u64::MAX);
    }
    parse_size(s).map_err(|e| e.to_string())
}

fn seed(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("'{s}' is not a 64-bit number (decimal or 0x hex)"))
}

/// nvme-perf: measure IOPS, bandwidth and latency of NVMe controllers
/// driven by nvme-engine's polled userspace driver.
#[derive(Debug, Parser)]
#[command(
    name = "nvme-perf",
    version,
    disable_version_flag = true,
    after_help = EXAMPLES
)]
pub struct Args {
    /// Print the version (long only: -V is spdk_nvme_perf's VMD switch).
    #[arg(long = "version", action = ArgAction::Version)]
    pub version: Option<bool>,

    /// Queue depth per queue pair.
    #[arg(short = 'q', long = "io-depth", default_value_t = 32, value_parser = positive)]
    pub queue_depth: u64,

    /// I/O size in bytes; suffixes k, m (powers of 1024): 4k, 128K.
    #[arg(short = 'o', long = "io-size", default_value = "4k", value_parser = io_size)]
    pub io_size: usize,

    /// I/O pattern.
    #[arg(short = 'w', long = "io-pattern", value_enum, default_value_t = Workload::Randread)]
    pub workload: Workload,

    /// Read percentage for rw and randrw, 0..=100.
    #[arg(short = 'M', long = "rwmixread", default_value_t = 50,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub read_percent: u8,

    /// Run time in seconds (default 10, or unlimited with -d).
    #[arg(short = 't', long = "time", value_parser = run_time)]
    pub time: Option<u64>,

    /// Warm-up seconds before measuring (not counted).
    #[arg(short = 'a', long = "warmup-time", default_value_t = 0, value_parser = seconds)]
    pub warmup: u64,

    /// Cores to run workers on: hex mask (0x3) or list (0,1 or 0-1). Default: the first allowed core.
    #[arg(short = 'c', long = "core-mask")]
    pub cores: Option<String>,

    /// Transport ID of a controller (repeatable); see below.
    #[arg(short = 'r', long = "transport")]
    pub transports: Vec<TransportId>,

    /// I/O queue pairs per namespace per core.
    #[arg(short = 'P', long = "num-qpairs", default_value_t = 1, value_parser = qpairs)]
    pub qpairs: u64,

    /// Entries per I/O queue (default: at least queue depth + 1, and 1024).
    #[arg(long = "io-queue-size", value_parser = positive)]
    pub io_queue_size: Option<u64>,

    /// Latency percentiles (-L); with -LL also a latency histogram.
    #[arg(short = 'L', long = "enable-sw-latency-tracking", action = ArgAction::Count)]
    pub latency: u8,

    /// Write a JSON report to FILE, or to stdout (then the human report goes to stderr).
    #[arg(long = "json", value_name = "FILE", num_args = 0..=1)]
    pub json: Option<Option<PathBuf>>,

    /// Stamp every written block (seed, LBA, generation, checksum), check
    /// the working set before the run and every read during it.
    #[arg(long)]
    pub verify: bool,

    /// With --verify: the bytes at the start of each namespace the run
    /// confines itself to (all: the whole namespace). A pass before the run
    /// reads all of it, checks every block's stamp and, when the workload
    /// writes, pre-fills blocks not written with this seed.
    #[arg(long = "verify-size", default_value = "1G", value_parser = span)]
    pub verify_span: u64,

    /// Stop each worker after this many measured I/Os instead of after a time.
    #[arg(short = 'd', long = "number-ios", value_parser = positive)]
    pub number_ios: Option<u64>,

    /// Seed for offsets and the verify pattern (decimal or 0x hex).
    #[arg(long, default_value = "0x5eed", value_parser = seed)]
    pub seed: u64,

    /// Count failed I/Os and keep going (default: stop at the first failure),
    /// printing every Nth failure (default 1: each); the exit status still
    /// reports failures at the end.
    #[arg(short = 'Q', long = "continue-on-error", value_name = "N", num_args = 0..=1,
          default_missing_value = "1", value_parser = positive)]
    pub continue_on_error: Option<u64>,

    /// Zipf distribution with exponent THETA (0 < θ < 1) for random offsets:
    /// low offsets are hot (rank 1 is the first unit).
    #[arg(short = 'F', long = "zipf", value_name = "THETA", value_parser = zipf_theta)]
    pub zipf: Option<f64>,

    /// Most completions reaped per poll of a queue pair (0: up to the queue depth).
    #[arg(
        short = 'C',
        long = "max-completion-per-poll",
        value_name = "N",
        default_value_t = 0
    )]
    pub max_completions: u64,

    /// I/O unit size: the largest piece of one I/O's buffer; nvme-perf
    /// moves each I/O through one contiguous buffer, so only -O equal to -o
    /// is accepted.
    #[arg(short = 'O', long = "io-unit-size", value_parser = io_size)]
    pub io_unit_size: Option<usize>,

    /// Buffer alignment in bytes: a power of two, at least 4 (dword).
    /// Default: the buffer's own size rounded up to a power of two, at least 4 KiB.
    #[arg(short = 'A', long = "buffer-alignment", value_parser = alignment)]
    pub buffer_alignment: Option<usize>,

    /// Allowed PCI address (repeatable): without -r, drive every controller
    /// bound to vfio-pci among these; with -r, only these may be named.
    #[arg(short = 'b', long = "allowed-pci-addr", value_name = "ADDR")]
    pub allowed_pci: Vec<nvme_engine::vfio::PciAddress>,

    /// Print every queue pair's counters (submissions, completions,
    /// doorbell writes, discarded completions, timeouts, resets) after the run.
    #[arg(long = "transport-stats")]
    pub transport_stats: bool,

    /// Writes carry Force Unit Access (FUA): they complete only once on media.
    #[arg(long = "fua")]
    pub fua: bool,

    /// Skip the controller shutdown notification (CC.SHN) at exit.
    #[arg(short = 'N', long = "no-shst-notification")]
    pub no_shutdown_notification: bool,

    /// Show the CPU use of the worker cores (from /proc/stat) on every
    /// progress line.
    #[arg(short = 'm', long = "cpu-usage")]
    pub cpu_usage: bool,

    /// Accepted for spdk_nvme_perf compatibility: every worker core already
    /// drives every namespace (its own slice, its own queue pairs).
    #[arg(long = "use-every-core")]
    pub use_every_core: bool,

    /// spdk_nvme_perf options nvme-perf refuses with a pointer to what to use instead.
    #[command(flatten)]
    pub unsupported: crate::spdk::Unsupported,

    /// Deadline of one I/O command: 30s, 500ms. A command without a
    /// completion by then is aborted, then the controller reset.
    #[arg(long = "io-timeout", default_value = "30s", value_parser = parse_duration)]
    pub io_timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("nvme-perf").chain(args.iter().copied()))
    }

    #[test]
    fn spdk_style_options_parse() {
        let a = parse(&[
            "-q",
            "128",
            "-o",
            "128K",
            "-w",
            "randrw",
            "-M",
            "70",
            "-t",
            "5",
            "-a",
            "1",
            "-c",
            "0x3",
            "-P",
            "2",
            "-LL",
            "--json",
            "-r",
            "trtype:emu null:1",
        ])
        .unwrap();
        assert_eq!(a.queue_depth, 128);
        assert_eq!(a.io_size, 128 << 10);
        assert_eq!(a.workload, Workload::Randrw);
        assert_eq!(a.read_percent, 70);
        assert_eq!(a.time, Some(5));
        assert_eq!(a.warmup, 1);
        assert_eq!(a.cores.as_deref(), Some("0x3"));
        assert_eq!(a.qpairs, 2);
        assert_eq!(a.latency, 2);
        assert_eq!(a.json, Some(None));
        assert_eq!(a.transports.len(), 1);
    }

    #[test]
    fn json_takes_an_optional_file_and_defaults_apply() {
        let a = parse(&["--json", "out.json"]).unwrap();
        assert_eq!(a.json, Some(Some(PathBuf::from("out.json"))));
        let a = parse(&[]).unwrap();
        assert_eq!(a.json, None);
        assert_eq!(a.io_size, 4096);
        assert_eq!(a.workload, Workload::Randread);
        assert_eq!(a.time, None);
        assert_eq!(a.seed, 0x5eed);
    }

    #[test]
    fn bad_values_are_refused_by_the_parser() {
        assert!(parse(&["-t", "0"]).is_err());
        assert!(parse(&["-t", "18446744073709551615"]).is_err());
        assert!(parse(&["-a", "18446744073709551615"]).is_err());
        assert!(parse(&["-t", "31536000", "-a", "31536000"]).is_ok());
        assert!(parse(&["-P", "65536"]).is_err());
        assert!(parse(&["-M", "101"]).is_err());
        assert!(parse(&["-w", "randomread"]).is_err());
        assert!(parse(&["-q", "0"]).is_err());
        assert!(parse(&["-o", "4x"]).is_err());
        assert!(parse(&["-r", "trtype:tcp"]).is_err());
        assert!(parse(&["-F", "1"]).is_err());
        assert!(parse(&["-A", "3"]).is_err());
    }

    #[test]
    fn spdk_letters_mean_what_they_mean_in_spdk() {
        let a = parse(&["-Q", "10", "-F", "0.9", "-C", "8", "-A", "512", "-N", "-m"]).unwrap();
        assert_eq!(a.continue_on_error, Some(10));
        assert_eq!(a.zipf, Some(0.9));
        assert_eq!(a.max_completions, 8);
        assert_eq!(a.buffer_alignment, Some(512));
        assert!(a.no_shutdown_notification && a.cpu_usage);
        let a = parse(&["--continue-on-error", "-d", "5"]).unwrap();
        assert_eq!(a.continue_on_error, Some(1));
        // -V is VMD in SPDK: refused with a pointer, never the version.
        let a = parse(&["-V"]).unwrap();
        assert_eq!(a.unsupported.first().map(|u| u.0), Some("-V/--enable-vmd"));
        let a = parse(&["-b", "0000:04:00.0", "-b", "05:00.0"]).unwrap();
        assert_eq!(a.allowed_pci.len(), 2);
    }

    #[test]
    fn workloads_know_their_read_share() {
        assert_eq!(Workload::Randread.read_percent(30), 100);
        assert_eq!(Workload::Write.read_percent(30), 0);
        assert_eq!(Workload::Randrw.read_percent(30), 30);
        assert!(Workload::Randrw.random() && !Workload::Rw.random());
    }
}
