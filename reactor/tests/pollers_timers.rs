//! Pollers and timers run on their reactor, and the counters see them.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use nvme_reactor::{PollStatus, ReactorSet};

#[test]
fn pollers_and_timers_run_on_their_reactor() {
    let set = ReactorSet::start(config(2), vec![controller()]).unwrap();
    let polls = Arc::new(AtomicU64::new(0));
    let ticks = Arc::new(AtomicU64::new(0));
    let thread_name = Arc::new(std::sync::Mutex::new(String::new()));
    {
        let polls = Arc::clone(&polls);
        let name = Arc::clone(&thread_name);
        set.add_poller(
            1,
            Box::new(move || {
                if polls.fetch_add(1, Ordering::Relaxed) == 0 {
                    let me = std::thread::current();
                    *name.lock().unwrap() = me.name().unwrap_or("").to_string();
                    PollStatus::Busy
                } else {
                    PollStatus::Idle
                }
            }),
        )
        .unwrap();
    }
    {
        let ticks = Arc::clone(&ticks);
        set.add_timer(
            0,
            Duration::from_millis(1),
            Box::new(move || {
                ticks.fetch_add(1, Ordering::Relaxed);
            }),
        )
        .unwrap();
    }
    wait_for(|| polls.load(Ordering::Relaxed) >= 10 && ticks.load(Ordering::Relaxed) >= 3);
    assert_eq!(*thread_name.lock().unwrap(), "nvme-reactor-1");
    let stats = set.stats().unwrap();
    assert_eq!((stats[0].pollers, stats[0].timers), (0, 1));
    assert_eq!((stats[1].pollers, stats[1].timers), (1, 0));
    assert!(stats[0].timers_run >= 3);
    assert!(stats[1].iterations_busy >= 1);
    assert!(stats[1].iterations_idle >= 1);
    assert!(set.add_poller(2, Box::new(|| PollStatus::Idle)).is_err());
    let report = set.shutdown();
    assert!(report.is_clean(), "{report}");
}
