//! Reactors, producers and direct-mode queues against emulated controllers
//! whose faults, timeouts and events come from the fuzz input (see
//! `nvme_reactor::fuzzing`). A panic, hang, unanswered or twice-answered
//! request, or a buffer handed back while the device holds it is a bug.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nvme_reactor::fuzzing::run(data);
});
