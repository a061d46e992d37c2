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
//!   against the installed fio's headers) calls.

pub mod error;
pub mod filename;
pub mod hooks;
pub mod job;
pub mod registry;
pub mod worker;

unsafe extern "C" {
    fn nvme_fio_ops_table() -> *mut std::ffi::c_void;
}

/// fio's entry point for external engines: it stores our ops table in `*ops`.
/// (A C symbol named `ioengine` would not be exported from a Rust cdylib.)
///
/// # Safety
/// `ops` is writable (fio passes the address of its local).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn get_ioengine(ops: *mut *mut std::ffi::c_void) {
    // SAFETY: the table is a static in shim.c; `ops` is fio's local.
    unsafe { *ops = nvme_fio_ops_table() };
}

/// The fio release and ioengine ABI (`FIO_IOOPS_VERSION`) this build is for.
pub const FIO_BUILD: &str = concat!(
    "fio ",
    env!("NVME_FIO_RELEASE"),
    ", ioengine ABI ",
    env!("NVME_FIO_IOOPS_VERSION")
);
