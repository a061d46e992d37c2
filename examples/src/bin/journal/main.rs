//! journal: an append-only journal that commits each record with a FUA
//! write through a pinned reactor, and reports commit latency percentiles
//! and where a commit's time goes.
//!
//! Usage: `journal [-r TRANSPORT_ID] [--mode auto|ring|local] [--records N]
//! [--record-bytes B] [--depth D] [--fail-writes P] [--no-read-back]`
//! (`--help` for details; defaults: 2000 records of 4096 bytes, one commit
//! in flight; without -r: the built-in emulated controller). On a real
//! device this overwrites the start of namespace 1 (or of ns:N).
//!
//! Two ways to commit ([`Mode`]): from this thread through the reactor's
//! rings (`ring`), or on the reactor's own thread as a local poller
//! (`local`). `auto` picks `local` when the process may use one CPU only,
//! where a second spinning thread could only take turns with the reactor,
//! and `ring` otherwise. The first line of output says which and why.
//!
//! A record counts as committed only when its write succeeded; failed
//! records are counted apart, not read back, and make the exit status
//! non-zero.

mod ledger;
mod local;
mod recover;
mod report;
mod ring;

use anyhow::{Context, Result, bail};
use clap::Parser;
use nvme_emu::{FaultAction, FaultRule};
use nvme_engine::spec::{command::NvmOpcode, status::StatusCodeType, status::media};
use nvme_engine_examples::baseline::direct_qd1_writes;
use nvme_engine_examples::{DeviceArgs, Example, Handle, Setup, run};
use nvme_reactor::{AllowedCores, Attach, CoreSpec, ReactorConfig, ReactorSet, pin_current_thread};

use ledger::{Commits, Params, encode_into};

/// Where the journal's commit loop runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ModeArg {
    /// `local` on a one-CPU process, `ring` otherwise.
    Auto,
    /// This thread commits through the reactor's rings (two busy threads).
    Ring,
    /// The commit loop is a local poller on the reactor's thread (one
    /// busy thread; this thread waits, blocked).
    Local,
}

/// The commit loop's place, once chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Application thread → rings → reactor thread.
    Ring,
    /// On the reactor's thread.
    Local,
}

impl Mode {
    /// The name `--mode` and the summary line use.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Ring => "ring",
            Mode::Local => "local",
        }
    }

    /// Resolve `arg` for a process allowed `cpus` CPUs; the reason goes in
    /// the first line of output.
    fn choose(arg: ModeArg, cpus: usize) -> (Mode, String) {
        match arg {
            ModeArg::Ring => (Mode::Ring, "chosen with --mode ring".into()),
            ModeArg::Local => (Mode::Local, "chosen with --mode local".into()),
            ModeArg::Auto if cpus <= 1 => (
                Mode::Local,
                "the process may use 1 CPU: an application thread spinning beside the reactor \
                 would take turns with it through the scheduler on every commit"
                    .into(),
            ),
            ModeArg::Auto => (
                Mode::Ring,
                format!(
                    "the process may use {cpus} CPUs: one for this thread, one for the reactor"
                ),
            ),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Mode::Ring => "ring mode, this thread commits through the reactor's rings",
            Mode::Local => {
                "local mode, the commit loop runs on the reactor's thread (a local poller)"
            }
        }
    }
}

struct Journal {
    mode: Mode,
    records: u64,
    record_bytes: usize,
    depth: usize,
    fail_writes: Option<f64>,
    read_back: bool,
}

impl Example for Journal {
    /// Ring: this thread (submitting and polling) and the reactor. Local:
    /// the reactor alone (this thread waits, blocked).
    fn busy_threads(&self) -> usize {
        match self.mode {
            Mode::Ring => 2,
            Mode::Local => 1,
        }
    }

