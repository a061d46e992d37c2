//! One namespace reached through its generic NVMe node: opening by path,
//! admin commands through the NVMe admin passthrough ioctl on the controller
//! node (Identify Controller and Identify Namespace at open; any other admin
//! command on request), poll-queue detection and the transfer limit, and
//! DMA pools whose memory a ring registers as fixed buffers. The system
//! calls that need `unsafe` are in `ring.rs`, the transport's one unsafe file.

#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use zerocopy::{FromZeros, IntoBytes};

use super::error::{UringError, open_hint, permission_requirement};
use super::kernel::{KernelVersion, io_uring_disabled};
use super::modes::CompletionMode;
use super::path::{NamespaceNodes, read_attr, resolve};
use super::queue::{UringQueue, UringQueueOptions, create};
use super::ring::{admin_passthru, kernel_mapped_region, namespace_id_ioctl};
use crate::dma::{DmaError, DmaPool, HostMemory, PageSize};
use crate::driver::Namespace;
use crate::spec::command::cns;
use crate::spec::command::{AdminOpcode, Command};
use crate::spec::identify::{IdentifyController, IdentifyNamespace};

/// Whether the namespace's request queue has poll queues, and what told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollSupport {
    /// `Some(true)`: polled completion will work; `Some(false)`: the nvme
    /// driver has no poll queues; `None`: could not tell (no sysfs).
    pub available: Option<bool>,
    /// What was read, for messages (`io_poll=1 in /sys/block/nvme0n1/queue`).
    pub detail: String,
}

/// A namespace opened through its generic node (`/dev/ngXnY`).
///
/// `Send + Sync`: queues are created from it on the threads that own them.
#[derive(Debug)]
pub struct UringDevice {
    nodes: NamespaceNodes,
    ns_file: File,
    /// The controller node, when it could be opened; admin commands fall
    /// back to the namespace node (the kernel accepts them there too).
    ctrl_file: Option<File>,
    admin_path: PathBuf,
    namespace: Namespace,
    identify: Box<IdentifyController>,
    kernel: Option<KernelVersion>,
    poll: PollSupport,
    max_transfer: usize,
    writable: bool,
}

/// The kernel's cap on one passthrough transfer when it cannot be read.
const FALLBACK_MAX_TRANSFER: usize = 128 << 10;

