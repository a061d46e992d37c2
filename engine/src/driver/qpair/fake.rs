//! The queue pair's transport-independent policy, tested over a scripted
//! transport with no device: deadlines and cancellation, exactly-once
//! completion on drop, retries, stale tags and transport failures.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use zerocopy::FromZeros;

use crate::dma::{DmaBuf, DmaPool, DmaRegion, HostMemory};
use crate::driver::error::{DeviceGone, IoError, SubmitErrorKind};
use crate::driver::namespace::{LbaRange, Namespace};
use crate::driver::transport::{
    CancelRequest, Closed, CommandOutcome, CommandTransport, DataDirection, DataRef, Reap,
    Recovery, SubmitRefusal, TransportCompletion, TransportFailure,
};
use crate::spec::command::Command;
use crate::spec::identify::{IdentifyController, IdentifyNamespace, LbaFormat};
use crate::spec::status::generic;
use crate::spec::status::{Status, StatusCodeType};

use super::{IoCompletion, QueuePair};
use crate::driver::stats::QueuePairStats;

/// What the test sees of the transport.
#[derive(Default)]
struct Wire {
    /// Commands sent (CID is the tag), in order.
    sent: Vec<Command>,
    /// Completions to hand out on the next reaps.
    ready: VecDeque<TransportCompletion>,
    cancels: Vec<u16>,
    resets: usize,
    closing: bool,
    flushes: usize,
}

struct Fake {
    wire: Rc<RefCell<Wire>>,
    capacity: usize,
    in_flight: usize,
}

impl CommandTransport for Fake {
    type Data = Option<DataRef>;
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn queue_id(&self) -> u16 {
        7
    }
    fn max_transfer(&self) -> usize {
        1 << 20
    }
    fn admin_timeout(&self) -> Duration {
        Duration::from_millis(50)
    }
    fn admit(&mut self, _: &mut QueuePairStats) -> Result<(), SubmitErrorKind> {
        Ok(())
    }
    fn map_data(
        &mut self,
        _: usize,
        buf: &DmaBuf,
        dir: DataDirection,
    ) -> Result<Self::Data, SubmitErrorKind> {
        Ok(Some(DataRef::of(buf, dir)))
    }
    fn map_ranges(&mut self, _: usize, _: &[LbaRange]) -> Result<Self::Data, SubmitErrorKind> {
        Ok(None)
    }
    fn prps(_: &Self::Data) -> (u64, u64) {
        (0, 0)
    }
    fn send(
        &mut self,
        cmd: &Command,
        _: Option<Self::Data>,
        _: &mut QueuePairStats,
    ) -> Result<(), SubmitRefusal> {
        if self.in_flight == self.capacity {
            return Err(SubmitRefusal::Full);
        }
        self.in_flight += 1;
        self.wire.borrow_mut().sent.push(*cmd);
        Ok(())
    }
    fn resend(&mut self, cmd: &Command, _: Option<DataRef>, _: &mut QueuePairStats) -> bool {
        self.wire.borrow_mut().sent.push(*cmd);
        true
    }
    fn flush(&mut self, _: &mut QueuePairStats) {
        self.wire.borrow_mut().flushes += 1;
    }
    fn begin_reap(&mut self, _: &mut QueuePairStats) -> Reap {
        Reap::Ready
    }
    fn next_completion(&mut self, _: &mut QueuePairStats) -> Option<TransportCompletion> {
        let c = self.wire.borrow_mut().ready.pop_front()?;
        self.in_flight = self.in_flight.saturating_sub(1);
        Some(c)
    }
    fn end_reap(&mut self, _: usize, _: &mut QueuePairStats) {}
    fn recover(&mut self, _: u64, _: &mut QueuePairStats) -> Recovery {
        Recovery::Wait
    }
    fn live(&self) -> Option<u64> {
        Some(0)
    }
    fn stalled(&mut self) -> bool {
        false
    }
    fn cancel(&mut self, tag: u16) -> CancelRequest {
        self.wire.borrow_mut().cancels.push(tag);
        CancelRequest::Sent
    }
    fn reset(&mut self, _: u64) {
        self.wire.borrow_mut().resets += 1;
    }
    fn dma_unproven(&self) -> bool {
        false
    }
    fn quarantine(&self) {}
    fn close_begin(&mut self) {
        self.wire.borrow_mut().closing = true;
    }
    fn close_wait(&self) -> Option<Duration> {
        Some(Duration::from_millis(20))
    }
    fn close_idle(&mut self) {}
    fn close(&mut self) -> Closed {
        Closed {
            result: Ok(()),
            leftover: IoError::Gone(DeviceGone::Failed),
            quarantine: true,
        }
    }
}

