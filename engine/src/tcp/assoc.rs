//! The association with one NVMe over Fabrics controller over TCP, shared by
//! the device and its I/O queues: the admin queue (a
//! [`FabricsController`]), the generation every I/O queue connected under,
//! the queue IDs in use, and the one background thread per controller that
//! sends Keep Alive at half the KATO and re-establishes the association
//! after a failure.
//!
//! Error recovery follows the Linux host's (`reconnect_delay`,
//! `ctrl_loss_tmo`): any connection failure — a dropped or refused
//! connection, a failed Keep Alive, commands that pass their deadline — ends
//! the whole association. The admin connection is closed (the target then
//! deletes the controller and with it every I/O queue), the generation
//! moves on, every I/O queue sees that on its next reap and fails its
//! connection (each command in flight completes once, with a transport
//! error), and the thread brings up a new controller: at once, then every
//! `reconnect_delay` until `ctrl_loss_timeout` has passed since the failure,
//! after which the association has failed for good and every queue fails
//! what it holds with [`crate::DeviceGone::Failed`]. Once the new admin
//! queue is up, each I/O queue asks for its connection again: the same
//! thread connects it (TCP, ICReq, Fabrics Connect with the queue's own
//! QID) and leaves it in a mailbox, where the queue's owner picks it up on
//! a later reap and resubmits what was sent while it was down. A thread
//! that polls queues never waits on the network nor on a lock held across
//! it: it reads where the association stands from one atomic word, and
//! reports failures, asks for connections and posts Aborts through
//! mailboxes held only for a few instructions.
//!
//! A command past its deadline is first withdrawn with Abort (NVMe Base
//! 2.0 §5.1) on the admin queue, as on PCIe: the queue's deadline scan
//! *posts* "abort CID x of queue y, seen in generation g" to a fixed
//! mailbox (a few atomic operations and a wake-up, never a lock the admin
//! queue holds) and the same thread sends the Abort. A controller that
//! honours it completes the command on its I/O connection (Command Abort
//! Requested), and nothing is reconnected. An Abort that fails or times
//! out, a mailbox that is full, or a command still in flight a grace
//! period later ends the association as above.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use super::conn::Connection;
use super::error::TcpError;
use super::session::{FabricsController, SessionOptions, TcpTarget};
use crate::spec::command::{AdminOpcode, Command};

/// Abort requests the mailbox holds at once (association-wide). More
/// waiting aborts than this end the association instead: a target with
/// that many stuck commands is hung.
pub(crate) const ABORT_SLOTS: usize = 32;

/// Marks a used abort slot (an empty slot is 0).
const VALID: u64 = 1 << 63;

/// An abort request as one word: generation (low 31 bits), queue ID, CID.
fn abort_key(generation: u64, qid: u16, cid: u16) -> u64 {
    VALID | (generation & 0x7fff_ffff) << 32 | (qid as u64) << 16 | cid as u64
}

/// Abort requests waiting for the association's thread: a fixed array of
/// words, posted with a compare-and-swap, taken with a swap.
struct AbortMailbox([AtomicU64; ABORT_SLOTS]);

impl AbortMailbox {
    fn new() -> Self {
        AbortMailbox(std::array::from_fn(|_| AtomicU64::new(0)))
    }

    /// Post `key`; the same request posted again collapses into one.
    /// `false` when every slot is taken.
    fn post(&self, key: u64) -> bool {
        // Acquire: a slot the thread emptied is seen empty, not stale.
        if self.0.iter().any(|s| s.load(Ordering::Acquire) == key) {
            return true;
        }
        self.0.iter().any(|s| {
            s.compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })
    }

    /// Take every waiting request: `(generation low 31 bits, qid, cid)`.
    fn take(&self, mut f: impl FnMut(u64, u16, u16)) {
        for slot in &self.0 {
            // Acquire: the queue's request is seen whole.
            let key = slot.swap(0, Ordering::AcqRel);
            if key != 0 {
                f((key >> 32) & 0x7fff_ffff, (key >> 16) as u16, key as u16);
            }
        }
    }
}

/// How the association recovers and how long it waits.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RecoveryOptions {
    /// Wait between two attempts to re-establish the association (the
    /// Linux host's `reconnect_delay`). The first attempt after a failure
    /// is made at once.
    pub reconnect_delay: Duration,
    /// Give up re-establishing the association this long after the failure
    /// (the Linux host's `ctrl_loss_tmo`); every queue then fails what it
    /// holds and refuses new commands.
    pub ctrl_loss_timeout: Duration,
}

