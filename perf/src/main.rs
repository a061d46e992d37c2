//! nvme-perf: benchmark nvme-engine.
fn main() {}