const TIMEOUT: Duration = Duration::from_secs(5);

fn setup(capacity: usize) -> (QueuePair<Fake>, Rc<RefCell<Wire>>, DmaPool, Namespace) {
    let wire = Rc::new(RefCell::new(Wire::default()));
    let fake = Fake {
        wire: Rc::clone(&wire),
        capacity,
        in_flight: 0,
    };
    let qp = QueuePair::new(fake, TIMEOUT, 2, Duration::from_millis(1));
    let mem = HostMemory::plain(1 << 20).expect("host memory");
    let pool = DmaPool::new(DmaRegion::unmapped_for_tests(mem, 0x1000_0000));
    let mut id = IdentifyNamespace::new_zeroed();
    id.nsze = (1u64 << 20).into();
    id.lbaf[0] = LbaFormat::new(0, 9);
    let ns = Namespace::from_identify(1, id, &IdentifyController::new_zeroed(), 1 << 20)
        .expect("a 512-byte format is valid");
    (qp, wire, pool, ns)
}

fn complete(wire: &Rc<RefCell<Wire>>, tag: u16, outcome: CommandOutcome) {
    wire.borrow_mut()
        .ready
        .push_back(TransportCompletion { tag, outcome });
}

fn ok() -> CommandOutcome {
    CommandOutcome::Completed {
        dw0: 0,
        status: Status::SUCCESS,
    }
}

fn reap(qp: &mut QueuePair<Fake>) -> Vec<IoCompletion> {
    let mut out = Vec::new();
    qp.process_completions(usize::MAX, |c| out.push(c));
    out
}

#[test]
fn a_command_past_its_deadline_is_cancelled_once_and_completes_timed_out_with_its_buffer() {
    let (mut qp, wire, mut pool, ns) = setup(8);
    qp.read(&ns, 0, pool.alloc(512).unwrap(), 1).unwrap();
    qp.read(&ns, 8, pool.alloc(512).unwrap(), 2).unwrap();
    let t0 = Instant::now();
    assert_eq!(qp.check_timeouts(t0), 0, "the first scan only stamps");
    assert_eq!(qp.check_timeouts(t0 + TIMEOUT / 2), 0, "not yet");
    // The first command completes in time; the second does not.
    let first = wire.borrow().sent[0].cid();
    complete(&wire, first, ok());
    assert_eq!(reap(&mut qp).len(), 1);
    assert_eq!(qp.check_timeouts(t0 + TIMEOUT * 2), 1);
    let second = wire.borrow().sent[1].cid();
    assert_eq!(wire.borrow().cancels, vec![second]);
    assert_eq!(
        qp.check_timeouts(t0 + TIMEOUT * 2 + Duration::from_millis(2)),
        0,
        "a deadline is acted on once"
    );
    assert_eq!(wire.borrow().cancels.len(), 1);
    assert_eq!(qp.outstanding(), 1, "held until the transport answers");
    complete(
        &wire,
        second,
        CommandOutcome::Failed(TransportFailure::Cancelled),
    );
    let done = reap(&mut qp);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].token, 2);
    assert_eq!(done[0].result, Err(IoError::TimedOut(TIMEOUT)));
    assert!(done[0].buf.is_some());
    assert_eq!(qp.stats().timeouts, 1);
    assert_eq!(qp.outstanding(), 0);
}

