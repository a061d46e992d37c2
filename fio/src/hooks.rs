//! The functions `shim.c` calls for fio's hooks, and the few it offers back.
//!
//! Every hook runs inside `catch_unwind`: a panic never crosses into fio; it
//! is printed and becomes an error code. Errors are printed through fio's
//! `log_err` with what to do, and returned as errno values, which fio
//! reports as the job's error.
//!
//! This is the crate's one module with `unsafe` (the C boundary): the
//! hooks dereference what fio hands them, under the contracts their
//! `# Safety` sections state, and fio's own promise about io_u buffers
//! lets a worker alias its buffer block (`io_u_alias`).

use std::cell::Cell;
use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use nvme_engine::dma::DmaBuf;

use crate::error::EngineError;
use crate::job::{FileTable, Job, JobInfo};
use crate::worker::{Queued, Worker};

unsafe extern "C" {
    fn nvme_fio_ops_table() -> *mut c_void;
    fn nvme_fio_log(msg: *const c_char);
    fn nvme_fio_file_name(td: *mut c_void, i: c_uint) -> *const c_char;
    fn nvme_fio_file_set(td: *mut c_void, i: c_uint, size: u64, handle: usize);
    fn nvme_fio_io_u_done(io_u: *mut c_void, error: c_int);
}

/// fio's entry point for external engines: it stores our ops table in `*ops`.
/// (A C symbol named `ioengine` would not be exported from a Rust cdylib.)
///
/// # Safety
/// `ops` is writable (fio passes the address of its local).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn get_ioengine(ops: *mut *mut c_void) {
    // SAFETY: the table is a static in shim.c; `ops` is fio's local.
    unsafe { *ops = nvme_fio_ops_table() };
}

/// Another handle on `block`, the buffer block of a worker, for one io_u.
/// Sound under fio's contract with an ioengine, which this module is the
/// boundary of: fio gives every io_u its own part of the block and touches
/// it only while the io_u is not in flight, and this engine touches no
/// buffer bytes; the worker gives the block back to its pool only after
/// every alias is dropped (`Worker::release_buffers`).
pub(crate) fn io_u_alias(block: &DmaBuf) -> DmaBuf {
    // SAFETY: as above.
    unsafe { block.alias() }
}

thread_local! {
    /// The job this fio thread runs (for errdetails, which gets no td).
    static CURRENT: Cell<*mut Job> = const { Cell::new(std::ptr::null_mut()) };
}

/// fio's `enum fio_q_status`.
const FIO_Q_COMPLETED: c_int = 0;
const FIO_Q_QUEUED: c_int = 1;
const FIO_Q_BUSY: c_int = 2;

/// Print one line through fio's log.
pub fn log(msg: &str) {
    let line = CString::new(format!("{msg}\n").replace('\0', " ")).unwrap_or_default();
    // SAFETY: a valid NUL-terminated string that lives across the call;
    // the C side only formats it.
    unsafe { nvme_fio_log(line.as_ptr()) };
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Run `f`, turning a panic into an `EngineError::Panic`.
fn guard<T>(
    hook: &'static str,
    f: impl FnOnce() -> Result<T, EngineError>,
) -> Result<T, EngineError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        Err(EngineError::Panic {
            hook,
            message: panic_message(&*p),
        })
    })
}

/// Print `e` and return its errno (0 for success).
fn report(r: Result<(), EngineError>) -> c_int {
    match r {
        Ok(()) => 0,
        Err(e) => {
            log(&format!("nvme-engine: {e}"));
            e.errno()
        }
    }
}

/// fio's file table of one job.
struct FioFiles(*mut c_void);

impl FileTable for FioFiles {
    fn name(&self, i: u32) -> Option<String> {
        // SAFETY: the td pointer fio passed to this hook; the C side
        // checks `i` against the table.
        let p = unsafe { nvme_fio_file_name(self.0, i) };
        // SAFETY: fio's NUL-terminated file name, alive for the job.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }
    fn set(&mut self, i: u32, size: u64, handle: usize) {
        // SAFETY: `i` came from `name` succeeding for the same td.
        unsafe { nvme_fio_file_set(self.0, i, size, handle) };
    }
}

fn job_name(info: &JobInfo) -> String {
    if info.name.is_null() {
        return format!("thread {}", info.thread_number);
    }
    // SAFETY: fio's NUL-terminated job name, alive for the job.
    unsafe { CStr::from_ptr(info.name) }
        .to_string_lossy()
        .into_owned()
}

/// The job in `*data`, created on first use.
///
/// # Safety
/// `data` is `&td->io_ops_data`, null or set by this function.
unsafe fn job_slot<'a>(data: *mut *mut c_void, info: &JobInfo) -> &'a mut Job {
    // SAFETY: per the contract, `*data` is null or a Job leaked below.
    unsafe {
        if (*data).is_null() {
            *data = Box::into_raw(Box::new(Job::new(job_name(info)))).cast();
        }
        &mut *(*data).cast::<Job>()
    }
}

/// # Safety
/// `data` is `td->io_ops_data`: null or a Job this module created.
unsafe fn job_of<'a>(data: *mut c_void, hook: &'static str) -> Result<&'a mut Job, EngineError> {
    // SAFETY: per the contract; one fio thread calls its job's hooks.
    unsafe { data.cast::<Job>().as_mut() }.ok_or(EngineError::NotReady { hook })
}

