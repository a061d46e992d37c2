//! Fault injection on the built-in emulated controller from a transport ID:
//! one key per fault kind the emulator has, each with the share of I/O
//! commands it hits (`lose:0.001 dup:0.01`, in a fio filename
//! `lose=0.001 dup=0.01`). Rules are seeded by the tool (nvme-perf's
//! `--seed`), so a run with the same seed and one worker on an inline
//! controller injects the same faults at the same commands; [`Installed`]
//! reads back how often each rule fired.

#![forbid(unsafe_code)]

use nvme_emu::{EmuHandle, FaultAction, FaultId, FaultRule};
use nvme_engine::spec::status::{generic, media};
use nvme_engine::spec::{
    command::NvmOpcode,
    status::{Status, StatusCodeType},
};

/// Default rounds a `delay` fault holds a completion.
pub const DEFAULT_DELAY_ROUNDS: u32 = 1000;

/// Rates are kept in parts per billion (so the spec stays `Eq`).
const PPB: f64 = 1e9;

/// A kind of device misbehaviour the emulator can play.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectKind {
    /// Reads complete with Unrecovered Read Error, DNR set (`fail`).
    ReadError,
    /// Any I/O completes with Internal Error, DNR set (`status`).
    Status,
    /// The command is fetched and never completed (`lose`): the driver's
    /// deadline aborts it, or resets the controller.
    Lose,
    /// The completion is held back for `rounds` device rounds (`delay`).
    Delay,
    /// The completion is posted twice (`dup`).
    Duplicate,
    /// An extra completion with a CID never submitted (`unknowncid`).
    UnknownCid,
    /// The same completion again one round later, after the CID was
    /// retired (`stale`).
    Stale,
    /// A completion whose SQ head pointer lies outside the queue (`sqhd`).
    BogusSqhd,
    /// The controller sets CSTS.CFS and stops (`fatal`); a reset clears it.
    Fatal,
    /// Surprise removal: registers read all ones from then on (`vanish`).
    Vanish,
}

impl InjectKind {
    /// Every kind, in the order keys are documented.
    pub const ALL: [InjectKind; 10] = [
        InjectKind::ReadError,
        InjectKind::Status,
        InjectKind::Lose,
        InjectKind::Delay,
        InjectKind::Duplicate,
        InjectKind::UnknownCid,
        InjectKind::Stale,
        InjectKind::BogusSqhd,
        InjectKind::Fatal,
        InjectKind::Vanish,
    ];

    /// The transport-ID key.
    pub fn key(self) -> &'static str {
        match self {
            InjectKind::ReadError => "fail",
            InjectKind::Status => "status",
            InjectKind::Lose => "lose",
            InjectKind::Delay => "delay",
            InjectKind::Duplicate => "dup",
            InjectKind::UnknownCid => "unknowncid",
            InjectKind::Stale => "stale",
            InjectKind::BogusSqhd => "sqhd",
            InjectKind::Fatal => "fatal",
            InjectKind::Vanish => "vanish",
        }
    }

    /// The kind a key names.
    pub fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.key() == key)
    }

    /// What the key does, for errors and the report.
    pub fn describe(self) -> &'static str {
        match self {
            InjectKind::ReadError => "reads fail with Unrecovered Read Error",
            InjectKind::Status => "I/O fails with Internal Error",
            InjectKind::Lose => "commands never complete",
            InjectKind::Delay => "completions delayed",
            InjectKind::Duplicate => "completions posted twice",
            InjectKind::UnknownCid => "completions with an unknown CID",
            InjectKind::Stale => "stale completions",
            InjectKind::BogusSqhd => "completions with a bogus SQ head",
            InjectKind::Fatal => "controller fatal status",
            InjectKind::Vanish => "surprise removal",
        }
    }

    fn action(self, delay_rounds: u32) -> FaultAction {
        match self {
            // DNR: the driver retries failures without it, which would
            // turn the asked-for share into share^(retries + 1).
            InjectKind::ReadError => FaultAction::CompleteWithStatus(
                Status::new(StatusCodeType::MEDIA, media::UNRECOVERED_READ_ERROR).with_dnr(true),
            ),
            InjectKind::Status => FaultAction::CompleteWithStatus(
                Status::new(StatusCodeType::GENERIC, generic::INTERNAL_ERROR).with_dnr(true),
            ),
            InjectKind::Lose => FaultAction::NeverComplete,
            InjectKind::Delay => FaultAction::DelayPolls(delay_rounds),
            InjectKind::Duplicate => FaultAction::DuplicateCompletion,
            InjectKind::UnknownCid => FaultAction::CompleteWithUnknownCid,
            InjectKind::Stale => FaultAction::StaleCompletion,
            InjectKind::BogusSqhd => FaultAction::BogusSqhd,
            InjectKind::Fatal => FaultAction::FatalStatus,
            InjectKind::Vanish => FaultAction::Vanish,
        }
    }
}