impl UringDevice {
    /// Open the namespace behind `path` (`/dev/ngXnY`, or a symlink to it):
    /// find its controller node and NSID, identify the controller and the
    /// namespace, read the poll-queue and transfer limits from sysfs.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, UringError> {
        Self::open_in(path.as_ref(), Path::new("/dev"), Path::new("/sys"))
    }

    fn open_in(path: &Path, dev: &Path, sys: &Path) -> Result<Self, UringError> {
        let kernel = KernelVersion::running();
        if let Some(k) = kernel
            && !k.at_least(KernelVersion::URING_CMD)
        {
            return Err(UringError::KernelTooOld {
                what: "NVMe passthrough over io_uring",
                need: KernelVersion::URING_CMD,
                release: super::kernel::release(),
            });
        }
        if let Some(value @ (1 | 2)) = io_uring_disabled() {
            // With 1, root and the io_uring group may still use it; the
            // ring set-up says so if this process may not.
            if value == 2 {
                return Err(UringError::IoUringDisabled { value });
            }
        }
        let nodes = resolve(path, dev, sys)?;
        let shown = nodes.generic.display().to_string();
        let (ns_file, writable) = match open_node(&nodes.generic, true) {
            Ok(f) => (f, true),
            Err(e) if is_permission(&e) => match open_node(&nodes.generic, false) {
                Ok(f) => (f, false),
                Err(e) => return Err(open_error(&shown, e)),
            },
            Err(e) => return Err(open_error(&shown, e)),
        };
        let nsid = namespace_id(&ns_file, &shown)?;
        let (ctrl_file, admin_path) = match open_node(&nodes.controller, false) {
            Ok(f) => (Some(f), nodes.controller.clone()),
            Err(_) => (None, nodes.generic.clone()),
        };
        let mut dev = UringDevice {
            namespace: placeholder_namespace(),
            identify: Box::new(IdentifyController::new_zeroed()),
            ns_file,
            ctrl_file,
            admin_path,
            kernel,
            poll: poll_support(&nodes, sys),
            max_transfer: 0,
            writable,
            nodes,
        };
        let mut ctrl = Box::new(IdentifyController::new_zeroed());
        let mut cmd = Command::new(AdminOpcode::IDENTIFY.0, 0);
        cmd.cdw10 = cns::CONTROLLER as u32;
        dev.admin_command(&cmd, Some(ctrl.as_mut_bytes()), "Identify Controller")?;
        let mut ns = Box::new(IdentifyNamespace::new_zeroed());
        let mut cmd = Command::new(AdminOpcode::IDENTIFY.0, nsid);
        cmd.cdw10 = cns::NAMESPACE as u32;
        dev.admin_command(&cmd, Some(ns.as_mut_bytes()), "Identify Namespace")?;
        dev.max_transfer = transfer_limit(ctrl.mdts, dev.nodes.queue_sysfs.as_deref());
        // A node opened read-only is not write protected: writes go to the
        // kernel, which refuses them with a permission error that says so.
        let namespace =
            Namespace::from_identify(nsid, *ns, &ctrl, dev.max_transfer).map_err(|reason| {
                UringError::Namespace {
                    path: shown.clone(),
                    nsid,
                    reason,
                }
            })?;
        dev.namespace = namespace;
        dev.identify = ctrl;
        Ok(dev)
    }

    /// Send an admin command through the NVMe admin passthrough ioctl on the
    /// controller node (or the namespace node when the controller node
    /// cannot be opened); `data` is the command's buffer (its direction is
    /// the opcode's, as the kernel decides it). Returns completion DW0.
    pub fn admin_command(
        &self,
        cmd: &Command,
        data: Option<&mut [u8]>,
        name: &'static str,
    ) -> Result<u32, UringError> {
        if let Some(d) = &data
            && u32::try_from(d.len()).is_err()
        {
            return Err(UringError::InvalidOption {
                name: "admin data length",
                value: d.len() as u64,
                hint: "admin data buffers are at most 4 GiB",
            });
        }
        let fd = self.ctrl_file.as_ref().unwrap_or(&self.ns_file).as_fd();
        let path = self.admin_path.display().to_string();
        let (status, result) = match admin_passthru(fd, cmd, data) {
            Ok(v) => v,
            Err(e) if is_permission(&e) => {
                return Err(UringError::PermissionDenied {
                    path: path.clone(),
                    what: format!("admin command {name}"),
                    requirement: permission_requirement(self.kernel, &path, true),
                });
            }
            Err(source) => {
                return Err(UringError::Ioctl {
                    path,
                    what: "NVME_IOCTL_ADMIN_CMD",
                    source,
                });
            }
        };
        if status > 0 {
            return Err(UringError::AdminFailed {
                command: name,
                path,
                status: crate::spec::status::Status::from_field(status as u16),
            });
        }
        Ok(result)
    }

    /// Create a queue (one ring) for the calling thread.
    pub fn create_queue(&self, opts: UringQueueOptions) -> Result<UringQueue, UringError> {
        create(self, opts)
    }

    /// The completion mode `queues` queues created with `opts` will all
    /// get (polled, or interrupts and why): see
    /// [`UringQueueOptions::polled`] and [`UringQueueOptions::require_polled`].
    /// A program creating one queue per thread asks this first and creates
    /// each queue with `polled` and `require_polled` set to whether the
    /// answer is [`CompletionMode::Polled`], so every queue runs in the same
    /// mode.
    pub fn plan_completion(&self, opts: &UringQueueOptions, queues: usize) -> CompletionMode {
        super::queue::plan_completion(self, opts, queues)
    }

    /// A DMA pool of `bytes` for buffers of this transport: 2 MiB hugepages
    /// when reserved (fewer pages for the kernel to map), else ordinary
    /// memory — the kernel does the DMA mapping, so no reservation is
    /// needed. Register it with each queue that uses its buffers
    /// ([`UringQueue::register_pool`]).
    pub fn create_pool(&self, bytes: usize) -> Result<DmaPool, UringError> {
        let memory = match HostMemory::hugepages(bytes, PageSize::Huge2M) {
            Ok(m) => m,
            Err(DmaError::HugepagesMissing { .. }) => {
                crate::dma::check_memory(bytes as u64, "io_uring DMA pool")
                    .map_err(UringError::Dma)?;
                HostMemory::plain(bytes).map_err(UringError::Dma)?
            }
            Err(e) => return Err(UringError::Dma(e)),
        };
        Ok(DmaPool::new(kernel_mapped_region(memory)))
    }

    /// The namespace (geometry and the checks made before submission).
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }
    /// Identify Controller data.
    pub fn identify(&self) -> &IdentifyController {
        &self.identify
    }
    /// The generic node in use.
    pub fn path(&self) -> &Path {
        &self.nodes.generic
    }
    /// The node admin commands go to (the controller node, or the namespace
    /// node when the controller node could not be opened).
    pub fn admin_path(&self) -> &Path {
        &self.admin_path
    }
    /// The nodes and sysfs paths found for the namespace.
    pub fn nodes(&self) -> &NamespaceNodes {
        &self.nodes
    }
    /// Largest transfer one command may move: MDTS, and the kernel's
    /// `max_hw_sectors_kb` and `max_segments` for the namespace's queue.
    pub fn max_transfer_bytes(&self) -> usize {
        self.max_transfer
    }
    /// Whether the namespace node was opened for writing (writes need it).
    pub fn writable(&self) -> bool {
        self.writable
    }
    /// Poll queue support found in sysfs.
    pub fn poll_support(&self) -> &PollSupport {
        &self.poll
    }
    /// The running kernel's version, if it could be read.
    pub fn kernel(&self) -> Option<KernelVersion> {
        self.kernel
    }
    pub(super) fn ns_fd(&self) -> i32 {
        self.ns_file.as_raw_fd()
    }
}