/// fio's setup hook (main thread, before the job's thread starts, or in it).
///
/// # Safety
/// Called by `shim.c` with `&td->io_ops_data`, the job's values and the td.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvme_fio_rs_setup(
    data: *mut *mut c_void,
    info: *const JobInfo,
    td: *mut c_void,
) -> c_int {
    let r = guard("setup", || {
        // SAFETY: the C side passes a filled struct on its stack.
        let info = unsafe { *info };
        // SAFETY: `data` is &td->io_ops_data.
        let job = unsafe { job_slot(data, &info) };
        let r = job.attach(&info, &mut FioFiles(td));
        if r.is_err() && job.worker.is_none() {
            // The thread may never run (and never clean up): let go of
            // the controller now.
            // SAFETY: `*data` holds the Job created by job_slot; nothing
            // else refers to it.
            unsafe {
                drop(Box::from_raw((*data).cast::<Job>()));
                *data = std::ptr::null_mut();
            }
        }
        r
    });
    report(r)
}

/// fio's init hook, on the job's thread.
///
/// # Safety
/// As [`nvme_fio_rs_setup`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvme_fio_rs_init(
    data: *mut *mut c_void,
    info: *const JobInfo,
    td: *mut c_void,
) -> c_int {
    report(guard("init", || {
        // SAFETY: as in setup.
        let info = unsafe { *info };
        // SAFETY: as in setup.
        let job = unsafe { job_slot(data, &info) };
        CURRENT.set(std::ptr::from_mut(job));
        job.init(&info, &mut FioFiles(td))
    }))
}

/// fio's iomem_alloc hook: `*buf` gets the job's DMA block.
///
/// # Safety
/// `data` is `td->io_ops_data`; `buf` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvme_fio_rs_iomem_alloc(
    data: *mut c_void,
    len: usize,
    buf: *mut *mut c_void,
) -> c_int {
    report(guard("iomem_alloc", || {
        // SAFETY: per the contract.
        let job = unsafe { job_of(data, "iomem_alloc") }?;
        let w = job.worker.as_ref().ok_or(EngineError::NotReady {
            hook: "iomem_alloc",
        })?;
        let p = w.buffer(len)?;
        // SAFETY: `buf` is the C side's local.
        unsafe { *buf = p.cast() };
        Ok(())
    }))
}

/// fio's iomem_free hook: in-flight I/O completes, then the block is freed.
///
/// # Safety
/// `data` is `td->io_ops_data`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvme_fio_rs_iomem_free(data: *mut c_void) {
    report(guard("iomem_free", || {
        // SAFETY: per the contract.
        if let Ok(job) = unsafe { job_of(data, "iomem_free") }
            && let Some(w) = job.worker.as_mut()
        {
            w.release_buffers();
        }
        Ok(())
    }));
}

/// Run a hot-path hook body: no error type on this path (its drop glue
/// alone costs ~100 instructions per I/O), only a panic is caught.
#[inline]
fn hot<T>(hook: &'static str, fail: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(p) => {
            log(&format!(
                "nvme-engine: internal error in {hook}: {}",
                panic_message(&*p)
            ));
            fail
        }
    }
}

/// The job's worker, or `None` before init (a fio call order this engine
/// does not expect).
///
/// # Safety
/// `data` is `td->io_ops_data`: null or a Job this module created.
#[inline]
unsafe fn worker_of<'a>(data: *mut c_void) -> Option<&'a mut Worker> {
    // SAFETY: per the contract; one fio thread calls its job's hooks.
    unsafe { data.cast::<Job>().as_mut() }?.worker.as_mut()
}

#[cold]
fn not_ready(hook: &'static str) -> c_int {
    report(Err(EngineError::NotReady { hook }))
}

/// fio's queue hook. Returns an `enum fio_q_status`.
///
/// # Safety
/// `data` is `td->io_ops_data`; `io_u` is fio's.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn nvme_fio_rs_queue(
    data: *mut c_void,
    io_u: *mut c_void,
    ddir: c_int,
    offset: u64,
    len: u64,
    buf: *mut c_void,
    file: usize,
    index: c_uint,
) -> c_int {
    let r = hot("queue", Some(Queued::Failed(libc::EIO)), || {
        // SAFETY: per the contract.
        let job = unsafe { data.cast::<Job>().as_mut() }?;
        let f = file.checked_sub(1).and_then(|i| job.files.get(i))?;
        let w = job.worker.as_mut()?;
        Some(w.queue(
            f,
            io_u as usize,
            index as usize,
            ddir,
            offset,
            len,
            buf as usize,
        ))
    });
    let errno = match r {
        Some(Queued::Queued) => return FIO_Q_QUEUED,
        Some(Queued::Busy) => return FIO_Q_BUSY,
        Some(Queued::Failed(errno)) => errno,
        None => not_ready("queue"),
    };
    // SAFETY: fio's io_u, completed synchronously.
    unsafe { nvme_fio_io_u_done(io_u, errno) };
    FIO_Q_COMPLETED
}

