//! Direct mode: an application thread owns a queue pair, no reactor.

mod common;

use common::*;
use nvme_engine::QueuePairOptions;
use nvme_reactor::{DirectQueue, DirectSubmit, Request, RequestError};

#[test]
fn direct_mode_writes_reads_back_and_handles_a_full_queue() {
    let ctrl = controller();
    let mut q =
        DirectQueue::new(&ctrl, QueuePairOptions::default().with_entries(4), 1 << 20).unwrap();
    const N: u64 = 40;
    let mut next = 0;
    let mut done = vec![0u32; N as usize];
    let mut full = 0;
    while done.contains(&0) {
        while next < N {
            let mut buf = q.alloc(2048).unwrap();
            fill(&mut buf, next);
            match q.submit(Request::write(0, 1, next * 4, buf, true, next)) {
                Ok(()) => next += 1,
                Err(DirectSubmit::QueueFull(r)) => {
                    full += 1;
                    q.free(r.buf.unwrap()).unwrap();
                    break;
                }
                Err(DirectSubmit::Failed(r)) => panic!("{:?}", r.result),
            }
        }
        let mut freed = Vec::new();
        q.poll(8, |r| {
            assert!(r.result.is_ok());
            done[r.token as usize] += 1;
            freed.push(r.buf.unwrap());
        });
        for b in freed {
            q.free(b).unwrap();
        }
    }
    assert!(full > 0, "a 4-entry queue never filled");
    assert!(done.iter().all(|&n| n == 1));
    for t in 0..N {
        let buf = q.alloc(2048).unwrap();
        q.submit(Request::read(0, 1, t * 4, buf, t)).unwrap();
        let mut got = None;
        wait_for(|| {
            q.poll(1, |r| got = Some(r));
            got.is_some()
        });
        let r = got.unwrap();
        assert_eq!(r.token, t);
        assert!(holds(r.buf.as_ref().unwrap(), t));
        q.free(r.buf.unwrap()).unwrap();
    }
    // A request for a namespace that does not exist fails without submitting.
    match q.submit(Request::flush(0, 77, 1)) {
        Err(DirectSubmit::Failed(r)) => {
            assert!(matches!(
                r.result,
                Err(RequestError::NoSuchNamespace { nsid: 77, .. })
            ))
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(q.outstanding(), 0);
    q.delete().unwrap();
}