fn is_permission(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM))
}

fn open_node(path: &Path, write: bool) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(write).open(path)
}

fn open_error(path: &str, e: std::io::Error) -> UringError {
    UringError::Open {
        path: path.into(),
        hint: open_hint(&e, path),
        source: e,
    }
}

/// The NSID of a namespace node (`NVME_IOCTL_ID`).
fn namespace_id(file: &File, path: &str) -> Result<u32, UringError> {
    let rc = namespace_id_ioctl(file.as_fd());
    if !matches!(rc, Ok(n) if n > 0) {
        let source = match rc {
            Err(e) => e,
            Ok(_) => std::io::Error::other("the kernel returned NSID 0"),
        };
        return Err(UringError::Ioctl {
            path: path.into(),
            what: "NVME_IOCTL_ID",
            source,
        });
    }
    Ok(rc.unwrap_or(0) as u32)
}

/// A namespace value to fill the struct with until Identify ran.
fn placeholder_namespace() -> Namespace {
    let mut id = IdentifyNamespace::new_zeroed();
    id.nsze = 1.into();
    id.lbaf[0] = crate::spec::identify::LbaFormat::new(0, 9);
    Namespace::from_identify(0, id, &IdentifyController::new_zeroed(), 4096)
        .unwrap_or_else(|_| unreachable!("a 512-byte format with one block is valid"))
}

/// Poll queues, from the block queue's `io_poll` (the request queue has a
/// poll map) or, without a block device, the nvme module's `poll_queues`.
fn poll_support(nodes: &NamespaceNodes, sys: &Path) -> PollSupport {
    let module = read_attr(&sys.join("module/nvme/parameters"), "poll_queues");
    let module_txt = module
        .as_deref()
        .map(|m| format!("nvme.poll_queues={m}"))
        .unwrap_or_else(|| "nvme.poll_queues unreadable".into());
    if let Some(q) = nodes.queue_sysfs.as_deref()
        && let Some(v) = read_attr(q, "io_poll")
    {
        return PollSupport {
            available: Some(v == "1"),
            detail: format!("io_poll={v} in {}, {module_txt}", q.display()),
        };
    }
    PollSupport {
        available: module.and_then(|m| m.parse::<u32>().ok()).map(|n| n > 0),
        detail: format!("no block queue in sysfs, {module_txt}"),
    }
}

/// Largest transfer: MDTS (in 4 KiB units — the kernel's NVMe driver uses
/// the controller's minimum page size, 4 KiB on every controller it
/// accepts), capped by the queue's `max_hw_sectors_kb` and by
/// `max_segments` pages (a buffer of ordinary pages is one segment per
/// page), rounded down to a power of two.
fn transfer_limit(mdts: u8, queue: Option<&Path>) -> usize {
    let mut max = if mdts == 0 || mdts > 20 {
        usize::MAX
    } else {
        4096usize << mdts
    };
    match queue {
        Some(q) => {
            if let Some(kb) =
                read_attr(q, "max_hw_sectors_kb").and_then(|v| v.parse::<usize>().ok())
            {
                max = max.min(kb << 10);
            }
            if let Some(segs) = read_attr(q, "max_segments").and_then(|v| v.parse::<usize>().ok()) {
                max = max.min(segs.max(1) << 12);
            }
        }
        None => max = max.min(FALLBACK_MAX_TRANSFER),
    }
    let max = max
        .min(crate::driver::MAX_BLOCKS_PER_COMMAND as usize * 512)
        .max(4096);
    1 << (usize::BITS - 1 - max.leading_zeros())
}

/// The kernel-side timeout to put in each command, in milliseconds.
pub(super) fn kernel_timeout_ms(t: Option<Duration>) -> u32 {
    t.map(|d| d.as_millis().clamp(1, u32::MAX as u128) as u32)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_limit_takes_the_smallest_cap_as_a_power_of_two() {
        let dir = std::env::temp_dir().join(format!("uring-q-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("max_hw_sectors_kb"), "512\n").unwrap();
        std::fs::write(dir.join("max_segments"), "127\n").unwrap();
        // MDTS 7 = 512 KiB; 127 segments = 508 KiB → 256 KiB.
        assert_eq!(transfer_limit(7, Some(&dir)), 256 << 10);
        std::fs::write(dir.join("max_segments"), "1024\n").unwrap();
        assert_eq!(transfer_limit(7, Some(&dir)), 512 << 10);
        assert_eq!(transfer_limit(5, Some(&dir)), 128 << 10);
        assert_eq!(transfer_limit(0, None), FALLBACK_MAX_TRANSFER);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn opening_a_character_device_that_is_not_nvme_says_so() {
        let err = UringDevice::open("/dev/null").unwrap_err();
        assert!(matches!(err, UringError::NotGenericNode { .. }), "{err}");
        assert!(err.to_string().contains("ngXnY"), "{err}");
    }
}
