//! Example programs for nvme-engine live in `examples/src/bin/`.
#![forbid(unsafe_code)]
