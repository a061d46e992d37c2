//! The driver against an emulated controller whose registers, Identify data,
//! faults and completion entries come from the fuzz input (see
//! `nvme_emu::fuzzing`). A panic, hang or out-of-bounds access is a bug.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nvme_emu::fuzzing::run(data);
});
