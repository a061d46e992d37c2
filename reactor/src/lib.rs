//! Reactor threads for nvme-engine: pinned, run-to-completion, busy-polling.

#![forbid(unsafe_code)]
#![allow(dead_code)] // the reactor loop that uses these lands next

mod cores;
mod poller;
mod timer;

pub use cores::{AllowedCores, CoreError, CoreSpec, pin_current_thread};
pub use poller::{PollStatus, Poller};
pub use timer::TimerFn;
