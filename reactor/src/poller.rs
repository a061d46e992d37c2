//! Pollers: application code a reactor runs on every loop turn, after it has
//! moved I/O. A poller reports whether it found work (`Busy`) or not
//! (`Idle`), which feeds the reactor's busy/idle loop counters (the model of
//! SPDK's `lib/thread` pollers).

#![forbid(unsafe_code)]

/// What a poller found on this turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollStatus {
    /// It did work.
    Busy,
    /// It found nothing to do.
    Idle,
}

/// A poller: runs on its reactor thread, must not block.
pub type Poller = Box<dyn FnMut() -> PollStatus + Send>;

/// The pollers of one reactor, run in registration order.
#[derive(Default)]
pub(crate) struct Pollers {
    list: Vec<Poller>,
}

impl Pollers {
    /// Register a poller (off the hot path: may allocate).
    pub(crate) fn add(&mut self, poller: Poller) {
        self.list.push(poller);
    }

    /// Run every poller once; true when any was busy.
    pub(crate) fn run(&mut self) -> bool {
        let mut busy = false;
        for p in &mut self.list {
            busy |= p() == PollStatus::Busy;
        }
        busy
    }

    /// Number of registered pollers.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_reports_busy_when_any_poller_is_busy() {
        let mut p = Pollers::default();
        assert!(!p.run());
        let mut n = 0;
        p.add(Box::new(|| PollStatus::Idle));
        p.add(Box::new(move || {
            n += 1;
            if n == 1 {
                PollStatus::Busy
            } else {
                PollStatus::Idle
            }
        }));
        assert!(p.run());
        assert!(!p.run());
        assert_eq!(p.len(), 2);
    }
}
