//! Fault injection: rules that match commands as the controller fetches
//! them and make it misbehave the way real devices do (error statuses,
//! duplicate, invented or stale completions, lost or late completions, a
//! bogus SQ head, fatal status, surprise removal, protection information
//! whose stored guard or reference tag went bad).
//!
//! Every rule matches per command: queue kind or id, opcode, namespace,
//! LBA range, a number of matches to let pass, a firing count and a seeded
//! probability. A controller that vanished or went fatal can be configured
//! to come back when the host resets it (see `EmuHandle`).
//!
//! Rules are checked in the order they were added; the first that matches
//! and fires decides. With no rule installed the check is one relaxed
//! atomic load and takes no lock.

#![forbid(unsafe_code)]

use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use nvme_engine::spec::status::{generic, media};
use nvme_engine::spec::{
    command::{Command, NvmOpcode},
    status::{Status, StatusCodeType},
};

/// What a matching command does instead of completing normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultAction {
    /// Skip execution and complete with this status.
    CompleteWithStatus(Status),
    /// Execute and post the completion twice.
    DuplicateCompletion,
    /// Execute, complete, then post an extra completion with a CID never
    /// submitted on that queue, chosen so that the host cannot submit it
    /// later either (see `Sq::unseen_cid`).
    CompleteWithUnknownCid,
    /// Execute and complete; one round later post the same completion
    /// again (a stale CID the host has already retired).
    StaleCompletion,
    /// Fetch the command and never execute or complete it (until an Abort,
    /// SQ deletion or controller reset).
    NeverComplete,
    /// Execute, but hold the completion for this many rounds (threaded:
    /// polling rounds; inline: doorbell writes or [`crate::EmuHandle::poll`] calls).
    DelayPolls(u32),
    /// Execute and complete with an SQ head pointer outside the queue.
    BogusSqhd,
    /// Set CSTS.CFS and stop processing until the controller is reset.
    FatalStatus,
    /// Disappear: register reads return all ones and no DMA happens again.
    Vanish,
    /// On a namespace with protection information: a Write stores the
    /// tuples of its blocks with a guard that does not match the data; any
    /// other command with an LBA range finds the stored guards of its
    /// blocks corrupted before it runs. A later check of those blocks fails
    /// with End-to-end Guard Check Error. No effect elsewhere.
    CorruptGuard,
    /// As [`FaultAction::CorruptGuard`], for the reference tag (End-to-end
    /// Reference Tag Check Error).
    CorruptReferenceTag,
}

impl FaultAction {
    /// Complete with any status.
    pub const fn status(sct: StatusCodeType, sc: u8, dnr: bool) -> Self {
        FaultAction::CompleteWithStatus(Status::new(sct, sc).with_dnr(dnr))
    }
    /// Unrecovered Read Error (media, DNR set: retrying will not help).
    pub const fn media_error() -> Self {
        Self::status(StatusCodeType::MEDIA, media::UNRECOVERED_READ_ERROR, true)
    }
    /// Internal Error (generic, DNR clear: a retry may succeed).
    pub const fn internal_error() -> Self {
        Self::status(StatusCodeType::GENERIC, generic::INTERNAL_ERROR, false)
    }
    /// Namespace Not Ready (generic, DNR clear).
    pub const fn namespace_not_ready() -> Self {
        Self::status(StatusCodeType::GENERIC, generic::NAMESPACE_NOT_READY, false)
    }
}

/// Which queues a rule looks at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueueKind {
    /// Admin and I/O queues.
    #[default]
    Any,
    /// Only the admin queue.
    Admin,
    /// Only I/O queues.
    Io,
}

