//! Reactor threads for nvme-engine: pinned, run-to-completion, busy-polling.
#![forbid(unsafe_code)]