/// fio's commit hook: ring the doorbell once.
///
/// # Safety
/// `data` is `td->io_ops_data`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvme_fio_rs_commit(data: *mut c_void) -> c_int {
    hot("commit", libc::EIO, || {
        // SAFETY: per the contract.
        match unsafe { worker_of(data) } {
            Some(w) => {
                w.commit();
                0
            }
            None => not_ready("commit"),
        }
    })
}

/// fio's getevents hook: the number of completed io_us.
///
/// # Safety
/// `data` is `td->io_ops_data`; `t` is null or a valid timespec.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvme_fio_rs_getevents(
    data: *mut c_void,
    min: c_uint,
    max: c_uint,
    t: *const libc::timespec,
) -> c_int {
    hot("getevents", -libc::EIO, || {
        // SAFETY: per the contract.
        let timeout = unsafe { t.as_ref() }.map(|t| {
            Duration::new(
                t.tv_sec.max(0) as u64,
                t.tv_nsec.clamp(0, 999_999_999) as u32,
            )
        });
        // SAFETY: per the contract.
        match unsafe { worker_of(data) } {
            Some(w) => w.getevents(min as usize, max as usize, timeout) as c_int,
            None => -not_ready("getevents"),
        }
    })
}

/// fio's event hook: the `ev`th completed io_u, its error set.
///
/// # Safety
/// `data` is `td->io_ops_data`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvme_fio_rs_event(data: *mut c_void, ev: c_int) -> *mut c_void {
    let r = hot("event", None, || {
        // SAFETY: per the contract.
        let w = unsafe { worker_of(data) }?;
        usize::try_from(ev).ok().and_then(|i| w.event(i))
    });
    match r {
        Some((io_u, errno)) => {
            let io_u = io_u as *mut c_void;
            // SAFETY: the io_u fio queued; it is not in flight any more.
            unsafe { nvme_fio_io_u_done(io_u, errno) };
            io_u
        }
        None => {
            log(&format!(
                "nvme-engine: fio asked for event {ev}, which getevents did not return"
            ));
            std::ptr::null_mut()
        }
    }
}

/// fio's errdetails hook: why io_u `index` failed, as a string fio frees.
/// fio gives only the io_u, so the job is the one this thread runs.
#[unsafe(no_mangle)]
pub extern "C" fn nvme_fio_rs_errdetails(index: c_uint) -> *mut c_char {
    let r = guard("errdetails", || {
        let job = CURRENT.get();
        // SAFETY: CURRENT is this thread's job, set by init and cleared by
        // cleanup before the job is freed.
        let job = unsafe { job_of(job.cast(), "errdetails") }?;
        Ok(job
            .worker
            .as_ref()
            .and_then(|w| w.error_of(index as usize))
            .map(|s| format!("nvme-engine: {s}")))
    });
    let text = match r {
        Ok(Some(s)) => s,
        Ok(None) => "nvme-engine: no details recorded".into(),
        Err(e) => e.to_string(),
    };
    let c = CString::new(text.replace('\0', " ")).unwrap_or_default();
    // SAFETY: strdup copies the string into malloc'ed memory fio frees.
    unsafe { libc::strdup(c.as_ptr()) }
}

/// fio's open_file hook: the file was resolved by setup.
///
/// # Safety
/// `data` is `td->io_ops_data`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvme_fio_rs_open_file(data: *mut c_void, file: usize) -> c_int {
    report(guard("open_file", || {
        // SAFETY: per the contract.
        let job = unsafe { job_of(data, "open_file") }?;
        if file == 0 || file > job.files.len() {
            return Err(EngineError::NotReady { hook: "open_file" });
        }
        Ok(())
    }))
}

/// fio's cleanup hook: in-flight I/O completes, the queue pair is deleted,
/// and the controller is released (shut down by the last job using it).
///
/// # Safety
/// `data` is `td->io_ops_data`; fio clears it afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvme_fio_rs_cleanup(data: *mut c_void) {
    report(guard("cleanup", || {
        if CURRENT.get().cast() == data {
            CURRENT.set(std::ptr::null_mut());
        }
        if !data.is_null() {
            // SAFETY: the Job job_slot leaked; fio never uses it again.
            drop(unsafe { Box::from_raw(data.cast::<Job>()) });
        }
        Ok(())
    }));
}