/// A fault rule: match conditions plus an action.
///
/// ```
/// use nvme_emu::{FaultAction, FaultRule};
/// use nvme_engine::spec::command::NvmOpcode;
/// let rule = FaultRule::new(FaultAction::DuplicateCompletion)
///     .io()
///     .opcode(NvmOpcode::READ.0)
///     .lba(0..8)
///     .times(1);
/// # let _ = rule;
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct FaultRule {
    /// Queue kind to match.
    pub kind: QueueKind,
    /// Queue identifier to match.
    pub qid: Option<u16>,
    /// Opcode to match (admin or NVM, depending on the queue).
    pub opcode: Option<u8>,
    /// Namespace to match.
    pub nsid: Option<u32>,
    /// LBA range a Read/Write/Write Zeroes/Compare must overlap; commands
    /// without an LBA range never match a rule that sets this.
    pub lba: Option<Range<u64>>,
    /// Let this many matching commands pass before firing.
    pub skip: u64,
    /// Fire at most this many times (`None`: forever).
    pub count: Option<u64>,
    /// Fire with this probability (0.0..=1.0), from a seeded generator.
    pub probability: Option<f64>,
    /// What happens.
    pub action: FaultAction,
}

impl FaultRule {
    /// A rule matching every command, firing forever.
    pub fn new(action: FaultAction) -> Self {
        FaultRule {
            kind: QueueKind::Any,
            qid: None,
            opcode: None,
            nsid: None,
            lba: None,
            skip: 0,
            count: None,
            probability: None,
            action,
        }
    }
    /// Only admin commands.
    pub fn admin(mut self) -> Self {
        self.kind = QueueKind::Admin;
        self
    }
    /// Only I/O commands.
    pub fn io(mut self) -> Self {
        self.kind = QueueKind::Io;
        self
    }
    /// Only this submission queue.
    pub fn queue(mut self, qid: u16) -> Self {
        self.qid = Some(qid);
        self
    }
    /// Only this opcode.
    pub fn opcode(mut self, opcode: u8) -> Self {
        self.opcode = Some(opcode);
        self
    }
    /// Only this namespace.
    pub fn nsid(mut self, nsid: u32) -> Self {
        self.nsid = Some(nsid);
        self
    }
    /// Only commands touching these LBAs.
    pub fn lba(mut self, range: Range<u64>) -> Self {
        self.lba = Some(range);
        self
    }
    /// Let `n` matches pass first.
    pub fn skip(mut self, n: u64) -> Self {
        self.skip = n;
        self
    }
    /// Fire at most `n` times.
    pub fn times(mut self, n: u64) -> Self {
        self.count = Some(n);
        self
    }
    /// Fire once.
    pub fn once(self) -> Self {
        self.times(1)
    }
    /// Fire with probability `p`.
    pub fn probability(mut self, p: f64) -> Self {
        self.probability = Some(p);
        self
    }

    fn matches(&self, admin: bool, qid: u16, cmd: &Command) -> bool {
        match self.kind {
            QueueKind::Admin if !admin => return false,
            QueueKind::Io if admin => return false,
            _ => {}
        }
        if self.qid.is_some_and(|q| q != qid)
            || self.opcode.is_some_and(|o| o != cmd.opcode())
            || self.nsid.is_some_and(|n| n != cmd.nsid)
        {
            return false;
        }
        if let Some(range) = &self.lba {
            let op = NvmOpcode(cmd.opcode());
            let has_lba = !admin
                && matches!(
                    op,
                    NvmOpcode::READ
                        | NvmOpcode::WRITE
                        | NvmOpcode::WRITE_ZEROES
                        | NvmOpcode::COMPARE
                        | NvmOpcode::WRITE_UNCORRECTABLE
                        | NvmOpcode(0x0C)
                );
            if !has_lba {
                return false;
            }
            let start = cmd.slba();
            let end = start.saturating_add(cmd.nlb_z() as u64 + 1);
            if start >= range.end || end <= range.start {
                return false;
            }
        }
        true
    }
}

/// Identifies an installed rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FaultId(pub(crate) u64);

struct Installed {
    id: FaultId,
    rule: FaultRule,
    matched: u64,
    fired: u64,
}

struct TableState {
    rules: Vec<Installed>,
    next_id: u64,
    rng: u64,
}

/// The installed rules.
pub(crate) struct FaultTable {
    installed: AtomicUsize,
    state: Mutex<TableState>,
}

