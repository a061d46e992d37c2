//! nvme-fio: a fio external ioengine that runs fio jobs on nvme-engine.
//!
//! Load it with `ioengine=external:/path/to/libnvme_fio.so` and `thread=1`;
//! filenames name a controller and namespace (`filename=trtype=emu size=64M`,
//! `filename=trtype=PCIe traddr=0000.04.00.0 ns=1`). docs/FIO.md has the
//! whole story.
//!
//! - [`filename`]: fio filenames, transport IDs parsed by nvme-trid.
//! - [`registry`]: controllers shared by every job of the process.
//! - [`job`]: per-job checks and state; [`worker`]: the I/O path.
//! - [`hooks`]: the functions `src/shim.c` (fio's ops table, compiled
//!   against the installed fio's headers) calls, and fio's entry point
//!   `get_ioengine`. The only module with `unsafe`: the C boundary.

#![deny(unsafe_code)]

pub mod error;
pub mod filename;
#[allow(unsafe_code)] // The C boundary; see hooks.rs.
pub mod hooks;
pub mod job;
pub mod registry;
pub mod worker;

/// The fio release and ioengine ABI (`FIO_IOOPS_VERSION`) this build is for.
pub const FIO_BUILD: &str = concat!(
    "fio ",
    env!("NVME_FIO_RELEASE"),
    ", ioengine ABI ",
    env!("NVME_FIO_IOOPS_VERSION")
);