    fn run<A: Attach>(self, controller: A::Handle, setup: &Setup) -> Result<()>
    where
        A::Handle: Handle,
    {
        let ns = setup.namespace(&controller)?;
        let block = ns.block_size() as usize;
        if self.record_bytes == 0 || !self.record_bytes.is_multiple_of(block) {
            bail!(
                "--record-bytes {} is not a positive multiple of the {block}-byte block size",
                self.record_bytes
            );
        }
        let max = controller.max_transfer_bytes();
        if self.record_bytes > max {
            bail!(
                "--record-bytes {} is more than the controller's maximum transfer of {max} bytes \
                 (MDTS and the driver's cap); use at most {max}",
                self.record_bytes
            );
        }
        let blocks_per_record = (self.record_bytes / block) as u64;
        let capacity = ns.blocks() / blocks_per_record;
        if self.records > capacity {
            bail!(
                "{} records of {} bytes do not fit the namespace ({capacity} fit)",
                self.records,
                self.record_bytes
            );
        }
        let params = Params {
            nsid: ns.id(),
            records: self.records,
            record_bytes: self.record_bytes,
            blocks_per_record,
            depth: self.depth,
            // The first commits fault pages in and warm caches: left out of
            // the percentiles (they are still written, counted and read back).
            warmup: (self.records / 10).min(100),
        };
        let window = self.depth.max(8);
        // Power-of-two blocks: room for every buffer of the window, plus one.
        let pool_bytes =
            (self.record_bytes.next_power_of_two() * (window + 1)).next_multiple_of(2 << 20);
        let core = *setup.plan.threads.last().context("no core planned")?;
        let app_core = setup.plan.threads[0];
        let mut config = ReactorConfig::default();
        config.cores = CoreSpec::from_cores([core]);
        config.pin = true;
        config.idle_yield = setup.plan.shared;
        config.ring_capacity = window * 2;
        config.producer_pool_bytes = pool_bytes;
        // The reactor's own pool serves the local poller's records.
        if self.mode == Mode::Local {
            config.pool_bytes = pool_bytes;
        }
        config.local_capacity = self.depth.max(64);
        let baseline = |c: &A::Handle| {
            // The reference: the same commits in direct mode on this thread.
            direct_qd1_writes::<A>(
                c,
                params.nsid,
                blocks_per_record,
                self.record_bytes,
                (params.warmup, self.records - params.warmup),
                |seq, buf| {
                    // Record sizes are whole blocks: the header always fits.
                    encode_into(seq, buf);
                },
            )
        };
        let (set, baseline) = match self.mode {
            Mode::Ring => {
                // Start the reactor before pinning this thread (the set
                // checks its cores against the calling thread's allowed
                // CPUs); the baseline runs while it idles on its core.
                let set = ReactorSet::<A>::start_with(config, vec![controller.clone()])?;
                pin_current_thread(app_core)?;
                (set, baseline(&controller)?)
            }
            Mode::Local => {
                // The baseline first, on the core the reactor will take:
                // nothing else spins meanwhile.
                pin_current_thread(app_core)?;
                let b = baseline(&controller)?;
                (
                    ReactorSet::<A>::start_with(config, vec![controller.clone()])?,
                    b,
                )
            }
        };
        if let (Some(rate), Some(emu)) = (self.fail_writes, setup.emu.as_ref()) {
            emu.seed_faults(0x006a_6f75_726e_616c);
            emu.add_fault(
                FaultRule::new(FaultAction::status(
                    StatusCodeType::MEDIA,
                    media::WRITE_FAULT,
                    true,
                ))
                .io()
                .opcode(NvmOpcode::WRITE.0)
                .probability(rate),
            );
            println!(
                "injecting Write Faults into {:.1}% of the writes",
                rate * 100.0
            );
        }
        let placed = match self.mode {
            Mode::Ring => format!("this thread on core {app_core}, reactor on core {core}"),
            Mode::Local => format!("commit loop on the reactor, core {core}"),
        };
        println!(
            "journal: {} records of {} bytes, FUA, {} in flight; {placed}",
            self.records, self.record_bytes, self.depth
        );

        let commits: Result<Commits> = match self.mode {
            Mode::Ring => set
                .producer(0)
                .map_err(Into::into)
                .and_then(|mut p| ring::commit(&mut p, params, setup.plan.shared)),
            Mode::Local => local::poller::<A>(params).and_then(|(poller, outcome)| {
                set.add_local_poller(0, poller)?;
                outcome.recv().context(
                    "the reactor dropped the journal's poller before it finished \
                     (its report below says why)",
                )?
            }),
        };
        // The reactor is shut down (and reports) whatever the commits did.
        let report = set.shutdown();
        let commits = match commits {
            Ok(c) => c,
            Err(e) => {
                print!("{report}");
                return Err(e);
            }
        };
        report::print(&commits, &baseline, params, self.mode, setup);
        print!("{report}");

        let mut bad = 0;
        if self.read_back {
            bad = recover::read_back::<A>(&controller, params, &commits.committed, window)?;
            println!(
                "read back {} records: {} intact, {bad} damaged",
                commits.committed.len(),
                commits.committed.len() as u64 - bad
            );
        } else {
            println!("read back skipped (--no-read-back)");
        }
        if commits.failures > 0 || bad > 0 || !report.is_clean() {
            bail!(
                "{} record(s) failed to commit (not counted as committed), {bad} read back damaged",
                commits.failures
            );
        }
        Ok(())
    }
}

