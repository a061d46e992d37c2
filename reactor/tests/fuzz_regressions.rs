//! Regression tests for what fuzzing the reactor found
//! (`nvme_reactor::fuzzing`, run by `fuzz/`'s `reactor` target and by
//! `fuzz_seeded.rs`).

mod common;

use common::*;
use nvme_engine::QueuePairOptions;
use nvme_reactor::{DirectQueue, DirectSubmit, Op, ReactorSet, Request, RequestError};

/// A request without data (Flush, Write Zeroes, Deallocate) that carries
/// a buffer anyway.
fn with_stray_buffer(op: Op, buf: nvme_engine::dma::DmaBuf, token: u64) -> Request {
    let mut r = Request::without_data(op, 0, 1, 0, token);
    r.buf = Some(buf);
    r
}

const NO_DATA: [Op; 3] = [
    Op::Flush,
    Op::WriteZeroes {
        blocks: 1,
        deallocate: false,
    },
    Op::Deallocate { blocks: 1 },
];

/// Found by fuzzing direct mode: a Flush carrying a buffer was submitted
/// and the buffer dropped with the request, so the response came back
/// without it and the pool never saw it again. Such a request is refused
/// now, with its buffer.
#[test]
fn a_direct_request_without_data_hands_a_stray_buffer_back() {
    let ctrl = controller();
    let mut q = DirectQueue::new(&ctrl, QueuePairOptions::default(), 1 << 20).unwrap();
    for (token, op) in NO_DATA.into_iter().enumerate() {
        let buf = q.alloc(BLOCK).unwrap();
        let Err(DirectSubmit::Failed(resp)) = q.submit(with_stray_buffer(op, buf, token as u64))
        else {
            panic!("{op:?} with a buffer was accepted");
        };
        assert_eq!(resp.result, Err(RequestError::UnexpectedBuffer { op }));
        q.free(resp.buf.expect("the buffer comes back")).unwrap();
    }
    assert_eq!(q.pool().used(), 0, "every buffer is back in the pool");
    assert!(q.delete().unwrap().is_empty());
}

/// The same through a reactor: the stray buffer was dropped with the ring
/// slot; now the request is answered with it.
#[test]
fn a_reactor_request_without_data_hands_a_stray_buffer_back() {
    let set = ReactorSet::start(config(1), vec![controller()]).unwrap();
    let mut p = set.producer(0).unwrap();
    let requests = NO_DATA
        .into_iter()
        .enumerate()
        .map(|(token, op)| {
            let buf = p.alloc(BLOCK).unwrap();
            (0, with_stray_buffer(op, buf, token as u64))
        })
        .collect();
    let mut ps = [p];
    for resp in run_all(&mut ps, requests) {
        let op = NO_DATA[resp.token as usize];
        assert_eq!(resp.result, Err(RequestError::UnexpectedBuffer { op }));
        ps[0]
            .free(resp.buf.expect("the buffer comes back"))
            .unwrap();
    }
    assert_eq!(
        ps[0].pool_bytes_in_use(),
        0,
        "every buffer is back in the pool"
    );
    let report = set.shutdown();
    assert!(report.lost_controllers().next().is_none(), "{report}");
}

/// The harness's oracle sees what a device holds: a read the controller
/// fetched and keeps (a lost command) is listed with its buffer's address
/// until the queue is deleted, which hands the buffer back.
#[test]
fn the_controller_lists_a_lost_read_until_its_queue_is_deleted() {
    use nvme_emu::{FaultAction, FaultRule};
    let (ctrl, h) = controller_with_handle();
    h.add_fault(FaultRule::new(FaultAction::NeverComplete).io().once());
    let mut q = DirectQueue::new(&ctrl, QueuePairOptions::default(), 1 << 20).unwrap();
    let buf = q.alloc(BLOCK).unwrap();
    let iova = buf.iova();
    q.submit(Request::read(0, 1, 0, buf, 1)).unwrap();
    assert_eq!(q.poll(8, |_| panic!("a lost read completed")), 0);
    let held = h.held_commands();
    assert!(
        held.iter().any(|(sqid, c)| *sqid != 0 && c.prp1 == iova),
        "{held:?}"
    );
    let answered = q.delete().unwrap();
    assert_eq!(answered.len(), 1);
    assert!(answered[0].buf.is_some());
    assert!(h.held_commands().is_empty(), "deletion ended the command");
}
