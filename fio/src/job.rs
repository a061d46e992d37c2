//! One fio job (thread): its files, the controller they name, and the
//! checks run before any I/O — `thread=1`, block sizes against the LBA size
//! and the largest transfer — so a wrong job fails at setup with a message,
//! not on its first I/O.

#![forbid(unsafe_code)]

use std::ffi::c_char;
use std::sync::Arc;

use nvme_engine::Namespace;

use crate::error::EngineError;
use crate::filename;
use crate::registry::{self, Shared};
use crate::worker::Worker;

/// The job values the C side reads out of fio's `thread_data`
/// (`struct nvme_fio_job` in `shim.c`, same layout).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct JobInfo {
    /// Job name (NUL-terminated, may be null).
    pub name: *const c_char,
    /// fio's thread number (1-based).
    pub thread_number: u32,
    /// `thread=1`.
    pub use_thread: u32,
    /// `iodepth`.
    pub iodepth: u32,
    /// Number of files.
    pub nr_files: u32,
    /// `mem_align`.
    pub mem_align: u32,
    /// Smallest block size per direction (read, write, trim).
    pub min_bs: [u64; 3],
    /// Largest block size per direction.
    pub max_bs: [u64; 3],
}

/// Where a job's files come from: fio's file table, or a list in tests.
pub trait FileTable {
    /// The name of file `i`.
    fn name(&self, i: u32) -> Option<String>;
    /// Record file `i`'s size and the handle the engine gets back with
    /// every I/O on it.
    fn set(&mut self, i: u32, size: u64, handle: usize);
}

/// One file of the job: a namespace on the job's controller.
#[derive(Debug, Clone)]
pub struct FileCtx {
    /// The namespace.
    pub ns: Namespace,
    /// log2 of the LBA size.
    pub lba_shift: u32,
}

/// A job's state, kept in fio's `td->io_ops_data`.
pub struct Job {
    /// Job name.
    pub name: String,
    /// The controller (shared with every job naming it).
    pub shared: Option<Arc<Shared>>,
    /// Files; an I/O's file handle is its index + 1.
    pub files: Vec<FileCtx>,
    /// The queue pair and buffers (from `init` on).
    pub worker: Option<Worker>,
}

const DIRECTIONS: [&str; 3] = ["read", "write", "trim"];

impl Job {
    /// An empty job named `name`.
    pub fn new(name: String) -> Self {
        Job {
            name,
            shared: None,
            files: Vec::new(),
            worker: None,
        }
    }

    /// Refuse forked jobs.
    pub fn check_thread(name: &str, info: &JobInfo) -> Result<(), EngineError> {
        if info.use_thread == 0 {
            return Err(EngineError::NeedsThread { job: name.into() });
        }
        Ok(())
    }

    /// Parse the filenames, open their controller and set each file's size
    /// (fio's setup hook; also run by init when fio calls init first).
    /// Runs once; later calls only re-record the sizes.
    pub fn attach(&mut self, info: &JobInfo, table: &mut dyn FileTable) -> Result<(), EngineError> {
        Job::check_thread(&self.name, info)?;
        if self.shared.is_none() {
            self.open_files(info, table)?;
        }
        for (i, f) in self.files.iter().enumerate() {
            table.set(i as u32, f.ns.size_bytes(), i + 1);
        }
        Ok(())
    }

    fn open_files(&mut self, info: &JobInfo, table: &mut dyn FileTable) -> Result<(), EngineError> {
        if info.nr_files == 0 {
            return Err(EngineError::NoFile {
                job: self.name.clone(),
            });
        }
        let mut shared: Option<(String, Arc<Shared>)> = None;
        let mut files = Vec::new();
        for i in 0..info.nr_files {
            let name = table.name(i).ok_or(EngineError::NoFile {
                job: self.name.clone(),
            })?;
            let target = filename::parse(&name).map_err(|source| EngineError::Filename {
                job: self.name.clone(),
                source: Box::new(source),
            })?;
            let key = filename::controller_key(&target.controller);
            let ctrl = match &shared {
                Some((k, s)) if *k == key => Arc::clone(s),
                Some((_, s)) => {
                    return Err(EngineError::TwoControllers {
                        job: self.name.clone(),
                        first: s.description.clone(),
                        second: name,
                    });
                }
                None => {
                    let s = registry::get(&target.controller)?;
                    shared = Some((key, Arc::clone(&s)));
                    s
                }
            };
            let ns = ctrl
                .namespace(target.nsid)
                .map_err(|source| EngineError::Namespace {
                    job: self.name.clone(),
                    source: Box::new(source),
                })?;
            self.check_sizes(info, &ns, &ctrl)?;
            files.push(FileCtx {
                lba_shift: ns.block_size().trailing_zeros(),
                ns,
            });
        }
        self.files = files;
        self.shared = shared.map(|(_, s)| s);
        Ok(())
    }