impl Default for RecoveryOptions {
    fn default() -> Self {
        RecoveryOptions {
            reconnect_delay: Duration::from_secs(2),
            ctrl_loss_timeout: Duration::from_secs(60),
        }
    }
}

/// Where the association stands, as a queue sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Up, in this generation.
    Live(u64),
    /// Being re-established.
    Reconnecting,
    /// Given up on (or closed): the reason.
    Failed(String),
}

enum Phase {
    Live(Box<FabricsController>),
    Reconnecting {
        since: Instant,
        next_try: Instant,
        attempts: u32,
        last_error: String,
    },
    Failed(String),
}

struct State {
    phase: Phase,
    generation: u64,
    qids: Vec<bool>,
}

/// Counters of the association.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AssociationStats {
    /// Times the association failed (connection lost, Keep Alive failed,
    /// deadlines passed).
    pub failures: u64,
    /// Times it was re-established.
    pub reconnects: u64,
    /// Attempts to re-establish it that failed.
    pub failed_attempts: u64,
    /// Keep Alive commands sent.
    pub keep_alives: u64,
    /// Abort commands sent for commands past their deadline.
    pub aborts_sent: u64,
    /// Aborts the controller reported as done (Abort DW0 bit 0 clear).
    pub aborts_done: u64,
    /// Aborts that failed or timed out (each ended the association).
    pub aborts_failed: u64,
}

/// The phase in the low bits of the published word.
const WORD_LIVE: u64 = 0;
const WORD_RECONNECTING: u64 = 1;
const WORD_FAILED: u64 = 2;

/// Where the association stands, read without its lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Quick {
    /// Up, in this generation.
    Live(u64),
    /// Being re-established.
    Reconnecting,
    /// Given up on (or closed).
    Failed,
}

/// A queue's request for a new connection, and its outcome once made.
struct QueueConnect {
    qid: u16,
    depth: u16,
    generation: u64,
    made: Option<Result<Connection, TcpError>>,
}

/// See the [module documentation](self).
pub(crate) struct Association {
    target: TcpTarget,
    session: SessionOptions,
    recovery: RecoveryOptions,
    /// `State::generation << 2 | phase` (`WORD_*`), published under the
    /// lock for the one load a reap makes and for lock-free standing.
    generation: AtomicU64,
    /// A failure a queue reported, for the thread to act on: the
    /// generation it saw and why.
    failure: Mutex<Option<(u64, String)>>,
    /// Connections queues asked for, and those made for them.
    connects: Mutex<Vec<QueueConnect>>,
    state: Mutex<State>,
    stats: Mutex<AssociationStats>,
    stop: AtomicBool,
    /// Aborts posted by queues, see [`Association::post_abort`].
    aborts: AbortMailbox,
    /// The keep-alive thread, for wake-ups without a lock.
    thread: OnceLock<Thread>,
}