#[test]
fn a_cancelled_command_that_never_answers_escalates_to_a_transport_reset() {
    let (mut qp, wire, mut pool, ns) = setup(8);
    qp.read(&ns, 0, pool.alloc(512).unwrap(), 1).unwrap();
    let t0 = Instant::now();
    qp.check_timeouts(t0);
    assert_eq!(qp.check_timeouts(t0 + TIMEOUT), 1);
    assert_eq!(wire.borrow().resets, 0);
    // Past the grace period (the smaller of timeout and admin timeout).
    qp.check_timeouts(t0 + TIMEOUT * 3);
    assert_eq!(wire.borrow().resets, 1);
}

#[test]
fn dropping_a_queue_pair_completes_every_command_exactly_once() {
    let (mut qp, wire, mut pool, ns) = setup(8);
    for t in 0..5u64 {
        qp.write(&ns, t * 8, pool.alloc(512).unwrap(), false, t)
            .unwrap();
    }
    qp.flush(&ns, 5).unwrap();
    // Two complete while the queue drains; the rest are left to close.
    let tags: Vec<u16> = wire.borrow().sent.iter().map(|c| c.cid()).collect();
    complete(&wire, tags[1], ok());
    complete(&wire, tags[4], ok());
    // A stale duplicate of one of them must not be delivered twice.
    complete(&wire, tags[4], ok());
    let mut seen = Vec::new();
    qp.delete_with(|c| seen.push((c.token, c.result.is_ok(), c.buf.map(|b| b.is_quarantined()))))
        .unwrap();
    assert!(wire.borrow().closing);
    seen.sort_by_key(|s| s.0);
    let tokens: Vec<u64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(tokens, vec![0, 1, 2, 3, 4, 5], "each command exactly once");
    for (token, ok, quarantined) in seen {
        let done = token == 1 || token == 4;
        assert_eq!(ok, done, "token {token}");
        if token == 5 {
            assert_eq!(quarantined, None, "flush has no buffer");
        } else {
            // Left to close: the transport may still write them.
            assert_eq!(quarantined, Some(!done), "token {token}");
        }
    }
}

#[test]
fn an_error_worth_retrying_is_resent_and_a_transport_errno_is_reported_as_such() {
    let (mut qp, wire, mut pool, ns) = setup(8);
    qp.read(&ns, 0, pool.alloc(512).unwrap(), 1).unwrap();
    let tag = wire.borrow().sent[0].cid();
    let transient = Status::new(StatusCodeType::GENERIC, generic::NAMESPACE_NOT_READY);
    complete(
        &wire,
        tag,
        CommandOutcome::Completed {
            dw0: 0,
            status: transient,
        },
    );
    assert!(reap(&mut qp).is_empty(), "resent, not delivered");
    assert_eq!(qp.stats().retries, 1);
    let resent = wire.borrow().sent[1];
    assert_ne!(resent.cid(), tag, "a new generation");
    // The old tag is stale now.
    complete(&wire, tag, ok());
    assert!(reap(&mut qp).is_empty());
    assert_eq!(qp.stats().stale_completions, 1);
    complete(
        &wire,
        resent.cid(),
        CommandOutcome::Failed(TransportFailure::Errno(libc::EIO)),
    );
    let done = reap(&mut qp);
    assert_eq!(done[0].result, Err(IoError::Transport { errno: libc::EIO }));
    assert!(done[0].buf.is_some());
}

#[test]
fn a_refused_submission_returns_the_buffer_and_frees_the_slot() {
    let (mut qp, _wire, mut pool, ns) = setup(1);
    qp.read(&ns, 0, pool.alloc(512).unwrap(), 1).unwrap();
    let e = qp.read(&ns, 8, pool.alloc(512).unwrap(), 2).unwrap_err();
    assert!(matches!(e.kind, SubmitErrorKind::QueueFull { .. }), "{e}");
    assert!(e.buf.is_some());
    assert_eq!(qp.outstanding(), 1);
}