/// An append-only journal committing FUA writes through a pinned reactor.
#[derive(Parser)]
#[command(
    about = "An append-only journal: commits FUA writes through a pinned reactor (from this \
             thread through its rings, or on the reactor's thread), prints commit latency \
             percentiles and where a commit's time goes against direct mode, then reads every \
             committed record back. On a real device it overwrites the start of namespace 1."
)]
struct Args {
    #[command(flatten)]
    device: DeviceArgs,
    /// Where the commit loop runs: `ring` (this thread, through the
    /// reactor's rings), `local` (on the reactor's thread), or `auto`
    /// (`local` when the process may use one CPU only, else `ring`).
    #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
    mode: ModeArg,
    /// Records to commit.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    records: u64,
    /// Bytes per record: a multiple of the block size, at most the
    /// controller's maximum transfer.
    #[arg(long, default_value_t = 4096)]
    record_bytes: usize,
    /// Commits in flight at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    depth: u16,
    /// Built-in device only: fail this share of the journal's writes with
    /// a Write Fault (seeded, so repeatable), to see failures reported
    /// apart from commits.
    #[arg(long, value_name = "P", value_parser = probability)]
    fail_writes: Option<f64>,
    /// Skip reading the journal back: for devices that discard what is
    /// written (QEMU's null-co backend reads back zeros).
    #[arg(long)]
    no_read_back: bool,
}

fn probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a probability between 0 and 1")),
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let cpus = AllowedCores::current()
        .context("reading the CPUs this process may use")?
        .cores()
        .len();
    let (mode, why) = Mode::choose(args.mode, cpus);
    let journal = Journal {
        mode,
        records: args.records,
        record_bytes: args.record_bytes,
        depth: args.depth as usize,
        fail_writes: args.fail_writes,
        read_back: !args.no_read_back,
    };
    if journal.fail_writes.is_some() && args.device.is_pcie() {
        bail!(
            "--fail-writes injects faults into an emulated controller; drop the PCIe -r to use it"
        );
    }
    println!("journal: {}: {why}", mode.describe());
    run(&args.device, journal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_commits_on_the_reactor_thread_only_when_one_cpu_is_allowed() {
        let (mode, why) = Mode::choose(ModeArg::Auto, 1);
        assert_eq!(mode, Mode::Local);
        assert!(why.contains("1 CPU"), "{why}");
        let (mode, why) = Mode::choose(ModeArg::Auto, 2);
        assert_eq!(mode, Mode::Ring);
        assert!(why.contains("2 CPUs"), "{why}");
        assert_eq!(Mode::choose(ModeArg::Local, 8).0, Mode::Local);
        assert_eq!(Mode::choose(ModeArg::Ring, 1).0, Mode::Ring);
    }
}