/// One fault asked for on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injection {
    /// The kind.
    pub kind: InjectKind,
    /// Share of matching commands hit, in parts per billion.
    pub rate_ppb: u32,
}

impl Injection {
    /// Parse a rate: a fraction `0..=1` (`0.01`, `1e-4`).
    pub fn parse(kind: InjectKind, value: &str) -> Option<Self> {
        let f = value
            .parse::<f64>()
            .ok()
            .filter(|f| (0.0..=1.0).contains(f))?;
        Some(Injection {
            kind,
            rate_ppb: (f * PPB).round() as u32,
        })
    }

    /// The rate as a fraction.
    pub fn rate(self) -> f64 {
        self.rate_ppb as f64 / PPB
    }
}

/// Installed rules of one controller, to read their hit counts later.
#[derive(Debug, Default)]
pub struct Installed {
    rules: Vec<(InjectKind, FaultId)>,
}

impl Installed {
    /// Install `faults` on I/O queues, seeded with `seed` (`None`: the
    /// emulator's own seed).
    pub fn install(
        handle: &EmuHandle,
        faults: &[Injection],
        delay_rounds: u32,
        seed: Option<u64>,
    ) -> Self {
        if let Some(seed) = seed.filter(|_| !faults.is_empty()) {
            handle.seed_faults(seed);
        }
        let rules = faults
            .iter()
            .filter(|f| f.rate_ppb > 0)
            .map(|f| {
                let mut rule = FaultRule::new(f.kind.action(delay_rounds))
                    .io()
                    .probability(f.rate());
                if f.kind == InjectKind::ReadError {
                    rule = rule.opcode(NvmOpcode::READ.0);
                }
                (f.kind, handle.add_fault(rule))
            })
            .collect();
        Installed { rules }
    }

    /// `(kind, times fired)` per rule.
    pub fn hits(&self, handle: &EmuHandle) -> Vec<(InjectKind, u64)> {
        self.rules
            .iter()
            .map(|&(k, id)| (k, handle.fault_hits(id)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_distinct_key_that_parses_back() {
        for k in InjectKind::ALL {
            assert_eq!(InjectKind::from_key(k.key()), Some(k));
        }
        let mut keys: Vec<_> = InjectKind::ALL.iter().map(|k| k.key()).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), InjectKind::ALL.len());
    }

    #[test]
    fn rates_are_fractions() {
        let i = Injection::parse(InjectKind::Lose, "0.25").unwrap();
        assert_eq!(i.rate_ppb, 250_000_000);
        assert_eq!(
            Injection::parse(InjectKind::Lose, "1e-9").unwrap().rate_ppb,
            1
        );
        assert!(Injection::parse(InjectKind::Lose, "1.5").is_none());
        assert!(Injection::parse(InjectKind::Lose, "-0.1").is_none());
        assert!(Injection::parse(InjectKind::Lose, "x").is_none());
        assert!(Injection::parse(InjectKind::Lose, "NaN").is_none());
    }
}