    fn check_sizes(&self, info: &JobInfo, ns: &Namespace, s: &Shared) -> Result<(), EngineError> {
        let lba = ns.block_size() as u64;
        let max = s.ctrl.max_transfer_bytes();
        for (d, dir) in DIRECTIONS.iter().enumerate() {
            for (value, kind) in [(info.min_bs[d], "min"), (info.max_bs[d], "max")] {
                if value == 0 {
                    continue;
                }
                let option = if info.min_bs[d] == info.max_bs[d] {
                    format!("bs={value} ({dir})")
                } else {
                    format!("bsrange {kind}={value} ({dir})")
                };
                if value % lba != 0 {
                    return Err(EngineError::BlockSize {
                        job: self.name.clone(),
                        option,
                        value,
                        lba: ns.block_size(),
                        nsid: ns.id(),
                        ctrl: s.description.clone(),
                    });
                }
                // Trim sends a range, not data: no transfer limit.
                if d != 2 && value > max as u64 {
                    return Err(EngineError::TransferTooLarge {
                        job: self.name.clone(),
                        option,
                        value,
                        max,
                        ctrl: s.description.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// fio's init hook: the controller (if setup has not run yet), then the
    /// queue pair and the DMA memory for the job's buffers.
    pub fn init(&mut self, info: &JobInfo, table: &mut dyn FileTable) -> Result<(), EngineError> {
        self.attach(info, table)?;
        if self.worker.is_some() {
            return Ok(());
        }
        let shared = self
            .shared
            .as_ref()
            .ok_or(EngineError::NotReady { hook: "init" })?;
        if shared.null_data {
            crate::hooks::log(&format!(
                "nvme-engine: job '{}': {} stores no data; verify jobs will fail on it",
                self.name, shared.description
            ));
        }
        let max_bs = info.max_bs.iter().copied().max().unwrap_or(0).max(4096) as usize;
        let depth = info.iodepth.max(1) as usize;
        // fio's buffer: iodepth x largest bs, plus up to a page for each of
        // its two alignment steps (init_io_u_buffers, allocate_io_mem) and
        // mem_align; iomem_alloc checks the exact size against the block.
        let bytes = depth
            .saturating_mul(max_bs)
            .saturating_add(3 * 4096)
            .saturating_add(info.mem_align as usize);
        self.worker = Some(Worker::new(&self.name, shared, depth, bytes)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) struct Files(pub Vec<String>, pub Vec<(u64, usize)>);

    impl FileTable for Files {
        fn name(&self, i: u32) -> Option<String> {
            self.0.get(i as usize).cloned()
        }
        fn set(&mut self, i: u32, size: u64, handle: usize) {
            self.1.resize(self.0.len(), (0, 0));
            self.1[i as usize] = (size, handle);
        }
    }

    pub(crate) fn info(files: u32, bs: u64, depth: u32) -> JobInfo {
        JobInfo {
            name: std::ptr::null(),
            thread_number: 1,
            use_thread: 1,
            iodepth: depth,
            nr_files: files,
            mem_align: 0,
            min_bs: [bs; 3],
            max_bs: [bs; 3],
        }
    }

    #[test]
    fn setup_sets_each_files_size_and_handle() {
        let mut t = Files(
            vec![
                "trtype=emu size=4M namespaces=2 ns=1 mode=inline".into(),
                "trtype=emu size=4M namespaces=2 ns=2 mode=inline".into(),
            ],
            vec![],
        );
        let mut job = Job::new("j".into());
        job.attach(&info(2, 4096, 4), &mut t).unwrap();
        assert_eq!(t.1, vec![(4 << 20, 1), (4 << 20, 2)]);
        assert_eq!(job.files[1].ns.id(), 2);
    }

    #[test]
    fn forked_jobs_are_refused_with_the_fix() {
        let mut t = Files(vec!["trtype=emu size=4M mode=inline".into()], vec![]);
        let mut i = info(1, 4096, 1);
        i.use_thread = 0;
        let e = Job::new("j".into()).attach(&i, &mut t).err().unwrap();
        assert!(e.to_string().contains("add thread=1"), "{e}");
        assert_eq!(e.errno(), libc::EINVAL);
    }

    #[test]
    fn block_size_not_a_multiple_of_the_lba_size_is_refused() {
        let mut t = Files(
            vec!["trtype=emu size=4M lba=4096 mode=inline".into()],
            vec![],
        );
        let e = Job::new("j".into())
            .attach(&info(1, 512, 1), &mut t)
            .err()
            .unwrap();
        assert!(
            matches!(
                e,
                EngineError::BlockSize {
                    lba: 4096,
                    value: 512,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("multiple of 4096"), "{e}");
        let e = Job::new("j".into())
            .attach(&info(1, 64 << 20, 1), &mut t)
            .err()
            .unwrap();
        assert!(matches!(e, EngineError::TransferTooLarge { .. }), "{e}");
    }

    #[test]
    fn files_on_two_controllers_or_missing_namespaces_are_refused() {
        let mut t = Files(
            vec![
                "trtype=emu size=4M mode=inline".into(),
                "trtype=emu size=8M mode=inline".into(),
            ],
            vec![],
        );
        let e = Job::new("j".into())
            .attach(&info(2, 4096, 1), &mut t)
            .err()
            .unwrap();
        assert!(matches!(e, EngineError::TwoControllers { .. }), "{e}");
        let mut t = Files(vec!["trtype=PCIe traddr=0000.04.00.0".into()], vec![]);
        let e = Job::new("j".into())
            .attach(&info(1, 4096, 1), &mut t)
            .err()
            .unwrap();
        assert!(matches!(e, EngineError::Open { .. }), "{e}");
    }
}
