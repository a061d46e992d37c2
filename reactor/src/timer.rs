//! Periodic timers of one reactor: a small vector kept sorted by deadline.
//!
//! The reactor reads the clock once per loop turn (and only when it has
//! timers) and hands that instant to [`Timers::run_due`]; the common case —
//! nothing due — is one comparison against the earliest deadline. A timer
//! that fell behind (the loop was busy) runs once and is rescheduled one
//! period after now, so it never fires in a burst.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

/// A timer callback: runs on its reactor thread, must not block.
pub type TimerFn = Box<dyn FnMut() + Send>;

struct Timer {
    deadline: Instant,
    period: Duration,
    f: TimerFn,
}

/// The timers of one reactor, earliest deadline first.
#[derive(Default)]
pub(crate) struct Timers {
    list: Vec<Timer>,
}

impl Timers {
    /// Add a timer first due one `period` after `now` (off the hot path).
    /// A zero period is raised to 1 µs.
    pub(crate) fn add(&mut self, now: Instant, period: Duration, f: TimerFn) {
        let period = period.max(Duration::from_micros(1));
        let timer = Timer {
            deadline: now + period,
            period,
            f,
        };
        let at = self.list.partition_point(|t| t.deadline <= timer.deadline);
        self.list.insert(at, timer);
    }

    /// Whether there are timers at all (the caller skips the clock otherwise).
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Run every timer due at `now`; returns how many ran.
    pub(crate) fn run_due(&mut self, now: Instant) -> usize {
        let mut ran = 0;
        // Deadlines are sorted, so due timers form a prefix. Running one
        // reschedules it past `now`, so this loop ends.
        while let Some(first) = self.list.first_mut() {
            if first.deadline > now {
                break;
            }
            (first.f)();
            ran += 1;
            let next = first.deadline + first.period;
            first.deadline = if next > now { next } else { now + first.period };
            // Move it to its place: the list stays sorted without allocating.
            let deadline = first.deadline;
            let to = self.list[1..].partition_point(|t| t.deadline <= deadline);
            self.list[..=to].rotate_left(1);
        }
        ran
    }

    /// Number of timers.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counter() -> (Arc<AtomicUsize>, TimerFn) {
        let c = Arc::new(AtomicUsize::new(0));
        let c2 = Arc::clone(&c);
        (
            c,
            Box::new(move || {
                c2.fetch_add(1, Ordering::Relaxed);
            }),
        )
    }

    #[test]
    fn timers_fire_when_due_and_reschedule() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let (fast, f) = counter();
        timers.add(t0, Duration::from_millis(10), f);
        let (slow, f) = counter();
        timers.add(t0, Duration::from_millis(25), f);
        assert_eq!(timers.run_due(t0), 0);
        assert_eq!(timers.run_due(t0 + Duration::from_millis(10)), 1);
        assert_eq!(fast.load(Ordering::Relaxed), 1);
        assert_eq!(timers.run_due(t0 + Duration::from_millis(19)), 0);
        assert_eq!(timers.run_due(t0 + Duration::from_millis(25)), 2);
        assert_eq!(
            (fast.load(Ordering::Relaxed), slow.load(Ordering::Relaxed)),
            (2, 1)
        );
        assert_eq!(timers.len(), 2);
    }

    #[test]
    fn a_late_timer_fires_once_not_in_a_burst() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let (c, f) = counter();
        timers.add(t0, Duration::from_millis(1), f);
        assert_eq!(timers.run_due(t0 + Duration::from_secs(1)), 1);
        assert_eq!(c.load(Ordering::Relaxed), 1);
        assert_eq!(timers.run_due(t0 + Duration::from_secs(1)), 0);
    }
}