impl Association {
    /// Bring up the controller and start the keep-alive and recovery thread.
    pub(crate) fn start(
        target: TcpTarget,
        session: SessionOptions,
        recovery: RecoveryOptions,
        max_io_queues: u16,
    ) -> Result<(Arc<Self>, JoinHandle<()>), TcpError> {
        let ctrl = FabricsController::connect(&target, &session)?;
        let a = Arc::new(Association {
            target,
            session,
            recovery,
            generation: AtomicU64::new(1 << 2 | WORD_LIVE),
            failure: Mutex::new(None),
            connects: Mutex::new(Vec::new()),
            state: Mutex::new(State {
                phase: Phase::Live(Box::new(ctrl)),
                generation: 1,
                qids: vec![false; max_io_queues as usize + 1],
            }),
            stats: Mutex::new(AssociationStats::default()),
            stop: AtomicBool::new(false),
            aborts: AbortMailbox::new(),
            thread: OnceLock::new(),
        });
        let worker = a.clone();
        let handle = std::thread::Builder::new()
            .name("nvme-tcp-keepalive".into())
            .spawn(move || worker.run())
            .map_err(|_| TcpError::Invalid("cannot start the keep-alive thread"))?;
        let _ = a.thread.set(handle.thread().clone());
        Ok((a, handle))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, f: impl FnOnce(&mut AssociationStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Counters so far.
    pub(crate) fn stats(&self) -> AssociationStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The generation queues compare theirs with (one relaxed load: a
    /// change is acted on under the lock).
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed) >> 2
    }

    /// Publish `s`'s generation and phase (under the lock).
    fn publish(&self, s: &State) {
        let phase = match s.phase {
            Phase::Live(_) => WORD_LIVE,
            Phase::Reconnecting { .. } => WORD_RECONNECTING,
            Phase::Failed(_) => WORD_FAILED,
        };
        // Release: a queue that sees the new word sees what led to it.
        self.generation
            .store(s.generation << 2 | phase, Ordering::Release);
    }

    /// Where the association stands, from one atomic load (for threads
    /// that must not wait for the lock).
    pub(crate) fn quick_standing(&self) -> Quick {
        let w = self.generation.load(Ordering::Acquire);
        match w & 3 {
            WORD_LIVE => Quick::Live(w >> 2),
            WORD_RECONNECTING => Quick::Reconnecting,
            _ => Quick::Failed,
        }
    }

    fn wake(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    /// The connection of I/O queue `qid` (`depth` commands) in live
    /// generation `generation`, made by the association's thread: `None`
    /// until it is made (the request is left for the thread, which is
    /// woken), then once `Some` with the outcome. Never blocks on the
    /// network.
    pub(crate) fn poll_io_queue(
        &self,
        generation: u64,
        qid: u16,
        depth: u16,
    ) -> Option<Result<Connection, TcpError>> {
        let mut c = self.connects.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = c.iter().position(|r| r.qid == qid) {
            let r = &mut c[i];
            if r.generation == generation && r.depth == depth {
                if r.made.is_some() {
                    return c.swap_remove(i).made;
                }
                return None;
            }
            // Asked for in an older generation: ask again.
            c.swap_remove(i);
        }
        c.push(QueueConnect {
            qid,
            depth,
            generation,
            made: None,
        });
        drop(c);
        self.wake();
        None
    }

    /// Queue `qid` is gone: drop what was asked or made for it.
    pub(crate) fn forget_io_queue(&self, qid: u16) {
        self.connects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|r| r.qid != qid);
    }

    /// Connect the I/O queues that asked in the live generation (on the
    /// association's thread, the lock held: the admin queue's CNTLID names
    /// the controller they join).
    fn run_connects(&self, s: &mut State) {
        let Phase::Live(ctrl) = &s.phase else {
            return;
        };
        let wanted: Vec<(u16, u16)> = {
            let mut c = self.connects.lock().unwrap_or_else(|p| p.into_inner());
            c.retain(|r| r.generation >= s.generation);
            c.iter()
                .filter(|r| r.generation == s.generation && r.made.is_none())
                .map(|r| (r.qid, r.depth))
                .collect()
        };
        let generation = s.generation;
        let mut failed = None;
        for (qid, depth) in wanted {
            let made = ctrl.connect_io_queue(qid, depth);
            if let Err(e) = &made {
                failed = Some(format!("I/O queue {qid} could not connect again: {e}"));
            }
            let mut c = self.connects.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(r) = c
                .iter_mut()
                .find(|r| r.qid == qid && r.depth == depth && r.generation == generation)
            {
                r.made = Some(made);
            }
            if failed.is_some() {
                break;
            }
        }
        if let Some(why) = failed {
            // The association is of no use without its queues: end it, and
            // try again only after the reconnect delay (not at once, which
            // would loop as fast as the target refuses).
            self.fail_locked(s, generation, &why);
            if let Phase::Reconnecting { next_try, .. } = &mut s.phase {
                *next_try = Instant::now() + self.recovery.reconnect_delay;
            }
        }
    }

    /// The subsystem and address.
    pub(crate) fn target(&self) -> &TcpTarget {
        &self.target
    }

    /// Bring-up and connection settings.
    pub(crate) fn session(&self) -> &SessionOptions {
        &self.session
    }

    /// Where the association stands.
    pub(crate) fn standing(&self) -> Standing {
        let s = self.lock();
        match &s.phase {
            Phase::Live(_) => Standing::Live(s.generation),
            Phase::Reconnecting { .. } => Standing::Reconnecting,
            Phase::Failed(why) => Standing::Failed(why.clone()),
        }
    }

    /// Run `f` on the admin queue while the association is live.
    pub(crate) fn with_admin<R>(
        &self,
        f: impl FnOnce(&mut FabricsController) -> Result<R, TcpError>,
    ) -> Result<R, TcpError> {
        let mut s = self.lock();
        let generation = s.generation;
        let r = match &mut s.phase {
            Phase::Live(c) => f(c),
            Phase::Reconnecting { last_error, .. } => {
                return Err(TcpError::Recovering {
                    addr: self.target.addr,
                    last_error: last_error.clone(),
                });
            }
            Phase::Failed(why) => {
                return Err(TcpError::Failed {
                    addr: self.target.addr,
                    why: why.clone(),
                });
            }
        };
        if let Err(TcpError::Lost { .. } | TcpError::Timeout { .. } | TcpError::Closed { .. }) = &r
        {
            self.fail_locked(&mut s, generation, "an admin command lost its connection");
        }
        r
    }

    /// Take the lowest free I/O queue ID.
    pub(crate) fn take_qid(&self) -> Option<u16> {
        let mut s = self.lock();
        let i = s.qids.iter().skip(1).position(|used| !used)? + 1;
        s.qids[i] = true;
        Some(i as u16)
    }

    /// Give `qid` back.
    pub(crate) fn release_qid(&self, qid: u16) {
        if let Some(q) = self.lock().qids.get_mut(qid as usize) {
            *q = false;
        }
    }

    /// Connect I/O queue `qid` in generation `generation` (blocking,
    /// bounded by the connect and command timeouts). `None`: the
    /// association is not live in that generation any more.
    pub(crate) fn connect_io_queue(
        &self,
        generation: u64,
        qid: u16,
        depth: u16,
    ) -> Option<Result<Connection, TcpError>> {
        let s = self.lock();
        match &s.phase {
            Phase::Live(c) if s.generation == generation => Some(c.connect_io_queue(qid, depth)),
            _ => None,
        }
    }

    /// Ask for command `cid` of I/O queue `qid`, past its deadline in
    /// `generation`, to be aborted on the admin queue. Posting the same
    /// request again does nothing more. `false` when the mailbox is full:
    /// the caller ends the association instead.
    pub(crate) fn post_abort(&self, generation: u64, qid: u16, cid: u16) -> bool {
        let posted = self.aborts.post(abort_key(generation, qid, cid));
        if posted {
            self.wake();
        }
        posted
    }

    /// Send the Aborts posted for the live generation (the lock is held:
    /// the admin queue runs one command at a time). An Abort that fails or
    /// times out ends the association; so does one the controller refuses
    /// with an error status. Aborts of an older generation are dropped:
    /// ending that association failed the commands they name.
    fn run_aborts(&self, s: &mut State) {
        let mut posted = [(0u64, 0u16, 0u16); ABORT_SLOTS];
        let mut n = 0;
        self.aborts.take(|g, qid, cid| {
            posted[n] = (g, qid, cid);
            n += 1;
        });
        for &(posted_in, qid, cid) in &posted[..n] {
            let generation = s.generation;
            if posted_in != generation & 0x7fff_ffff {
                continue;
            }
            let Phase::Live(c) = &mut s.phase else {
                continue;
            };
            let mut cmd = Command::new(AdminOpcode::ABORT.0, 0);
            cmd.cdw10 = (cid as u32) << 16 | qid as u32;
            self.count(|c| c.aborts_sent += 1);
            match c.admin_command("Abort", &cmd, None) {
                Ok((dw0, _)) => {
                    if dw0 & 1 == 0 {
                        self.count(|c| c.aborts_done += 1);
                    }
                }
                Err(e) => {
                    self.count(|c| c.aborts_failed += 1);
                    let why = format!("Abort of command {cid:#06x} on I/O queue {qid} failed: {e}");
                    self.fail_locked(s, generation, &why);
                }
            }
        }
    }

    /// A queue of generation `generation` failed: the association's thread
    /// ends the association (if that generation is still the live one) and
    /// re-establishes it. Returns at once: the caller never waits for the
    /// lock, which the thread may hold across a network round trip.
    pub(crate) fn report_failure(&self, generation: u64, why: &str) {
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if f.as_ref().is_none_or(|(g, _)| *g < generation) {
            *f = Some((generation, why.to_string()));
        }
        drop(f);
        self.wake();
    }

    /// Act on a failure a queue reported (the lock is held).
    fn run_reported_failure(&self, s: &mut State) {
        let reported = self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((generation, why)) = reported {
            self.fail_locked(s, generation, &why);
        }
    }

    fn fail_locked(&self, s: &mut State, generation: u64, why: &str) {
        if s.generation != generation || !matches!(s.phase, Phase::Live(_)) {
            return;
        }
        let now = Instant::now();
        // Dropping the controller closes the admin connection: the target
        // deletes the controller and its I/O queues.
        s.phase = Phase::Reconnecting {
            since: now,
            next_try: now,
            attempts: 0,
            last_error: why.to_string(),
        };
        s.generation += 1;
        self.publish(s);
        self.count(|c| c.failures += 1);
    }

    /// Stop the thread and shut the controller down (CC.SHN) if it is up.
    pub(crate) fn close(&self) -> Result<(), TcpError> {
        self.stop.store(true, Ordering::Relaxed);
        let mut s = self.lock();
        let phase = std::mem::replace(&mut s.phase, Phase::Failed("the device was closed".into()));
        s.generation += 1;
        self.publish(&s);
        drop(s);
        self.connects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        match phase {
            Phase::Live(c) => c.shutdown(),
            _ => Ok(()),
        }
    }

    /// The keep-alive and recovery thread.
    fn run(self: Arc<Self>) {
        let kato = self.session.kato;
        let mut tick = self
            .recovery
            .reconnect_delay
            .min(Duration::from_millis(250));
        if !kato.is_zero() {
            tick = tick.min(kato / 4);
        }
        let tick = tick.max(Duration::from_millis(5));
        while !self.stop.load(Ordering::Relaxed) {
            std::thread::park_timeout(tick);
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            self.turn();
        }
    }

    /// One turn of the thread: Keep Alive when due, or one reconnection
    /// attempt when due (made without holding the lock, so queues polling
    /// meanwhile never wait for it).
    fn turn(&self) {
        let mut s = self.lock();
        self.run_reported_failure(&mut s);
        let generation = s.generation;
        let now = Instant::now();
        match &mut s.phase {
            Phase::Live(_) => {
                self.run_aborts(&mut s);
                self.run_connects(&mut s);
                let Phase::Live(c) = &mut s.phase else {
                    return;
                };
                match c.keep_alive_if_due() {
                    Ok(true) => self.count(|c| c.keep_alives += 1),
                    Ok(false) => {}
                    Err(e) => {
                        let why = format!("Keep Alive failed: {e}");
                        self.fail_locked(&mut s, generation, &why);
                    }
                }
                return;
            }
            Phase::Failed(_) => return,
            Phase::Reconnecting {
                since,
                next_try,
                attempts,
                last_error,
            } => {
                if now < *next_try {
                    return;
                }
                if now.duration_since(*since) >= self.recovery.ctrl_loss_timeout {
                    let why = format!(
                        "the controller could not be reached again within {:?} ({} attempts; \
                         last: {last_error}); check the target and the network, then open the \
                         device again",
                        self.recovery.ctrl_loss_timeout, attempts
                    );
                    s.phase = Phase::Failed(why);
                    s.generation += 1;
                    self.publish(&s);
                    return;
                }
            }
        }
        drop(s);
        let attempt = FabricsController::connect(&self.target, &self.session);
        let mut s = self.lock();
        if s.generation != generation || self.stop.load(Ordering::Relaxed) {
            // Closed meanwhile: a new controller is dropped (its admin
            // connection closes).
            return;
        }
        match attempt {
            Ok(c) => {
                s.phase = Phase::Live(Box::new(c));
                s.generation += 1;
                self.publish(&s);
                self.count(|c| c.reconnects += 1);
                // Queues waiting for this generation connect now.
                self.run_connects(&mut s);
            }
            Err(e) => {
                if let Phase::Reconnecting {
                    next_try,
                    attempts,
                    last_error,
                    ..
                } = &mut s.phase
                {
                    *attempts += 1;
                    *last_error = e.to_string();
                    *next_try = Instant::now() + self.recovery.reconnect_delay;
                }
                self.count(|c| c.failed_attempts += 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abort_key_keeps_generation_queue_and_command_apart_and_is_never_empty() {
        let k = abort_key(5, 3, 0x1234);
        assert_ne!(k, abort_key(6, 3, 0x1234));
        assert_ne!(k, abort_key(5, 4, 0x1234));
        assert_ne!(k, abort_key(5, 3, 0x1235));
        assert_ne!(abort_key(0, 0, 0), 0);
    }

    #[test]
    fn the_abort_mailbox_collapses_duplicates_refuses_when_full_and_hands_each_out_once() {
        let m = AbortMailbox::new();
        assert!(m.post(abort_key(7, 1, 9)));
        assert!(m.post(abort_key(7, 1, 9)), "a duplicate is accepted");
        for cid in 0..ABORT_SLOTS as u16 - 1 {
            assert!(m.post(abort_key(7, 2, cid)));
        }
        assert!(!m.post(abort_key(7, 3, 0)), "every slot taken: refused");
        let mut got = Vec::new();
        m.take(|g, qid, cid| got.push((g, qid, cid)));
        assert_eq!(got.len(), ABORT_SLOTS, "the duplicate took no slot");
        assert_eq!(got.iter().filter(|&&x| x == (7, 1, 9)).count(), 1);
        got.clear();
        m.take(|g, qid, cid| got.push((g, qid, cid)));
        assert!(got.is_empty(), "taken once");
        assert!(m.post(abort_key(8, 3, 0)), "room again");
    }
}