impl FaultTable {
    pub(crate) fn new() -> Self {
        FaultTable {
            installed: AtomicUsize::new(0),
            state: Mutex::new(TableState {
                rules: Vec::new(),
                next_id: 1,
                rng: 0x9E37_79B9_7F4A_7C15,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TableState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add(&self, rule: FaultRule) -> FaultId {
        let mut st = self.lock();
        let id = FaultId(st.next_id);
        st.next_id += 1;
        st.rules.push(Installed {
            id,
            rule,
            matched: 0,
            fired: 0,
        });
        self.installed.store(st.rules.len(), Ordering::Release);
        id
    }

    pub(crate) fn remove(&self, id: FaultId) -> bool {
        let mut st = self.lock();
        let before = st.rules.len();
        st.rules.retain(|r| r.id != id);
        self.installed.store(st.rules.len(), Ordering::Release);
        st.rules.len() != before
    }

    pub(crate) fn clear(&self) {
        let mut st = self.lock();
        st.rules.clear();
        self.installed.store(0, Ordering::Release);
    }

    pub(crate) fn seed(&self, seed: u64) {
        self.lock().rng = seed | 1;
    }

    pub(crate) fn fired(&self, id: FaultId) -> u64 {
        self.lock()
            .rules
            .iter()
            .find(|r| r.id == id)
            .map_or(0, |r| r.fired)
    }

    /// The action for a command just fetched from queue `qid`, if any rule fires.
    #[inline]
    pub(crate) fn check(&self, admin: bool, qid: u16, cmd: &Command) -> Option<FaultAction> {
        // Relaxed is enough: a rule added concurrently with a command may or
        // may not apply to it, as with any race against a device.
        if self.installed.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut st = self.lock();
        let TableState { rules, rng, .. } = &mut *st;
        for r in rules.iter_mut() {
            if r.rule.count.is_some_and(|c| r.fired >= c) || !r.rule.matches(admin, qid, cmd) {
                continue;
            }
            r.matched += 1;
            if r.matched <= r.rule.skip {
                continue;
            }
            if let Some(p) = r.rule.probability {
                // xorshift64*: cheap, seeded, reproducible.
                *rng ^= *rng >> 12;
                *rng ^= *rng << 25;
                *rng ^= *rng >> 27;
                let x = rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
                if (x as f64) / ((1u64 << 53) as f64) >= p {
                    continue;
                }
            }
            r.fired += 1;
            return Some(r.rule.action);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(slba: u64, blocks: u16) -> Command {
        let mut c = Command::new(NvmOpcode::READ.0, 1);
        c.set_slba(slba);
        c.cdw12 = blocks as u32 - 1;
        c
    }

    #[test]
    fn lba_rule_matches_overlap_only() {
        let t = FaultTable::new();
        t.add(
            FaultRule::new(FaultAction::DuplicateCompletion)
                .io()
                .lba(8..16),
        );
        assert_eq!(t.check(false, 1, &read(0, 8)), None);
        assert_eq!(
            t.check(false, 1, &read(4, 8)),
            Some(FaultAction::DuplicateCompletion)
        );
        assert_eq!(t.check(false, 1, &read(16, 1)), None);
        assert_eq!(t.check(true, 0, &read(8, 1)), None, "io rule ignores admin");
    }

    #[test]
    fn skip_and_count_limit_firing() {
        let t = FaultTable::new();
        let id = t.add(FaultRule::new(FaultAction::NeverComplete).skip(1).times(2));
        let c = read(0, 1);
        let fired: Vec<_> = (0..5).map(|_| t.check(false, 1, &c).is_some()).collect();
        assert_eq!(fired, [false, true, true, false, false]);
        assert_eq!(t.fired(id), 2);
        assert!(t.remove(id));
        assert_eq!(t.check(false, 1, &c), None);
    }

    #[test]
    fn probability_is_seeded_and_roughly_right() {
        let run = |seed| {
            let t = FaultTable::new();
            t.seed(seed);
            t.add(FaultRule::new(FaultAction::BogusSqhd).probability(0.25));
            (0..4000)
                .map(|_| t.check(false, 1, &read(0, 1)).is_some())
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        let n = a.iter().filter(|&&f| f).count();
        assert!((700..1300).contains(&n), "{n}");
    }
}
